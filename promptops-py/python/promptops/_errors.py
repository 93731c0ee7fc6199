"""The exceptions of promptops.

Every exception raised by the engine is a :class:`PromptOpsError`. Its
``kind`` is the engine's stable error kind (``"TEMPLATE_ERROR"``, ...), the
same string in Rust, Python and Node, and ``details`` is a dict of the
error's fields (``kind``, ``message`` and whichever of ``prompt``,
``version``, ``part``, ``line``, ``column``, ``variable``, ``field``,
``file``, ``label``, ``cycle``, ``limit``, ``model``, ``selector``,
``provider``, ``error_type``, ``status``, ``attempts`` apply).
The attributes of the subclasses (``.line``, ``.variable``, ...) read
``details``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type

__all__ = [
    "PromptOpsError",
    "PromptNotFound",
    "TemplateError",
    "VariableError",
    "ValidationError",
    "IncludeCycleError",
    "ParseError",
    "SnapshotError",
    "UnknownModel",
    "OutputLimitError",
    "FuelExhausted",
    "ConfigError",
    "RegistryUnavailable",
    "PromptOpsIOError",
    "PolicyError",
    "NoRoute",
    "ProviderError",
]


class PromptOpsError(Exception):
    """Base class of every promptops error.

    A Rust panic inside the engine (a bug) is raised as this class itself,
    with ``kind == "PANIC"``; it never takes the interpreter down.
    """

    KIND: ClassVar[str] = "PROMPTOPS_ERROR"

    kind: str
    """The engine's error kind, e.g. ``"VARIABLE_ERROR"``."""
    details: Dict[str, Any]
    """The error's fields as a dict (always has ``kind`` and ``message``)."""
    message: str

    def __init__(
        self,
        message: str = "",
        kind: Optional[str] = None,
        details: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind if kind is not None else type(self).KIND
        self.details = dict(details) if details is not None else {}
        self.details.setdefault("kind", self.kind)
        self.details.setdefault("message", message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.message, self.kind, self.details))

    def _get(self, key: str) -> Any:
        return self.details.get(key)


class PromptNotFound(PromptOpsError):
    """The prompt, label, version or variant asked for is in no source."""

    KIND = "PROMPT_NOT_FOUND"

    @property
    def prompt(self) -> Optional[str]:
        return self._get("prompt")  # type: ignore[no-any-return]

    @property
    def selector(self) -> Optional[str]:
        """What was looked for (label, version, variant) and why it failed."""
        return self._get("selector")  # type: ignore[no-any-return]


class TemplateError(PromptOpsError):
    """A template failed to parse or compile, or failed while rendering."""

    KIND = "TEMPLATE_ERROR"

    @property
    def prompt(self) -> Optional[str]:
        return self._get("prompt")  # type: ignore[no-any-return]

    @property
    def version(self) -> Optional[int]:
        return self._get("version")  # type: ignore[no-any-return]

    @property
    def part(self) -> Optional[str]:
        """Which part: ``template``, ``messages[2]``, ``variant claude template``..."""
        return self._get("part")  # type: ignore[no-any-return]

    @property
    def line(self) -> Optional[int]:
        return self._get("line")  # type: ignore[no-any-return]

    @property
    def column(self) -> Optional[int]:
        return self._get("column")  # type: ignore[no-any-return]


class VariableError(PromptOpsError):
    """A variable the template uses was not given."""

    KIND = "VARIABLE_ERROR"

    @property
    def prompt(self) -> Optional[str]:
        return self._get("prompt")  # type: ignore[no-any-return]

    @property
    def version(self) -> Optional[int]:
        return self._get("version")  # type: ignore[no-any-return]

    @property
    def variable(self) -> Optional[str]:
        """The missing variable as written in the template (``user.city``)."""
        return self._get("variable")  # type: ignore[no-any-return]

    @property
    def line(self) -> Optional[int]:
        return self._get("line")  # type: ignore[no-any-return]


class ValidationError(PromptOpsError):
    """Variables do not satisfy the prompt's input schema, or an argument is
    out of range."""

    KIND = "VALIDATION_ERROR"

    @property
    def prompt(self) -> Optional[str]:
        return self._get("prompt")  # type: ignore[no-any-return]

    @property
    def field(self) -> Optional[str]:
        """The offending field (``age``, ``chunks[2].id``; ``$`` for the whole)."""
        return self._get("field")  # type: ignore[no-any-return]


class IncludeCycleError(PromptOpsError):
    """``{% include %}`` targets form a cycle."""

    KIND = "INCLUDE_CYCLE"

    @property
    def label(self) -> Optional[str]:
        return self._get("label")  # type: ignore[no-any-return]

    @property
    def cycle(self) -> Optional[List[str]]:
        return self._get("cycle")  # type: ignore[no-any-return]


class ParseError(PromptOpsError):
    """A prompt file could not be read as a prompt."""

    KIND = "PARSE_ERROR"

    @property
    def file(self) -> Optional[str]:
        return self._get("file")  # type: ignore[no-any-return]

    @property
    def line(self) -> Optional[int]:
        return self._get("line")  # type: ignore[no-any-return]

    @property
    def column(self) -> Optional[int]:
        return self._get("column")  # type: ignore[no-any-return]


class SnapshotError(PromptOpsError):
    """A snapshot or bundle is malformed (bad JSON, hash mismatch, ...)."""

    KIND = "SNAPSHOT_ERROR"


class UnknownModel(PromptOpsError):
    """The model is not in the pricing table."""

    KIND = "UNKNOWN_MODEL"

    @property
    def model(self) -> Optional[str]:
        return self._get("model")  # type: ignore[no-any-return]


class OutputLimitError(PromptOpsError):
    """The rendered output exceeds the size limit."""

    KIND = "OUTPUT_LIMIT"

    @property
    def prompt(self) -> Optional[str]:
        return self._get("prompt")  # type: ignore[no-any-return]

    @property
    def limit(self) -> Optional[int]:
        return self._get("limit")  # type: ignore[no-any-return]


class FuelExhausted(PromptOpsError):
    """Rendering exceeded the step limit (a runaway template)."""

    KIND = "FUEL_EXHAUSTED"

    @property
    def prompt(self) -> Optional[str]:
        return self._get("prompt")  # type: ignore[no-any-return]

    @property
    def limit(self) -> Optional[int]:
        return self._get("limit")  # type: ignore[no-any-return]


class ConfigError(PromptOpsError):
    """Bad configuration given by the caller."""

    KIND = "CONFIG_ERROR"


class RegistryUnavailable(PromptOpsError):
    """Live delivery is configured but no data has been loaded yet (the
    registry or Redis has not answered, and neither ``cache_dir`` nor a
    bundle had data), and no fallback was given."""

    KIND = "REGISTRY_UNAVAILABLE"


class PromptOpsIOError(PromptOpsError):
    """A file could not be read or written."""

    KIND = "IO_ERROR"

    @property
    def file(self) -> Optional[str]:
        return self._get("file")  # type: ignore[no-any-return]


class PolicyError(PromptOpsError):
    """A routing policy is invalid; ``field`` names the offending part
    (``strategy``, ``targets[2].weight``, ...)."""

    KIND = "POLICY_ERROR"

    @property
    def prompt(self) -> Optional[str]:
        return self._get("prompt")  # type: ignore[no-any-return]

    @property
    def field(self) -> Optional[str]:
        return self._get("field")  # type: ignore[no-any-return]


class NoRoute(PromptOpsError):
    """A valid routing policy found no target it may use (every circuit
    open, no target within the budget or the context window)."""

    KIND = "NO_ROUTE"

    @property
    def prompt(self) -> Optional[str]:
        return self._get("prompt")  # type: ignore[no-any-return]


class ProviderError(PromptOpsError):
    """A provider call failed (after every failover attempt)."""

    KIND = "PROVIDER_ERROR"

    @property
    def provider(self) -> Optional[str]:
        return self._get("provider")  # type: ignore[no-any-return]

    @property
    def model(self) -> Optional[str]:
        return self._get("model")  # type: ignore[no-any-return]

    @property
    def error_type(self) -> Optional[str]:
        """``connect``, ``timeout``, ``ttft_timeout``, ``rate_limited``,
        ``server_error``, ``client_error``, ``malformed_response``,
        ``stream_error``, ``auth`` or ``unsupported_provider``."""
        return self._get("error_type")  # type: ignore[no-any-return]

    @property
    def status(self) -> Optional[int]:
        """The HTTP status, when there was one."""
        return self._get("status")  # type: ignore[no-any-return]

    @property
    def attempts(self) -> Optional[int]:
        return self._get("attempts")  # type: ignore[no-any-return]


# The native module picks the class of an engine error here, by kind.
_BY_KIND: Dict[str, Type[PromptOpsError]] = {
    cls.KIND: cls
    for cls in (
        PromptOpsError,
        PromptNotFound,
        TemplateError,
        VariableError,
        ValidationError,
        IncludeCycleError,
        ParseError,
        SnapshotError,
        UnknownModel,
        OutputLimitError,
        FuelExhausted,
        ConfigError,
        RegistryUnavailable,
        PromptOpsIOError,
        PolicyError,
        NoRoute,
        ProviderError,
    )
}
_BY_KIND["PANIC"] = PromptOpsError
