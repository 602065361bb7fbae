"""The alert rules, evaluated from rollups, and the state that keeps alerts from flapping.

`evaluate(now)` is stateless (what `llmobs-tui check` runs once); `update(now)` evaluates and applies
hysteresis (an alert resolves only after its condition has been false for `clear_after`) and keeps
acknowledgements and recently resolved alerts (what the TUI shows).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmobs_tui.alerting import burn
from llmobs_tui.alerting.drift import DriftRule
from llmobs_tui.alerting.drift import shared_reads as shared_drift_reads
from llmobs_tui.alerting.runaway import MAX_FINDINGS, Runaway, RunawayDetector, RunawayReport
from llmobs_tui.config import AlertSettings, Config, SloSpec, format_duration
from store import alerts as store_alerts
from store import histogram
from store.connection import Connection, open_reader, read_snapshot
from store.queries import GroupStats

if TYPE_CHECKING:
    from store.clickhouse.url import ClickHouseUrl

NS = 1_000_000_000
HOUR = 3600
DAY = 86400
WEEK = 7 * DAY
SEVERITY_ORDER = {"page": 0, "ticket": 1}
_RECENT_S = 15 * 60  # provider health: the last quarter hour against the week before it
_SLO_HISTS = {"ttft": ("hist_ttft",), "latency": ("hist_latency",), "cost_per_call": ("hist_cost",)}


@dataclass(slots=True)
class Finding:
    """One rule, for one scope, whose condition holds now."""

    key: str
    rule: str
    severity: str  # "page" | "ticket"
    title: str
    value: float
    threshold: float
    value_text: str
    window: str
    scope: str
    # The engine passes store.alerts' example (trace id, span id) here; __post_init__ splits it, so the
    # Alerts screen can open the trace on the span that made the value (the failed, slowest or
    # costliest call), not on the trace's first LLM span.
    example_trace_id: Any = None
    detail: str = ""
    example_span_id: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.example_trace_id, tuple):
            self.example_trace_id, self.example_span_id = self.example_trace_id

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "rule": self.rule, "severity": self.severity, "title": self.title,
                "value": self.value, "threshold": self.threshold, "value_text": self.value_text,
                "window": self.window, "scope": self.scope, "detail": self.detail,
                "example_trace_id": self.example_trace_id.hex() if self.example_trace_id else None}


@dataclass(slots=True)
class AlertState:
    finding: Finding
    since_s: float
    last_true_s: float
    acknowledged: bool = False
    resolved_s: float | None = None

    @property
    def firing(self) -> bool:
        return self.resolved_s is None


@dataclass(slots=True)
class SloRow:
    spec: SloSpec
    current: float | None  # good share over the SLO window
    budget_left: float | None
    burns: dict[int, float | None] = field(default_factory=dict)  # window → burn rate
    events: int = 0

    def as_json(self) -> dict[str, Any]:
        spec = self.spec
        return {"name": spec.name, "kind": spec.kind, "describe": spec.describe(), "objective": spec.objective,
                "window": format_duration(spec.window_s),
                "threshold": spec.threshold, "scope": spec.scope, "events": self.events, "current": self.current,
                "budget_left": self.budget_left,
                "burn_rate": {format_duration(w): rate for w, rate in self.burns.items()}}


def _fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f}%"


def _scope(where: dict[str, str | None] | None) -> dict[str, str]:
    """A rule's dimension filter as the rollup reads take it: the dimensions it names a value for."""
    return {k: v for k, v in (where or {}).items() if v}


class EngineClosed(RuntimeError):
    """An evaluation was asked of an engine after close()."""


class AlertEngine:
    def __init__(self, db_path: str | os.PathLike[str], config: Config, store_url: ClickHouseUrl | None = None) -> None:
        """`store_url`: evaluate on a ClickHouse store (`--store`) instead of the SQLite one at db_path."""
        self.db_path = Path(db_path)
        self.store_url = store_url
        # The store's reads, by backend: store.alerts (SQLite) or store.clickhouse.alerts, same functions.
        self._reads: Any = store_alerts
        if store_url is not None:
            from store.clickhouse import alerts as clickhouse_alerts

            self._reads = clickhouse_alerts
        self.config = config
        self.settings: AlertSettings = config.alerts
        self.states: dict[str, AlertState] = {}
        self._lock = threading.RLock()  # one evaluation at a time (a worker thread, or `check`)
        self._db: Connection | None = None
        self._closed = False
        # The rollups of the evaluation in progress, read once for all of its rules (None between them).
        self._rollups: store_alerts.SharedRollups | None = None
        self._drift_rule = DriftRule()  # once a minute at most
        self._runaway = RunawayDetector()  # keeps the tool spans' argument digests between evaluations
        self.runaway_report = RunawayReport()  # the last evaluation's runaway agents
        self._decoded: dict[bytes, dict[int, int]] = {}  # the last evaluation's histograms (SharedRollups)
        # The histograms of the last evaluation the drift rule read (its token lengths over 8 days): it reads
        # once a minute, and without them every minute decoded its week afresh (~60 ms at 3M spans).
        self._drift_decoded: dict[bytes, dict[int, int]] = {}
        self.last_evaluated_s: float | None = None
        # Per rule of the last evaluation: (wall ms, CPU ms of the evaluating thread), for bench/tui.py.
        self.last_timings_ms: dict[str, tuple[float, float]] = {}
        self.slo_rows: list[SloRow] = []

    # -- data ------------------------------------------------------------------------------------

    @property
    def db(self) -> Connection:
        if self._closed:
            raise EngineClosed("the alert engine was closed")
        if self._db is None:
            if self.store_url is not None:
                from store.backends import ClickHouseReader

                self._db = ClickHouseReader(self.store_url).client  # a StoreError says why it cannot
            else:
                self._db = open_reader(self.db_path)
        return self._db

    def close(self) -> None:
        """Close the connection once no evaluation uses it. The TUI evaluates in a worker thread that
        may still be reading when the app quits: closing the connection under that read crashed the
        process in SQLite (SIGSEGV, seen at the end of bench.tui_keys). An evaluation asked for after
        this raises EngineClosed instead of opening a new connection nobody would close."""
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None

    # Each rule asks only for the histograms it reads: decoding them is most of an evaluation's cost.
    def _stats(self, start_s: float, end_s: float, where: dict[str, str | None] | None = None,
               hists: tuple[str, ...] = ()) -> GroupStats:
        groups = self._rollup_reads().grouped(int(start_s), int(end_s), [], _scope(where), hists)
        return groups[0] if groups else GroupStats(key={})

    def _grouped(self, start_s: float, end_s: float, by: list[str], hists: tuple[str, ...] = ()) -> list[GroupStats]:
        return self._rollup_reads().grouped(int(start_s), int(end_s), by, hists=hists)

    def _week_hists(self, now_s: float | None) -> set[str]:
        """The histograms this evaluation's rules read over days: the SLOs', the provider health's time
        to first token, the drift rule's token lengths when it is due. SharedRollups reads them with
        the counters, in one pass over each piece."""
        hists = {"hist_ttft"}
        for spec in self.config.slos:
            hists.update(_SLO_HISTS.get(spec.kind, ()))
        if now_s is not None and self._drift_rule.due(self.settings, now_s):
            hists.update(f"hist_{signal}" for signal in self.settings.drift_signals)
        return hists

    def _rollup_plan(self, now_s: float) -> list[store_alerts.PlannedRead]:
        """Every rollup window the rules below will read in an evaluation at `now_s`, as they ask for it
        (_stats / _grouped / the drift rule): SharedRollups.prefetch_all reads them in one query where the
        store prefers that (ClickHouse). A window left out here is still read, by a query of its own
        (tests/test_clickhouse_reports.py counts the queries of an evaluation of every rule)."""
        from store.dashboards import local_midnight

        def stats(start_s: float, end_s: float, where: dict[str, str] | None = None,
                  hists: tuple[str, ...] = ()) -> store_alerts.PlannedRead:
            return [(int(start_s), int(end_s))], (), _scope(dict(where or {})), hists

        def grouped(start_s: float, end_s: float, by: list[str],
                    hists: tuple[str, ...] = ()) -> store_alerts.PlannedRead:
            return [(int(start_s), int(end_s))], by, None, hists

        settings = self.settings
        reads: list[store_alerts.PlannedRead] = [
            ([(int(now_s - w), int(now_s)) for w in (*burn.WINDOWS, spec.window_s)], (),
             _scope({"feature": spec.feature, "model": spec.model}), _SLO_HISTS.get(spec.kind, ()))
            for spec in self.config.slos if spec.kind != "quality"]
        midnight = local_midnight(now_s)
        for feature in settings.daily_cost_usd:
            where = {} if feature == "*" else {"feature": feature}
            reads += [stats(midnight, now_s, where), stats(now_s - HOUR, now_s, where)]
        reads += [stats(now_s - HOUR, now_s, {"feature": feature}, ("hist_tokens",))
                  for feature in settings.tokens_per_call]
        reads += [grouped(now_s - WEEK, now_s, ["feature", "prompt"]),
                  grouped(now_s - HOUR, now_s, ["feature", "prompt"]),
                  grouped(now_s - WEEK, now_s - HOUR, ["feature"]), grouped(now_s - HOUR, now_s, ["feature"]),
                  stats(now_s - settings.error_spike_window_s, now_s),
                  grouped(now_s - WEEK, now_s - _RECENT_S, ["model"], ("hist_ttft",)),
                  grouped(now_s - _RECENT_S, now_s, ["model"], ("hist_ttft",))]
        if self._drift_rule.due(settings, now_s):
            reads += shared_drift_reads(settings, now_s)
        return reads

    def _rollup_reads(self) -> store_alerts.SharedRollups:
        """The evaluation's shared rollups; a rule called on its own (outside _snapshot) reads afresh."""
        return self._rollups if self._rollups is not None else self._reads.SharedRollups(self.db)

    # -- SLOs ------------------------------------------------------------------------------------

    def slo_events(self, spec: SloSpec, start_s: float, end_s: float) -> tuple[float, float]:
        """(bad, total) events of an SLO in a window."""
        if spec.kind == "quality":
            return self._quality_events(spec, start_s, end_s)
        stats = self._stats(start_s, end_s, {"feature": spec.feature, "model": spec.model},
                            _SLO_HISTS.get(spec.kind, ()))
        if spec.kind == "availability":
            return stats["errors_api"], stats["calls"]
        if spec.kind == "validity":
            return stats["errors_validation"], stats["calls"]
        counts = {"ttft": stats.ttft, "latency": stats.latency, "cost_per_call": stats.cost}[spec.kind]
        bound = spec.threshold * 1e6  # seconds → µs; USD → µUSD
        total = histogram.count(counts)
        bad = sum(c for b, c in counts.items() if c > 0 and histogram.bucket_value(b) > bound)
        return bad, total

    def _quality_events(self, spec: SloSpec, start_s: float, end_s: float) -> tuple[float, float]:
        return self._reads.quality_events(self.db, spec.threshold, int(start_s * NS), int(end_s * NS),
                                          spec.evaluation, spec.feature, spec.model)

    def _slo_example(self, spec: SloSpec, start_s: float) -> tuple[bytes, bytes | None] | None:
        """The call that made the value: the slowest, the costliest, or the latest failed one."""
        return self._reads.slo_example(self.db, spec.kind, spec.threshold, int(start_s * NS), spec.feature, spec.model)

    def evaluate_slos(self, now_s: float) -> tuple[list[Finding], list[SloRow]]:
        findings = []
        rows = []
        for spec in self.config.slos:
            if self._rollups is not None and spec.kind != "quality":
                # Every window of this SLO in one read where the store prefers that (ClickHouse).
                self._rollups.prefetch([(int(now_s - w), int(now_s)) for w in (*burn.WINDOWS, spec.window_s)],
                                       _scope({"feature": spec.feature, "model": spec.model}),
                                       _SLO_HISTS.get(spec.kind, ()))
            events = {w: self.slo_events(spec, now_s - w, now_s) for w in burn.WINDOWS}
            bad, total = self.slo_events(spec, now_s - spec.window_s, now_s)
            row = SloRow(spec, None if not total else 1 - bad / total, burn.budget_left(bad, total, spec.objective),
                         {w: burn.burn_rate(*events[w], spec.objective) for w in (HOUR, 6 * HOUR, 3 * DAY)},
                         int(total))
            rows.append(row)
            verdict = burn.firing_tier(events, spec.objective)
            if verdict is None:
                continue
            findings.append(Finding(
                key=f"slo:{spec.name}", rule="slo_burn", severity=verdict.severity,
                title=f"{spec.name}: error budget burning {verdict.long_burn:.1f}×",
                value=verdict.long_burn, threshold=verdict.factor,
                value_text=f"{verdict.long_burn:.1f}× / {verdict.short_burn:.1f}× ≥ {verdict.factor:g}×",
                window=f"{format_duration(verdict.long_s)} & {format_duration(verdict.short_s)}", scope=spec.scope,
                example_trace_id=self._slo_example(spec, now_s - verdict.short_s),
                detail=f"{spec.describe()}; budget left {_fmt_pct(row.budget_left)}"))
        return findings, rows

    # -- cost and tokens ---------------------------------------------------------------------------

    def evaluate_budgets(self, now_s: float) -> list[Finding]:
        from store.dashboards import local_midnight

        findings = []
        midnight = local_midnight(now_s)
        hours_left = max(0.0, (midnight + DAY - now_s) / HOUR)
        for feature, budget in self.settings.daily_cost_usd.items():
            where = {} if feature == "*" else {"feature": feature}
            today = self._stats(midnight, now_s, where)["cost_nusd"] / 1e9
            last_hour = self._stats(now_s - HOUR, now_s, where)["cost_nusd"] / 1e9
            projected = today + last_hour * hours_left
            scope = "all features" if feature == "*" else f"feature={feature}"
            example = self._reads.costliest_trace_example(
                self.db, int(midnight * NS), None if feature == "*" else feature,
            ) if (today > budget or projected > budget) else None
            if today > budget:
                findings.append(Finding(f"budget:{feature}", "daily_cost", "page",
                                        f"Daily cost budget exceeded ({scope})", today, budget,
                                        f"${today:,.2f} > ${budget:,.2f}", "today", scope, example))
            elif projected > budget:
                findings.append(Finding(f"budget:{feature}", "daily_cost", "ticket",
                                        f"Daily cost budget projected to run out ({scope})", projected, budget,
                                        f"${projected:,.2f} projected > ${budget:,.2f} (${today:,.2f} so far)",
                                        "today", scope, example,
                                        f"at ${last_hour:,.2f}/h for the {hours_left:.1f} h left today"))
        for feature, limit in self.settings.tokens_per_call.items():
            stats = self._stats(now_s - HOUR, now_s, {"feature": feature}, ("hist_tokens",))
            over = sum(c for b, c in stats.tokens.items() if c > 0 and histogram.bucket_value(b) > limit)
            if over:
                example = self._reads.over_token_budget_example(self.db, int((now_s - HOUR) * NS), feature, limit)
                findings.append(Finding(f"tokens:{feature}", "token_budget", "ticket",
                                        f"Calls over the token budget (feature={feature})", over, limit,
                                        f"{over} calls > {limit:,} tokens", "1h", f"feature={feature}", example))
        return findings

    def evaluate_prompt_regressions(self, now_s: float) -> list[Finding]:
        """Cost per call of a (feature, prompt version) above `factor` × that feature's cost per call
        over the prior 7 days without this version.

        The baseline is the feature's other versions of the same prompt: calls that carry no prompt
        version (embeddings, tools, a cheap router) cost a different amount by nature, and comparing a
        prompt against them would flag every prompt on the first day."""
        findings = []
        factor = self.settings.prompt_regression_factor
        week = {tuple(g.key.values()): g for g in self._grouped(now_s - WEEK, now_s, ["feature", "prompt"])}
        recent = self._grouped(now_s - HOUR, now_s, ["feature", "prompt"])
        per_prompt: dict[tuple[Any, Any], tuple[int, int]] = {}  # (feature, prompt id) → (cost, priced calls)
        for (feature, prompt_id, version), g in week.items():
            if version:
                cost, calls = per_prompt.get((feature, prompt_id), (0, 0))
                per_prompt[(feature, prompt_id)] = (cost + g["cost_nusd"], calls + g["calls"] - g["unpriced_calls"])
        for g in recent:
            feature, prompt_id, version = g.key.get("feature"), g.key.get("prompt_id"), g.key.get("prompt_version")
            priced = g["calls"] - g["unpriced_calls"]
            if not version or priced < self.settings.min_calls or feature is None:
                continue
            mine = week.get((feature, prompt_id, version))
            prompt_cost, prompt_calls = per_prompt.get((feature, prompt_id), (0, 0))
            base_cost = prompt_cost - (mine["cost_nusd"] if mine else 0)
            base_calls = prompt_calls - ((mine["calls"] - mine["unpriced_calls"]) if mine else 0)
            if base_calls < self.settings.min_calls or base_cost <= 0:
                continue
            current = g["cost_nusd"] / priced
            baseline = base_cost / base_calls
            if current >= factor * baseline:
                example = self._reads.prompt_version_example(self.db, int((now_s - HOUR) * NS), feature, version)
                label = f"{prompt_id or 'prompt'}@{version}"
                findings.append(Finding(
                    f"prompt:{feature}:{label}", "prompt_regression", "ticket",
                    f"Prompt {label} costs {current / baseline:.1f}× per call (feature={feature})",
                    current / baseline, factor,
                    f"${current / 1e9:.4f} vs ${baseline / 1e9:.4f} per call", "1h vs prior 7d",
                    f"feature={feature} prompt={label}", example,
                    f"{priced} calls in the last hour; baseline: {base_calls} calls of other versions"))
        return findings

    def evaluate_cache(self, now_s: float) -> list[Finding]:
        findings = []
        drop = self.settings.cache_hit_drop
        week = {g.key.get("feature"): g for g in self._grouped(now_s - WEEK, now_s - HOUR, ["feature"])}
        for g in self._grouped(now_s - HOUR, now_s, ["feature"]):
            feature = g.key.get("feature")
            before = week.get(feature)
            if feature is None or before is None or g["calls"] < self.settings.min_calls:
                continue
            now_rate, week_rate = g.cache_hit_rate, before.cache_hit_rate
            if now_rate is None or week_rate is None or week_rate < 0.05 or before["calls"] < self.settings.min_calls:
                continue
            if now_rate < week_rate * (1 - drop):
                example = self._reads.feature_call_example(self.db, int((now_s - HOUR) * NS), feature)
                findings.append(Finding(
                    f"cache:{feature}", "cache_drop", "ticket", f"Cache-hit rate dropped (feature={feature})",
                    now_rate, week_rate * (1 - drop), f"{now_rate:.1%} vs {week_rate:.1%} last week",
                    "1h vs prior 7d", f"feature={feature}", example,
                    f"more than {drop:.0%} below the prior week"))
        return findings

    def evaluate_error_spikes(self, now_s: float) -> list[Finding]:
        findings = []
        window = self.settings.error_spike_window_s
        stats = self._stats(now_s - window, now_s)
        calls = stats["calls"]
        if calls < self.settings.min_calls:
            return findings
        counters = {"rate_limit": "err_rate_limit", "provider": "err_provider",
                    "validation": "errors_validation", "guardrail": "errors_guardrail"}
        for name, threshold in self.settings.error_spike.items():
            count = stats[counters[name]]
            rate = count / calls
            if rate < threshold:
                continue
            # The failed billed call (the provider's 429 itself), not a wrapper span that inherited it.
            example = self._reads.error_example(self.db, int((now_s - window) * NS), name,
                                                 subclass=name in ("rate_limit", "provider"))
            findings.append(Finding(
                f"errors:{name}", "error_spike", "page" if rate >= 2 * threshold else "ticket",
                f"{name.replace('_', ' ')} errors spiking", rate, threshold,
                f"{rate:.1%} of {calls:,} calls ≥ {threshold:.1%}", format_duration(window), "all", example,
                f"{count} {name} errors"))
        return findings

    def evaluate_provider_health(self, now_s: float) -> list[Finding]:
        """Per model: decode speed down, or time to first token up while prompts stay the same size."""
        findings = []
        recent_s = _RECENT_S
        week = {g.key.get("model"): g for g in self._grouped(now_s - WEEK, now_s - recent_s, ["model"], ("hist_ttft",))}
        for g in self._grouped(now_s - recent_s, now_s, ["model"], ("hist_ttft",)):
            model = g.key.get("model")
            before = week.get(model)
            if (not model or before is None or g["calls"] < self.settings.min_calls
                    or before["calls"] < self.settings.min_calls):
                continue
            if g["decode_ns"] and before["decode_ns"]:
                now_rate = g["decode_tokens"] / (g["decode_ns"] / NS)
                week_rate = before["decode_tokens"] / (before["decode_ns"] / NS)
                if now_rate < week_rate * (1 - self.settings.decode_drop):
                    findings.append(Finding(
                        f"health:{model}:decode", "provider_health", "ticket", f"{model}: decoding slowed down",
                        now_rate, week_rate * (1 - self.settings.decode_drop),
                        f"{now_rate:,.0f} vs {week_rate:,.0f} tok/s last week", "15m vs prior 7d", f"model={model}",
                        self._reads.streaming_call_example(self.db, int((now_s - recent_s) * NS), model)))
            # The median, not p95: a p95 over a quarter hour of one model's streaming calls is a handful
            # of tail samples (every provider has a 3-6x slow tail), and paging on that is noise.
            if min(histogram.count(g.ttft), histogram.count(before.ttft)) < self.settings.min_calls:
                continue
            median_now = histogram.quantiles(g.ttft, (0.5,))[0]
            median_week = histogram.quantiles(before.ttft, (0.5,))[0]
            answered_now = g["calls"] - g["errors_api"]
            answered_week = before["calls"] - before["errors_api"]
            inp_now = g["input_tokens"] / answered_now if answered_now > 0 else 0
            inp_week = before["input_tokens"] / answered_week if answered_week > 0 else 0
            stable = inp_week > 0 and abs(inp_now - inp_week) <= 0.25 * inp_week
            if median_now and median_week and stable and median_now > self.settings.ttft_rise * median_week:
                findings.append(Finding(
                    f"health:{model}:ttft", "provider_health", "ticket", f"{model}: time to first token up",
                    median_now / 1e6, self.settings.ttft_rise * median_week / 1e6,
                    f"median {median_now / 1e6:.2f}s vs {median_week / 1e6:.2f}s last week", "15m vs prior 7d",
                    f"model={model}",
                    self._reads.slow_first_token_example(self.db, int((now_s - recent_s) * NS), model,
                                                          int(self.settings.ttft_rise * median_week * 1000)),
                    f"input tokens per call unchanged ({inp_now:,.0f} vs {inp_week:,.0f}), so the provider is slower"))
        return findings

    def evaluate_drift(self, now_s: float) -> list[Finding]:
        """Token lengths per call shifted against the prior week (llmobs_tui/alerting/drift.py)."""
        examples = self._reads if self.store_url is not None else None
        return self._drift_rule.evaluate(self.db, self.settings, now_s, self._rollups, examples)

    def evaluate_runaway(self, now_s: float) -> list[Finding]:
        """Agents looping on one tool call, or still running past a ceiling (llmobs_tui/alerting/runaway.py)."""
        settings = self.settings
        report = self.runaway_report = (self._runaway.detect(self.db, settings, now_s) if self.store_url is None
                                        else self._runaway.detect_clickhouse(self.db, settings, now_s))
        window = format_duration(settings.runaway_window_s)
        findings: list[Finding] = []
        for runaway in report.over_ceiling[:MAX_FINDINGS]:
            findings.append(Finding(
                runaway.key, "runaway", settings.runaway_severity,
                f"Running agent over its ceiling: {runaway.over[0]} ({_short(runaway.name)})",
                runaway.ratio, 1.0, " · ".join(runaway.over), window, f"trace {runaway.trace_id.hex()}",
                (runaway.trace_id, runaway.span_id),
                f"still running (its root span has not arrived): {runaway.steps:,} steps, "
                f"{runaway.tokens:,} tokens, ${runaway.cost_nusd / 1e9:,.2f} so far"))
        for runaway in report.looping[:MAX_FINDINGS]:
            repeats = (settings.runaway_conversation_repeats if runaway.kind == "conversation"
                       else settings.runaway_repeats)
            findings.append(_loop_finding(runaway, repeats,
                                          settings.runaway_severity if runaway.running else "ticket", window))
        return findings

    # -- all rules ---------------------------------------------------------------------------------

    def evaluate(self, now_s: float | None = None) -> list[Finding]:
        """Every rule once, from one snapshot of the store."""
        now_s = time.time() if now_s is None else now_s
        findings: list[Finding] = []
        timings: dict[str, tuple[float, float]] = {}

        def slos(now_s: float) -> list[Finding]:
            slo_findings, self.slo_rows = self.evaluate_slos(now_s)
            return slo_findings

        with self._snapshot(now_s):
            if self.store_url is not None and self._rollups is not None:  # SQLite reads each row once anyway
                self._rollups.prefetch_all(self._rollup_plan(now_s))
            for name, rule in (("slo_burn", slos), ("budgets", self.evaluate_budgets),
                               ("prompt_regression", self.evaluate_prompt_regressions),
                               ("cache_drop", self.evaluate_cache), ("error_spike", self.evaluate_error_spikes),
                               ("provider_health", self.evaluate_provider_health), ("drift", self.evaluate_drift),
                               ("runaway", self.evaluate_runaway)):
                wall, cpu = time.perf_counter(), time.thread_time()
                findings += rule(now_s)
                # A rule pays for the shared rollup pieces it reads first: the order is part of the figure.
                timings[name] = ((time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000)
            self.last_evaluated_s = now_s
        self.last_timings_ms = timings
        findings.sort(key=lambda f: (SEVERITY_ORDER[f.severity], f.key))
        return findings

    def slo_table(self, now_s: float) -> list[SloRow]:
        """Only the SLO table (for `report`), from one snapshot of the store."""
        with self._snapshot(None):
            return self.evaluate_slos(now_s)[1]

    @contextmanager
    def _snapshot(self, drift_at_s: float | None) -> Iterator[None]:
        """One evaluation at a time, all of its queries reading one consistent state of the store."""
        drift_due = drift_at_s is not None and self._drift_rule.due(self.settings, drift_at_s)
        # ClickHouse has no read snapshot: its reads fold whatever is inserted when each runs.
        with self._lock, (read_snapshot(self.db) if self.store_url is None else nullcontext()):
            decoded = {**self._drift_decoded, **self._decoded} if drift_due else self._decoded
            self._rollups = self._reads.SharedRollups(self.db, self._week_hists(drift_at_s), decoded)
            try:
                yield
                self._decoded = self._rollups.decoded
                if drift_due:
                    self._drift_decoded = self._rollups.decoded
            finally:
                self._rollups = None

    def update(self, now_s: float | None = None) -> list[AlertState]:
        """Evaluate and apply hysteresis: fire at once, resolve after `clear_after` of quiet."""
        now_s = time.time() if now_s is None else now_s
        with self._lock:
            return self._apply(self.evaluate(now_s), now_s)

    def _apply(self, findings: list[Finding], now_s: float) -> list[AlertState]:
        active = set()
        for finding in findings:
            active.add(finding.key)
            state = self.states.get(finding.key)
            if state is None or not state.firing:
                self.states[finding.key] = AlertState(finding, since_s=now_s, last_true_s=now_s)
            else:
                state.finding = finding
                state.last_true_s = now_s
        for key, state in list(self.states.items()):
            if key in active:
                continue
            if state.firing and now_s - state.last_true_s >= self.settings.clear_after_s:
                state.resolved_s = now_s
            if state.resolved_s is not None and now_s - state.resolved_s > 3600:
                del self.states[key]  # resolved more than an hour ago
        return self.alerts()

    def alerts(self) -> list[AlertState]:
        states = list(self.states.values())  # one C-level copy: safe while a worker thread updates
        return sorted(states, key=lambda s: (not s.firing, SEVERITY_ORDER[s.finding.severity], -s.since_s))

    def acknowledge(self, key: str) -> bool:
        # No lock: a keypress must not wait for an evaluation in progress. Setting one attribute is
        # atomic, and an alert that re-fires later is a new AlertState, unacknowledged, as it should be.
        state = self.states.get(key)
        if state is None or not state.firing:
            return False
        state.acknowledged = True
        return True


def _short(name: str, limit: int = 40) -> str:
    """A tool or span name cut for a title (the screens render titles as Text, never markup)."""
    name = " ".join(name.split())
    return name if len(name) <= limit else name[:limit - 1] + "…"


def _loop_finding(runaway: Runaway, repeats: int, severity: str, window: str) -> Finding:
    """A loop's finding: its title names the tool and the arguments' hash, never the arguments."""
    state = "running" if runaway.running else "finished"
    if runaway.kind == "conversation":
        title = (f"Conversation repeats {_short(runaway.name)} ×{runaway.repeats} with the same arguments "
                 f"#{runaway.digest[:8]} across {runaway.turns} turns")
        scope = f"conversation {_short(runaway.conversation_id or '', 64)}"
    else:
        title = (f"Agent loop: {_short(runaway.name)} ×{runaway.repeats} with the same arguments "
                 f"#{runaway.digest[:8]} ({state})")
        scope = f"trace {runaway.trace_id.hex()}"
    detail = f"arguments {runaway.arguments}; the latest call opens the trace"
    if runaway.running:
        detail += "; still running (its root span has not arrived)"
    return Finding(runaway.key, "runaway", severity, title, runaway.repeats, repeats,
                   f"{runaway.repeats} calls ≥ {repeats}", window, scope, (runaway.trace_id, runaway.span_id), detail)


def exit_code(findings: list[Finding]) -> int:
    """`llmobs-tui check`: 0 all clear, 1 ticket-level, 2 page-level."""
    if any(f.severity == "page" for f in findings):
        return 2
    if findings:
        return 1
    return 0
