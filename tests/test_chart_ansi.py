"""llmobs_tui/widgets/chart.ansi_lines: the chart plotext builds, decoded to lines of segments that draw
exactly what Rich's Text.from_ansi drew (the charts drew through it before): the same strips in a real
widget, for real charts in every theme, and for any text at all, escape sequences of every kind included."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual.visual import Visual, visualize

from llmobs_tui.widgets.chart import (
    ChartData,
    ChartLines,
    Line,
    Mark,
    Threshold,
    TimeChart,
    ansi_lines,
    build_chart_text,
)

T0 = 1_800_000_000.0
TIMES = tuple(T0 + 60 * i for i in range(61))
CONSOLE = Console(width=200, color_system="truecolor", force_terminal=True, legacy_windows=False)


def cells(lines) -> list[list[tuple[str, object]]]:
    """Each line's characters with their styles: what the terminal shows, however it is cut into
    segments. Without meta: Textual marks the cells of a Text with their offsets, for selecting text
    with the mouse, and charts are not selectable (TimeChart.ALLOW_SELECT)."""
    return [[(char, (segment.style or Style()).clear_meta_and_links()) for segment in line for char in segment.text]
            for line in lines]


def segments(renderable, width: int) -> list:
    """What Rich draws of it, line by line (no wrapping: a chart line is as wide as the chart)."""
    options = CONSOLE.options.update(width=width, no_wrap=True, overflow="crop")
    return cells(CONSOLE.render_lines(renderable, options, pad=False))


def charts() -> list[ChartData]:
    wave = [10 + (i * 7919 % 13) for i in range(61)]
    gaps = [None if i % 9 == 0 else float(v) for i, v in enumerate(wave)]
    return [
        ChartData(times=TIMES, lines=[Line("p50", wave), Line("p95", [v * 2 for v in wave]),
                                      Line("last week", [v * 1.5 for v in wave], past=True)],
                  thresholds=[Threshold(25, "slo 25 ms")], marks=[Mark(T0 + 600, "v2"), Mark(T0 + 1800, "v3")],
                  selected_mark=1),
        ChartData(times=TIMES, lines=[Line("a", wave), Line("b", gaps), Line("c", [1.0] * 61)], stacked=True),
        ChartData(times=TIMES, lines=[Line("only", gaps)], y_format=lambda v: f"${v:.2f}"),
    ]


@pytest.mark.parametrize("theme", ["default", "dark", "clear", "pro", "matrix"])
def test_real_charts_draw_as_rich_drew_them(theme: str) -> None:
    for data in charts():
        for width, height in ((78, 12), (152, 30), (30, 6)):
            chart = TimeChart("")
            chart.plt.clear_figure()
            chart.plt.plotsize(width, height)
            chart.plt.theme(theme)
            chart._draw(data, width, height)
            built = chart.plt.build()
            lines = ansi_lines(built)
            assert isinstance(lines, ChartLines)  # the fast way, not the fallback
            assert segments(lines, width) == segments(Text.from_ansi(built), width)
            assert lines.plain == Text.from_ansi(built).plain
    assert "\x1b[" in build_chart_text(charts()[0], 78, 12)  # the charts do carry colour codes


def test_the_widget_draws_the_strips_textual_plotext_drew() -> None:
    """In the app the theme is textual-plotext's own, in RGB from the Textual theme, and the widget's
    own style is applied over the chart's: every cell is drawn in the same colours."""

    class Host(App):
        def compose(self) -> ComposeResult:
            yield TimeChart("latency", id="c")

    async def run() -> None:
        app = Host()
        async with app.run_test(size=(100, 30)) as pilot:
            chart = app.query_one(TimeChart)
            for data in charts():
                chart.show(data)
                await pilot.pause()
                rendered = chart.render()
                assert isinstance(rendered, ChartLines) and data.lines[0].label in rendered.plain
                width, height = chart.content_region.width, chart.content_region.height
                before = Text.from_ansi(chart.plt.build())  # what textual-plotext's render returned
                style = chart.visual_style
                assert cells(Visual.to_strips(chart, visualize(chart, rendered), width, height, style)) == \
                    cells(Visual.to_strips(chart, visualize(chart, before), width, height, style))

    asyncio.run(run())


_PARAMS = st.lists(st.one_of(st.integers(0, 300).map(str), st.just(""), st.sampled_from(["38;5", "48;2", "x"])),
                   max_size=7).map(";".join)
_TOKENS = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=6),
    st.sampled_from(["\n", "\r", "\r\n", "\x1b", "\x1b[", "\x1b[2K", "\x1b]8;;http://x\x1b\\", "\x1b(B", "m", ";"]),
    _PARAMS.map(lambda p: f"\x1b[{p}m"),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_TOKENS, max_size=30).map("".join))
def test_any_text_draws_as_rich_drew_it(text: str) -> None:
    assert segments(ansi_lines(text), 40) == segments(Text.from_ansi(text), 40)
