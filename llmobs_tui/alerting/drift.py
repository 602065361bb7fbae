"""The drift rule: a feature's token lengths per call shifted against the 7 days before.

For each feature with at least `drift_min_calls` calls in the window (and in the baseline week), the
population stability index of its input- and output-token histograms (store/drift.py: the
baseline's deciles, half a call of smoothing per bin) is compared with `drift_psi`. Per feature,
because a change in the mix of features moves the pooled distribution while no feature changed.
A shifted distribution is a ticket, not a page: nothing is failing, something is different.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmobs_tui.config import AlertSettings, format_duration
from store import drift
from store.alerts import PlannedRead, SharedRollups
from store.connection import Connection

if TYPE_CHECKING:
    from llmobs_tui.alerting.engine import Finding

NS = 1_000_000_000


def evaluate_drift(db: Connection, settings: AlertSettings, now_s: float,
                   rollups: SharedRollups | None = None, examples: Any = None) -> list[Finding]:
    """`rollups`: the engine's evaluation in progress, whose week of rollups its other rules read too.
    `examples`: where length_example is read from when not SQLite's store.drift (store.clickhouse.alerts)."""
    from llmobs_tui.alerting.engine import Finding

    signals = tuple(s for s in settings.drift_signals if s in drift.DISTRIBUTIONS)
    if not signals:
        return []
    window_s = settings.drift_window_s
    threshold = settings.drift_psi
    window = f"{format_duration(window_s)} vs prior 7d"
    findings = []
    periods = (drift.feature_periods(db, window_s, now_s, signals) if rollups is None
               else shared_feature_periods(rollups, window_s, now_s, signals))
    for feature, (current, baseline) in sorted(periods.items()):
        if current.calls < settings.drift_min_calls or baseline.calls < settings.drift_min_calls:
            continue
        for signal in signals:
            result = drift.psi(current.hists[signal], baseline.hists[signal], settings.drift_min_calls)
            if result.value is None or result.value < threshold:
                continue
            words = drift.SIGNAL_WORDS[signal]
            scope = f"feature={feature}" if feature else "calls without a feature"
            grown = result.most_gained()
            example = None
            detail = f"{result.current_calls:,} calls in the window; baseline {result.baseline_calls:,} calls"
            if grown is not None:
                cur_share, base_share = result.shares()[result.bins.index(grown)]
                detail += f"; {drift.bin_text(grown)} tokens: {cur_share:.0%} of calls (was {base_share:.0%})"
                example = (examples or drift).length_example(db, int((now_s - window_s) * NS), signal, grown.lo,
                                                             grown.hi, feature)
            findings.append(Finding(
                key=f"drift:{feature}:{signal}", rule="drift", severity="ticket",
                title=f"{words} drifted (PSI {result.value:.2f} vs last 7 days) · {scope}",
                value=result.value, threshold=threshold,
                value_text=f"PSI {result.value:.2f} ≥ {threshold:g}", window=window, scope=scope,
                example_trace_id=example, detail=detail))
    return findings


def shared_feature_periods(rollups: SharedRollups, window_s: float, now_s: float,
                           signals: tuple[str, ...]) -> dict[str, tuple[drift.Period, drift.Period]]:
    """drift.feature_periods from the evaluation's shared rollups: the same windows (the baseline
    ends the second before the window starts), the same totals per feature ('' for none)."""
    hists = tuple(f"hist_{s}" for s in signals)
    out: dict[str, tuple[drift.Period, drift.Period]] = {}
    for index, (lo, hi) in enumerate(_period_windows(window_s, now_s)):
        for group in rollups.grouped(lo, hi, ["feature"], hists=hists):
            pair = out.setdefault(group.key["feature"] or "", (drift.Period(hists={s: {} for s in signals}),
                                                                drift.Period(hists={s: {} for s in signals})))
            pair[index].calls, pair[index].refusals = group["calls"], group["refusals"]
            pair[index].validation = group["errors_validation"]
            pair[index].hists = {s: getattr(group, s) for s in signals}  # GroupStats.input_tokens …
    return out


def _period_windows(window_s: float, now_s: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """The window and its baseline as rollup windows (the baseline ends the second before the window starts)."""
    base_start, start, end = drift.windows(window_s, now_s)
    return (start, end), (base_start, start - 1)


def shared_reads(settings: AlertSettings, now_s: float) -> list[PlannedRead]:
    """What shared_feature_periods will ask the evaluation's rollups for (SharedRollups.prefetch_all's form)."""
    signals = tuple(s for s in settings.drift_signals if s in drift.DISTRIBUTIONS)
    if not signals:
        return []
    return [(_period_windows(settings.drift_window_s, now_s), ("feature",), None,
             tuple(f"hist_{s}" for s in signals))]


class DriftRule:
    """evaluate_drift at most once per minute of `now`: its windows start on whole minutes, a
    window against a week moves little in a minute, and an evaluation decodes every dimension
    set's token histograms over 8 days (~170 ms at 120 dimension sets); the engine evaluates every
    10 s."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._findings: list[Finding] = []

    @staticmethod
    def _key_of(settings: AlertSettings, now_s: float) -> tuple:
        return (int(now_s // 60), settings.drift_psi, settings.drift_min_calls, settings.drift_window_s,
                settings.drift_signals)

    def due(self, settings: AlertSettings, now_s: float) -> bool:
        """Whether evaluate(now_s) reads the store (else it returns the last answer)."""
        return self._key_of(settings, now_s) != self._key

    def evaluate(self, db: Connection, settings: AlertSettings, now_s: float,
                 rollups: SharedRollups | None = None, examples: Any = None) -> list[Finding]:
        key = self._key_of(settings, now_s)
        if key != self._key:
            self._findings = evaluate_drift(db, settings, now_s, rollups, examples)
            self._key = key
        return list(self._findings)
