"""The TUI's queries, as (sql, params) builders plus pure parsers of the rows they return.

Keeping SQL and parsing apart lets the TUI run them on aiosqlite (never blocking a keypress) and
tests or the CLI run them on sqlite3, with one definition. Every builder takes an explicit `now_s`.
Windows are read from rollups: the per-bucket total rows (dims_id 0) for the golden signals, the
per-dimension rows for breakdowns; the trace list reads the `traces` summary through its indexes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from store import histogram
from store.models import TraceErrorCounts
from store.pricing import PRICE_ROW_COLUMNS
from store.queries import GROUP_COLUMNS, GroupStats, range_rows, rollup_ranges, total_rows
from store.writer import ROLLUP_COUNTERS

NS = 1_000_000_000
_RC = {name: i for i, name in enumerate(ROLLUP_COUNTERS)}
_COUNTERS_SQL = ", ".join(ROLLUP_COUNTERS)


@dataclass(frozen=True, slots=True)
class Query:
    sql: str
    params: tuple


def resolution_for(window_s: float) -> int:
    """Bucket width for a window's series: ~30–170 points, and never more rows than needed."""
    if window_s <= 15 * 60:
        return 10
    if window_s <= 6 * 3600:
        return 60
    return 3600


# --- overview ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Bucket:
    start_s: int
    counters: list[int]
    latency: dict[int, int]
    ttft: dict[int, int]  # (no TPOT: a bucket's is never drawn, the window's is in Overview.totals)

    def __getitem__(self, name: str) -> int:
        return self.counters[_RC[name]]


@dataclass(slots=True)
class Overview:
    window_s: float
    now_s: float
    resolution_s: int
    buckets: list[Bucket]
    totals: GroupStats
    today_cost_nusd: int
    today_start_s: int
    features: list[tuple[str | None, int, int]]  # (feature, cost nusd, calls) by cost
    models: list[tuple[str | None, int, int]] = field(default_factory=list)

    def __getitem__(self, name: str) -> int:
        return self.totals[name]

    def percentiles(self, which: str, qs: Sequence[float] = (0.5, 0.95, 0.99)) -> list[float | None]:
        """Seconds."""
        return [None if v is None else v / 1e6 for v in histogram.quantiles(getattr(self.totals, which), qs)]

    def series(self, name: str) -> list[float]:
        """One value per bucket across the whole window (empty buckets are 0)."""
        by_start = {b.start_s: b for b in self.buckets}
        first = int(self.now_s - self.window_s) // self.resolution_s * self.resolution_s
        values = []
        for start in range(first, int(self.now_s) + 1, self.resolution_s):
            bucket = by_start.get(start)
            if bucket is None:
                values.append(0.0)
            elif name.startswith("p95_"):
                q = histogram.quantiles(getattr(bucket, name[4:]), (0.95,))[0]
                values.append(0.0 if q is None else q / 1e6)
            elif name == "errors":
                values.append(float(bucket["errors_api"] + bucket["errors_validation"] + bucket["errors_guardrail"]))
            elif name == "tokens":
                values.append(float(bucket["input_tokens"] + bucket["output_tokens"]))
            else:
                values.append(float(bucket[name]))
        return values

    @property
    def elapsed_s(self) -> float:
        """The part of the window that has data: rates of a store younger than the window are
        averaged over the time it covers, not diluted over the whole window."""
        if not self.buckets:
            return max(1.0, self.window_s)
        first = max(self.now_s - self.window_s, self.buckets[0].start_s)
        return max(1.0, min(self.window_s, self.now_s - first))

    @property
    def requests_per_s(self) -> float:
        return self["calls"] / self.elapsed_s

    @property
    def tokens_per_s(self) -> float:
        return (self["input_tokens"] + self["output_tokens"]) / self.elapsed_s

    @property
    def in_flight(self) -> float:
        """Average concurrent calls (Little's law: total call time / window)."""
        return self["duration_ns"] / NS / self.elapsed_s

    @property
    def rate_limit_share(self) -> float | None:
        calls = self["calls"]
        return self["err_rate_limit"] / calls if calls else None

    def error_rate(self, name: str) -> float | None:
        calls = self["calls"]
        return self[name] / calls if calls else None

    @property
    def cost_per_hour_usd(self) -> float:
        return self["cost_nusd"] / 1e9 / (self.elapsed_s / 3600)

    @property
    def today_projection_usd(self) -> float:
        """Today so far plus the window's hourly burn for the rest of the day."""
        rest_of_day_h = max(0.0, (self.today_start_s + 86400 - self.now_s) / 3600)
        return self.today_cost_nusd / 1e9 + self.cost_per_hour_usd * rest_of_day_h

    @property
    def decode_tokens_per_s(self) -> float | None:
        ns = self["decode_ns"]
        return self["decode_tokens"] / (ns / NS) if ns else None


def local_midnight(now_s: float) -> int:
    local = time.localtime(now_s)
    return int(now_s - (local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec))


def overview_queries(window_s: float, now_s: float) -> dict[str, Query]:
    res = resolution_for(window_s)
    start = int(now_s - window_s)
    first_bucket = start - start % res
    today, today_params = total_rows(rollup_ranges(local_midnight(now_s), int(now_s)), alias="")
    buckets, bucket_params = total_rows([(res, first_bucket, int(now_s) + 1)], alias="")
    ranges = rollup_ranges(start, int(now_s))
    # Per dimension set first, from the index rollups_sums (m014) and not the rows with their
    # histograms, a range at a time (an OR of ranges made SQLite read the rows again); then per
    # feature and model.
    sums = " UNION ALL ".join(
        "SELECT dims_id, cost_nusd, calls FROM rollups WHERE res = ? AND bucket >= ? AND bucket < ?" for _ in ranges)
    return {
        "buckets": Query(
            f"SELECT bucket, {_COUNTERS_SQL}, hist_latency, hist_ttft, hist_tpot FROM rollups "
            f"WHERE {buckets} ORDER BY bucket", bucket_params),
        "today": Query(f"SELECT coalesce(sum(cost_nusd), 0) FROM rollups WHERE {today}", today_params),
        # The top features and models from one pass over the window's rows of every dimension set, folded
        # by parse_overview (fold_top): a query per list read them twice, 26 ms each over a week of week.db.
        "top": Query(
            f"SELECT d.feature, d.model, sum(s.cost), sum(s.calls) FROM (SELECT dims_id, sum(cost_nusd) AS cost, "
            f"sum(calls) AS calls FROM ({sums}) GROUP BY dims_id) s JOIN dims d ON d.id = s.dims_id "
            f"GROUP BY d.feature, d.model",
            tuple(x for r in ranges for x in r)),
    }


TOP_N = 8  # the Overview's top features and models


def fold_top(rows: Iterable[tuple]) -> tuple[list[tuple], list[tuple]]:
    """(features, models) from (feature, model, cost, calls) sums: features by cost then calls, models by
    calls (named ones only), the top TOP_N of each, equal figures by name. Both stores read these rows."""
    features: dict[Any, list[int]] = {}
    models: dict[Any, list[int]] = {}
    for feature, model, cost, calls in rows:
        cost, calls = int(cost or 0), int(calls or 0)
        for sums, name in ((features, feature), (models, model)):
            found = sums.get(name)
            if found is None:
                sums[name] = [cost, calls]
            else:
                found[0] += cost
                found[1] += calls
    by_feature = sorted(((name, c, n) for name, (c, n) in features.items()), key=lambda r: (-r[1], -r[2], r[0] or ""))
    by_model = sorted(((name, c, n) for name, (c, n) in models.items() if name), key=lambda r: (-r[2], r[0]))
    return by_feature[:TOP_N], by_model[:TOP_N]


def parse_overview(window_s: float, now_s: float, rows: dict[str, list[tuple]]) -> Overview:
    res = resolution_for(window_s)
    features, models = fold_top(rows.get("top", ()))
    start = now_s - window_s
    totals = GroupStats(key={})
    # The window's histograms: every bucket's blob of one kind concatenated and decoded once (decoding
    # sums a repeated bucket), not a dict update per pair per bucket: 168 blobs at 7 days.
    total_blobs: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
    buckets = []
    for row in rows["buckets"]:
        bucket = Bucket(row[0], list(row[1:1 + len(ROLLUP_COUNTERS)]), {}, {})
        hists = row[1 + len(ROLLUP_COUNTERS):]
        histogram.decode_into(hists[0], bucket.latency)
        histogram.decode_into(hists[1], bucket.ttft)
        buckets.append(bucket)
        if bucket.start_s + res > start:  # the first bucket may straddle the window start: count it
            totals.add_row(bucket.counters, ())
            for blobs, blob in zip(total_blobs, hists):
                if blob:
                    blobs.append(blob)
    for into, blobs in zip((totals.latency, totals.ttft, totals.tpot), total_blobs):
        histogram.decode_into(b"".join(blobs), into)
    return Overview(
        window_s=window_s, now_s=now_s, resolution_s=res, buckets=buckets, totals=totals,
        today_cost_nusd=rows["today"][0][0] if rows["today"] else 0, today_start_s=local_midnight(now_s),
        features=[(f or None, c, n) for f, c, n in features if (c or n)],
        models=[(m or None, c, n) for m, c, n in models if n],
    )


# --- breakdown -----------------------------------------------------------------------------------


def breakdown_query(window_s: float, now_s: float, by: str) -> Query:
    columns = GROUP_COLUMNS[by]
    start = int(now_s - window_s)
    ranges = rollup_ranges(start, int(now_s))
    window_sql, params = range_rows(ranges)
    dims = ", ".join(f"d.{c}" for c in columns)
    # One row per group (parse_breakdown sums rows all the same): SQLite sums the counters and
    # concatenates each histogram's blobs, a valid encoding (decoding adds repeated buckets). 24 h is
    # ~3k rollup rows, and adding them up in Python cost ~10 µs a row.
    hists = ", ".join(f"CAST(group_concat(r.{h}, x'') AS BLOB)" for h in ("hist_latency", "hist_ttft", "hist_tpot"))
    return Query(
        f"SELECT {dims}, {', '.join(f'sum(r.{c})' for c in ROLLUP_COUNTERS)}, {hists} "
        f"FROM rollups r JOIN dims d ON d.id = r.dims_id WHERE {window_sql} GROUP BY {dims}", params)


def parse_breakdown(by: str, rows: list[tuple]) -> list[GroupStats]:
    columns = GROUP_COLUMNS[by]
    n = len(columns)
    groups: dict[tuple, GroupStats] = {}
    for row in rows:
        key = tuple(row[:n])
        group = groups.get(key)
        if group is None:
            group = groups[key] = GroupStats(key={c: (v or None) for c, v in zip(columns, key)})
        group.add_row(row[n:n + len(ROLLUP_COUNTERS)], row[n + len(ROLLUP_COUNTERS):])
    result = [g for g in groups.values() if any(g.counters)]
    result.sort(key=lambda g: (-g["cost_nusd"], -g["calls"]))
    return result


# --- traces --------------------------------------------------------------------------------------

TRACE_SORTS = {
    "start": "t.start_ns",
    "duration": "t.duration_ns",
    "cost": "t.cost_nusd",
    "tokens": "(t.input_tokens + t.output_tokens)",
    "calls": "t.llm_calls",
    "errors": "(t.errors_api + t.errors_validation + t.errors_guardrail + t.error_spans)",
    "root": "t.root_name",
    "service": "t.service",
}
TRACE_LIST_COLUMNS = (
    "trace_id", "start_ns", "root_name", "root_known", "service", "duration_ns", "spans", "llm_calls",
    "input_tokens", "output_tokens", "cost_nusd", "unpriced_calls", "errors_api", "errors_validation",
    "errors_guardrail", "error_spans", "feature", "tenant", "models",
)


@dataclass(frozen=True, slots=True)
class TraceRow(TraceErrorCounts):
    trace_id: bytes
    start_ns: int
    root_name: str | None
    root_known: int
    service: str | None
    duration_ns: int
    spans: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_nusd: int
    unpriced_calls: int
    errors_api: int
    errors_validation: int
    errors_guardrail: int
    error_spans: int
    feature: str | None
    tenant: str | None
    models: str | None


def traces_query(window_s: float, now_s: float, where: str = "1", params: Sequence[Any] = (),
                 sort: str = "start", descending: bool = True, limit: int = 500) -> Query:
    order = TRACE_SORTS[sort]
    direction = "DESC" if descending else "ASC"
    start_ns = int((now_s - window_s) * NS)
    # Start-time order comes straight off traces_by_start; other orders use their own index and
    # stop at `limit`, so neither sorts the whole window. Ties end in trace id order, which the indexes
    # hold (the table is WITHOUT ROWID, keyed by trace id), so that ClickHouse can give the same order.
    return Query(
        f"SELECT {', '.join('t.' + c for c in TRACE_LIST_COLUMNS)} FROM traces t "
        f"WHERE t.start_ns >= ? AND ({where}) ORDER BY {order} {direction}, t.start_ns DESC, t.trace_id DESC LIMIT ?",
        (start_ns, *params, limit))


def parse_traces(rows: list[tuple]) -> list[TraceRow]:
    return [TraceRow(*row) for row in rows]


# --- one trace -----------------------------------------------------------------------------------

SPAN_COLUMNS_FOR_TRACE = (
    "id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "duration_ns", "status",
    "status_message", "service", "provider", "operation", "request_model", "response_model", "input_tokens",
    "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "ttft_ns", "streaming",
    "finish_reason", "error_class", "error_subclass", "error_type", "feature", "tenant", "prompt_id",
    "prompt_version", "conversation_id", "user_id", "cost_nusd", "price_id", "billed", "flags", "duplicate_of",
)


@dataclass(frozen=True, slots=True)
class SpanRow:
    id: int
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    duration_ns: int | None
    status: int
    status_message: str | None
    service: str | None
    provider: str | None
    operation: str | None
    request_model: str | None
    response_model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    ttft_ns: int | None
    streaming: int | None
    finish_reason: str | None
    error_class: str | None
    error_subclass: str | None
    error_type: str | None
    feature: str | None
    tenant: str | None
    prompt_id: str | None
    prompt_version: str | None
    conversation_id: str | None
    user_id: str | None
    cost_nusd: int | None
    price_id: str | None
    billed: int
    flags: int
    duplicate_of: bytes | None  # the billed span of the same provider call, when this one is a twin

    @property
    def model(self) -> str | None:
        return self.response_model or self.request_model

    @property
    def failed(self) -> bool:
        return self.status == 2 or self.error_class is not None

    @property
    def is_llm(self) -> bool:
        return self.kind in ("llm", "embedding")


def trace_spans_query(trace_id: bytes) -> Query:
    return Query(f"SELECT {', '.join(SPAN_COLUMNS_FOR_TRACE)} FROM spans WHERE trace_id = ? ORDER BY start_ns, id",
                 (trace_id,))


def parse_spans(rows: list[tuple]) -> list[SpanRow]:
    return [SpanRow(*row) for row in rows]


def span_raw_query(span_row_id: int) -> Query:
    return Query("SELECT s.raw, s.resource_id, s.scope_id, sc.name, sc.version FROM spans s "
                 "LEFT JOIN scopes sc ON sc.id = s.scope_id WHERE s.id = ?", (span_row_id,))


def span_price_query(span_row_id: int) -> Query:
    """The tier that priced a span and the stored price row it names (store.span_detail.decode_price)."""
    columns = ", ".join("p." + c for c in PRICE_ROW_COLUMNS)
    return Query(f"SELECT s.price_tier, {columns} FROM spans s LEFT JOIN price_rows p ON p.id = s.price_id "
                 "WHERE s.id = ?", (span_row_id,))


def span_logs_query(trace_id: bytes, span_id: bytes) -> Query:
    return Query("SELECT time_ns, event_name, severity, raw FROM logs WHERE trace_id = ? AND span_id = ? "
                 "ORDER BY time_ns, id", (trace_id, span_id))


def trace_raw_query(trace_id: bytes, span_row_ids: Sequence[int]) -> Query:
    """span_raw_query's columns, after the row id, for several spans of one trace: their details
    decoded from one snapshot (search inside a trace, trace diff). The caller bounds the ids."""
    marks = ", ".join("?" * len(span_row_ids)) or "NULL"
    return Query("SELECT s.id, s.raw, s.resource_id, s.scope_id, sc.name, sc.version FROM spans s "
                 f"LEFT JOIN scopes sc ON sc.id = s.scope_id WHERE s.trace_id = ? AND s.id IN ({marks})",
                 (trace_id, *span_row_ids))


def trace_logs_query(trace_id: bytes, limit: int) -> Query:
    """span_logs_query's columns, after the span id, for a whole trace (at most `limit` records)."""
    return Query("SELECT span_id, time_ns, event_name, severity, raw FROM logs WHERE trace_id = ? "
                 "AND span_id IS NOT NULL ORDER BY time_ns, id LIMIT ?", (trace_id, limit))


def trace_log_counts_query(trace_id: bytes) -> Query:
    return Query("SELECT span_id, count(*) FROM logs WHERE trace_id = ? GROUP BY span_id", (trace_id,))


def resource_query(resource_id: int) -> Query:
    return Query("SELECT blob FROM resources WHERE id = ?", (resource_id,))


def newest_span_id_query() -> Query:
    """The newest span's row id, one step down the primary key: what the live loop reads every
    second for the spans/s figure (count(*) of traces walked a whole index, 15–45 ms a second)."""
    return Query("SELECT max(id) FROM spans", ())


# --- opening a trace by id, and the filter's known values ----------------------------------------

TRACE_ID_HEX = 32


def normalize_trace_id_prefix(text: str) -> str | None:
    """Lowercase hex from a pasted or typed trace id (or its start): `0x` and dashes dropped.
    None when it is not hex or longer than a trace id."""
    cleaned = text.strip().lower().replace("-", "")
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    if not cleaned or len(cleaned) > TRACE_ID_HEX or any(c not in "0123456789abcdef" for c in cleaned):
        return None
    return cleaned


def trace_prefix_query(prefix: str, limit: int = 1000) -> Query:
    """Trace ids starting with the hex `prefix` (normalize_trace_id_prefix first): a range over the
    traces primary key, `trace_id >= X'ab10' AND trace_id < X'ab20'` for `ab1`, so no scan.
    At most `limit` + 1 rows, enough to say "more than `limit`"."""
    if normalize_trace_id_prefix(prefix) != prefix:
        raise ValueError(f"{prefix!r} is not a normalized hex trace id prefix")
    width = len(prefix) + len(prefix) % 2
    low = bytes.fromhex(prefix.ljust(width, "0"))
    after = int(prefix, 16) + 1
    if after >= 16 ** len(prefix):  # ffff…: no upper bound
        return Query("SELECT trace_id FROM traces WHERE trace_id >= ? ORDER BY trace_id LIMIT ?", (low, limit + 1))
    high = bytes.fromhex(format(after, f"0{len(prefix)}x").ljust(width, "0"))
    return Query("SELECT trace_id FROM traces WHERE trace_id >= ? AND trace_id < ? ORDER BY trace_id LIMIT ?",
                 (low, high, limit + 1))


def parse_trace_prefix(rows: list[tuple]) -> list[bytes]:
    return [bytes(row[0]) for row in rows]


# Filter field → the dims column holding its values (dims is small: one row per dimension set).
KNOWN_VALUE_COLUMNS = {"model": "model", "feature": "feature", "tenant": "tenant", "service": "service",
                       "provider": "provider", "prompt": "prompt_id", "version": "prompt_version",
                       "variant": "variant"}


def known_values_queries(now_s: float, tool_window_s: float = 86400, limit: int = 200) -> dict[str, Query]:
    """Distinct values per filter field, for completion: the dimensions from `dims`, tool names
    from the last `tool_window_s` of tool spans (the spans_tool_by_start index)."""
    queries = {name: Query(f"SELECT DISTINCT {column} FROM dims WHERE {column} != '' ORDER BY 1 LIMIT ?", (limit,))
               for name, column in KNOWN_VALUE_COLUMNS.items()}
    queries["tool"] = Query(
        "SELECT DISTINCT tool_name FROM spans WHERE kind = 'tool' AND start_ns >= ? AND tool_name IS NOT NULL "
        "AND tool_name != '' LIMIT ?", (int((now_s - tool_window_s) * NS), limit))
    return queries


def parse_known_values(rows: dict[str, list[tuple]]) -> dict[str, list[str]]:
    return {name: sorted({str(row[0]) for row in found if row[0] is not None}) for name, found in rows.items()}
