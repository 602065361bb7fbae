"""Alerts: firing and recently resolved alerts. The rules that raise them come from the alerting
module (`llmobs.toml`); this screen and the banner show whatever the app's alert source holds."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.widgets.keyed_table import KeyedTable


class AlertsScreen(LiveScreen):
    NAME = "alerts"
    BINDINGS = [Binding("enter", "open", "Example trace", show=False)]

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="alerts-note")
        yield KeyedTable(id="alerts")
        yield from self.compose_chrome_bottom()

    def on_mount(self) -> None:
        table = self.query_one(KeyedTable)
        table.add_columns("state", "severity", "alert", "value", "since", "scope")
        table.focus()

    async def load(self, reader, now_s: float):
        return self.llmobs.alerts.snapshot(now_s), now_s

    def show(self, data) -> None:
        alerts, now_s = data
        note = self.query_one("#alerts-note", Static)
        if not alerts:
            note.update(Text(" " + self.llmobs.alerts.empty_message, style="dim"))
        else:
            note.update(Text(f" {sum(1 for a in alerts if a.firing)} firing", style="bold"))
        rows = []
        for alert in alerts:
            rows.append((alert.key, (
                Text("FIRING" if alert.firing else "resolved", style="bold red" if alert.firing else "green"),
                Text(alert.severity), fmt.safe(alert.title, limit=60), fmt.safe(alert.value_text, limit=40),
                Text(fmt.ago(int(alert.since_s * 1e9), now_s)), fmt.safe(alert.scope or "all", limit=40))))
        self.query_one(KeyedTable).sync(rows)

    def action_open(self) -> None:
        key = self.query_one(KeyedTable).cursor_key
        alert = self.llmobs.alerts.get(key or "")
        if alert is not None and alert.example_trace_id:
            self.llmobs.open_trace(alert.example_trace_id)
        elif alert is not None:
            self.notify("This alert has no example trace in its window.")

    def on_data_table_row_selected(self, _) -> None:
        self.action_open()
