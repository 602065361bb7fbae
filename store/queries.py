"""Read-only queries over the store, for the CLI (report, export) and the TUI.

Wide windows read the rollups, never raw spans (design §3: raw percentiles over 24 h of 1M spans
take 0.4–1.2 s). A window is covered by hour rollups where whole hours fit and minute rollups at
its ragged edges. Every function takes an explicit `now_s` so results are reproducible.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zstandard

from store import histogram
from store.connection import read_snapshot
from store.writer import HISTOGRAMS, ROLLUP_COUNTERS

GROUP_COLUMNS = {
    "service": ("service",),
    "provider": ("provider",),
    "model": ("model",),
    "operation": ("operation",),
    "feature": ("feature",),
    "tenant": ("tenant",),
    "prompt": ("prompt_id", "prompt_version"),
    "variant": ("variant",),
}
_DECOMPRESSOR = zstandard.ZstdDecompressor()


def decompress(blob: bytes | None) -> bytes:
    if not blob:
        return b""
    return _DECOMPRESSOR.decompress(blob)


def rollup_ranges(start_s: int, end_s: int) -> list[tuple[int, int, int]]:
    """(res, first bucket, end bucket exclusive) covering [start_s, end_s] with few rows."""
    start_m = start_s - start_s % 60
    end_m = end_s - end_s % 60 + 60
    first_hour = -(-start_m // 3600) * 3600
    last_hour = end_s - end_s % 3600
    if first_hour >= last_hour:
        return [(60, start_m, end_m)]
    ranges = []
    if start_m < first_hour:
        ranges.append((60, start_m, first_hour))
    ranges.append((3600, first_hour, last_hour))
    if last_hour < end_m:
        ranges.append((60, last_hour, end_m))
    return ranges


MAX_LISTED_BUCKETS = 4_000  # about 5.5 months of hour rows


def range_rows(ranges: Sequence[tuple[int, int, int]], alias: str = "r") -> tuple[str, tuple]:
    """A condition for the rollup rows of every dimension set in these ranges (rollup_ranges' (res, first
    bucket, end bucket exclusive)), and its parameters. No range: no row."""
    column = f"{alias}." if alias else ""
    terms = " OR ".join(f"({column}res = ? AND {column}bucket >= ? AND {column}bucket < ?)" for _ in ranges)
    return f"({terms or '0'})", tuple(x for r in ranges for x in r)


def total_rows(ranges: Sequence[tuple[int, int, int]], alias: str = "r") -> tuple[str, tuple]:
    """A condition for the per-bucket total rows (dims_id 0) of these rollup ranges (rollup_ranges'
    (res, first bucket, end bucket exclusive)), and its parameters. Every bucket start is listed, so
    that each row is a seek on the primary key (res, bucket, dims_id): a range of buckets with
    dims_id = 0 read every dimension set's row of each bucket to keep one (over a week of hour rows,
    15k rows of ~800 bytes for 168 on week.db). The writer starts a bucket at a multiple of its res."""
    column = f"{alias}." if alias else ""
    terms, params = [], []
    for res, first, end in ranges:
        starts = range(first - first % res, end, res)
        if len(starts) > MAX_LISTED_BUCKETS:  # years of hours: a range read, within SQLite's 32,766 parameters
            terms.append(f"({column}res = ? AND {column}bucket >= ? AND {column}bucket < ? AND {column}dims_id = 0)")
            params += [res, first, end]
        elif starts:
            terms.append(f"({column}res = ? AND {column}bucket IN ({', '.join('?' * len(starts))}) "
                         f"AND {column}dims_id = 0)")
            params += [res, *starts]
    return f"({' OR '.join(terms) or '0'})", tuple(params)


@dataclass(slots=True)
class GroupStats:
    key: dict[str, str | None]
    counters: list[int] = field(default_factory=lambda: [0] * len(ROLLUP_COUNTERS))
    latency: dict[int, int] = field(default_factory=dict)
    ttft: dict[int, int] = field(default_factory=dict)
    tpot: dict[int, int] = field(default_factory=dict)
    cost: dict[int, int] = field(default_factory=dict)  # µUSD per priced call
    tokens: dict[int, int] = field(default_factory=dict)  # tokens per call
    # Per-call token lengths (hist_input_tokens/hist_output_tokens). Attributes, while the summed
    # counters of the same names are items: stats.input_tokens is a histogram, stats["input_tokens"] a sum.
    input_tokens: dict[int, int] = field(default_factory=dict)  # input tokens per call, cached included
    output_tokens: dict[int, int] = field(default_factory=dict)  # output tokens per call, reasoning included

    def __getitem__(self, name: str) -> int:
        return self.counters[_RC[name]]

    def add_row(self, counters: Sequence[int], hists: Sequence[bytes | None],
                names: Sequence[str] = HISTOGRAMS) -> None:
        """Add one rollup row: its counters, and its histograms (columns `names`, in order)."""
        for i, value in enumerate(counters):
            self.counters[i] += value
        for blob, name in zip(hists, names):
            histogram.decode_into(blob, getattr(self, name[5:]))  # hist_ttft → self.ttft

    @property
    def cache_hit_rate(self) -> float | None:
        """Share of input tokens served from the prompt cache."""
        inp = self["input_tokens"]
        return self["cache_read_tokens"] / inp if inp else None

    def percentiles_ms(self, which: str, qs: Iterable[float] = (0.5, 0.95)) -> list[float | None]:
        counts = getattr(self, which)
        return [None if v is None else round(v / 1000, 1) for v in histogram.quantiles(counts, qs)]

    def as_report(self) -> dict[str, Any]:
        ttft = self.percentiles_ms("ttft")
        latency = self.percentiles_ms("latency")
        rate = self.cache_hit_rate
        return {
            "key": self.key,
            "calls": self["calls"],
            "errors": {
                "api": self["errors_api"],
                "validation": self["errors_validation"],
                "guardrail": self["errors_guardrail"],
                "api_by_class": {
                    "rate_limit": self["err_rate_limit"],
                    "provider": self["err_provider"],
                    "client": self["err_client"],
                    "timeout": self["err_timeout"],
                    "network": self["err_network"],
                    "other": self["err_other"],
                },
            },
            "tokens": {
                "input": self["input_tokens"],
                "output": self["output_tokens"],
                "cache_read": self["cache_read_tokens"],
                "cache_write": self["cache_write_tokens"],
                "reasoning": self["reasoning_tokens"],
            },
            # Exact: the store keeps integer nano-USD, so no rounding is needed or wanted here.
            "cost_usd": self["cost_nusd"] / 1e9,
            "unpriced_calls": self["unpriced_calls"],
            "cache_hit_rate": None if rate is None else round(rate, 4),
            "ttft_ms": {"p50": ttft[0], "p95": ttft[1]},
            "latency_ms": {"p50": latency[0], "p95": latency[1]},
        }


_RC = {name: i for i, name in enumerate(ROLLUP_COUNTERS)}


def grouped_rollups(db: sqlite3.Connection, start_s: int, end_s: int, by: Sequence[str],
                    where: dict[str, str] | None = None, hists: Sequence[str] = HISTOGRAMS) -> list[GroupStats]:
    """Rollups in [start_s, end_s] grouped by dimensions (`by` ⊆ GROUP_COLUMNS). Decoding
    histograms is most of the cost over long windows: `hists` names only the ones needed."""
    for name in by:
        if name not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {name!r}: choose from {', '.join(GROUP_COLUMNS)}")
    columns = [c for name in by for c in GROUP_COLUMNS[name]]
    ranges = rollup_ranges(start_s, end_s)
    # One row per group: SQLite sums the counters and concatenates each histogram's blobs (pairs of
    # bucket and count: a concatenation is a valid encoding, decoding adds repeated buckets). A week of
    # hour rollups is ~20k rows, and adding them up row by row in Python cost ~10 µs a row.
    sums = ", ".join(f"sum(r.{c})" for c in ROLLUP_COUNTERS)
    blobs = "".join(f", CAST(group_concat(r.{h}, x'') AS BLOB)" for h in hists)
    params: list[Any]
    if not columns and not where:
        # Ungrouped: the per-bucket total rows (dims_id 0) already sum every dimension set.
        condition, totals_params = total_rows(ranges)
        sql, params = f"SELECT '', {sums}{blobs} FROM rollups r WHERE {condition}", list(totals_params)
    else:
        by_range, range_params = range_rows(ranges)
        params = list(range_params)
        filters = ""
        for column, value in (where or {}).items():
            filters += f" AND d.{column} = ?"
            params.append(value or "")
        select_dims = ", ".join(f"d.{c}" for c in columns) or "''"
        group_by = f" GROUP BY {', '.join(f'd.{c}' for c in columns)}" if columns else ""
        sql = (f"SELECT {select_dims}, {sums}{blobs} "
               f"FROM rollups r JOIN dims d ON d.id = r.dims_id WHERE {by_range}{filters}{group_by}")
    n_dims = len(columns) if columns else 1
    groups: dict[tuple, GroupStats] = {}
    for row in db.execute(sql, params):
        if row[n_dims] is None:
            continue  # an aggregate without GROUP BY over no rows: one row of NULLs
        dims = tuple(row[:n_dims]) if columns else ()
        group = groups.get(dims)
        if group is None:
            key: dict[str, str | None] = {}
            for name, value in zip(columns, dims):
                key[name] = value or None
            group = groups[dims] = GroupStats(key=key)
        group.add_row(row[n_dims:n_dims + len(ROLLUP_COUNTERS)], row[n_dims + len(ROLLUP_COUNTERS):], hists)
    return settle_groups(groups.values())


def settle_groups(groups: Iterable[GroupStats]) -> list[GroupStats]:
    """Folded groups (from either store backend) as a report lists them: the ones with something in
    them, costliest first."""
    # A group can net to nothing: its calls moved to their feature when the trace's root arrived.
    result = [g for g in groups if any(g.counters) or g.latency or g.ttft]
    result.sort(key=lambda g: (-g["cost_nusd"], -g["calls"], tuple(str(v) for v in g.key.values())))
    return result


def report_window(window_s: float, now_s: float | None) -> tuple[int, int]:
    """(start_s, now_s) of a report's window: whole seconds, now by default."""
    now = int(now_s if now_s is not None else time.time())
    return now - int(window_s), now


def report_result(start_s: int, now_s: int, window_s: float, by: Sequence[str],
                  groups: Iterable[Any]) -> dict[str, Any]:
    """The `report --format json` document around groups (GroupStats, ToolStats) of either backend."""
    return {
        "window": {"start": _iso(start_s), "end": _iso(now_s), "seconds": int(window_s)},
        "by": list(by),
        "groups": [g.as_report() for g in groups],
    }


def report(db: sqlite3.Connection, window_s: float, by: Sequence[str], now_s: float | None = None) -> dict[str, Any]:
    start_s, now = report_window(window_s, now_s)
    return report_result(start_s, now, window_s, by, grouped_rollups(db, start_s, now, by))


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# --- tool calls ----------------------------------------------------------------------------------
# Rollups have no tool dimension (a tool call is not a billed LLM call): tool breakdowns read the
# tool spans of the window from `spans`. The dimensions a tool span carries itself:
TOOL_GROUP_COLUMNS = {"tool": "s.tool_name", "service": "s.service", "feature": "s.feature", "tenant": "s.tenant"}
_TOOL_FAILED = "({0}.status = 2 OR {0}.error_type IS NOT NULL)"  # OTel status ERROR, or error.type set


def tool_calls_query(start_ns: int, end_ns: int, by: Sequence[str] = ("tool",)) -> tuple[str, tuple]:
    """(sql, params): one row per tool call started in [start_ns, end_ns]: the `by` columns,
    duration_ns, failed (0/1).

    One call can leave several tool spans, one inside the other: a framework's execute_tool span,
    the MCP client's `tools/call` below it, the MCP server's `tools/call` below that. A tool span
    whose parent is a tool span of the same tool is part of its parent's call, not a call of its
    own: the outermost span gives the duration the caller waited, and the call failed if any span
    of the chain did (an MCP server flags `tool_error` where the client may see a plain result)."""
    for name in by:
        if name not in TOOL_GROUP_COLUMNS:
            raise ValueError(f"cannot group tool calls by {name!r}: choose from {', '.join(TOOL_GROUP_COLUMNS)}")
    dims = "".join(f"{TOOL_GROUP_COLUMNS[name]}, " for name in by)
    sql = (
        "WITH RECURSIVE chain(call_id, trace_id, span_id, tool_name, failed) AS ("
        f"SELECT s.id, s.trace_id, s.span_id, s.tool_name, {_TOOL_FAILED.format('s')} FROM spans s "
        "WHERE s.start_ns >= ? AND s.start_ns <= ? AND s.kind = 'tool' AND NOT EXISTS ("
        "SELECT 1 FROM spans p WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id "
        "AND p.kind = 'tool' AND p.tool_name IS s.tool_name) "
        # UNION, not UNION ALL: a row already in the chain is not walked again
        f"UNION SELECT chain.call_id, c.trace_id, c.span_id, c.tool_name, {_TOOL_FAILED.format('c')} "
        "FROM chain JOIN spans c ON c.trace_id = chain.trace_id AND c.parent_span_id = chain.span_id "
        "WHERE c.kind = 'tool' AND c.tool_name IS chain.tool_name) "
        f"SELECT {dims}s.duration_ns, max(chain.failed) FROM chain JOIN spans s ON s.id = chain.call_id "
        "GROUP BY chain.call_id"
    )
    return sql, (int(start_ns), int(end_ns))


# The percentiles of a tool's durations that the Breakdown by tool and `report --by tool` show.
TOOL_PERCENTILES = (0.5, 0.95)


@dataclass(slots=True)
class ToolStats:
    """Calls of one tool (or one tool × dimension) over a window."""

    key: dict[str, str | None]
    calls: int = 0
    errors: int = 0
    durations_ns: list[int] = field(default_factory=list)
    # Nearest-rank percentiles computed where the durations are (a ClickHouse store: PERCENTILES of 1.8M calls a
    # day, not the calls), in ns by q; used when durations_ns is empty.
    percentiles_ns: dict[float, int] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.calls if self.calls else None

    def percentile_ms(self, q: float) -> float | None:
        """Nearest-rank percentile of the calls' durations, in ms (exact: read from spans)."""
        if not self.durations_ns:
            known = self.percentiles_ns.get(q)
            return None if known is None else round(known / 1e6, 1)
        ordered = sorted(self.durations_ns)
        rank = min(len(ordered), max(1, math.ceil(q * len(ordered) - 1e-9)))
        return round(ordered[rank - 1] / 1e6, 1)

    def as_report(self) -> dict[str, Any]:
        rate = self.error_rate
        return {
            "key": self.key,
            "calls": self.calls,
            "errors": self.errors,
            "error_rate": None if rate is None else round(rate, 4),
            "duration_ms": {f"p{round(q * 100)}": self.percentile_ms(q) for q in TOOL_PERCENTILES},
        }


def parse_tool_calls(by: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[ToolStats]:
    """Rows of tool_calls_query → one ToolStats per group, most called first."""
    n = len(by)
    groups: dict[tuple, ToolStats] = {}
    for row in rows:
        dims = tuple(row[:n])
        group = groups.get(dims)
        if group is None:
            group = groups[dims] = ToolStats(key={name: value or None for name, value in zip(by, dims)})
        group.calls += 1
        if row[n + 1]:
            group.errors += 1
        if row[n] is not None:
            group.durations_ns.append(row[n])
    result = list(groups.values())
    result.sort(key=lambda g: (-g.calls, -g.errors, tuple(str(v or "") for v in g.key.values())))
    return result


def tool_report(db: sqlite3.Connection, window_s: float, by: Sequence[str] = ("tool",),
                now_s: float | None = None) -> dict[str, Any]:
    """`report --by tool`: calls, errors and duration percentiles per tool over the window."""
    start_s, now = report_window(window_s, now_s)
    sql, params = tool_calls_query(start_s * 10**9, now * 10**9 + 10**9 - 1, by)
    return report_result(start_s, now, window_s, by, parse_tool_calls(by, db.execute(sql, params)))


# --- traces --------------------------------------------------------------------------------------


def parse_trace_id(text: str) -> bytes:
    cleaned = text.strip().lower().replace("-", "")
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    try:
        raw = bytes.fromhex(cleaned)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a trace id: expected 32 hex characters") from exc
    if len(raw) != 16:
        raise ValueError(f"{text!r} is not a trace id: expected 32 hex characters, got {len(cleaned)}")
    return raw


def export_trace(db: sqlite3.Connection, trace_id: bytes) -> Any:
    """The stored trace as an ExportTraceServiceRequest (spans grouped by resource and scope)."""
    rows = db.execute(
        "SELECT resource_id, scope_id, raw FROM spans WHERE trace_id = ? ORDER BY start_ns, id", (trace_id,)
    ).fetchall()
    return as_export_request(db, "traces", rows) if rows else None


def as_export_request(db: sqlite3.Connection, signal: str, rows: Sequence[tuple[Any, Any, bytes]]) -> Any:
    """Stored (resource_id, scope_id, raw) rows of spans or log records as the OTLP export request
    an SDK would have sent: grouped by resource, then scope, in row order."""
    return build_export_request(signal, rows, _blobs(db, "resources", {r[0] for r in rows}),
                                _blobs(db, "scopes", {r[1] for r in rows}))


def build_export_request(signal: str, rows: Sequence[tuple[Any, Any, bytes]], resources: dict[Any, bytes],
                         scopes: dict[Any, bytes], decode: Callable[[bytes | None], bytes] = decompress) -> Any:
    """as_export_request from rows whose resources and scopes are already read (by their keys: a
    SQLite row id or a ClickHouse digest); `decode` turns a stored `raw` into the protobuf bytes."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    traces = signal == "traces"
    # Either message type: both are filled through the same resource/scope shape, so typed loosely.
    request: Any = ExportTraceServiceRequest() if traces else ExportLogsServiceRequest()
    by_resource: dict[Any, Any] = {}
    by_scope: dict[tuple[Any, Any], Any] = {}
    for resource_id, scope_id, raw in rows:
        group = by_resource.get(resource_id)
        if group is None:
            group = (request.resource_spans if traces else request.resource_logs).add()
            if resources.get(resource_id):
                group.resource.CopyFrom(Resource.FromString(resources[resource_id]))
            by_resource[resource_id] = group
        scoped = by_scope.get((resource_id, scope_id))
        if scoped is None:
            scoped = (group.scope_spans if traces else group.scope_logs).add()
            if scopes.get(scope_id):
                scoped.scope.CopyFrom(InstrumentationScope.FromString(scopes[scope_id]))
            by_scope[(resource_id, scope_id)] = scoped
        if traces:
            scoped.spans.append(Span.FromString(decode(raw)))
        else:
            scoped.log_records.append(LogRecord.FromString(decode(raw)))
    return request


def _blobs(db: sqlite3.Connection, table: str, ids: set[Any]) -> dict[Any, bytes]:
    ids.discard(None)
    if not ids:
        return {}
    return dict(db.execute(f"SELECT id, blob FROM {table} WHERE id IN ({', '.join('?' * len(ids))})", list(ids)))


def tail(db: sqlite3.Connection, after_span: int, after_log: int, since_ns: int,
         limit: int = 500) -> tuple[Any, Any, int, int]:
    """What was stored after a cursor: (traces request or None, logs request or None, span cursor,
    log cursor). Row ids grow in commit order (one writer), so a cursor resumes exactly."""
    spans = db.execute("SELECT id, resource_id, scope_id, raw FROM spans WHERE id > ? AND start_ns >= ? "
                       "ORDER BY id LIMIT ?", (after_span, since_ns, limit)).fetchall()
    logs = db.execute("SELECT id, resource_id, scope_id, raw FROM logs WHERE id > ? AND time_ns >= ? "
                      "ORDER BY id LIMIT ?", (after_log, since_ns, limit)).fetchall()
    return (as_export_request(db, "traces", [r[1:] for r in spans]) if spans else None,
            as_export_request(db, "logs", [r[1:] for r in logs]) if logs else None,
            spans[-1][0] if spans else after_span, logs[-1][0] if logs else after_log)


def trace_summary(db: sqlite3.Connection, trace_id: bytes) -> dict[str, Any] | None:
    db.row_factory = sqlite3.Row
    try:
        row = db.execute("SELECT * FROM traces WHERE trace_id = ?", (trace_id,)).fetchone()
    finally:
        db.row_factory = None
    return dict(row) if row is not None else None


def totals(db: sqlite3.Connection) -> dict[str, int]:
    spans = db.execute("SELECT count(*) FROM spans").fetchone()[0]
    traces = db.execute("SELECT count(*) FROM traces").fetchone()[0]
    logs = db.execute("SELECT count(*) FROM logs").fetchone()[0]
    return {"spans": spans, "traces": traces, "logs": logs}


def newest_trace_start_ns(db: sqlite3.Connection) -> int | None:
    """When the newest stored trace started (ns), or None for an empty store."""
    return db.execute("SELECT max(start_ns) FROM traces").fetchone()[0]


def tail_snapshot(db: sqlite3.Connection, after_span: int, after_log: int, since_ns: int) -> tuple[Any, Any, int, int]:
    """tail() read from one consistent state of the store."""
    with read_snapshot(db):
        return tail(db, after_span, after_log, since_ns)
