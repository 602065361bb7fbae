"""The drift panel's data and the drift rule, on stores written through the real normalizer and
writer with controlled timestamps and a seeded RNG.

Ground truth never comes from store/drift.py: token-length bins and PSI are recomputed here from the
raw `spans` rows (SQL, then a brute-force decile cut written independently), and the rates and
evaluation means from the list of calls the test planted.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmobs_tui.alerting.engine import AlertEngine, Finding
from llmobs_tui.config import AlertSettings, Config, ConfigError, load_config
from store import drift, histogram
from store.connection import open_reader
from tests.otlp_factory import STATUS_ERROR, log_record, make_span
from tests.store_writing import write_through, writing

NS = 10**9
NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z, 40 s into a minute: the window start is floored to 11:06
HOUR, DAY, WEEK = 3600, 86400, 7 * 86400


@dataclass
class Call:
    at_s: float
    feature: str = "support"
    inp: int = 1000
    out: int = 100
    refusal: bool = False  # finish reason content_filter
    validation: bool = False  # a failed parse of its output
    score: float | None = None  # a gen_ai.evaluation.result record
    eval_name: str = "relevance"


def write_store(path: Path, calls: list[Call]) -> Path:
    with writing(path, int(NOW * NS)) as (normalizer, writer, _db):
        spans, records = [], []
        for number, call in enumerate(calls, start=1):
            spans += call_spans(number, call)
            if call.score is not None:
                records.append(log_record(number, 2, "gen_ai.evaluation.result", time_ns=int(call.at_s * NS),
                                          attrs={"gen_ai.evaluation.name": call.eval_name,
                                                 "gen_ai.evaluation.score.value": call.score}))
        write_through(normalizer, writer, spans, records, int(NOW * NS), chunk=3000)
    return path


def call_spans(number: int, call: Call) -> list:
    start = int(call.at_s * NS)
    end = start + 2 * NS
    root = make_span(number, 1, None, f"POST /{call.feature}", {"app.llm.feature": call.feature},
                     start_ns=start, end_ns=end + NS // 100, kind=2)
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
             "gen_ai.usage.input_tokens": call.inp, "gen_ai.usage.output_tokens": call.out,
             "gen_ai.response.finish_reasons": ["content_filter" if call.refusal else "stop"]}
    spans = [root, make_span(number, 2, 1, "chat gpt-4o-mini", attrs, start_ns=start, end_ns=end)]
    if call.validation:
        spans.append(make_span(number, 4, 1, "parse_output", {"error.type": "pydantic.ValidationError"},
                               start_ns=end, end_ns=end + NS // 100, status_code=STATUS_ERROR,
                               status_message="1 validation error"))
    return spans


def lengths(rng: random.Random, median: float, sigma: float = 0.35) -> int:
    return max(1, round(rng.lognormvariate(math.log(median), sigma)))


def traffic(rng: random.Random, *, start_s: float, end_s: float, every_s: float, feature: str = "support",
            out_median: float = 120, inp_median: float = 900, refusal: float = 0.01, validation: float = 0.02,
            scored: float = 0.3, score_mean: float = 0.85) -> list[Call]:
    calls = []
    t = start_s
    while t < end_s:
        refused = rng.random() < refusal
        # A refused answer has nothing to parse (and the writer files it as a guardrail error).
        calls.append(Call(t + rng.uniform(0, every_s * 0.9), feature, inp=lengths(rng, inp_median),
                          out=lengths(rng, out_median), refusal=refused,
                          validation=rng.random() < validation and not refused,
                          score=min(1.0, max(0.0, rng.gauss(score_mean, 0.08))) if rng.random() < scored else None,
                          eval_name="relevance" if rng.random() < 0.7 else "faithfulness"))
        t += every_s
    return calls


def week_and_hour(rng: random.Random, feature: str = "support", **hour: float) -> list[Call]:
    """A baseline week (a call every 10 minutes: ~1000 calls) and a busier last hour (a call every
    15 s: 240 calls) of `hour`'s distribution (the week's when empty)."""
    week = traffic(rng, start_s=NOW - HOUR - WEEK, end_s=NOW - HOUR - 600, every_s=600, feature=feature)
    return week + traffic(rng, start_s=NOW - HOUR + 1, end_s=NOW - 16, every_s=15, feature=feature, **hour)


def evaluate(path: Path, **settings) -> list[Finding]:
    engine = AlertEngine(path, Config(alerts=AlertSettings(**settings)))
    try:
        return engine.evaluate(NOW)
    finally:
        engine.close()


def drift_findings(path: Path, **settings) -> list[Finding]:
    return [f for f in evaluate(path, **settings) if f.rule == "drift"]


# --- independent ground truth -------------------------------------------------------------------------


def span_lengths(path: Path, column: str, start_s: float, end_s: float, feature: str | None = None) -> list[int]:
    db = open_reader(path)
    try:
        sql = (f"SELECT {column} FROM spans WHERE billed = 1 AND {column} IS NOT NULL "
               "AND start_ns >= ? AND start_ns < ?")
        params: list = [int(start_s * NS), int(end_s * NS)]
        if feature is not None:
            sql += " AND feature = ?"
            params.append(feature)
        return [row[0] for row in db.execute(sql, params)]
    finally:
        db.close()


def fine_bucket(tokens: int) -> int:
    # Written out here rather than calling histogram.bucket_of: bucket i holds (1.04^(i-1), 1.04^i].
    return 0 if tokens <= 1 else math.ceil(math.log(tokens) / math.log(1.04))


def brute_psi(current: list[int], baseline: list[int], bins: int = 10) -> tuple[float, list[int], list[int]]:
    """Deciles of the baseline's fine buckets (a bucket never split), half a call per bin, PSI."""
    base_buckets = sorted(fine_bucket(v) for v in baseline)
    top = base_buckets[-1]
    edges = []
    for j in range(1, bins):
        # the bucket holding the j/bins-quantile (nearest rank) closes a bin, unless it is the top one
        edge = base_buckets[math.ceil(j * len(base_buckets) / bins) - 1]
        if edge != top and (not edges or edge != edges[-1]):
            edges.append(edge)

    def count(values: list[int]) -> list[int]:
        out = [0] * (len(edges) + 1)
        for v in values:
            b = fine_bucket(v)
            out[sum(1 for e in edges if b > e)] += 1
        return out

    cur, base = count(current), count(baseline)
    n, m = len(current) + 0.5 * len(cur), len(baseline) + 0.5 * len(base)
    value = sum(((c + .5) / n - (b + .5) / m) * math.log(((c + .5) / n) / ((b + .5) / m)) for c, b in zip(cur, base))
    return value, cur, base


def window_bounds(window_s: float = HOUR) -> tuple[int, int]:
    start = int(NOW - window_s)
    start -= start % 60
    return start - WEEK, start


# --- PSI on its own ------------------------------------------------------------------------------------


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift():
    rng = random.Random(3)
    base = histogram.merge([histogram.encode({histogram.bucket_of(lengths(rng, 120)): 1}) for _ in range(4000)])
    same = drift.psi(base, base, min_calls=200)
    assert same.value == pytest.approx(0.0, abs=1e-12)
    assert sum(b.baseline for b in same.bins) == 4000 and 8 <= len(same.bins) <= 10
    values = []
    for factor in (1.1, 1.3, 1.6, 2.0):
        shifted: dict[int, int] = {}
        for _ in range(1000):
            b = histogram.bucket_of(lengths(rng, 120 * factor))
            shifted[b] = shifted.get(b, 0) + 1
        values.append(drift.psi(shifted, base, 200).value)
    assert values == sorted(values) and values[0] < 0.25 < values[2]


def test_sampling_noise_at_min_calls_stays_well_under_the_threshold():
    """200 calls (the default minimum) of an unchanged distribution against a week of 1000: across
    300 seeded draws PSI averages 0.054 (theory: 9/200 + 9/1000), its 95th percentile is under half
    the threshold and the worst draw under 0.8 of it (3000 draws, measured: p99 0.13, max 0.22)."""
    settings = AlertSettings()
    values = []
    for seed in range(300):
        rng = random.Random(seed)
        base: dict[int, int] = {}
        cur: dict[int, int] = {}
        for counts, n in ((base, 1000), (cur, settings.drift_min_calls)):
            for _ in range(n):
                b = histogram.bucket_of(lengths(rng, 120))
                counts[b] = counts.get(b, 0) + 1
        values.append(drift.psi(cur, base, settings.drift_min_calls).value)
    values.sort()
    assert sum(values) / len(values) < 0.07
    assert values[int(0.95 * len(values))] < settings.drift_psi / 2
    assert values[-1] < 0.8 * settings.drift_psi, values[-5:]


def test_min_calls_and_empty_inputs_give_no_verdict():
    assert drift.psi({}, {}, 1).value is None
    few = {100: 50}
    assert drift.psi(few, {100: 5000}, min_calls=200).value is None
    assert drift.psi(few, {100: 5000}, min_calls=200).verdict(0.25) == "too few calls"


def test_decile_edges_never_split_a_bucket_and_leave_the_top_bucket_to_the_last_bin():
    # 95 % in one bucket: it closes one bin, not nine.
    edges = drift.decile_edges({10: 12, 50: 85, 60: 3})
    assert edges == [10, 50]
    assert drift.decile_edges({10: 2, 50: 95, 60: 3}) == [50]  # 2 % closes no decile
    assert drift.binned({9: 1, 10: 1, 11: 4, 60: 2, 99: 7}, edges) == [2, 4, 9]


# --- the panel's data against SQL ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shifted_store(tmp_path_factory) -> tuple[Path, list[Call]]:
    """Feature "support": its last hour answers 1.8× longer, refuses 8 % (week: 1 %), fails
    validation 10 % (2 %) and scores lower; feature "search" stays as it was."""
    rng = random.Random(41)
    calls = week_and_hour(rng, "support", out_median=216, refusal=0.08, validation=0.10, score_mean=0.6)
    calls += week_and_hour(rng, "search")
    path = write_store(tmp_path_factory.mktemp("drift") / "shifted.db", calls)
    return path, calls


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory) -> Path:
    rng = random.Random(7)
    calls = week_and_hour(rng, "support") + week_and_hour(rng, "search")
    return write_store(tmp_path_factory.mktemp("drift") / "clean.db", calls)


def read(path: Path, window_s: float = HOUR, scope: drift.Scope = drift.ALL) -> drift.Drift:
    db = open_reader(path)
    try:
        return drift.read_drift(db, window_s, NOW, scope, min_calls=200)
    finally:
        db.close()


@pytest.mark.parametrize("signal", ["input_tokens", "output_tokens"])
@pytest.mark.parametrize("scope", [drift.ALL, drift.Scope(feature="support")])
def test_distributions_match_sql_over_spans(shifted_store, signal, scope):
    path, _ = shifted_store
    data = read(path, scope=scope)
    base_start, start = window_bounds()
    current = span_lengths(path, signal, start, NOW + 60, scope.feature)
    baseline = span_lengths(path, signal, base_start, start, scope.feature)
    value, cur_bins, base_bins = brute_psi(current, baseline)
    result = data.distributions[signal]
    assert [b.current for b in result.bins] == cur_bins
    assert [b.baseline for b in result.bins] == base_bins
    assert result.current_calls == len(current) and result.baseline_calls == len(baseline)
    assert result.value == pytest.approx(value, rel=1e-9)
    # The bins' token bounds hold exactly the calls counted in them.
    for b in result.bins:
        inside = [v for v in current if (b.lo is None or v > b.lo) and (b.hi is None or v <= b.hi)]
        assert len(inside) == b.current


def test_output_shift_is_shifted_and_input_stable(shifted_store):
    path, _ = shifted_store
    data = read(path, scope=drift.Scope(feature="support"))
    assert data.distributions["output_tokens"].verdict(0.25) == "shifted"
    assert data.distributions["input_tokens"].verdict(0.25) == "stable"


def test_rates_per_bucket_and_over_the_baseline_match_the_planted_calls(shifted_store):
    path, calls = shifted_store
    data = read(path)
    assert data.resolution_s == 60
    base_start, start = window_bounds()
    for name, attr in (("refusals", "refusal"), ("validation", "validation")):
        expected: dict[int, list[int]] = {}
        for call in calls:
            if NOW - HOUR - 60 < call.at_s <= NOW:
                expected.setdefault(int(call.at_s) // 60 * 60, [0, 0])[1] += 1
        for call in calls:
            if NOW - HOUR - 60 < call.at_s <= NOW and getattr(call, attr):
                expected[int(call.at_s) // 60 * 60][0] += 1
        got = dict(zip((int(t) for t in data.times), data.rate_series(name)))
        for bucket, (bad, n) in expected.items():
            assert got[bucket] == pytest.approx(bad / n), (name, bucket)
        assert all(v is None for t, v in got.items() if t not in expected)
        week = [c for c in calls if base_start <= c.at_s < start]
        assert data.baseline.calls == len(week)
        assert data.baseline.rate(name) == pytest.approx(sum(getattr(c, attr) for c in week) / len(week))


def test_evaluation_means_per_bucket_match_the_planted_scores(shifted_store):
    path, calls = shifted_store
    data = read(path)
    base_start, start = window_bounds()
    names = {e.name for e in data.evals}
    assert names == {"relevance", "faithfulness"}
    for series in data.evals:
        mine = [c for c in calls if c.score is not None and c.eval_name == series.name]
        expected: dict[int, list[float]] = {}
        for c in mine:
            if int(NOW - HOUR) // 60 * 60 <= c.at_s <= NOW:
                expected.setdefault(int(c.at_s) // 60 * 60, []).append(c.score)
        assert set(series.points) == set(expected)
        for bucket, scores in expected.items():
            mean, count = series.points[bucket]
            assert count == len(scores) and mean == pytest.approx(sum(scores) / len(scores))
        week = [c.score for c in mine if base_start <= c.at_s < start]
        assert series.baseline_count == len(week)
        assert series.baseline_mean == pytest.approx(sum(week) / len(week))


def test_a_seven_day_window_reads_hourly_rows():
    queries = drift.drift_queries(WEEK, NOW)
    assert queries["series"].params[0] == 3600
    # The baseline ends where the window starts: no row is in both.
    base_start, start, end = drift.windows(WEEK, NOW)
    assert end - start >= WEEK and start - base_start == WEEK


# --- the rule --------------------------------------------------------------------------------------------


def test_the_rule_fires_on_the_planted_shift_with_the_sql_psi(shifted_store):
    path, _ = shifted_store
    findings = drift_findings(path)
    assert [(f.key, f.severity) for f in findings] == [("drift:support:output_tokens", "ticket")]
    finding = findings[0]
    base_start, start = window_bounds()
    value, _, _ = brute_psi(span_lengths(path, "output_tokens", start, NOW + 60, "support"),
                            span_lengths(path, "output_tokens", base_start, start, "support"))
    assert value > 0.25 and finding.value == pytest.approx(value, rel=1e-9)
    assert finding.threshold == 0.25 and finding.scope == "feature=support" and finding.window == "1h vs prior 7d"
    assert finding.title.startswith(f"output tokens per call drifted (PSI {value:.2f} vs last 7 days)")
    # The example is a call of the feature in the window whose length lies in the bin that grew most.
    assert finding.example_trace_id is not None and finding.example_span_id is not None
    db = open_reader(path)
    try:
        out, feature, start_ns = db.execute(
            "SELECT output_tokens, feature, start_ns FROM spans WHERE trace_id = ? AND span_id = ?",
            (finding.example_trace_id, finding.example_span_id)).fetchone()
    finally:
        db.close()
    assert feature == "support" and start_ns >= (NOW - HOUR) * NS and out > 150


def test_the_rule_stays_quiet_on_a_clean_week(clean_store):
    assert drift_findings(clean_store) == []
    data = read(clean_store, scope=drift.Scope(feature="support"))
    for result in data.distributions.values():
        assert result.value is not None and result.value < 0.1


def test_the_rule_respects_min_calls_and_threshold_and_signals(shifted_store):
    path, _ = shifted_store
    assert drift_findings(path, drift_min_calls=1000) == []  # ~240 calls in the hour
    assert drift_findings(path, drift_psi=50.0) == []
    assert drift_findings(path, drift_signals=("input_tokens",)) == []
    assert drift_findings(path, drift_signals=()) == []


def test_the_rule_is_cheap_and_evaluated_once_a_minute(shifted_store):
    import sqlite3

    from llmobs_tui.alerting.drift import DriftRule

    path, _ = shifted_store
    rule, settings = DriftRule(), AlertSettings()
    db = open_reader(path)
    started = time.perf_counter()
    first = rule.evaluate(db, settings, NOW)
    assert time.perf_counter() - started < 0.5
    assert [f.key for f in first] == ["drift:support:output_tokens"]
    db.close()
    # Within the same minute the last answer is reused without a read; the next minute reads again.
    assert [f.key for f in rule.evaluate(db, settings, NOW + 19)] == ["drift:support:output_tokens"]
    with pytest.raises(sqlite3.ProgrammingError):
        rule.evaluate(db, settings, NOW + 60)


# --- configuration -------------------------------------------------------------------------------------


def test_drift_settings_from_the_config_file(tmp_path):
    path = tmp_path / "llmobs.toml"
    path.write_text('[alerts.drift]\npsi = 0.3\nmin_calls = 500\nwindow = "6h"\nsignals = ["output_tokens"]\n')
    settings = load_config(path).alerts
    assert (settings.drift_psi, settings.drift_min_calls, settings.drift_window_s, settings.drift_signals) == (
        0.3, 500, 6 * HOUR, ("output_tokens",))
    path.write_text('[alerts.drift]\nsignals = ["latency"]\n')
    with pytest.raises(ConfigError, match="signals"):
        load_config(path)
    path.write_text('[alerts.drift]\npsi = 0\n')
    with pytest.raises(ConfigError, match="psi"):
        load_config(path)


def test_the_example_config_documents_the_defaults():
    from llmobs_tui.config import EXAMPLE_CONFIG

    settings = load_config(EXAMPLE_CONFIG).alerts
    defaults = AlertSettings()
    assert (settings.drift_psi, settings.drift_min_calls, settings.drift_window_s, settings.drift_signals) == (
        defaults.drift_psi, defaults.drift_min_calls, defaults.drift_window_s, defaults.drift_signals)


# --- the panel on the Alerts screen ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory) -> Path:
    """The shifted store's traffic, its scores filed under an evaluation name holding markup and an escape."""
    rng = random.Random(41)
    calls = week_and_hour(rng, "support", out_median=216, refusal=0.08, validation=0.10, score_mean=0.6)
    for call in calls:
        call.eval_name = "[bold red]rel\x1b[31m"
    return write_store(tmp_path_factory.mktemp("drift") / "hostile.db", calls)


@pytest.mark.anyio
@pytest.mark.parametrize("size", [(160, 48), (80, 24)])
async def test_the_panel_on_the_alerts_screen(hostile_store, size):
    from llmobs_tui.alerting.live import EngineAlerts
    from llmobs_tui.app import LlmobsApp
    from llmobs_tui.widgets.drift_panel import DriftPanel, TokenHistograms
    from tests.tui_scenarios import settle

    alerts = EngineAlerts(hostile_store, Config())
    alerts.evaluate_now(NOW)
    app = LlmobsApp(hostile_store, clock=lambda: NOW, refresh_s=None, alerts=alerts)
    async with app.run_test(size=size) as pilot:
        await pilot.press("5")
        await settle(pilot)
        assert any(a.key == "drift:support:output_tokens" for a in app.alerts.snapshot(NOW))
        panel = app.screen.query_one(DriftPanel)
        summary = str(panel.query_one("#drift-summary").render())
        assert "output shifted" in summary and "input stable" in summary
        assert "[bold red]rel␛[31m" in summary  # the name shown literally, its escape made visible
        if size == (80, 24):
            # Short: the summary only, and the alerts list keeps the rows.
            assert panel.has_class("compact") and panel.size.height <= 4
        else:
            assert not panel.has_class("compact") and panel.size.height >= 20
            rendered = app.screen.query_one(TokenHistograms).render()
            assert rendered is not None
            await pilot.pause()
