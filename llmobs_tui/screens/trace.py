"""Trace: the span tree as a waterfall, and the selected span's details."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.critical_path import GAP, CriticalPath
from llmobs_tui.reader import TraceDetail
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.widgets.span_detail import SpanDetailView
from llmobs_tui.widgets.waterfall import KIND_MARK, Waterfall
from store.dashboards import SpanRow


class TraceScreen(LiveScreen):
    NAME = "trace"
    BINDINGS = [
        Binding("c", "tab('conversation')", "Conversation"),
        Binding("a", "tab('attributes')", "Attributes"),
        Binding("e", "tab('events')", "Events"),
        Binding("dollar_sign", "tab('cost')", "Cost"),
        Binding("y", "copy_id('trace')", "Copy trace id"),
        Binding("Y", "copy_id('span')", "Copy span id"),
    ]
    DEFAULT_CSS = """
    TraceScreen #trace-summary { height: auto; max-height: 2; text-wrap: nowrap; text-overflow: ellipsis; }
    TraceScreen #trace-body { height: 1fr; }
    TraceScreen #trace-body.-wide { layout: horizontal; }
    TraceScreen Waterfall { height: 1fr; min-height: 5; }
    TraceScreen #trace-body.-wide Waterfall { width: 3fr; }
    TraceScreen SpanDetailView { height: 1fr; border-top: solid $panel-lighten-2; }
    TraceScreen #trace-body.-wide SpanDetailView { width: 2fr; border-top: none; border-left: solid $panel-lighten-2; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.trace_id: bytes | None = None
        self.detail: TraceDetail | None = None
        self._select_slowest = False
        self._select_span: bytes | None = None  # a span to open on (an alert's failed or slowest call)
        self._shown_span: bytes | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="trace-summary")
        with Vertical(id="trace-body"):
            yield Waterfall(id="waterfall")
            yield SpanDetailView(id="span-detail")
        yield from self.compose_chrome_bottom()

    def on_mount(self) -> None:
        self.query_one(Waterfall).focus()

    def on_resize(self) -> None:
        self.query_one("#trace-body").set_class(self.size.width >= 140, "-wide")

    def open(self, trace_id: bytes, slowest: bool = False, span_id: bytes | None = None) -> None:
        self._select_slowest = slowest
        self._select_span = span_id
        if span_id is not None and trace_id == self.trace_id and self.is_mounted and self.detail is not None:
            self.query_one(Waterfall).set_spans(self.detail.spans, select=span_id)
            self._select_span = None
        if trace_id != self.trace_id:
            self.trace_id = trace_id
            self.detail = None
            self._shown_span = None
            if not self.is_mounted:
                return  # composed fresh on first show
            waterfall = self.query_one(Waterfall)
            waterfall.set_spans([])
            self.query_one(SpanDetailView).show(None)
            self.query_one("#trace-summary", Static).update(Text(" loading…", style="dim"))

    async def load(self, reader, now_s: float) -> TraceDetail | None:
        if self.trace_id is None:
            return None
        return await reader.trace(self.trace_id)

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
            text.append(f"  {errors} failed (n/N)", style="bold red")
        waterfall = self.query_one(Waterfall)
        select = None
        if self._select_span is not None and any(s.span_id == self._select_span for s in spans):
            select = self._select_span
            self._select_span = None
            self._select_slowest = False
        elif self._select_slowest:
            llm = [s for s in spans if s.is_llm] or spans
            select = max(llm, key=lambda s: s.duration_ns or 0).span_id
            self._select_slowest = False
        elif waterfall.selected is None:
            first_llm = next((s for s in sorted(spans, key=lambda s: s.start_ns) if s.is_llm), None)
            select = first_llm.span_id if first_llm else root.span_id
        waterfall.set_spans(spans, select=select)
        text.append_text(contributors_line(waterfall.critical_path, spans))
        summary.update(text)

    def on_waterfall_selected(self, message: Waterfall.Selected) -> None:
        span = message.span
        if span is None or self.trace_id is None:
            return
        if span.span_id != self._shown_span:
            self._shown_span = span.span_id
            self.load_span(self.trace_id, span)

    @work(exclusive=True, group="span-detail")
    async def load_span(self, trace_id: bytes, span: SpanRow) -> None:
        detail = await self.llmobs.reader.span_detail(trace_id, span)
        if self._shown_span == span.span_id:
            self.query_one(SpanDetailView).show(detail)

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

    @property
    def selected_span(self) -> SpanRow | None:
        return self.query_one(Waterfall).selected


def contributors_line(path: CriticalPath, spans: list[SpanRow]) -> Text:
    """The top three contributors to the trace's duration: the spans whose own time on the critical
    path made it as long as it is (p: show only the path)."""
    if len(spans) < 2 or not path.duration_ns:
        return Text("")
    names = {s.span_id: s for s in spans}
    text = Text("\n critical path: ", style="dim")
    for i, (span_id, ns) in enumerate(path.top(3)):
        if i:
            text.append(" · ", style="dim")
        span = names.get(span_id) if span_id is not GAP else None
        if span is None:
            label = "no span running"
        else:
            label = f"{KIND_MARK.get(span.kind, '·')} {fmt.clean(span.name, limit=40)}"
        text.append_text(fmt.safe(label, style="bold"))
        text.append(f" {fmt.duration(ns)} {ns / path.duration_ns:.0%}")
    return text
