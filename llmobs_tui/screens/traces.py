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
from llmobs_tui.widgets.chrome import query_text
from llmobs_tui.widgets.keyed_table import KeyedTable, RowCells
from llmobs_tui.widgets.quiet import update_static
from store.content_index import MATCH_SCAN_LIMIT, SearchResult, TextMatch, snippet_parts
from store.dashboards import TraceRow

# Shift-letter sorts (k9s): pressing the same one again reverses.
SORT_KEYS = {"S": "start", "D": "duration", "C": "cost", "T": "tokens", "L": "calls", "E": "errors", "R": "root",
             "V": "service"}


class TracesScreen(LiveScreen):
    WARM_WITH_DATA = True
    NAME = "traces"
    BINDINGS = [
        *[Binding(key, f"sort('{name}')", f"Sort {name}", show=key in "SDC") for key, name in SORT_KEYS.items()],
        Binding("enter", "open", "Open trace", show=False),
        Binding("m", "mark", "Mark the selected trace for a diff", show=False),
        Binding("d", "diff", "Diff the marked trace with the selected one", show=False),
        Binding("w", "why_slow", "Why slow? The selected trace against traces of its root", show=False),
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
        self._row_cells = RowCells()  # the rows' cells, built again only for traces that changed
        # A `text:` search: where each listed trace matched, and how many spans are not indexed yet.
        self._matches: dict[bytes, TextMatch] = {}
        self.index_lag = 0
        self.index_off = ""  # why the writer does not index, when it does not
        self.search_cut = False

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="traces-filter")
        yield KeyedTable(id="traces")
        yield from self.compose_chrome_bottom()

    # Columns by terminal width: narrow terminals keep what decides whether to open a trace.
    # `trace` is the id's first 8 hex characters (`:open` takes them); at 80 columns there is no room.
    WIDE = ("start", "trace", "root", "service", "duration", "calls", "tokens", "cost", "status")
    NARROW = ("start", "root", "duration", "calls", "cost", "status")
    # With a `text:` search, the matching snippet takes the room of the columns a search needs least.
    SEARCH_WIDE = ("start", "trace", "root", "duration", "calls", "cost", "status", "match")
    SEARCH_NARROW = ("start", "root", "duration", "status", "match")

    def on_mount(self) -> None:
        self._layout = ()
        self._set_columns()
        self.query_one(KeyedTable).focus()
        self._describe()

    def on_resize(self) -> None:
        if self._set_columns():
            self.llmobs.wake()

    def _set_columns(self) -> bool:
        wide = self.size.width >= 110 or not self.size.width
        if self.flt.text_search:
            layout = self.SEARCH_WIDE if wide else self.SEARCH_NARROW
        else:
            layout = self.WIDE if wide else self.NARROW
        if layout == self._layout:
            return False
        self._layout = layout
        table = self.query_one(KeyedTable)
        table.reset(columns=True)
        for name in layout:
            width = {"root": 40 if wide else 22, "match": self._match_width()}.get(name)
            table.add_column(name, width=width)
        return True

    def _match_width(self) -> int:
        return 56 if self.size.width >= 110 or not self.size.width else 30

    def _match_cell(self, trace_id: bytes) -> Text:
        """The matching snippet, the match highlighted (Rich styles on literal, cleaned text), cut so
        that the first match shows within the column."""
        match = self._matches.get(trace_id)
        if match is None:
            # The list and its snippets are two reads: content indexed in between can leave a row without.
            return Text("…", style="dim")
        parts = [(fmt.clean(piece, limit=None), matched) for piece, matched in snippet_parts(match.snippet)]
        lead = 0
        for piece, matched in parts:
            if matched:
                break
            lead += len(piece)
        keep_before = self._match_width() // 4
        cell = Text()
        skip = max(0, lead - keep_before)
        if skip:
            cell.append("…", style="dim")
        for piece, matched in parts:
            if skip >= len(piece):
                skip -= len(piece)
                continue
            cell.append(piece[skip:], style="bold reverse" if matched else "")
            skip = 0
        cell.truncate(self._match_width(), overflow="ellipsis")
        return cell

    def set_query(self, filter_text: str, sort: str, descending: bool, description: str = "") -> str | None:
        """Apply a filter and sort; returns an error message for a bad filter."""
        try:
            self.flt = parse(filter_text)
        except FilterError as exc:
            return str(exc)
        self.sort, self.descending, self.description = sort, descending, description
        self.llmobs.following = True
        self._matches, self.index_lag, self.search_cut = {}, 0, False
        if not self.is_mounted:
            return None  # on_mount describes the query
        self._set_columns()  # a search adds the match column
        self._describe()
        table = self.query_one(KeyedTable)
        table.reset()
        table.move_cursor(row=0)
        return None

    def _describe(self) -> None:
        text = query_text(self.flt.text, self.sort, self.descending)
        if self.description:
            text.append("   ")
            text.append_text(fmt.safe(self.description, style="italic"))
        if self.held_back:
            text.append(f"   ▲ {self.held_back} new (f to follow)", style="bold yellow")
        if self.flt.text_search and self.index_off:
            text.append(f"   search index off ({self.index_off}): newer content is not searchable", style="yellow")
        elif self.flt.text_search and self.index_lag:
            text.append(f"   search index: {self.index_lag:,} spans still to index", style="yellow")
        if self.flt.text_search and self.search_cut:
            text.append(f"   over {MATCH_SCAN_LIMIT:,} matches: the newest searched", style="dim")
        update_static(self.query_one("#traces-filter", Static), text)

    async def load(self, reader, now_s: float) -> tuple:
        flt = self.flt
        traces = await reader.traces(self.llmobs.window_s, now_s, flt, self.sort, self.descending)
        if not flt.text_search:
            return traces, now_s
        # Snippets for the rows shown only (≤ 500), among the newest matches the list itself read.
        return traces, now_s, flt, await reader.text_matches([t.trace_id for t in traces], flt,
                                                             now_s - self.llmobs.window_s)

    def show(self, data: tuple) -> None:
        traces, now_s, *search = data
        if search and search[0] is self.flt:  # not the answer to a search replaced since
            result: SearchResult = search[1]
            self._matches, self.index_lag, self.search_cut = result.matches, result.lag_spans, result.cut
            self.index_off = result.off_reason
        else:
            self._matches, self.index_lag, self.search_cut = {}, 0, False
        table = self.query_one(KeyedTable)
        # Reading further down the list pauses following: rows stay where they are.
        if table.cursor_row > 0 and self.llmobs.following and self.sort == "start":
            self.llmobs.following = False
        # What the rows are built from: a row's start reads differently once it is 20 h old (fmt.clock).
        today = [now_s - t.start_ns / 1e9 < fmt.CLOCK_TODAY_S for t in traces]
        source = (traces, self._layout, self._matches, self.llmobs.following, today)
        if not table.holds(source):
            self.held_back = table.sync(self._rows_of(traces, today, table, now_s), reorder=self.llmobs.following,
                                        source=source)
        self._describe()
        if not traces:  # say why the list is empty and what to do next
            self._describe_empty()

    def _rows_of(self, traces: list[TraceRow], today: list[bool], table: KeyedTable,
                 now_s: float) -> list[tuple[str, tuple]]:
        """The table's rows (key, cells) for these traces, the root column fitted to the room left.
        `today`: whether each trace's start is within fmt.clock's today (all its cells read of now_s)."""
        rows = []
        self._rows = {}
        memo = self._row_cells if "match" not in self._layout else None  # snippets: built every time
        for trace, recent in zip(traces, today):
            key = trace.trace_id.hex()
            self._rows[key] = trace
            if memo is None:
                rows.append((key, self._cells_of(trace, key, now_s)))
            else:
                rows.append((key, memo.cells((trace, self._layout, recent), self._cells_of, trace, key, now_s)))
        if memo is not None:
            memo.built()
        # The root column takes the room the other columns leave (no horizontal scrollbar).
        root_width = table.fit_columns(rows, "root", least=12, most=60)
        if "root" in self._layout:
            at = self._layout.index("root")
            for index, (key, cells) in enumerate(rows):
                if cells[at].cell_len > root_width:  # cut a copy: the memo's cells are shared
                    root = cells[at].copy()
                    root.truncate(root_width, overflow="ellipsis")
                    rows[index] = (key, (*cells[:at], root, *cells[at + 1:]))
        return rows

    def _cells_of(self, trace: TraceRow, key: str, now_s: float) -> tuple[Text, ...]:
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
        cells = {
            "start": Text(fmt.clock(trace.start_ns, now_s)), "trace": Text(key[:8], style="dim"), "root": root,
            "service": fmt.safe(trace.service or "–", limit=30), "duration": Text(fmt.duration(trace.duration_ns)),
            "calls": Text(str(trace.llm_calls)),
            "tokens": Text(fmt.tokens(trace.input_tokens + trace.output_tokens)),
            "cost": cost, "status": status,
        }
        if "match" in self._layout:
            cells["match"] = self._match_cell(trace.trace_id)
        return tuple(cells[name] for name in self._layout)

    def _describe_empty(self) -> None:
        from llmobs_tui.widgets.chrome import empty_window_text

        if self.flt.text:
            text = Text(" No trace matches ", style="bold")
            text.append_text(fmt.safe(self.flt.text, style="bold cyan", limit=80))
            text.append(f" in the last {fmt.window_label(self.llmobs.window_s)}.", style="bold")
            text.append(" /: change the filter · t: a longer window")
        else:
            text = empty_window_text("traces", self.llmobs.window_s, "1: how to send spans")
        update_static(self.query_one("#traces-filter", Static), text)

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
            trace_id = self._rows[key].trace_id
            match = self._matches.get(trace_id)
            if match is not None and match.span_id is not None:  # a search: open on the span that matched
                self.llmobs.open_trace(trace_id, span_id=match.span_id)
            else:
                self.llmobs.open_trace(trace_id, slowest=self.sort == "duration")

    def action_why_slow(self) -> None:
        """w: the selected trace against traces of the same root and feature over the window."""
        from llmobs_tui.screens.why_slow import WhySlowScreen

        trace = self.selected_trace
        if trace is None:
            self.notify("Select a trace to explain.", severity="warning")
            return
        self.app.push_screen(WhySlowScreen(trace.trace_id))

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

    def action_mark(self) -> None:
        from llmobs_tui.screens.trace_diff import mark_trace

        trace = self.selected_trace
        mark_trace(self.llmobs, trace.trace_id if trace else None, trace.root_name if trace else None)

    def action_diff(self) -> None:
        from llmobs_tui.screens.trace_diff import open_diff

        trace = self.selected_trace
        open_diff(self.llmobs, trace.trace_id if trace else None)
