"""The cohorts "why slow?" compares a call or a trace with (store/cohort.py) on the ClickHouse store: each
function returns the rows store.cohort's queries return on SQLite, for its parsers.

A call's cohort folds the rollups' latency, TTFT and TPOT histograms of its model and feature, and samples
its token figures from the newest SPAN_SCAN_LIMIT spans of the window; a trace's cohort is read from the
newest TRACE_SCAN_LIMIT trace summaries. SQLite walks an index back from the window's end and stops there.
ClickHouse has no such walk under FINAL (a span or summary counts once only after its versions are
merged), so the newest rows are looked for in a span of time that grows back from the window's end
(an hour, then four times as long) until it holds more than the limit or is the whole window: a busy
store reads its last hour, a quiet one its window, and the rows are the same newest ones either way.
"""

from __future__ import annotations

from typing import Any

from store.clickhouse.client import ClickHouseClient
from store.clickhouse.dashboards import Rows, _blob, _sum_map
from store.clickhouse.reports import _window_condition
from store.clickhouse.schema import HOUR_NS
from store.cohort import NS, SPAN_SCAN_LIMIT, TRACE_SCAN_LIMIT, window_bounds

_TRACE_COLUMNS = "trace_id, duration_ns, input_tokens, output_tokens, llm_calls"
# store.cohort._SPAN_MODEL: the model a call is filed under in the rollups.
_SPAN_MODEL = "coalesce(nullIf(request_model, ''), response_model, '')"


def _newest_since(client: ClickHouseClient, table: str, first_ns: int, end_ns: int, limit: int) -> tuple[int, bool]:
    """(lo, capped): the newest `limit` live rows of `table` (FINAL) that start in [first_ns, end_ns) all
    start in [lo, end_ns); `capped`: more than `limit` rows start in the window. `table` is a fixed name."""
    span = HOUR_NS
    while True:
        lo = max(first_ns, end_ns - span)
        count = client.query(
            f"SELECT count() FROM (SELECT 1 FROM {table} FINAL WHERE start_ns >= {{lo:Int64}} "
            "AND start_ns < {end:Int64} LIMIT {n:UInt64})", {"lo": lo, "end": end_ns, "n": limit + 1})[0][0]
        if count > limit or lo == first_ns:
            return lo, count > limit
        span *= 4


def _summary(client: ClickHouseClient, trace_id: bytes, columns: str) -> list[tuple]:
    """A trace's summary (`columns`, fixed text), FINAL within the hours its rows are stored at. By id alone
    (the sort key starts with the hour) FINAL merges every summary of the retention: 320 ms at 12.5M
    summaries (chdb), where finding the rows' hours without FINAL takes 3."""
    params = {"t": trace_id, "hour": HOUR_NS}
    hours = [row[0] for row in client.query("SELECT DISTINCT intDiv(start_ns, {hour:Int64}) FROM trace_summaries "
                                            "WHERE trace_id = {t:FixedString(16)}", params)]
    if not hours:
        return []
    return client.query(f"SELECT {columns} FROM trace_summaries FINAL WHERE intDiv(start_ns, {{hour:Int64}}) "
                        "IN {hours:Array(Int64)} AND trace_id = {t:FixedString(16)}", {**params, "hours": hours})


def call_cohort_rows(client: ClickHouseClient, model: str, feature: str | None, start_s: float, end_s: float,
                     scan_limit: int = SPAN_SCAN_LIMIT) -> Rows:
    """store.cohort.call_cohort_queries' rows: the rollups folded into one row, the cohort's calls among the
    window's newest `scan_limit` spans (newest first), and whether the scan stopped short of the window."""
    first_s, last_s = window_bounds(start_s, end_s)
    params: dict[str, Any] = {"m": model, "f": feature or ""}
    condition = _window_condition(int(start_s), int(end_s), params)
    folded = client.query(
        f"SELECT sum(calls), {_sum_map('latency')}, {_sum_map('ttft')}, {_sum_map('tpot')} FROM rollups "
        f"WHERE {condition} AND model = {{m:String}} AND feature = {{f:String}}", params)
    rollups = [(int(row[0]), *(_blob(h) for h in row[1:])) for row in folded]
    lo, capped = _newest_since(client, "spans", first_s * NS, last_s * NS, scan_limit)
    spans = client.query(
        "SELECT input_tokens, output_tokens, ttft_ns, duration_ns FROM ("
        "SELECT start_ns, input_tokens, output_tokens, ttft_ns, duration_ns, billed, error_class, feature, "
        "request_model, response_model FROM spans FINAL WHERE start_ns >= {lo:Int64} AND start_ns < {end:Int64} "
        "ORDER BY start_ns DESC LIMIT {n:UInt64}) "
        "WHERE billed = 1 AND (error_class IS NULL OR error_class != 'api') AND coalesce(feature, '') = {f:String} "
        f"AND {_SPAN_MODEL} = {{m:String}} ORDER BY start_ns DESC",
        {"lo": lo, "end": last_s * NS, "n": scan_limit, "f": feature or "", "m": model})
    # store.cohort.parse_call_cohort reads "scanned" as a count past the limit.
    return {"rollups": rollups, "spans": spans, "scanned": [(scan_limit + 1 if capped else 0,)]}


def trace_cohort_rows(client: ClickHouseClient, trace_id: bytes, start_s: float, end_s: float,
                      scan_limit: int = TRACE_SCAN_LIMIT) -> Rows:
    """store.cohort.trace_cohort_queries' rows: the trace itself, the traces of its root name and feature
    among the window's newest `scan_limit` summaries, and whether the scan stopped short of the window."""
    first_s, last_s = window_bounds(start_s, end_s)
    subject = _summary(client, trace_id, f"{_TRACE_COLUMNS}, root_name, feature")
    if not subject:
        return {"subject": [], "cohort": [], "scanned": [(0,)]}
    root_name, feature = subject[0][-2:]
    lo, capped = _newest_since(client, "trace_summaries", first_s * NS, last_s * NS, scan_limit)
    cohort = client.query(
        f"SELECT {_TRACE_COLUMNS} FROM (SELECT start_ns, {_TRACE_COLUMNS}, root_name, feature FROM trace_summaries "
        "FINAL WHERE start_ns >= {lo:Int64} AND start_ns < {end:Int64} ORDER BY start_ns DESC LIMIT {n:UInt64}) "
        "WHERE isNotDistinctFrom(root_name, {r:Nullable(String)}) AND coalesce(feature, '') = {f:String} "
        "ORDER BY start_ns DESC",
        {"lo": lo, "end": last_s * NS, "n": scan_limit, "r": root_name, "f": feature or ""})
    return {"subject": [(bytes(subject[0][0]), *subject[0][1:])],
            "cohort": [(bytes(row[0]), *row[1:]) for row in cohort], "scanned": [(scan_limit + 1 if capped else 0,)]}
