"""What `report`, `traces`, `show` and `export` read, on the ClickHouse store (`check`'s reads: alerts.py).

The same documents as the SQLite side (store/queries.py, store/sessions.py, store/dashboards.py): the
SQL differs, the post-processing is the SQLite side's own functions (settle_groups, report_result,
parse_tool_calls, user_report_result, build_export_request), so both backends print the same report.

Correctness never waits for a merge: rollups are folded with sum()/sumMap() … GROUP BY (signed delta
rows not merged yet cancel in the fold), spans and trace summaries are read with FINAL. Every value is a
bound parameter; the only text put into SQL is column names from fixed tables checked by `identifier`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from itertools import pairwise
from typing import Any, NamedTuple

from store.clickhouse.client import ClickHouseClient, batches, identifier
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
    TOOL_PERCENTILES,
    GroupStats,
    ToolStats,
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
_SUMS = [f"sum({identifier(c)})" for c in CH_ROLLUP_COUNTERS]
# The histograms a report prints (GroupStats.as_report): the others are not read.
REPORT_HISTOGRAMS = ("latency", "ttft")

if tuple(CH_ROLLUP_COUNTERS) != tuple(ROLLUP_COUNTERS):  # GroupStats indexes counters by SQLite's order
    raise ImportError("store.clickhouse.schema.ROLLUP_COUNTERS no longer matches store.writer.ROLLUP_COUNTERS")


def _window_condition(start_s: int, end_s: int, params: dict[str, Any], prefix: str = "") -> str:
    """rollup_ranges as a condition over (res, bucket), its bounds added to `params` (names start with
    `prefix`, so that several windows can share one query)."""
    return _ranges_condition(rollup_ranges(start_s, end_s), params, prefix)


def _merged_ranges(windows: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """The rollup rows of all these windows as few (res, lo, hi) ranges: each resolution's ranges merged
    where they overlap or touch. Nested burn windows share their recent minutes: an SLO's seven windows
    are 18 ranges, merged 4 or 5 (the same rows, a shorter condition to analyse; not measured apart)."""
    merged: list[tuple[int, int, int]] = []
    for res, lo, hi in sorted(r for start_s, end_s in windows for r in rollup_ranges(start_s, end_s)):
        if merged and merged[-1][0] == res and lo <= merged[-1][2]:
            merged[-1] = (res, merged[-1][1], max(hi, merged[-1][2]))
        else:
            merged.append((res, lo, hi))
    return merged


def _ranges_condition(ranges: Sequence[tuple[int, int, int]], params: dict[str, Any], prefix: str) -> str:
    parts = []
    for i, (res, lo, hi) in enumerate(ranges):
        res_name, lo_name, hi_name = f"{prefix}res{i}", f"{prefix}lo{i}", f"{prefix}hi{i}"
        params[res_name], params[lo_name], params[hi_name] = res, lo, hi
        parts.append(f"(res = {{{res_name}:UInt32}} AND bucket >= {{{lo_name}:Int64}} "
                     f"AND bucket < {{{hi_name}:Int64}})")
    # Parenthesized: a caller that adds `AND …` after it filters every range, not the last one.
    return f"({' OR '.join(parts)})" if parts else "0"


def _dimension_filters(where: Mapping[str, str | None] | None, params: dict[str, Any], prefix: str = "") -> str:
    filters = ""
    for i, (column, value) in enumerate((where or {}).items()):
        if column not in ROLLUP_DIMENSIONS:
            raise ValueError(f"cannot filter rollups by {column!r}")
        filters += f" AND {identifier(column)} = {{{prefix}where{i}:String}}"
        params[f"{prefix}where{i}"] = value or ""
    return filters


class RollupRead(NamedTuple):
    """One fold of the rollups: per window, the groups of `by` (store.queries.GROUP_COLUMNS names) of the
    dimension sets whose columns equal `where`'s values, with histograms `hists` (ClickHouse names)."""

    windows: tuple[tuple[int, int], ...]
    by: tuple[str, ...] = ()
    where: tuple[tuple[str, str | None], ...] = ()
    hists: tuple[str, ...] = ()


def rollup_reads(client: ClickHouseClient, reads: Sequence[RollupRead]) -> list[list[list[GroupStats]]]:
    """Each read's groups per window (settled as grouped_rollups settles them), all in one query.

    A ClickHouse query costs 5–10 ms however small its window (planning, the parts' indexes, 30
    aggregates; chdb at 1–100M spans), and an alert evaluation folds ~20 windows: one UNION ALL of a
    branch per read cost 20–25 % less than a query each at 100M spans (measured). Each branch still costs
    6–20 ms whatever its rows (3,336 for an SLO's seven windows at 100M spans), so reads of the same
    windows and groups filtered by the same columns share one branch (the SLOs of several features, one of
    them the whole service's): it groups by those columns too, as far as the filters' values (every other
    value folds into one group), and each read takes the groups its filter names (all, without one). Four
    SLOs' branches in one: 148 → 106 ms for the demo rules' whole read at 100M spans.

    A read of several windows (an SLO's burn windows) is one scan of their rows, summed per segment: the
    stretch of buckets between two consecutive window edges of a resolution, found by one
    arrayFirstIndex over the edges. Each window is a run of whole segments, added up here (a dozen rows).
    Numbering each row's windows by arrayJoin over one condition per window cost ClickHouse ~7 ms more
    to plan than to run; -If aggregates test every window's condition once per aggregate and row
    (measured 2.5× slower than one query per window)."""
    for read in reads:
        for name in read.by:
            if name not in GROUP_COLUMNS:
                raise ValueError(f"cannot group by {name!r}: choose from {', '.join(GROUP_COLUMNS)}")
        for column, _value in read.where:
            if column not in ROLLUP_DIMENSIONS:
                raise ValueError(f"cannot filter rollups by {column!r}")
    # Every branch returns every histogram any read asks for (UNION ALL needs one shape): empty where
    # none of its reads wants it, so its column is never read.
    hists = tuple(dict.fromkeys(h for read in reads for h in read.hists))
    params: dict[str, Any] = {}
    branches = []
    codes: list[tuple[int, tuple[int, ...]]] = []  # q → (its branch, the windows its rows count in)
    sources = _sources(reads)
    shared = _shared_branches(reads, skip=sources)
    filter_columns = [_filter_columns(reads, members) for members in shared]
    branch_of = {r: branch for branch, members in enumerate(shared) for r in members}
    # Per branch, the reads folded from its rows: (read, where each of its columns is in the row's key, the
    # filter as (place in the key, value)).
    derived: list[list[tuple[int, list[int], list[tuple[int, str]]]]] = [[] for _ in shared]
    for r, source in sources.items():
        dims = [c for name in reads[source].by for c in GROUP_COLUMNS[name]]
        derived[branch_of[source]].append(
            (r, [dims.index(c) for name in reads[r].by for c in GROUP_COLUMNS[name]],
             [(dims.index(c), value or "") for c, value in reads[r].where]))
    for branch, members in enumerate(shared):
        first = reads[members[0]]
        if not first.windows:
            continue
        if len(first.windows) == 1:
            q = str(len(codes))
            codes.append((branch, (0,)))
            scan = _window_condition(*first.windows[0], params, f"r{branch}_")
        else:
            q = _segment_code(first.windows, codes, branch, params, f"r{branch}s")
            scan = _ranges_condition(_merged_ranges(first.windows), params, f"r{branch}_")
        dims = [identifier(c) for name in first.by for c in GROUP_COLUMNS[name]]
        key = f"[{', '.join(f'toString({d})' for d in dims)}]" if dims else "CAST([], 'Array(String)')"
        wanted = {h for r in (*members, *(d[0] for d in derived[branch])) for h in reads[r].hists}
        maps = [f"sumMap({identifier(histogram_column(h) + '.bucket')}, {identifier(histogram_column(h) + '.count')})"
                if h in wanted else "CAST(([], []), 'Tuple(Array(UInt16), Array(Int64))')" for h in hists]
        group_by = (["q"] if len(first.windows) > 1 else []) + dims
        if len(members) == 1:
            filters = _dimension_filters(dict(first.where), params, f"r{branch}")
            filtered = "CAST([], 'Array(String)')"
        else:
            filters, filtered = _shared_filter(reads, members, filter_columns[branch], params, f"r{branch}")
            group_by.append("filtered")
        branches.append(
            f"SELECT {q} AS q, {key} AS key, {', '.join(['count()', *_SUMS, *maps])}, {filtered} AS filtered "
            f"FROM rollups WHERE ({scan}){filters}" + (f" GROUP BY {', '.join(group_by)}" if group_by else ""))
    # (read, window, key) → its group, summed over the window's segments (and, for a read without a filter
    # sharing a branch, over the filter's groups).
    found: list[list[dict[tuple, GroupStats]]] = [[{} for _ in read.windows] for read in reads]
    columns_of = [[c for name in read.by for c in GROUP_COLUMNS[name]] for read in reads]
    wanted_of = [[h in read.hists for h in hists] for read in reads]
    # Per branch, (read, the filter values it takes: None for all).
    takers = [[(r, tuple((dict(reads[r].where).get(c) or "") for c in filter_columns[branch])
                if reads[r].where and len(members) > 1 else None) for r in members]
              for branch, members in enumerate(shared)]
    for row in client.query(" UNION ALL ".join(branches), params) if branches else ():
        if not row[2]:
            continue  # an aggregate without GROUP BY over no rows
        branch, windows = codes[row[0]]
        values = tuple(row[-1])
        counters = row[3:3 + len(ROLLUP_COUNTERS)]
        maps_of_row = row[3 + len(ROLLUP_COUNTERS):-1]
        folds = [(r, tuple(value or None for value in row[1])) for r, takes in takers[branch]
                 if takes is None or takes == values]
        folds += [(r, tuple(row[1][i] or None for i in places)) for r, places, where in derived[branch]
                  if all(row[1][i] == value for i, value in where)]
        for r, group_key in folds:
            row_maps = [(name, buckets, counts) for name, wanted, (buckets, counts)
                        in zip(hists, wanted_of[r], maps_of_row) if wanted]
            for n in windows:
                group = found[r][n].get(group_key)
                if group is None:
                    group = found[r][n][group_key] = GroupStats(key=dict(zip(columns_of[r], group_key)))
                group.counters = [a + int(b) for a, b in zip(group.counters, counters)]
                for name, buckets, counts in row_maps:
                    histogram = getattr(group, name)
                    for bucket, count in zip(buckets, counts):
                        histogram[bucket] = histogram.get(bucket, 0) + count
    out = []
    for per_window in found:
        for groups in per_window:
            for group in groups.values():  # as sumMap: a bucket that nets to zero over segments is left out
                for name in hists:
                    histogram = getattr(group, name)
                    if 0 in histogram.values():
                        setattr(group, name, {b: c for b, c in histogram.items() if c})
        out.append([settle_groups(groups.values()) for groups in per_window])
    return out


def _sources(reads: Sequence[RollupRead]) -> dict[int, int]:
    """Reads folded from another read's rows (by index: read → the one it folds): a read without a filter,
    of the same windows, whose groups' columns hold the read's own and its filter's. Its rows are the read's
    rows split finer (the prompt regression rule's groups by feature and prompt give the groups by feature,
    and a feature's totals, over the same hour), so the read costs no branch of its own (6–20 ms each
    however few its rows, see rollup_reads). A source folds nobody else's rows itself."""
    def columns(read: RollupRead) -> set[str]:
        return {c for name in read.by for c in GROUP_COLUMNS[name]}

    sources: dict[int, int] = {}
    candidates = sorted((r for r, read in enumerate(reads) if read.windows and not read.where),
                        key=lambda r: -len(columns(reads[r])))
    for r, read in enumerate(reads):
        needs = columns(read) | {c for c, _value in read.where}
        source = next((s for s in candidates if s != r and s not in sources and reads[s].windows == read.windows
                       and needs <= columns(reads[s]) and (read.where or needs < columns(reads[s]))), None)
        if source is not None and r not in sources.values():
            sources[r] = source
    return sources


def _shared_branches(reads: Sequence[RollupRead], skip: Collection[int] = ()) -> list[list[int]]:
    """The reads (by index, but those in `skip`) each branch folds: those of the same windows and groups whose
    filters name the same columns, with those of them without a filter when one set of columns is named (a
    read with another set of columns has a branch of its own, as does a read without a filter otherwise)."""
    families: dict[tuple, dict[tuple[str, ...], list[int]]] = {}
    for r, read in enumerate(reads):
        if r in skip:
            continue
        families.setdefault((read.windows, read.by), {}).setdefault(tuple(sorted(c for c, _ in read.where)), []
                                                                    ).append(r)
    shared = []
    for by_columns in families.values():
        unfiltered = by_columns.pop((), [])
        if len(by_columns) == 1 and unfiltered:
            [members] = by_columns.values()
            shared.append(sorted(members + unfiltered))
            continue
        shared.extend(by_columns.values())
        if unfiltered:
            shared.append(unfiltered)
    return shared


def _filter_columns(reads: Sequence[RollupRead], members: Sequence[int]) -> tuple[str, ...]:
    return tuple(sorted({c for r in members for c, _ in reads[r].where}))


def _shared_filter(reads: Sequence[RollupRead], members: Sequence[int], columns: tuple[str, ...],
                   params: dict[str, Any], prefix: str) -> tuple[str, str]:
    """(the WHERE's filter, the `filtered` column) of a branch several reads share: the rows of the values
    their filters name, grouped by them; with a read without a filter among them, every row, the other
    values in one group (an empty array: a filter names at least one column)."""
    if not columns:
        return "", "CAST([], 'Array(String)')"
    names = [identifier(c) for c in columns]
    values = sorted({tuple(dict(reads[r].where).get(c) or "" for c in columns) for r in members if reads[r].where})
    if len(names) == 1:  # a column is no tuple
        params[f"{prefix}values"] = [value for value, in values]
        among = f"{names[0]} IN {{{prefix}values:Array(String)}}"
    else:
        params[f"{prefix}values"] = values
        among = f"({', '.join(names)}) IN {{{prefix}values:Array(Tuple({', '.join(['String'] * len(names))}))}}"
    as_text = f"[{', '.join(f'toString({n})' for n in names)}]"
    if all(reads[r].where for r in members):
        return f" AND {among}", as_text
    return "", f"if({among}, {as_text}, CAST([], 'Array(String)'))"


def _segment_code(windows: Sequence[tuple[int, int]], codes: list[tuple[int, tuple[int, ...]]], branch: int,
                  params: dict[str, Any], prefix: str) -> str:
    """The expression numbering a row of these windows by its segment (see rollup_reads), each number
    appended to `codes` with its branch and the windows that segment is part of."""
    per_window = [rollup_ranges(start_s, end_s) for start_s, end_s in windows]
    edges: dict[int, set[int]] = {}
    for ranges in per_window:
        for res, lo, hi in ranges:
            edges.setdefault(res, set()).update((lo, hi))
    cases = []
    for i, (res, values) in enumerate(sorted(edges.items())):
        ordered = sorted(values)
        base = len(codes)
        # arrayFirstIndex gives j (1-based) for the first edge above the bucket: segment j covers
        # [ordered[j - 2], ordered[j - 1]); 0 and 1 are outside every window (the WHERE leaves them out).
        codes += [(branch, ()), (branch, ())]
        for lo, hi in pairwise(ordered):
            codes.append((branch, tuple(n for n, ranges in enumerate(per_window)
                                      if any(r == res and a <= lo and hi <= b for r, a, b in ranges))))
        params[f"{prefix}res{i}"], params[f"{prefix}edges{i}"] = res, ordered
        cases.append(f"res = {{{prefix}res{i}:UInt32}}, "
                     f"{base} + arrayFirstIndex(x -> bucket < x, {{{prefix}edges{i}:Array(Int64)}})")
    codes.append((branch, ()))
    return f"multiIf({', '.join(cases)}, {len(codes) - 1})"


def grouped_rollups(client: ClickHouseClient, start_s: int, end_s: int, by: Sequence[str],
                    hists: Sequence[str] = REPORT_HISTOGRAMS,
                    where: Mapping[str, str | None] | None = None) -> list[GroupStats]:
    """store.queries.grouped_rollups on ClickHouse: rollups in [start_s, end_s] folded per group of `by`,
    of the dimension sets whose columns equal `where`'s values (None and '' alike: no value).

    The rollups table holds one row per dimension set at 60 s and 1 h (no per-bucket total rows):
    ungrouped is the sum of every row. sumMap leaves out a bucket that netted to zero, as SQLite's writer
    folds a corrected row in place (a group whose calls all moved lists nowhere:
    tests/test_clickhouse_reports.py holds both to it)."""
    read = RollupRead(((start_s, end_s),), tuple(by), tuple((where or {}).items()), tuple(hists))
    return rollup_reads(client, [read])[0][0]


def report(client: ClickHouseClient, window_s: float, by: Sequence[str], now_s: float | None = None) -> dict[str, Any]:
    start_s, now = report_window(window_s, now_s)
    return report_result(start_s, now, window_s, by, grouped_rollups(client, start_s, now, by))


def tool_report(client: ClickHouseClient, window_s: float, by: Sequence[str] = ("tool",),
                now_s: float | None = None) -> dict[str, Any]:
    """store.queries.tool_report on ClickHouse. By tool, from the calls the replicas keep (tool_calls). By
    nothing, service, feature or tenant, which a call takes from its span when the report runs (root
    inheritance may have changed them since the call was shipped), from the spans: ClickHouse has no
    recursive CTE, so the tool spans of the traces with a tool call in the window are read once and each
    call's chain (a tool span inside a tool span of the same tool is part of its call) is walked here, as
    tool_calls_query's CTE walks it."""
    for name in by:
        if name not in TOOL_GROUP_COLUMNS:
            raise ValueError(f"cannot group tool calls by {name!r}: choose from {', '.join(TOOL_GROUP_COLUMNS)}")
    start_s, now = report_window(window_s, now_s)
    lo, hi = start_s * NS, now * NS + NS - 1
    if tuple(by) == ("tool",):  # the calls the replicas keep (m006), grouped there: no chain to walk
        return report_result(start_s, now, window_s, by, tool_call_groups(client, lo, hi))
    rows = client.query(
        "SELECT trace_id, span_id, parent_span_id, tool_name, service, feature, tenant, start_ns, duration_ns, "
        "(status = 2 OR error_type IS NOT NULL) FROM spans FINAL WHERE kind = 'tool' AND trace_id IN ("
        "SELECT trace_id FROM spans FINAL WHERE kind = 'tool' AND start_ns >= {lo:Int64} AND start_ns <= {hi:Int64})",
        {"lo": lo, "hi": hi},
    )
    return report_result(start_s, now, window_s, by, parse_tool_calls(by, _tool_calls(rows, by, lo, hi)))


def tool_call_groups(client: ClickHouseClient, lo: int, hi: int) -> list[ToolStats]:
    """store.tool_rollups.parse_tool_calls's result for the calls that started in [lo, hi] ns: per tool, the
    calls, the failed ones and the percentiles of their durations that are shown (TOOL_PERCENTILES), each
    picked by ClickHouse from every duration at ToolStats.percentile_ms's nearest rank (the same Float64
    arithmetic). The durations themselves stay there: 1.8M calls a day came back in 14 MB to be unpacked and
    sorted again, two thirds of the read at 100M spans."""
    from store.tool_rollups import most_called_first

    # Ranked among the known durations (groupArray leaves NULLs out), as percentile_ms ranks durations_ns.
    ranks = ", ".join(f"if(m = 0, NULL, d[toUInt64(least(toFloat64(m), greatest(1., ceil({q!r} * m - 1e-9))))]) "
                      f"AS p{i}" for i, q in enumerate(TOOL_PERCENTILES))
    rows = client.query(
        f"SELECT unnamed, tool, n, failed, {', '.join(f'p{i}' for i in range(len(TOOL_PERCENTILES)))} FROM ("
        f"SELECT tool IS NULL AS unnamed, coalesce(tool, '') AS tool, count() AS n, sum(failed) AS failed, "
        f"arraySort(groupArray(duration_ns)) AS d, length(d) AS m, {ranks} FROM tool_calls FINAL "
        "WHERE start_ns >= {lo:Int64} AND start_ns <= {hi:Int64} GROUP BY 1, 2)", {"lo": lo, "hi": hi})
    return most_called_first([
        ToolStats(key={"tool": None if unnamed else (tool or None)}, calls=int(calls), errors=int(errors),
                  percentiles_ns={q: int(p) for q, p in zip(TOOL_PERCENTILES, percentiles) if p is not None})
        for unnamed, tool, calls, errors, *percentiles in rows])


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
    # Not FINAL: the summaries are sorted by hour first, so FINAL merged every summary of the retention
    # however few ids the range holds (260 ms at 12.5M, chdb). Each (hour, trace) key's newest row says
    # whether that row is deleted, as FINAL would (ReplacingMergeTree(updated_ns, is_deleted)); a trace
    # whose start moved has a deleted key at its old hour and a live one at its new hour.
    rows = client.query(
        "SELECT trace_id FROM (SELECT trace_id, argMax(is_deleted, updated_ns) AS gone FROM trace_summaries "
        f"WHERE trace_id >= {{low:FixedString(16)}}{upper} GROUP BY intDiv(start_ns, 3600000000000), trace_id) "
        "WHERE gone = 0 GROUP BY trace_id ORDER BY trace_id LIMIT {limit:UInt32}", params)
    return [bytes(row[0]) for row in rows]


def trace_spans(client: ClickHouseClient, trace_id: bytes) -> list[SpanRow]:
    """store.dashboards.trace_spans_query on ClickHouse. There is no row id: `id` is the span's place in
    (start, span id) order, which is what the tree sorts ties by."""
    return traces_spans(client, [trace_id])[0]


def traces_spans(client: ClickHouseClient, trace_ids: Sequence[bytes]) -> list[list[SpanRow]]:
    """trace_spans of each of these traces, in one read per 500: a lookup by trace id goes through the
    spans' bloom filter over every granule of the retention, once however many ids it holds (5 traces at
    100M spans, chdb: 116 ms one by one, 46 together)."""
    columns = [c for c in SPAN_COLUMNS_FOR_TRACE if c != "id"]
    found: dict[bytes, list[SpanRow]] = {bytes(t): [] for t in trace_ids}
    for chunk in batches(list(found)):
        for row in client.query(
                f"SELECT trace_id, {', '.join(columns)} FROM spans FINAL WHERE trace_id IN "
                "{t:Array(FixedString(16))} ORDER BY trace_id, start_ns, span_id", {"t": chunk},
                bytes_columns=("duplicate_of",)):
            spans = found[bytes(row[0])]
            spans.append(SpanRow(len(spans) + 1, *row[1:]))
    return [found[bytes(t)] for t in trace_ids]


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
    found = {}
    for chunk in batches(sorted(digests)):
        for digest, blob in client.query(
                f"SELECT digest, any(blob) FROM {identifier(table)} WHERE has({{d:Array(FixedString(16))}}, digest) "
                "GROUP BY digest", {"d": chunk}, bytes_columns=("any(blob)",)):
            found[bytes(digest)] = blob
    return found
