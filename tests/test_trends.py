"""Trends (`7`, issue 14 capabilities 2 and 6): series split by a dimension against SQL ground truth
over the stored spans (written through the real Normalizer and SpanWriter), top N and "others", tool
series from tool_rollups, the two-variant comparison, drill filters that survive hostile values, and
the screen itself through the real app."""

from __future__ import annotations

import math
import random
import sqlite3
from collections import defaultdict
from pathlib import Path

import pytest

from llmobs_tui.filtering import parse, regexp
from llmobs_tui.trends import compare_variants, drill_filter, series_label
from llmobs_tui.widgets.variant_comparison import delta_text
from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store import dashboards
from store.connection import WriterLock, open_writer
from store.histogram import RELATIVE_ERROR
from store.trends import METRIC, parse_trends, trends_queries
from store.writer import SpanWriter
from tests.otlp_factory import MS, T0, make_span, trace_request
from tests.tui_scenarios import settle

S = 1_000_000_000
MINUTES = 40
NOW_S = T0 / S + (MINUTES - 1) * 60 + 25  # mid-minute: the newest bucket (with calls) is partial
WINDOW_S = 3600
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gpt 4o [bold]x[/]", "=odd", "~tilde", "it's")
WEIGHTS = (40, 25, 15, 6, 5, 5, 4)
TOOLS = ("search_docs", "lookup order")


def plant() -> list:
    """A trace every 4 s for 40 minutes: a root (feature; support carries a variant, treatment slower
    and wordier), an LLM call (model by weight, some failing, some refused), sometimes a tool call."""
    rng = random.Random(14)
    spans = []
    for trace in range(1, MINUTES * 15 + 1):
        at = T0 + (trace - 1) * 4 * S + rng.randint(0, 3000) * MS
        feature = rng.choice(("search", "support", "checkout"))
        root_attrs: dict = {"app.llm.feature": feature}
        slow = 1.0
        if feature == "support":
            variant = "treatment" if rng.random() < 0.45 else "control"
            root_attrs["llmobs.variant"] = variant
            slow = 1.4 if variant == "treatment" else 1.0
        length = int(rng.randint(200, 3000) * slow) * MS
        spans.append(make_span(trace, 1, None, f"POST /{feature}", root_attrs, at, at + length + 50 * MS, kind=2))
        model = rng.choices(MODELS, WEIGHTS)[0]
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
                 "gen_ai.usage.input_tokens": int(rng.randint(100, 4000) * slow),
                 "gen_ai.usage.output_tokens": rng.randint(10, 400)}
        if rng.random() < 0.06:
            attrs["gen_ai.response.finish_reasons"] = ["content_filter"]
        failed = rng.random() < 0.08
        spans.append(make_span(trace, 2, 1, f"chat {model}", attrs, at + 10 * MS, at + 10 * MS + length,
                               status_code=2 if failed else 0))
        if rng.random() < 0.5:
            tool = rng.choice(TOOLS)
            start = at + 20 * MS
            spans.append(make_span(trace, 3, 1, f"execute_tool {tool}",
                                   {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool},
                                   start, start + rng.randint(5, 900) * MS, status_code=2 if rng.random() < 0.1 else 0))
    return spans


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trends") / "trends.db"
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    writer = SpanWriter(db, clock=lambda: int(NOW_S * S))
    spans = plant()
    for i in range(0, len(spans), 300):  # several batches: rollup rows are read back and added to
        rows, resources, scopes, rejections = normalizer.decode_traces(trace_request(spans[i:i + 300]), int(NOW_S * S))
        assert rejections.count == 0
        writer.write(rows, [], resources, scopes)
    db.close()
    lock.release()
    return path


def read(store: Path, metric: str, by: str, top_n: int = 10, others: bool = False, window_s: float = WINDOW_S):
    db = sqlite3.connect(store)
    try:
        rows = {name: db.execute(q.sql, q.params).fetchall()
                for name, q in trends_queries(metric, by, window_s, NOW_S).items()}
    finally:
        db.close()
    return parse_trends(metric, by, window_s, NOW_S, rows, top_n, others)


def calls_sql(store: Path, column: str, where: str = "s.billed = 1") -> dict[tuple[str, int], int]:
    """(value, minute) → spans, straight from `spans`."""
    db = sqlite3.connect(store)
    try:
        return {(v, b): n for v, b, n in db.execute(
            f"SELECT coalesce({column}, ''), s.start_ns / {S} / 60 * 60, count(*) FROM spans s WHERE {where} "
            "GROUP BY 1, 2")}
    finally:
        db.close()


def bucket_seconds(bucket: float) -> float:
    return min(60.0, NOW_S - bucket)


def nearest_rank(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_calls_per_second_by_model_match_the_spans(store):
    trends = read(store, "calls", "model")
    truth = calls_sql(store, "coalesce(s.response_model, s.request_model)")
    totals: dict[str, int] = defaultdict(int)
    for (model, _), n in truth.items():
        totals[model] += n
    assert trends.resolution_s == 60 and trends.series_total == len(MODELS)
    # Ranked by calls over the window, most first.
    assert [series_label("model", s) for s in trends.series] == sorted(totals, key=lambda m: (-totals[m], m))
    for series in trends.series:
        model = series.key[0]
        assert series.calls == totals[model]
        for t, value in zip(trends.times, series.values):
            expected = truth.get((model, int(t)), 0) / bucket_seconds(t)
            assert value == pytest.approx(expected), (model, t)
        assert series.value == pytest.approx(totals[model] / (NOW_S - T0 / S))
    assert sum(1 for v in trends.series[0].values if v) == MINUTES  # the partial newest minute too


def test_top_n_keeps_the_busiest_and_others_sums_the_rest(store):
    full = read(store, "calls", "model")
    top = read(store, "calls", "model", top_n=2, others=True)
    assert [s.key for s in top.series[:2]] == [s.key for s in full.series[:2]]
    assert top.series[-1].others and len(top.series) == 3 and top.series_total == len(MODELS)
    rest = full.series[2:]
    for i in range(len(top.times)):
        assert top.series[-1].values[i] == pytest.approx(sum(s.values[i] or 0 for s in rest))
    assert top.series[-1].calls == sum(s.calls for s in rest)


def test_latency_p95_by_feature_is_the_spans_percentile_within_the_histogram_error(store):
    trends = read(store, "latency_p95", "feature")
    db = sqlite3.connect(store)
    durations: dict[tuple[str, int], list[int]] = defaultdict(list)
    for feature, minute, duration in db.execute(
            f"SELECT feature, start_ns / {S} / 60 * 60, duration_ns FROM spans "
            "WHERE billed = 1 AND error_class IS NOT 'api'"):  # failed calls stay out of latency figures
        durations[(feature, minute)].append(duration)
    db.close()
    assert {s.key[0] for s in trends.series} == {"search", "support", "checkout"}
    checked = 0
    for series in trends.series:
        every = []
        for t, value in zip(trends.times, series.values):
            sample = durations.get((series.key[0], int(t)))
            if not sample:
                assert value is None  # a gap, not a zero
                continue
            every += sample
            truth = nearest_rank(sample, 0.95) / S
            assert value == pytest.approx(truth, rel=RELATIVE_ERROR + 1e-3), (series.key, t)
            checked += 1
        assert series.value == pytest.approx(nearest_rank(every, 0.95) / S, rel=RELATIVE_ERROR + 1e-3)
    assert checked >= 3 * MINUTES


def test_error_rate_and_cost_by_feature_match_the_spans(store):
    errors = read(store, "error_rate", "feature")
    cost = read(store, "cost", "feature")
    db = sqlite3.connect(store)
    truth = {(f, m): (n, e) for f, m, n, e in db.execute(
        f"SELECT feature, start_ns / {S} / 60 * 60, count(*), "
        "sum(coalesce(error_class IN ('api', 'validation', 'guardrail'), 0)) FROM spans WHERE billed = 1 GROUP BY 1, 2")}
    spend = dict(db.execute("SELECT feature, sum(cost_nusd) FROM spans WHERE billed = 1 GROUP BY 1"))
    db.close()
    assert any(e for _, e in truth.values())
    for series in errors.series:
        for t, value in zip(errors.times, series.values):
            calls, failed = truth.get((series.key[0], int(t)), (0, 0))
            assert value == (pytest.approx(failed / calls) if calls else None)
    for series in cost.series:
        assert series.value == pytest.approx(spend[series.key[0]] / 1e9 / (NOW_S - T0 / S) * 3600)
    # Cost ranks by spend over the window.
    assert [s.key[0] for s in cost.series] == sorted(spend, key=lambda f: -spend[f])


def test_cost_of_unpriced_calls_is_unknown_never_zero(store):
    trends = read(store, "cost", "model")
    db = sqlite3.connect(store)
    truth = {m: (n, u) for m, n, u in db.execute(
        "SELECT request_model, count(*), sum(cost_nusd IS NULL) FROM spans WHERE billed = 1 GROUP BY 1")}
    db.close()
    assert any(u == n for n, u in truth.values()) and any(u == 0 for _, u in truth.values())
    for series in trends.series:
        calls, unpriced = truth[series.key[0]]
        assert (series.calls, series.unpriced) == (calls, unpriced)
        if unpriced == calls:
            assert series.all_unpriced and series.value is None and set(series.values) == {None}
        else:
            assert series.value is not None


def test_refusal_rate_by_variant_counts_refused_calls(store):
    trends = read(store, "refusal_rate", "variant")
    db = sqlite3.connect(store)
    truth = {v or None: (n, r) for v, n, r in db.execute(
        "SELECT variant, count(*), sum(finish_reason = 'content_filter' OR flags & 1024 != 0) FROM spans "
        "WHERE billed = 1 GROUP BY 1")}
    db.close()
    assert {s.key[0] for s in trends.series} == set(truth) == {None, "control", "treatment"}
    for series in trends.series:
        calls, refused = truth[series.key[0]]
        assert series.calls == calls and series.value == pytest.approx(refused / calls)


def test_tool_series_come_from_tool_rollups_and_say_what_tools_lack(store):
    trends = read(store, "calls", "tool")
    truth = calls_sql(store, "s.tool_name", "s.kind = 'tool'")
    assert {s.key[0] for s in trends.series} == set(TOOLS)
    for series in trends.series:
        for t, value in zip(trends.times, series.values):
            assert value == pytest.approx(truth.get((series.key[0], int(t)), 0) / bucket_seconds(t))
    rate = read(store, "error_rate", "tool")
    db = sqlite3.connect(store)
    failed = dict(db.execute("SELECT tool_name, avg(status = 2) FROM spans WHERE kind = 'tool' GROUP BY 1"))
    db.close()
    for series in rate.series:
        assert series.value == pytest.approx(failed[series.key[0]])
    for name in ("cost", "tokens", "ttft_p95"):
        lacking = read(store, name, "tool")
        assert not lacking.supported and lacking.series == []
        assert trends_queries(name, "tool", WINDOW_S, NOW_S) == {}


def test_two_variant_comparison_matches_the_spans(store):
    trends = read(store, "latency_p95", "variant")
    comparison = compare_variants(trends.variants)
    assert comparison is not None and (comparison.a, comparison.b) == ("control", "treatment")  # control: baseline
    db = sqlite3.connect(store)
    truth = {}
    for variant in ("control", "treatment"):
        calls, errors, cost, tokens = db.execute(
            "SELECT count(*), sum(error_class IS NOT NULL), sum(cost_nusd), sum(input_tokens + output_tokens) "
            "FROM spans WHERE billed = 1 AND variant = ?", (variant,)).fetchone()
        ok = [d for (d,) in db.execute("SELECT duration_ns FROM spans WHERE billed = 1 AND variant = ? "
                                       "AND error_class IS NOT 'api'", (variant,))]
        truth[variant] = {"calls": calls, "error rate": errors / calls, "cost/call": cost / 1e9 / calls,
                          "tokens/call": tokens / calls, "latency p95": nearest_rank(ok, 0.95) / S,
                          "latency p50": nearest_rank(ok, 0.5) / S}
    db.close()
    rows = {row.label: row for row in comparison.rows}
    assert (comparison.calls_a, comparison.calls_b) == (truth["control"]["calls"], truth["treatment"]["calls"])
    for label in ("calls", "error rate", "cost/call", "tokens/call"):
        assert rows[label].a == pytest.approx(truth["control"][label])
        assert rows[label].b == pytest.approx(truth["treatment"][label])
    for label in ("latency p50", "latency p95"):
        assert rows[label].a == pytest.approx(truth["control"][label], rel=RELATIVE_ERROR + 2e-3)
        assert rows[label].b == pytest.approx(truth["treatment"][label], rel=RELATIVE_ERROR + 2e-3)
    # Treatment is planted 40 % slower: a rise, drawn as worse.
    assert rows["latency p95"].delta > 0.15
    assert delta_text(rows["latency p95"], comparison.too_few).style == "red"
    assert not comparison.too_few
    # Pinning treatment swaps the sides; under the minimum the deltas say so instead of a percentage.
    pinned = compare_variants(trends.variants, pinned="treatment", min_calls=10_000)
    assert (pinned.a, pinned.b) == ("treatment", "control") and pinned.too_few
    assert delta_text(pinned.rows[1], pinned.too_few).plain == "too few calls"


def test_drill_filters_select_exactly_the_series_traces_even_for_hostile_values(store):
    db = sqlite3.connect(store)
    db.create_function("regexp", 2, regexp, deterministic=True)
    trends = read(store, "calls", "model")
    assert len(trends.series) == len(MODELS)
    for series in trends.series:
        text = drill_filter("model", series)
        flt = parse(text)
        query = dashboards.traces_query(WINDOW_S, NOW_S, flt.where, flt.params, limit=100_000)
        got = {row[0] for row in db.execute(query.sql, query.params)}
        want = {t for (t,) in db.execute("SELECT DISTINCT trace_id FROM spans WHERE request_model = ?",
                                         (series.key[0],))}
        assert got == want and want, (series.key, text)
    db.close()
    others = read(store, "calls", "model", top_n=1, others=True).series[-1]
    assert drill_filter("model", others) is None


def test_every_metric_and_dimension_reads(store):
    """No combination errors out; dimensions without data just have no series."""
    from store.trends import DIMENSIONS, METRICS

    for metric in METRICS:
        for by in DIMENSIONS:
            trends = read(store, metric.name, by, window_s=86400)
            assert trends.resolution_s == 3600 and len(trends.times) == 25
            for series in trends.series:
                assert len(series.values) == len(trends.times)
    assert METRIC["calls"].ranks_by_calls is False


# --- the screen ------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_7_draws_series_switches_metric_and_dimension_and_drills(store, size):
    from llmobs_tui.app import LlmobsApp
    from llmobs_tui.screens.traces import TracesScreen
    from llmobs_tui.screens.trends import TrendsScreen
    from llmobs_tui.widgets.keyed_table import KeyedTable
    from llmobs_tui.widgets.variant_comparison import VariantComparisonPanel

    app = LlmobsApp(store, clock=lambda: NOW_S, refresh_s=None)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("7")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TrendsScreen)
        legend = screen.query_one("#trends-legend", KeyedTable)
        assert legend.row_count == 7 and screen.trends.metric.name == "latency_p95"
        # The hostile model name is shown literally, never as markup.
        cells = [str(legend.get_row_at(i)[0]) for i in range(legend.row_count)]
        assert any(c.startswith("● gpt 4o [bold") for c in cells), cells
        await pilot.press("n", "n")  # 8 → 10 → 3
        await settle(pilot)
        assert legend.row_count == 3
        await pilot.press("m")
        await settle(pilot)
        assert screen.trends.metric.name == "latency_p99"
        assert "latency p99 by model" in screen.header_text()
        # Split by variant: the comparison panel shows under the chart.
        while screen.by != "variant":
            await pilot.press("g")
        await settle(pilot)
        assert screen.has_class("-variants") and screen.query_one(VariantComparisonPanel).display
        # Enter on a variant's row opens its traces, filtered to it.
        legend.focus()
        keys = legend.keys()
        legend.move_cursor(row=keys.index(repr(("control",))))
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TracesScreen)
        assert app.screen.flt.text == "variant=control"
