"""The rule engine as the TUI's alert source: evaluated off the UI thread every few seconds.

The engine reads with its own synchronous SQLite connection in a worker thread (a full evaluation
is tens of milliseconds on a large store, which must never stall a keypress), and the screens read
the last result, which is plain data.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llmobs_tui.alerting.engine import AlertEngine, AlertState, SloRow
from llmobs_tui.alerting.runaway import RunawayReport
from llmobs_tui.alerting.source import AlertSource, AlertView
from llmobs_tui.config import Config


class EngineAlerts(AlertSource):
    def __init__(self, db_path: Any, config: Config, interval_s: float = 10.0, store_url: Any = None) -> None:
        """`store_url`: evaluate the rules on that ClickHouse store (`llmobs-tui --store`) instead."""
        self.engine = AlertEngine(db_path, config, store_url)
        self.config = config
        self.interval_s = interval_s
        self._views: list[AlertView] = []
        self.slo_rows: list[SloRow] = []
        self._last_s: float | None = None
        self.error: str | None = None
        origin = f"{config.path}" if config.path else "the defaults (no llmobs.toml)"
        self.empty_message = (f"Nothing firing. {len(config.slos)} SLO(s) and the built-in rules from {origin} "
                              f"are evaluated every {interval_s:g} s.")

    async def evaluate(self, reader: Any, now_s: float) -> None:
        if self._last_s is not None and abs(now_s - self._last_s) < self.interval_s:
            return
        await asyncio.to_thread(self.evaluate_now, now_s)

    def evaluate_now(self, now_s: float) -> None:
        """One evaluation, in the calling thread (the live loop calls it in a worker thread)."""
        self._last_s = now_s
        try:
            states = self.engine.update(now_s)
        except Exception as exc:  # a rule that fails must not take the monitor down; say so instead
            self.error = f"alert rules failed: {exc}"
            return
        self.error = None
        self.slo_rows = list(self.engine.slo_rows)
        self._views = [self._view(state) for state in states]

    def refresh_soon(self) -> None:
        """Evaluate at the next tick (after an acknowledgement, say) instead of waiting the interval."""
        self._last_s = None

    @staticmethod
    def _view(state: AlertState) -> AlertView:
        finding = state.finding
        return AlertView(key=finding.key, firing=state.firing, severity=finding.severity, title=finding.title,
                         value_text=finding.value_text, since_s=state.since_s, scope=finding.scope,
                         example_trace_id=finding.example_trace_id, example_span_id=finding.example_span_id,
                         detail=finding.detail, window=finding.window,
                         acknowledged=state.acknowledged, resolved_s=state.resolved_s)

    @property
    def runaway_report(self) -> RunawayReport | None:
        """The runaway agents of the last evaluation (None before the first)."""
        return self.engine.runaway_report if self.engine.last_evaluated_s is not None else None

    def snapshot(self, now_s: float) -> list[AlertView]:
        return list(self._views)

    def acknowledge(self, key: str) -> bool:
        if not self.engine.acknowledge(key):
            return False
        self._views = [self._view(state) for state in self.engine.alerts()]
        return True

    def close(self) -> None:
        self.engine.close()
