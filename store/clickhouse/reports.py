"""What `report`, `traces`, `show` and `export` read, on the ClickHouse store (`check`'s reads: alerts.py).

The same documents as the SQLite side (store/queries.py, store/sessions.py, store/dashboards.py): the
SQL differs, the post-processing is the SQLite side's own functions (settle_groups, report_result,
parse_tool_calls, user_report_result, build_export_request), so both backends print the same report.

Correctness never waits for a merge: rollups are folded with sum()/sumMap() … GROUP BY (signed delta
rows not merged yet cancel in the fold), spans and trace summaries are read with FINAL. Every value is a
bound parameter; the only text put into SQL is column names from fixed tables checked by `identifier`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from store.clickhouse.client import ClickHouseClient, identifier
from store.clickhouse.schema import ROLLUP_COUNTERS as CH_ROLLUP_COUNTERS
from store.clickhouse.schema import ROLLUP_DIMENSIONS, histogram_column
from store.dashboards import (
    SPAN_COLUMNS_FOR_TRACE,
    SpanRow,
    trace_prefix_query,
)
from store.queries import (
    GROUP_COLUMNS,
    TOOL_GROUP_COLUMNS,
    GroupStats,
    build_export_request,
    parse_tool_calls,
    report_result,
    report_window,
    rollup_ranges,
    settle_groups,
)
from store.sessions import user_report_result
from store.writer import ROLLUP_COUNTERS

NS = 1_000_000_000
# The histograms a report prints (GroupStats.as_report): the others are not read.
REPORT_HISTOGRAMS = ("latency", "ttft")

if tuple(CH_ROLLUP_COUNTERS) != tuple(ROLLUP_COUNTERS):  # GroupStats indexes counters by SQLite's order
    raise ImportError("store.clickhouse.schema.ROLLUP_COUNTERS no longer matches store.writer.ROLLUP_COUNTERS")


def _window_condition(start_s: int, end_s: int, params: dict[str, Any], prefix: str = "") -> str:
    """rollup_ranges as a condition over (res, bucket), its bounds added to `params` (names start with
    `prefix`, so that several windows can share one query)."""
    parts = []
    for i, (res, lo, hi) in enumerate(rollup_ranges(start_s, end_s)):
        res_name, lo_name, hi_name = f"{prefix}res{i}", f"{prefix}lo{i}", f"{prefix}hi{i}"
        params[res_name], params[lo_name], params[hi_name] = res, lo, hi
        parts.append(f"(res = {{{res_name}:UInt32}} AND bucket >= {{{lo_name}:Int64}} "
                     f"AND bucket < {{{hi_name}:Int64}})")
    return " OR ".join(parts) or "0"


def _dimension_filters(where: Mapping[str, str | None] | None, params: dict[str, Any]) -> str:
    filters = ""
    for i, (column, value) in enumerate((where or {}).items()):
        if column not in ROLLUP_DIMENSIONS:
            raise ValueError(f"cannot filter rollups by {column!r}")
        filters += f" AND {identifier(column)} = {{where{i}:String}}"
        params[f"where{i}"] = value or ""
    return filters


def windowed_totals(client: ClickHouseClient, windows: Sequence[tuple[int, int]], hists: Sequence[str] = (),
                    where: Mapping[str, str | None] | None = None) -> list[list[GroupStats]]:
    """grouped_rollups(client, start, end, [], hists, where) for each (start, end) window, in one query:
    the union of the windows' rows, each counted in every window it falls in. A query costs ClickHouse
    8–10 ms whatever its window (planning and 30 aggregates; measured on chdb at 1M spans), and an alert
    evaluation asks for each SLO's six burn windows plus its objective window."""
    if not windows:
        return []
    params: dict[str, Any] = {}
    conditions = [f"({_window_condition(start_s, end_s, params, f'w{n}_')})" for n, (start_s, end_s) in
                  enumerate(windows)]
    # Each row once per window it falls in (its window numbers, by arrayJoin), then plain sums per window:
    # -If aggregates would test every window's condition once per aggregate and row (measured 2.5× slower
    # than one query per window).
    window = "arrayJoin(arrayFilter(n -> n >= 0, [" + ", ".join(
        f"if({condition}, {n}, -1)" for n, condition in enumerate(conditions)) + "]))"
    sums = [f"sum({identifier(c)})" for c in ROLLUP_COUNTERS]
    maps = [f"sumMap({identifier(histogram_column(h) + '.bucket')}, {identifier(histogram_column(h) + '.count')})"
            for h in hists]
    sql = (f"SELECT {window} AS window, {', '.join(['count()', *sums, *maps])} FROM rollups "
           f"WHERE ({' OR '.join(conditions)}){_dimension_filters(where, params)} GROUP BY window")
    found = {row[0]: row[1:] for row in client.query(sql, params)}
    out = []
    for n in range(len(windows)):
        part = found.get(n)
        groups = []
        if part is not None and part[0]:
            group = GroupStats(key={})
            group.counters = [int(v) for v in part[1:1 + len(ROLLUP_COUNTERS)]]
            for name, (buckets, counts) in zip(hists, part[1 + len(ROLLUP_COUNTERS):]):
                getattr(group, name).update(zip(buckets, counts))
            groups.append(group)
        out.append(settle_groups(groups))
    return out


def grouped_rollups(client: ClickHouseClient, start_s: int, end_s: int, by: Sequence[str],
                    hists: Sequence[str] = REPORT_HISTOGRAMS,
                    where: Mapping[str, str | None] | None = None) -> list[GroupStats]:
    """store.queries.grouped_rollups on ClickHouse: rollups in [start_s, end_s] folded per group of `by`,
    of the dimension sets whose columns equal `where`'s values (None and '' alike: no value).

    The rollups table holds one row per dimension set at 60 s and 1 h (no per-bucket total rows):
    ungrouped is the sum of every row."""
    for name in by:
        if name not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {name!r}: choose from {', '.join(GROUP_COLUMNS)}")
    columns = [c for name in by for c in GROUP_COLUMNS[name]]
    params: dict[str, Any] = {}
    filters = _dimension_filters(where, params)
    dims = [identifier(c) for c in columns]
    sums = [f"sum({identifier(c)})" for c in ROLLUP_COUNTERS]
    maps = [f"sumMap({identifier(histogram_column(h) + '.bucket')}, {identifier(histogram_column(h) + '.count')})"
            for h in hists]
    # sumMap leaves out a bucket that netted to zero, as SQLite's writer folds a corrected row in place
    # (a group whose calls all moved lists nowhere: tests/test_clickhouse_reports.py holds both to it).
    sql = (f"SELECT {', '.join([*dims, 'count()', *sums, *maps])} FROM rollups "
           f"WHERE ({_window_condition(start_s, end_s, params)}){filters}")
    if dims:
        sql += f" GROUP BY {', '.join(dims)}"
    n = len(columns)
    groups: list[GroupStats] = []
    for row in client.query(sql, params):
        if not row[n]:
            continue  # an aggregate without GROUP BY over no rows
        group = GroupStats(key={name: value or None for name, value in zip(columns, row[:n])})
        group.counters = [int(v) for v in row[n + 1:n + 1 + len(ROLLUP_COUNTERS)]]
        for name, (buckets, counts) in zip(hists, row[n + 1 + len(ROLLUP_COUNTERS):]):
            getattr(group, name).update(zip(buckets, counts))
        groups.append(group)
    return settle_groups(groups)


def report(client: ClickHouseClient, window_s: float, by: Sequence[str], now_s: float | None = None) -> dict[str, Any]:
    start_s, now = report_window(window_s, now_s)
    return report_result(start_s, now, window_s, by, grouped_rollups(client, start_s, now, by))


def tool_report(client: ClickHouseClient, window_s: float, by: Sequence[str] = ("tool",),
                now_s: float | None = None) -> dict[str, Any]:
    """store.queries.tool_report on ClickHouse. ClickHouse has no recursive CTE: the tool spans of the
    traces with a tool call in the window are read once, and each call's chain (a tool span inside a tool
    span of the same tool is part of its call) is walked here, as tool_calls_query's CTE walks it."""
    for name in by:
        if name not in TOOL_GROUP_COLUMNS:
            raise ValueError(f"cannot group tool calls by {name!r}: choose from {', '.join(TOOL_GROUP_COLUMNS)}")
    start_s, now = report_window(window_s, now_s)
    lo, hi = start_s * NS, now * NS + NS - 1
    rows = client.query(
        "SELECT trace_id, span_id, parent_span_id, tool_name, service, feature, tenant, start_ns, duration_ns, "
        "(status = 2 OR error_type IS NOT NULL) FROM spans FINAL WHERE kind = 'tool' AND trace_id IN ("
        "SELECT trace_id FROM spans FINAL WHERE kind = 'tool' AND start_ns >= {lo:Int64} AND start_ns <= {hi:Int64})",
        {"lo": lo, "hi": hi},
    )
    return report_result(start_s, now, window_s, by, parse_tool_calls(by, _tool_calls(rows, by, lo, hi)))


def _tool_calls(rows: Sequence[tuple[Any, ...]], by: Sequence[str], lo: int, hi: int) -> list[tuple[Any, ...]]:
    """tool_calls_query's rows (the `by` values, duration_ns, failed) from the tool spans of some traces."""
    spans: dict[tuple[bytes, bytes], list[tuple[Any, ...]]] = {}
    children: dict[tuple[bytes, bytes], list[tuple[Any, ...]]] = {}
    for row in rows:
        spans.setdefault((row[0], row[1]), []).append(row)
        if row[2] is not None:
            children.setdefault((row[0], row[2]), []).append(row)
    dims = {"tool": 3, "service": 4, "feature": 5, "tenant": 6}
    calls = []
    for row in rows:
        trace_id, span_id, parent, tool = row[0], row[1], row[2], row[3]
        if not lo <= row[7] <= hi:
            continue
        if parent is not None and any(p[3] == tool for p in spans.get((trace_id, parent), ())):
            continue  # part of its parent's call
        failed, seen, todo = bool(row[9]), {span_id}, [span_id]
        while todo:
            for child in children.get((trace_id, todo.pop()), ()):
                if child[3] == tool and child[1] not in seen:
                    seen.add(child[1])
                    todo.append(child[1])
                    failed = failed or bool(child[9])
        calls.append((*(row[dims[name]] for name in by), row[8], int(failed)))
    return calls


def user_report(client: ClickHouseClient, window_s: float, now_s: float | None = None,
                limit: int = 1000) -> dict[str, Any]:
    """store.sessions.user_report on ClickHouse: per user, over the traces that started in the window."""
    start_s, now = report_window(window_s, now_s)
    rows = client.query(
        "SELECT user_id, count(), uniqExact(conversation_id), sum(llm_calls), sum(input_tokens), "
        "sum(output_tokens), sum(cache_read_tokens), sum(cost_nusd), sum(unpriced_calls), sum(errors_api), "
        "sum(errors_validation), sum(errors_guardrail), countIf(error_spans > 0) FROM trace_summaries FINAL "
        "WHERE start_ns >= {lo:Int64} AND start_ns <= {hi:Int64} AND user_id IS NOT NULL GROUP BY user_id "
        "ORDER BY sum(cost_nusd) DESC, sum(input_tokens + output_tokens) DESC, user_id LIMIT {limit:UInt32}",
        {"lo": start_s * NS, "hi": now * NS, "limit": limit},
    )
    counted = [(r[0], *(int(v) for v in r[1:])) for r in rows]  # UInt64 sums as the ints SQLite gives
    return user_report_result(start_s, now, window_s, counted)


# --- traces --------------------------------------------------------------------------------------------------


def trace_ids_with_prefix(client: ClickHouseClient, prefix: str, limit: int) -> list[bytes]:
    """store.dashboards.trace_prefix_query on ClickHouse: ids starting with the hex `prefix`, at most
    `limit` + 1. The bounds are padded to 16 bytes, which orders as SQLite's shorter blobs do."""
    query = trace_prefix_query(prefix, limit)
    low, high = query.params[0], (query.params[1] if len(query.params) == 3 else None)
    params: dict[str, Any] = {"low": low.ljust(16, b"\0"), "limit": limit + 1}
    upper = ""
    if high is not None:
        params["high"] = high.ljust(16, b"\0")
        upper = " AND trace_id < {high:FixedString(16)}"
    rows = client.query(
        f"SELECT trace_id FROM trace_summaries FINAL WHERE trace_id >= {{low:FixedString(16)}}{upper} "
        "ORDER BY trace_id LIMIT {limit:UInt32}", params)
    return [bytes(row[0]) for row in rows]


def trace_spans(client: ClickHouseClient, trace_id: bytes) -> list[SpanRow]:
    """store.dashboards.trace_spans_query on ClickHouse. There is no row id: `id` is the span's place in
    (start, span id) order, which is what the tree sorts ties by."""
    columns = [c for c in SPAN_COLUMNS_FOR_TRACE if c != "id"]
    rows = client.query(
        f"SELECT {', '.join(columns)} FROM spans FINAL WHERE trace_id = {{t:FixedString(16)}} "
        "ORDER BY start_ns, span_id", {"t": trace_id}, bytes_columns=("duplicate_of",))
    return [SpanRow(i, *row) for i, row in enumerate(rows, start=1)]


def export_trace(client: ClickHouseClient, trace_id: bytes) -> Any:
    """store.queries.export_trace on ClickHouse: the trace as an ExportTraceServiceRequest."""
    rows = client.query(
        "SELECT resource_digest, scope_digest, raw FROM spans FINAL WHERE trace_id = {t:FixedString(16)} "
        "ORDER BY start_ns, span_id", {"t": trace_id}, bytes_columns=("raw",))
    if not rows:
        return None
    return build_export_request("traces", rows, _blobs(client, "resources", {r[0] for r in rows}),
                                _blobs(client, "scopes", {r[1] for r in rows}), decode=lambda raw: raw or b"")


def _blobs(client: ClickHouseClient, table: str, digests: set[Any]) -> dict[Any, bytes]:
    digests.discard(None)
    if not digests:
        return {}
    rows = client.query(
        f"SELECT digest, any(blob) FROM {identifier(table)} WHERE has({{d:Array(FixedString(16))}}, digest) "
        "GROUP BY digest", {"d": sorted(digests)}, bytes_columns=("any(blob)",))
    return {bytes(digest): blob for digest, blob in rows}
