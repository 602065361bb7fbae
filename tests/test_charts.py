"""The Overview's chart series against SQL ground truth on a real store (real Normalizer + SpanWriter):
per-bucket calls, errors by class, tokens by kind and latency quantiles from the raw spans; the
cost burn since local midnight; the past period's overlay (shifted by the window, or by a week)."""

from __future__ import annotations

import math
import sqlite3

import pytest

from store import histogram
from store.charts import WEEK_S, charts_queries, parse_charts
from tests.tui_fixtures import FROZEN_NOW, build_store, use_utc

NS = 1_000_000_000
WINDOW = 3600


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    use_utc()
    return build_store(tmp_path_factory.mktemp("charts") / "store.db", minutes=40, traces_per_minute=6)


def run(db: sqlite3.Connection, queries) -> dict[str, list[tuple]]:
    return {name: db.execute(q.sql, q.params).fetchall() for name, q in queries.items()}


def charts_at(store, now_s, shift_s=None, window_s=WINDOW):
    db = sqlite3.connect(store)
    try:
        return parse_charts(window_s, now_s, run(db, charts_queries(window_s, now_s, shift_s)), shift_s)
    finally:
        db.close()


def billed_spans(store, start_s, end_s):
    """Billed calls from the raw spans, bucketed by start second as the rollups are."""
    db = sqlite3.connect(store)
    try:
        return db.execute(
            "SELECT start_ns, duration_ns, error_class, error_subclass, input_tokens, output_tokens, "
            "cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nusd FROM spans "
            "WHERE billed = 1 AND start_ns >= ? AND start_ns < ?", (int(start_s * NS), int(end_s * NS))).fetchall()
    finally:
        db.close()


def test_calls_errors_and_tokens_per_bucket_match_the_raw_spans(store):
    charts = charts_at(store, FROZEN_NOW)
    series = charts.series
    assert series.resolution_s == 60 and len(series.times) == 61
    assert sum(series.calls_per_s) > 0
    for i, start in enumerate(series.times):
        rows = billed_spans(store, start, start + 60)
        width = min(60.0, FROZEN_NOW - start) if start + 60 > FROZEN_NOW else 60.0
        assert series.calls_per_s[i] == pytest.approx(len(rows) / width), start
        rate_limited = sum(1 for r in rows if r[3] == "rate_limit")
        assert series.errors_per_s["rate limit"][i] == pytest.approx(rate_limited / width)
        inp = sum(r[4] or 0 for r in rows)
        cread = sum(r[6] or 0 for r in rows)
        cwrite = sum(r[7] or 0 for r in rows)
        assert series.tokens["uncached input"][i] == max(0, inp - cread - cwrite)
        assert series.tokens["cache read"][i] == cread
        out, reasoning = sum(r[5] or 0 for r in rows), sum(r[8] or 0 for r in rows)
        assert series.tokens["output"][i] + series.tokens["reasoning"][i] == out
        assert series.tokens["reasoning"][i] == reasoning
        # The stack's top is every call: ok + each error layer.
        stacked = series.ok_per_s[i] + sum(layer[i] for layer in series.errors_per_s.values())
        assert stacked == pytest.approx(series.calls_per_s[i])
    # A bucket without calls has no latency: a gap in the line, not a zero.
    assert all(p95 is None for p95, calls in zip(series.latency[0.95], series.calls_per_s) if not calls)


def test_latency_quantiles_per_bucket_within_the_histogram_error(store):
    series = charts_at(store, FROZEN_NOW).series
    checked = 0
    for i, start in enumerate(series.times):
        # Failed API calls stay out of the latency histograms (a 429 answers in milliseconds).
        durations = sorted(r[1] / 1e9 for r in billed_spans(store, start, start + 60)
                           if r[1] is not None and r[2] != "api")
        if len(durations) < 3:
            continue
        for q in (0.5, 0.95, 0.99):
            truth = durations[max(1, math.ceil(q * len(durations))) - 1]  # nearest rank
            assert series.latency[q][i] == pytest.approx(truth, rel=2 * histogram.RELATIVE_ERROR, abs=2e-6)
        checked += 1
    assert checked >= 20


def test_cost_burn_is_cumulative_since_local_midnight(store):
    charts = charts_at(store, FROZEN_NOW)
    burn = charts.cost
    midnight = FROZEN_NOW - FROZEN_NOW % 86400  # TZ pinned to UTC
    assert burn.midnight_s == midnight and burn.times[0] == midnight and burn.usd[0] == 0
    truth = sum(r[9] or 0 for r in billed_spans(store, midnight, FROZEN_NOW + 1)) / 1e9
    assert truth > 0
    assert burn.total_usd == pytest.approx(truth)
    assert burn.times[-1] <= FROZEN_NOW and burn.usd == sorted(burn.usd)
    # Every point is the spend up to its time.
    for t, usd in zip(burn.times, burn.usd):
        assert usd == pytest.approx(sum(r[9] or 0 for r in billed_spans(store, midnight, t)) / 1e9), t
    # The card's figure and the chart's last point are the same number.
    assert charts.overview.today_cost_nusd / 1e9 == pytest.approx(burn.total_usd)


def test_past_period_is_the_window_before_shifted_onto_the_present(store):
    # 30 minutes ago with a 30-minute window: the compared period is minutes 60..30 before now.
    now = FROZEN_NOW
    charts = charts_at(store, now, shift_s=1800, window_s=1800)
    past = charts.past_series
    assert past is not None and charts.past is not None
    assert past.times == charts.series.times  # drawn over the present
    for i, start in enumerate(past.times):
        rows = billed_spans(store, start - 1800, start - 1800 + 60)
        assert past.calls_per_s[i] == pytest.approx(len(rows) / 60), start
    # The past's totals (its cards' deltas) are its buckets' calls, counted from the raw spans.
    assert charts.past["calls"] == sum(len(billed_spans(store, t - 1800, t - 1800 + 60)) for t in past.times) > 0
    # A week back: the same hour last week, and last week's day for the cost burn.
    week = charts_at(store, now, shift_s=WEEK_S)
    assert week.past is not None and week.past_series is not None and week.past_cost is not None
    for i, start in enumerate(week.past_series.times):
        rows = billed_spans(store, start - WEEK_S, start - WEEK_S + 60)
        assert week.past_series.calls_per_s[i] == pytest.approx(len(rows) / 60), start
    midnight = week.cost.midnight_s - WEEK_S
    assert week.past_cost.total_usd == pytest.approx(
        sum(r[9] or 0 for r in billed_spans(store, midnight, now - WEEK_S + 1)) / 1e9)
    assert week.past_cost.times[0] == charts.cost.midnight_s  # last week's midnight, moved onto today's


def test_compare_off_reads_no_past(store):
    charts = charts_at(store, FROZEN_NOW)
    assert charts.past is None and charts.past_series is None and charts.past_cost is None
    assert not any(name.startswith("past_") for name in charts_queries(WINDOW, FROZEN_NOW))


@pytest.mark.parametrize("value", [0.0166, 0.5, 0.85, 0.9, 0.95, 1.0, 7.0, 123.4])
def test_value_axis_reaches_every_value_and_a_flat_line_draws(value):
    """A flat line above the axis's last tick made plotext raise building the legend (IndexError)."""
    from llmobs_tui.widgets.chart import ChartData, Line, Threshold, build_chart_text, value_ticks

    for count in (2, 3, 4, 5):
        ticks, labels = value_ticks(0.0, value, str, count=count)
        assert ticks[-1] >= value and len(labels) == len(ticks)
    times = [FROZEN_NOW - 3600 + 60 * i for i in range(61)]
    for width, height in ((78, 16), (40, 8), (152, 30)):
        text = build_chart_text(ChartData(times=times, lines=[Line("flat", [value] * 61)],
                                          thresholds=[Threshold(value * 0.9, "slo")]), width, height)
        assert "flat" in text
