"""The single writer: one connection, one transaction per batch of decoded requests.

Besides inserting rows, the writer owns every rule that needs more than one span (design §2):
- bill each call once: an llm/embedding span with a billable descendant is not billed, whichever of
  parent or child arrived first;
- a span without its own feature/tenant/variant inherits the trace root's, even when the root comes last;
- a failed validation step marks the call whose output it rejected;
- a log record's finish reason joins its span whichever arrives first.
Decisions can change when a later span arrives, so rollups are additive counters and histograms,
and a change to a committed span is applied as "subtract the old contribution, add the new one".
Recent traces live in memory (an LRU); older ones are reloaded from the spans table when touched.
"""

from __future__ import annotations

import operator
import sqlite3
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from store import histogram, sessions, tool_rollups
from store.latency import decode_figures
from store.models import COL, FLAG_REFUSAL, LAYER_FRAMEWORK, LAYER_INSTRUMENTATION, LAYER_NATIVE_SDK, SPAN_COLUMNS, Call

if TYPE_CHECKING:
    from store.changes import ChangeTracker
    from store.clickhouse.outbox import OutboxRecorder
    from store.clickhouse.trace_sync import TraceSync

BILLABLE = frozenset({"llm", "embedding"})
TOTAL_DIMS_ID = 0  # rollup rows summing every dimension set of their bucket
# Rollup accumulators kept between batches (1-5 KB each with its histograms; ~70 new keys a minute at
# 60 dimension sets: 10 s totals, 1 min and 1 h buckets). Kept while their bucket is recent, where late
# spans land: ROLLUP_RECENT_S after the newest bucket; an older one is read back from its row when a span
# needs it. Kept by count alone (8,000 then 4,000), the cache grew for over an hour at that rate, about
# 0.5 MB a minute in the writer, before levelling off. The count cap stays for a burst of dimension sets.
ROLLUP_RECENT_S = 600
ROLLUP_TRIM_AT = 1_000  # entries before the first trim (then twice what the last one kept)
ROLLUP_CACHE_MAX = 8_000
ROLLUP_CACHE_KEEP = 4_000
RESOLUTIONS = (60, 3600)
# 10-second buckets give the 5-minute view its shape; kept as totals only, and only for 2 hours.
FINE_RESOLUTION = 10
NS = 1_000_000_000
# A validation step may start a little before its call's recorded end (clock skew between spans).
SIBLING_SLACK_NS = 5_000_000

ROLLUP_COUNTERS = (
    "calls",
    "errors_api",
    "err_rate_limit",
    "err_provider",
    "err_client",
    "err_timeout",
    "err_network",
    "err_other",
    "errors_validation",
    "errors_guardrail",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nusd",
    "unpriced_calls",
    "streaming_calls",
    "duration_ns",
    "decode_tokens",
    "decode_ns",
    "refusals",
)
_RC = {name: i for i, name in enumerate(ROLLUP_COUNTERS)}
_N_COUNTERS = len(ROLLUP_COUNTERS)
_SUBCLASS_COUNTER: dict[str | None, int] = {
    "rate_limit": _RC["err_rate_limit"],
    "provider": _RC["err_provider"],
    "client": _RC["err_client"],
    "timeout": _RC["err_timeout"],
    "network": _RC["err_network"],
}

# Columns loaded to rebuild a trace's state (everything but the raw span).
_STATE_COLUMNS = tuple(c for c in SPAN_COLUMNS if c not in ("raw", "status_message"))
_INSERT_SPANS = f"INSERT INTO spans ({', '.join(SPAN_COLUMNS)}) VALUES ({', '.join('?' * len(SPAN_COLUMNS))})"
_UPDATE_SPAN = (
    "UPDATE spans SET finish_reason = ?, own_error_class = ?, billed = ?, feature = ?, tenant = ?, "
    "error_class = ?, duplicate_of = ?, variant = ? WHERE id = ?"
)
_INSERT_LOGS = (
    "INSERT INTO logs (trace_id, span_id, time_ns, event_name, severity, resource_id, scope_id, "
    "finish_reason, eval_name, eval_score, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
TRACE_SUMMARY_COLUMNS = (  # the traces table's, in SpanWriter._summary's order
    "trace_id", "root_span_id", "root_name", "root_known", "service", "start_ns", "end_ns", "duration_ns",
    "spans", "llm_calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens", "cost_nusd", "unpriced_calls", "errors_api", "errors_validation", "errors_guardrail",
    "error_spans", "feature", "tenant", "models", "updated_ns", "conversation_id", "user_id", "variant",
)
_CONVERSATION_AT = TRACE_SUMMARY_COLUMNS.index("conversation_id")
_START_AT = TRACE_SUMMARY_COLUMNS.index("start_ns")
_COST_AT = TRACE_SUMMARY_COLUMNS.index("cost_nusd")
_UPSERT_TRACE = (f"INSERT OR REPLACE INTO traces ({', '.join(TRACE_SUMMARY_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(TRACE_SUMMARY_COLUMNS))})")
HISTOGRAMS = ("hist_latency", "hist_ttft", "hist_tpot", "hist_cost", "hist_tokens", "hist_input_tokens",
              "hist_output_tokens")
_NO_HISTS: tuple[int | None, ...] = (None,) * len(HISTOGRAMS)
_UPSERT_ROLLUP = (
    f"INSERT OR REPLACE INTO rollups (res, bucket, dims_id, {', '.join(ROLLUP_COUNTERS)}, {', '.join(HISTOGRAMS)}) "
    f"VALUES (?, ?, ?, {', '.join('?' * (_N_COUNTERS + len(HISTOGRAMS)))})"
)
_UPSERT_TOOL_ROLLUP = (
    "INSERT OR REPLACE INTO tool_rollups (res, bucket, tool, calls, errors, duration_ns, hist_latency) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _inserted_id(cursor: sqlite3.Cursor) -> int:
    """The rowid an INSERT on `cursor` just made (sqlite3 types lastrowid as optional)."""
    rowid = cursor.lastrowid
    if rowid is None:
        raise sqlite3.InterfaceError("INSERT made no row")
    return rowid


def _deleted(db: sqlite3.Connection, sql: str, ids: Sequence[Any]) -> int:
    """Rows a DELETE (or UPDATE) with `{marks}` for its IN list changed over `ids`, in chunks (its own
    rows only: total_changes would count what triggers did too)."""
    changed = 0
    for start in range(0, len(ids), 400):
        chunk = ids[start:start + 400]
        changed += db.execute(sql.format(marks=", ".join("?" * len(chunk))), chunk).rowcount
    return changed


@dataclass(slots=True)
class ForgetResult:
    """What SpanWriter.forget removed."""

    traces: int = 0
    spans: int = 0
    logs: int = 0
    index_rows: int = 0
    conversations: int = 0  # conversations the traces were in (recomputed; deleted when none is left)
    calls: int = 0  # billed LLM calls taken out of the rollups
    cost_nusd: int = 0
    rebilled_traces: int = 0  # kept traces now billed for a call whose billed span was forgotten


def _recent_entries(cache: dict[tuple, Any], cap: int, keep: int, now_s: int) -> dict[tuple, Any]:
    """A rollup cache ({(res, bucket, ...): accumulator}, all flushed) without the buckets that ended
    ROLLUP_RECENT_S before the newest one began; past `cap` entries even so, the `keep` newest. The newest
    bucket counts no later than `now_s`: one span from a clock ahead of ours must not push every bucket
    out; a replay of old traffic is measured against its own newest bucket."""
    horizon = min(max(key[1] for key in cache), now_s) - ROLLUP_RECENT_S
    recent = {key: acc for key, acc in cache.items() if key[1] + key[0] > horizon}
    if len(recent) > cap:
        recent = {key: recent[key] for key in sorted(recent, key=lambda k: k[1], reverse=True)[:keep]}
    return recent


class SpanState:
    """What the writer remembers of a span: enough to recompute its effective fields and contribution."""

    __slots__ = (
        "id", "span_id", "parent", "kind", "name", "service", "start", "end", "duration", "status",
        "provider", "operation", "model", "input", "output", "cache_read", "cache_write", "reasoning",
        "ttft", "streaming", "finish_reason", "own_error", "subclass", "marker", "own_feature",
        "own_tenant", "prompt_id", "prompt_version", "cost", "flags", "response_id", "layer", "response_model",
        "conversation", "user", "own_variant",
        # effective values as last written (and applied to rollups)
        "billed", "feature", "tenant", "error_class", "duplicate_of", "variant", "refused",
        # the billed span of the same call when it is in another trace (found by response id)
        "external_keeper",
        # a billable span is below this one
        "has_desc",
        # the own-field values last written, to detect changes from joined log records
        "stored_finish", "stored_own_error",
    )
    # The columns' types (store/migrations.py); set in from_row, never with class-level defaults.
    id: int
    span_id: bytes
    parent: bytes | None
    kind: str
    name: str
    service: str | None
    start: int
    end: int
    duration: int | None
    status: int
    provider: str | None
    operation: str | None
    model: str | None
    input: int | None
    output: int | None
    cache_read: int | None
    cache_write: int | None
    reasoning: int | None
    ttft: int | None
    streaming: int | None
    finish_reason: str | None
    own_error: str | None
    subclass: str | None
    marker: int
    own_feature: str | None
    own_tenant: str | None
    prompt_id: str | None
    prompt_version: str | None
    cost: int | None
    flags: int
    response_id: str | None
    layer: int
    response_model: str | None
    conversation: str | None
    user: str | None
    own_variant: str | None
    billed: int
    feature: str | None
    tenant: str | None
    error_class: str | None
    duplicate_of: bytes | None
    variant: str | None
    refused: bool
    external_keeper: bytes | None
    has_desc: bool
    stored_finish: str | None
    stored_own_error: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any], stored: bool) -> SpanState:
        s = cls()
        (s.id, s.span_id, s.parent, s.kind, name, service, s.start, s.end, s.duration, s.status, provider,
         operation, request_model, response_model, s.input, s.output, s.cache_read, s.cache_write, s.reasoning,
         s.ttft, s.streaming, finish_reason, own_error, subclass, s.marker, own_feature, own_tenant, prompt_id,
         prompt_version, s.cost, s.flags, s.response_id, layer, conversation, user, own_variant) = _OWN_FIELDS(row)
        # One object per distinct string across the cached spans: each batch arrives unpickled, so every
        # span would otherwise hold its own copy of its service, model, operation, conversation... (≈0.5 KB
        # per cached span, a fifth of the cache). Interned strings are freed with their last reference.
        # Inline, not a helper: this runs for every span of every batch and of every reloaded trace.
        intern = sys.intern
        s.name = intern(name) if type(name) is str else name
        s.service = intern(service) if type(service) is str else service
        s.provider = intern(provider) if type(provider) is str else provider
        s.operation = intern(operation) if type(operation) is str else operation
        model = request_model or response_model
        s.model = intern(model) if type(model) is str else model
        s.finish_reason = intern(finish_reason) if type(finish_reason) is str else finish_reason
        s.own_error = intern(own_error) if type(own_error) is str else own_error
        s.subclass = intern(subclass) if type(subclass) is str else subclass
        s.own_feature = intern(own_feature) if type(own_feature) is str else own_feature
        s.own_tenant = intern(own_tenant) if type(own_tenant) is str else own_tenant
        s.prompt_id = intern(prompt_id) if type(prompt_id) is str else prompt_id
        s.prompt_version = intern(prompt_version) if type(prompt_version) is str else prompt_version
        s.layer = 1 if layer is None else layer
        s.response_model = intern(response_model) if type(response_model) is str else response_model
        s.conversation = intern(conversation) if type(conversation) is str else conversation
        s.user = intern(user) if type(user) is str else user
        s.own_variant = intern(own_variant) if type(own_variant) is str else own_variant
        s.external_keeper = None
        s.has_desc = False
        s.stored_finish = s.finish_reason
        s.stored_own_error = s.own_error
        if stored:
            s.billed, s.feature, s.tenant, s.error_class, s.duplicate_of, s.variant = _EFFECTIVE_FIELDS(row)
            s.refused = _refused(s)
        else:
            s.billed = 0
            s.feature = s.tenant = s.error_class = s.duplicate_of = s.variant = None
            s.refused = False
        return s


# The columns from_row reads, in its order, fetched in one call.
_OWN_FIELDS = operator.itemgetter(*(COL[name] for name in (
    "id", "span_id", "parent_span_id", "kind", "name", "service", "start_ns", "end_ns", "duration_ns", "status",
    "provider", "operation", "request_model", "response_model", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "ttft_ns", "streaming", "finish_reason",
    "own_error_class", "error_subclass", "validation_marker", "own_feature", "own_tenant", "prompt_id",
    "prompt_version", "cost_nusd", "flags", "response_id", "call_layer", "conversation_id", "user_id",
    "own_variant")))
_EFFECTIVE_FIELDS = operator.itemgetter(*(COL[name] for name in (
    "billed", "feature", "tenant", "error_class", "duplicate_of", "variant")))


def _refused(s: SpanState) -> bool:
    """The normalizer's reading of the span's output (FLAG_REFUSAL), or a refusing finish reason,
    which may also arrive later in a log record (SpanWriter._join_finish_reason)."""
    return bool(s.flags & FLAG_REFUSAL) or s.finish_reason == "content_filter"


@dataclass(slots=True)
class TraceState:
    spans: dict[bytes, SpanState] = field(default_factory=dict)
    children: dict[bytes, list[SpanState]] = field(default_factory=dict)
    root: SpanState | None = None

    def add(self, s: SpanState) -> None:
        self.spans[s.span_id] = s
        if s.parent is None:
            if self.root is None or (s.start, s.span_id) < (self.root.start, self.root.span_id):
                self.root = s
        else:
            self.children.setdefault(s.parent, []).append(s)


def _descendants(trace: TraceState, s: SpanState, limit: int = 10_000) -> Iterator[SpanState]:
    """The spans below `s`, in no particular order (bounded: a trace can be huge)."""
    queue = list(trace.children.get(s.span_id, ()))
    seen = 0
    while queue and seen < limit:
        d = queue.pop()
        seen += 1
        yield d
        queue.extend(trace.children.get(d.span_id, ()))


def _mark_up(trace: TraceState, s: SpanState | None) -> None:
    """Record that a billable span lies below `s`, and below every known ancestor of `s`."""
    while s is not None and not s.has_desc:
        s.has_desc = True
        s = trace.spans.get(s.parent) if s.parent is not None else None


class _Rollup:
    __slots__ = ("counters", "hists", "dirty")

    def __init__(self) -> None:
        self.counters = [0] * _N_COUNTERS
        # latency, ttft, tpot, cost, tokens, input tokens, output tokens (HISTOGRAMS)
        self.hists: tuple[dict[int, int], ...] = tuple({} for _ in HISTOGRAMS)
        self.dirty = False


# (second, tool, error, duration_ns or None, latency histogram bucket or None): SpanWriter.tool_contribution
ToolContribution = tuple[int, str, bool, int | None, int | None]


class _ToolRollup:
    __slots__ = ("calls", "errors", "duration", "latency", "dirty")

    def __init__(self) -> None:
        self.calls = self.errors = self.duration = 0
        self.latency: dict[int, int] = {}
        self.dirty = False


@dataclass(slots=True)
class WriteStats:
    spans: int = 0
    logs: int = 0
    duplicates: int = 0
    # Duplicates whose identity fields differ from the stored span: a span id reused by a buggy or
    # hostile sender, not a retry. The first version is kept; these are counted so someone can see it.
    conflicting: int = 0
    updated: int = 0
    traces: int = 0
    transactions: int = 0


# How far apart two spans of one call may start or end beyond containment (clocks of one process).
TWIN_SLACK_NS = 20_000_000
LAYERS = (LAYER_NATIVE_SDK, LAYER_INSTRUMENTATION, LAYER_FRAMEWORK)


def twins_query(ids: int) -> str:
    """Stored spans with one of `ids` response ids at one layer (the parameters: the ids, the layer)."""
    return ("SELECT response_id, trace_id, span_id, call_layer, start_ns, end_ns FROM spans "
            f"WHERE response_id IN ({', '.join('?' * ids)}) AND call_layer = ?")


def same_call_twins(trace: TraceState) -> dict[int, SpanState]:
    """Spans that are another span's provider call, mapped (by id()) to the span billed for it.

    The descendant rule (an LLM span with an LLM span below it is a wrapper) misses two spans of one
    call that are not ancestor and descendant: a provider SDK's own span beside an instrumentation's
    span of the same call (siblings), or a framework span that its instrumentation never made
    current, so the SDK's span hangs elsewhere (cousins). Among the spans the descendant rule would
    bill, two are one call when
      - they carry the same provider response id, or
      - they were emitted at different layers (models.LAYER_*: SDK, instrumentation, framework),
        are the same operation (chat or embedding) of a compatible provider and model, neither has a
        different response id, and one's time window contains the other's. Each span is matched to
        at most one span of each other layer, the nearest in time, so two concurrent calls of one
        model stay two.
    Of each group, the one billed is the one with usage, then priced, then nearest the wire (lowest
    layer), then the earliest: a function of the group alone, so every arrival order bills the same.
    """
    candidates = [s for s in trace.spans.values() if s.kind in BILLABLE and not s.has_desc]
    if len(candidates) < 2:
        return {}
    parent: dict[int, SpanState] = {id(s): s for s in candidates}

    def find(s: SpanState) -> SpanState:
        while parent[id(s)] is not s:
            parent[id(s)] = parent[id(parent[id(s)])]
            s = parent[id(s)]
        return s

    def union(a: SpanState, b: SpanState) -> None:
        ra, rb = find(a), find(b)
        if ra is not rb:
            parent[id(rb)] = ra

    by_response: dict[str, list[SpanState]] = {}
    for s in sorted(candidates, key=_span_order):
        if s.response_id:
            seen = by_response.setdefault(s.response_id, [])
            for other in seen:
                # Nesting windows too: a replayed or mocked id reused by another call is not this call.
                if _may_be_one_call(other, s):
                    union(other, s)
            seen.append(s)
    layers = {s.layer for s in candidates}
    if len(layers) > 1:
        ordered = sorted(candidates, key=_span_order)
        taken: set[tuple[int, int]] = set()  # (id of the lower span, layer of the span it was matched to)
        for upper in sorted(candidates, key=lambda s: (-s.layer, s.start, s.span_id)):
            best = None
            for lower in ordered:
                if lower.start > upper.end + TWIN_SLACK_NS:
                    break
                if (lower.layer >= upper.layer or (id(lower), upper.layer) in taken
                        or not _may_be_one_call(upper, lower)):
                    continue
                distance = abs(lower.start - upper.start) + abs(lower.end - upper.end)
                if best is None or distance < best[0]:
                    best = (distance, lower)
            if best is not None:
                taken.add((id(best[1]), upper.layer))
                union(upper, best[1])
    groups: dict[int, list[SpanState]] = {}
    for s in candidates:
        groups.setdefault(id(find(s)), []).append(s)
    twins: dict[int, SpanState] = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        keeper = min(group, key=_keeper_order)
        for s in group:
            if s is not keeper:
                twins[id(s)] = keeper
    return twins


def _keeper_order(s: SpanState) -> tuple:
    """Which span of one call is billed: one with usage, then priced, then nearest the wire, then
    the earliest (then the span id, so that the choice never depends on arrival order)."""
    return (s.input is None and s.output is None, s.cost is None, s.layer, s.start, s.span_id)


def _span_order(s: SpanState) -> tuple[int, bytes]:
    return (s.start, s.span_id)


def _may_be_one_call(a: SpanState, b: SpanState) -> bool:
    if a.kind != b.kind:
        return False
    if a.response_id and b.response_id and a.response_id != b.response_id:
        return False
    if a.provider and b.provider and a.provider != b.provider:
        return False
    if not _same_model(a, b):
        return False
    return windows_nest(a.start, a.end, b.start, b.end)


def windows_nest(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    """One time window contains the other (within TWIN_SLACK_NS)."""
    if (a_end - a_start) < (b_end - b_start):
        a_start, a_end, b_start, b_end = b_start, b_end, a_start, a_end
    return a_start - TWIN_SLACK_NS <= b_start and b_end <= a_end + TWIN_SLACK_NS


class _Unreachable(Exception):
    """A recheck could not read ClickHouse: its transaction is rolled back, and the calls wait."""


def _same_model(a: SpanState, b: SpanState) -> bool:
    """Models match when any name of one equals or prefixes one of the other ("gpt-4o" asked for,
    "gpt-4o-2024-08-06" answered); a span that names no model matches on provider alone."""
    names_a = {m.lower() for m in (a.model, a.response_model) if m}
    names_b = {m.lower() for m in (b.model, b.response_model) if m}
    if not names_a or not names_b:
        return True
    return any(x == y or x.startswith(y) or y.startswith(x) for x in names_a for y in names_b)


def _conflicts(known: SpanState, row: Sequence[Any]) -> bool:
    """A retry resends the same span; a different name, parent, time or status is another span."""
    return (known.name != row[COL["name"]] or known.parent != row[COL["parent_span_id"]]
            or known.start != row[COL["start_ns"]] or known.end != row[COL["end_ns"]]
            or known.status != row[COL["status"]])


class SpanWriter:
    """Stores decoded batches. Not thread-safe: one writer, one thread."""

    def __init__(self, db: sqlite3.Connection, *, trace_cache_spans: int = 50_000,
                 clock: Any = time.time_ns) -> None:
        self.db = db
        # Imported here: store.changes' read side imports store.dashboards, which imports this module.
        from store.changes import ChangeTracker
        self.changes: ChangeTracker = ChangeTracker(db)
        self.clock = clock
        # The cache holds the recent traces' spans (≈1.2 KB each as SpanState: 200,000 of them made
        # the writer 385 MB under load, 50,000 make it 200 MB). A span arriving for an evicted trace
        # reloads that trace from the spans table (_load_traces), so the bound costs a lookup, never
        # a decision: at 10k spans/s, 50,000 spans is 5 s of traffic; at a dev box's 100/s, 8 min.
        self.trace_cache_spans = trace_cache_spans
        self.stats = WriteStats()
        self._traces: OrderedDict[bytes, TraceState] = OrderedDict()
        self._cached_spans = 0
        self._rollups: dict[tuple[int, int, int], _Rollup] = {}
        # This transaction's contributions not yet in _rollups: {(second, dims_id): (counters, hists)}.
        self._pending_rollups: dict[tuple[int, int], tuple[dict[int, int], tuple[dict[int, int], ...]]] = {}
        self._tool_rollups: dict[tuple[int, int, str], _ToolRollup] = {}
        self._rollups_trim_at = self._tool_rollups_trim_at = ROLLUP_TRIM_AT
        self._dims: dict[tuple, int] = {}
        self._resources: dict[bytes, int] = {}
        self._scopes: dict[bytes, int] = {}
        # Finish reasons from log records whose span has not arrived yet.
        self._pending_finish: OrderedDict[tuple[bytes, bytes], str] = OrderedDict()
        row = db.execute("SELECT max(id) FROM spans").fetchone()
        self._next_id = (row[0] or 0) + 1
        # `serve --store clickhouse://…`: each transaction also records what it changed for ClickHouse
        # (store/clickhouse/outbox.py). None otherwise, and then it costs one `is None` test per hook.
        self.outbox: OutboxRecorder | None = None
        # With replicas (`serve --store`): what other replicas stored of a batch's traces is read in before
        # the batch is decided (store/clickhouse/trace_sync.py). None otherwise.
        self.sync: TraceSync | None = None
        # This transaction's traces and the row ids of the calls to look up again, with its version: noted
        # once committed.
        self._written_calls: tuple[list[bytes], list[int], int] = ([], [], 0)

    # -- public --------------------------------------------------------------------------------

    def write(self, span_rows: Iterable[Sequence[Any]], log_rows: Iterable[Sequence[Any]] = (),
              resources: dict[bytes, tuple[str | None, bytes]] | None = None,
              scopes: dict[bytes, tuple[str, str, bytes]] | None = None) -> WriteStats:
        """Commit one batch in one transaction. On failure nothing of it is stored and the caches
        are dropped (they may hold uncommitted decisions), then the error is raised."""
        before = (self.stats.spans, self.stats.logs, self.stats.duplicates, self.stats.conflicting,
                  self.stats.updated, self.stats.traces)
        try:
            with self._transaction():
                self._write(list(span_rows), list(log_rows), resources or {}, scopes or {})
        except BaseException:
            (self.stats.spans, self.stats.logs, self.stats.duplicates, self.stats.conflicting,
             self.stats.updated, self.stats.traces) = before
            raise
        self.stats.transactions += 1
        self._schedule_rechecks()
        self._evict_traces()
        return self.stats

    def recheck_twins(self) -> int:
        """With replicas: look the calls this writer stored up to two minutes ago up again in ClickHouse, for a
        twin in another trace that another replica stored meanwhile, and move the billing where the rule in
        store/clickhouse/twin_calls.py says this replica does. One pass: up to the sync's pass size of calls.
        Returns how many calls were looked up (0 while ClickHouse is unreachable or refuses the lookup: they are
        due again later)."""
        if self.sync is None:
            return 0
        self.sync.prune_log(self.db, self.clock())
        self.rewrite_traces_written_elsewhere()
        if not self.sync.rechecks.due_by(self.clock()) or not self.sync.reachable():
            return 0
        due = self.sync.rechecks.due(self.clock(), self.sync.pass_size)
        row_of, calls = self._calls_of(due)
        due, calls = self.sync.one_late_stretch(due, calls, row_of, self.clock())
        looked_up = self.sync.with_stored_twins(due, calls, self.clock())
        if looked_up is None:
            return 0
        found, twin_traces = looked_up
        self.sync.stats.rechecks += len(due)
        if not found:
            return len(due)
        try:
            with self._transaction():
                self._written_calls = ([], [], 0)
                self._write([], [], {}, {}, recheck=found, twin_traces=twin_traces)
                if self.sync.unreachable:
                    raise _Unreachable
        except _Unreachable:
            self.sync.rechecks.again([(row_of[call], version) for call, version in found], self.clock())
            return len(due)
        except BaseException:
            self.sync.rechecks.again([(row_of[call], version) for call, version in found], self.clock())
            raise
        self.sync.stats.recheck_writes += 1
        waiting = self.sync.policy.waiting
        for call, version in found:
            if call.trace_id in waiting:  # a late root whose move waits on the other replica's rechecks
                self.sync.rechecks.later(row_of[call], version, waiting[call.trace_id])
        self._schedule_rechecks()
        self._evict_traces()
        return len(due)

    def rewrite_traces_written_elsewhere(self) -> int:
        """With replicas: the traces this writer wrote TRACE_CHECK_AFTER_S ago looked up again in ClickHouse, and
        those another replica stored spans of in the same moment pulled and decided again as a whole
        (store/clickhouse/trace_sync.py). Returns how many traces were written again."""
        assert self.sync is not None
        due = self.sync.traces_due(self.clock())
        stale = self.sync.written_elsewhere(self.db, due) if due else None
        if not stale:
            return 0
        try:
            with self._transaction():
                self._written_calls = ([], [], 0)
                self._write([], [], {}, {}, rewrite=stale)
                if self.sync.unreachable:
                    raise _Unreachable
        except _Unreachable:
            self.sync.check_again(stale)
            return 0
        except BaseException:
            self.sync.check_again(stale)
            raise
        rewritten = len(self._written_calls[0])
        if rewritten:
            self.sync.stats.traces_rewritten += rewritten
            self.sync.stats.recheck_writes += 1  # the writer loop ships after it
        self._schedule_rechecks()
        self._evict_traces()
        return rewritten

    def _calls_of(self, due: Sequence[tuple[int, int]]) -> tuple[dict[Call, int], list[tuple[Call, int]]]:
        """The calls these span rows hold, with their write's version (a row gone since, forgotten or
        evicted, is left out), and each call's row id."""
        version_of = dict(due)
        row_of: dict[Call, int] = {}
        calls: list[tuple[Call, int]] = []
        for row_id, *fields in sessions.rows_in(
                self.db, "SELECT id, trace_id, span_id, response_id, call_layer, start_ns, end_ns, "
                "parent_span_id IS NULL FROM spans WHERE id IN ({marks})", sorted(version_of)):
            trace_id, span_id, response_id, layer, start, end, root = fields
            call = Call(bytes(trace_id), bytes(span_id), response_id, 1 if layer is None else layer, start, end,
                        bool(root))
            row_of[call] = row_id
            calls.append((call, version_of[row_id]))
        return row_of, calls

    def _schedule_rechecks(self) -> None:
        traces, calls, version = self._written_calls
        if self.sync is not None and traces:
            self.sync.written(traces, calls, version)
        self._written_calls = ([], [], 0)

    def reprice(self, price: Any, chunk: int = 5000) -> tuple[int, int]:
        """Apply a changed price table to stored history. `price(provider, response_model,
        request_model, tokens)` returns (price_id, cost_nusd, price_tier) (store.pricing.TIER_*; a
        2-tuple leaves the tier unknown). Record the table's rows first (store.pricing.
        record_price_rows) so each span's row is the one that priced it. Returns (calls scanned, changed).
        Rollups and trace totals move by the exact deltas, so rollups that outlived evicted spans
        keep their (old-price) totals."""
        last_id = 0
        scanned = changed = 0
        while True:
            rows = self.db.execute(
                "SELECT id, trace_id, span_id, provider, request_model, response_model, input_tokens, "
                "output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nusd, price_id, "
                "price_tier FROM spans WHERE id > ? AND kind IN ('llm', 'embedding') ORDER BY id LIMIT ?",
                (last_id, chunk),
            ).fetchall()
            if not rows:
                break
            last_id = rows[-1][0]
            scanned += len(rows)
            changes = []
            for (span_row_id, trace_id, span_id, provider, request_model, response_model, *tokens,
                 cost, price_id, tier) in rows:
                priced = price(provider, response_model, request_model, tuple(tokens))
                new_price_id, new_cost = priced[0], priced[1]
                new_tier = priced[2] if len(priced) > 2 else None
                if new_price_id != price_id or new_cost != cost or new_tier != tier:
                    changes.append((span_row_id, trace_id, span_id, new_price_id, new_cost, new_tier))
            if changes:
                self._apply_price_changes(changes)
                changed += len(changes)
        return scanned, changed

    def _apply_price_changes(self, changes: list[tuple]) -> None:
        db = self.db
        with self._transaction():
            self._load_traces({c[1] for c in changes})
            touched: dict[bytes, TraceState] = {}
            updates = []
            for span_row_id, trace_id, span_id, price_id, cost, tier in changes:
                trace = self._traces[trace_id]
                s = trace.spans[span_id]
                old = self._contribution(s)
                if old is not None:
                    self._apply(old, -1)
                s.cost = cost
                new = self._contribution(s)
                if new is not None:
                    self._apply(new, +1)
                updates.append((cost, price_id, tier, span_row_id))
                touched[trace_id] = trace
            db.executemany("UPDATE spans SET cost_nusd = ?, price_id = ?, price_tier = ? WHERE id = ?", updates)
            if self.outbox is not None:
                self.outbox.spans.update(u[-1] for u in updates)
            now = self.clock()
            self._write_traces([self._summary(t, trace, now) for t, trace in touched.items()], now)
            self._flush_rollups()
        self._evict_traces()

    def rebill_kept_twins(self, linked: set[bytes], response_ids: set[str], forgotten_spans: set[bytes]) -> int:
        """`forget --store` (store/clickhouse/forget.py), in a working store of its own: these kept traces, read
        from ClickHouse, hold a twin of a call whose billed span is being forgotten; the call is billed in
        them instead, as SpanWriter.forget does on one store. Returns how many traces changed."""
        now = self.clock()
        with self._transaction():
            if self.sync is not None:
                now = max(now, self.sync.pull(self, linked) + 1)
            touched = self._rebill_kept_twins(linked, response_ids, forgotten_spans, now)
            self._flush_rollups()
            self._flush_tool_rollups()
        return touched

    def _rebill_kept_twins(self, linked: set[bytes], response_ids: set[str], forgotten_spans: set[bytes],
                           now: int) -> int:
        """The kept twins of forgotten calls: no longer pointing at a forgotten keeper; their groups are
        formed again from what is stored, and their traces recomputed (rollups move by deltas)."""
        self._load_traces(linked)
        touched: dict[bytes, TraceState] = {}
        rejoin: list[SpanState] = []
        for trace_id in linked:
            trace = self._traces[trace_id]
            for s in trace.spans.values():
                if s.response_id in response_ids and s.kind in BILLABLE:
                    rejoin.append(s)
                    if s.external_keeper in forgotten_spans:
                        s.external_keeper = None
                        touched[trace_id] = trace
        self._join_twins_across_traces(rejoin, touched, touched, now)
        updates, trace_rows = self._recompute_touched(touched, set(), now)
        if updates:
            self.db.executemany(_UPDATE_SPAN, updates)
        if updates and self.outbox is not None:
            self.outbox.spans.update(u[-1] for u in updates)
        self._write_traces(trace_rows, now)
        return len(touched)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One IMMEDIATE transaction around the block: committed when it ends, rolled back when it
        raises, and then the caches dropped too (they may hold its uncommitted decisions)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            if self.outbox is not None:
                self.outbox.flush(self.db)  # in this transaction: committed, or rolled back, with it
            self.db.execute("COMMIT")
        except BaseException:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._forget_everything()
            if self.outbox is not None:
                self.outbox.reset()
            raise

    def forget_traces(self, trace_ids: Iterable[bytes]) -> None:
        """Drop cached state of traces that retention deleted."""
        for trace_id in trace_ids:
            trace = self._traces.pop(trace_id, None)
            if trace is not None:
                self._cached_spans -= len(trace.spans)

    def intern_blobs(self, blobs: dict, table: str) -> dict[bytes, int]:
        """Resources or scopes ({digest: value as the decoders send it}) stored if new; their row ids."""
        return self._intern_blobs(blobs, self._resources if table == "resources" else self._scopes, table)

    def next_span_id(self) -> int:
        """A row id for a span stored from elsewhere (store/clickhouse/trace_sync.py)."""
        self._next_id += 1
        return self._next_id - 1

    def forget_rollups(self) -> None:
        self._rollups.clear()
        self._pending_rollups.clear()
        self._tool_rollups.clear()

    def forget(self, trace_ids: Sequence[bytes]) -> ForgetResult:
        """Delete these traces on request (store/forget.py), as if their spans had never arrived: their
        spans, log records, search-index rows and summaries go, the rollups and tool rollups move by
        the exact contributions they had, and the conversations and users they were in are
        recomputed. A call billed in a forgotten trace and seen again in a kept one (the same
        provider response at another layer, see _join_twins_across_traces) is billed there instead.
        One transaction: on failure nothing is deleted."""
        result = ForgetResult()
        trace_ids = list(dict.fromkeys(trace_ids))
        if not trace_ids:
            return result
        db = self.db
        now = self.clock()
        with self._transaction():
            self._load_traces(set(trace_ids))
            gone = {trace_id: self._traces[trace_id] for trace_id in trace_ids}
            for trace in gone.values():
                for s in trace.spans.values():
                    old = self._contribution(s)
                    if old is not None:
                        self._apply(old, -1)
                        result.calls += s.billed
                        result.cost_nusd += (s.cost or 0) if s.billed else 0
            tools = dict(sessions.rows_in(db, "SELECT id, tool_name FROM spans WHERE kind = 'tool' "
                                              "AND trace_id IN ({marks})", trace_ids))
            for trace in gone.values():
                for s in trace.spans.values():
                    if s.id in tools:
                        self._add_tool_call(s, tools[s.id] or "", sign=-1)
            # Kept traces with a span of one of these calls: found by the provider's response id.
            response_ids = sorted({s.response_id for trace in gone.values() for s in trace.spans.values()
                                   if s.response_id and s.kind in BILLABLE})
            linked = {row[0] for row in sessions.rows_in(
                db, "SELECT DISTINCT trace_id FROM spans WHERE response_id IN ({marks})", response_ids)} - set(gone)
            conversations = sessions.stored_conversations(db, trace_ids)
            from store import content_index  # store.content_index imports store.queries, which imports this module

            result.index_rows = content_index.delete_traces(db, trace_ids)
            if self.outbox is not None:
                self.outbox.gone_spans.extend((t, s.span_id, s.start) for t, trace in gone.items()
                                              for s in trace.spans.values())
                # Their tool spans' keys: each is a tool call's key, or not one; a deletion row for each.
                self.outbox.gone_tool_calls.extend((t, s.span_id, s.start) for t, trace in gone.items()
                                                   for s in trace.spans.values() if s.kind == "tool")
                self.outbox.traces.update(trace_ids)
                stored = {row[0]: (row[1], row[2]) for row in sessions.rows_in(
                    db, "SELECT trace_id, start_ns, cost_nusd FROM traces WHERE trace_id IN ({marks})", trace_ids)}
                for trace_id in trace_ids:
                    self.outbox.trace_deleted(trace_id, stored.get(trace_id))
                self.outbox.logs_deleting(db, trace_ids)
            result.spans = _deleted(db, "DELETE FROM spans WHERE trace_id IN ({marks})", trace_ids)
            result.logs = _deleted(db, "DELETE FROM logs WHERE trace_id IN ({marks})", trace_ids)
            result.traces = _deleted(db, "DELETE FROM traces WHERE trace_id IN ({marks})", trace_ids)
            content_index.clamp_watermarks(db)
            forgotten_spans = {s.span_id for trace in gone.values() for s in trace.spans.values()}
            self.forget_traces(trace_ids)
            result.rebilled_traces = self._rebill_kept_twins(linked, set(response_ids), forgotten_spans, now)
            result.conversations = len(conversations)
            sessions.refresh(db, conversations, now)
            # A change marker keeps its fact (a model, a prompt version), not the forgotten example.
            if self.outbox is not None:
                self.outbox.changes_forgetting(db, trace_ids)
            _deleted(db, "UPDATE changes SET trace_id = NULL WHERE trace_id IN ({marks})", trace_ids)
            self._fold_pending_rollups()
            emptied = [key for key, acc in self._rollups.items()
                       if acc.dirty and not any(acc.counters) and not any(any(h.values()) for h in acc.hists)]
            self._flush_rollups()
            self._flush_tool_rollups()
            self._drop_empty_rollups(emptied)
        return result

    def _drop_empty_rollups(self, keys: Sequence[tuple[int, int, int]]) -> None:
        """Rollup rows that forgetting took to zero go, as they would never have been written; so do
        the dimension sets no row refers to any more (a forgotten tenant's name is in one)."""
        if not keys:
            return
        self.db.executemany("DELETE FROM rollups WHERE res = ? AND bucket = ? AND dims_id = ?", keys)
        for key in keys:
            self._rollups.pop(key, None)
        orphans = []
        for dims_id in {key[2] for key in keys} - {TOTAL_DIMS_ID}:
            if self.db.execute("SELECT 1 FROM rollups WHERE dims_id = ? LIMIT 1", (dims_id,)).fetchone() is None:
                orphans.append(dims_id)
        if orphans:
            self.db.executemany("DELETE FROM dims WHERE id = ?", [(d,) for d in orphans])
            gone = set(orphans)
            self._dims = {dims: dims_id for dims, dims_id in self._dims.items() if dims_id not in gone}

    # -- the batch -----------------------------------------------------------------------------

    def _write(self, span_rows: list[Sequence[Any]], log_rows: list[Sequence[Any]],
               resources: dict, scopes: dict, recheck: Sequence[tuple[Call, int]] = (),
               twin_traces: Iterable[bytes] = (), rewrite: Sequence[bytes] = ()) -> None:
        """`recheck`: calls this writer stored before (with the version it gave their trace), found again with
        a twin another replica stored since, in `twin_traces` (store/clickhouse/twin_calls.py). `rewrite`:
        traces this writer stored before that another replica stored spans of since: decided again as a whole
        if that replica's write did not see every span (store/clickhouse/trace_sync.py)."""
        db = self.db
        now = self.clock()
        fresh_resources = [(digest, value) for digest, value in resources.items() if digest not in self._resources]
        resource_ids = self._intern_blobs(resources, self._resources, "resources")
        if self.outbox is not None:
            self.outbox.resources.update(digest for digest, _ in fresh_resources)
            self.outbox.scopes.update(d for d in scopes if d not in self._scopes)
        scope_ids = self._intern_blobs(scopes, self._scopes, "scopes")

        # Group rows by trace and load what the store already knows of those traces.
        by_trace: dict[bytes, list[Sequence[Any]]] = {}
        for row in span_rows:
            by_trace.setdefault(row[COL["trace_id"]], []).append(row)
        log_trace_ids = {row[0] for row in log_rows if row[0] is not None and row[7] is not None}
        rechecked_traces = {call.trace_id for call, _ in recheck}
        if self.sync is not None:
            # Everything this batch writes must replace what it read from other replicas, whose clocks
            # may be ahead of this one's.
            now = max(now, self.sync.pull(self, set(by_trace) | log_trace_ids | set(rewrite), recheck, twin_traces,
                                          rewrite) + 1)
            rewrite = [t for t in rewrite if t in self.sync.undecided]
        self._load_traces(set(by_trace) | log_trace_ids | rechecked_traces | set(rewrite))

        inserts: list[list[Any]] = []
        new_states: list[SpanState] = []
        touched: dict[bytes, TraceState] = {}
        for trace_id, rows in by_trace.items():
            trace = self._traces[trace_id]
            self._traces.move_to_end(trace_id)
            added: list[SpanState] = []
            for row in rows:
                known = trace.spans.get(row[COL["span_id"]])
                if known is not None:
                    self.stats.duplicates += 1
                    if _conflicts(known, row):
                        self.stats.conflicting += 1
                    continue
                # Decoders send lists so that the writer can fill in ids and effective fields in place.
                record = row if type(row) is list else list(row)
                record[COL["id"]] = self._next_id
                self._next_id += 1
                record[COL["resource_id"]] = resource_ids.get(record[COL["resource_id"]])
                record[COL["scope_id"]] = scope_ids.get(record[COL["scope_id"]])
                state = SpanState.from_row(record, stored=False)
                pending = self._pending_finish.pop((trace_id, state.span_id), None)
                if pending is not None:
                    self._join_finish_reason(state, pending)
                    record[COL["finish_reason"]] = state.finish_reason
                    record[COL["own_error_class"]] = state.own_error
                trace.add(state)
                added.append(state)
                inserts.append(record)
                new_states.append(state)
            if added:
                self._cached_spans += len(added)
                for s in added:
                    for child in trace.children.get(s.span_id, ()):
                        if child.kind in BILLABLE or child.has_desc:
                            _mark_up(trace, s)
                            break
                    if s.kind in BILLABLE and s.parent is not None:
                        _mark_up(trace, trace.spans.get(s.parent))
                touched[trace_id] = trace

        for trace_id in rewrite:
            touched[trace_id] = self._traces[trace_id]

        # Log records: finish reasons join their span now, or when it arrives.
        log_inserts = []
        for row in log_rows:
            trace_id, span_id, finish = row[0], row[1], row[7]
            log_inserts.append((trace_id, span_id, row[2], row[3], row[4], resource_ids.get(row[5]),
                                scope_ids.get(row[6]), finish, row[8], row[9], row[10]))
            if finish is None or trace_id is None or span_id is None:
                continue
            log_trace = self._traces.get(trace_id)
            joined = log_trace.spans.get(span_id) if log_trace is not None else None
            if log_trace is None or joined is None:
                self._pending_finish[(trace_id, span_id)] = finish
                if len(self._pending_finish) > 100_000:
                    self._pending_finish.popitem(last=False)
            elif self._join_finish_reason(joined, finish):
                touched[trace_id] = log_trace

        candidates, holders = list(new_states), dict(touched)
        for call, _version in recheck:
            rechecked = self._traces[call.trace_id].spans.get(call.span_id)
            if rechecked is not None:  # None: forgotten since
                candidates.append(rechecked)
                holders[call.trace_id] = self._traces[call.trace_id]
        self._join_twins_across_traces(candidates, holders, touched, now)

        updates, trace_rows = self._recompute_touched(touched, {id(s) for s in new_states}, now)
        if self.sync is not None:
            # Rechecked: each new call, the root call of every trace written again (who may move its billing
            # depends on when its trace was last written), and every call of a trace another replica wrote
            # (its rechecks are now this replica's: store/clickhouse/twin_calls.py).
            new_ids = {id(s) for s in new_states}
            pulled = self.sync.pulled
            calls = [s.id for trace_id, trace in touched.items() for s in trace.spans.values()
                     if s.response_id and s.kind in BILLABLE
                     and (id(s) in new_ids or s.parent is None or trace_id in pulled)]
            self._written_calls = (list(touched), calls, now)
            if touched:
                self.sync.log_write(self.db, self._written_calls[0], calls, now)

        for record, state in zip(inserts, new_states):
            record[COL["billed"]] = state.billed
            record[COL["feature"]] = state.feature
            record[COL["tenant"]] = state.tenant
            record[COL["error_class"]] = state.error_class
            record[COL["duplicate_of"]] = state.duplicate_of
            record[COL["variant"]] = state.variant
            self._note_new_span(record, state)
        if fresh_resources:
            self._note_service_versions(fresh_resources, resource_ids, inserts)

        if inserts:
            db.executemany(_INSERT_SPANS, inserts)
            tool_rollups.note_new_spans(db, inserts)  # the calls of traces given a tool span (m010)
            if self.outbox is not None:
                kind, trace_at = COL["kind"], COL["trace_id"]
                self.outbox.tool_traces.update(r[trace_at] for r in inserts if r[kind] == "tool")
        if updates:
            db.executemany(_UPDATE_SPAN, updates)
        if log_inserts:
            last_log = 0
            if self.outbox is not None:
                last_log = db.execute("SELECT max(id) FROM logs").fetchone()[0] or 0
            db.executemany(_INSERT_LOGS, log_inserts)
            if self.outbox is not None:  # one writer, one statement: its rows took the ids after last_log
                self.outbox.logs_added(last_log, db.execute("SELECT max(id) FROM logs").fetchone()[0] or 0)
        if self.outbox is not None:
            self.outbox.spans.update(record[COL["id"]] for record in inserts)
            self.outbox.spans.update(u[-1] for u in updates)
        # The trace summaries, and the rows of the conversations they are (or were) in.
        self._write_traces(trace_rows, now)
        self._flush_rollups()
        self._flush_tool_rollups()
        self.stats.spans += len(inserts)
        self.stats.logs += len(log_inserts)
        self.stats.updated += len(updates)
        self.stats.traces += len(trace_rows)

    def _write_traces(self, trace_rows: list[tuple], now: int) -> None:
        """Upsert trace summaries and the conversations and users they are (or were) in. A ClickHouse
        store is sent the summaries only: it computes conversations and users from them when read
        (store/clickhouse/sessions.py)."""
        if self.outbox is not None:
            self.outbox.traces.update(row[0] for row in trace_rows)
            self.outbox.summaries_replacing(self.db, {row[0]: (row[_START_AT], row[_COST_AT]) for row in trace_rows})
        sessions.write_traces(self.db, _UPSERT_TRACE, trace_rows, _CONVERSATION_AT, now)

    def _recompute_touched(self, touched: dict[bytes, TraceState], new_ids: set[int], now: int
                           ) -> tuple[list[tuple], list[tuple]]:
        """Recompute the effective fields of every touched trace and apply the contribution deltas;
        returns the updates of stored spans that changed and the touched traces' summary rows."""
        updates: list[tuple] = []
        trace_rows: list[tuple] = []
        for trace_id, trace in touched.items():
            for s, old, is_new in self._recompute(trace, new_ids):
                if old is not None:
                    self._apply(old, -1)
                new = self._contribution(s)
                if new is not None:
                    self._apply(new, +1)
                if s.error_class is not None:
                    self._note_error_class(s, trace_id)
                if not is_new:
                    updates.append((s.finish_reason, s.own_error, s.billed, s.feature, s.tenant, s.error_class,
                                    s.duplicate_of, s.variant, s.id))
                    s.stored_finish, s.stored_own_error = s.finish_reason, s.own_error
            trace_rows.append(self._summary(trace_id, trace, now))
        return updates, trace_rows

    # -- what a new span adds besides rows: tool rollups and change markers ----------------------

    def _note_new_span(self, record: list[Any], s: SpanState) -> None:
        """Called once per stored span (a duplicate delivery never gets here)."""
        if s.kind == "tool":
            self._add_tool_call(s, record[COL["tool_name"]] or "")
        elif s.kind in BILLABLE:
            requested, served = record[COL["request_model"]], record[COL["response_model"]]
            if requested and served:
                self.changes.note("served_model", requested, served, s.start, record[COL["trace_id"]])
        if s.prompt_id and s.prompt_version:
            self.changes.note("prompt_version", s.prompt_id, s.prompt_version, s.start, record[COL["trace_id"]])

    def _note_error_class(self, s: SpanState, trace_id: bytes) -> None:
        error = s.error_class
        if error == "api":
            error = f"api/{s.subclass or 'other'}"
        if error is not None:
            self.changes.note("error_class", "", error, s.start, trace_id)

    def _note_service_versions(self, fresh: list[tuple[bytes, tuple]], resource_ids: dict[bytes, int],
                               inserts: list[list[Any]]) -> None:
        """Resources this writer had not seen: each one's service.version (once per resource, not per
        span), at the start of its earliest span stored in this batch."""
        versions = {resource_ids[digest]: (value[0] or "", value[1]) for digest, value in fresh
                    if len(value) > 2 and value[1] and digest in resource_ids}
        if not versions:
            return
        earliest: dict[int, tuple[int, bytes]] = {}
        for record in inserts:
            resource_id = record[COL["resource_id"]]
            if resource_id in versions:
                seen = earliest.get(resource_id)
                if seen is None or record[COL["start_ns"]] < seen[0]:
                    earliest[resource_id] = (record[COL["start_ns"]], record[COL["trace_id"]])
        for resource_id, (start_ns, trace_id) in earliest.items():
            service, version = versions[resource_id]
            self.changes.note("service_version", service, version, start_ns, trace_id)

    @staticmethod
    def _join_finish_reason(s: SpanState, finish: str) -> bool:
        """A log record's finish reason fills in a span that has none. Returns True if it changed."""
        if s.finish_reason is not None:
            return False
        s.finish_reason = finish
        if finish == "content_filter" and s.kind in BILLABLE and s.own_error is None:
            s.own_error = "guardrail"
        return True

    # -- trace state ---------------------------------------------------------------------------

    def _load_traces(self, trace_ids: set[bytes]) -> None:
        missing = [t for t in trace_ids if t not in self._traces]
        if not missing:
            return
        loaded: dict[bytes, TraceState] = {t: TraceState() for t in missing}
        columns = ", ".join(_STATE_COLUMNS)
        index = {name: i for i, name in enumerate(_STATE_COLUMNS)}
        for chunk_start in range(0, len(missing), 500):
            chunk = missing[chunk_start:chunk_start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in self.db.execute(f"SELECT {columns} FROM spans WHERE trace_id IN ({marks})", chunk):
                full = [None] * len(SPAN_COLUMNS)
                for name, i in index.items():
                    full[COL[name]] = row[i]
                loaded[row[index["trace_id"]]].add(SpanState.from_row(full, stored=True))
            for trace_id, span_id, finish in self.db.execute(
                f"SELECT trace_id, span_id, finish_reason FROM logs WHERE trace_id IN ({marks}) "
                f"AND finish_reason IS NOT NULL", chunk,
            ):
                self._pending_finish.setdefault((trace_id, span_id), finish)
        for trace_id, trace in loaded.items():
            for s in trace.spans.values():
                if s.kind in BILLABLE and s.parent is not None:
                    _mark_up(trace, trace.spans.get(s.parent))
                if s.duplicate_of is not None and s.duplicate_of not in trace.spans:
                    s.external_keeper = s.duplicate_of
            # A log that arrived before this (older) span was stored: join it now.
            for s in trace.spans.values():
                pending = self._pending_finish.pop((trace_id, s.span_id), None)
                if pending is not None:
                    self._join_finish_reason(s, pending)
            self._traces[trace_id] = trace
            self._cached_spans += len(trace.spans)

    def _join_twins_across_traces(self, new_states: list[SpanState], holders: dict[bytes, TraceState],
                                  touched: dict[bytes, TraceState], now: int) -> None:
        """Spans of one call in different traces: an instrumentation that never makes its span current,
        and no app span around the call, puts the SDK's span in a trace of its own. They share the
        provider's response id, were emitted at different layers (an SDK's and an instrumentation's),
        and their time windows nest: a mocked or replayed id that other calls reuse does not join
        them. One is billed, chosen as within a trace (_keeper_order); the others point at it through
        `external_keeper`, and their traces are recomputed (added to `touched`), so rollups move by deltas.
        `holders`: the traces of `new_states`. With replicas, a span of another replica's trace is moved
        only when the rule in store/clickhouse/twin_calls.py gives it to this one."""
        new_ids = {id(s) for s in new_states}
        new = [(trace_id, s, s.response_id) for trace_id, trace in holders.items() for s in trace.spans.values()
               if id(s) in new_ids and s.response_id and s.kind in BILLABLE]
        if not new:
            return
        by_response: dict[str, list[tuple[bytes, SpanState]]] = {}
        for trace_id, s, response_id in new:
            by_response.setdefault(response_id, []).append((trace_id, s))
        # Stored spans with these ids at another layer: one query per layer present in the batch
        # (with real, unique ids it finds next to nothing; the index answers it without the table).
        ids_by_layer: dict[int, set[str]] = {}
        for _, s, response_id in new:
            ids_by_layer.setdefault(s.layer, set()).add(response_id)
        stored: dict[str, list[tuple]] = {}
        for layer, response_ids in ids_by_layer.items():
            ordered = sorted(response_ids)
            # One query per other layer: with `call_layer = ?` the index seeks (response_id, layer);
            # with `call_layer IN (…)` SQLite seeks the id alone and reads every span sharing it, so an
            # id that many calls reuse (a mock server's, a replay's) cost a scan of all of them, per
            # batch (bench.ingest's fixed ids: 31 ms per batch against 2 ms at 700k spans).
            for other_layer in LAYERS:
                if other_layer == layer:
                    continue
                for start in range(0, len(ordered), 400):
                    chunk = ordered[start:start + 400]
                    for row in self.db.execute(twins_query(len(chunk)), (*chunk, other_layer)):
                        stored.setdefault(row[0], []).append(row[1:])
        for trace_id, s, response_id in new:
            others: set[tuple[bytes, bytes]] = set()
            for other_trace, span_id, layer, start, end in stored.get(response_id, ()):
                if other_trace != trace_id and layer != s.layer and windows_nest(s.start, s.end, start, end):
                    others.add((other_trace, span_id))
            for other_trace, other in by_response[response_id]:
                if other_trace != trace_id and other.layer != s.layer:
                    others.add((other_trace, other.span_id))
            if not others:
                continue
            self._load_traces({t for t, _ in others})
            group = [(trace_id, s)]
            for other_trace, span_id in sorted(others):
                candidate = self._traces[other_trace].spans.get(span_id) if other_trace in self._traces else None
                if (candidate is not None and candidate.kind in BILLABLE and not candidate.has_desc
                        and candidate.layer != s.layer and _may_be_one_call(s, candidate)):
                    group.append((other_trace, candidate))
            if len(group) < 2:
                continue
            keeper_trace, keeper = min(group, key=lambda ts: _keeper_order(ts[1]))
            for member_trace, member in group:
                external = keeper.span_id if member_trace != keeper_trace else None
                if member.external_keeper != external and self._may_move(
                        (trace_id, s), (member_trace, member), (keeper_trace, keeper), now):
                    member.external_keeper = external
                    touched[member_trace] = self._traces[member_trace]

    def _may_move(self, finder: tuple[bytes, SpanState], member: tuple[bytes, SpanState],
                  keeper: tuple[bytes, SpanState], now: int) -> bool:
        """May this writer change `member`'s billing in a group of one call's spans that `finder` (a new or
        rechecked span) was joined with? Always on one store; with replicas, store/clickhouse/twin_calls.py."""
        if self.sync is None:
            return True
        other = keeper if member[1] is finder[1] else member
        non_root = finder[0] if finder[1].parent is not None else other[0]
        return self.sync.policy.may_move(member[0], keeper[0], now,
                                         (finder[1].parent is None, other[1].parent is None), non_root)

    def _evict_traces(self) -> None:
        while self._cached_spans > self.trace_cache_spans and len(self._traces) > 1:
            _, trace = self._traces.popitem(last=False)
            self._cached_spans -= len(trace.spans)

    def _forget_everything(self) -> None:
        self._traces.clear()
        self._cached_spans = 0
        self._rollups.clear()
        self._pending_rollups.clear()
        self._tool_rollups.clear()
        self.changes.reload()
        self._dims.clear()
        self._resources.clear()
        self._scopes.clear()
        row = self.db.execute("SELECT max(id) FROM spans").fetchone()
        self._next_id = (row[0] or 0) + 1

    def _recompute(self, trace: TraceState, new_ids: set[int]) -> list[tuple[SpanState, tuple | None, bool]]:
        """Effective billed/feature/tenant/error_class/duplicate_of of every span; returns the new and
        changed spans with their previous contribution (None for new spans)."""
        root = trace.root
        root_feature = root_tenant = root_variant = None
        if root is not None:
            root_feature = root.own_feature or root.name or None
            root_tenant = root.own_tenant
            root_variant = root.own_variant
        twins = same_call_twins(trace)
        validated: set[int] = set()
        orphan_markers: set[int] = set()
        for s in trace.spans.values():
            if s.marker:
                if any(d.marker for d in _descendants(trace, s)):
                    continue  # the failure passed up from a step below (a chain re-raising it): counted there
                target = self._validation_target(trace, s)
                if target is None:
                    orphan_markers.add(id(s))
                else:
                    validated.add(id(twins.get(id(target), target)))
        changed: list[tuple[SpanState, tuple | None, bool]] = []
        for s in trace.spans.values():
            keeper = twins.get(id(s))
            duplicate_of = keeper.span_id if keeper is not None else s.external_keeper
            billed = 1 if (s.kind in BILLABLE and not s.has_desc and duplicate_of is None) else 0
            feature = s.own_feature or root_feature
            tenant = s.own_tenant or root_tenant
            variant = s.own_variant or root_variant
            refused = _refused(s)
            if s.kind in BILLABLE:
                error_class = s.own_error
                if error_class is None and billed and id(s) in validated:
                    error_class = "validation"
            elif s.kind == "guardrail":
                error_class = s.own_error
            elif s.marker and id(s) in orphan_markers:
                error_class = "validation"
            else:
                error_class = None
            is_new = id(s) in new_ids
            if (is_new or billed != s.billed or feature != s.feature or tenant != s.tenant
                    or error_class != s.error_class or duplicate_of != s.duplicate_of or variant != s.variant
                    or refused != s.refused or s.finish_reason != s.stored_finish
                    or s.own_error != s.stored_own_error):
                old = None if is_new else self._contribution(s)
                s.billed, s.feature, s.tenant, s.error_class = billed, feature, tenant, error_class
                s.duplicate_of, s.variant, s.refused = duplicate_of, variant, refused
                changed.append((s, old, is_new))
        return changed

    @staticmethod
    def _validation_target(trace: TraceState, marker: SpanState) -> SpanState | None:
        """The call a failed validation step judged: its parent call, else the latest sibling call
        that ended before it started. A framework wrapper passes the blame to the call it wraps."""
        # A marker above calls (an agent run whose output failed validation): the last call inside it.
        target = None
        best_inside = None
        for d in _descendants(trace, marker):
            if d.kind in BILLABLE and d.end <= marker.end + SIBLING_SLACK_NS:
                key = (d.end, d.span_id)
                if best_inside is None or key > best_inside:
                    target, best_inside = d, key
        if target is not None:
            return SpanWriter._descend_to_billed(trace, target)
        if marker.parent is None:
            return None
        parent = trace.spans.get(marker.parent)
        if parent is not None and parent.kind in BILLABLE:
            target = parent
        else:
            best = None
            for sibling in trace.children.get(marker.parent, ()):
                if sibling.kind in BILLABLE and sibling.end <= marker.start + SIBLING_SLACK_NS:
                    key = (sibling.end, sibling.span_id)
                    if best is None or key > best:
                        target, best = sibling, key
        return SpanWriter._descend_to_billed(trace, target)

    @staticmethod
    def _descend_to_billed(trace: TraceState, target: SpanState | None) -> SpanState | None:
        """Through wrappers (an LLM span with an LLM span below) to the call that is billed."""
        depth = 0
        while target is not None and target.has_desc and depth < 64:
            depth += 1
            wrapped = [c for c in trace.children.get(target.span_id, ()) if c.kind in BILLABLE]
            target = min(wrapped, key=lambda c: (c.start, c.span_id)) if wrapped else None
        return target

    # -- rollups -------------------------------------------------------------------------------

    @staticmethod
    def _contribution(s: SpanState) -> tuple | None:
        """What a span adds to the rollups, given its effective fields (None: nothing)."""
        vector = [0] * _N_COUNTERS
        cost = None
        if s.billed:
            vector[_RC["calls"]] = 1
            error = s.error_class
            if error == "api":
                vector[_RC["errors_api"]] = 1
                vector[_SUBCLASS_COUNTER.get(s.subclass, _RC["err_other"])] = 1
            elif error == "validation":
                vector[_RC["errors_validation"]] = 1
            elif error == "guardrail":
                vector[_RC["errors_guardrail"]] = 1
            vector[_RC["input_tokens"]] = s.input or 0
            vector[_RC["output_tokens"]] = s.output or 0
            vector[_RC["cache_read_tokens"]] = s.cache_read or 0
            vector[_RC["cache_write_tokens"]] = s.cache_write or 0
            vector[_RC["reasoning_tokens"]] = s.reasoning or 0
            if s.cost is None:
                vector[_RC["unpriced_calls"]] = 1
            else:
                vector[_RC["cost_nusd"]] = s.cost
                cost = histogram.bucket_of(s.cost / 1000)  # µUSD
            tokens = input_length = output_length = None
            if s.input is not None or s.output is not None:
                tokens = histogram.bucket_of((s.input or 0) + (s.output or 0))
            # Per-call token lengths (drift): input includes cached tokens (input_tokens already
            # does, design §2 rule 2), output includes reasoning (likewise).
            if s.input is not None:
                input_length = histogram.bucket_of(s.input)
            if s.output is not None:
                output_length = histogram.bucket_of(s.output)
            if s.refused:
                vector[_RC["refusals"]] = 1
            vector[_RC["streaming_calls"]] = 1 if s.streaming else 0
            latency = ttft = tpot = None
            if s.duration is not None:
                vector[_RC["duration_ns"]] = s.duration
                if error != "api":
                    # Failed calls (a 429 answers in milliseconds) would flatter the latency figures.
                    latency = histogram.bucket_of(s.duration / 1000)
                    if s.ttft is not None:
                        ttft = histogram.bucket_of(s.ttft / 1000)
                        decode = decode_figures(s.duration, s.ttft, s.output)
                        if s.output and decode is not None:
                            vector[_RC["decode_tokens"]] = s.output
                            vector[_RC["decode_ns"]] = decode.decode_ns
                            if decode.tpot_ns is not None:
                                tpot = histogram.bucket_of(decode.tpot_ns / 1000)
            hists: tuple[int | None, ...] = (latency, ttft, tpot, cost, tokens, input_length, output_length)
        elif s.error_class == "guardrail" and s.kind == "guardrail":
            vector[_RC["errors_guardrail"]] = 1
            hists = _NO_HISTS
        elif s.error_class == "validation" and s.marker:
            vector[_RC["errors_validation"]] = 1
            hists = _NO_HISTS
        else:
            return None
        dims = (
            s.service or "",
            (s.provider or "") if s.billed else "",
            (s.model or "") if s.billed else "",
            (s.operation or "") if s.billed else "",
            s.feature or "",
            s.tenant or "",
            s.prompt_id or "",
            s.prompt_version or "",
            s.variant or "",
        )
        # Sparse: a call touches ~8 of the 22 counters, and _apply runs twice per contribution.
        return (s.start // NS, dims, tuple((i, v) for i, v in enumerate(vector) if v), hists)

    def _apply(self, contribution: tuple, sign: int) -> None:
        """A contribution into the transaction's pending sums, per second and dimension set. They go
        into the five rollup rows each touches (two resolutions, with and without the dimension set,
        and the fine total) when the transaction flushes its rollups: under load a batch holds many
        calls of the same second and dimension set, each of which would otherwise update all five."""
        second, dims, vector, hists = contribution
        if self.outbox is not None:
            self.outbox.rollup(contribution, sign)
        key = (second, self._dims_id(dims))
        pending = self._pending_rollups.get(key)
        if pending is None:
            pending = self._pending_rollups[key] = ({}, tuple({} for _ in HISTOGRAMS))
        counters, pending_hists = pending
        for i, value in vector:
            counters[i] = counters.get(i, 0) + sign * value
        for h, bucket in zip(pending_hists, hists):
            if bucket is not None:
                h[bucket] = h.get(bucket, 0) + sign

    def _fold_pending_rollups(self) -> None:
        """The pending sums into their rollup rows' accumulators (each row read in if not cached)."""
        pending, self._pending_rollups = self._pending_rollups, {}
        for (second, dims_id), (counters, pending_hists) in pending.items():
            vector = list(counters.items())
            hists = [(slot, bucket, count) for slot, h in enumerate(pending_hists) for bucket, count in h.items()]
            for res in RESOLUTIONS:
                bucket_start = second - second % res
                # Each contribution also goes to the bucket's total row (dims_id 0), so that a dashboard
                # over all traffic merges one histogram per bucket instead of one per dimension set.
                self._accumulate((res, bucket_start, dims_id), vector, hists)
                self._accumulate((res, bucket_start, TOTAL_DIMS_ID), vector, hists)
            self._accumulate((FINE_RESOLUTION, second - second % FINE_RESOLUTION, TOTAL_DIMS_ID), vector, hists)

    def _accumulate(self, key: tuple[int, int, int], vector: list[tuple[int, int]],
                    hists: list[tuple[int, int, int]]) -> None:
        acc = self._rollups.get(key)
        if acc is None:
            acc = self._load_rollup(key)
        counters = acc.counters
        for i, value in vector:
            counters[i] += value
        acc_hists = acc.hists
        for slot, bucket, count in hists:
            h = acc_hists[slot]
            h[bucket] = h.get(bucket, 0) + count
        acc.dirty = True

    def _load_rollup(self, key: tuple[int, int, int]) -> _Rollup:
        acc = _Rollup()
        row = self.db.execute(
            f"SELECT {', '.join(ROLLUP_COUNTERS)}, {', '.join(HISTOGRAMS)} FROM rollups "
            f"WHERE res = ? AND bucket = ? AND dims_id = ?",
            key,
        ).fetchone()
        if row is not None:
            acc.counters = list(row[:_N_COUNTERS])
            for h, blob in zip(acc.hists, row[_N_COUNTERS:]):
                histogram.decode_into(blob, h)
        self._rollups[key] = acc
        return acc

    def _flush_rollups(self) -> None:
        self._fold_pending_rollups()
        rows = []
        for key, acc in self._rollups.items():
            if acc.dirty:
                rows.append((*key, *acc.counters, *(histogram.encode(h) for h in acc.hists)))
                acc.dirty = False
        if rows:
            self.db.executemany(_UPSERT_ROLLUP, rows)
        if len(self._rollups) > self._rollups_trim_at:
            self._rollups = _recent_entries(self._rollups, ROLLUP_CACHE_MAX, ROLLUP_CACHE_KEEP, self.clock() // NS)
            self._rollups_trim_at = max(ROLLUP_TRIM_AT, 2 * len(self._rollups))

    @staticmethod
    def tool_contribution(s: SpanState, tool: str) -> ToolContribution:
        """What a tool span adds to tool_rollups: (second, tool, error, duration_ns or None, latency
        histogram bucket or None)."""
        latency = histogram.bucket_of(s.duration / 1000) if s.duration is not None else None
        return s.start // NS, tool, s.status == 2 or s.own_error is not None, s.duration, latency

    def _add_tool_call(self, s: SpanState, tool: str, sign: int = 1) -> None:
        """A stored tool span into tool_rollups (tool spans are not billed calls, so not in rollups).
        Its contribution never changes later, so it is added once, when the span is stored (and taken
        out, sign -1, when it is forgotten)."""
        contribution = self.tool_contribution(s, tool)
        if self.outbox is not None:
            self.outbox.tool_rollup(contribution, sign)
        second, _, error, _, latency = contribution
        for res in RESOLUTIONS:
            key = (res, second - second % res, tool)
            acc = self._tool_rollups.get(key)
            if acc is None:
                acc = self._load_tool_rollup(key)
            acc.calls += sign
            if error:
                acc.errors += sign
            if latency is not None:
                acc.duration += sign * (s.duration or 0)
                acc.latency[latency] = acc.latency.get(latency, 0) + sign
            acc.dirty = True

    def _load_tool_rollup(self, key: tuple[int, int, str]) -> _ToolRollup:
        acc = _ToolRollup()
        row = self.db.execute(
            "SELECT calls, errors, duration_ns, hist_latency FROM tool_rollups "
            "WHERE res = ? AND bucket = ? AND tool = ?",
            key,
        ).fetchone()
        if row is not None:
            acc.calls, acc.errors, acc.duration = row[0], row[1], row[2]
            histogram.decode_into(row[3], acc.latency)
        self._tool_rollups[key] = acc
        return acc

    def _flush_tool_rollups(self) -> None:
        rows = []
        for key, acc in self._tool_rollups.items():
            if acc.dirty:
                rows.append((*key, acc.calls, acc.errors, acc.duration, histogram.encode(acc.latency)))
                acc.dirty = False
        if rows:
            self.db.executemany(_UPSERT_TOOL_ROLLUP, rows)
        if len(self._tool_rollups) > self._tool_rollups_trim_at:
            self._tool_rollups = _recent_entries(self._tool_rollups, 20_000, 5_000, self.clock() // NS)
            self._tool_rollups_trim_at = max(ROLLUP_TRIM_AT, 2 * len(self._tool_rollups))

    def _dims_id(self, dims: tuple) -> int:
        cached = self._dims.get(dims)
        if cached is not None:
            return cached
        row = self.db.execute(
            "SELECT id FROM dims WHERE service = ? AND provider = ? AND model = ? AND operation = ? "
            "AND feature = ? AND tenant = ? AND prompt_id = ? AND prompt_version = ? AND variant = ?",
            dims,
        ).fetchone()
        if row is None:
            cursor = self.db.execute(
                "INSERT INTO dims (service, provider, model, operation, feature, tenant, prompt_id, "
                "prompt_version, variant) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                dims,
            )
            dims_id = _inserted_id(cursor)
        else:
            dims_id = row[0]
        self._dims[dims] = dims_id
        return dims_id

    # -- resources and trace summaries ---------------------------------------------------------

    def _intern_blobs(self, blobs: dict, cache: dict[bytes, int], table: str) -> dict[bytes, int]:
        ids: dict[bytes, int] = {}
        for digest, value in blobs.items():
            cached = cache.get(digest)
            if cached is None:
                row = self.db.execute(f"SELECT id FROM {table} WHERE digest = ?", (digest,)).fetchone()
                if row is None:
                    if table == "resources":
                        # (service, service.version, blob); older decoders sent (service, blob)
                        service, blob = value[0], value[-1]
                        cursor = self.db.execute(
                            "INSERT INTO resources (digest, service, blob) VALUES (?, ?, ?)", (digest, service, blob)
                        )
                    else:
                        name, version, blob = value
                        cursor = self.db.execute(
                            "INSERT INTO scopes (digest, name, version, blob) VALUES (?, ?, ?, ?)",
                            (digest, name, version, blob),
                        )
                    cached = _inserted_id(cursor)
                else:
                    cached = row[0]
                cache[digest] = cached
            ids[digest] = cached
        return ids

    @staticmethod
    def _summary(trace_id: bytes, trace: TraceState, now: int) -> tuple:
        # In start order, so that the summary never depends on the order spans arrived in.
        spans = sorted(trace.spans.values(), key=lambda s: (s.start, s.span_id))
        root = trace.root
        root_known = 1 if root is not None else 0
        if root is None:
            # Until the parentless span arrives, the earliest span whose parent is missing stands in.
            orphans = [s for s in spans if s.parent not in trace.spans]
            root = (orphans or spans)[0]
        start = min(s.start for s in spans)
        end = max(s.end for s in spans)
        calls = inp = out = cread = cwrite = reason = cost = unpriced = 0
        e_api = e_val = e_guard = error_spans = 0
        models: list[str] = []
        feature = root.feature
        tenant = root.tenant
        variant = root.variant
        # The trace's conversation and user: the first span carrying one (start order, as above).
        conversation = next((s.conversation for s in spans if s.conversation is not None), None)
        user = next((s.user for s in spans if s.user is not None), None)
        for s in spans:
            if s.status == 2:
                error_spans += 1
            if s.billed:
                calls += 1
                inp += s.input or 0
                out += s.output or 0
                cread += s.cache_read or 0
                cwrite += s.cache_write or 0
                reason += s.reasoning or 0
                if s.cost is None:
                    unpriced += 1
                else:
                    cost += s.cost
                if s.model and s.model not in models and len(models) < 4:
                    models.append(s.model)
                if feature is None:
                    feature = s.feature
                if tenant is None:
                    tenant = s.tenant
                if variant is None:
                    variant = s.variant
            if s.error_class == "api" and s.billed:
                e_api += 1
            elif s.error_class == "validation" and (s.billed or s.marker):
                e_val += 1
            elif s.error_class == "guardrail" and (s.billed or s.kind == "guardrail"):
                e_guard += 1
        return (
            trace_id, root.span_id, root.name, root_known, root.service, start, end, max(0, end - start),
            len(trace.spans), calls, inp, out, cread, cwrite, reason, cost, unpriced, e_api, e_val, e_guard,
            error_spans, feature, tenant, ",".join(models) or None, now, conversation, user, variant,
        )
