"""The Overview's chart series, from the rollups (never raw spans), and the same for a past period.

The per-bucket series reuse the Overview's own bucket rows (dashboards.overview_queries): the
window's total rows (dims_id 0) at the window's resolution carry every counter and the latency /
TTFT histograms, so one read serves the cards and the charts. The past period is the same query
with `now` shifted back (by the window, or by a week) and its times shifted forward onto the
present's, so the two can be drawn over each other. Cost burn is cumulative spend since local
midnight, read from minute rollups at the ragged edges and hour rollups in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from store import histogram
from store.dashboards import Overview, Query, local_midnight, overview_queries, parse_overview
from store.queries import rollup_ranges, total_rows

WEEK_S = 7 * 86400
DAY_S = 86400
# The per-bucket quantiles the latency chart draws.
LATENCY_QUANTILES = (0.5, 0.95, 0.99)
# Error classes stacked on the calls chart, bottom up: (label, counters summed).
ERROR_LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rate limit", ("err_rate_limit",)),
    ("provider 5xx", ("err_provider",)),
    ("other api", ("err_client", "err_timeout", "err_network", "err_other")),
    ("validation", ("errors_validation",)),
    ("guardrail", ("errors_guardrail",)),
)
TOKEN_KINDS = ("uncached input", "cache read", "cache write", "output", "reasoning")


def compare_shift_s(mode: str, window_s: float) -> float | None:
    """How far back the compared period lies: `previous` = the window before this one, `week` = the
    same window a week ago; None when nothing is compared."""
    if mode == "previous":
        return float(window_s)
    if mode == "week":
        return float(WEEK_S)
    return None


@dataclass(slots=True)
class Series:
    """One value per bucket of the window (None: no calls there, so no latency to draw)."""

    times: list[float]  # bucket starts, epoch seconds, in the present's time (a past period is shifted)
    resolution_s: int
    latency: dict[float, list[float | None]]  # quantile → seconds per bucket
    ttft_p95: list[float | None]
    calls_per_s: list[float]  # every call
    ok_per_s: list[float]  # calls without an error of any class
    errors_per_s: dict[str, list[float]]  # ERROR_LAYERS label → per second
    tokens: dict[str, list[float]]  # TOKEN_KINDS → tokens per bucket


def series_from_overview(o: Overview, shift_s: float = 0.0) -> Series:
    """The per-bucket series of an Overview's window; `shift_s` moves a past period onto the present."""
    res = o.resolution_s
    first = int(o.now_s - o.window_s) // res * res
    by_start = {b.start_s: b for b in o.buckets}
    starts = list(range(first, int(o.now_s) + 1, res))
    latency: dict[float, list[float | None]] = {q: [] for q in LATENCY_QUANTILES}
    ttft_p95: list[float | None] = []
    calls_per_s: list[float] = []
    ok_per_s: list[float] = []
    errors_per_s: dict[str, list[float]] = {label: [] for label, _ in ERROR_LAYERS}
    tokens: dict[str, list[float]] = {kind: [] for kind in TOKEN_KINDS}
    for start in starts:
        bucket = by_start.get(start)
        # The present's last bucket is still filling: a rate over its elapsed part, not the whole width.
        # A past period's last bucket is whole (time went on after that `now`).
        live = not shift_s and start + res > o.now_s
        width = max(1.0, min(float(res), o.now_s - start)) if live else float(res)
        if bucket is None:
            for values in latency.values():
                values.append(None)
            ttft_p95.append(None)
            calls_per_s.append(0.0)
            ok_per_s.append(0.0)
            for values_f in errors_per_s.values():
                values_f.append(0.0)
            for values_f in tokens.values():
                values_f.append(0.0)
            continue
        for q, value in zip(LATENCY_QUANTILES, histogram.quantiles(bucket.latency, LATENCY_QUANTILES)):
            latency[q].append(None if value is None else value / 1e6)
        ttft = histogram.quantiles(bucket.ttft, (0.95,))[0]
        ttft_p95.append(None if ttft is None else ttft / 1e6)
        calls = bucket["calls"]
        failed = 0
        for label, names in ERROR_LAYERS:
            count = sum(bucket[n] for n in names)
            failed += count
            errors_per_s[label].append(count / width)
        calls_per_s.append(calls / width)
        # Validation and guardrail failures are calls that returned: the stack's top is the calls.
        ok_per_s.append(max(0, calls - failed) / width)
        inp, cread, cwrite = bucket["input_tokens"], bucket["cache_read_tokens"], bucket["cache_write_tokens"]
        out, reasoning = bucket["output_tokens"], bucket["reasoning_tokens"]
        tokens["uncached input"].append(float(max(0, inp - cread - cwrite)))
        tokens["cache read"].append(float(cread))
        tokens["cache write"].append(float(cwrite))
        tokens["output"].append(float(max(0, out - reasoning)))  # output_tokens includes reasoning
        tokens["reasoning"].append(float(reasoning))
    return Series([s + shift_s for s in starts], res, latency, ttft_p95, calls_per_s, ok_per_s, errors_per_s,
                  tokens)


# --- cost burn since local midnight ----------------------------------------------------------------


@dataclass(slots=True)
class CostBurn:
    """Cumulative spend of one day: (time, USD) points from its midnight to `now_s`."""

    midnight_s: int
    now_s: float
    times: list[float] = field(default_factory=list)
    usd: list[float] = field(default_factory=list)

    @property
    def total_usd(self) -> float:
        return self.usd[-1] if self.usd else 0.0

    def shifted(self, shift_s: float) -> CostBurn:
        return CostBurn(int(self.midnight_s + shift_s), self.now_s + shift_s, [t + shift_s for t in self.times],
                        list(self.usd))


def cost_burn_query(now_s: float) -> Query:
    """The day's cost per rollup row (total rows), minute rows at the edges, hour rows between."""
    where, params = total_rows(rollup_ranges(local_midnight(now_s), int(now_s)), alias="")
    return Query(f"SELECT res, bucket, cost_nusd FROM rollups WHERE {where} ORDER BY bucket", params)


def parse_cost_burn(now_s: float, rows: Sequence[tuple]) -> CostBurn:
    """A point at midnight ($0) and one at the end of each row's bucket (the last one at now)."""
    burn = CostBurn(local_midnight(now_s), now_s, [float(local_midnight(now_s))], [0.0])
    total = 0
    for res, bucket, cost in rows:
        total += cost or 0
        burn.times.append(float(min(bucket + res, now_s)))
        burn.usd.append(total / 1e9)
    return burn


def projection_to_midnight(burn: CostBurn, usd_per_hour: float) -> tuple[list[float], list[float]]:
    """Today so far, then the window's hourly burn until the next local midnight (the card's
    `today → proj.` figure, Overview.today_projection_usd, drawn)."""
    end = burn.midnight_s + DAY_S
    rest_h = max(0.0, (end - burn.now_s) / 3600)
    return [burn.now_s, float(end)], [burn.total_usd, burn.total_usd + usd_per_hour * rest_h]


# --- the bundle the Overview reads in one snapshot -------------------------------------------------


@dataclass(slots=True)
class Charts:
    overview: Overview
    series: Series
    cost: CostBurn
    past: Overview | None = None  # the compared period's Overview (its totals give the deltas)
    past_series: Series | None = None
    past_cost: CostBurn | None = None
    shift_s: float | None = None


def charts_queries(window_s: float, now_s: float, shift_s: float | None = None) -> dict[str, Query]:
    """The Overview's queries plus the day's cost burn, and with `shift_s` the same for the past period
    (its keys prefixed `past_`). The past's cost burn is the day before (or a week before), whatever
    the window: a day's spend is only comparable with a whole day's."""
    queries = dict(overview_queries(window_s, now_s))
    queries["cost_burn"] = cost_burn_query(now_s)
    if shift_s:
        past_now = now_s - shift_s
        past = overview_queries(window_s, past_now)
        queries["past_buckets"] = past["buckets"]
        queries["past_today"] = past["today"]
        queries["past_cost_burn"] = cost_burn_query(now_s - _day_shift(shift_s))
    return queries


def _day_shift(shift_s: float) -> float:
    """The cost burn compares whole days: a week back stays a week back, anything shorter is yesterday."""
    return float(WEEK_S) if shift_s >= WEEK_S else float(DAY_S)


def parse_charts(window_s: float, now_s: float, rows: dict[str, list[tuple]], shift_s: float | None = None) -> Charts:
    overview = parse_overview(window_s, now_s, rows)
    charts = Charts(overview, series_from_overview(overview), parse_cost_burn(now_s, rows["cost_burn"]))
    if shift_s and "past_buckets" in rows:
        past = parse_overview(window_s, now_s - shift_s,
                              {"buckets": rows["past_buckets"], "today": rows["past_today"]})
        day = _day_shift(shift_s)
        charts.past = past
        charts.past_series = series_from_overview(past, shift_s)
        charts.past_cost = parse_cost_burn(now_s - day, rows["past_cost_burn"]).shifted(day)
        charts.shift_s = shift_s
    return charts
