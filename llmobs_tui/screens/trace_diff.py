"""Trace diff: the marked trace (`m`) and another (`d` on it) side by side, aligned by span path.

A modal screen over the Trace or Traces screen (Esc or q goes back to it): one table with a row
per step of the two traces (added spans green, missing red; durations of both, and duration,
token and cost deltas, this − marked), then line diffs of the first system prompt and of the last
LLM output. Figures and alignment come from llmobs_tui/trace_diff.py; the text is untrusted and
drawn as data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from llmobs_tui import format as fmt
from llmobs_tui.trace_diff import (
    AlignedSpan,
    DiffLine,
    TraceDiff,
    TraceTotals,
    diff_traces,
    line_diff,
    signed_duration,
    signed_money,
    signed_tokens,
    span_tokens,
)
from llmobs_tui.trace_search import MAX_CONTENT_SPANS, message_text
from llmobs_tui.widgets.waterfall import KIND_MARK
from store.dashboards import SpanRow
from store.span_detail import SpanDetail

if TYPE_CHECKING:
    from llmobs_tui.app import LlmobsApp

# A prompt or output diff longer than this many lines is cut (the rest is counted).
MAX_DIFF_LINES = 400
# A text the same in both traces is shown up to this many lines (wide screens).
MAX_SAME_LINES = 12
# Below this width the table keeps only durations and the deltas.
WIDE = 120
DIFF_STYLE = {"added": "green", "removed": "red", "hunk": "cyan", "same": ""}
DIFF_SIGN = {"added": "+", "removed": "-", "hunk": "", "same": " "}


def mark_trace(app: LlmobsApp, trace_id: bytes | None, root_name: str | None) -> None:
    """`m`: remember this trace (one at a time, on the app) for a later `d` on another."""
    if trace_id is None:
        app.notify("Open or select a trace to mark it.", severity="warning")
        return
    app.marked_trace = (trace_id, root_name or "?")
    app.notify(f"Marked trace {trace_id.hex()[:8]} ({fmt.clean(root_name or '?', limit=40)}) — "
               "press d on another trace to compare")


def open_diff(app: LlmobsApp, trace_id: bytes | None) -> None:
    """`d`: the marked trace against this one."""
    if trace_id is None:
        app.notify("Open or select a trace to compare it with the marked one.", severity="warning")
    elif app.marked_trace is None:
        app.notify("No trace is marked: press m on a trace, then d on another to compare them.",
                   severity="warning")
    elif app.marked_trace[0] == trace_id:
        app.notify("This is the marked trace: press d on another trace to compare the two.", severity="warning")
    else:
        app.push_screen(TraceDiffScreen(app.marked_trace[0], trace_id))


def _details_subset(spans: list[SpanRow]) -> list[SpanRow]:
    """The LLM calls whose messages the diff reads, bounded: the first and the last ones (the
    system prompt comes from the first, the final output from the last)."""
    calls = [s for s in spans if s.is_llm]
    if len(calls) <= MAX_CONTENT_SPANS:
        return calls
    half = MAX_CONTENT_SPANS // 2
    return calls[:half] + calls[-half:]


class TraceDiffScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    TraceDiffScreen { background: $background; }
    TraceDiffScreen #diff-title { height: auto; max-height: 3; text-wrap: nowrap; text-overflow: ellipsis;
                                  background: $panel; }
    TraceDiffScreen VerticalScroll { height: 1fr; }
    TraceDiffScreen #diff-body { width: 100%; height: auto; }
    """
    BINDINGS = [Binding("escape,q", "dismiss", "Back")]

    def __init__(self, marked_id: bytes, this_id: bytes) -> None:
        super().__init__()
        self.marked_id = marked_id
        self.this_id = this_id
        self.diff: TraceDiff | None = None
        self._roots: tuple[str, str] = ("?", "?")
        self._inputs: tuple[str | None, str | None] = (None, None)  # each trace's first user input

    def compose(self) -> ComposeResult:
        yield Static(Text(" Trace diff: reading both traces…", style="dim"), id="diff-title")
        with VerticalScroll():
            yield Static(id="diff-body")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()
        self.load()

    def on_resize(self) -> None:
        if self.diff is not None:
            self.render_diff()

    @work(exclusive=True, group="trace-diff")
    async def load(self) -> None:
        reader = self.app.reader  # type: ignore[attr-defined]
        try:
            marked = await reader.trace(self.marked_id)
            this = await reader.trace(self.this_id)
            for which, detail in (("marked", marked), ("this", this)):
                if not detail.spans:
                    self._say(f" The {which} trace {detail.trace_id.hex()} is no longer in the store (evicted by "
                              "retention). Esc goes back.", "yellow")
                    return
            marked_details = await reader.span_details(self.marked_id, _details_subset(marked.spans))
            this_details = await reader.span_details(self.this_id, _details_subset(this.spans))
            self.diff = await asyncio.to_thread(diff_traces, marked.spans, this.spans, marked_details, this_details)
        except Exception as exc:  # a locked or damaged store: say so, stay up
            self._say(f" Trace diff: store read failed: {exc}", "red")
            return
        self._roots = (_root_name(marked.spans), _root_name(this.spans))
        self._inputs = (first_user_input(marked_details), first_user_input(this_details))
        self.render_diff()

    def _say(self, message: str, style: str) -> None:
        self.query_one("#diff-title", Static).update(fmt.safe(message, style=style, limit=400))

    # -- drawing -----------------------------------------------------------------------------------

    def render_diff(self) -> None:
        diff = self.diff
        if diff is None:
            return
        self.query_one("#diff-title", Static).update(self._title(diff))
        wide = self.size.width >= WIDE
        # Wide: a timeline column (both traces' bars on one time scale); two lines a step, the
        # marked bar over this one, when every step fits on the screen that way.
        timeline = max(0, min(48, self.size.width - 130)) if wide else 0
        two_lines = timeline > 0 and 2 * (len(diff.spans) + 1) + 14 <= self.size.height
        parts: list[RenderableType] = [spans_table(diff, wide, timeline, two_lines), Text("")]
        parts += diff_section("System prompt (the first LLM call's)", diff.marked_system, diff.this_system,
                              diff.system_diff, show_same=wide)
        parts.append(Text(""))
        if self._inputs != (None, None):
            marked_input, this_input = self._inputs
            parts += diff_section("User input (the first LLM call's user messages)", marked_input, this_input,
                                  line_diff(marked_input, this_input), show_same=wide)
            parts.append(Text(""))
        parts += diff_section("Final output (the last LLM call's)", diff.marked_output, diff.this_output,
                              diff.output_diff, show_same=wide)
        self.query_one("#diff-body", Static).update(Group(*parts))

    def _title(self, diff: TraceDiff) -> Text:
        marked_root, this_root = self._roots
        text = Text(" Trace diff  ", style="bold")
        text.append("marked ", style="dim")
        text.append_text(fmt.safe(marked_root, style="bold", limit=40))
        text.append(f" {self.marked_id.hex()[:8]}", style="dim")
        text.append("  vs  this ", style="dim")
        text.append_text(fmt.safe(this_root, style="bold", limit=40))
        text.append(f" {self.this_id.hex()[:8]}", style="dim")
        text.append("\n ")
        both = len(diff.spans) - diff.added - diff.missing
        text.append(f"{fmt.plural(both, 'span')} in both · ")
        text.append(f"{diff.added} added", style="bold green" if diff.added else "")
        text.append(" · ")
        text.append(f"{diff.missing} missing", style="bold red" if diff.missing else "")
        text.append("   Δ = this − marked · totals count billed calls · Esc back", style="dim")
        return text


def first_user_input(details: Sequence[SpanDetail]) -> str | None:
    """The user messages of the trace's first LLM call (by start) that recorded any: what the
    trace was asked, the first thing to compare when two runs of one root differ."""
    for detail in sorted(details, key=lambda d: (d.span.start_ns, d.span.id)):
        if not detail.span.is_llm:
            continue
        texts = [message_text(m) for m in detail.messages if m.direction == "input" and m.role == "user"]
        if any(texts):
            return "\n".join(text for text in texts if text)
    return None


def _root_name(spans: list[SpanRow]) -> str:
    return next((s for s in spans if s.parent_span_id is None), spans[0]).name if spans else "?"


def _cost(span: SpanRow | None) -> str:
    if span is None:
        return "–"
    return fmt.money(span.cost_nusd, unpriced=True) if span.billed else "–"


def _tokens(span: SpanRow | None) -> str:
    tokens = span_tokens(span) if span is not None else None
    return "–" if tokens is None else fmt.tokens(tokens)


def _duration(span: SpanRow | None) -> str:
    return "–" if span is None else fmt.duration(span.duration_ns)


def span_label(row: AlignedSpan) -> Text:
    """The step's name in the tree, behind a + (added) or - (missing) that reads without colour."""
    span = row.this or row.marked
    kind = KIND_MARK.get(span.kind, "·") if span is not None else "·"
    sign = {"added": "+", "missing": "-"}.get(row.status, " ")
    text = Text(f"{'  ' * min(row.depth, 12)}{sign} {kind} ")
    text.append_text(fmt.safe(row.name, limit=120))
    return text


# The timeline's bars: the marked trace's in light shade, this one's in full blocks; in one line,
# the upper half is the marked span and the lower half this one.
STYLE_MARKED_BAR = "#9ca3af"
STYLE_THIS_BAR = "#60a5fa"


class Timeline:
    """Where each step ran in its trace, both traces on one time scale (the longer trace's)."""

    def __init__(self, diff: TraceDiff, width: int) -> None:
        self.width = width
        marked = [row.marked for row in diff.spans if row.marked is not None]
        this = [row.this for row in diff.spans if row.this is not None]
        self.marked_t0 = min((s.start_ns for s in marked), default=0)
        self.this_t0 = min((s.start_ns for s in this), default=0)
        self.scale_ns = max(diff.marked.duration_ns, diff.this.duration_ns,
                            max((s.end_ns - self.marked_t0 for s in marked), default=1),
                            max((s.end_ns - self.this_t0 for s in this), default=1), 1)

    def cells(self, span: SpanRow | None, t0: int) -> set[int]:
        if span is None:
            return set()
        first = int((span.start_ns - t0) * self.width / self.scale_ns)
        last = max(first + 1, round((span.end_ns - t0) * self.width / self.scale_ns))
        return set(range(max(0, first), min(self.width, last)))

    def bars(self, marked: SpanRow | None, this: SpanRow | None, two_lines: bool) -> Text:
        a, b = self.cells(marked, self.marked_t0), self.cells(this, self.this_t0)
        if two_lines:
            text = Text("".join("░" if i in a else " " for i in range(self.width)) if marked is not None
                        else "(not in the marked trace)", style=STYLE_MARKED_BAR)
            text.append("\n")
            text.append("".join("█" if i in b else " " for i in range(self.width)) if this is not None
                        else "(not in this trace)", style=STYLE_THIS_BAR)
            return text
        text = Text()
        for i in range(self.width):
            glyph = "█" if i in a and i in b else "▀" if i in a else "▄" if i in b else " "
            text.append(glyph, style=STYLE_THIS_BAR if i in b else STYLE_MARKED_BAR)
        return text

    def whole(self, diff: TraceDiff, two_lines: bool) -> Text:
        def cells(duration_ns: int) -> set[int]:
            return set(range(max(1, round(duration_ns * self.width / self.scale_ns))))

        a, b = cells(diff.marked.duration_ns), cells(diff.this.duration_ns)
        if two_lines:
            text = Text("░" * len(a), style=STYLE_MARKED_BAR)
            text.append("\n")
            text.append("█" * len(b), style=STYLE_THIS_BAR)
            return text
        return Text("".join("█" if i in a and i in b else "▀" if i in a else "▄" if i in b else " "
                            for i in range(self.width)), style=STYLE_THIS_BAR)


def spans_table(diff: TraceDiff, wide: bool, timeline_width: int = 0, two_lines: bool = False) -> Table:
    """A row per step; with `timeline_width`, a column of both traces' bars on one time scale (in
    `two_lines`, the marked bar over this one, and under an LLM call's name its model)."""
    table = Table(box=None, padding=(0, 1), expand=True, show_edge=False, header_style="bold")
    table.add_column("span", ratio=1, no_wrap=True, overflow="ellipsis", min_width=14)
    columns = ["marked", "this", "Δ time"]
    if wide:
        columns += ["tok marked", "tok this", "Δ tokens", "cost marked", "cost this", "Δ cost"]
    else:
        columns += ["Δ tokens", "Δ cost"]
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True)
    timeline = Timeline(diff, timeline_width) if timeline_width > 0 else None
    if timeline is not None:
        table.add_column("timeline  ░ marked  █ this" if two_lines else "timeline  ▀ marked  ▄ this",
                         no_wrap=True, width=timeline_width)
    totals = _totals_cells(diff.marked, diff.this, wide)
    if timeline is not None:
        if two_lines:
            totals[0].append(f"\n  0 → {fmt.duration(timeline.scale_ns)} on the timeline", style="dim")
        totals.append(timeline.whole(diff, two_lines))
    table.add_row(*totals, style="bold")
    for row in diff.spans:
        label = span_label(row)
        if two_lines:
            label.append_text(_models_line(row))
        cells = [label, Text(_duration(row.marked)), Text(_duration(row.this))]
        status = row.status
        cells.append(Text(status if status != "both" else signed_duration(row.duration_delta_ns)))
        tokens_delta = Text(signed_tokens(row.tokens_delta))
        cost_delta = Text("unpriced" if row.unpriced and row.cost_delta_nusd is None
                          else signed_money(row.cost_delta_nusd))
        if wide:
            cells += [Text(_tokens(row.marked)), Text(_tokens(row.this)), tokens_delta,
                      Text(_cost(row.marked)), Text(_cost(row.this)), cost_delta]
        else:
            cells += [tokens_delta, cost_delta]
        if timeline is not None:
            cells.append(timeline.bars(row.marked, row.this, two_lines))
        table.add_row(*cells, style={"added": "green", "missing": "red"}.get(status, ""))
    return table


def _models_line(row: AlignedSpan) -> Text:
    """The second line of an LLM call's step: its model in each trace (one name when the same)."""
    text = Text("\n")
    spans = [s for s in (row.marked, row.this) if s is not None and s.is_llm]
    if not spans:
        return text
    models = [fmt.clean(s.model or "?", limit=40) for s in spans]
    indent = "  " * min(row.depth, 12) + "    "
    text.append(indent + (models[0] if len(set(models)) == 1 else " → ".join(models)), style="dim")
    return text


def _totals_cells(marked: TraceTotals, this: TraceTotals, wide: bool) -> list[Text]:
    cells = [Text("whole trace"), Text(fmt.duration(marked.duration_ns)), Text(fmt.duration(this.duration_ns)),
             Text(signed_duration(this.duration_ns - marked.duration_ns))]
    tokens_delta = Text(signed_tokens(this.tokens - marked.tokens))
    unpriced = marked.unpriced or this.unpriced
    cost_delta = Text(signed_money(this.cost_nusd - marked.cost_nusd) + ("+?" if unpriced else ""))
    if wide:
        cells += [Text(fmt.tokens(marked.tokens)), Text(fmt.tokens(this.tokens)), tokens_delta,
                  Text(fmt.money(marked.cost_nusd)), Text(fmt.money(this.cost_nusd)), cost_delta]
    else:
        cells += [tokens_delta, cost_delta]
    return cells


def diff_section(title: str, marked: str | None, this: str | None, lines: list[DiffLine],
                 show_same: bool = False) -> list[RenderableType]:
    """`show_same`: when the text is the same in both, show it (dim) rather than only say so."""
    out: list[RenderableType] = [Text(title, style="bold underline")]
    if marked is None and this is None:
        out.append(Text("recorded in neither trace (no content captured, or no LLM call)", style="dim"))
        return out
    if not lines:
        count = len((this or "").splitlines())
        out.append(Text(f"the same in both ({fmt.plural(count, 'line')})", style="dim"))
        if show_same and this:
            shown = (this or "").splitlines()[:MAX_SAME_LINES]
            out += [Text(" ").append_text(fmt.safe(line, style="dim", limit=2000)) for line in shown]
            if count > len(shown):
                out.append(Text(f" … {count - len(shown)} more lines", style="dim"))
        return out
    for which, value in (("marked", marked), ("this", this)):
        if value is None:
            out.append(Text(f"none recorded in the {which} trace", style="yellow"))
    for line in lines[:MAX_DIFF_LINES]:
        text = Text(DIFF_SIGN[line.kind], style=DIFF_STYLE[line.kind])
        text.append_text(fmt.safe(line.text, style=DIFF_STYLE[line.kind], limit=2000))
        out.append(text)
    if len(lines) > MAX_DIFF_LINES:
        out.append(Text(f"… {len(lines) - MAX_DIFF_LINES} more lines", style="dim"))
    return out

