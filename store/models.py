"""The row layout shared by the decoder (which builds rows) and the writer (which stores them).

Rows travel between processes as plain tuples (cheapest to pickle), so their layout is fixed here by
column name; `SPAN_COLUMNS.index(...)` constants let both sides address fields without a class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

# Column order of a span row as produced by the decoder. The writer fills the effective fields
# (billed, feature, tenant, error_class, duplicate_of) before inserting.
SPAN_COLUMNS: Final = (
    "id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "otel_kind",
    "start_ns",
    "end_ns",
    "duration_ns",
    "status",
    "status_message",
    "service",
    "resource_id",
    "scope_id",
    "provider",
    "operation",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "ttft_ns",
    "streaming",
    "finish_reason",
    "own_error_class",
    "error_subclass",
    "error_type",
    "validation_marker",
    "error_class",
    "own_feature",
    "own_tenant",
    "feature",
    "tenant",
    "prompt_id",
    "prompt_version",
    "conversation_id",
    "user_id",
    "cost_nusd",
    "price_id",
    "billed",
    "flags",
    "raw",
    "response_id",
    "call_layer",
    "tool_name",
    "duplicate_of",
    "price_tier",
    "own_variant",  # m007: the experiment variant, kept and inherited like own_feature/feature
    "variant",
)
COL: Final = {name: i for i, name in enumerate(SPAN_COLUMNS)}

# call_layer: how far from the wire a span was emitted. Two spans of one call at different layers
# (a framework's and the SDK's) are one call billed once, at the lowest layer.
LAYER_NATIVE_SDK: Final = 0  # the provider SDK's own span (e.g. anthropic's com.anthropic.sdk.python)
LAYER_INSTRUMENTATION: Final = 1  # an instrumentation library wrapping an SDK (the default)
LAYER_FRAMEWORK: Final = 2  # a framework's span (LangChain, LlamaIndex, pydantic-ai, Vercel's wrapper…)

# Span flags: what the receiver changed or could not trust, so the UI can say so.
FLAG_TRUNCATED: Final = 1 << 0  # an attribute or event was cut to the size limit
FLAG_TIME_ADJUSTED: Final = 1 << 1  # start/end were implausible; receive time used instead
FLAG_DURATION_INVALID: Final = 1 << 2  # end before start: no latency recorded
FLAG_TOKENS_INVALID: Final = 1 << 3  # negative or absurd token counts: usage dropped
FLAG_UTF8_REPAIRED: Final = 1 << 4  # invalid UTF-8 replaced with U+FFFD
FLAG_CONTENT_DROPPED: Final = 1 << 5  # --no-content removed prompts/completions
FLAG_REDACTED: Final = 1 << 6  # the redaction pass ran on this span's content
FLAG_TTFT_INVALID: Final = 1 << 7  # TTFT outside [0, duration]: dropped
FLAG_ATTRS_DROPPED: Final = 1 << 8  # too many attributes/events: the rest dropped
FLAG_ROOT_NAME_FEATURE: Final = 1 << 9  # feature came from the root span's name
# The call's output was a refusal (finish reason content_filter/refusal/safety, a refusal part, or a
# refusal phrase); rollups.refusals counts it. Not in FLAG_NAMES: it describes the answer, not the receiver.
FLAG_REFUSAL: Final = 1 << 10

FLAG_NAMES: Final = {
    FLAG_TRUNCATED: "truncated",
    FLAG_TIME_ADJUSTED: "time adjusted",
    FLAG_DURATION_INVALID: "negative duration",
    FLAG_TOKENS_INVALID: "invalid token counts",
    FLAG_UTF8_REPAIRED: "invalid UTF-8 repaired",
    FLAG_CONTENT_DROPPED: "content not stored",
    FLAG_REDACTED: "redacted",
    FLAG_TTFT_INVALID: "invalid TTFT",
    FLAG_ATTRS_DROPPED: "attributes dropped",
    FLAG_ROOT_NAME_FEATURE: "feature from root span name",
}

# Content tier (`--content`, receiver/content_tiers.py): which rule kept a span's prompts and
# completions, or dropped them. Stored in bits 16-19 of `flags`, not a column of its own: every read
# of a span already carries its flags (no query, row class or migration changes), and a spare nibble
# costs nothing. 0: nothing recorded (the span carried no content, `--content all`, or an older store).
# In SQL: `(flags >> 16) & 15`.
CONTENT_TIER_SHIFT: Final = 16
CONTENT_TIER_MASK: Final = 0xF << CONTENT_TIER_SHIFT
TIER_ERROR: Final = 1  # the span failed (an API error or a failed status)
TIER_GUARDRAIL: Final = 2  # a guardrail rejected the call, or the provider's content filter did
TIER_VALIDATION: Final = 3  # the app could not use the output (validation failure)
TIER_BURNING: Final = 4  # an SLO covering the span's feature/model was burning its error budget
TIER_SLOW: Final = 5  # slower than the configured percentile of its model (or operation)
TIER_COSTLY: Final = 6  # costlier than the configured percentile of its model
TIER_SAMPLED: Final = 7  # its trace is in the N % kept by trace-id hash
TIER_SAMPLED_OUT: Final = 8  # dropped: no tier kept it
TIER_NONE: Final = 9  # dropped: `--content none` (`--no-content`)
CONTENT_TIERS: Final = {
    TIER_ERROR: "error",
    TIER_GUARDRAIL: "guardrail",
    TIER_VALIDATION: "validation",
    TIER_BURNING: "burning",
    TIER_SLOW: "slow",
    TIER_COSTLY: "costly",
    TIER_SAMPLED: "sampled",
    TIER_SAMPLED_OUT: "sampled out",
    TIER_NONE: "none",
}
DROPPED_TIERS: Final = frozenset({TIER_SAMPLED_OUT, TIER_NONE})


def content_tier(flags: int) -> int:
    """The content tier recorded in a span's flags (0: none recorded)."""
    return (flags & CONTENT_TIER_MASK) >> CONTENT_TIER_SHIFT


ERROR_CLASSES: Final = ("api", "validation", "guardrail")
API_SUBCLASSES: Final = ("rate_limit", "provider", "client", "timeout", "network", "other")

LOG_COLUMNS: Final = (
    "trace_id",
    "span_id",
    "time_ns",
    "event_name",
    "severity",
    "resource_id",
    "scope_id",
    "finish_reason",
    "eval_name",
    "eval_score",
    "raw",
)


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if flags & bit]


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource or instrumentation scope, stored once and referenced by id."""

    digest: bytes
    service: str | None
    blob: bytes


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """What a decoder hands the writer for one export request."""

    request_id: int
    spans: list[tuple]
    logs: list[tuple]
    resources: dict[bytes, tuple[str | None, bytes]]
    scopes: dict[bytes, tuple[str, str, bytes]]
    rejected: int
    rejection_message: str


class TraceErrorCounts:
    """`errors` and `failed` of a row carrying a trace summary's error counters (a trace in the list,
    a conversation's turn): one definition for every screen that marks a failed trace."""

    __slots__ = ()
    errors_api: int
    errors_validation: int
    errors_guardrail: int
    error_spans: int

    @property
    def errors(self) -> int:
        return self.errors_api + self.errors_validation + self.errors_guardrail

    @property
    def failed(self) -> bool:
        return bool(self.errors or self.error_spans)


class Call(NamedTuple):
    """A billable span with a provider response id: what billing-once looks a twin up by."""

    trace_id: bytes
    span_id: bytes
    response_id: str
    layer: int
    start_ns: int
    end_ns: int
    root: bool = False  # the span is its trace's root
