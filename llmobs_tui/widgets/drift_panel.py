"""The drift panel (Alerts screen, below the alerts): this window against the 7 days before it.

Left, the input and output token lengths per call as text histograms: one row per bin of the
baseline's deciles, the window's share as a bar and the baseline's as a dim bar under the same
scale, titled with the PSI and its verdict. Right, two charts over the window: the refusal and
failed-structured-output rates (each with its 7-day rate drawn faint), and the mean evaluation score
per evaluation name. In a short terminal only the summary line shows: the alerts keep the rows.
Every name shown (evaluation names) is untrusted text and goes through Text, never markup.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.units import format_duration
from llmobs_tui.widgets.chart import ChartData, Line, Mark, TimeChart
from llmobs_tui.widgets.quiet import update_static
from store import drift

VERDICT_STYLES = {"shifted": "bold red", "moving": "yellow", "stable": "green", "too few calls": "dim"}
BAR = "█"
PARTIALS = " ▏▎▍▌▋▊▉"


def _bar(share: float, width: int, scale: float) -> str:
    """A horizontal bar of `share` on a scale where `scale` fills `width` cells, in eighths."""
    eighths = round(share / scale * width * 8) if scale > 0 else 0
    eighths = max(0, min(width * 8, eighths))
    return (BAR * (eighths // 8) + (PARTIALS[eighths % 8] if eighths % 8 else "")).ljust(width)


def _bound(value: int | None) -> str:
    if value is None:
        return ""
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:,}"


def bin_label(b: drift.Bin) -> str:
    return drift.bin_text(b, _bound)


def psi_title(signal: str, result: drift.Psi, threshold: float) -> Text:
    verdict = result.verdict(threshold)
    text = Text(drift.SIGNAL_WORDS[signal], style="bold")
    if result.value is not None:
        text.append(f"  PSI {result.value:.2f} ", style="")
    else:
        text.append("  ")
    text.append(verdict, style=VERDICT_STYLES[verdict])
    return text


def histogram_text(signal: str, result: drift.Psi, threshold: float, width: int, max_rows: int) -> Text:
    """The title line and one row per bin (at most `max_rows`): label, window bar and share, baseline bar and share."""
    text = psi_title(signal, result, threshold)
    if not result.bins or not (result.current_calls or result.baseline_calls):
        text.append("\n  no token counts in the window or the week before", style="dim")
        return text
    shares = result.shares()
    label_w = max(len(bin_label(b)) for b in result.bins)
    bar_w = max(4, (width - label_w - 2 - 2 * 5 - 2) // 2)
    scale = max(max(c, b) for c, b in shares) or 1.0
    for b, (cur, base) in list(zip(result.bins, shares))[:max(1, max_rows)]:
        text.append("\n" + bin_label(b).rjust(label_w) + " ", style="dim")
        grew = cur - base
        style = "red" if grew > 0.05 else "cyan"
        text.append(_bar(cur, bar_w, scale), style=style)
        text.append(f"{cur:>4.0%} ", style="")
        text.append(_bar(base, bar_w, scale), style="grey50")
        text.append(f"{base:>4.0%}", style="dim")
    return text


class TokenHistograms(Widget):
    """Both token-length histograms, side by side when there is room, else one above the other."""

    DEFAULT_CSS = "TokenHistograms { height: 1fr; min-width: 30; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data: drift.Drift | None = None
        self.threshold = 0.25

    def show(self, data: drift.Drift, threshold: float) -> None:
        if (data, threshold) == (self.data, self.threshold):
            return  # the clock's refresh of a quiet store: nothing to draw again
        self.data, self.threshold = data, threshold
        self.refresh()

    def render(self) -> RenderResult:
        data = self.data
        if data is None:
            return Text("")
        width, height = self.size.width or 80, self.size.height or 24
        signals = list(data.distributions)
        side_by_side = width >= 2 * 44 + 2
        if side_by_side:
            grid = Table.grid(padding=(0, 2), expand=True)
            for _ in signals:
                grid.add_column(ratio=1)
            cell_w = (width - 2) // len(signals)
            grid.add_row(*(histogram_text(s, data.distributions[s], self.threshold, cell_w, height - 1)
                           for s in signals))
            return grid
        rows_each = max(1, (height - 1) // len(signals) - 2)
        parts = []
        for i, s in enumerate(signals):
            parts.append(histogram_text(s, data.distributions[s], self.threshold, width, rows_each))
            if i < len(signals) - 1:
                parts.append(Text(""))
        return Group(*parts)


def summary_text(data: drift.Drift, threshold: float) -> Text:
    """One line (it wraps in a narrow terminal): calls, both verdicts, the rates and the scores
    against the week before."""
    text = Text(f" Drift of all calls · last {format_duration(data.window_s)} vs the 7 days before", style="bold")
    text.append(f" · {data.current.calls:,} calls (week {data.baseline.calls:,})", style="dim")
    for signal, result in data.distributions.items():
        verdict = result.verdict(threshold)
        text.append(f" · {signal.split('_')[0]} ")
        text.append(verdict if result.value is None else f"{verdict} {result.value:.2f}",
                    style=VERDICT_STYLES[verdict])
    for name, label in (("refusals", "refusals"), ("validation", "failed output")):
        now, week = data.current.rate(name), data.baseline.rate(name)
        if now is None:
            continue
        up = week is not None and now > 2 * week and now - week > 0.01
        text.append(f" · {label} ")
        text.append(f"{now:.1%}", style="bold red" if up else "")
        if week is not None:
            text.append(f" ({week:.1%})", style="dim")
    for series in data.evals[:2]:
        mean = series.mean
        if mean is None:
            continue
        text.append(" · ")
        text.append(fmt.clean(series.name, limit=24))
        text.append(f" {mean:.2f}")
        if series.baseline_mean is not None:
            text.append(f" ({series.baseline_mean:.2f})", style="dim")
    return text


def _pct(value: float) -> str:
    return f"{value * 100:.3g}%"


def rates_chart(data: drift.Drift, marks: list[Mark], selected: int | None) -> ChartData:
    times = data.times
    lines = []
    for name, label, color in (("refusals", "refusals", "red+"), ("validation", "failed output", "yellow+")):
        lines.append(Line(label, data.rate_series(name), color=color))
        week = data.baseline.rate(name)
        if week:
            lines.append(Line(f"{label} 7d", [week] * len(times), past=True))
    return ChartData(times=times, lines=lines, marks=marks, selected_mark=selected, y_format=_pct,
                     empty_text="no refusals and no failed structured output in this window")


def evals_chart(data: drift.Drift, marks: list[Mark], selected: int | None) -> ChartData:
    lines = []
    for series in data.evals:
        lines.append(Line(series.name, data.eval_series(series)))
    for series in data.evals[:1]:  # one faint baseline: more would be a tangle of gray
        if series.baseline_mean is not None:
            lines.append(Line(f"{series.name} 7d", [series.baseline_mean] * len(data.times), past=True))
    return ChartData(times=data.times, lines=lines, marks=marks, selected_mark=selected,
                     y_format=lambda v: f"{v:.2f}", empty_text="no evaluation scores (gen_ai.evaluation.result) "
                                                               "in this window")


class DriftPanel(Vertical):
    DEFAULT_CSS = """
    DriftPanel { height: 1fr; min-height: 3; border-top: solid $panel-lighten-2; }
    DriftPanel #drift-summary { height: auto; }
    DriftPanel #drift-body { height: 1fr; }
    DriftPanel #drift-tokens { width: 1fr; padding: 1 1 0 1; }
    DriftPanel #drift-charts { width: 1fr; }
    DriftPanel.compact { height: auto; }
    DriftPanel.compact #drift-body { display: none; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)

    def compose(self) -> ComposeResult:
        yield Static(id="drift-summary")
        with Horizontal(id="drift-body"):
            yield TokenHistograms(id="drift-tokens")
            with Vertical(id="drift-charts"):
                yield TimeChart("Refusals · failed structured output", id="drift-rates")
                yield TimeChart("Evaluation scores", id="drift-evals")

    def show(self, data: drift.Drift, threshold: float, marks: list[Mark] | None = None,
             selected: int | None = None) -> None:
        marks = marks or []
        update_static(self.query_one("#drift-summary", Static), summary_text(data, threshold))
        self.query_one("#drift-tokens", TokenHistograms).show(data, threshold)
        self.query_one("#drift-rates", TimeChart).show(rates_chart(data, marks, selected), "gray: 7-day rate")
        self.query_one("#drift-evals", TimeChart).show(evals_chart(data, marks, selected),
                                                       "gray: 7-day mean" if data.evals else "")
