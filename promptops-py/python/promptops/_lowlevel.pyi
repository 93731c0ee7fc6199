# Hand-written stub of the native module (promptops-py/src/lib.rs).
# Checked against the built module by `python -m mypy.stubtest promptops._lowlevel`.
import os
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Union,
    final,
)

from typing_extensions import Self, disjoint_base

from promptops._types import (
    ApplyResult,
    Attempt,
    CallOptions,
    Diagnostic,
    Endpoint,
    Message,
    ModelEntry,
    ModelPrice,
    OtlpOptions,
    Outcome,
    SyncStatus,
    Target,
    TelemetryOptions,
    TelemetryStats,
    TokenCountDetail,
    TokenizerInfo,
    Usage,
)

__all__ = [
    "Client",
    "Prompt",
    "Rendered",
    "Decision",
    "Completion",
    "CompletionStream",
    "CallHandle",
    "validate_policy",
    "route_bucket",
    "count_tokens",
    "count_tokens_detail",
    "tokenizer_for_model",
    "estimate_cost",
    "model_price",
    "_test_panic",
    "__version__",
    "BUILTIN_PRICES_AS_OF",
]

__version__: str
BUILTIN_PRICES_AS_OF: str

@disjoint_base
class Client:
    def __new__(
        cls,
        *,
        project: Optional[str] = None,
        bundle: Optional[Union[str, os.PathLike[str]]] = None,
        prompts_dir: Optional[Union[str, os.PathLike[str]]] = None,
        strict: bool = False,
        server: Optional[str] = None,
        api_key: Optional[str] = None,
        redis: Optional[str] = None,
        redis_prefix: Optional[str] = None,
        cache_dir: Optional[Union[str, os.PathLike[str]]] = None,
        startup_wait: float = 0.0,
        telemetry: Union[bool, TelemetryOptions, None] = None,
        providers: Optional[Mapping[str, Endpoint]] = None,
        call_options: Optional[CallOptions] = None,
        telemetry_upload: Optional[bool] = None,
        telemetry_upload_url: Optional[str] = None,
        telemetry_interval: Optional[float] = None,
        telemetry_max_batch: Optional[int] = None,
        telemetry_flush_timeout: Optional[float] = None,
        otlp: Union[str, OtlpOptions, None] = None,
        prices: Optional[Sequence[ModelPrice]] = None,
    ) -> Self: ...
    def get(
        self,
        name: str,
        label: str = "production",
        version: Optional[int] = None,
        fallback: Optional[Union[str, Sequence[Message]]] = None,
    ) -> Prompt:
        """The prompt ``name`` under ``label``, or at ``version`` (the label is
        then not used). ``fallback`` (text, or chat messages) is served, with
        ``source == "fallback"``, only when the prompt is in no source."""
    @property
    def status(self) -> str:
        """``"initializing"``, ``"valid"``, ``"interrupted"`` or ``"off"``
        (without live sources: ``"valid"`` when prompt data is loaded,
        ``"off"`` when none is)."""
    @property
    def status_detail(self) -> SyncStatus:
        """The status with the last error, the data age (seconds) and the
        status of each live source."""
    @property
    def project(self) -> Optional[str]: ...
    @property
    def diagnostics(self) -> List[Diagnostic]:
        """Problems found while loading (the rest of the prompts still load)."""
    def on_change(self, callback: Any) -> None:
        """Call ``callback(changes: list[Change])`` after every update that
        changes what a label serves. Exceptions in the callback are reported
        through ``sys.unraisablehook`` and go no further."""
    def on_status(self, callback: Callable[[SyncStatus], object]) -> None:
        """Call ``callback(status: SyncStatus)`` whenever the overall status
        changes (from a sync thread). Exceptions in the callback are reported
        through ``sys.unraisablehook`` and go no further."""
    def start_sync(self) -> None:
        """(Re)start live sync; done automatically in a forked child."""
    def close(self) -> None:
        """Stop live sync (idempotent). Lookups keep serving what is loaded."""
    def apply_snapshot(self, snapshot: Union[str, bytes]) -> ApplyResult: ...
    def route(
        self,
        name: str,
        vars: Optional[Mapping[str, Any]] = None,
        /,
        *,
        route_key: Optional[str] = None,
        label: Optional[str] = None,
        attributes: Optional[Mapping[str, str]] = None,
        **kwargs: Any,
    ) -> Decision:
        """Pick the target of ``name``'s routing policy (sticky by
        ``route_key``) and render the prompt for it with ``vars`` and/or
        keyword arguments. A prompt without a policy routes to its config's
        model. Raises ``NoRoute`` when no target is available."""
    def record(
        self,
        decision: Decision,
        outcome: Optional[Outcome] = None,
        /,
        *,
        target: Optional[str] = None,
        attempt: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        """Feed a call's outcome (``Outcome`` dict and/or keywords) into the
        routing stats, the circuit breaker and telemetry. ``target`` (an id)
        records a fallback tried instead of the chosen target."""
    def record_quality(self, decision: Decision, score: float) -> None:
        """A quality score in ``[0, 1]`` for the decision's target."""
    def metrics_text(self) -> str:
        """Telemetry metrics in the Prometheus text format (``ConfigError``
        when telemetry is off)."""
    def flush_telemetry(self, timeout: float = 5.0) -> bool:
        """Export telemetry now (upload, OTLP) and wait at most ``timeout``
        seconds (default 5), with the GIL released. ``True`` when the export
        round finished in time (failed requests are counted in
        ``telemetry_stats``); ``False`` without an exporter or on timeout."""
    def wait_ready(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds (GIL released) for a live source
        to deliver data; ``True`` when it did. ``False`` at once without
        live sources, or when every live source stopped or the client
        closed."""
    def telemetry_stats(self) -> TelemetryStats:
        """Events recorded, dropped and pending, and the OTLP exporter's
        counters (``ConfigError`` when telemetry is off)."""
    def models(self) -> List[ModelEntry]:
        """The model catalogue of the current snapshot (empty without one)."""
    def estimate_cost(self, model: str, input_tokens: int, output_tokens: int) -> Optional[float]:
        """Cost in USD with this client's prices (the catalogue's over the
        built-in table); ``None`` for an unknown model."""
    def model_price(self, model: str) -> ModelPrice:
        """The price this client uses for ``model`` (``UnknownModel`` if none)."""
    def complete(
        self,
        name: str,
        vars: Optional[Mapping[str, Any]] = None,
        /,
        *,
        route_key: Optional[str] = None,
        label: Optional[str] = None,
        attributes: Optional[Mapping[str, str]] = None,
        stream: Optional[bool] = None,
        timeout: Optional[float] = None,
        ttft_timeout: Optional[float] = None,
        max_attempts: Optional[int] = None,
        failover_on: Optional[Collection[str]] = None,
        **kwargs: Any,
    ) -> Completion:
        """Render, route, call the provider and fail over (blocking, GIL
        released). Options left ``None`` take the client's ``call_options``."""
    def stream(
        self,
        name: str,
        vars: Optional[Mapping[str, Any]] = None,
        /,
        *,
        route_key: Optional[str] = None,
        label: Optional[str] = None,
        attributes: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        ttft_timeout: Optional[float] = None,
        max_attempts: Optional[int] = None,
        failover_on: Optional[Collection[str]] = None,
        **kwargs: Any,
    ) -> CompletionStream:
        """``complete`` streamed: iterate for the text deltas."""
    def spawn_complete(
        self,
        name: str,
        vars: Optional[Mapping[str, Any]],
        on_done: Callable[[Optional[Completion], Optional[BaseException]], object],
        on_chunk: Optional[Callable[[str], object]] = None,
        /,
        *,
        route_key: Optional[str] = None,
        label: Optional[str] = None,
        attributes: Optional[Mapping[str, str]] = None,
        stream: Optional[bool] = None,
        timeout: Optional[float] = None,
        ttft_timeout: Optional[float] = None,
        max_attempts: Optional[int] = None,
        failover_on: Optional[Collection[str]] = None,
        **kwargs: Any,
    ) -> CallHandle:
        """Start ``complete`` on the module's runtime and return at once;
        ``on_chunk(text)`` and then ``on_done(completion, error)`` are called
        from a runtime thread (``on_done`` not after ``cancel()``)."""

@final
class Prompt:
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int:
        """The version number (0 for an inline fallback)."""
    @property
    def label(self) -> Optional[str]:
        """The label it was looked up by (``None`` for a pinned version)."""
    @property
    def source(self) -> str:
        """``"memory"`` (live source or ``apply_snapshot``), ``"disk"``,
        ``"bundle"`` or ``"fallback"``."""
    @property
    def revision(self) -> int:
        """The revision of the snapshot it came from (0 for local data)."""
    @property
    def kind(self) -> str:
        """``"text"`` or ``"chat"``."""
    @property
    def config(self) -> Dict[str, Any]:
        """The model config (``provider``, ``model``, ``temperature``, ...)."""
    @property
    def variants(self) -> List[str]: ...
    @property
    def variant_name(self) -> Optional[str]: ...
    def variant(self, name: str) -> Prompt: ...
    def for_model(self, model: str) -> Prompt: ...
    def render(self, vars: Optional[Mapping[str, Any]] = None, /, **kwargs: Any) -> Rendered:
        """Render with ``vars`` and/or keyword arguments (keywords win).
        Values may be dict, list, tuple, str, int, float, bool or None
        (and other mappings and sequences)."""

@final
class Rendered:
    @property
    def text(self) -> Optional[str]:
        """The rendered text (text prompts), else ``None``."""
    @property
    def messages(self) -> Optional[List[Message]]:
        """The rendered messages (chat prompts), else ``None``."""
    @property
    def config(self) -> Dict[str, Any]: ...
    @property
    def model(self) -> Optional[str]: ...
    @property
    def input_tokens(self) -> int:
        """Input tokens for the config's model (computed once, on first use)."""
    @property
    def tokens_exact(self) -> bool: ...
    @property
    def tokens_encoding(self) -> str: ...
    @property
    def estimated_cost_usd(self) -> Optional[float]:
        """Cost of the input in USD, ``None`` when the model is not priced."""
    @property
    def prompt(self) -> str: ...
    @property
    def version(self) -> Optional[int]: ...
    @property
    def label(self) -> Optional[str]: ...
    @property
    def variant(self) -> Optional[str]: ...
    @property
    def source(self) -> str: ...

@final
class Decision:
    @property
    def target(self) -> Target: ...
    @property
    def fallbacks(self) -> List[Target]:
        """The targets to try after ``target``, in order (failover)."""
    @property
    def policy_id(self) -> str: ...
    @property
    def strategy(self) -> str: ...
    @property
    def bucket(self) -> Optional[int]:
        """The sticky bucket in ``[0, 10000)`` (sticky strategies)."""
    @property
    def reason(self) -> str: ...
    @property
    def skipped(self) -> List[Dict[str, str]]: ...
    @property
    def estimate(self) -> Optional[Dict[str, Any]]: ...
    @property
    def prompt(self) -> Optional[str]: ...
    @property
    def version(self) -> Optional[int]: ...
    @property
    def label(self) -> Optional[str]: ...
    @property
    def variant(self) -> Optional[str]: ...
    @property
    def rendered(self) -> Rendered: ...
    @property
    def text(self) -> Optional[str]: ...
    @property
    def messages(self) -> List[Message]:
        """The rendered messages (a text prompt is one ``user`` message)."""

@final
class Completion:
    @property
    def text(self) -> str: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cost_usd(self) -> Optional[float]:
        """From the usage and the price table (``None``: unpriced model)."""
    @property
    def latency_ms(self) -> float:
        """Of the attempt that answered."""
    @property
    def ttft_ms(self) -> Optional[float]:
        """Time to first token (streams only)."""
    @property
    def finish_reason(self) -> Optional[str]: ...
    @property
    def response_model(self) -> Optional[str]: ...
    @property
    def target(self) -> Target:
        """The target that answered."""
    @property
    def prompt(self) -> str:
        """The prompt sent (another one after a ``fallback_prompt``)."""
    @property
    def version(self) -> int: ...
    @property
    def variant(self) -> Optional[str]: ...
    @property
    def policy_id(self) -> str: ...
    @property
    def strategy(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def attempts(self) -> List[Attempt]:
        """Every attempt, in order (failed, skipped and the one that answered)."""

@final
class CompletionStream:
    def __iter__(self) -> Self: ...
    def __next__(self) -> str: ...
    def completion(self) -> Completion:
        """Wait for the end (remaining deltas are dropped); the ``Completion``
        or the call's error."""
    def close(self) -> None:
        """Cancel the call if it is still running (idempotent)."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc: object) -> None: ...

@final
class CallHandle:
    def cancel(self) -> None: ...
    @property
    def done(self) -> bool: ...

def validate_policy(policy: str, prompt: Optional[str] = None) -> Dict[str, Any]: ...
def route_bucket(policy_id: str, experiment: str, key: str) -> int: ...
def count_tokens(text_or_messages: Union[str, Sequence[Message]], model: str = "gpt-4o") -> int: ...
def count_tokens_detail(
    text_or_messages: Union[str, Sequence[Message]], model: str = "gpt-4o"
) -> TokenCountDetail: ...
def tokenizer_for_model(model: str) -> TokenizerInfo: ...
def estimate_cost(model: str, input_tokens: int, output_tokens: int) -> Optional[float]: ...
def model_price(model: str) -> ModelPrice: ...
def _test_panic(message: str) -> None: ...
