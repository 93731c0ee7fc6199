"""promptops: render versioned LLM prompts in-process.

>>> import promptops
>>> promptops.count_tokens("hello world")
2

The engine is the Rust crate ``promptops-core``; this package is a thin
binding over it (``promptops._lowlevel``) plus the exception classes.
"""

from __future__ import annotations

from ._client import AsyncCompletionStream, Client
from ._errors import (
    ConfigError,
    FuelExhausted,
    IncludeCycleError,
    NoRoute,
    OutputLimitError,
    ParseError,
    PolicyError,
    PromptNotFound,
    PromptOpsError,
    PromptOpsIOError,
    ProviderError,
    RegistryUnavailable,
    SnapshotError,
    TemplateError,
    UnknownModel,
    ValidationError,
    VariableError,
)
from ._lowlevel import (
    BUILTIN_PRICES_AS_OF,
    Completion,
    CompletionStream,
    Decision,
    Prompt,
    Rendered,
    __version__,
    count_tokens,
    count_tokens_detail,
    estimate_cost,
    model_price,
    route_bucket,
    tokenizer_for_model,
)
from ._routing import validate_policy
from ._types import (
    ApplyResult,
    Attempt,
    CallOptions,
    Change,
    Diagnostic,
    Endpoint,
    Message,
    ModelPrice,
    Outcome,
    SyncStatus,
    Target,
    TelemetryOptions,
    TokenCountDetail,
    TokenizerInfo,
    Usage,
)

__all__ = [
    "__version__",
    "BUILTIN_PRICES_AS_OF",
    "Client",
    "Prompt",
    "Rendered",
    "Decision",
    "Completion",
    "CompletionStream",
    "AsyncCompletionStream",
    "Endpoint",
    "CallOptions",
    "Usage",
    "Attempt",
    "validate_policy",
    "route_bucket",
    "Target",
    "Outcome",
    "TelemetryOptions",
    "count_tokens",
    "count_tokens_detail",
    "estimate_cost",
    "tokenizer_for_model",
    "model_price",
    "Message",
    "ModelPrice",
    "TokenCountDetail",
    "TokenizerInfo",
    "Change",
    "Diagnostic",
    "ApplyResult",
    "SyncStatus",
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
