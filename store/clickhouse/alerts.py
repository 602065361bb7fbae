"""The alert engine's reads (store/alerts.py, store/drift.py's length_example, the runaway rule's rows) on
the ClickHouse store, with the same names and signatures, the client in place of the SQLite connection:
the engine (llmobs_tui/alerting/engine.py) calls one module or the other and its rules stay one code.

Rollups are folded by ClickHouse per window (sum()/sumMap() … GROUP BY), spans and trace summaries read
with FINAL: nothing depends on a merge having run. Every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from store.alerts import PlannedRead
from store.clickhouse.client import ClickHouseClient, among, batches, identifier
from store.clickhouse.dashboards import traces_since
from store.clickhouse.reports import RollupRead, grouped_rollups, rollup_reads
from store.queries import GroupStats

NS = 1_000_000_000
Example = tuple[bytes, bytes | None]


class SharedRollups:
    """store.alerts.SharedRollups on ClickHouse: ClickHouse folds each window (sums the rows; no blobs to
    decode and keep between evaluations, so `decoded` stays empty). The engine names every window its
    rules will read first (prefetch_all: one query for them all); a window it did not name is one query."""

    def __init__(self, client: ClickHouseClient, hists: Collection[str] = (),
                 decoded: dict[bytes, dict[int, int]] | None = None) -> None:
        self.client = client
        self.decoded: dict[bytes, dict[int, int]] = {}
        self._cache: dict[tuple, list[GroupStats]] = {}

    def grouped(self, start_s: int, end_s: int, by: Sequence[str], where: dict[str, str] | None = None,
                hists: Sequence[str] = ()) -> list[GroupStats]:
        """What store.queries.grouped_rollups(db, start_s, end_s, by, where, hists) returns (`hists` by
        their SQLite names, hist_ttft …)."""
        names = tuple(h[5:] for h in hists)  # hist_ttft → ttft, ClickHouse's ttftMap
        key = self._key(start_s, end_s, by, where, names)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = grouped_rollups(self.client, start_s, end_s, by, names, where=where)
        return [_copy(g) for g in found]

    def prefetch(self, windows: Sequence[tuple[int, int]], where: dict[str, str] | None = None,
                 hists: Sequence[str] = ()) -> None:
        """Read these ungrouped windows (one SLO's burn windows) in one query; grouped() then finds them."""
        self.prefetch_all([(windows, (), where, hists)])

    def prefetch_all(self, reads: Sequence[PlannedRead]) -> None:
        """Read every (windows, by, where, hists) an evaluation's rules will ask grouped() for, in one query
        (reports.rollup_reads); a window read already is not read again."""
        batch: list[RollupRead] = []
        asked: set[tuple] = set(self._cache)  # read already, or asked for by an earlier read of the batch
        for windows, by, where, hists in reads:
            names = tuple(h[5:] for h in hists)
            todo = []
            for window in windows:
                key = self._key(*window, by, where, names)
                if key not in asked:
                    asked.add(key)
                    todo.append(window)
            if todo:
                batch.append(RollupRead(tuple(todo), tuple(by), tuple((where or {}).items()), names))
        for read, per_window in zip(batch, rollup_reads(self.client, batch)):
            for window, groups in zip(read.windows, per_window):
                self._cache[self._key(*window, read.by, dict(read.where), read.hists)] = groups

    @staticmethod
    def _key(start_s: int, end_s: int, by: Sequence[str], where: Mapping[str, str | None] | None,
             names: tuple[str, ...]) -> tuple:
        return start_s, end_s, tuple(by), tuple(sorted((where or {}).items())), names


def _copy(group: GroupStats) -> GroupStats:
    # Rules add into the groups they get (a week minus an hour): each caller its own.
    copy = GroupStats(key=dict(group.key), counters=list(group.counters))
    for name in ("latency", "ttft", "tpot", "cost", "tokens", "input_tokens", "output_tokens"):
        setattr(copy, name, dict(getattr(group, name)))
    return copy


def _example(client: ClickHouseClient, since_ns: int, condition: str, params: Mapping[str, Any],
             order: str = "start_ns DESC") -> Example | None:
    """(trace id, span id) of the first span since `since_ns` matching `condition` in `order` (both fixed
    SQL of this module; the values in `params`)."""
    rows = client.query(f"SELECT trace_id, span_id FROM spans FINAL WHERE start_ns >= {{since:Int64}} AND "
                        f"{condition} ORDER BY {order} LIMIT 1", {"since": since_ns, **params})
    return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None


def costliest_trace_example(client: ClickHouseClient, since_ns: int, feature: str | None = None) -> Example | None:
    # The trace list's read by cost (the by-cost copy, m007): at 100M spans, since a midnight 24 h back,
    # 85–109 ms as FINAL over trace_summaries.
    rows = traces_since(client, since_ns, [] if feature is None else [("feature", "=", feature)], False, "cost",
                        True, 1)
    if not rows:
        return None
    span = client.query("SELECT span_id FROM spans FINAL WHERE trace_id = {t:FixedString(16)} AND billed = 1 "
                        "ORDER BY cost_nusd DESC LIMIT 1", {"t": bytes(rows[0][0])})
    return bytes(rows[0][0]), bytes(span[0][0]) if span else None


def over_token_budget_example(client: ClickHouseClient, since_ns: int, feature: str, limit: int) -> Example | None:
    return _example(client, since_ns, "billed = 1 AND feature = {feature:String} AND "
                    "coalesce(input_tokens, 0) + coalesce(output_tokens, 0) > {limit:Int64}",
                    {"feature": feature, "limit": limit})


def prompt_version_example(client: ClickHouseClient, since_ns: int, feature: str, version: str) -> Example | None:
    return _example(client, since_ns, "billed = 1 AND feature = {feature:String} AND prompt_version = {v:String}",
                    {"feature": feature, "v": version}, order="cost_nusd DESC")


def feature_call_example(client: ClickHouseClient, since_ns: int, feature: str) -> Example | None:
    return _example(client, since_ns, "billed = 1 AND feature = {feature:String}", {"feature": feature})


def error_example(client: ClickHouseClient, since_ns: int, name: str, subclass: bool) -> Example | None:
    column = identifier("error_subclass" if subclass else "error_class")
    return _example(client, since_ns, f"{column} = {{name:String}}", {"name": name},
                    order="billed DESC, start_ns DESC")


def streaming_call_example(client: ClickHouseClient, since_ns: int, model: str) -> Example | None:
    return _example(client, since_ns, "(request_model = {m:String} OR response_model = {m:String}) AND "
                    "ttft_ns IS NOT NULL", {"m": model})


def slow_first_token_example(client: ClickHouseClient, since_ns: int, model: str,
                             ttft_over_ns: int) -> Example | None:
    return _example(client, since_ns, "(request_model = {m:String} OR response_model = {m:String}) AND "
                    "ttft_ns > {over:Int64}", {"m": model, "over": ttft_over_ns}, order="ttft_ns DESC")


_NO_SPAN = b"\0" * 8


def quality_events(client: ClickHouseClient, threshold: float, start_ns: int, end_ns: int,
                   evaluation: str | None = None, feature: str | None = None,
                   model: str | None = None) -> tuple[int, int]:
    """(bad, total) evaluation events in [start_ns, end_ns): bad scores under `threshold`."""
    params: dict[str, Any] = {"threshold": threshold, "lo": start_ns, "hi": end_ns}
    sql = ("SELECT count(), countIf(l.eval_score < {threshold:Float64}) FROM logs AS l FINAL "
           # The spans of the window's scored traces only: the whole table on the join's right side was
           # read (and merged, FINAL) at every evaluation.
           "LEFT JOIN (SELECT trace_id, span_id, feature, request_model, response_model FROM spans FINAL "
           "WHERE trace_id IN (SELECT trace_id FROM logs WHERE eval_score IS NOT NULL AND time_ns >= {lo:Int64} "
           "AND time_ns < {hi:Int64})) AS s "
           "ON s.trace_id = l.trace_id AND s.span_id = l.span_id "
           "WHERE l.eval_score IS NOT NULL AND l.time_ns >= {lo:Int64} AND l.time_ns < {hi:Int64}")
    if evaluation:
        sql += " AND l.eval_name = {evaluation:String}"
        params["evaluation"] = evaluation
    if feature:
        sql += " AND s.feature = {feature:String}"
        params["feature"] = feature
    if model:
        sql += " AND coalesce(s.request_model, s.response_model) = {model:String}"
        params["model"] = model
    total, bad = client.query(sql + " SETTINGS join_use_nulls = 1", params)[0]
    return int(bad), int(total)


_SLO_CONDITIONS = {
    "availability": ("billed = 1 AND error_class = 'api'", "start_ns DESC"),
    "validity": ("billed = 1 AND error_class = 'validation'", "start_ns DESC"),
    "ttft": ("billed = 1 AND ttft_ns > {bound:Int64}", "ttft_ns DESC"),
    "latency": ("billed = 1 AND duration_ns > {bound:Int64}", "duration_ns DESC"),
    "cost_per_call": ("billed = 1 AND cost_nusd > {bound:Int64}", "cost_nusd DESC"),
}


def slo_example(client: ClickHouseClient, kind: str, threshold: float, since_ns: int, feature: str | None = None,
                model: str | None = None) -> Example | None:
    """store.alerts.slo_example on ClickHouse."""
    found = _SLO_CONDITIONS.get(kind)
    if found is None:
        rows = client.query("SELECT trace_id, span_id FROM logs FINAL WHERE eval_score < {t:Float64} AND "
                            "time_ns >= {since:Int64} ORDER BY time_ns DESC LIMIT 1",
                            {"t": threshold, "since": since_ns})
        if not rows or not any(rows[0][0]):
            return None
        span = bytes(rows[0][1])
        return bytes(rows[0][0]), None if span == _NO_SPAN else span
    condition, order = found
    params: dict[str, Any] = {}
    if "{bound:" in condition:
        params["bound"] = int(threshold * 1e9)  # seconds → ns; USD → nUSD
    if feature:
        condition += " AND feature = {feature:String}"
        params["feature"] = feature
    if model:
        condition += " AND (request_model = {model:String} OR response_model = {model:String})"
        params["model"] = model
    return _example(client, since_ns, condition, params, order=order)


_LENGTH_COLUMNS = {"input_tokens": "input_tokens", "output_tokens": "output_tokens"}


def length_example(client: ClickHouseClient, since_ns: int, signal: str, lo: int | None, hi: int | None,
                   feature: str | None = None) -> Example | None:
    """store.drift.length_example on ClickHouse."""
    column = identifier(_LENGTH_COLUMNS[signal])
    condition = f"billed = 1 AND {column} IS NOT NULL"
    params: dict[str, Any] = {}
    if lo is not None:
        condition += f" AND {column} > {{lo:Int64}}"
        params["lo"] = lo
    if hi is not None:
        condition += f" AND {column} <= {{hi:Int64}}"
        params["hi"] = hi
    if feature is not None:
        condition += " AND coalesce(feature, '') = {feature:String}"
        params["feature"] = feature
    return _example(client, since_ns, condition, params)


# --- runaway agents ---------------------------------------------------------------------------------------------


def _summaries_ending_since(columns: str, condition: str = "1", ended_before_start: bool = True) -> str:
    """`columns` of the summaries of the traces with a span that started since `since`: their end is at or
    after it, and the end_minmax index (m004) skips the rest of the table; a trace whose only such span
    ends before it starts (kept, flagged invalid) is found by id instead, when `ended_before_start`
    (_any_span_ended_before_start: nearly never, and that branch costs ~14 ms at 100M spans)."""
    sql = f"SELECT {columns} FROM trace_summaries FINAL WHERE end_ns >= {{since:Int64}} AND {condition}"
    if ended_before_start:
        sql += (f" UNION ALL SELECT {columns} FROM trace_summaries FINAL WHERE end_ns < {{since:Int64}} AND "
                f"{condition} AND trace_id IN (SELECT trace_id FROM spans FINAL WHERE start_ns >= {{since:Int64}} "
                "AND end_ns < {since:Int64})")
    return sql


def _any_span_ended_before_start(client: ClickHouseClient, since_ns: int) -> bool:
    """Whether a span that started since `since_ns` ends before it: read without FINAL, so an older
    version of a span can say yes (the reads above then look once more for nothing), never no wrongly."""
    return bool(client.query("SELECT 1 FROM spans WHERE start_ns >= {since:Int64} AND end_ns < {since:Int64} "
                             "LIMIT 1", {"since": since_ns}))


def _wanted_raws(client: ClickHouseClient, tools: Sequence[tuple], wanted: Mapping[int, tuple]
                 ) -> dict[int, bytes | None]:
    """The blobs of the `wanted` rows of `tools` (the runaway read's tool rows), by row id, plain as ClickHouse
    keeps them (store.alerts.tool_arguments_text reads them with compressed=False: recompressing each into
    SQLite's zstd form for it to decompress cost 5–11 µs a span).

    Every tool span since the earliest wanted one's start is among `tools` (the window's newest), so when a
    third of those or more are wanted (a first evaluation: every candidate) they are read by that start alone:
    80 ms for 5,000 at 100M spans, against 195 by their traces' ids, which ClickHouse spends building the set
    of ids (FINAL, for each span's newest version, costs the same either way). A few are read by their traces'
    ids as a PREWHERE, within their start (the sort key starts with its hour; every version of a span has its
    start, trace id and kind, so FINAL folds the same versions from the rows the PREWHERE keeps): 21 ms for 5
    (bench.clickhouse_tui). By the ids alone, FINAL merged every span of the store for each 500 (2.6 s each at
    100M spans); by (trace id, span id) pairs, matching ten sets of 500 pairs against the key's ranges cost
    160 ms, single trace ids 100. One query, its ids in parameters of IDS_PER_QUERY each (a form field holds
    128 KiB)."""
    first = min(row[4] for row in wanted.values())
    if len(wanted) * 3 >= sum(1 for row in tools if row[4] >= first):
        sql, params = ("SELECT trace_id, span_id, raw FROM spans FINAL WHERE start_ns >= {first:Int64} "
                       "AND kind = 'tool'"), {"first": first}
    else:
        by_trace, params = among("trace_id", "FixedString(16)",
                                 list(batches(sorted({row[1] for row in wanted.values()}))))
        params["first"] = first
        sql = (f"SELECT trace_id, span_id, raw FROM spans FINAL PREWHERE {by_trace} "
               "WHERE start_ns >= {first:Int64} AND kind = 'tool'")
    blobs = {(bytes(t), bytes(s)): raw for t, s, raw in client.query(sql, params, bytes_columns=("raw",))}
    return {row_id: blobs.get((row[1], row[2])) or None for row_id, row in wanted.items()}


def runaway_rows(client: ClickHouseClient, queries: Mapping[str, Any], since_ns: int, tool_limit: int,
                 span_limit: int, wants_raw: Any) -> tuple[dict[str, list[tuple]], dict[int, bytes | None]]:
    """The runaway rule's rows (store.alerts' runaway_tool_calls_query and running_traces_query shapes) for
    the queries it asks (`queries`' names), and the blobs of the tool rows `wants_raw(rows)` lists (plain, not
    zstd as SQLite's: store.alerts.tool_arguments_text(raw, compressed=False)).

    There are no row ids: a tool row's id is its place in this read (the detector's digest cache then
    never matches across evaluations: every candidate is digested, as on a first evaluation)."""
    rows: dict[str, list[tuple]] = {}
    raws: dict[int, bytes | None] = {}
    invalid = _any_span_ended_before_start(client, since_ns) if queries else False
    if "tools" in queries:
        found = client.query(
            "SELECT s.trace_id, s.span_id, s.tool_name, s.start_ns, t.root_known, t.conversation_id "
            "FROM (SELECT trace_id, span_id, tool_name, start_ns FROM spans FINAL WHERE kind = 'tool' AND "
            "start_ns >= {since:Int64} ORDER BY start_ns DESC LIMIT {limit:UInt32}) AS s "
            f"INNER JOIN ({_summaries_ending_since('trace_id, root_known, conversation_id', '1', invalid)}) AS t "
            "ON t.trace_id = s.trace_id ORDER BY s.start_ns DESC",
            {"since": since_ns, "limit": tool_limit})
        tools = [(i, bytes(r[0]), bytes(r[1]), r[2], r[3], r[4], r[5], None) for i, r in enumerate(found, start=1)]
        rows["tools"] = tools
        wanted = {row[0]: row for row in wants_raw(tools)}
        if wanted:
            raws = _wanted_raws(client, tools, wanted)
    if "running" in queries:
        traces = client.query(
            "SELECT * FROM (" + _summaries_ending_since(
                "trace_id, root_name, llm_calls, input_tokens + output_tokens, cost_nusd, start_ns, end_ns, "
                "conversation_id", "root_known = 0", invalid) + ") WHERE trace_id IN (SELECT trace_id FROM "
            "(SELECT trace_id, start_ns FROM spans FINAL WHERE start_ns >= {since:Int64} ORDER BY start_ns DESC "
            "LIMIT {limit:UInt32}))", {"since": since_ns, "limit": span_limit})
        per_trace: dict[bytes, tuple[int, bytes]] = {}
        first = min(t[5] for t in traces) - 3600 * 10**9 if traces else 0
        # By id within the traces' time (the sort key starts with the hour; an hour's slack for a span
        # shipped before its summary was updated): has() read every span.
        for ids in batches([bytes(t[0]) for t in traces]):
            for trace_id, tool_calls, last_span in client.query(
                    "SELECT trace_id, countIf(kind = 'tool'), argMax(span_id, end_ns) FROM spans FINAL "
                    "WHERE trace_id IN {ids:Array(FixedString(16))} AND start_ns >= {first:Int64} GROUP BY trace_id",
                    {"ids": ids, "first": first}):
                per_trace[bytes(trace_id)] = (int(tool_calls), bytes(last_span))
        rows["running"] = [
            (bytes(t[0]), t[1], t[2], per_trace.get(bytes(t[0]), (0, None))[0], t[3], t[4], t[5], t[6], t[7],
             per_trace.get(bytes(t[0]), (0, None))[1])
            for t in traces]
    return rows, raws
