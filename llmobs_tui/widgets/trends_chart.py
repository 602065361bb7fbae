"""The chart of a Trends read (store/trends.py): one line per series, coloured in rank order.

Drawn by the Trends screen (its table is the legend) and under the Breakdown table (which labels
the lines); the benchmark times building it."""

from __future__ import annotations

from collections.abc import Sequence

from llmobs_tui import format as fmt
from llmobs_tui.trends import value_format
from llmobs_tui.widgets.chart import SERIES_COLORS, ChartData, Line, Mark
from store.trends import Trends

OTHERS_COLOR = "gray"


def series_colors(trends: Trends) -> list[str]:
    return [OTHERS_COLOR if s.others else SERIES_COLORS[i % len(SERIES_COLORS)] for i, s in enumerate(trends.series)]


def trends_chart_data(trends: Trends, marks: Sequence[Mark] = (), selected: int | None = None) -> ChartData:
    """The chart of a Trends read (the screen draws it; the benchmark times building it)."""
    metric = trends.metric
    fmt_value = value_format(metric)
    if not trends.supported:
        empty = f"tool spans carry no {metric.label}: for tools choose latency, calls/s, error rate or API errors (m)"
    else:
        empty = f"no {metric.label} by {trends.by} in the last {fmt.window_label(trends.window_s)} (t: longer)"
    # No labels: the legend is the table under the chart (its swatches match the lines), and
    # plotext's own legend box would cover the lines it names.
    lines = [Line("", s.values, color=c) for c, s in zip(series_colors(trends), trends.series)]
    return ChartData(times=trends.times, lines=lines, marks=marks, selected_mark=selected,
                     y_format=lambda v: "0" if v == 0 else fmt_value(v), empty_text=empty)
