"""`?`: the keys, generated from the bindings that are active where the user pressed it."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

FILTER_HELP = (
    "Filter (/): field op value, terms ANDed, a leading ! inverts.  ops: = != =~ !~ > >= < <=\n"
    "fields: feature tenant service root status duration cost tokens calls spans model provider name kind\n"
    "        error prompt version user conversation ttft latency tool\n"
    "e.g.  model=~gpt-4.* ttft>1s status=error feature=checkout      !feature=search      cost>$0.01"
)
COMMAND_HELP = (
    "Commands (:): window 5m|1h|24h|7d · sort <start|duration|cost|tokens|calls|errors> · filter <expr> · "
    "by <model|feature|tenant|prompt|provider|tool> · export · follow · quit"
)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; height: 90%; border: round $accent; background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, bindings: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self._rows = bindings  # not _bindings: that name is Textual's own

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=True, header_style="bold")
        table.add_column("key", style="bold cyan", no_wrap=True)
        table.add_column("does")
        table.add_column("where", style="dim")
        for key, description, where in self._rows:
            table.add_row(Text(key), Text(description), Text(where))  # a str cell would be parsed as markup
        with VerticalScroll():
            yield Static(Text("llmobs-tui keys", style="bold"))
            yield Static(table)
            yield Static(Text("\n" + FILTER_HELP + "\n\n" + COMMAND_HELP, style="dim"))


def describe_bindings(app, screen) -> list[tuple[str, str, str]]:
    """(key, description, scope) for every binding reachable from the focused widget."""
    seen: set[tuple[str, str]] = set()
    rows: list[tuple[str, str, str]] = []
    nodes = []
    focused = screen.focused
    node = focused
    while node is not None:
        nodes.append(node)
        node = node.parent
    if screen not in nodes:
        nodes.append(screen)
    nodes.append(app)
    for node in nodes:
        scope = "everywhere" if node is app else ("this screen" if node is screen else type(node).__name__)
        for binding in getattr(node, "BINDINGS", []):
            if isinstance(binding, tuple):
                binding = Binding(*binding)
            description = binding.description or binding.action
            for key in binding.key.split(","):
                display = app.get_key_display(Binding(key.strip(), binding.action)) if hasattr(app, "get_key_display") else key
                if (display, description) in seen:
                    continue
                seen.add((display, description))
                rows.append((display, description, scope))
    return rows
