"""Typed shapes of the dicts promptops takes and returns."""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, TypedDict

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
    "OtlpOptions",
    "TelemetryStats",
    "OtlpStats",
    "ModelEntry",
    "ModelHealth",
    "Endpoint",
    "CallOptions",
    "Usage",
    "Attempt",
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
    """Mask e-mail addresses and runs of 7+ digits (phone, card, account
    numbers) in events. Default: masked when telemetry leaves the process
    (upload, OTLP); ``False`` sends events as recorded."""


class _OtlpOptionsRequired(TypedDict):
    endpoint: str
    """The collector's base URL (``http://127.0.0.1:4318``); ``/v1/metrics``
    and ``/v1/traces`` are appended."""


class OtlpOptions(_OtlpOptionsRequired, total=False):
    """``Client(otlp=...)``: OTLP/HTTP JSON export with the OpenTelemetry
    GenAI semantic conventions (the core's ``OtlpConfig``). A plain URL is
    ``{"endpoint": url}``."""

    headers: Mapping[str, str]
    """Request headers (``Authorization``, ``x-api-key``, ...); their values
    are treated as secrets."""
    service_name: str
    """``service.name`` of the resource (default ``promptops-app``)."""
    timeout: float
    """Seconds a request may take (default 10)."""
    max_spans: int
    """Spans held between exports (default 2048); more are dropped and
    counted."""
    max_spans_per_request: int
    """Spans per request (default 512)."""
    max_series: int
    """Distinct metric attribute sets kept (default 2000); observations
    beyond are counted in ``dropped_points``."""
    metrics: bool
    """Export metrics (default ``True``)."""
    traces: bool
    """Export one span per call (default ``True``)."""


class OtlpStats(TypedDict):
    """The OTLP exporter's counters (``TelemetryStats["otlp"]``)."""

    spans_exported: int
    spans_dropped: int
    """Dropped because the span queue was full."""
    spans_failed: int
    """In requests that failed."""
    metric_exports: int
    metric_exports_failed: int
    dropped_points: int
    """Metric observations dropped at the series limit."""


class TelemetryStats(TypedDict):
    """``Client.telemetry_stats()``: what the recorder saw and dropped
    (never silently)."""

    recorded: int
    dropped_queue_full: int
    """Dropped because the record queue was full."""
    dropped_export_full: int
    """Dropped from the export buffer before they could be uploaded."""
    dropped_upload_failed: int
    """In uploads that failed."""
    pending: int
    """Waiting for the next upload."""
    otlp: Optional[OtlpStats]
    """``None`` without OTLP export."""


class ModelHealth(TypedDict):
    status: Literal["unknown", "healthy", "unavailable"]
    """``unavailable``: the registry's last health check failed and routing
    skips the model."""
    checked_at: Optional[str]
    """RFC 3339 time of that check."""
    error: Optional[str]


class ModelEntry(TypedDict):
    """One model of the project's catalogue (``Client.models()``, the
    core's ``ModelEntry``). Prices are USD per million tokens and override
    the built-in table."""

    model: str
    provider: str
    context_window: Optional[int]
    max_output_tokens: Optional[int]
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: Optional[float]
    enabled: bool
    """``False``: routing never picks the model."""
    base_url: Optional[str]
    """API base of an OpenAI-compatible server (``None``: the provider's)."""
    health: ModelHealth


class Endpoint(TypedDict, total=False):
    """Where a provider name (the ``provider`` of a routing target) is
    served: ``Client(providers={"openai": {...}, "vllm": {...}})`` (the
    core's ``Endpoint``). ``openai`` and ``anthropic`` are known already
    (their public URLs, keys from ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``);
    settings given for them replace those defaults one by one. Any other
    name is an OpenAI-compatible server (vLLM, Ollama, a gateway) and needs
    ``base_url``. Keys are never logged, shown in ``repr`` or put in errors."""

    protocol: Literal["openai", "anthropic"]
    """The wire protocol (default: ``anthropic`` for ``anthropic``, else
    ``openai``, the Chat Completions API)."""
    base_url: str
    """Base URL with the API version path, e.g. ``http://localhost:8000/v1``."""
    api_key: str
    """The key itself (default: read from ``api_key_env`` at call time)."""
    api_key_env: str
    """The environment variable the key is read from at call time."""
    headers: Mapping[str, str]
    """Extra request headers (their values are treated as secrets)."""


class CallOptions(TypedDict, total=False):
    """``Client(call_options=...)``: the default settings of provider calls
    (the core's ``CallOptions``); ``complete`` takes the same as keywords."""

    stream: bool
    """Stream responses (SSE; gives ``ttft_ms``). Default ``False``."""
    timeout: float
    """Seconds a whole attempt may take (default 60)."""
    ttft_timeout: float
    """Streams: seconds to wait for the first token (default 20)."""
    connect_timeout: float
    """Seconds a connection may take to open (default 5; client-wide)."""
    max_attempts: int
    """Most attempts (default: the policy's ``failover.max_attempts``, else
    every target)."""
    failover_on: Sequence[str]
    """Failure classes failed over on (default: the policy's
    ``failover.on``): ``connect``, ``timeout``, ``rate_limited``,
    ``server_error``, ``malformed_response``, ``client_error``."""


class Usage(TypedDict):
    """Token usage of a completion (``Completion.usage``)."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reported: bool
    """``False``: the provider sent no usage and the tokens were counted
    here."""


class Attempt(TypedDict):
    """One attempt of a ``complete`` (``Completion.attempts``)."""

    target: str
    provider: str
    model: str
    ok: bool
    skipped: bool
    """Not called: the target's circuit was open."""
    error_type: Optional[str]
    """``connect``, ``timeout``, ``ttft_timeout``, ``rate_limited``,
    ``server_error``, ``client_error``, ``malformed_response``,
    ``stream_error``, ``auth``, ``circuit_open``, ``unsupported_provider``."""
    status: Optional[int]
    message: Optional[str]
    retry_after_ms: Optional[int]
    """A 429's ``Retry-After``, in milliseconds (the target is not used
    again before it passes)."""
    latency_ms: float
