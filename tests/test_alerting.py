"""The alert rules: burn-rate arithmetic, one planted scenario per rule written through the real
normalizer and writer with controlled timestamps, a clean week where nothing fires, hysteresis and
acknowledgement, and the config file's errors.

Every scenario is a healthy baseline week (two features, one call per feature every 30 minutes)
with an anomaly planted in its last hour; the engine evaluates at NOW.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmobs_tui.alerting import burn
from llmobs_tui.alerting.engine import AlertEngine, Finding, exit_code
from llmobs_tui.config import AlertSettings, Config, ConfigError, SloSpec, load_config
from store.connection import open_reader
from tests.otlp_factory import STATUS_ERROR, log_record, make_span
from tests.store_writing import write_through, writing
from tests.tui_fixtures import use_utc

NS = 10**9
NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z: 11 h into the (UTC) day
HOUR, DAY = 3600, 86400


# --- burn-rate arithmetic -----------------------------------------------------------------------


def test_error_budget_and_burn_rate():
    # 99.5%: 0.5% of events may be bad. 1% bad spends it twice as fast as allowed.
    assert burn.burn_rate(10, 1000, 0.995) == pytest.approx(2.0)
    assert burn.budget_left(10, 1000, 0.995) == pytest.approx(-1.0)
    assert burn.budget_left(1, 1000, 0.995) == pytest.approx(0.8)
    assert burn.burn_rate(0, 1000, 0.99) == 0
    assert burn.burn_rate(0, 0, 0.99) is None and burn.budget_left(0, 0, 0.99) is None
    # The workbook's tiers, read from the table the engine uses: a page when 2 % (1 h) or 5 % (6 h) of a
    # 30-day budget is gone, a ticket at 10 % (3 days); each short window a twelfth of its long one.
    spent = {(severity, long_s): factor * long_s / (30 * DAY) for severity, factor, long_s, _ in burn.TIERS}
    assert spent == pytest.approx({("page", HOUR): 0.02, ("page", 6 * HOUR): 0.05, ("ticket", 3 * DAY): 0.10})
    assert all(long_s == 12 * short_s for _, _, long_s, short_s in burn.TIERS)


def windows(**burns: tuple[int, int]) -> dict[int, tuple[int, int]]:
    names = {"h1": HOUR, "m5": 300, "h6": 6 * HOUR, "m30": 1800, "d3": 3 * DAY}
    return {names[k]: v for k, v in burns.items()}


def test_both_windows_must_burn():
    objective = 0.99  # 1% budget: 15% bad is a 15× burn
    fast = windows(h1=(150, 1000), m5=(15, 100))
    assert burn.firing_tier(fast, objective).severity == "page"
    assert burn.firing_tier(fast, objective).factor == 14.4
    # The long window burns but the last 5 minutes are clean: the burn has stopped, no page.
    assert burn.firing_tier(windows(h1=(150, 1000), m5=(0, 100)), objective) is None
    # A spike in the last 5 minutes alone is not enough either.
    assert burn.firing_tier(windows(h1=(20, 1000), m5=(50, 100)), objective) is None


def test_the_most_severe_tier_wins_and_thin_windows_give_no_verdict():
    objective = 0.99
    medium = windows(h1=(100, 1000), m5=(10, 100), h6=(70, 1000), m30=(8, 100), d3=(70, 1000))
    verdict = burn.firing_tier(medium, objective)
    assert (verdict.severity, verdict.factor, verdict.long_s, verdict.short_s) == ("page", 6.0, 6 * HOUR, 1800)
    slow = windows(h1=(3, 1000), m5=(0, 100), h6=(20, 1000), m30=(2, 100), d3=(20, 1000))
    assert burn.firing_tier(slow, objective).severity == "ticket"
    # Fewer than MIN_EVENTS in the long window: one failed call out of two must not page anyone.
    assert burn.firing_tier(windows(h1=(1, 2), m5=(1, 2), h6=(1, 2), m30=(1, 2), d3=(1, 2)), objective) is None
    # Every call failing: still no verdict below MIN_EVENTS in the long window, a page at it.
    few, enough = burn.MIN_EVENTS - 1, burn.MIN_EVENTS
    assert burn.firing_tier(windows(h1=(few, few), m5=(1, 1)), objective) is None
    assert burn.firing_tier(windows(h1=(enough, enough), m5=(1, 1)), objective).severity == "page"


# --- planted scenarios ----------------------------------------------------------------------------


@dataclass
class Call:
    at_s: float
    feature: str = "support"
    model: str = "gpt-4o-mini"
    inp: int = 1000
    out: int = 100
    cache_read: int = 0
    ttft: float | None = 0.5
    duration: float = 2.0
    error: str | None = None  # "429" | "500"
    version: str | None = "v1"
    validation: bool = False
    guardrail: bool = False
    score: float | None = None  # a gen_ai.evaluation.result log record on the call


@dataclass
class Store:
    path: Path
    calls: list[Call] = field(default_factory=list)

    def add(self, *calls: Call) -> None:
        self.calls.extend(calls)

    def write(self) -> Path:
        with writing(self.path, int(NOW * NS)) as (normalizer, writer, _db):
            spans, records = [], []
            for number, call in enumerate(self.calls, start=1):
                spans += self._spans(number, call)
                if call.score is not None:
                    records.append(log_record(number, 2, "gen_ai.evaluation.result", time_ns=int(call.at_s * NS) + NS,
                                              attrs={"gen_ai.evaluation.name": "relevance",
                                                     "gen_ai.evaluation.score.value": call.score}))
            write_through(normalizer, writer, spans, records, int(NOW * NS))
        return self.path

    @staticmethod
    def _spans(number: int, call: Call) -> list:
        start = int(call.at_s * NS)
        end = start + int(call.duration * NS)
        root = make_span(number, 1, None, f"POST /{call.feature}", {"app.llm.feature": call.feature},
                         start_ns=start, end_ns=end + NS // 100, kind=2)
        spans = [root]
        if call.guardrail:
            spans.append(make_span(number, 3, 1, "input-moderation", {"openinference.span.kind": "GUARDRAIL"},
                                   start_ns=start, end_ns=start + NS // 50, status_code=STATUS_ERROR,
                                   status_message="blocked"))
            return spans
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": call.model}
        if call.version:
            attrs |= {"app.llm.prompt.template.id": f"{call.feature}-prompt", "app.llm.prompt.template.version": call.version}
        status = 0
        if call.error:
            status = STATUS_ERROR
            attrs |= {"error.type": "RateLimitError" if call.error == "429" else "InternalServerError",
                      "http.response.status_code": int(call.error)}
        else:
            attrs |= {"gen_ai.usage.input_tokens": call.inp, "gen_ai.usage.output_tokens": call.out}
            if call.cache_read:
                attrs["gen_ai.usage.cache_read.input_tokens"] = call.cache_read
            if call.ttft is not None:
                attrs |= {"gen_ai.request.stream": True, "gen_ai.response.time_to_first_chunk": call.ttft}
        spans.append(make_span(number, 2, 1, f"chat {call.model}", attrs, start_ns=start, end_ns=end, status_code=status))
        if call.validation:
            spans.append(make_span(number, 4, 1, "parse_output", {"error.type": "pydantic.ValidationError"},
                                   start_ns=end, end_ns=end + NS // 100, status_code=STATUS_ERROR,
                                   status_message="1 validation error"))
        return spans


def healthy_week(rng: random.Random, *, every_s: float = 1800, days: float = 7,
                 features: tuple[str, ...] = ("support", "search")) -> list[Call]:
    """Varied, healthy traffic: sizes, latencies and cache hits wander but never trend; a new prompt
    version halfway that costs the same; the odd provider error."""
    calls = []
    t = NOW - days * DAY
    while t < NOW - 60:
        for feature in features:
            at = t + rng.uniform(0, every_s * 0.9)
            inp = int(rng.uniform(800, 1200))
            ttft = rng.uniform(0.3, 0.7)
            calls.append(Call(at, feature, inp=inp, out=int(rng.uniform(80, 120)), cache_read=int(inp * rng.uniform(0.5, 0.7)),
                              ttft=ttft, duration=ttft + rng.uniform(1.2, 1.8),
                              version="v1" if at < NOW - days * DAY / 2 else "v2",
                              error="500" if rng.random() < 0.002 else None,
                              score=rng.uniform(0.7, 1.0) if rng.random() < 0.3 else None))
        t += every_s
    return calls


@pytest.fixture(autouse=True)
def _utc() -> None:
    use_utc()  # "today" for the daily budget is the local day


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "alerts.db")
    s.add(*healthy_week(random.Random(11)))
    return s


def last(n: int, within_s: float = 1800, **kwargs) -> list[Call]:
    """`n` calls spread over the last `within_s` seconds (the newest 10 s ago)."""
    return [Call(NOW - 10 - i * within_s / n, **kwargs) for i in range(n)]


def evaluate(path: Path, *slos: SloSpec, **settings) -> list[Finding]:
    engine = AlertEngine(path, Config(slos=list(slos), alerts=AlertSettings(**settings)))
    try:
        return engine.evaluate(NOW)
    finally:
        engine.close()


def only(findings: list[Finding], rule: str) -> Finding:
    matching = [f for f in findings if f.rule == rule]
    assert len(matching) == 1, [(f.rule, f.key, f.value_text) for f in findings]
    return matching[0]


def example_of(path: Path, finding: Finding) -> tuple:
    """The example trace's feature, start and errors, read back: it must be a real trace."""
    assert finding.example_trace_id is not None
    db = open_reader(path)
    try:
        row = db.execute("SELECT feature, start_ns, errors_api, errors_validation, errors_guardrail FROM traces "
                         "WHERE trace_id = ?", (finding.example_trace_id,)).fetchone()
    finally:
        db.close()
    assert row is not None
    return row


def test_a_clean_week_fires_nothing(tmp_path):
    store = Store(tmp_path / "clean.db")
    store.add(*healthy_week(random.Random(3), every_s=600))
    path = store.write()
    slos = [SloSpec("availability", "availability", 0.99), SloSpec("ttft", "ttft", 0.95, threshold=2.0),
            SloSpec("latency", "latency", 0.99, threshold=10.0), SloSpec("cost", "cost_per_call", 0.99, threshold=0.01),
            SloSpec("validity", "validity", 0.99), SloSpec("quality", "quality", 0.9, threshold=0.5),
            SloSpec("support availability", "availability", 0.995, feature="support"),
            SloSpec("mini ttft", "ttft", 0.95, threshold=1.0, model="gpt-4o-mini")]
    engine = AlertEngine(path, Config(slos=slos, alerts=AlertSettings(
        daily_cost_usd={"*": 5.0, "support": 2.0}, tokens_per_call={"support": 5000})))
    try:
        findings = engine.evaluate(NOW)
        rows = {row.spec.name: row for row in engine.slo_rows}
    finally:
        engine.close()
    assert findings == [], [(f.key, f.value_text) for f in findings]
    assert exit_code(findings) == 0
    assert rows["availability"].events > 2000 and rows["availability"].current > 0.99
    assert rows["quality"].events > 500 and rows["quality"].current == 1.0


def test_fast_availability_burn_pages_with_an_example_from_the_burn(store):
    store.add(*last(40, feature="support", error="429")[::2], *last(40, feature="support")[1::2])
    findings = evaluate(store.write(), SloSpec("support availability", "availability", 0.99, feature="support"),
                        error_spike={"rate_limit": 0.99, "provider": 0.99, "validation": 0.99, "guardrail": 0.99})
    finding = only(findings, "slo_burn")
    assert (finding.severity, finding.window, finding.scope) == ("page", "1h & 5m", "feature=support")
    assert finding.value >= 14.4 and finding.threshold == 14.4
    feature, start_ns, errors_api, *_ = example_of(store.path, finding)
    assert feature == "support" and errors_api == 1 and start_ns >= (NOW - 300) * NS
    assert exit_code(findings) == 2


def test_slow_availability_burn_opens_a_ticket(tmp_path):
    store = Store(tmp_path / "slow.db")
    # Three days at 3% failures against 99%: a 3× burn, too slow for a page.
    rng = random.Random(5)
    store.add(*[Call(NOW - 3 * DAY + i * 600, "support", error="500" if rng.random() < 0.03 else None)
                for i in range(3 * DAY // 600)])
    findings = evaluate(store.write(), SloSpec("availability", "availability", 0.99))
    finding = only(findings, "slo_burn")
    assert (finding.severity, finding.window, finding.threshold) == ("ticket", "3d & 6h", 1.0)
    assert 1.0 <= finding.value < 6
    assert exit_code(findings) == 1


def test_an_slo_scoped_to_a_model_or_feature_ignores_other_traffic(store):
    store.add(*last(40, feature="search", model="gpt-4o", error="500"))
    path = store.write()
    quiet = {"error_spike": {"rate_limit": 0.99, "provider": 0.99, "validation": 0.99, "guardrail": 0.99}}
    assert evaluate(path, SloSpec("mini", "availability", 0.99, model="gpt-4o-mini"), **quiet) == []
    assert evaluate(path, SloSpec("support", "availability", 0.99, feature="support"), **quiet) == []
    scoped = only(evaluate(path, SloSpec("4o", "availability", 0.99, model="gpt-4o"), **quiet), "slo_burn")
    assert scoped.scope == "model=gpt-4o" and scoped.severity == "page"


@pytest.mark.parametrize(("spec", "anomaly"), [
    (SloSpec("ttft", "ttft", 0.95, threshold=2.0, feature="support"), {"ttft": 5.0, "duration": 6.5}),
    (SloSpec("latency", "latency", 0.99, threshold=10.0), {"ttft": 1.0, "duration": 30.0}),
    (SloSpec("cost", "cost_per_call", 0.99, threshold=0.01), {"model": "gpt-4o", "inp": 20_000, "out": 2_000}),
    (SloSpec("validity", "validity", 0.99), {"validation": True}),
    (SloSpec("quality", "quality", 0.9, threshold=0.5), {"score": 0.2}),
], ids=["ttft", "latency", "cost_per_call", "validity", "quality"])
def test_each_slo_kind_burns_on_its_own_bad_events(store, spec, anomaly):
    path = Store(store.path, list(store.calls))
    quiet = {"error_spike": {"rate_limit": 0.99, "provider": 0.99, "validation": 0.99, "guardrail": 0.99},
             "prompt_regression_factor": 1000, "cache_hit_drop": 0.99, "ttft_rise": 1000, "decode_drop": 0.99}
    # Before: the healthy week alone is within every objective.
    assert evaluate(path.write(), spec, **quiet) == []
    store.add(*last(30, feature="support", **anomaly))
    findings = evaluate(store.write(), spec, **quiet)
    finding = only(findings, "slo_burn")
    assert finding.severity == "page" and finding.key == f"slo:{spec.name}"
    assert finding.value >= finding.threshold
    feature, start_ns, *_ = example_of(store.path, finding)
    assert feature == "support" and start_ns >= (NOW - 1800) * NS


def test_daily_cost_budget_projected_then_exceeded(store):
    # 60 gpt-4o calls of 20,000 + 500 tokens in the last hour: $0.055 each, $3.30 so far today,
    # and at $3.30/h for the 12.9 h left of the (UTC) day, ~$46 by midnight.
    store.add(*last(60, within_s=3000, feature="support", model="gpt-4o", inp=20_000, out=500))
    path = store.write()
    projected = only(evaluate(path, daily_cost_usd={"support": 20.0}), "daily_cost")
    assert projected.severity == "ticket" and "projected" in projected.title
    assert projected.value == pytest.approx(46, rel=0.05) and projected.scope == "feature=support"
    exceeded = only(evaluate(path, daily_cost_usd={"support": 2.0}), "daily_cost")
    assert exceeded.severity == "page" and exceeded.value == pytest.approx(3.3, rel=0.05)
    assert exceeded.window == "today" and example_of(path, exceeded)[0] == "support"
    assert [f for f in evaluate(path, daily_cost_usd={"support": 100.0}) if f.rule == "daily_cost"] == []
    # Search spends little; and the total over every feature ("*") is over a small budget.
    assert [f for f in evaluate(path, daily_cost_usd={"search": 2.0}) if f.rule == "daily_cost"] == []
    assert only(evaluate(path, daily_cost_usd={"*": 2.0}), "daily_cost").scope == "all features"


def test_token_budget_counts_calls_over_it(store):
    store.add(*last(7, feature="support", inp=9_000, out=500, cache_read=0))
    finding = only(evaluate(store.write(), tokens_per_call={"support": 8_000}), "token_budget")
    assert finding.value == 7 and finding.threshold == 8_000 and finding.severity == "ticket"
    assert example_of(store.path, finding)[0] == "support"


def test_prompt_version_cost_regression(store):
    store.add(*last(25, feature="support", version="v3", inp=3_000))
    finding = only(evaluate(store.write()), "prompt_regression")
    assert finding.key == "prompt:support:support-prompt@v3" and finding.severity == "ticket"
    assert finding.value >= 1.5 and finding.threshold == 1.5
    assert finding.window == "1h vs prior 7d"


def test_a_new_prompt_version_at_the_same_cost_is_not_a_regression(store):
    store.add(*last(25, feature="support", version="v3"))
    assert [f for f in evaluate(store.write()) if f.rule == "prompt_regression"] == []


def test_cache_hit_rate_drop(store):
    store.add(*last(30, feature="support", cache_read=0))
    finding = only(evaluate(store.write()), "cache_drop")
    assert finding.key == "cache:support" and finding.value < 0.2 * finding.threshold


@pytest.mark.parametrize(("name", "anomaly"), [
    ("rate_limit", {"error": "429"}), ("provider", {"error": "500"}),
    ("validation", {"validation": True}), ("guardrail", {"guardrail": True}),
])
def test_error_spikes_per_class(store, name, anomaly):
    store.add(*last(30, within_s=240, feature="search"))
    store.add(*last(12, within_s=240, feature="search", **anomaly))
    findings = evaluate(store.write())
    spikes = [f for f in findings if f.rule == "error_spike"]
    assert [f.key for f in spikes] == [f"errors:{name}"], [(f.key, f.value_text) for f in findings]
    (spike,) = spikes
    assert spike.window == "5m" and spike.value >= spike.threshold
    assert spike.severity == "page"  # 12 of 42 calls: far over twice each threshold
    assert example_of(store.path, spike)[0] == "search"


def test_provider_decoding_slowdown(store):
    store.add(*last(30, within_s=800, feature="search", ttft=0.5, duration=10.0))
    finding = only(evaluate(store.write()), "provider_health")
    assert finding.key == "health:gpt-4o-mini:decode" and finding.value < finding.threshold


def test_time_to_first_token_up_with_stable_prompts(store):
    store.add(*last(30, within_s=800, feature="search", ttft=2.5, duration=4.0))
    finding = only(evaluate(store.write()), "provider_health")
    assert finding.key == "health:gpt-4o-mini:ttft" and finding.value > finding.threshold


def test_time_to_first_token_up_because_prompts_grew_is_not_the_provider(store):
    store.add(*last(30, within_s=800, feature="search", ttft=2.5, duration=4.0, inp=4_000, cache_read=2_400))
    assert [f for f in evaluate(store.write()) if f.rule == "provider_health"] == []


# --- hysteresis and acknowledgement ----------------------------------------------------------------


class Scripted(AlertEngine):
    """The state machine alone: `evaluate` returns what the test says holds now."""

    def __init__(self, clear_after_s: float = 180) -> None:
        super().__init__("unused.db", Config(alerts=AlertSettings(clear_after_s=clear_after_s)))
        self.holding: list[Finding] = []

    def evaluate(self, now_s: float | None = None) -> list[Finding]:
        return list(self.holding)


def finding(severity: str = "page") -> Finding:
    return Finding("slo:x", "slo_burn", severity, "x burning", 20.0, 14.4, "20×", "1h & 5m", "all")


def test_alerts_do_not_flap_and_resolve_after_a_quiet_spell():
    engine = Scripted(clear_after_s=180)
    engine.holding = [finding()]
    (state,) = engine.update(1000)
    assert state.firing and state.since_s == 1000
    engine.holding = []
    assert engine.update(1100)[0].firing  # quiet for 100 s < 180 s: still firing
    engine.holding = [finding()]
    assert engine.update(1150)[0].since_s == 1000  # back on: the same alert, not a new one
    engine.holding = []
    assert engine.update(1300)[0].firing
    (state,) = engine.update(1340)  # 190 s quiet
    assert not state.firing and state.resolved_s == 1340
    engine.holding = [finding()]
    (state,) = engine.update(1400)
    assert state.firing and state.since_s == 1400  # fired again after resolving: a new alert
    engine.holding = []
    engine.update(1600)
    assert engine.update(1600 + 3601) == []  # resolved over an hour ago: forgotten


def test_acknowledged_alerts_stay_acknowledged_until_they_resolve():
    engine = Scripted()
    engine.holding = [finding("ticket")]
    engine.update(0)
    assert engine.acknowledge("slo:x") and not engine.acknowledge("nope")
    engine.holding = [finding("page")]  # escalates: still the same, acknowledged alert
    (state,) = engine.update(10)
    assert state.acknowledged and state.finding.severity == "page"
    engine.holding = []
    engine.update(500)
    assert not engine.acknowledge("slo:x")  # resolved
    engine.holding = [finding()]
    (state,) = engine.update(600)
    assert state.firing and not state.acknowledged


def test_exit_codes():
    assert exit_code([]) == 0
    assert exit_code([finding("ticket")]) == 1
    assert exit_code([finding("ticket"), finding("page")]) == 2


# --- the config file ---------------------------------------------------------------------------------

VALID = """\
[[slo]]
name = "checkout availability"
kind = "availability"
objective = "99.5%"
feature = "checkout"

[[slo]]
kind = "ttft"
threshold = "300ms"
objective = 0.95
window = "7d"
model = "gpt-4o"

[budgets.daily_cost]
"*" = 200
support = "$50"

[budgets.tokens_per_call]
support = 8000

[alerts]
prompt_regression_factor = 2
clear_after = "5m"

[alerts.error_spike]
rate_limit = "10%"
"""


def test_a_valid_config(tmp_path):
    path = tmp_path / "llmobs.toml"
    path.write_text(VALID)
    config = load_config(path)
    first, second = config.slos
    assert (first.name, first.kind, first.objective, first.window_s, first.feature) == (
        "checkout availability", "availability", 0.995, 30 * DAY, "checkout")
    assert (second.name, second.threshold, second.window_s, second.model) == ("ttft gpt-4o", 0.3, 7 * DAY, "gpt-4o")
    alerts = config.alerts
    assert alerts.daily_cost_usd == {"*": 200.0, "support": 50.0} and alerts.tokens_per_call == {"support": 8000}
    assert alerts.prompt_regression_factor == 2 and alerts.clear_after_s == 300
    assert alerts.error_spike["rate_limit"] == 0.10 and alerts.error_spike["provider"] == 0.02


@pytest.mark.parametrize(("replace", "line", "reason"), [
    ('feature = "checkout"', 5, "unknown key 'featur'"),
    ('objective = "99.5%"', 4, "objective must be between"),
    ('threshold = "300ms"', 7, "needs a threshold"),  # no such line: the SLO's own
    ('support = 8000', 19, "positive whole number"),
    ('rate_limit = "10%"', 26, "not a fraction"),
    ('[alerts]', 1, "unknown section [alarms]"),
])
def test_config_errors_name_the_line_and_the_reason(tmp_path, replace, line, reason):
    broken = {
        'feature = "checkout"': 'featur = "checkout"',
        'objective = "99.5%"': 'objective = "150%"',
        'threshold = "300ms"': '',
        'support = 8000': 'support = -5',
        'rate_limit = "10%"': 'rate_limit = "lots"',
        '[alerts]': '[alarms]',
    }[replace]
    text = VALID.replace(replace, broken, 1)
    path = tmp_path / "llmobs.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert reason in message
    if line > 1:
        assert message.startswith(f"{path}:{line}:"), message
