"""llmobs_tui/widgets/chart.ansi_text: the chart's ANSI text decoded to the very Text Rich's
Text.from_ansi makes (the charts drew through it before), for real charts in every theme and for any
text at all, escape sequences of every kind included."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.text import Text
from textual.app import App, ComposeResult

from llmobs_tui.widgets.chart import ChartData, Line, Mark, Threshold, TimeChart, ansi_text, build_chart_text

T0 = 1_800_000_000.0
TIMES = tuple(T0 + 60 * i for i in range(61))


def same(a: Text, b: Text) -> bool:
    return (a.plain, a.spans, a.style, a.end, a.tab_size, a.justify, a.no_wrap, a.overflow) == (
        b.plain, b.spans, b.style, b.end, b.tab_size, b.justify, b.no_wrap, b.overflow)


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
def test_real_charts_decode_as_rich_decodes_them(theme: str) -> None:
    for data in charts():
        for width, height in ((78, 12), (152, 30), (30, 6)):
            chart = TimeChart("")
            chart.plt.clear_figure()
            chart.plt.plotsize(width, height)
            chart.plt.theme(theme)
            chart._draw(data, width, height)
            built = chart.plt.build()
            assert same(ansi_text(built), Text.from_ansi(built))
    assert "\x1b[" in build_chart_text(charts()[0], 78, 12)  # the charts do carry colour codes


def test_the_widget_in_an_app_renders_what_textual_plotext_rendered() -> None:
    """In the app the theme is textual-plotext's own, in RGB from the Textual theme."""

    class Host(App):
        def compose(self) -> ComposeResult:
            yield TimeChart("latency", id="c")

    async def run() -> None:
        app = Host()
        async with app.run_test(size=(100, 30)) as pilot:
            chart = app.query_one(TimeChart)
            chart.show(charts()[0])
            await pilot.pause()
            rendered = chart.render()
            assert isinstance(rendered, Text) and "p95" in rendered.plain
            assert same(rendered, Text.from_ansi(chart.plt.build()))
            assert any("rgb(" in str(span.style) or "#" in str(span.style) for span in rendered.spans)

    asyncio.run(run())


_PARAMS = st.lists(st.one_of(st.integers(0, 300).map(str), st.just(""), st.sampled_from(["38;5", "48;2", "x"])),
                   max_size=7).map(";".join)
_TOKENS = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=6),
    st.sampled_from(["\n", "\r", "\r\n", "\t", "\x1b", "\x1b[", "\x1b[2K", "\x1b]8;;http://x\x1b\\", "\x1b(B", "m", ";"]),
    _PARAMS.map(lambda p: f"\x1b[{p}m"),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_TOKENS, max_size=30).map("".join))
def test_any_text_decodes_as_rich_decodes_it(text: str) -> None:
    assert same(ansi_text(text), Text.from_ansi(text))
