"""`?`: a key reference, generated from the bindings that are active where the user pressed it.

The app's keys first (they work on every screen), then this screen's (the screen and the focused
widget), each action in words; then the filter fields, the commands and where the log file is.
Only llmobs-tui's own bindings are listed: Textual's built-ins (focus cycling, `super+c` text copy)
and raw action strings (`cursor(-1000000)`) are internals, and a binding without words is hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    "        text:\"refund policy\" searches prompts, completions and tool payloads (3+ characters)\n"
    "e.g.  model=~gpt-4.* ttft>1s status=error feature=checkout      !feature=search      cost>$0.01"
)
COMMAND_HELP = (
    "Commands (:): window 5m|1h|24h|7d · sort <start|duration|cost|tokens|calls|errors> · filter <expr> · "
    "by <model|feature|tenant|prompt|provider|tool> · open <id> · sessions · trends · metrics · export · follow · quit"
)

# What an action does, in words. Keyed by the binding's action string; a binding whose action is
# not here shows its own description, and one with neither is not listed.
ACTION_WORDS = {
    "goto('overview')": "Overview: latency, traffic, errors, cost, tokens",
    "goto('breakdown')": "Breakdown: cost, tokens and errors by model, feature, tenant…",
    "goto('traces')": "Traces: the trace list",
    "goto('trace')": "Trace: the open trace's spans",
    "goto('alerts')": "Alerts: SLOs and firing alerts",
    "goto('sessions')": "Sessions: conversations (u: by user)",
    "goto('trends')": "Trends: any signal over time, split by model, feature, variant…",
    "goto('metrics')": "Metrics: OTLP metrics (GenAI, vLLM/TGI/SGLang serving, GPU, any other)",
    "metric(1)": "Next metric (latency, TTFT, calls/s, errors, cost, tokens…)",
    "metric(-1)": "Previous metric",
    "dimension": "Split by the next dimension",
    "top_n": "How many series to draw (3, 5, 8, 10)",
    "others": "Add / remove the rest as one \"others\" line",
    "pin_variant": "Compare the other variants with the selected one",
    "help": "This help",
    "filter": "Filter traces (fields below)",
    "command": "Command line (commands below)",
    "follow": "Follow live data / pause",
    "window": "Next time window (5m, 1h, 24h, 7d)",
    "copy": "Copy the trace id (on a span: the span id)",
    "export": "Export trace as OTLP/JSON to the export directory",
    "back": "Back to the previous screen",
    "quit": "Quit",
    "next_grouping": "Group by the next dimension",
    "drill": "Traces behind the selected row",
    "acknowledge": "Acknowledge the selected alert (the banner stops showing it)",
    "tab('conversation')": "Conversation tab",
    "tab('attributes')": "Attributes tab",
    "tab('events')": "Events & logs tab",
    "tab('cost')": "Cost tab",
    "cursor(-1)": "Previous span",
    "cursor(1)": "Next span",
    "cursor(-10)": "Ten spans up",
    "cursor(10)": "Ten spans down",
    "cursor(-1000000)": "First span",
    "cursor(1000000)": "Last span",
    "toggle": "Collapse / expand the span's children",
    "llm_only": "LLM spans only / all spans",
    "zoom(1)": "Zoom in on the timeline",
    "zoom(-1)": "Zoom out",
    "next_error(1)": "Next error (failed span); while a search (/) is on: next match",
    "next_error(-1)": "Previous error; while a search (/) is on: previous match",
    "move(-1)": "Previous figure",
    "move(1)": "Next figure",
}
SCREEN_ACTION_WORDS = {  # the same action name means different things on different screens
    ("traces", "open"): "Open the selected trace",
    ("alerts", "open"): "Open the alert's example trace on the call that made its value",
    ("overview", "drill"): "Traces behind the selected figure",
    ("sessions", "open"): "Open the conversation (by user: that user's conversations)",
    ("trends", "drill"): "Traces of the selected series over the window",
    ("metrics", "chart"): "Chart the selected metric over the window",
    ("conversation", "open"): "Open the selected turn's trace",
}
KEY_NAMES = {
    "question_mark": "?", "slash": "/", "colon": ":", "dollar_sign": "$", "plus": "+", "equals_sign": "=",
    "minus": "-", "escape": "Esc", "enter": "Enter", "space": "Space", "up": "↑", "down": "↓", "left": "←",
    "right": "→", "pageup": "PgUp", "pagedown": "PgDn", "home": "Home", "end": "End", "tab": "Tab",
    "left_square_bracket": "[", "right_square_bracket": "]",
}

try:  # another module may not be there yet; the help says where the log is when it can
    from llmobs_tui.logfile import log_path as _log_path  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - until llmobs_tui/logfile.py lands
    _log_path = None


def log_line() -> str | None:
    if _log_path is None:
        return None
    try:
        return f"Log file: {_log_path()}"
    except Exception:
        return None


def key_name(key: str) -> str:
    key = key.strip()
    if key in KEY_NAMES:
        return KEY_NAMES[key]
    if key.startswith("ctrl+"):
        return "Ctrl+" + key_name(key[5:]).upper()
    if key.startswith("shift+"):
        return "Shift+" + key_name(key[6:])
    return key


@dataclass(frozen=True, slots=True)
class KeyRow:
    keys: str
    words: str
    section: str  # "everywhere" | "this screen"


def _own_bindings(node) -> list[Binding]:
    """The bindings llmobs-tui's own classes declare on this node (not Textual's built-ins)."""
    found: list[Binding] = []
    for cls in reversed(type(node).__mro__):
        if not cls.__module__.startswith("llmobs_tui"):
            continue
        for binding in cls.__dict__.get("BINDINGS", ()):
            found.append(binding if isinstance(binding, Binding) else Binding(*binding))
    return found


def _rows_of(bindings: list[Binding], screen_name: str, section: str, taken: set[str]) -> list[KeyRow]:
    rows: dict[str, list[str]] = {}  # words → keys, in binding order
    for binding in bindings:
        words = (SCREEN_ACTION_WORDS.get((screen_name, binding.action)) or ACTION_WORDS.get(binding.action)
                 or binding.description)
        if not words:
            continue
        for key in binding.key.split(","):
            key = key.strip()
            if not key or key in taken or key.startswith(("super+", "meta+")):
                continue
            taken.add(key)
            rows.setdefault(words, []).append(key_name(key))
    return [KeyRow(" ".join(keys), words, section) for words, keys in rows.items()]


def describe_bindings(app, screen) -> list[KeyRow]:
    """The app's keys, then the screen's and the focused widget's, each key once: where a screen
    binds a key the app binds too, the screen's meaning is the one that applies, so it is listed
    there and not among the global keys."""
    local: list[Binding] = []
    node = screen.focused
    chain = []
    while node is not None and node is not screen:
        chain.append(node)
        node = node.parent
    for node in [*chain, screen]:
        local += _own_bindings(node)
    screen_name = getattr(screen, "NAME", "")
    taken: set[str] = set()
    screen_rows = _rows_of(local, screen_name, "this screen", taken)
    app_rows = _rows_of(_own_bindings(app), screen_name, "everywhere", taken)
    return [*app_rows, *screen_rows]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; height: 90%; border: round $accent; background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, bindings: list[KeyRow], screen_title: str = "") -> None:
        super().__init__()
        self._rows = bindings  # not _bindings: that name is Textual's own
        self._screen_title = screen_title

    def _table(self, rows: list[KeyRow]) -> Table:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        table.add_column("keys", style="bold cyan", no_wrap=True, min_width=8)
        table.add_column("does")
        for row in rows:
            table.add_row(Text(row.keys), Text(row.words))  # a str cell would be parsed as markup
        return table

    def compose(self) -> ComposeResult:
        everywhere = [r for r in self._rows if r.section == "everywhere"]
        here = [r for r in self._rows if r.section != "everywhere"]
        with VerticalScroll():
            yield Static(Text("llmobs-tui keys  (Esc, q or ? closes)", style="bold"))
            yield Static(Text("\nEverywhere", style="bold underline"))
            yield Static(self._table(everywhere))
            if here:
                title = f"On the {self._screen_title} screen" if self._screen_title else "On this screen"
                yield Static(Text("\n" + title, style="bold underline"))
                yield Static(self._table(here))
            yield Static(Text("\n" + FILTER_HELP + "\n\n" + COMMAND_HELP, style="dim"))
            log = log_line()
            if log:
                yield Static(Text("\n" + log, style="dim"), id="help-log")
