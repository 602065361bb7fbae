"""Trends (screen 7): one golden signal per time bucket, split by a dimension, as top-N series.

One query per refresh reads the window's per-dimension rollup rows (or `tool_rollups` for tools),
selecting only the chosen metric's counters and histogram. Series are ranked over the whole window
from the counters alone, so only the drawn series' histograms are decoded. Percentile and ratio
metrics rank by calls (a 100 % error rate over 2 calls is not a top series); rates rank by their own total.

Per-dimension rows exist at res 60 and 3600 only (the 10 s rows are totals), so a series is never
finer than a minute. Every builder takes an explicit `now_s`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from store import histogram
from store.dashboards import Query, resolution_for
from store.queries import GROUP_COLUMNS, GroupStats, rollup_ranges
from store.writer import ROLLUP_COUNTERS

NS = 1_000_000_000
# The dimensions a trend can be split by: rollups' dims columns, plus tools (tool_rollups).
DIMENSIONS = ("model", "feature", "tenant", "prompt", "provider", "service", "variant", "tool")
TOOL_COLUMNS = ("calls", "errors", "duration_ns")  # tool_rollups' counters
MIN_RESOLUTION_S = 60  # per-dimension rollups start at a minute


@dataclass(frozen=True, slots=True)
class Metric:
    """A golden signal as the rollups compute it, per bucket and over a window.

    kind "quantile": `q` of the `hist` histogram, seconds (None where a bucket has no samples);
    "rate": the `numerator` counters summed, × `scale`, per `per_s` seconds of the bucket;
    "ratio": `numerator` / `denominator` × `scale` (None where the denominator is 0)."""

    name: str
    label: str
    kind: str
    unit: str  # how the TUI formats it: "s" "/s" "/min" "$/h" "ratio" "tok/s"
    numerator: tuple[str, ...] = ()
    denominator: tuple[str, ...] = ()
    hist: str | None = None
    q: float = 0.0
    per_s: float = 1.0
    scale: float = 1.0
    # The same signal over tool_rollups as (numerator, denominator) column names; None: a tool span
    # does not carry it (cost, tokens, TTFT), and the screen says so instead of drawing zeros.
    tool: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    # Cost: a call no price row matched adds 0 to cost_nusd. Its series counts such calls, so that
    # a model with only unpriced calls reads "unpriced", never $0 (design §2 rule 4).
    counts_unpriced: bool = False

    @property
    def ranks_by_calls(self) -> bool:
        return self.kind != "rate"


_ERRORS = ("errors_api", "errors_validation", "errors_guardrail")
METRICS: tuple[Metric, ...] = (
    Metric("latency_p50", "latency p50", "quantile", "s", hist="hist_latency", q=0.50, tool=((), ())),
    Metric("latency_p95", "latency p95", "quantile", "s", hist="hist_latency", q=0.95, tool=((), ())),
    Metric("latency_p99", "latency p99", "quantile", "s", hist="hist_latency", q=0.99, tool=((), ())),
    Metric("ttft_p50", "TTFT p50", "quantile", "s", hist="hist_ttft", q=0.50),
    Metric("ttft_p95", "TTFT p95", "quantile", "s", hist="hist_ttft", q=0.95),
    Metric("tpot_p95", "TPOT p95", "quantile", "s", hist="hist_tpot", q=0.95),
    Metric("calls", "calls/s", "rate", "/s", numerator=("calls",), tool=(("calls",), ())),
    Metric("error_rate", "error rate", "ratio", "ratio", numerator=_ERRORS, denominator=("calls",),
           tool=(("errors",), ("calls",))),
    Metric("errors_api", "API errors/min", "rate", "/min", numerator=("errors_api",), per_s=60,
           tool=(("errors",), ())),
    Metric("rate_limited", "429s/min", "rate", "/min", numerator=("err_rate_limit",), per_s=60),
    Metric("errors_validation", "validation errors/min", "rate", "/min", numerator=("errors_validation",), per_s=60),
    Metric("errors_guardrail", "guardrail errors/min", "rate", "/min", numerator=("errors_guardrail",), per_s=60),
    Metric("refusal_rate", "refusal rate", "ratio", "ratio", numerator=("refusals",), denominator=("calls",)),
    Metric("cost", "cost $/h", "rate", "$/h", numerator=("cost_nusd",), per_s=3600, scale=1e-9,
           counts_unpriced=True),
    Metric("tokens", "tokens/s", "rate", "tok/s", numerator=("input_tokens", "output_tokens")),
    Metric("cache_hit", "cache hit rate", "ratio", "ratio", numerator=("cache_read_tokens",),
           denominator=("input_tokens",)),
    Metric("decode", "decode tok/s", "ratio", "tok/s", numerator=("decode_tokens",), denominator=("decode_ns",),
           scale=1e9),
)
METRIC = {m.name: m for m in METRICS}


@dataclass(slots=True)
class Series:
    key: tuple[str | None, ...]  # the dimension's columns (GROUP_COLUMNS[by]; (tool,) for tools); None: unset
    values: list[float | None]  # one per Trends.times; None: nothing to compute in that bucket (a gap)
    value: float | None  # over the whole window: the merged histogram's quantile, the mean rate, the ratio
    calls: int
    others: bool = False  # the sum of every series not drawn
    unpriced: int = 0  # calls no price row matched (cost only): their cost is unknown, not 0

    @property
    def all_unpriced(self) -> bool:
        return bool(self.calls) and self.unpriced == self.calls


@dataclass(slots=True)
class Trends:
    metric: Metric
    by: str
    window_s: float
    now_s: float
    resolution_s: int
    times: list[float]  # bucket starts
    series: list[Series]  # ranked, the top N (then "others" when asked)
    series_total: int  # how many series had data in the window
    supported: bool = True  # False: tool spans do not carry this metric
    variants: list[GroupStats] = field(default_factory=list)  # by == "variant": each variant over the window


def resolution(window_s: float) -> int:
    return max(MIN_RESOLUTION_S, resolution_for(window_s))


def _first_bucket(window_s: float, now_s: float, res: int) -> int:
    start = int(now_s - window_s)
    return start - start % res


def _columns(metric: Metric, tools: bool) -> tuple[list[str], str | None]:
    """The counter columns to select (calls first: the ranking) and the histogram, if any."""
    if tools:
        assert metric.tool is not None
        numerator, denominator = metric.tool
        hist = metric.hist and "hist_latency"
    else:
        numerator, denominator, hist = metric.numerator, metric.denominator, metric.hist
    columns = ["calls", *(c for c in (*numerator, *denominator) if c != "calls")]
    if metric.counts_unpriced and not tools:
        columns.append("unpriced_calls")
    return columns, hist


def trends_queries(metric_name: str, by: str, window_s: float, now_s: float) -> dict[str, Query]:
    """The window's rows for one metric split by one dimension; with by="variant" also each variant's
    figures over the window (the two-variant comparison)."""
    metric = METRIC[metric_name]
    if by not in DIMENSIONS:
        raise ValueError(f"cannot split trends by {by!r}: choose from {', '.join(DIMENSIONS)}")
    res = resolution(window_s)
    params = (res, _first_bucket(window_s, now_s, res), int(now_s))
    if by == "tool":
        if metric.tool is None:
            return {}
        columns, hist = _columns(metric, tools=True)
        select = ", ".join([*columns, *([hist] if hist else [])])
        return {"rows": Query(f"SELECT bucket, tool, {select} FROM tool_rollups "
                              "WHERE res = ? AND bucket >= ? AND bucket <= ?", params)}
    columns, hist = _columns(metric, tools=False)
    dims = ", ".join(f"d.{c}" for c in GROUP_COLUMNS[by])
    # One row per bucket and series, not per bucket and dimension set (~100 of them): SQLite sums the
    # counters and concatenates the histogram's blobs (a valid encoding: decoding adds repeated buckets).
    select = ", ".join([*(f"sum(r.{c})" for c in columns), *([_concat(f"r.{hist}")] if hist else [])])
    queries = {"rows": Query(
        f"SELECT r.bucket, {dims}, {select} FROM rollups r JOIN dims d ON d.id = r.dims_id "
        f"WHERE r.res = ? AND r.bucket >= ? AND r.bucket <= ? AND r.dims_id != 0 GROUP BY r.bucket, {dims}", params)}
    if by == "variant":
        queries["variants"] = variants_query(window_s, now_s)
    return queries


_VARIANT_HISTS = ("hist_latency", "hist_ttft")  # what the comparison shows (p50/p95, TTFT p95)


def _concat(blob_column: str) -> str:
    """A histogram column's blobs over a group's rows, as one blob (pairs of bucket and count)."""
    return f"CAST(group_concat({blob_column}, x'') AS BLOB)"


def variants_query(window_s: float, now_s: float) -> Query:
    """Each variant's figures over the window, one row per variant summed in SQL (hour rows where
    whole hours fit): the counters and the two histograms the comparison needs. Rows without a
    variant are left out in SQL: most traffic is in no experiment, and decoding its histograms was
    most of a refresh."""
    ranges = rollup_ranges(int(now_s - window_s), int(now_s))
    window_sql = " OR ".join("(r.res = ? AND r.bucket >= ? AND r.bucket < ?)" for _ in ranges)
    return Query(
        f"SELECT d.variant, {', '.join(f'sum(r.{c})' for c in ROLLUP_COUNTERS)}, "
        f"{', '.join(_concat('r.' + h) for h in _VARIANT_HISTS)} FROM rollups r JOIN dims d ON d.id = r.dims_id "
        f"WHERE ({window_sql}) AND d.variant != '' GROUP BY d.variant", tuple(x for r in ranges for x in r))


def parse_variants(rows: list[tuple]) -> list[GroupStats]:
    """One GroupStats per variant (key {"variant": name}), most calls first."""
    groups: dict[str, GroupStats] = {}
    n = len(ROLLUP_COUNTERS)
    for row in rows:
        group = groups.get(row[0])
        if group is None:
            group = groups[row[0]] = GroupStats(key={"variant": row[0]})
        group.add_row(row[1:1 + n], row[1 + n:], _VARIANT_HISTS)
    result = [g for g in groups.values() if g["calls"]]
    result.sort(key=lambda g: (-g["calls"], str(g.key["variant"])))
    return result


class _Acc:
    """One series' rows: counters per bucket and over the window; histogram blobs kept undecoded."""

    __slots__ = ("buckets", "totals", "blobs")

    def __init__(self, n: int) -> None:
        self.buckets: dict[int, list[int]] = {}
        self.totals = [0] * n
        self.blobs: list[tuple[int, bytes]] = []


def _value(metric: Metric, counters: Sequence[int], index: dict[str, int], hist: dict[int, int] | None,
           seconds: float, tools: bool) -> float | None:
    if metric.kind == "quantile":
        q = histogram.quantiles(hist or {}, (metric.q,))[0]
        return None if q is None else q / 1e6
    numerator, denominator = metric.tool if tools and metric.tool else (metric.numerator, metric.denominator)
    top = sum(counters[index[c]] for c in numerator) * metric.scale
    if metric.kind == "rate":
        return top * metric.per_s / max(1.0, seconds)
    bottom = sum(counters[index[c]] for c in denominator)
    return top / bottom if bottom else None


def parse_trends(metric_name: str, by: str, window_s: float, now_s: float, rows: dict[str, list[tuple]],
                 top_n: int = 8, others: bool = False) -> Trends:
    metric = METRIC[metric_name]
    tools = by == "tool"
    res = resolution(window_s)
    first = _first_bucket(window_s, now_s, res)
    times = [float(t) for t in range(first, int(now_s) + 1, res)]
    variants = parse_variants(rows["variants"]) if "variants" in rows else []
    if tools and metric.tool is None:
        return Trends(metric, by, window_s, now_s, res, times, [], 0, supported=False)
    columns, hist = _columns(metric, tools)
    index = {c: i for i, c in enumerate(columns)}
    n_key = 1 if tools else len(GROUP_COLUMNS[by])
    n = len(columns)
    accs: dict[tuple, _Acc] = {}
    earliest = None
    for row in rows.get("rows", []):
        bucket = row[0]
        key = tuple(v or None for v in row[1:1 + n_key])
        counters = row[1 + n_key:1 + n_key + n]
        acc = accs.get(key)
        if acc is None:
            acc = accs[key] = _Acc(n)
        into = acc.buckets.get(bucket)
        if into is None:
            into = acc.buckets[bucket] = [0] * n
        for i, v in enumerate(counters):
            into[i] += v
            acc.totals[i] += v
        if hist is not None:
            blob = row[1 + n_key + n]
            if blob:
                acc.blobs.append((bucket, blob))
        if earliest is None or bucket < earliest:
            earliest = bucket
    # A series can net to nothing: its calls moved to another dims set when the trace's root arrived.
    live = {k: a for k, a in accs.items() if any(a.totals) or a.blobs}

    def rank(item: tuple[tuple, _Acc]) -> tuple:
        key, acc = item
        if metric.ranks_by_calls:
            weight = float(acc.totals[0])
        else:
            weight = float(_value(metric, acc.totals, index, None, 1.0, tools) or 0.0)
        return (-weight, -acc.totals[0], tuple(str(v or "") for v in key))

    ranked = sorted(live.items(), key=rank)
    drawn, rest = ranked[:top_n], ranked[top_n:]
    elapsed = max(1.0, now_s - max(first, earliest if earliest is not None else first))
    series = [_series(metric, key, [acc], times, res, now_s, elapsed, index, hist is not None, tools)
              for key, acc in drawn]
    if others and rest:
        series.append(_series(metric, (), [acc for _, acc in rest], times, res, now_s, elapsed, index,
                              hist is not None, tools, others=True))
    return Trends(metric, by, window_s, now_s, res, times, series, len(live), variants=variants)


def _series(metric: Metric, key: tuple, accs: list[_Acc], times: list[float], res: int, now_s: float,
            elapsed: float, index: dict[str, int], has_hist: bool, tools: bool, others: bool = False) -> Series:
    n = len(index)
    by_bucket: dict[int, list[int]] = {}
    totals = [0] * n
    for acc in accs:
        for bucket, counters in acc.buckets.items():
            into = by_bucket.setdefault(bucket, [0] * n)
            for i, v in enumerate(counters):
                into[i] += v
        for i, v in enumerate(acc.totals):
            totals[i] += v
    hists: dict[int, dict[int, int]] = {}
    merged: dict[int, int] = {}
    if has_hist:
        for acc in accs:
            for bucket, blob in acc.blobs:
                histogram.decode_into(blob, hists.setdefault(bucket, {}))
        # The window's histogram from the buckets' (each blob decoded once: decoding is the cost).
        for counts in hists.values():
            for b, c in counts.items():
                merged[b] = merged.get(b, 0) + c
    values: list[float | None] = []
    for start in times:
        bucket = int(start)
        found = by_bucket.get(bucket)
        seconds = min(res, now_s - bucket)  # the newest bucket is still filling: its rate is over its part
        if found is None and bucket not in hists:
            values.append(0.0 if metric.kind == "rate" else None)
        else:
            values.append(_value(metric, found or [0] * n, index, hists.get(bucket), seconds, tools))
    value = _value(metric, totals, index, merged, elapsed, tools)
    unpriced = totals[index["unpriced_calls"]] if "unpriced_calls" in index else 0
    series = Series(key, values, value, totals[0], others=others, unpriced=unpriced)
    if series.all_unpriced:  # nothing known to draw: a gap, not a line along $0
        series.values = [None] * len(values)
        series.value = None
    return series
