"""The Overview's runaway-agents panel: agents still running past a step, token or cost ceiling,
and traces or conversations calling one tool with the same arguments again and again
(llmobs_tui/alerting/runaway.py). Hidden while there is none, so the Overview keeps its layout.

Enter (or a click on a row) opens the selected trace on the span that made it a runaway: the latest
repetition, or the latest step. Tool and span names are untrusted: Text only, never markup; the
arguments are never shown, only their hash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.alerting.runaway import Runaway, RunawayReport

ROWS = 3  # the worst ones listed; the Alerts screen has them all


def runaway_text(report: RunawayReport, selected: int = 0, width: int = 160) -> Text:
    """The panel's lines: a count line, then the worst runaways with their trace ids."""
    worst = report.worst[:ROWS]
    running = sum(1 for r in report.looping if r.running)
    text = Text()
    text.append("Runaway agents: ", style="bold")
    text.append(f"{len(report.over_ceiling)} running over ceiling",
                style="bold red" if report.over_ceiling else "dim")
    text.append(" · ")
    text.append(f"{len(report.looping)} looping", style="bold red" if running else ("bold yellow"
                                                                                     if report.looping else "dim"))
    if running:
        text.append(f" ({running} still running)", style="red")
    text.append("  enter: open · ↑↓: select", style="dim")
    text.truncate(max(10, width), overflow="ellipsis")
    for index, runaway in enumerate(worst):
        line = Text()
        line.append("▸ " if index == selected else "  ", style="bold")
        line.append(runaway.trace_id.hex(), style="cyan")  # whole: ids often differ only at the end
        line.append(f" {_label(runaway)} ", style="bold")
        line.append(fmt.clean(runaway.summary(), limit=max(20, width - line.cell_len - 1)),
                    style="red" if runaway.running else "")
        line.truncate(max(10, width), overflow="ellipsis")
        text.append("\n")
        text.append_text(line)
    return text


def _label(runaway: Runaway) -> str:
    return {"ceiling": "ceiling", "loop": "loop", "conversation": "conversation loop"}[runaway.kind]


class RunawayPanel(Static, can_focus=True):
    DEFAULT_CSS = """
    RunawayPanel { height: auto; padding: 0 1; display: none; }
    RunawayPanel:focus { background: $boost; }
    """
    BINDINGS = [
        Binding("enter", "open", "Open trace", show=False),
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
    ]

    class Opened(Message):
        """Open this trace on this span."""

        def __init__(self, trace_id: bytes, span_id: bytes | None) -> None:
            super().__init__()
            self.trace_id = trace_id
            self.span_id = span_id

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report = RunawayReport()
        self.selected = 0

    @property
    def rows(self) -> Sequence[Runaway]:
        return self.report.worst[:ROWS]

    def show(self, report: RunawayReport | None) -> None:
        self.report = report or RunawayReport()
        self.display = bool(self.report)
        if not self.report:
            return
        self.selected = min(self.selected, len(self.rows) - 1)
        self._paint()

    def _paint(self) -> None:
        self.update(runaway_text(self.report, self.selected, max(20, self.size.width - 2) if self.size.width else 160))

    def action_move(self, step: int) -> None:
        if self.rows:
            self.selected = (self.selected + step) % len(self.rows)
            self._paint()

    def action_open(self) -> None:
        rows = self.rows
        if rows:
            runaway = rows[min(self.selected, len(rows) - 1)]
            self.post_message(self.Opened(runaway.trace_id, runaway.span_id))

    def on_click(self, event: events.Click) -> None:
        row = event.y - 1  # the first line is the count
        if 0 <= row < len(self.rows):
            self.selected = row
            self.action_open()
