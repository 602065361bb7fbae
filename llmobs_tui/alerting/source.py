"""What the Alerts screen and the banner read: alert views from an alert source. Plain data, no
Textual: the app shows them, the rule engine's adapter (alerting/live.py) produces them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmobs_tui.reader import StoreReader


@dataclass(slots=True)
class AlertView:
    key: str
    firing: bool
    severity: str
    title: str
    value_text: str
    since_s: float
    scope: str | None = None
    example_trace_id: bytes | None = None
    detail: str = ""
    window: str = ""
    acknowledged: bool = False
    resolved_s: float | None = None
    example_span_id: bytes | None = None  # the call that made the value: the trace opens on it


class AlertSource:
    """What the Alerts screen and the banner show; the rule engine's adapter is
    llmobs_tui/alerting/live.py. This base holds nothing (a store opened without rules)."""

    empty_message = "No alert rules are loaded: nothing can fire."
    slo_rows: tuple[Any, ...] = ()
    error: str | None = None

    def snapshot(self, now_s: float) -> list[AlertView]:
        return []

    def get(self, key: str) -> AlertView | None:
        return next((a for a in self.snapshot(time.time()) if a.key == key), None)

    async def evaluate(self, reader: StoreReader, now_s: float) -> None:
        return None

    def acknowledge(self, key: str) -> bool:
        return False
