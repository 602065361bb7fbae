"""Drift: how this window's calls compare with the 7 days before it, from rollups (never raw spans).

What is compared:
- token lengths per call (input, output) — the log-bucketed histograms `rollups.hist_input_tokens` /
  `hist_output_tokens`, judged by the population stability index (PSI);
- the refusal rate (`rollups.refusals` / calls) and the failed-structured-output rate
  (`errors_validation` / calls), per bucket over the window and over the baseline;
- evaluation scores (`gen_ai.evaluation.result` logs): the mean per bucket per evaluation name, read
  on the partial index `logs_evaluations`.

The baseline is the 7 days that end where the window starts, not the same window on each of the
previous 7 days: token lengths follow the prompt and the task, not the time of day, and the
contiguous week holds every call of it (the "same hour" alternative keeps a seventh or less of them
for a 1 h window, so its PSI is several times noisier) in ~170 hourly rows plus minute rows at
its two ends.

PSI = Σ (a − b)·ln(a / b) over bins, a and b the window's and the baseline's shares. The bins are the
baseline's deciles, cut on the histogram's fine buckets (a 4 % wide fine bucket would give hundreds
of sparse bins, and PSI grows with the bin count under pure sampling noise). Each bin gets half a
call on both sides (additive smoothing): a fixed epsilon like 1e-4 makes one empty bin worth 0.3–0.7
on its own at a few hundred calls. Under no change, PSI ≈ (bins − 1)·(1/n + 1/m) (a χ² with
bins − 1 degrees of freedom over n): 0.045 at 200 calls against a large baseline, with a standard
deviation of 0.02, so the usual 0.25 threshold sits ten deviations away; below `min_calls` there is
no verdict.
"""

from __future__ import annotations

import bisect
import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from store import histogram
from store.dashboards import Query, resolution_for
from store.queries import range_rows, rollup_ranges, total_rows

NS = 1_000_000_000
WEEK_S = 7 * 86400
BASELINE_S = WEEK_S
PSI_BINS = 10
SMOOTHING = 0.5  # calls added to every bin on both sides (see the module docstring)
PSI_MOVING = 0.1  # the customary "some change" mark: below it a distribution is stable
PSI_SHIFTED = 0.25  # the customary "shifted" mark: the drift rule's default threshold
MIN_CALLS = 200  # calls in the window and in the baseline before a verdict; PSI noise is ~(bins-1)/calls
DISTRIBUTIONS = ("input_tokens", "output_tokens")  # signals judged by PSI; rollups.hist_<signal>
SIGNAL_WORDS = {"input_tokens": "input tokens per call", "output_tokens": "output tokens per call"}
MAX_EVAL_NAMES = 4  # the most frequent evaluations get a line; the rest would be unreadable


@dataclass(frozen=True, slots=True)
class Scope:
    """All calls (None, None: the per-bucket total rows), or one feature and/or one model."""

    feature: str | None = None
    model: str | None = None

    @property
    def total(self) -> bool:
        return self.feature is None and self.model is None

    def describe(self) -> str:
        parts = [f"feature={self.feature}" if self.feature is not None else "",
                 f"model={self.model}" if self.model is not None else ""]
        return " ".join(p for p in parts if p) or "all"


ALL = Scope()


# --- PSI ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bin:
    """Calls with lo < tokens ≤ hi (lo None: from 0; hi None: no upper bound)."""

    lo: int | None
    hi: int | None
    current: int
    baseline: int


@dataclass(frozen=True, slots=True)
class Psi:
    value: float | None  # None: too few calls in the window or the baseline to judge
    bins: tuple[Bin, ...]
    current_calls: int
    baseline_calls: int

    def shares(self) -> list[tuple[float, float]]:
        """(window share, baseline share) per bin, unsmoothed (what the panel draws)."""
        n, m = self.current_calls, self.baseline_calls
        return [(b.current / n if n else 0.0, b.baseline / m if m else 0.0) for b in self.bins]

    def verdict(self, threshold: float) -> str:
        if self.value is None:
            return "too few calls"
        if self.value >= threshold:
            return "shifted"
        return "moving" if self.value >= min(PSI_MOVING, threshold / 2) else "stable"

    def most_gained(self) -> Bin | None:
        """The bin whose share grew most: where an example call of the shift lives."""
        if not self.bins or not self.current_calls or not self.baseline_calls:
            return None
        shares = self.shares()
        best = max(range(len(self.bins)), key=lambda i: shares[i][0] - shares[i][1])
        return self.bins[best]


def bucket_upper_tokens(bucket: int) -> int:
    """The largest whole token count in a fine histogram bucket: bucket i holds (γ^(i-1), γ^i]."""
    if bucket <= 0:
        return 1
    return math.floor(histogram.GAMMA ** bucket + 1e-9)


def decile_edges(baseline: Mapping[int, int], bins: int = PSI_BINS) -> list[int]:
    """Fine buckets closing each bin but the last (which is open above), cut at the baseline's
    quantiles 1/bins … (bins−1)/bins; a bucket heavier than a bin closes one bin, not several."""
    items = sorted((b, c) for b, c in baseline.items() if c > 0)
    total = sum(c for _, c in items)
    if not total:
        return []
    edges: list[int] = []
    seen = 0
    step = 1
    for bucket, count in items[:-1]:  # the top bucket closes nothing: the last bin holds it
        seen += count
        if seen * bins >= step * total:
            edges.append(bucket)
            while step < bins and seen * bins >= step * total:
                step += 1
    return edges


def binned(counts: Mapping[int, int], edges: list[int]) -> list[int]:
    out = [0] * (len(edges) + 1)
    for bucket, count in counts.items():
        if count > 0:
            out[bisect.bisect_left(edges, bucket)] += count
    return out


def psi_value(current: list[int], baseline: list[int], smoothing: float = SMOOTHING) -> float:
    n = sum(current) + smoothing * len(current)
    m = sum(baseline) + smoothing * len(baseline)
    value = 0.0
    for c, b in zip(current, baseline):
        a_share, b_share = (c + smoothing) / n, (b + smoothing) / m
        value += (a_share - b_share) * math.log(a_share / b_share)
    return value


def psi(current: Mapping[int, int], baseline: Mapping[int, int], min_calls: int = 1,
        bins: int = PSI_BINS) -> Psi:
    """PSI of `current` against `baseline` (fine-bucket histograms), on the baseline's deciles."""
    edges = decile_edges(baseline, bins)
    cur, base = binned(current, edges), binned(baseline, edges)
    bounds = [None, *(bucket_upper_tokens(e) for e in edges), None]
    result_bins = tuple(Bin(bounds[i], bounds[i + 1], cur[i], base[i]) for i in range(len(cur)))
    n, m = sum(cur), sum(base)
    value = psi_value(cur, base) if n >= max(1, min_calls) and m >= max(1, min_calls) else None
    return Psi(value, result_bins, n, m)


# --- windows and queries --------------------------------------------------------------------------


def windows(window_s: float, now_s: float) -> tuple[int, int, int]:
    """(baseline start, window start, now): the window starts on a minute (rollups are minute rows at
    the finest), and the baseline is the week before it."""
    start = int(now_s - window_s)
    start -= start % 60
    return start - BASELINE_S, start, int(now_s)


def _period_ranges(start_s: int, end_s: int, exclusive_end: bool) -> list[tuple[int, int, int]]:
    # rollup_ranges covers [start, end] by whole minutes; a baseline ends where the window starts.
    return rollup_ranges(start_s, end_s - 1 if exclusive_end else end_s)


def _scoped_rows(scope: Scope, ranges: Sequence[tuple[int, int, int]]) -> tuple[str, str, tuple]:
    """(join, condition, params): the rollup rows `r` of these ranges (rollup_ranges') in a scope. All
    traffic is the total rows (dims_id 0), a seek each (total_rows); a feature or a model, the rows of
    its dimension sets."""
    if scope.total:
        return ("", *total_rows(ranges))
    by_range, range_params = range_rows(ranges)
    conditions = [by_range]
    params: list[Any] = list(range_params)
    if scope.feature is not None:
        conditions.append("d.feature = ?")
        params.append(scope.feature)
    if scope.model is not None:
        conditions.append("d.model = ?")
        params.append(scope.model)
    return " JOIN dims d ON d.id = r.dims_id", " AND ".join(conditions), tuple(params)


_PERIOD_COLUMNS = "sum(r.calls), sum(r.refusals), sum(r.errors_validation)"


def period_queries(window_s: float, now_s: float, scope: Scope = ALL,
                   signals: tuple[str, ...] = DISTRIBUTIONS) -> dict[str, Query]:
    """The window's and the baseline's totals and token histograms, one row each (decoded by
    parse_period): SQLite sums the counters and concatenates each histogram's blobs, which is one
    valid encoding (decoding adds repeated buckets)."""
    base_start, start, end = windows(window_s, now_s)
    hists = ", ".join(_concat(f"r.hist_{s}") for s in signals) or "NULL"
    queries = {}
    for name, (lo, hi, exclusive) in {"current": (start, end, False), "baseline": (base_start, start, True)}.items():
        join, where, params = _scoped_rows(scope, _period_ranges(lo, hi, exclusive))
        queries[name] = Query(f"SELECT {_SUMMED_PERIOD_COLUMNS}, {hists} FROM rollups r{join} WHERE {where}", params)
    return queries


# coalesce: an aggregate over no rows is one row of NULLs, and parse_period adds them up.
_SUMMED_PERIOD_COLUMNS = ", ".join(f"coalesce(sum(r.{c}), 0)" for c in ("calls", "refusals", "errors_validation"))


def _concat(blob_column: str) -> str:
    """The blobs of a histogram column over the rows of a group, concatenated: reading a week of
    rollups row by row cost ~10 µs a row in Python, one row per group costs the decode only."""
    return f"CAST(group_concat({blob_column}, x'') AS BLOB)"


@dataclass(slots=True)
class Period:
    calls: int = 0
    refusals: int = 0
    validation: int = 0
    hists: dict[str, dict[int, int]] = field(default_factory=dict)

    def rate(self, name: str) -> float | None:
        return getattr(self, name) / self.calls if self.calls else None


def parse_period(rows: list[tuple], signals: tuple[str, ...] = DISTRIBUTIONS) -> Period:
    period = Period(hists={s: {} for s in signals})
    for row in rows:
        period.calls += row[0]
        period.refusals += row[1]
        period.validation += row[2]
        for signal, blob in zip(signals, row[3:]):
            histogram.decode_into(blob, period.hists[signal])
    return period


def series_query(window_s: float, now_s: float, scope: Scope = ALL) -> Query:
    """Calls, refusals and failed validations per bucket of the window (the rate chart)."""
    res = resolution_for(window_s)
    start = int(now_s - window_s)
    first = start - start % res
    if res == 10 and not scope.total:
        res = 60  # 10 s rows are kept for the total only
        first = start - start % res
    join, where, params = _scoped_rows(scope, [(res, first, int(now_s) + 1)])
    return Query(f"SELECT r.bucket, {_PERIOD_COLUMNS} FROM rollups r{join} WHERE {where} GROUP BY r.bucket "
                 f"ORDER BY r.bucket", params)


def evaluations_query(start_ns: int, end_ns: int, res_s: int) -> Query:
    """Mean score and count per evaluation name per bucket, on the partial index of scored logs."""
    width = res_s * NS
    return Query(
        "SELECT eval_name, time_ns / ? * ?, avg(eval_score), count(*) FROM logs INDEXED BY logs_evaluations "
        "WHERE eval_score IS NOT NULL AND eval_name IS NOT NULL AND time_ns >= ? AND time_ns < ? "
        "GROUP BY eval_name, time_ns / ?", (width, res_s, start_ns, end_ns, width))


def evaluation_baseline_query(start_ns: int, end_ns: int) -> Query:
    return Query(
        "SELECT eval_name, avg(eval_score), count(*) FROM logs INDEXED BY logs_evaluations "
        "WHERE eval_score IS NOT NULL AND eval_name IS NOT NULL AND time_ns >= ? AND time_ns < ? GROUP BY eval_name",
        (start_ns, end_ns))


def drift_queries(window_s: float, now_s: float, scope: Scope = ALL, eval_baseline: bool = True) -> dict[str, Query]:
    """Everything the drift panel shows, for one snapshot (StoreReader._snapshot). `eval_baseline`
    False leaves out the week's evaluation means: that query reads every scored log of the week
    (40 ms at 100k of them) and its answer moves slowly, so the panel keeps it for minutes."""
    base_start, start, end = windows(window_s, now_s)
    res = resolution_for(window_s)
    if res == 10 and not scope.total:
        res = 60
    queries = period_queries(window_s, now_s, scope)
    queries["series"] = series_query(window_s, now_s, scope)
    # Evaluations are logs, not rollups: they carry no feature or model, so they are never scoped.
    queries["evals"] = evaluations_query(int(now_s - window_s) // res * res * NS, (end + 1) * NS, res)
    if eval_baseline:
        queries["evals_baseline"] = evaluation_baseline_query(base_start * NS, start * NS)
    return queries


# --- the panel's data -----------------------------------------------------------------------------


@dataclass(slots=True)
class RatePoint:
    start_s: int
    calls: int
    refusals: int
    validation: int


@dataclass(slots=True)
class EvalSeries:
    name: str
    points: dict[int, tuple[float, int]]  # bucket start → (mean score, count)
    baseline_mean: float | None
    baseline_count: int

    @property
    def count(self) -> int:
        return sum(n for _, n in self.points.values())

    @property
    def mean(self) -> float | None:
        n = self.count
        return sum(m * c for m, c in self.points.values()) / n if n else None


@dataclass(slots=True)
class Drift:
    window_s: float
    now_s: float
    resolution_s: int
    scope: Scope
    current: Period
    baseline: Period
    distributions: dict[str, Psi]
    series: list[RatePoint]
    evals: list[EvalSeries]
    eval_baseline: dict[str, tuple[float, int]]  # name → (mean, count) over the baseline week

    @property
    def times(self) -> list[float]:
        """Every bucket start of the window (the charts' x axis; empty buckets included)."""
        res = self.resolution_s
        first = int(self.now_s - self.window_s) // res * res
        return [float(t) for t in range(first, int(self.now_s) + 1, res)]

    def rate_series(self, name: str) -> list[float | None]:
        """Per bucket, `name` (refusals | validation) / calls; None where a bucket had no call."""
        by_start = {p.start_s: p for p in self.series}
        out: list[float | None] = []
        for t in self.times:
            point = by_start.get(int(t))
            out.append(getattr(point, name) / point.calls if point is not None and point.calls else None)
        return out

    def eval_series(self, series: EvalSeries) -> list[float | None]:
        return [series.points[int(t)][0] if int(t) in series.points else None for t in self.times]


def parse_drift(window_s: float, now_s: float, rows: dict[str, list[tuple]], scope: Scope = ALL,
                min_calls: int = 1, eval_baseline: dict[str, tuple[float, int]] | None = None) -> Drift:
    """`eval_baseline`: the week's evaluation means kept from an earlier read, when `rows` has none."""
    res = resolution_for(window_s)
    if res == 10 and not scope.total:
        res = 60
    current, baseline = parse_period(rows["current"]), parse_period(rows["baseline"])
    distributions = {s: psi(current.hists[s], baseline.hists[s], min_calls) for s in DISTRIBUTIONS}
    series = [RatePoint(b, c or 0, r or 0, v or 0) for b, c, r, v in rows["series"]]
    if "evals_baseline" in rows:
        base_evals = {name: (mean, count) for name, mean, count in rows["evals_baseline"]}
    else:
        base_evals = dict(eval_baseline or {})
    points: dict[str, dict[int, tuple[float, int]]] = {}
    for name, bucket, mean, count in rows["evals"]:
        points.setdefault(name, {})[bucket] = (mean, count)
    evals = [EvalSeries(name, p, *base_evals.get(name, (None, 0))) for name, p in points.items()]
    evals.sort(key=lambda e: (-e.count, e.name))
    return Drift(window_s, now_s, res, scope, current, baseline, distributions, series, evals[:MAX_EVAL_NAMES],
                 base_evals)


def read_drift(db: sqlite3.Connection, window_s: float, now_s: float, scope: Scope = ALL,
               min_calls: int = 1) -> Drift:
    """The panel's data on a plain sqlite3 connection (tests, the CLI); the TUI uses StoreReader.drift."""
    rows = {name: db.execute(query.sql, query.params).fetchall()
            for name, query in drift_queries(window_s, now_s, scope).items()}
    return parse_drift(window_s, now_s, rows, scope, min_calls)


# --- the rule's reads ------------------------------------------------------------------------------


def feature_periods(db: sqlite3.Connection, window_s: float, now_s: float,
                    signals: tuple[str, ...] = DISTRIBUTIONS) -> dict[str, tuple[Period, Period]]:
    """Per feature ('' for calls without one): (window, baseline). Per feature, not all traffic: a
    change in the mix of features moves the pooled distribution while no feature changed."""
    base_start, start, end = windows(window_s, now_s)
    hists = "".join(", " + _concat(f"r.hist_{s}") for s in signals)
    out: dict[str, tuple[Period, Period]] = {}
    for index, (lo, hi, exclusive) in enumerate(((start, end, False), (base_start, start, True))):
        ranges, params = range_rows(_period_ranges(lo, hi, exclusive))
        rows: dict[str, list[tuple]] = {}
        for row in db.execute(f"SELECT d.feature, {_SUMMED_PERIOD_COLUMNS}{hists} FROM rollups r "
                              f"JOIN dims d ON d.id = r.dims_id WHERE {ranges} AND r.dims_id != 0 GROUP BY d.feature",
                              params):
            rows.setdefault(row[0], []).append(row[1:])
        for feature, feature_rows in rows.items():
            pair = out.setdefault(feature, (Period(hists={s: {} for s in signals}),
                                            Period(hists={s: {} for s in signals})))
            parsed = parse_period(feature_rows, signals)
            pair[index].calls += parsed.calls
            pair[index].refusals += parsed.refusals
            pair[index].validation += parsed.validation
            for s in signals:
                for b, c in parsed.hists[s].items():
                    pair[index].hists[s][b] = pair[index].hists[s].get(b, 0) + c
    return out


_LENGTH_COLUMNS = {"input_tokens": "input_tokens", "output_tokens": "output_tokens"}


def length_example(db: sqlite3.Connection, since_ns: int, signal: str, lo: int | None, hi: int | None,
                   feature: str | None = None) -> tuple[bytes, bytes] | None:
    """The latest billed call since `since_ns` whose `signal` length lies in (lo, hi]: a call of the
    bin that grew most, for the alert to open. Walks spans_by_start newest first and stops at the
    first match (the bin is common in the window, by construction)."""
    column = _LENGTH_COLUMNS[signal]
    condition = f"billed = 1 AND {column} IS NOT NULL"
    params: list[Any] = [since_ns]
    if lo is not None:
        condition += f" AND {column} > ?"
        params.append(lo)
    if hi is not None:
        condition += f" AND {column} <= ?"
        params.append(hi)
    if feature is not None:
        condition += " AND coalesce(feature, '') = ?"
        params.append(feature)
    row = db.execute(f"SELECT trace_id, span_id FROM spans WHERE start_ns >= ? AND {condition} "
                     "ORDER BY start_ns DESC LIMIT 1", params).fetchone()
    return (row[0], row[1]) if row else None


def _tokens(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def bin_text(b: Bin, number: Callable[[int | None], str] = _tokens) -> str:
    """A bin's token range (`≤120`, `121–480`, `>4,000`); the panel passes a shorter number format."""
    if b.lo is None:
        return f"≤{number(b.hi)}"
    if b.hi is None:
        return f">{number(b.lo)}"
    return f"{number(b.lo + 1)}–{number(b.hi)}"
