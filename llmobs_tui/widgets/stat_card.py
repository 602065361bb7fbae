"""A card of golden-signal figures with a sparkline; every figure can be drilled into."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from llmobs_tui.widgets.quiet import set_border_subtitle, update_static


@dataclass(frozen=True, slots=True)
class Drill:
    """Where Enter on a figure leads: the trace list with this filter and sort."""

    filter: str = ""
    sort: str = "start"
    descending: bool = True
    description: str = ""


@dataclass(frozen=True, slots=True)
class Figure:
    label: str
    value: Text
    drill: Drill | None = None
    delta: Text | None = None  # against the compared past period (llmobs_tui/compare.py), when one is shown


class StatCard(Widget, can_focus=True):
    """Title, figure lines (one highlighted while focused) and a sparkline of the window."""

    DEFAULT_CSS = """
    StatCard {
        height: auto;
        border: round $panel-lighten-2;
        padding: 0 1;
    }
    StatCard:focus-within, StatCard:focus { border: round $accent; }
    StatCard > .card--figures { height: auto; }
    StatCard > Sparkline { height: 1; margin-top: 0; }
    .-tall StatCard > Sparkline { height: 3; }
    """
    BINDINGS = [
        Binding("up,k", "move(-1)", "Prev figure", show=False),
        Binding("down,j", "move(1)", "Next figure", show=False),
        Binding("enter", "drill", "Traces behind it"),
    ]

    highlighted: reactive[int] = reactive(0)

    class Drilled(Message):
        def __init__(self, card: StatCard, drill: Drill) -> None:
            super().__init__()
            self.card = card
            self.drill = drill

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = title
        self._figures: list[Figure] = []

    def compose(self) -> ComposeResult:
        yield Static(classes="card--figures")
        yield Sparkline([0.0], summary_function=max)

    def show(self, figures: Sequence[Figure], series: Sequence[float], subtitle: str = "") -> None:
        self._figures = list(figures)
        set_border_subtitle(self, subtitle)
        if self.highlighted >= len(self._figures):
            self.highlighted = max(0, len(self._figures) - 1)
        self._render_figures()
        self.query_one(Sparkline).data = list(series) or [0.0]

    def _label_width(self) -> int:
        """The label column: as wide as the longest label, narrowed only when a line would not fit
        the card (a model name is cut where the room ends, not at a fixed length)."""
        width = max((len(f.label) for f in self._figures), default=0)
        room = self.content_size.width
        if room > 0:
            value = max((f.value.cell_len + (f.delta.cell_len + 1 if f.delta else 0) for f in self._figures),
                        default=0)
            width = min(width, max(8, room - 2 - value))
        return width

    def _render_figures(self) -> None:
        text = Text()
        width = self._label_width()
        for i, figure in enumerate(self._figures):
            label = figure.label if len(figure.label) <= width else figure.label[: max(0, width - 1)] + "…"
            line = Text(f"{label:<{width}}  ", style="dim")
            line.append_text(figure.value)
            if figure.delta is not None:
                line.append(" ")
                line.append_text(figure.delta)
            if self.has_focus and i == self.highlighted and figure.drill is not None:
                line.stylize("reverse")
            if i:
                text.append("\n")
            text.append_text(line)
        update_static(self.query_one(".card--figures", Static), text)

    def watch_highlighted(self) -> None:
        self._render_figures()

    def on_resize(self, _: events.Resize) -> None:
        self._render_figures()

    def on_focus(self, _: events.Focus) -> None:
        self._render_figures()

    def on_blur(self, _: events.Blur) -> None:
        self._render_figures()

    def action_move(self, step: int) -> None:
        if self._figures:
            self.highlighted = (self.highlighted + step) % len(self._figures)

    def action_drill(self) -> None:
        if self._figures:
            figure = self._figures[self.highlighted]
            drill = figure.drill or Drill(description=figure.label)
            self.post_message(self.Drilled(self, drill))

    def on_click(self, event: events.Click) -> None:
        self.focus()
