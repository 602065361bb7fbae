"""Trends (`7`): any golden signal over the window, split by a dimension, as top-N lines.

`m`/`M` change the metric, `g` the dimension, `n` how many series, `o` adds the rest as one
"others" line, `t` (the app's) the window. The legend under the chart lists each series with its
value over the window; Enter on one opens its traces. Split by variant, a table compares the two
variants with the most calls (`c` makes the selected one the baseline). Everything comes from the
rollups (store/trends.py), never from raw spans."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.trends import compare_variants, drill_filter, series_label, value_format
from llmobs_tui.widgets.change_line import ChangeLine
from llmobs_tui.widgets.chart import TimeChart
from llmobs_tui.widgets.keyed_table import KeyedTable
from llmobs_tui.widgets.quiet import set_border_title, update_static
from llmobs_tui.widgets.trends_chart import series_colors, trends_chart_data
from llmobs_tui.widgets.variant_comparison import VariantComparisonPanel
from store.trends import DIMENSIONS, METRIC, METRICS, Series, Trends

TOP_NS = (3, 5, 8, 10)


def swatch_style(color: str) -> str:
    """A plotext colour name as a Rich style, so the legend's mark matches its line."""
    base = color.rstrip("+")
    return f"bright_{base}" if color.endswith("+") else {"gray": "grey50"}.get(base, base)


class TrendsScreen(LiveScreen):
    WARM_WITH_DATA = True
    NAME = "trends"
    BINDINGS = [
        Binding("m", "metric(1)", "Metric"),
        Binding("M", "metric(-1)", "Previous metric", show=False),
        Binding("g", "dimension", "Split by"),
        Binding("n", "top_n", "Top N"),
        Binding("o", "others", "Others"),
        Binding("c", "pin_variant", "Compare with", show=False),
        Binding("enter", "drill", "Traces", show=False),
    ]
    DEFAULT_CSS = """
    TrendsScreen #trends-head { height: 1; padding: 0 1; }
    TrendsScreen #trends-chart { height: 1fr; min-height: 6; }
    TrendsScreen #trends-bottom { height: 12; }
    TrendsScreen.-short #trends-bottom { height: 8; }
    TrendsScreen #trends-legend { width: 1fr; height: 1fr; }
    TrendsScreen #trends-compare { display: none; }
    TrendsScreen.-variants #trends-compare { display: block; }
    TrendsScreen.-short.-variants #trends-bottom { height: 10; }
    TrendsScreen.-short #trends-compare { border: none; padding: 0 0 0 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.metric = "latency_p95"
        self.by = "model"
        self.top_n = 8
        self.others = False
        self.pinned_variant: str | None = None
        self.trends: Trends | None = None
        self._series: dict[str, Series] = {}

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="trends-head")
        yield TimeChart("trend", id="trends-chart")
        yield ChangeLine(id="trends-changes")
        with Horizontal(id="trends-bottom"):
            yield KeyedTable(id="trends-legend")
            yield VariantComparisonPanel(id="trends-compare")
        yield from self.compose_chrome_bottom()

    # The legend's columns by width: at 80 columns it shares the row with the variant comparison.
    WIDE = (("series", 32), ("over window", 12), ("latest", 10), ("peak", 10), ("calls", 9))
    NARROW = (("series", 15), ("window", 8), ("calls", 6))

    def on_mount(self) -> None:
        self._layout: tuple = ()
        self._set_columns()
        self.query_one("#trends-legend", KeyedTable).focus()
        self._describe()

    def on_resize(self) -> None:
        self.set_class(self.size.height < 32, "-short")
        if self._set_columns():
            self.llmobs.wake()

    def _set_columns(self) -> bool:
        layout = self.WIDE if self.size.width >= 110 or not self.size.width else self.NARROW
        if layout == self._layout:
            return False
        self._layout = layout
        table = self.query_one("#trends-legend", KeyedTable)
        table.reset(columns=True)
        for label, width in layout:
            table.add_column(label, width=width)
        return True

    # -- what is shown ----------------------------------------------------------------------------

    def header_text(self) -> str:
        """What the TopBar adds after the window: the metric and the split."""
        return f"{METRIC[self.metric].label} by {self.by}"

    def _describe(self, trends: Trends | None = None) -> None:
        text = Text(" ")
        text.append(METRIC[self.metric].label, style="bold")
        text.append(" by ")
        text.append(self.by, style="bold")
        text.append(f" · last {fmt.window_label(self.llmobs.window_s)} · top {self.top_n}")
        if trends is not None:
            text.append(f" of {trends.series_total}" if trends.series_total > self.top_n else
                        f" ({trends.series_total} series)")
            text.append(f" · {fmt.window_label(trends.resolution_s)} buckets")
        if self.others:
            text.append(" + others")
        text.append("   m metric · g split · n top · o others · t window · Enter traces", style="dim")
        update_static(self.query_one("#trends-head", Static), text)

    async def load(self, reader, now_s: float) -> Trends:
        return await reader.trends(self.metric, self.by, self.llmobs.window_s, now_s, self.top_n, self.others)

    def show(self, trends: Trends) -> None:
        if trends.metric.name != self.metric or trends.by != self.by:
            return  # read before a key changed what to show: the next refresh brings it
        self.trends = trends
        self._describe(trends)
        self.set_class(trends.by == "variant", "-variants")
        fmt_value = value_format(trends.metric)
        rows = []
        self._series = {}
        for color, series in zip(series_colors(trends), trends.series):
            key = "others" if series.others else repr(series.key)
            self._series[key] = series
            name = Text("● ", style=swatch_style(color))
            name.append(fmt.clean(series_label(trends.by, series), limit=60))
            name.truncate(self._layout[0][1], overflow="ellipsis")
            present = [v for v in series.values if v is not None]
            over = Text(fmt_value(series.value))
            if series.all_unpriced:
                over = Text("unpriced", style="yellow")
            elif series.unpriced:
                over.append(f" +{series.unpriced}?", style="yellow")  # calls whose cost is unknown
            cells = {"series": name, "over window": over, "window": over,
                     "latest": Text(fmt_value(present[-1] if present else None)),
                     "peak": Text(fmt_value(max(present) if present else None)),
                     "calls": Text(f"{series.calls:,}")}
            rows.append((key, tuple(cells[column] for column, _ in self._layout)))
        self.query_one("#trends-legend", KeyedTable).sync(rows)
        marks, selected = self._marks()
        chart = self.query_one("#trends-chart", TimeChart)
        set_border_title(chart, trends.metric.label)
        chart.show(trends_chart_data(trends, marks, selected),
                   subtitle=f"by {trends.by} · {len(trends.series)} of {trends.series_total} series")
        self.query_one(ChangeLine).show(getattr(self.llmobs, "changes", []),
                                        getattr(self.llmobs, "selected_change", None))
        if trends.by == "variant":
            self.query_one(VariantComparisonPanel).show(compare_variants(trends.variants, self.pinned_variant),
                                                        self.pinned_variant)

    def _marks(self) -> tuple[list, int | None]:
        """The app's change markers for this window (`[` `]` select one)."""
        marks = getattr(self.llmobs, "chart_marks", None)
        return marks() if callable(marks) else ([], None)

    # -- keys -------------------------------------------------------------------------------------

    def _changed(self) -> None:
        self.query_one("#trends-legend", KeyedTable).reset()
        self._describe()
        self.llmobs.refresh_chrome(self)
        self.llmobs.wake()

    def action_metric(self, step: int) -> None:
        names = [m.name for m in METRICS]
        self.metric = names[(names.index(self.metric) + step) % len(names)]
        self._changed()

    def action_dimension(self) -> None:
        self.by = DIMENSIONS[(DIMENSIONS.index(self.by) + 1) % len(DIMENSIONS)]
        self._changed()

    def action_top_n(self) -> None:
        self.top_n = TOP_NS[(TOP_NS.index(self.top_n) + 1) % len(TOP_NS)] if self.top_n in TOP_NS else 8
        self._changed()

    def action_others(self) -> None:
        self.others = not self.others
        self._changed()

    def selected_series(self) -> Series | None:
        key = self.query_one("#trends-legend", KeyedTable).cursor_key
        return self._series.get(key or "")

    def action_pin_variant(self) -> None:
        series = self.selected_series()
        if self.by != "variant" or series is None or series.others or series.key[0] is None:
            self.llmobs.notify("c: split by variant (g), select a variant, then c compares against it.",
                               title="variants")
            return
        value = series.key[0]
        self.pinned_variant = None if self.pinned_variant == value else value
        self.llmobs.wake()

    def action_drill(self) -> None:
        series = self.selected_series()
        if series is None:
            return
        flt = drill_filter(self.by, series)
        label = series_label(self.by, series)
        if flt is None:
            self.llmobs.notify(f"{label}: no single {self.by} value to filter the traces by.", title="trends")
            return
        self.llmobs.open_traces(flt, "start", True, "")

    def on_data_table_row_selected(self, _) -> None:
        self.action_drill()
