"""Metrics (`8`): the OTLP metrics apps, model servers and collectors send, by section.

GenAI client and server instruments (token usage by model and token type, operation duration p50 /
p95), a model server's serving signals (vLLM, TGI, SGLang: queue waiting / running, KV cache), GPU
`hw.gpu.*` from collectors, one row per series; any other metric one row per name. Enter on a row
draws that metric over the window in the chart below (levels per series, counters per bucket,
histograms as p50 and p95). Everything comes from store/metrics.py's buckets. Metric names and
attribute values are whatever a sender chose: shown as rich Text, never markup."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.widgets.chart import ChartData, Line, TimeChart
from llmobs_tui.widgets.keyed_table import KeyedTable
from llmobs_tui.widgets.quiet import set_border_title, update_static
from store.metrics import (
    KV_CACHE,
    OTHER_SECTION,
    QUEUE_WAITING,
    RUNNING,
    SATURATION_NAMES,
    SECTIONS,
    MetricChart,
    MetricsOverview,
    SeriesSummary,
    merge_series,
    section_of,
    series_label,
)

SECTION_ORDER = [section for section, _ in SECTIONS] + [OTHER_SECTION]
SERIES_PER_METRIC = 8  # rows per metric in a named section; the rest are one "more series" row
# Fractions shown as percentages whatever unit the sender gave (Prometheus names carry none).
PERCENT_NAMES = frozenset(KV_CACHE) | {"hw.gpu.utilization", "hw.gpu.memory.utilization",
                                       "sglang:cache_hit_rate"}


def format_value(value: float | None, unit: str, name: str) -> str:
    """A metric's value in its unit's words."""
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if name in PERCENT_NAMES or (unit == "1" and 0.0 <= value <= 1.0):
        return fmt.percent(value)
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "s":
        return fmt.seconds(value)
    if unit == "ms":
        return fmt.seconds(value / 1000)
    if unit == "By":
        return fmt.bytes_(int(value))
    if abs(value) >= 1000:
        return fmt.tokens(value)
    return f"{value:.3g}"


def describe(s: SeriesSummary, window_s: float) -> tuple[str, str]:
    """(value, detail): a level's newest sample (avg, max); a counter's total (per second); a
    histogram's p50 (p95, observations, their sum: a token usage histogram's tokens)."""
    if s.kind == "histogram":
        return (format_value(s.quantile(0.5), s.unit, s.name),
                f"p95 {format_value(s.quantile(0.95), s.unit, s.name)} · {fmt.tokens(s.n)} obs · "
                f"Σ {format_value(s.total, s.unit, s.name)}")
    if s.kind == "counter":
        per_s = s.total / window_s if window_s else None
        return format_value(s.total, s.unit, s.name), f"{format_value(per_s, s.unit, s.name)}/s"
    return (format_value(s.last, s.unit, s.name),
            f"avg {format_value(s.mean, s.unit, s.name)} · max {format_value(s.max, s.unit, s.name)}")


def _importance(s: SeriesSummary) -> tuple:
    """Serving signals first in their section, then by name."""
    return (s.name not in SATURATION_NAMES, s.name not in QUEUE_WAITING, s.name not in RUNNING, s.name)


def list_rows(overview: MetricsOverview) -> list[tuple[str, str, SeriesSummary | None, str]]:
    """(row key, section or "", the series shown, its label) in display order. A section heading has
    no series. Named sections list each series (the busiest SERIES_PER_METRIC of a metric, then the
    rest as one row); other metrics one row per name."""
    by_section: dict[str, dict[str, list[SeriesSummary]]] = {}
    for s in overview.series:
        by_section.setdefault(section_of(s.name), {}).setdefault(s.name, []).append(s)
    rows: list[tuple[str, str, SeriesSummary | None, str]] = []
    for section in SECTION_ORDER:
        names = by_section.get(section)
        if not names:
            continue
        rows.append((f"section:{section}", section, None, ""))
        for name in sorted(names, key=lambda n: _importance(names[n][0])):
            group = names[name]
            if section == OTHER_SECTION or (len(group) == 1 and not group[0].attrs):
                merged = merge_series(group) if len(group) > 1 else group[0]
                label = f"{len(group)} series" if len(group) > 1 else series_label(group[0].service, group[0].attrs)
                rows.append((f"name:{name}", "", merged, label))
                continue
            busiest = sorted(group, key=lambda s: -(s.n + abs(s.total)))
            # Two services' series of one metric may carry the same attributes (each app's gpu0): named by
            # their service then, or they would read as one series listed twice.
            several = len({s.service for s in group}) > 1
            for s in sorted(busiest[:SERIES_PER_METRIC], key=lambda s: (sorted(s.attrs.items()), s.service)):
                label = series_label(s.service, s.attrs)
                rows.append((f"series:{s.series_id}", "", s, f"{s.service} {label}" if several and s.attrs else label))
            rest = busiest[SERIES_PER_METRIC:]
            if rest:
                rows.append((f"name:{name}", "", merge_series(rest), f"{len(rest)} more series"))
    return rows


def chart_data(chart: MetricChart) -> ChartData:
    lines = [Line(fmt.clean(line.label, limit=40), line.values) for line in chart.lines]
    return ChartData(times=chart.times, lines=lines,
                     y_format=lambda v: format_value(v, chart.unit, chart.name),
                     empty_text=f"no points of {fmt.clean(chart.name, limit=80)} in this window")


class MetricsScreen(LiveScreen):
    NAME = "metrics"
    BINDINGS = [Binding("enter", "chart", "Chart", show=False)]
    DEFAULT_CSS = """
    MetricsScreen #metrics-head { height: 1; padding: 0 1; }
    MetricsScreen #metrics-list { height: 1fr; }
    MetricsScreen #metrics-chart { height: 1fr; min-height: 8; }
    """
    WIDE = (("metric", 44), ("series", 40), ("value", 12), ("detail", 34))
    NARROW = (("metric", 27), ("series", 16), ("value", 8), ("detail", 19))  # 78 columns with padding

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.chart_name: str | None = None  # Enter chose it; None: the first metric listed
        self.overview: MetricsOverview | None = None
        self._names: dict[str, str] = {}  # row key → metric name

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="metrics-head")
        yield KeyedTable(id="metrics-list")
        yield TimeChart("metric", id="metrics-chart")
        yield from self.compose_chrome_bottom()

    def on_mount(self) -> None:
        self._layout: tuple = ()
        self._set_columns()
        self.query_one("#metrics-list", KeyedTable).focus()
        self._describe(None)

    def on_resize(self) -> None:
        if self._set_columns():
            self.llmobs.wake()

    def _set_columns(self) -> bool:
        layout = self.WIDE if self.size.width >= 140 or not self.size.width else self.NARROW
        if layout == self._layout:
            return False
        self._layout = layout
        table = self.query_one("#metrics-list", KeyedTable)
        table.reset(columns=True)
        for label, width in layout:
            table.add_column(label, width=width)
        return True

    def _describe(self, overview: MetricsOverview | None) -> None:
        text = Text(" ")
        text.append("OTLP metrics", style="bold")
        text.append(f" · last {fmt.window_label(self.llmobs.window_s)}")
        if overview is not None:
            text.append(f" · {fmt.plural(len(overview.series), 'series', 'series')}")
            if overview.dropped_points:
                text.append(f" · {overview.dropped_points:,} points dropped (series limit)", style="yellow")
        text.append("   Enter chart · t window", style="dim")
        update_static(self.query_one("#metrics-head", Static), text)

    async def load(self, reader, now_s: float) -> tuple[MetricsOverview, MetricChart | None]:
        window_s = self.llmobs.window_s
        overview = await reader.metrics(window_s, now_s)
        name = self.chart_name or self._default_chart(overview)
        chart = await reader.metric_chart(name, window_s, now_s) if name else None
        return overview, chart

    @staticmethod
    def _default_chart(overview: MetricsOverview) -> str | None:
        rows = list_rows(overview)
        return next((s.name for _key, _section, s, _label in rows if s is not None), None)

    def show(self, data: tuple[MetricsOverview, MetricChart | None]) -> None:
        overview, chart = data
        self.overview = overview
        self._describe(overview)
        widths = dict(self._layout)
        rows = []
        self._names = {}
        for key, section, s, label in list_rows(overview):
            if s is None:
                heading = Text(section, style="bold underline")
                rows.append((key, (heading, Text(""), Text(""), Text(""))[:len(self._layout)]))
                continue
            self._names[key] = s.name
            name = Text(fmt.clean(s.name, limit=200), style="bold" if s.name == self.chart_name else "")
            name.truncate(widths["metric"], overflow="ellipsis")
            series = Text(fmt.clean(label, limit=200), style="dim" if label.endswith("series") else "")
            series.truncate(widths["series"], overflow="ellipsis")
            value, detail = describe(s, overview.window_s)
            detail_text = Text(detail, style="dim")
            detail_text.truncate(widths["detail"], overflow="ellipsis")
            rows.append((key, (name, series, Text(value), detail_text)))
        table = self.query_one("#metrics-list", KeyedTable)
        table.sync(rows)
        chart_widget = self.query_one("#metrics-chart", TimeChart)
        if chart is None:
            set_border_title(chart_widget, "metric")
            chart_widget.show(ChartData(times=(), empty_text="no OTLP metrics in this window: point an SDK's "
                                                              "metric exporter or a collector at serve"))
            return
        # A Text title: a str border title is parsed as markup, and the name and unit are the sender's.
        title = Text(fmt.clean(chart.name, limit=80))
        if chart.unit:
            title.append(f" ({fmt.clean(chart.unit, limit=20)})", style="dim")
        set_border_title(chart_widget, title)
        what = {"histogram": "p50 and p95 of all series", "counter": f"per {fmt.window_label(chart.res)}",
                "gauge": f"mean per {fmt.window_label(chart.res)}"}.get(chart.kind, "")
        chart_widget.show(chart_data(chart), subtitle=what)  # our words only: the subtitle is markup too

    def metric_name(self, key: str | None) -> str | None:
        """The metric a row of the list shows (None for a section heading)."""
        return self._names.get(key or "")

    def action_chart(self) -> None:
        name = self.metric_name(self.query_one("#metrics-list", KeyedTable).cursor_key)
        if name is None:
            return
        self.chart_name = name
        self.llmobs.wake()

    def on_data_table_row_selected(self, _) -> None:
        self.action_chart()
