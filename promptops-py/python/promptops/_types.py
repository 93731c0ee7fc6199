"""Typed shapes of the dicts promptops takes and returns."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict

__all__ = [
    "Message",
    "TokenCountDetail",
    "TokenizerInfo",
    "Change",
    "Diagnostic",
    "ApplyResult",
    "ModelPrice",
    "SyncStatus",
    "Target",
    "Outcome",
    "TelemetryOptions",
]


class _MessageRequired(TypedDict):
    role: str
    content: str


class Message(_MessageRequired, total=False):
    """A chat message as the OpenAI and Anthropic SDKs take it. ``name`` is
    present only when the prompt sets one."""

    name: str


class TokenCountDetail(TypedDict):
    count: int
    encoding: str
    """``cl100k_base`` or ``o200k_base``."""
    exact: bool
    """``False`` for an estimate (non-OpenAI models)."""


class TokenizerInfo(TypedDict):
    encoding: str
    exact: bool
    factor: float
    """Counts are multiplied by this (1.0 for exact counts)."""


class Change(TypedDict):
    """``prompt`` under ``label`` moved from version ``old`` to ``new``
    (``None``: not served under that label before / any more)."""

    prompt: str
    label: str
    old: Optional[int]
    new: Optional[int]


class Diagnostic(TypedDict):
    """A problem found while loading prompts (the rest still loads)."""

    prompt: str
    version: Optional[int]
    label: Optional[str]
    kind: str
    message: str
    details: Dict[str, Any]


class ApplyResult(TypedDict):
    applied: bool
    """``False`` when the snapshot was not newer than the current data."""
    revision: int
    hash: str
    changes: List[Change]
    diagnostics: List[Diagnostic]


class ModelPrice(TypedDict):
    """A model's built-in price, USD per million tokens."""

    provider: str
    model: str
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: Optional[float]
    context_window: Optional[int]


class SyncStatus(TypedDict):
    """Live delivery status (``Client.status_detail``, ``on_status``)."""

    status: str
    """``initializing``, ``valid``, ``interrupted`` or ``off``."""
    last_error: Optional[str]
    """The most recent error of any live source (kept after recovery)."""
    data_age: Optional[float]
    """Seconds since a live source last confirmed the data was current
    (``None`` if none ever did)."""
    sources: Dict[str, str]
    """Per live source (``http``, ``redis``): its own status."""


class Target(TypedDict):
    """A routing target (``Decision.target``, ``Decision.fallbacks``)."""

    id: str
    provider: str
    model: str
    variant: Optional[str]
    """The prompt variant it renders (``None``: the one meant for ``model``)."""
    version: Optional[int]
    """The pinned prompt version (``None``: the label's)."""


class Outcome(TypedDict, total=False):
    """The outcome of one call, for ``Client.record`` (the core's
    ``Outcome``). A missing ``error`` means success; a missing ``cost_usd``
    is computed from the token counts and the price table."""

    error: Optional[str]
    """``connect``, ``timeout``, ``rate_limited``, ``server_error``,
    ``malformed_response`` or ``client_error``."""
    status: Optional[int]
    retry_after_ms: Optional[int]
    latency_ms: Optional[float]
    ttft_ms: Optional[float]
    input_tokens: Optional[int]
    output_tokens: Optional[int]
    cost_usd: Optional[float]
    quality: Optional[float]
    """A caller quality score in ``[0, 1]``."""


class TelemetryOptions(TypedDict, total=False):
    """``Client(telemetry=...)`` options (the core's ``TelemetryConfig``)."""

    capacity: int
    """Events the record queue holds before dropping (default 8192)."""
    export_capacity: int
    """Events kept for upload between uploads (default 8192)."""
    keep_events: bool
    """Keep events for upload at all (default ``True``); with ``False`` only
    the aggregates (``metrics_text``) are kept."""
    project: str
    mask_pii: bool
    """Mask e-mail addresses, phone numbers, ... in event attributes."""
