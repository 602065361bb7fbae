"""A time-series chart with axes (plotext, through textual-plotext).

Lines or stacked layers over local clock time; a past period drawn faint under the present one;
horizontal thresholds (an SLO, a budget); vertical change markers, one of them selected. Every
label is untrusted text made safe here: textual-plotext parses the built chart as ANSI, so a label
holding an escape sequence would reach the terminal otherwise.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from rich.ansi import AnsiDecoder
from rich.console import Console, ConsoleOptions
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from llmobs_tui import format as fmt
from llmobs_tui.widgets import plotext_speedups
from llmobs_tui.widgets.quiet import set_border_subtitle

plotext_speedups.install()

# plotext's palette names. The present is drawn in these, in order; the past always in gray.
SERIES_COLORS = ("cyan+", "magenta+", "green+", "yellow+", "blue+", "red+", "white", "cyan", "magenta", "green")
PAST_COLOR = "gray"
MARK_COLOR = "yellow"
SELECTED_MARK_COLOR = "orange+"
LABEL_LIMIT = 28


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    values: Sequence[float | None]  # one per ChartData.times; None: no value in that bucket (a gap)
    color: str | None = None  # a plotext colour; None: the next of SERIES_COLORS
    past: bool = False  # the compared period, shifted onto the present's times: drawn faint
    times: Sequence[float] | None = None  # its own x values (a projection, a day's cost); None: ChartData.times


@dataclass(frozen=True, slots=True)
class Threshold:
    value: float
    label: str
    color: str = "red"


@dataclass(frozen=True, slots=True)
class Mark:
    time_s: float
    label: str


@dataclass(slots=True)
class ChartData:
    times: Sequence[float]  # bucket starts, epoch seconds
    lines: Sequence[Line] = ()
    stacked: bool = False  # the present lines are layers of one total, drawn as filled areas
    thresholds: Sequence[Threshold] = ()
    marks: Sequence[Mark] = ()
    selected_mark: int | None = None
    y_format: Callable[[float], str] = field(default=lambda v: f"{v:,.4g}")
    empty_text: str = "no data in this window"

    @property
    def empty(self) -> bool:
        return not self.times or not any(v for line in self.lines for v in line.values if v)


def time_ticks(start_s: float, end_s: float, width: int) -> tuple[list[float], list[str]]:
    """Round local-clock ticks, about one per 14 columns: minutes, hours or days by the span shown."""
    span = max(1.0, end_s - start_s)
    wanted = max(2, width // 14)
    steps = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
             2 * 86400, 7 * 86400)
    step = next((s for s in steps if span / s <= wanted), steps[-1])
    offset = time.localtime(start_s).tm_gmtoff
    first = math.ceil((start_s + offset) / step) * step - offset
    ticks = [first + i * step for i in range(int((end_s - first) // step) + 1)]
    if step >= 86400:
        pattern = "%a %d"
    elif span > 86400:
        pattern = "%a %H:%M"
    elif step < 60:
        pattern = "%H:%M:%S"
    else:
        pattern = "%H:%M"
    return ticks, [time.strftime(pattern, time.localtime(t)) for t in ticks]


def value_ticks(low: float, high: float, fmt_value: Callable[[float], str],
                count: int = 4) -> tuple[list[float], list[str]]:
    """`count`-ish round ticks from low to high, labelled by the chart's own unit format."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    # The last tick is at or above `high`: the axis ends there, and a line drawn above the axis's
    # top makes plotext fail building the legend (an IndexError, the whole app down).
    ticks = [first]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(first + len(ticks) * step)
    return ticks, [fmt_value(t) for t in ticks]


class TimeChart(PlotextPlot):
    """Title on the border; axes, legend, thresholds and markers inside."""

    # Drawn from segments (ChartLines), which carry no offsets for Textual's mouse selection: a drag
    # over a chart selects nothing rather than something wrong.
    ALLOW_SELECT = False

    DEFAULT_CSS = """
    TimeChart { height: 1fr; min-height: 6; border: round $panel-lighten-2; }
    TimeChart:focus { border: round $accent; }
    """

    def __init__(self, title: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.border_title = title
        self.data = ChartData(times=())
        # Textual repaints a widget for reasons of its own (focus, a sibling's resize, a scroll): the
        # built plot is kept until the data, the size or the theme changes (a build is 5–20 ms).
        self._built: tuple[tuple[int, int, int, str], RenderResult] | None = None
        self._shown = 0  # how many times show() was called: the cache's notion of "new data"

    def show(self, data: ChartData, subtitle: str | Text = "") -> None:
        set_border_subtitle(self, subtitle.plain if isinstance(subtitle, Text) else fmt.clean(subtitle, limit=120))
        if _draws_the_same(self.data, data):
            return  # the clock's refresh of a quiet store: no rebuild (5–20 ms a chart), no repaint
        self.data = data
        self._shown += 1
        self.refresh()

    def render(self) -> RenderResult:
        data = self.data
        if data.empty:
            return Text(f" {data.empty_text}", style="dim")
        key = (self._shown, self.size.width, self.size.height, self.app.theme)
        if self._built is not None and self._built[0] == key:
            return self._built[1]
        plt = self.plt
        plt.clear_figure()
        width, height = self.size
        self._draw(data, width, height)
        # PlotextPlot.render, with its Text.from_ansi replaced by ansi_lines (the same strips, 3x faster).
        plt.plotsize(width, height)
        plt._set_size(width, height)
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        built = ansi_lines(plt.build())
        self._built = (key, built)
        return built

    def _draw(self, data: ChartData, width: int, height: int) -> None:
        plt = self.plt
        times = list(data.times)
        start, end = times[0], times[-1]
        colors = iter(SERIES_COLORS)
        present = [line for line in data.lines if not line.past]
        past = [line for line in data.lines if line.past]
        top = 0.0
        # The past first, so that the present draws over it where they cross.
        for line in past:
            top = max(top, self._plot_line(_own(line, times), line.values, line, PAST_COLOR, fill=False))
        if data.stacked:
            # Filled cumulative layers from the total down: each smaller area paints over the bigger.
            running = [0.0] * len(times)
            layers = []
            for line in present:
                running = [r + (v or 0.0) for r, v in zip(running, line.values)]
                layers.append((line, list(running)))
            for line, values in reversed(layers):
                color = line.color or SERIES_COLORS[present.index(line) % len(SERIES_COLORS)]
                top = max(top, self._plot_line(times, values, line, color, fill=True))
        else:
            for line in present:
                top = max(top, self._plot_line(_own(line, times), line.values, line, line.color or next(colors),
                                               fill=False))
        for threshold in data.thresholds:
            # A two-point line rather than plt.hline: it gets a legend entry saying what the line is.
            label = fmt.clean(threshold.label, limit=LABEL_LIMIT)
            plt.plot([start, end], [threshold.value, threshold.value], label=label, color=threshold.color,
                     marker="dot")
            top = max(top, threshold.value)
        for i, mark in enumerate(data.marks):
            if start <= mark.time_s <= end:
                plt.vline(mark.time_s, SELECTED_MARK_COLOR if i == data.selected_mark else MARK_COLOR)
        width = max(20, width)
        xt, xl = time_ticks(start, end, width)
        plt.xticks(xt, xl)
        plt.xlim(start, end)
        yt, yl = value_ticks(0.0, top * 1.05 or 1.0, data.y_format, count=max(2, min(5, height // 3)))
        plt.yticks(yt, yl)
        plt.ylim(0, yt[-1])

    def _plot_line(self, times: list[float], values: Sequence[float | None], line: Line, color: str,
                   fill: bool) -> float:
        # plotext has no gaps: points without a value are left out and the line joins its neighbours.
        xs = [t for t, v in zip(times, values) if v is not None]
        ys = [float(v) for v in values if v is not None]
        if not xs:
            return 0.0
        label = fmt.clean(line.label, limit=LABEL_LIMIT)
        # Filled layers in whole blocks: plotext fills pixel by pixel, and braille's 2x4 pixels per cell
        # made one stacked chart of 7 layers take 300 ms to build; blocks take 20 ms.
        self.plt.plot(xs, ys, label=label, color=color, marker="sd" if fill else "braille", fillx=fill)
        return max(ys)


def _draws_the_same(a: ChartData, b: ChartData) -> bool:
    """Whether `b` would draw what `a` drew. Every field but y_format compares by value; y_format is
    usually a lambda made anew by each load, so it is the same when it is the same function or the
    same code over equal captured values (a lambda over a changed unit is not)."""
    if (a.times, a.lines, a.stacked, a.thresholds, a.marks, a.selected_mark, a.empty_text) != (
            b.times, b.lines, b.stacked, b.thresholds, b.marks, b.selected_mark, b.empty_text):
        return False
    fa, fb = a.y_format, b.y_format
    if fa is fb:
        return True
    code_a, code_b = getattr(fa, "__code__", None), getattr(fb, "__code__", None)
    if code_a is None or code_a is not code_b or getattr(fa, "__defaults__", None) != getattr(fb, "__defaults__", None):
        return False
    cells_a, cells_b = getattr(fa, "__closure__", None) or (), getattr(fb, "__closure__", None) or ()
    try:
        return len(cells_a) == len(cells_b) and all(x.cell_contents == y.cell_contents
                                                    for x, y in zip(cells_a, cells_b))
    except ValueError:  # a cell not filled yet (a name the lambda captures, assigned later): not comparable
        return False


_SGR = re.compile(r"\x1b\[([0-9;]*)m")
_style_after: dict[tuple[Style, str], Style] = {}  # (style, SGR parameters) -> the style they lead to


class ChartLines:
    """A built chart as lines of styled segments: what Textual draws from, without the Text in between
    (a Text of a chart's 200-odd spans took 6 ms to become a widget's strips, these 2.5 ms)."""

    def __init__(self, lines: list[list[Segment]]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        newline = Segment.line()
        for line in self.lines:
            yield from line
            yield newline

    @property
    def plain(self) -> str:
        return "\n".join("".join(segment.text for segment in line) for line in self.lines)


def ansi_lines(ansi: str) -> ChartLines | Text:
    """The text plotext builds (colour codes around runs of cells) as ChartLines that draw what
    Text.from_ansi(ansi) drew (a test compares the strips of both). Rich works out the style of every
    code it meets; here each (style, code) pair is worked out once, by Rich's own decoder. Text holding
    any other escape sequence is left to Rich."""
    decoder = AnsiDecoder()
    style = decoder.style
    lines = []
    for line in ansi.split("\n"):
        line = line.rsplit("\r", 1)[-1]
        segments = []
        parts = _SGR.split(line)  # plain text, then parameters and plain text in turn
        for i in range(0, len(parts), 2):
            if i:
                key = (style, parts[i - 1])
                after = _style_after.get(key)
                if after is None:
                    decoder.style = style
                    decoder.decode_line(f"\x1b[{parts[i - 1]}m")
                    after = decoder.style
                    if len(_style_after) >= 4096:  # a theme's palette needs a few dozen
                        _style_after.clear()
                    _style_after[key] = after
                style = after
            plain = parts[i]
            if plain:
                if "\x1b" in plain:
                    return Text.from_ansi(ansi)
                segments.append(Segment(plain, style))
        lines.append(segments)
    return ChartLines(lines)


def _own(line: Line, times: list[float]) -> list[float]:
    return list(line.times) if line.times is not None else times


def build_chart_text(data: ChartData, width: int, height: int) -> str:
    """The chart as plotext's ANSI text, outside any app: what the benchmark times (the widget's
    render does the same, plus ansi_lines)."""
    chart = TimeChart("")
    plt = chart.plt
    plt.clear_figure()
    plt.plotsize(width, height)
    if data.empty:
        return data.empty_text
    chart._draw(data, width, height)
    return plt.build()
