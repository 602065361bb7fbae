"""The parts around every screen: the top bar (screens, window, follow state), the alert banner
slot, and the status line (receiver, spans/s, queue, rejected, store size)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from llmobs_tui import format as fmt

SCREENS = (("1", "overview", "Overview"), ("2", "breakdown", "Breakdown"), ("3", "traces", "Traces"),
           ("4", "trace", "Trace"), ("5", "alerts", "Alerts"))


class TopBar(Static):
    DEFAULT_CSS = """
    TopBar { height: 1; background: $panel; color: $text; }
    """

    def show(self, current: str, window_s: float, following: bool, extra: str = "") -> None:
        text = Text(" llmobs ", style="bold reverse")
        for key, name, title in SCREENS:
            style = "bold reverse" if name == current else "dim"
            text.append(f" {key} {title} ", style=style)
        text.append(f"  ⏱ {fmt.window_label(window_s)}", style="bold")
        text.append("  ● live" if following else "  ‖ paused", style="green" if following else "yellow")
        if extra:
            text.append("  ")
            text.append_text(fmt.safe(extra, style="dim", limit=80))
        self.update(text)


@dataclass(frozen=True, slots=True)
class AlertLine:
    severity: str  # "page" | "ticket"
    title: str
    detail: str


class AlertBanner(Static):
    """Shown on every screen while an alert fires: the most severe first, then a count of others."""

    DEFAULT_CSS = """
    AlertBanner { height: 1; display: none; background: $error; color: $text; }
    AlertBanner.-ticket { background: $warning; color: $background; }
    AlertBanner.-firing { display: block; }
    """

    def show(self, alerts: list[AlertLine]) -> None:
        self.set_class(bool(alerts), "-firing")
        if not alerts:
            self.update("")
            return
        first = sorted(alerts, key=lambda a: 0 if a.severity == "page" else 1)[0]
        self.set_class(first.severity != "page", "-ticket")
        text = Text(f" ▲ {first.severity.upper()} ", style="bold")
        text.append_text(fmt.safe(first.title, style="bold"))
        text.append("  ")
        text.append_text(fmt.safe(first.detail))
        if len(alerts) > 1:
            text.append(f"   +{len(alerts) - 1} more (5)", style="bold")
        self.update(text)


@dataclass(slots=True)
class IngestStatus:
    address: str | None = None
    spans_per_s: float | None = None
    queue: int | None = None
    rejected_spans: int = 0
    rejected_requests: int = 0
    store_bytes: int | None = None
    mode: str = ""
    error: str | None = None


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine { height: 1; background: $panel; color: $text-muted; }
    """

    def show(self, status: IngestStatus) -> None:
        text = Text(" ")
        if status.address:
            text.append_text(fmt.safe(f"OTLP {status.address}", style="bold", limit=120))
        else:
            text.append_text(fmt.safe(status.mode or "read-only", style="bold", limit=160))
        if status.spans_per_s is not None:
            text.append(f"  {status.spans_per_s:,.0f} spans/s")
        if status.queue is not None:
            text.append(f"  queue {status.queue}")
        rejected = status.rejected_spans + status.rejected_requests
        text.append(f"  rejected {rejected:,}", style="yellow" if rejected else "")
        if status.store_bytes is not None:
            text.append(f"  db {fmt.bytes_(status.store_bytes)}")
        if status.error:
            text.append("  ")
            text.append_text(fmt.safe(status.error, style="bold red", limit=160))
        self.update(text)
