"""A chart is rebuilt (plotext) only when what it would draw changes: the clock's refresh of a quiet
store re-shows equal data every second, and each rebuild of the Overview's four charts cost 20–40 ms."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from llmobs_tui.widgets import chart as chart_module
from llmobs_tui.widgets.chart import ChartData, Line, Threshold, TimeChart

TIMES = [1_700_000_000.0 + 10 * i for i in range(30)]


def _data(values: list[float], unit: str = "ms", threshold: float = 5.0) -> ChartData:
    # A new lambda per load, as the screens make them, over a captured unit.
    return ChartData(TIMES, [Line("p95", list(values))], thresholds=[Threshold(threshold, "SLO")],
                     y_format=lambda v: f"{v:g} {unit}")


class OneChart(App):
    def compose(self) -> ComposeResult:
        yield TimeChart("latency", id="chart")


@pytest.mark.anyio
async def test_equal_data_is_not_rebuilt_and_any_change_is(monkeypatch) -> None:
    builds: list[int] = []
    draw = chart_module.TimeChart._draw

    def counting_draw(self, data, width, height):
        builds.append(1)
        return draw(self, data, width, height)

    monkeypatch.setattr(chart_module.TimeChart, "_draw", counting_draw)
    values = [float(i % 7) for i in range(30)]
    app = OneChart()
    async with app.run_test(size=(80, 20)) as pilot:
        chart = app.query_one(TimeChart)

        async def show(data: ChartData) -> int:
            before = len(builds)
            chart.show(data, "1 h")
            await pilot.pause()
            chart.render()  # what the compositor calls when the widget is dirty
            return len(builds) - before

        assert await show(_data(values)) == 1
        assert await show(_data(values)) == 0  # a fresh but equal ChartData: nothing to redraw
        assert await show(_data([*values[:-1], 99.0])) == 1  # the newest bucket moved
        assert await show(_data([*values[:-1], 99.0], unit="s")) == 1  # same code, another unit
        assert await show(_data([*values[:-1], 99.0], unit="s", threshold=6.0)) == 1
        assert await show(ChartData(TIMES, [Line("p95", [*values[:-1], 99.0])], thresholds=[Threshold(6.0, "SLO")],
                                    y_format=lambda v: f"{v:.1f}")) == 1  # other code
        rendered = chart.render()
        assert chart.data.y_format(1.0) == "1.0" and rendered is not None
