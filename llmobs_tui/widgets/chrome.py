"""The parts around every screen: the top bar (screens, window, follow state), the alert banner
slot, and the status line (receiver, spans/s, queue, rejected, store size)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.widgets import Footer, Static

from llmobs_tui import format as fmt
from llmobs_tui.widgets.quiet import update_static

SCREENS = (("1", "overview", "Overview"), ("2", "breakdown", "Breakdown"), ("3", "traces", "Traces"),
           ("4", "trace", "Trace"), ("5", "alerts", "Alerts"), ("6", "sessions", "Sessions"), ("7", "trends", "Trends"),
           ("8", "metrics", "Metrics"))
TAB_OF = {"conversation": "sessions"}  # a screen without a tab of its own shows its parent's


class KeysFooter(Footer):
    """Textual's Footer, rebuilt only when the keys it shows change. Textual recomposes it (one
    widget per key, unmounted and mounted again, each styled) whenever the screen's bindings *may*
    have changed: on every screen switch and every focus move. That was tens of milliseconds of the
    UI thread after each key press, for a footer that shows the same keys as the last time."""

    _composed: tuple[Any, ...] | None = None

    def bindings_changed(self, screen: Any) -> None:
        if self.is_attached and screen is self.screen and screen.app.app_focus and self.children:
            keys = tuple((b.key, b.description, b.action, enabled, tooltip, b.group)
                         for _node, b, enabled, tooltip in screen.active_bindings.values() if b.show)
            if keys == self._composed:
                return
            self._composed = keys
        super().bindings_changed(screen)


class TopBar(Static):
    DEFAULT_CSS = """
    TopBar { height: 1; background: $panel; color: $text; }
    """

    def show(self, current: str, window_s: float, following: bool, extra: str = "", link: str | None = None) -> None:
        """`link`: the state of the feed the store comes from when it can break (attach): None or
        "live" is up; anything else ("connecting", "disconnected", "stopped") replaces "● live"."""
        text = Text(" llmobs ", style="bold reverse")
        # A link state wider than "● live" must not be cut off at 80 columns: the other screens' tabs
        # then show only their number.
        # At 80 columns six tabs in full leave no room for the window and the live state either.
        compact = (link not in (None, "live") or len(SCREENS) > 5) and 0 < self.size.width < 100
        current = TAB_OF.get(current, current)
        for key, name, title in SCREENS:
            style = "bold reverse" if name == current else "dim"
            text.append(f" {key} {title} " if name == current or not compact else f" {key} ", style=style)
        # a stopwatch glyph renders as a box in many fonts
        text.append(f"  last {fmt.window_label(window_s)}", style="bold")
        if link not in (None, "live"):
            style = "bold red" if link in ("stopped", "disconnected") else "yellow"
            text.append(f"  {'✕' if link == 'stopped' else '○'} {link}", style=style)
        else:
            text.append("  ● live" if following else "  ‖ paused", style="green" if following else "yellow")
        if extra:
            text.append("  ")
            text.append_text(fmt.safe(extra, style="dim", limit=80))
        update_static(self, text, layout=False)  # one line: its content never changes its size


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
            update_static(self, "", layout=False)
            return
        first = sorted(alerts, key=lambda a: 0 if a.severity == "page" else 1)[0]
        self.set_class(first.severity != "page", "-ticket")
        text = Text(f" ▲ {first.severity.upper()} ", style="bold")
        text.append_text(fmt.safe(first.title, style="bold"))
        text.append("  ")
        text.append_text(fmt.safe(first.detail))
        if len(alerts) > 1:
            text.append(f"   +{len(alerts) - 1} more (5)", style="bold")
        update_static(self, text, layout=False)


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
    link: str | None = None  # attach: "live", "connecting", "disconnected", "stopped" (None: no link to lose)


def query_text(filter_text: str, sort: str, descending: bool) -> Text:
    """The header line of a filtered, sorted list (Traces, Sessions): ` filter … sort … ↓`; the
    filter is what the user typed, so it is shown as data."""
    text = Text(" filter ", style="dim")
    text.append_text(fmt.safe(filter_text or "none", style="bold"))
    text.append(f"   sort {sort} {'↓' if descending else '↑'}", style="dim")
    return text


def empty_store_text(status: IngestStatus | None) -> Text:
    """What the Overview says on a store nothing has been sent to: how to send something."""
    grpc, http = "http://127.0.0.1:4317", "http://127.0.0.1:4318"
    if status is not None and status.address:  # "host:grpc · http://host:http" (either may be absent)
        for part in (p.strip() for p in status.address.split("·")):
            if part.startswith(("http://", "https://")):
                http = part
            elif part:
                grpc = part if "://" in part else f"http://{part}"
    if status is not None and status.link is not None:  # attach: the spans come from a remote serve
        text = Text(" No spans from the remote yet", style="bold")
        text.append(f" ({status.link}).")
        if status.error:
            text.append("\n ")
            text.append_text(fmt.safe(status.error, style="bold red", limit=300))
        return text
    text = Text(" No spans in this store yet.", style="bold")
    text.append(" Point your app's OpenTelemetry exporter here\n and run it:\n\n")
    for label, endpoint in (("HTTP", http), ("gRPC", grpc)):
        text.append(f"  {label}  ", style="dim")
        text.append_text(fmt.safe(f"OTEL_EXPORTER_OTLP_ENDPOINT={endpoint} python app.py", style="bold cyan",
                                  limit=200))
        text.append("\n")
    text.append("\n With a --token, also OTEL_EXPORTER_OTLP_HEADERS=\"Authorization=Bearer <token>\".\n"
                " The README shows how to instrument OpenAI, Anthropic, Gemini, LangChain.\n"
                " No app at hand? `llmobs-tui demo` shows the screens on made-up traffic.", style="dim")
    if status is not None and not status.address and status.mode:
        text.append("\n This TUI only reads (")
        text.append_text(fmt.safe(status.mode, limit=120))
        text.append("): send to the process that writes the store.")
    return text


def empty_window_text(what: str, window_s: float, more: str = "") -> Text:
    """A screen with nothing in the window of a store that has data: say how to see some."""
    text = Text(f" No {what} in the last {fmt.window_label(window_s)}.", style="bold")
    text.append(" t: a longer window" + (f" · {more}" if more else ""))
    return text


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine { height: 1; background: $panel; color: $text-muted; }
    """

    def show(self, status: IngestStatus) -> None:
        text = Text(" ")
        if status.error and status.link in ("stopped", "disconnected"):
            # The link is down: why comes first, where a narrow terminal cannot cut it off.
            text.append_text(fmt.safe(status.error, style="bold red", limit=160))
            text.append("  ")
            status = IngestStatus(**{**{f: getattr(status, f) for f in status.__dataclass_fields__}, "error": None})
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
        update_static(self, text, layout=False)
