"""Trace: the span tree as a waterfall, and the selected span's details."""

from __future__ import annotations

import asyncio
import logging

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.critical_path import CriticalPath, contributor_parts
from llmobs_tui.reader import TraceDetail
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.screens.prompt import PromptScreen
from llmobs_tui.screens.trace_diff import mark_trace, open_diff
from llmobs_tui.trace_search import MAX_CONTENT_SPANS, SpanText, find_matches, span_texts
from llmobs_tui.widgets.quiet import update_static
from llmobs_tui.widgets.span_card import SpanCard
from llmobs_tui.widgets.span_detail import SpanDetailView
from llmobs_tui.widgets.waterfall import Waterfall
from store.dashboards import SpanRow
from store.span_detail import SpanDetail

log = logging.getLogger(__name__)


class TraceScreen(LiveScreen):
    NAME = "trace"
    BINDINGS = [
        Binding("c", "tab('conversation')", "Conversation"),
        Binding("a", "tab('attributes')", "Attributes"),
        Binding("e", "tab('events')", "Events"),
        Binding("dollar_sign", "tab('cost')", "Cost"),
        Binding("y", "copy_id('trace')", "Copy trace id"),
        Binding("Y", "copy_id('span')", "Copy span id"),
        # Not in the footer (it has no room left for them); `?` lists them.
        # Words that also name what these keys do elsewhere: the app's rows for them are not listed here.
        Binding("slash", "search", "Search this trace (names, attributes, prompts, outputs), n/N between matches · "
                "Filter traces: / on the other screens", show=False),
        Binding("escape", "end_search", "End the search (n/N: failed spans again); with none on: Back to the "
                "previous screen", show=False),
        Binding("m", "mark", "Mark this trace for a diff", show=False),
        Binding("d", "diff", "Diff the marked trace with this one", show=False),
        Binding("w", "why_slow", "Why slow? The selected call (on the root: the trace) against its cohort", show=False),
    ]
    DEFAULT_CSS = """
    TraceScreen #trace-summary { height: auto; max-height: 2; text-wrap: nowrap; text-overflow: ellipsis; }
    TraceScreen #trace-summary.-searching { max-height: 3; }
    TraceScreen #trace-body { height: 1fr; }
    TraceScreen Waterfall { height: 1fr; min-height: 5; }
    TraceScreen #trace-detail { height: 1fr; border-top: solid $panel-lighten-2; }
    TraceScreen SpanCard { display: none; }
    TraceScreen SpanDetailView { height: 1fr; }
    /* Wide, a tree taller than half the screen: side by side, the span's card above its tabs. */
    TraceScreen #trace-body.-wide { layout: horizontal; }
    TraceScreen #trace-body.-wide Waterfall { width: 3fr; }
    TraceScreen #trace-body.-wide #trace-detail { width: 2fr; border-top: none; border-left: solid $panel-lighten-2; }
    TraceScreen #trace-body.-wide SpanCard { display: block; max-height: 45%; border-bottom: solid $panel-lighten-2; }
    /* Wide, a tree that fits in half the screen: the waterfall full width and as tall as the tree
       (finer time bars), below it the span's card beside its tabs, both as tall as the rest. */
    TraceScreen #trace-body.-wide.-fit { layout: vertical; }
    TraceScreen #trace-body.-wide.-fit Waterfall { width: 1fr; }
    TraceScreen #trace-body.-wide.-fit #trace-detail { width: 1fr; layout: horizontal; border-left: none;
                                                       border-top: solid $panel-lighten-2; }
    TraceScreen #trace-body.-wide.-fit SpanCard { width: 2fr; height: 1fr; max-height: 100%; border-bottom: none;
                                                  border-right: solid $panel-lighten-2; }
    TraceScreen #trace-body.-wide.-fit SpanDetailView { width: 3fr; }
    """

    # The waterfall is sized to the tree when the tree takes at most half the trace's rows and
    # leaves the detail at least this many (else it takes its share and scrolls).
    MIN_DETAIL_ROWS = 10
    WIDE = 140

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.trace_id: bytes | None = None
        self.detail: TraceDetail | None = None
        self._select_slowest = False
        self._select_span: bytes | None = None  # a span to open on (an alert's failed or slowest call)
        self._shown_span: bytes | None = None
        # (trace id, span id, its details) read with the trace for the span it opens on (load)
        self._prefetched: tuple[bytes, bytes, SpanDetail] | None = None
        self._summary_head = Text("")  # the header without the search line
        self._search_text = ""  # the search inside this trace ("" when none is on)
        self._search_texts: dict[bytes, SpanText] = {}
        self._search_loaded: frozenset[int] = frozenset()  # the span rows _search_texts has read
        self._search_loading = False
        self._search_jump = False  # Enter was pressed: select a match once there is one

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="trace-summary")
        with Vertical(id="trace-body"):
            yield Waterfall(id="waterfall")
            with Vertical(id="trace-detail"):
                yield SpanCard(id="span-card")
                yield SpanDetailView(id="span-detail")
        yield from self.compose_chrome_bottom()

    def on_mount(self) -> None:
        self.query_one(Waterfall).focus()

    def on_resize(self) -> None:
        body = self.query_one("#trace-body")
        self._arrange(self.size.width >= self.WIDE, body.has_class("-fit"))
        self.call_after_refresh(self._fit_waterfall)

    def _arranged(self) -> list[Widget]:
        """The widgets DEFAULT_CSS styles by #trace-body's -wide and -fit: the body and these, none
        under them (tests/test_trace_layout.py holds the CSS to that)."""
        return [self.query_one("#trace-body"), self.query_one(Waterfall), self.query_one("#trace-detail"),
                self.query_one(SpanCard), self.query_one(SpanDetailView)]

    def _arrange(self, wide: bool, fit: bool) -> None:
        """Set #trace-body's -wide and -fit, restyling only the widgets their rules style. A class set
        the usual way restyles every widget under the body, the span's tabs and their panes included
        (~130): about 25 ms of the UI thread (profiled) each time a trace opens that fits where the last
        did not."""
        body = self.query_one("#trace-body")
        if body.has_class("-wide") == wide and body.has_class("-fit") == fit:
            return
        body.set_class(wide, "-wide", update=False)
        body.set_class(fit, "-fit", update=False)
        self.app.stylesheet.update_nodes(self._arranged(), animate=False)
        self.refresh(layout=True)

    def _fit_waterfall(self) -> None:
        """A short tree gets the rows it needs and the span's detail the rest (`-fit`); a long one
        shares the screen with the detail and scrolls. Decided on the whole tree, not the rows shown,
        so that collapsing a span or `l`/`p` does not move the detail under the cursor."""
        if not self.is_mounted:
            return
        body = self.query_one("#trace-body")
        waterfall = self.query_one(Waterfall)
        spans = len(self.detail.spans) if self.detail is not None else 0
        height = body.size.height
        # No trace yet (the screen warmed ahead of its key, or a trace loading) is laid out as a short
        # one, the most common kind: the first trace opened then needs no new arrangement, a restyle and
        # two layouts of the whole screen (the first Enter on a trace painted at 87-104 ms under ingest,
        # 57-65 with this and _arrange; bench.tui_keys).
        fit = spans <= height // 2 and spans + self.MIN_DETAIL_ROWS <= height
        self._arrange(body.has_class("-wide"), fit)
        rows = max(spans, 5) if fit else None
        set_rows = waterfall.styles.inline.get_rule("height")
        if (None if set_rows is None else set_rows.value) != rows:  # clearing it lays the screen out again
            waterfall.styles.height = rows

    def open(self, trace_id: bytes, slowest: bool = False, span_id: bytes | None = None) -> None:
        self._select_slowest = slowest
        self._select_span = span_id
        if span_id is not None and trace_id == self.trace_id and self.is_mounted and self.detail is not None:
            self.query_one(Waterfall).set_spans(self.detail.spans, select=span_id)
            self._select_span = None
        if trace_id != self.trace_id:
            self._reset_search()
            self.trace_id = trace_id
            self.detail = None
            self._shown_span = None
            if not self.is_mounted:
                return  # composed fresh on first show
            waterfall = self.query_one(Waterfall)
            waterfall.set_spans([])
            self.query_one(SpanDetailView).show(None)
            self.query_one(SpanCard).show(None)
            self._fit_waterfall()
            self.query_one("#trace-summary", Static).update(Text(" loading…", style="dim"))

    async def load(self, reader, now_s: float) -> TraceDetail | None:
        if self.trace_id is None:
            return None
        trace_id = self.trace_id
        detail = await reader.trace(trace_id)
        # The span a new trace opens on is read with it: the waterfall, the card and the tabs then appear
        # in one paint, not the tabs a paint later (a layout and a render of the screen again).
        self._prefetched = None
        select = self._span_to_select(detail.spans) if detail.spans else None
        if select is not None and select != self._shown_span:
            span = next(s for s in detail.spans if s.span_id == select)
            try:
                self._prefetched = (trace_id, select, await reader.span_detail(trace_id, span))
            except Exception:  # the trace still shows; its span's details are read (and fail) as on a move
                log.debug("reading the details of the span a trace opens on failed", exc_info=True)
        return detail

    def show(self, detail: TraceDetail | None) -> None:
        summary = self.query_one("#trace-summary", Static)
        if detail is None:
            summary.update(Text(" No trace open: press 3 for the trace list and Enter on a trace.", style="dim"))
            return
        if not detail.spans:
            summary.update(Text(f" Trace {detail.trace_id.hex()} is not in the store: evicted by retention, or never "
                                "received. Press 3 for the trace list, Esc to go back.", style="yellow"))
            return
        self.detail = detail
        spans = detail.spans
        t0 = min(s.start_ns for s in spans)
        t1 = max(s.end_ns for s in spans)
        calls = [s for s in spans if s.billed]
        cost = sum(s.cost_nusd or 0 for s in calls)
        unpriced = sum(1 for s in calls if s.cost_nusd is None)
        errors = sum(1 for s in spans if s.failed)
        root = next((s for s in spans if s.parent_span_id is None), spans[0])
        text = Text(" ")
        text.append_text(fmt.safe(root.name, style="bold", limit=60))
        text.append(f"  {detail.trace_id.hex()}", style="dim")
        tokens = sum((s.input_tokens or 0) + (s.output_tokens or 0) for s in calls)
        text.append(f"  {fmt.duration(t1 - t0)}  {fmt.plural(len(spans), 'span')}  "
                    f"{fmt.plural(len(calls), 'LLM call')}  {fmt.tokens(tokens)} tok  ")
        text.append(fmt.money(cost), style="bold")
        if unpriced:
            text.append(f" +{unpriced} unpriced", style="yellow")
        if errors:
            text.append(f"  {errors} failed ({'Esc, then n/N' if self._search_text else 'n/N'})", style="bold red")
        waterfall = self.query_one(Waterfall)
        select = self._span_to_select(spans)
        if self._select_span is not None and select == self._select_span:
            self._select_span = None
            self._select_slowest = False
        elif self._select_slowest:
            self._select_slowest = False
        waterfall.set_spans(spans, select=select)
        self._fit_waterfall()
        text.append_text(contributors_line(waterfall.critical_path, spans))
        self._summary_head = text
        self._mark_search_matches()
        self._render_summary()

    def _span_to_select(self, spans: list[SpanRow]) -> bytes | None:
        """The span to select as `spans` are shown, None to keep the selection: the one asked for (an
        alert's call), else the slowest LLM call when asked, else on a trace with nothing selected
        yet the first LLM call (or the root)."""
        if self._select_span is not None and any(s.span_id == self._select_span for s in spans):
            return self._select_span
        if self._select_slowest:
            llm = [s for s in spans if s.is_llm] or spans
            return max(llm, key=lambda s: s.duration_ns or 0).span_id
        if self.query_one(Waterfall).selected is None:
            first_llm = next((s for s in sorted(spans, key=lambda s: s.start_ns) if s.is_llm), None)
            root = next((s for s in spans if s.parent_span_id is None), spans[0])
            return first_llm.span_id if first_llm else root.span_id
        return None

    def on_waterfall_selected(self, message: Waterfall.Selected) -> None:
        if self._search_text:
            self._render_summary()  # "match 2/7" follows the cursor
        span = message.span
        if span is None or self.trace_id is None:
            return
        if span.span_id != self._shown_span:
            self._shown_span = span.span_id
            prefetched, self._prefetched = self._prefetched, None
            if prefetched is not None and prefetched[:2] == (self.trace_id, span.span_id):
                self._show_details(span, prefetched[2])  # read with the trace (load)
                return
            self._show_card(span, None)  # what the span row says, at once; its details when read
            self.load_span(self.trace_id, span)

    @work(exclusive=True, group="span-detail")
    async def load_span(self, trace_id: bytes, span: SpanRow) -> None:
        detail = await self.llmobs.reader.span_detail(trace_id, span)
        if self._shown_span == span.span_id:
            self._show_details(span, detail)

    def _show_details(self, span: SpanRow, detail: SpanDetail) -> None:
        self.query_one(SpanDetailView).show(detail)
        self._show_card(span, detail)

    def _show_card(self, span: SpanRow, detail: SpanDetail | None) -> None:
        path = self.query_one(Waterfall).critical_path
        self.query_one(SpanCard).show(span, detail, path.duration_ns, path.contribution_ns.get(span.span_id),
                                      path.self_ns.get(span.span_id))

    def action_tab(self, name: str) -> None:
        from textual.widgets import TabbedContent

        self.query_one(TabbedContent).active = f"tab-{name}"

    def action_copy_id(self, which: str) -> None:
        """y: the trace id (what a log line or a colleague asks for); Y: the selected span's."""
        if self.trace_id is None:
            self.notify("No trace open: nothing to copy.", severity="warning")
        elif which == "span":
            span = self.selected_span
            if span is None:
                self.notify("Select a span to copy its id.", severity="warning")
            else:
                self.llmobs.copy_value("span id", span.span_id.hex())
        else:
            self.llmobs.copy_value("trace id", self.trace_id.hex())

    def action_why_slow(self) -> None:
        """w: the selected LLM call against its model's calls on its feature; on the root span or a
        span that is not a call, the trace against traces of the same root."""
        from llmobs_tui.screens.why_slow import WhySlowScreen

        if self.trace_id is None or self.detail is None:
            self.notify("No trace open: nothing to explain.", severity="warning")
            return
        self.app.push_screen(WhySlowScreen(self.trace_id, self.selected_span, self.detail.spans))

    @property
    def selected_span(self) -> SpanRow | None:
        return self.query_one(Waterfall).selected

    # -- search inside the trace: `/`, n/N between matches, Esc ends it ------------------------

    def action_search(self) -> None:
        """`/` here searches this trace (elsewhere it filters the trace list)."""
        if self.detail is None or not self.detail.spans:
            self.notify("No trace open (or it is still loading): nothing to search yet.", severity="warning")
            return
        self._load_search_texts_if_stale()
        before = self._search_text

        def typed(value: str) -> None:
            self._apply_search(value.strip(), jump=False)

        def done(value: str | None) -> None:
            # Enter keeps the search and selects a match; Esc restores the one there was.
            self._apply_search(before if value is None else value.strip(), jump=value is not None)

        self.app.push_screen(PromptScreen(
            "/", before, "search this trace: span names, attribute keys and values, prompts, outputs, tool calls "
            "(plain text, any case) · Enter: n/N move between matches, Esc on the trace ends the search",
            history=self.llmobs.prompt_history.setdefault("trace-search", []), on_change=typed), done)

    def action_end_search(self) -> None:
        self._apply_search("", jump=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "end_search":
            return bool(self._search_text)  # no search on: Esc goes back (the app's binding)
        return True

    def _reset_search(self) -> None:
        """Another trace: its search starts empty, and the old trace's texts are let go."""
        self._search_text = ""
        self._search_texts = {}
        self._search_loaded = frozenset()
        self._search_loading = False
        self._search_jump = False
        self.workers.cancel_group(self, "trace-search")
        if self.is_mounted:
            self.query_one(Waterfall).set_matches(None)
            self.query_one("#trace-summary", Static).remove_class("-searching")

    def _apply_search(self, text: str, *, jump: bool) -> None:
        self._search_text = text
        self._search_jump = jump and bool(text)
        if self.detail is not None and self.detail.spans and self.is_mounted:
            self.show(self.detail)  # the header's error hint and the marks change with the search

    def _mark_search_matches(self) -> None:
        """Mark the spans that match the search (again each refresh: spans and content arrive)."""
        waterfall = self.query_one(Waterfall)
        self.query_one("#trace-summary", Static).set_class(bool(self._search_text), "-searching")
        if not self._search_text or self.detail is None:
            waterfall.set_matches(None)
            return
        self._load_search_texts_if_stale()
        matches = find_matches(self._search_text, self.detail.spans, self._search_texts)
        waterfall.set_matches(matches)
        if self._search_jump and not self._search_loading:  # jump once the content is searched too
            self._search_jump = False
            selected = waterfall.selected
            if matches and (selected is None or selected.span_id not in matches):
                waterfall.action_next_match(1)

    def _load_search_texts_if_stale(self) -> None:
        if self.detail is None or self.trace_id is None or self._search_loading:
            return
        # Only spans not read yet: a live trace's new spans, not all of them again every tick.
        spans = [s for s in self.detail.spans[:MAX_CONTENT_SPANS] if s.id not in self._search_loaded]
        if spans:
            self._search_loading = True
            self.load_search_texts(self.trace_id, spans)

    @work(exclusive=True, group="trace-search")
    async def load_search_texts(self, trace_id: bytes, spans: list[SpanRow]) -> None:
        try:
            details = await self.llmobs.reader.span_details(trace_id, spans)
            texts = await asyncio.to_thread(span_texts, details)
        except Exception as exc:  # a busy or damaged store: names are still searched
            if self.trace_id == trace_id:
                self._search_loading = False
                self._search_loaded |= {s.id for s in spans}  # no retry every tick
                self.notify(f"Search: could not read the spans' content ({exc}); matching names only.",
                            severity="warning")
            return
        if self.trace_id != trace_id:
            return
        self._search_texts.update(texts)
        self._search_loaded |= {s.id for s in spans}
        self._search_loading = False
        if self._search_text and self.detail is not None and self.detail.spans:
            self.show(self.detail)

    def _render_summary(self) -> None:
        text = self._summary_head.copy()
        if self._search_text:
            text.append_text(self._search_line())
        update_static(self.query_one("#trace-summary", Static), text)

    def _search_line(self) -> Text:
        """ match 2/7 for 'refund' in user message · n/N next/prev match · Esc ends the search"""
        waterfall = self.query_one(Waterfall)
        order = waterfall.match_order
        query = fmt.clean(self._search_text, limit=60)
        selected = waterfall.selected
        text = Text("\n ")
        ids = [s.span_id for s in order]
        if not order:
            text.append(f"no match for '{query}'", style="bold yellow")
        elif selected is not None and selected.span_id in ids:
            text.append(f"match {ids.index(selected.span_id) + 1}/{len(ids)} for '{query}'", style="bold")
            where = find_matches(self._search_text, [selected], self._search_texts).get(selected.span_id)
            if where:
                text.append(f" in {fmt.clean(where, limit=60)}", style="dim")
        else:
            text.append(f"{fmt.plural(len(ids), 'match', 'matches')} for '{query}'", style="bold")
        hidden = sum(1 for span in order if waterfall.hidden_by_filter(span))
        if hidden:
            text.append(f" ({hidden} hidden by l/p)", style="yellow")
        if self._search_loading:
            text.append(" · searching content…", style="dim")
        elif self.detail is not None and len(self.detail.spans) > MAX_CONTENT_SPANS:
            text.append(f" · content of the first {MAX_CONTENT_SPANS:,} of {len(self.detail.spans):,} spans, "
                        "names of all", style="yellow")
        text.append(" · n/N next/prev match · Esc ends the search", style="dim")
        errors = sum(1 for span in self.detail.spans if span.failed) if self.detail is not None else 0
        if errors:
            text.append(f", then n/N: {fmt.plural(errors, 'failed span')}", style="dim")
        return text

    # -- trace diff: `m` marks this trace, `d` compares the marked one with it -------------------

    def action_mark(self) -> None:
        root = None
        if self.detail is not None and self.detail.spans:
            root = next((s for s in self.detail.spans if s.parent_span_id is None), self.detail.spans[0]).name
        mark_trace(self.llmobs, self.trace_id, root)

    def action_diff(self) -> None:
        open_diff(self.llmobs, self.trace_id)


def contributors_line(path: CriticalPath, spans: list[SpanRow]) -> Text:
    """The top three contributors to the trace's duration: the spans whose own time on the critical
    path made it as long as it is (p: show only the path)."""
    parts = contributor_parts(path, spans)
    if not parts:
        return Text("")
    text = Text("\n critical path: ", style="dim")
    for i, (label, figures) in enumerate(parts):
        if i:
            text.append(" · ", style="dim")
        text.append_text(fmt.safe(label, style="bold"))
        text.append(f" {figures}")
    return text
