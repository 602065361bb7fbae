"""The TUI's reads (store/dashboards.py, charts.py, trends.py, drift.py) on the ClickHouse store.

Each function returns the rows its SQLite twin's query returns, in the same shape, so that the SQLite
side's own parsers (parse_overview, parse_charts, parse_breakdown, parse_trends, parse_drift, parse_spans,
decode_span_detail …) build every figure the screens show: one parsing code for both backends.

What differs underneath, and how each read makes up for it:
- Rollups hold one row per dimension set (no per-bucket total rows, except the 10 s totals): a total is
  the sum of every row of a resolution. Histograms come back from sumMap as (buckets, counts) and are
  encoded as the blobs SQLite stores (store.histogram.encode), which the parsers decode.
- Spans, logs and summaries are read with FINAL (a row re-inserted by a correction counts once).
- There are no row ids: a span's `id` is its place in the trace (store.clickhouse.reports.trace_spans);
  its content is found by (trace_id, span_id). Content is kept as plain protobuf (ClickHouse compresses
  the column); the SQLite side stores zstd frames, which decode_span_detail expects: it gets those.
Every value is a bound parameter; the only text put into SQL is column names from fixed tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from store import histogram
from store.clickhouse import search
from store.clickhouse.client import ClickHouseClient, ClickHouseError, batches, identifier
from store.clickhouse.reports import _window_condition
from store.clickhouse.rows import sqlite_raw
from store.clickhouse.schema import ROLLUP_COUNTERS, histogram_column
from store.connection import NotInThisStore
from store.dashboards import (
    KNOWN_VALUE_COLUMNS,
    SPAN_COLUMNS_FOR_TRACE,
    TRACE_LIST_COLUMNS,
    TRACE_SORTS,
    TraceRow,
    local_midnight,
    resolution_for,
)
from store.drift import DISTRIBUTIONS, windows
from store.pricing import PRICE_ROW_COLUMNS
from store.queries import GROUP_COLUMNS, ToolStats
from store.sessions import MAX_TURNS, TURN_COLUMNS
from store.trends import DIMENSIONS, METRIC, _columns, _first_bucket, resolution

NS = 1_000_000_000
NO_SPAN = b"\0" * 8  # a log record outside any span (SQLite: NULL)
Rows = dict[str, list[tuple]]
_COUNTER_SUMS = ", ".join(f"sum({identifier(c)})" for c in ROLLUP_COUNTERS)


def _sum_map(name: str) -> str:
    """The histogram `name` (latency, ttft …; SQLite's hist_<name>) folded over the group's rows."""
    column = histogram_column(name)
    return f"sumMap({identifier(column + '.bucket')}, {identifier(column + '.count')})"


def _blob(folded: Any) -> bytes | None:
    """sumMap's (buckets, counts) as the blob SQLite stores (None when empty, as SQLite's encode)."""
    buckets, counts = folded
    return histogram.encode(dict(zip(buckets, counts)))


def _ints(values: Sequence[Any]) -> list[int]:
    return [int(v) for v in values]


def _dims(columns: Sequence[str]) -> list[str]:
    return [identifier(c) for c in columns]


# --- overview and charts -------------------------------------------------------------------------------


def _buckets(client: ClickHouseClient, window_s: float, now_s: float) -> list[tuple]:
    """overview_queries' "buckets": per bucket of the window's resolution, every counter and the
    latency, TTFT and TPOT histograms (the sum of the bucket's rows is its total)."""
    res = resolution_for(window_s)
    start = int(now_s - window_s)
    rows = client.query(
        f"SELECT bucket, {_COUNTER_SUMS}, {_sum_map('latency')}, {_sum_map('ttft')}, {_sum_map('tpot')} "
        "FROM rollups WHERE res = {res:UInt32} AND bucket >= {lo:Int64} AND bucket <= {hi:Int64} "
        "GROUP BY bucket ORDER BY bucket",
        {"res": res, "lo": start - start % res, "hi": int(now_s)})
    n = len(ROLLUP_COUNTERS)
    return [(int(row[0]), *_ints(row[1:1 + n]), *(_blob(h) for h in row[1 + n:])) for row in rows]


def _top(client: ClickHouseClient, window_s: float, now_s: float) -> list[tuple]:
    """overview_queries' "top" rows: (feature, model, cost, calls) of the window, for fold_top; one read for
    both lists (a ClickHouse query costs 8–10 ms of CPU however small: see reports.py)."""
    params: dict[str, Any] = {}
    condition = _window_condition(int(now_s - window_s), int(now_s), params)
    return client.query(f"SELECT feature, model, sum(cost_nusd), sum(calls) FROM rollups WHERE {condition} "
                        "GROUP BY feature, model", params)


def overview_rows(client: ClickHouseClient, window_s: float, now_s: float) -> Rows:
    """store.dashboards.overview_queries' rows, for parse_overview."""
    burn = cost_burn_rows(client, now_s)
    return {"buckets": _buckets(client, window_s, now_s), "today": _today(burn), "top": _top(client, window_s, now_s),
            "cost_burn": burn}


def _today(cost_burn: list[tuple]) -> list[tuple]:
    # Today's cost is the sum of the day's cost burn rows: the same rollup ranges (midnight to now).
    return [(sum(cost for _, _, cost in cost_burn),)]


def cost_burn_rows(client: ClickHouseClient, now_s: float) -> list[tuple]:
    """store.charts.cost_burn_query's rows: the day's cost per rollup bucket, minutes at the edges."""
    params: dict[str, Any] = {}
    condition = _window_condition(local_midnight(now_s), int(now_s), params)
    rows = client.query(f"SELECT res, bucket, sum(cost_nusd) FROM rollups WHERE {condition} "
                        "GROUP BY res, bucket ORDER BY bucket", params)
    return [(int(res), int(bucket), int(cost)) for res, bucket, cost in rows]


def charts_rows(client: ClickHouseClient, window_s: float, now_s: float, shift_s: float | None = None) -> Rows:
    """store.charts.charts_queries' rows, for parse_charts (the past period's under `past_` keys)."""
    from store.charts import _day_shift

    rows = overview_rows(client, window_s, now_s)
    if shift_s:
        past_now = now_s - shift_s
        rows["past_buckets"] = _buckets(client, window_s, past_now)
        rows["past_today"] = _today(cost_burn_rows(client, past_now))
        rows["past_cost_burn"] = cost_burn_rows(client, now_s - _day_shift(shift_s))
    return rows


# --- breakdown and trends ------------------------------------------------------------------------------


def breakdown_rows(client: ClickHouseClient, window_s: float, now_s: float, by: str) -> list[tuple]:
    """store.dashboards.breakdown_query's rows (one per group, in group order), for parse_breakdown."""
    columns = GROUP_COLUMNS[by]
    params: dict[str, Any] = {}
    condition = _window_condition(int(now_s - window_s), int(now_s), params)
    dims = ", ".join(_dims(columns))
    rows = client.query(
        f"SELECT {dims}, {_COUNTER_SUMS}, {_sum_map('latency')}, {_sum_map('ttft')}, {_sum_map('tpot')} "
        f"FROM rollups WHERE {condition} GROUP BY {dims} ORDER BY {dims}", params)
    n, c = len(columns), len(ROLLUP_COUNTERS)
    return [(*row[:n], *_ints(row[n:n + c]), *(_blob(h) for h in row[n + c:])) for row in rows]


def trends_rows(client: ClickHouseClient, metric_name: str, by: str, window_s: float, now_s: float) -> Rows:
    """store.trends.trends_queries' rows, for parse_trends."""
    metric = METRIC[metric_name]
    if by not in DIMENSIONS:
        raise ValueError(f"cannot split trends by {by!r}: choose from {', '.join(DIMENSIONS)}")
    res = resolution(window_s)
    if by == "tool":
        return _tool_trends_rows(client, metric, res, window_s, now_s)
    columns, hist = _columns(metric, tools=False)
    dims = ", ".join(_dims(GROUP_COLUMNS[by]))
    select = ", ".join([*(f"sum({identifier(c)})" for c in columns), *([_sum_map(hist[5:])] if hist else [])])
    found = client.query(
        f"SELECT bucket, {dims}, {select} FROM rollups WHERE res = {{res:UInt32}} AND bucket >= {{lo:Int64}} "
        f"AND bucket <= {{hi:Int64}} GROUP BY bucket, {dims} ORDER BY bucket, {dims}",
        {"res": res, "lo": _first_bucket(window_s, now_s, res), "hi": int(now_s)})
    n = 1 + len(GROUP_COLUMNS[by])
    rows: Rows = {"rows": [(int(row[0]), *row[1:n], *_ints(row[n:n + len(columns)]),
                           *([_blob(row[n + len(columns)])] if hist else [])) for row in found]}
    if by == "variant":
        params: dict[str, Any] = {}
        condition = _window_condition(int(now_s - window_s), int(now_s), params)
        variants = client.query(
            f"SELECT variant, {_COUNTER_SUMS}, {_sum_map('latency')}, {_sum_map('ttft')} FROM rollups "
            f"WHERE ({condition}) AND variant != '' GROUP BY variant ORDER BY variant", params)
        c = len(ROLLUP_COUNTERS)
        rows["variants"] = [(row[0], *_ints(row[1:1 + c]), *(_blob(h) for h in row[1 + c:])) for row in variants]
    return rows


def _tool_trends_rows(client: ClickHouseClient, metric: Any, res: int, window_s: float, now_s: float) -> Rows:
    """Tool spans per bucket and tool (tool_rollups, m008), as store.trends reads SQLite's tool_rollups."""
    if metric.tool is None:
        return {}
    columns, hist = _columns(metric, tools=True)
    select = ", ".join([*(f"sum({identifier(c)})" for c in columns), *([_sum_map("latency")] if hist else [])])
    found = client.query(
        f"SELECT bucket, tool, {select} FROM tool_rollups WHERE res = {{res:UInt32}} AND bucket >= {{lo:Int64}} "
        "AND bucket <= {hi:Int64} GROUP BY bucket, tool ORDER BY bucket, tool",
        {"res": res, "lo": _first_bucket(window_s, now_s, res), "hi": int(now_s)})
    n = len(columns)
    return {"rows": [(int(row[0]), row[1], *_ints(row[2:2 + n]), *([_blob(row[2 + n])] if hist else []))
                     for row in found]}


# --- the trace list and its `/` filter -------------------------------------------------------------------

FILTER_OPS = frozenset({"=", "!=", ">", ">=", "<", "<=", "=~", "!~"})


def filter_condition(terms: Sequence[tuple[str, str, Any]], invert: bool, params: dict[str, Any]) -> str:
    """The `/` filter (llmobs_tui.filtering: (field, op, value) terms, already checked and converted, the
    whole filter inverted by a leading `!`) as a condition over `trace_summaries AS t`, its values added to
    `params`; clause for clause what filtering.parse compiles for SQLite, from the same column expressions
    (store/filters.py). A span field matches a trace when one of its spans does (!= and !~: when none does);
    a `text` term when one of its spans or log records holds the search (store/clickhouse/search.py). The
    spans and records it reads start at or after {fsince:Int64}, which the caller binds (a trace's spans start
    with it, so the window's start is a safe bound). Regular expressions are RE2 (ClickHouse's match()),
    case-insensitive as on SQLite."""
    from store.filters import SPAN_FIELDS, TRACE_FAILING, TRACE_FIELDS

    clauses = []
    for i, (name, op, value) in enumerate(terms):
        if op not in FILTER_OPS:
            raise ValueError(f"not a filter operator: {op!r}")
        if name == "status":
            failing = (value == "error") == (op == "=")
            clauses.append(TRACE_FAILING if failing else f"NOT {TRACE_FAILING}")
            continue
        if name == search.SEARCH_FIELD:
            clauses.append(search.trace_condition(value, op == "!=", not invert, f"f{i}", params))
            continue
        regex = op in ("=~", "!~")
        params[f"f{i}"] = f"(?i){value}" if regex else value
        placeholder = f"{{f{i}:{'String' if isinstance(value, str) else 'Int64'}}}"
        if name in TRACE_FIELDS:
            expression = TRACE_FIELDS[name]
            if regex:
                clauses.append(f"{'NOT ' if op == '!~' else ''}match(coalesce({expression}, ''), {placeholder})")
            elif op == "!=":
                clauses.append(f"({expression} IS NULL OR {expression} != {placeholder})")
            else:
                clauses.append(f"{expression} {op} {placeholder}")
        elif name in SPAN_FIELDS:
            expression = SPAN_FIELDS[name]
            condition = (f"match({expression}, {placeholder})" if regex
                         else f"{expression} {'=' if op == '!=' else op} {placeholder}")
            clauses.append(f"t.trace_id {'NOT ' if op in ('!=', '!~') else ''}IN (SELECT s.trace_id FROM spans AS s "
                           f"FINAL WHERE s.start_ns >= {{fsince:Int64}} AND {condition})")
        else:
            raise ValueError(f"unknown filter field {name!r}")
    where = " AND ".join(f"({c})" for c in clauses) or "1"
    return f"NOT ({where})" if invert else where


def trace_list(client: ClickHouseClient, window_s: float, now_s: float, terms: Sequence[tuple[str, str, Any]],
               invert: bool, sort: str = "start", descending: bool = True, limit: int = 500) -> list[TraceRow]:
    """store.dashboards.traces_query on ClickHouse, with a `/` or `--filter` filter (filter_condition; no
    terms: every trace started in the window)."""
    return [TraceRow(*row) for row in traces_since(client, int((now_s - window_s) * NS), terms, invert, sort,
                                                   descending, limit)]


def traces_since(client: ClickHouseClient, start_ns: int, terms: Sequence[tuple[str, str, Any]], invert: bool,
                 sort: str, descending: bool, limit: int) -> list[tuple]:
    """The rows (TRACE_LIST_COLUMNS) of trace_list for the traces started at or after `start_ns`. By cost,
    from the by-cost copy (_by_cost)."""
    order = TRACE_SORTS[sort]  # fixed expressions over t.<column>, never user text
    # SQLite puts NULLs first in ascending order and last in descending; ClickHouse last in both unless told.
    direction = "DESC NULLS LAST" if descending else "ASC NULLS FIRST"
    params: dict[str, Any] = {"start": start_ns, "fsince": start_ns, "limit": limit}
    terms = search.resolved(client, terms, invert, start_ns)
    where = filter_condition(terms, invert, params)

    def select(table: str, bound: str = "") -> str:
        return (f"SELECT {', '.join('t.' + c for c in TRACE_LIST_COLUMNS)} FROM {table} AS t FINAL "
                f"WHERE t.start_ns >= {{start:Int64}} AND ({where}){bound} ORDER BY {order} {direction}, "
                "t.start_ns DESC, t.trace_id DESC LIMIT {limit:UInt32}")

    if sort == "cost":
        from store.filters import SPAN_FIELDS

        # A span field's filter is a subquery over spans (a search's too, but for one read already): read
        # once, over the whole window, not twice.
        bounded = not any(name in SPAN_FIELDS or (name == search.SEARCH_FIELD and not isinstance(value, search.Matched))
                          for name, _, value in terms)
        return _by_cost(client, select, where, params, descending, limit, bounded)
    return client.query(select("trace_summaries"), params)


# The threshold is the cost of the (limit × _CANDIDATES)th row of the window, read without FINAL: versions a
# merge has not folded yet count too, so it takes more than `limit` rows to be likely to leave `limit` live
# ones above it (a trace written over several batches has had several costs). At most _CANDIDATES_CAP of
# them, unless the limit asks for more: ClickHouse skips the granules that cannot hold one of the top rows
# only up to a LIMIT of 1000 (query_plan_max_limit_for_top_k_optimization). Measured at 100M spans (1.8M
# traces a day), the 24 h threshold: 12.5 ms for 1,000 rows, 31–34 ms for 2,000 and 4,000.
_CANDIDATES = 4
_CANDIDATES_CAP = 1000


def _by_cost(client: ClickHouseClient, select: Callable[..., str], where: str, params: dict[str, Any],
             descending: bool, limit: int, bounded: bool) -> list[tuple]:
    """The trace list by cost from trace_summaries_by_cost, sorted by (start day, cost): a bound on the cost
    (a key column, so FINAL may apply it before merging: every version of a key has its cost) leaves the tail
    of each day's range in each part. The bound is a row's cost, so at least as many rows of the window lie
    beyond it as the threshold read counted, live or not; when fewer than `limit` live ones do, the list is
    read without it (the result is then whatever the bound-free read gives, which is right by definition)."""
    from store.clickhouse.schema import BY_COST_TABLE, DAY_NS

    if bounded and limit > 0:
        beyond = ">=" if descending else "<="
        candidates = max(limit, min(limit * _CANDIDATES, _CANDIDATES_CAP))
        found = client.query(
            f"SELECT count(), {'min' if descending else 'max'}(c) FROM (SELECT t.cost_nusd AS c FROM {BY_COST_TABLE} "
            f"AS t WHERE t.start_ns >= {{start:Int64}} AND t.is_deleted = 0 AND ({where}) "
            f"ORDER BY c {'DESC' if descending else 'ASC'} LIMIT {{candidates:UInt32}})",
            {**params, "candidates": candidates})
        count, bound = found[0]
        if not count:
            return []
        bounded_params = {**params, "bound": bound, "day": params["start"] // DAY_NS}
        rows = client.query(select(BY_COST_TABLE, f" AND t.cost_nusd {beyond} {{bound:Int64}} AND "
                                                  f"intDiv(t.start_ns, {DAY_NS}) >= {{day:Int64}}"), bounded_params)
        if len(rows) >= limit or count < candidates:
            return rows
    return client.query(select(BY_COST_TABLE), params)


def matching_conversations(client: ClickHouseClient, terms: Sequence[tuple[str, str, Any]], invert: bool) -> set[str]:
    """The conversations one of whose traces matches the filter (store.sessions._matching), any time."""
    params: dict[str, Any] = {"fsince": 0}
    where = filter_condition(terms, invert, params)
    rows = client.query(f"SELECT DISTINCT t.conversation_id FROM trace_summaries AS t FINAL "
                        f"WHERE t.conversation_id IS NOT NULL AND ({where})", params)
    return {row[0] for row in rows}


# --- tool calls --------------------------------------------------------------------------------------------


def tool_stats(client: ClickHouseClient, window_s: float, now_s: float) -> list[ToolStats]:
    """store.tool_rollups.parse_tool_calls's result for the calls that started in the window, its bounds as
    the SQLite reader takes them."""
    from store.clickhouse.reports import tool_call_groups

    now_ns = int(now_s * 1e9)
    return tool_call_groups(client, now_ns - int(window_s * 1e9), now_ns)


# --- change markers --------------------------------------------------------------------------------------


def change_rows(client: ClickHouseClient, start_s: float, end_s: float, limit: int = 500) -> list[tuple]:
    """store.changes.changes_query on ClickHouse: the changes to draw in [start_s, end_s], oldest first.

    Each replica ships the values it saw first; a value's time is the earliest any replica saw it, and what
    it changed from is the value of its (kind, scope) first seen just before it, whichever replica saw that
    (a replica's own `before` knows only its own values: the change v1 → v2 would be lost, as a baseline,
    on a replica that never saw v1). The first value of a (kind, scope) is its baseline and is not drawn,
    except for the kinds whose first row is a change in itself (an error class; a price table, whose row
    carries the digest it replaced). One store's rows give SQLite's list when its values were first seen
    in time order; a value first seen late (an export delayed past a newer value) is placed by its time."""
    from store.changes import CHANGES_WITHOUT_BEFORE

    return client.query(
        "SELECT t, kind, scope, multiIf(kind = 'prices', shipped_before, kind IN {no_before:Array(String)} OR n = 1, "
        "NULL, previous) AS before, after, trace FROM ("
        " SELECT kind, scope, after, t, seq, trace, shipped_before,"
        "  lagInFrame(after) OVER w AS previous, row_number() OVER w AS n FROM ("
        "  SELECT kind, scope, after, min(time_ns) AS t, argMin(seq, time_ns) AS seq,"
        "   argMin(tuple(trace_id), time_ns).1 AS trace, argMin(tuple(before), time_ns).1 AS shipped_before"
        "  FROM changes FINAL GROUP BY kind, scope, after)"
        " WINDOW w AS (PARTITION BY kind, scope ORDER BY t, seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))"
        " WHERE t >= {a:Int64} AND t <= {b:Int64} AND (n > 1 OR kind IN {no_before:Array(String)})"
        " ORDER BY t, seq LIMIT {limit:UInt32}",
        {"a": int(start_s * NS), "b": int(end_s * NS), "no_before": list(CHANGES_WITHOUT_BEFORE), "limit": limit})


# --- drift -----------------------------------------------------------------------------------------------


def drift_rows(client: ClickHouseClient, window_s: float, now_s: float, eval_baseline: bool = True) -> Rows:
    """store.drift.drift_queries' rows over all traffic (the panel's scope), for parse_drift."""
    base_start, start, end = windows(window_s, now_s)
    hists = ", ".join(_sum_map(signal) for signal in DISTRIBUTIONS)
    rows: Rows = {}
    # The baseline ends where the window starts (drift._ranges_sql: its end is exclusive).
    for name, (lo, hi) in {"current": (start, end), "baseline": (base_start, start - 1)}.items():
        params: dict[str, Any] = {}
        condition = _window_condition(lo, hi, params)
        found = client.query(f"SELECT sum(calls), sum(refusals), sum(errors_validation), {hists} FROM rollups "
                             f"WHERE {condition}", params)
        rows[name] = [(*_ints(row[:3]), *(_blob(h) for h in row[3:])) for row in found]
    res = resolution_for(window_s)
    first = int(now_s - window_s)
    series = client.query(
        "SELECT bucket, sum(calls), sum(refusals), sum(errors_validation) FROM rollups WHERE res = {res:UInt32} "
        "AND bucket >= {lo:Int64} AND bucket <= {hi:Int64} GROUP BY bucket ORDER BY bucket",
        {"res": res, "lo": first - first % res, "hi": int(now_s)})
    rows["series"] = [tuple(_ints(row)) for row in series]
    width = res * NS
    evals = client.query(
        "SELECT eval_name, intDiv(time_ns, {width:Int64}) * {res:Int64}, avg(eval_score), count() FROM logs FINAL "
        "WHERE eval_score IS NOT NULL AND eval_name IS NOT NULL AND time_ns >= {lo:Int64} AND time_ns < {hi:Int64} "
        "GROUP BY eval_name, intDiv(time_ns, {width:Int64}) ORDER BY 1, 2",
        {"width": width, "res": res, "lo": int(now_s - window_s) // res * res * NS, "hi": (end + 1) * NS})
    rows["evals"] = [(name, int(bucket), float(mean), int(count)) for name, bucket, mean, count in evals]
    if eval_baseline:
        base = client.query(
            "SELECT eval_name, avg(eval_score), count() FROM logs FINAL WHERE eval_score IS NOT NULL AND "
            "eval_name IS NOT NULL AND time_ns >= {lo:Int64} AND time_ns < {hi:Int64} GROUP BY eval_name",
            {"lo": base_start * NS, "hi": start * NS})
        rows["evals_baseline"] = [(name, float(mean), int(count)) for name, mean, count in base]
    return rows


# --- one trace, one span -----------------------------------------------------------------------------------


def trace_log_counts(client: ClickHouseClient, trace_id: bytes) -> list[tuple]:
    """store.dashboards.trace_log_counts_query's rows: (span id or None, records)."""
    rows = client.query("SELECT span_id, count() FROM logs FINAL WHERE trace_id = {t:FixedString(16)} "
                        "GROUP BY span_id", {"t": trace_id})
    return [(None if bytes(span) == NO_SPAN else bytes(span), int(n)) for span, n in rows]


def _scopes(client: ClickHouseClient, digests: set[Any]) -> dict[bytes, tuple[str, str]]:
    digests.discard(None)
    if not digests:
        return {}
    found = {}
    for chunk in batches(sorted(bytes(digest) for digest in digests)):
        for digest, name, version in client.query(
                "SELECT digest, any(name), any(version) FROM scopes WHERE has({d:Array(FixedString(16))}, digest) "
                "GROUP BY digest", {"d": chunk}):
            found[bytes(digest)] = (name, version)
    return found


def span_raw_rows(client: ClickHouseClient, trace_id: bytes, span_ids: Sequence[bytes]) -> dict[bytes, tuple]:
    """span_raw_query's row (raw, resource, scope, scope name, scope version) per span id of one trace;
    the resource and scope are their digests, which resource_blob takes."""
    if not span_ids:
        return {}
    rows = [row for s in batches(span_ids) for row in client.query(
        "SELECT span_id, raw, resource_digest, scope_digest FROM spans FINAL WHERE trace_id = {t:FixedString(16)} "
        "AND has({s:Array(FixedString(8))}, span_id)", {"t": trace_id, "s": s}, bytes_columns=("raw",))]
    scopes = _scopes(client, {row[3] for row in rows})
    out = {}
    for span_id, raw, resource, scope in rows:
        name, version = scopes.get(bytes(scope), (None, None)) if scope is not None else (None, None)
        out[bytes(span_id)] = (sqlite_raw(raw), resource, scope, name, version)
    return out


def resource_blob(client: ClickHouseClient, digest: bytes | None) -> bytes | None:
    if digest is None:
        return None
    rows = client.query("SELECT any(blob) FROM resources WHERE digest = {d:FixedString(16)} HAVING count() > 0",
                        {"d": bytes(digest)}, bytes_columns=("any(blob)",))
    return rows[0][0] if rows else None


def span_price_row(tier: int | None) -> tuple:
    """span_price_query's row: the tier, and the price row, which ClickHouse does not keep (only its id):
    decode_price then shows the tier and no breakdown."""
    return (tier, *([None] * len(PRICE_ROW_COLUMNS)))


def span_tier(client: ClickHouseClient, trace_id: bytes, span_id: bytes) -> int | None:
    rows = client.query("SELECT price_tier FROM spans FINAL WHERE trace_id = {t:FixedString(16)} AND "
                        "span_id = {s:FixedString(8)}", {"t": trace_id, "s": span_id})
    return rows[0][0] if rows else None


def log_rows(client: ClickHouseClient, trace_id: bytes, span_id: bytes | None = None,
             limit: int = 20_000) -> list[tuple]:
    """span_logs_query's rows (time, event, severity, raw) for one span; with span_id None,
    trace_logs_query's (the span id first) for every span of the trace, at most `limit`."""
    params: dict[str, Any] = {"t": trace_id, "limit": limit}
    if span_id is not None:
        scope, first = "span_id = {s:FixedString(8)}", ""
        params["s"] = span_id
    else:
        scope, first = "span_id != {none:FixedString(8)}", "span_id, "
        params["none"] = NO_SPAN
    rows = client.query(
        f"SELECT {first}time_ns, event_name, severity, raw FROM logs FINAL WHERE trace_id = {{t:FixedString(16)}} "
        f"AND {scope} ORDER BY time_ns, record_digest LIMIT {{limit:UInt32}}", params, bytes_columns=("raw",))
    if span_id is not None:
        return [(int(t), event, severity, sqlite_raw(raw)) for t, event, severity, raw in rows]
    return [(bytes(s), int(t), event, severity, sqlite_raw(raw)) for s, t, event, severity, raw in rows]


# --- a conversation -----------------------------------------------------------------------------------------


def conversation_rows(client: ClickHouseClient, conversation_id: str,
                      limit: int = MAX_TURNS) -> tuple[list[tuple], list[tuple]]:
    """store.sessions.turns_query's and calls_query's rows (its latest `limit` turns, oldest first; their
    billed calls in start order), for parse_conversation. A call's `id` is its place in that order, and
    the prices of the row that priced it are not kept on ClickHouse (None: the context view's costs are
    left out)."""
    turns = client.query(
        f"SELECT * FROM (SELECT {', '.join(TURN_COLUMNS)} FROM trace_summaries FINAL WHERE conversation_id = "
        "{c:String} ORDER BY start_ns DESC, trace_id DESC LIMIT {limit:UInt32}) ORDER BY start_ns, trace_id",
        {"c": conversation_id, "limit": limit})
    columns = [c for c in SPAN_COLUMNS_FOR_TRACE if c != "id"]
    # Only the shown turns' calls (parse_conversation keeps no other), and only spans that started since the
    # first of them (a span starts at or after its trace, whose start is its earliest span's): the spans'
    # sort key starts with the hour, so the read skips the store's older hours. The trace ids are a PREWHERE:
    # every version of a span has its trace id (it is in the sort key), so FINAL folds the same versions,
    # and only the rows of these traces are read whole. By the conversation's id alone, after FINAL, it read
    # every span of the store: at 100M spans, 11 s for a conversation of 2,000 turns spread over 5 days, now
    # 2.2 s (7.5 s with the hours alone); a conversation of minutes reads a few hours. The ids go
    # IDS_PER_QUERY at a time (2,000 in one parameter pass the server's 128 KiB cap on a form field).
    since = min(row[1] for row in turns) if turns else 0
    calls = []
    for ids in batches([bytes(row[0]) for row in turns]):
        calls += client.query(
            f"SELECT {', '.join(columns)}, trace_id FROM spans FINAL PREWHERE trace_id IN "
            "{ids:Array(FixedString(16))} WHERE billed = 1 AND start_ns >= {since:Int64}",
            {"since": since, "ids": ids}, bytes_columns=("duplicate_of",))
    start, span_id = columns.index("start_ns"), columns.index("span_id")
    calls.sort(key=lambda row: (row[start], bytes(row[span_id])))
    return ([(bytes(row[0]), *row[1:]) for row in turns],
            [(i, *row[:-1], bytes(row[-1]), None, None) for i, row in enumerate(calls, start=1)])


# --- the live loop, completion ----------------------------------------------------------------------------


def span_rows(client: ClickHouseClient) -> int:
    """Span rows stored: part metadata, no scan. It also counts a corrected span's older row until a merge
    drops it (the caller keeps its figure from going backwards)."""
    return int(client.query("SELECT count() FROM spans")[0][0])


def store_bytes(client: ClickHouseClient) -> int | None:
    """What the database takes on ClickHouse's disks (active parts, compressed); None when this user may
    not read system.parts."""
    try:
        found = client.query("SELECT sum(bytes_on_disk) FROM system.parts WHERE database = {db:String} AND active",
                             {"db": client.database})
    except ClickHouseError:  # a user without access to system tables: the footer leaves the size out
        return None
    return int(found[0][0]) if found else None


def known_values_rows(client: ClickHouseClient, now_s: float, tool_window_s: float = 86400,
                      limit: int = 200) -> Rows:
    """store.dashboards.known_values_queries' rows: each filter field's values, for completion."""
    names = list(KNOWN_VALUE_COLUMNS)
    arrays = ", ".join(f"groupUniqArrayIf({int(limit)})({identifier(c)}, {identifier(c)} != '')"
                       for c in KNOWN_VALUE_COLUMNS.values())
    found = client.query(f"SELECT {arrays} FROM rollups")
    rows: Rows = {name: [(v,) for v in sorted(values)] for name, values in zip(names, found[0] if found else [])}
    for name in names:
        rows.setdefault(name, [])
    tools = client.query(
        "SELECT DISTINCT tool_name FROM spans WHERE kind = 'tool' AND start_ns >= {since:Int64} AND tool_name IS NOT "
        "NULL AND tool_name != '' LIMIT {limit:UInt32}", {"since": int((now_s - tool_window_s) * NS), "limit": limit})
    rows["tool"] = [(row[0],) for row in tools]
    return rows


class NotOnClickHouse(NotInThisStore):
    """A view whose data the ClickHouse store does not hold (yet): the message says which, in one line."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: not available on a ClickHouse store yet")
