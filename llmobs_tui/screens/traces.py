"""Traces: one row per trace (its true root), live, sortable, filterable."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.filtering import Filter, FilterError, parse
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.widgets.keyed_table import KeyedTable
from store.dashboards import TraceRow

# Shift-letter sorts (k9s): pressing the same one again reverses.
SORT_KEYS = {"S": "start", "D": "duration", "C": "cost", "T": "tokens", "L": "calls", "E": "errors", "R": "root",
             "V": "service"}


class TracesScreen(LiveScreen):
    NAME = "traces"
    BINDINGS = [
        *[Binding(key, f"sort('{name}')", f"Sort {name}", show=key in "SDC") for key, name in SORT_KEYS.items()],
        Binding("enter", "open", "Open trace", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.flt: Filter = Filter()
        self.sort = "start"
        self.descending = True
        self.description = ""
        self._rows: dict[str, TraceRow] = {}
        self.held_back = 0
        self._layout: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="traces-filter")
        yield KeyedTable(id="traces")
        yield from self.compose_chrome_bottom()

    # Columns by terminal width: narrow terminals keep what decides whether to open a trace.
    # `trace` is the id's first 8 hex characters (`:open` takes them); at 80 columns there is no room.
    WIDE = ("start", "trace", "root", "service", "duration", "calls", "tokens", "cost", "status")
    NARROW = ("start", "root", "duration", "calls", "cost", "status")

    def on_mount(self) -> None:
        self._layout = ()
        self._set_columns()
        self.query_one(KeyedTable).focus()
        self._describe()

    def on_resize(self) -> None:
        if self._set_columns():
            self.llmobs.wake()

    def _set_columns(self) -> bool:
        layout = self.WIDE if self.size.width >= 110 or not self.size.width else self.NARROW
        if layout == self._layout:
            return False
        self._layout = layout
        table = self.query_one(KeyedTable)
        table.reset(columns=True)
        for name in layout:
            table.add_column(name, width=(22 if layout is self.NARROW else 40) if name == "root" else None)
        return True

    def _root_width(self, table: KeyedTable) -> int:
        """The root column takes the room the other columns leave (no horizontal scrollbar)."""
        others = sum(c.get_render_width(table) for c in table.ordered_columns if str(c.label.plain) != "root")
        most = 22 if self._layout is self.NARROW else 40
        if not others or not table.size.width:
            return most
        return max(12, min(60, table.size.width - others - 2))

    def _fit_root(self, table: KeyedTable) -> None:
        table.set_column_width("root", self._root_width(table))

    def set_query(self, filter_text: str, sort: str, descending: bool, description: str = "") -> str | None:
        """Apply a filter and sort; returns an error message for a bad filter."""
        try:
            self.flt = parse(filter_text)
        except FilterError as exc:
            return str(exc)
        self.sort, self.descending, self.description = sort, descending, description
        self.llmobs.following = True
        if not self.is_mounted:
            return None  # on_mount describes the query
        self._describe()
        table = self.query_one(KeyedTable)
        table.reset()
        table.move_cursor(row=0)
        return None

    def _describe(self) -> None:
        text = Text(" filter ", style="dim")
        text.append_text(fmt.safe(self.flt.text or "none", style="bold"))
        text.append(f"   sort {self.sort} {'↓' if self.descending else '↑'}", style="dim")
        if self.description:
            text.append("   ")
            text.append_text(fmt.safe(self.description, style="italic"))
        if self.held_back:
            text.append(f"   ▲ {self.held_back} new (f to follow)", style="bold yellow")
        self.query_one("#traces-filter", Static).update(text)

    async def load(self, reader, now_s: float) -> tuple[list[TraceRow], float]:
        return await reader.traces(self.llmobs.window_s, now_s, self.flt, self.sort, self.descending), now_s

    def show(self, data: tuple[list[TraceRow], float]) -> None:
        traces, now_s = data
        table = self.query_one(KeyedTable)
        # Reading further down the list pauses following: rows stay where they are.
        if table.cursor_row > 0 and self.llmobs.following and self.sort == "start":
            self.llmobs.following = False
        rows = []
        self._rows = {}
        for trace in traces:
            key = trace.trace_id.hex()
            self._rows[key] = trace
            status = Text("ok", style="green")
            if trace.failed:
                labels = []
                if trace.errors_api:
                    labels.append(f"api {trace.errors_api}")
                if trace.errors_validation:
                    labels.append(f"valid {trace.errors_validation}")
                if trace.errors_guardrail:
                    labels.append(f"guard {trace.errors_guardrail}")
                status = Text(" ".join(labels) or f"{trace.error_spans} err", style="bold red")
            root = fmt.safe(trace.root_name or "?", style="" if trace.root_known else "italic", limit=60)
            cost = Text(fmt.money(trace.cost_nusd))
            if trace.unpriced_calls:
                cost.append("+?", style="yellow")
            root.truncate(self._root_width(table), overflow="ellipsis")
            cells = {
                "start": Text(fmt.clock(trace.start_ns, now_s)), "trace": Text(key[:8], style="dim"), "root": root,
                "service": fmt.safe(trace.service or "–", limit=30), "duration": Text(fmt.duration(trace.duration_ns)),
                "calls": Text(str(trace.llm_calls)),
                "tokens": Text(fmt.tokens(trace.input_tokens + trace.output_tokens)),
                "cost": cost, "status": status,
            }
            rows.append((key, tuple(cells[name] for name in self._layout)))
        self.held_back = table.sync(rows, reorder=self.llmobs.following)
        self._fit_root(table)
        self._describe()
        if not rows:  # say why the list is empty and what to do next
            self._describe_empty()

    def _describe_empty(self) -> None:
        from llmobs_tui.widgets.chrome import empty_window_text

        if self.flt.text:
            text = Text(" No trace matches ", style="bold")
            text.append_text(fmt.safe(self.flt.text, style="bold cyan", limit=80))
            text.append(f" in the last {fmt.window_label(self.llmobs.window_s)}.", style="bold")
            text.append(" /: change the filter · t: a longer window")
        else:
            text = empty_window_text("traces", self.llmobs.window_s, "1: how to send spans")
        self.query_one("#traces-filter", Static).update(text)

    def action_sort(self, name: str) -> None:
        if self.sort == name:
            self.descending = not self.descending
        else:
            self.sort, self.descending = name, name not in ("root", "service")
        self.llmobs.following = True
        self._describe()
        self.llmobs.wake()

    def action_open(self) -> None:
        key = self.query_one(KeyedTable).cursor_key
        if key and key in self._rows:
            self.llmobs.open_trace(self._rows[key].trace_id, slowest=self.sort == "duration")

    def on_paste(self, event: events.Paste) -> None:
        """A trace id pasted on the list (from a log line) opens that trace."""
        if self.llmobs.is_full_trace_id(event.text):
            event.stop()
            self.llmobs.open_trace_by_id(event.text)

    def on_data_table_row_selected(self, _) -> None:
        self.action_open()

    @property
    def selected_trace(self) -> TraceRow | None:
        key = self.query_one(KeyedTable).cursor_key
        return self._rows.get(key or "")
