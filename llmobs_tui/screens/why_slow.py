"""`w`: "why slow?" for a call or a trace, over the screen it was asked on.

Reads the cohort through the reader (store/cohort.py) for the app's current window, explains with
llmobs_tui/why_slow.py, and shows the verdict, the standings against the cohort and where the extra
time went. Every name in it comes from spans: drawn as Text through format.safe, never as markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui import why_slow
from llmobs_tui.widgets.distribution import distribution
from store import histogram
from store.dashboards import SpanRow

if TYPE_CHECKING:
    from llmobs_tui.app import LlmobsApp


def asks_about_the_call(span: SpanRow | None) -> bool:
    """`w` on an LLM call (not the root) explains the call; anywhere else, the trace."""
    return span is not None and span.is_llm and span.parent_span_id is not None


class WhySlowScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    WhySlowScreen { align: center middle; }
    WhySlowScreen > VerticalScroll { width: 92%; height: auto; max-height: 90%; border: round $accent;
                                     background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q,w", "dismiss", "Close")]

    def __init__(self, trace_id: bytes, span: SpanRow | None = None, spans: list[SpanRow] | None = None) -> None:
        super().__init__()
        self.trace_id = trace_id
        self.span = span
        self.spans = spans
        self.explanation: why_slow.Explanation | None = None
        # The cohort's latencies (or durations) as (ns, how many), for the histogram with this one marked.
        self.cohort_points: list[tuple[float, int]] = []

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(Text("Comparing with its cohort…", style="dim"), id="why-slow-body")

    @property
    def llmobs(self) -> LlmobsApp:
        return self.app  # type: ignore[return-value]

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()
        self.explain()

    @work(exclusive=True, group="why-slow", exit_on_error=False)
    async def explain(self) -> None:
        reader = self.llmobs.reader
        window_s, now_s = self.llmobs.window_s, self.llmobs.clock()
        window = fmt.window_label(window_s)
        body = self.query_one("#why-slow-body", Static)
        try:
            if asks_about_the_call(self.span):
                assert self.span is not None
                cohort = await reader.call_cohort(why_slow.model_of(self.span), self.span.feature, window_s, now_s)
                explanation = why_slow.explain_call(self.span, self.spans or [self.span], cohort, window)
                points = [(histogram.bucket_value(b) * 1000, c) for b, c in cohort.latency.items() if c > 0]
            else:
                spans = self.spans if self.spans else (await reader.trace(self.trace_id)).spans
                if not spans:
                    body.update(Text("This trace is no longer in the store (evicted by retention).", style="yellow"))
                    return
                trace_cohort, typical = await reader.trace_cohort(self.trace_id, window_s, now_s,
                                                             why_slow.TYPICAL_TRACES)
                explanation = why_slow.explain_trace(spans, trace_cohort, typical, window)
                points = [(float(sample.duration_ns), 1) for sample in trace_cohort.samples]
        except Exception as exc:  # a read that failed is said on the screen, not swallowed
            body.update(fmt.safe(f"Could not read the cohort: {exc}", style="red"))
            raise
        self.explanation = explanation
        self.cohort_points = points
        body.update(render_explanation(explanation, points, self._chart_width()))

    def on_resize(self) -> None:
        # The histogram is drawn for a width: drawn again for the new one, it does not wrap into noise.
        if self.explanation is not None:
            self.query_one("#why-slow-body", Static).update(
                render_explanation(self.explanation, self.cohort_points, self._chart_width()))

    def _chart_width(self) -> int:
        # The dialog is 92% of the screen, less its border and padding.
        return max(20, min(100, self.size.width * 92 // 100 - 6))


def render_explanation(e: why_slow.Explanation, cohort_points: list[tuple[float, int]] | None = None,
                       chart_width: int = 60) -> RenderableType:
    head = Text("Why slow? ", style="bold")
    head.append(f"{'this call' if e.subject == 'call' else 'this trace'}  ", style="dim")
    head.append_text(fmt.safe(e.name, style="bold cyan", limit=80))
    cohort = Text("cohort: ", style="dim")
    cohort.append_text(fmt.safe(e.cohort, style="bold", limit=120))
    cohort.append(f" · last {e.window} · {fmt.plural(e.cohort_size, 'call' if e.subject == 'call' else 'trace')}",
                  style="dim")
    verdict = fmt.safe(e.verdict, style="bold yellow" if e.too_small else "bold")
    parts: list[RenderableType] = [head, cohort, Text(""), verdict, Text("")]

    standings = Table(box=None, padding=(0, 2, 0, 0), header_style="dim", title_justify="left")
    standings.add_column("against its cohort", no_wrap=True)
    standings.add_column(f"this {e.subject}", justify="right", no_wrap=True)
    if not e.too_small:
        standings.add_column("percentile", justify="right", no_wrap=True)
        standings.add_column("median", justify="right", no_wrap=True)
        standings.add_column("p95", justify="right", no_wrap=True)
    for s in e.standings:
        cells = [Text(s.what), Text(s.value, style="bold")]
        if not e.too_small:
            high = s.rank is not None and s.rank >= 0.9
            cells += [Text(s.percentile, style="bold red" if high else ""), Text(s.median), Text(s.p95)]
        standings.add_row(*cells)
    parts.append(standings)
    if cohort_points:
        parts += distribution_section(e, cohort_points, chart_width)

    if e.parts:
        if e.too_small:
            title = f"Where its {fmt.duration(e.value_ns)} went"
        else:
            title = (f"Where the extra {fmt.duration(e.excess_ns)} went (over the cohort's median "
                     f"{fmt.duration(e.median_ns)})")
        parts += [Text(""), Text(title, style="bold underline")]
        table = Table(box=None, padding=(0, 2, 0, 0), show_header=False, expand=True)
        table.add_column("cause", ratio=3)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("share", justify="right", no_wrap=True)
        table.add_column("detail", ratio=2, style="dim")
        # A part under 1 % of the excess says nothing a reader can act on (the data keeps it).
        shown = [p for p in e.parts if e.too_small or abs(p.ns) >= 0.01 * abs(e.excess_ns or 0)]
        for p in sorted(shown, key=lambda p: -p.ns):
            sign = "" if e.too_small or p.ns < 0 else "+"
            time = Text(f"{sign}{fmt.duration(abs(p.ns))}" if p.ns >= 0 else f"−{fmt.duration(-p.ns)}")
            share = Text(why_slow.share_text(p.share) if p.ns > 0 else "", style="bold" if (p.share or 0) >= .5 else "")
            table.add_row(fmt.safe(p.what), time, share, fmt.safe(p.detail, limit=160))
        parts.append(table)

    if e.notes:
        parts += [Text(""), Text("Notes", style="bold underline")]
        for note in e.notes:
            line = Text("· ", style="dim")
            line.append_text(fmt.safe(note, limit=300))
            parts.append(line)
    parts += [Text(""), Text("Esc, q or w closes · ↑↓ PgUp PgDn scroll", style="dim")]
    return Group(*parts)


def distribution_section(e: why_slow.Explanation, points: list[tuple[float, int]], width: int) -> list[RenderableType]:
    """The cohort's latencies (a call's) or durations (a trace's) on a log axis, this one marked."""
    what = "latencies" if e.subject == "call" else "durations"
    members = sum(c for _, c in points)
    title = Text(f"The cohort's {what} ", style="bold underline")
    title.append(f"({fmt.plural(members, e.subject)}, log scale)", style="dim")
    rank = next((s.percentile for s in e.standings if s.what in ("total latency", "duration") and s.rank is not None),
                None)
    mark = f"this {e.subject} {fmt.duration(e.value_ns)}" + (f" ({rank})" if rank else "")
    # A call's latencies come from the rollups' histograms, in buckets GAMMA wide; a trace's are exact.
    resolution = histogram.GAMMA - 1 if e.subject == "call" else None
    return [Text(""), title, distribution(points, float(e.value_ns), fmt.duration, mark, width=width, height=4,
                                          resolution=resolution)]
