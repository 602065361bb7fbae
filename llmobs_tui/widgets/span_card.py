"""The selected span at a glance, beside its tabs on a wide Trace screen: where its time went (for
an LLM call: waiting for the first token, then decoding), its tokens split by kind, what it cost
term by term, its share of the critical path, then its attributes one line each (the Attributes tab
has them in full).

Everything in it comes from spans: drawn as Text through format.safe, never as markup."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.widgets.quiet import update_static
from store.dashboards import SpanRow
from store.latency import decode_figures
from store.pricing import token_split
from store.span_detail import SpanDetail

# Bar colours: the waterfall's (waiting for the first token amber, decoding violet), so the card
# reads as a close-up of the selected row.
STYLE_WAIT = "on #92400e"
STYLE_DECODE = "on #6d28d9"
STYLE_OWN = "on #4b5563"
STYLE_CHILDREN = "on #374151"
STYLE_TOKENS = ("on #0e7490", "on #155e75", "on #164e63")  # uncached input, cache read, cache write
STYLE_OUTPUT = ("on #6d28d9", "on #4c1d95")  # visible output, reasoning
# The cost terms of store.pricing.CostBreakdown, in its order.
COST_TERMS = ("input", "cache read", "cache write", "output", "reasoning")
MAX_BAR = 40
ATTRIBUTE_VALUE_LIMIT = 300


def bar(parts: list[tuple[int, str]], width: int) -> Text:
    """A stacked bar of `width` cells, each part's cells in proportion to its amount (a non-zero part
    keeps at least one cell, so a small share stays visible). Glyphs as well as colour: ▓ then ░
    alternate between parts, readable under NO_COLOR."""
    total = sum(max(0, n) for n, _ in parts)
    text = Text("▕", style="dim")
    if total <= 0 or width <= 0:
        text.append(" " * max(0, width))
        text.append("▏", style="dim")
        return text
    cells = [round(max(0, n) * width / total) for n, _ in parts]
    for i, (n, _) in enumerate(parts):
        if n > 0 and cells[i] == 0:
            cells[i] = 1
    while sum(cells) > width:  # the rounding and the minimum cells took too many: take from the largest
        cells[cells.index(max(cells))] -= 1
    if sum(cells) < width:
        cells[cells.index(max(cells))] += width - sum(cells)
    for i, ((_, style), count) in enumerate(zip(parts, cells)):
        text.append(("▓" if i % 2 == 0 else "░") * count, style=style)
    text.append("▏", style="dim")
    return text


def _share(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return ""
    return f" {part / whole:.0%}"


def timing_rows(span: SpanRow, width: int, self_ns: int | None) -> list[tuple[str, RenderableType]]:
    """For an LLM call with a TTFT: first token (queueing and prefill) then decode; for any other
    span with children: its own time against its children's."""
    total = span.duration_ns
    rows: list[tuple[str, RenderableType]] = []
    if span.is_llm and span.ttft_ns is not None and total:
        figures = decode_figures(total, span.ttft_ns, span.output_tokens)
        decode_ns = figures.decode_ns if figures else max(0, total - span.ttft_ns)
        line = Text(f"{fmt.duration(total)} ")
        line.append_text(bar([(span.ttft_ns, STYLE_WAIT), (decode_ns, STYLE_DECODE)], width))
        legend = Text("▓", style=STYLE_WAIT)
        legend.append(f" first token {fmt.duration(span.ttft_ns)}{_share(span.ttft_ns, total)} (queue + prefill)  ")
        legend.append("░", style=STYLE_DECODE)
        legend.append(f" decode {fmt.duration(decode_ns)}{_share(decode_ns, total)}")
        if figures is not None and figures.tokens_per_s:
            legend.append(f" · {figures.tokens_per_s:.0f} tok/s", style="dim")
        if figures is not None and figures.tpot_ns is not None:
            legend.append(f" · TPOT {fmt.duration(figures.tpot_ns)}", style="dim")
        rows += [("time", line), ("", legend)]
    elif self_ns is not None and total and self_ns < total:
        line = Text(f"{fmt.duration(total)} ")
        line.append_text(bar([(self_ns, STYLE_OWN), (total - self_ns, STYLE_CHILDREN)], width))
        legend = Text("▓", style=STYLE_OWN)
        legend.append(f" own time {fmt.duration(self_ns)}{_share(self_ns, total)}  ")
        legend.append("░", style=STYLE_CHILDREN)
        legend.append(f" children {fmt.duration(total - self_ns)}{_share(total - self_ns, total)}")
        rows += [("time", line), ("", legend)]
    else:
        note = " (no TTFT recorded: first token and decode not told apart)" if span.is_llm else ""
        rows.append(("time", Text(fmt.duration(total) + note)))
    return rows


def token_rows(span: SpanRow, width: int) -> list[tuple[str, RenderableType]]:
    if not span.is_llm or (span.input_tokens is None and span.output_tokens is None):
        return []
    inp, out = span.input_tokens or 0, span.output_tokens or 0
    # Input includes the cache tokens and output the reasoning: split as the price formula splits them.
    uncached, cread, cwrite, visible, reason = token_split(span.input_tokens, span.output_tokens,
                                                           span.cache_read_tokens, span.cache_write_tokens,
                                                           span.reasoning_tokens)
    scale = max(inp, out, 1)
    rows: list[tuple[str, RenderableType]] = []
    line = Text(f"in  {fmt.tokens(inp):>6} ")
    line.append_text(bar([(uncached, STYLE_TOKENS[0]), (cread, STYLE_TOKENS[1]), (cwrite, STYLE_TOKENS[2])],
                         max(1, round(width * inp / scale))))
    line.append(f" uncached {fmt.tokens(uncached)}", style="dim")
    if cread or cwrite:
        line.append(f" · cache read {fmt.tokens(cread)} · write {fmt.tokens(cwrite)}", style="dim")
    rows.append(("tokens", line))
    line = Text(f"out {fmt.tokens(out):>6} ")
    line.append_text(bar([(visible, STYLE_OUTPUT[0]), (reason, STYLE_OUTPUT[1])], max(1, round(width * out / scale))))
    line.append(f" visible {fmt.tokens(visible)}", style="dim")
    if reason:
        line.append(f" · reasoning {fmt.tokens(reason)}", style="dim")
    rows.append(("", line))
    return rows


def cost_row(span: SpanRow, detail: SpanDetail | None) -> list[tuple[str, RenderableType]]:
    if not span.is_llm:
        return []
    text = Text(fmt.money(span.cost_nusd, unpriced=span.price_id is None), style="bold")
    if not span.billed:
        text.append("  not billed here (", style="yellow")
        text.append("a twin span is billed" if span.duplicate_of is not None else "a call below it is billed",
                    style="yellow")
        text.append(")", style="yellow")
    elif detail is not None and detail.cost is not None:
        terms = [(name, femto) for name, femto in zip(COST_TERMS, detail.cost.terms_femto_usd) if femto]
        whole = sum(femto for _, femto in terms)
        if terms:
            text.append(" = ", style="dim")
            text.append(" + ".join(f"{name} {femto / whole:.0%}" for name, femto in terms), style="dim")
        text.append("  ")
        text.append_text(fmt.safe(detail.cost.record.id, style="dim", limit=60))
    return [("cost", text)]


def path_row(span: SpanRow, trace_ns: int | None, contribution_ns: int | None) -> list[tuple[str, RenderableType]]:
    if not contribution_ns:
        return [("path", Text("not on the critical path: the trace would not end sooner without it", style="dim"))]
    text = Text(f"{fmt.duration(contribution_ns)} of the trace's critical path")
    if trace_ns:
        text.append(f" ({contribution_ns / trace_ns:.0%} of {fmt.duration(trace_ns)})", style="dim")
    return [("path", text)]


def card(span: SpanRow, detail: SpanDetail | None, width: int, trace_ns: int | None = None,
         contribution_ns: int | None = None, self_ns: int | None = None) -> RenderableType:
    """The card of `span` in `width` cells; `detail` (None while it loads) adds the cost terms and
    the attributes."""
    head = Text()
    head.append_text(fmt.safe(span.name, style="bold", limit=120))
    head.append(f"  {span.kind}", style="dim")
    if span.is_llm:
        head.append("  ")
        head.append_text(fmt.safe(f"{span.request_model or '–'} → {span.response_model or '–'}", limit=120))
        if span.provider:
            head.append_text(fmt.safe(f" · {span.provider}", style="dim", limit=60))
        if span.finish_reason:
            head.append_text(fmt.safe(f" · finish {span.finish_reason}", style="dim", limit=40))
    if span.failed:
        head.append("  ✕ ", style="bold red")
        head.append_text(fmt.safe(span.error_subclass or span.error_class or "ERROR", style="bold red", limit=40))
    label_width = len("tokens") + 1
    # Room for a bar and its figures on one line: half of what is left after the labels.
    bar_width = max(8, min(MAX_BAR, (width - label_width) // 2 - 6))
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True, width=label_width - 1)
    grid.add_column(overflow="fold")
    for label, value in (timing_rows(span, bar_width, self_ns) + token_rows(span, bar_width)
                         + cost_row(span, detail) + path_row(span, trace_ns, contribution_ns)):
        grid.add_row(label, value)
    parts: list[RenderableType] = [head, grid]
    if detail is not None and (detail.attributes or detail.resource):
        parts += [Text(""), attribute_lines(detail, width)]
    elif detail is None:
        parts += [Text(""), Text("reading the span…", style="dim")]
    return Group(*parts)


def attribute_lines(detail: SpanDetail, width: int) -> RenderableType:
    """One line per attribute (long values cut: the Attributes tab, `a`, has them whole)."""
    rows = [(a.key, a.value) for a in detail.attributes] + [("resource." + a.key, a.value) for a in detail.resource]
    key_width = min(max(len(key) for key, _ in rows), 40, max(10, width // 2))
    lines = [Text("attributes", style="bold").append("  one line each · a: in full", style="dim")]
    for key, value in rows:
        line = fmt.safe(key, style="dim", limit=200)
        line.truncate(key_width, overflow="ellipsis", pad=True)
        line.append(" ")
        line.append_text(_one_line(value))
        line.truncate(width, overflow="ellipsis")
        line.no_wrap = True
        lines.append(line)
    return Group(*lines)


def _one_line(value: object) -> Text:
    if isinstance(value, bytes):
        return Text(f"<{len(value)} bytes>", style="dim")
    text = fmt.clean(value, limit=ATTRIBUTE_VALUE_LIMIT)
    return Text(" ".join(text.split()), style="cyan" if isinstance(value, (int, float, bool)) else "")


class SpanCard(VerticalScroll):
    DEFAULT_CSS = """
    SpanCard { height: auto; padding: 0 1; }
    SpanCard > Static { width: 100%; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.span: SpanRow | None = None
        self.detail: SpanDetail | None = None
        self._trace_figures: tuple[int | None, int | None, int | None] = (None, None, None)
        self._drawn_width = 0

    def compose(self) -> ComposeResult:
        yield Static(Text("Select a span.", style="dim"), id="span-card-body")

    def show(self, span: SpanRow | None, detail: SpanDetail | None = None, trace_ns: int | None = None,
             contribution_ns: int | None = None, self_ns: int | None = None) -> None:
        """The span's card; `detail` None while the span's details load (the card shows what the
        span row already says)."""
        self.span, self.detail = span, detail
        self._trace_figures = (trace_ns, contribution_ns, self_ns)
        self._draw()

    def on_resize(self) -> None:
        # Only for a new outer width: a scrollbar coming or going must not redraw (and so resize) again.
        if self._width() != self._drawn_width:
            self._draw()

    def _width(self) -> int:
        """The cells the card draws in: the outer width less the padding and a scrollbar's room
        (kept whether or not one shows, so the card's layout does not depend on it)."""
        return max(20, (self.size.width or 62) - 3)

    def _draw(self) -> None:
        if not self.is_mounted:
            return
        body = self.query_one("#span-card-body", Static)
        if self.span is None:
            update_static(body, Text("Select a span.", style="dim"))
            return
        self._drawn_width = self._width()
        # A layout of the screen only if the card's lines change in number (another span's card, or the
        # same one wider, mostly keeps them).
        update_static(body, card(self.span, self.detail, self._drawn_width, *self._trace_figures))

    def text(self) -> str:
        """The card as plain text (tests)."""
        import io

        from rich.console import Console

        if self.span is None:
            return ""
        console = Console(width=max(40, self.size.width or 80), file=io.StringIO(), record=True)
        console.print(card(self.span, self.detail, self._drawn_width or 60, *self._trace_figures))
        return console.export_text()
