"""Breakdown: the window by model, feature, tenant, prompt version, variant or provider (LLM calls,
from rollups), or by tool (tool calls: calls, errors, p50/p95 duration, from the tool spans).
With a comparison on (`v`), delta columns against the same groups in the past period. Under the
table, when the terminal has the rows, the top groups over the window as two charts (cost and p95
latency; calls and p95 for tools), read from the rollups as the Trends screen reads them."""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.compare import delta_text
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.trends import series_label
from llmobs_tui.widgets.chart import ChartData, TimeChart
from llmobs_tui.widgets.chrome import empty_window_text
from llmobs_tui.widgets.keyed_table import KeyedTable
from llmobs_tui.widgets.quiet import set_border_title
from llmobs_tui.widgets.trends_chart import trends_chart_data
from store.connection import NotInThisStore
from store.queries import GroupStats, ToolStats
from store.trends import METRIC, Trends

GROUPINGS = ("model", "feature", "tenant", "prompt", "variant", "provider", "tool")
FILTER_FIELD = {"model": "model", "feature": "feature", "tenant": "tenant", "prompt": "prompt", "provider": "provider",
                "tool": "tool", "variant": "variant"}


class BreakdownScreen(LiveScreen):
    WARM_WITH_DATA = True
    NAME = "breakdown"
    BINDINGS = [Binding("g", "next_grouping", "Group by"), Binding("enter", "drill", "Traces", show=False)]
    DEFAULT_CSS = """
    BreakdownScreen #breakdown-empty { height: auto; padding: 1 0; display: none; }
    BreakdownScreen #breakdown { height: auto; max-height: 55%; }
    BreakdownScreen #breakdown-charts { height: 1fr; min-height: 12; }
    BreakdownScreen.-short #breakdown-charts { display: none; }
    BreakdownScreen.-short #breakdown { max-height: 100%; height: 1fr; }
    """
    # Below this many rows the table keeps the screen: the charts would leave it a handful of rows.
    CHARTS_MIN_HEIGHT = 34
    CHART_SERIES = 5  # lines per chart: more and their legend covers the chart

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.by = "model"
        self._groups: dict[str, GroupStats] = {}
        self._past: dict[str, GroupStats] | None = None  # the compared period's groups, by key

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="breakdown-empty")
        yield KeyedTable(id="breakdown")
        with Horizontal(id="breakdown-charts"):
            yield TimeChart("", id="breakdown-chart-a")
            yield TimeChart("", id="breakdown-chart-b")
        yield from self.compose_chrome_bottom()

    def on_mount(self) -> None:
        self._trends: list[Trends] = []
        self._charts_missing: str | None = None  # why the charts' data could not be read (NotInThisStore)
        self.reset_columns()

    @property
    def charts_shown(self) -> bool:
        return not self.size.height or self.size.height >= self.CHARTS_MIN_HEIGHT

    def chart_metrics(self) -> tuple[str, str]:
        return ("calls", "latency_p95") if self.by == "tool" else ("cost", "latency_p95")

    WIDE = ("calls", "p95", "TTFT p95", "error %", "tokens", "cost", "cache hit", "decode")
    NARROW = ("calls", "p95", "error %", "cost", "cache hit")
    TOOL_WIDE = ("calls", "errors", "error %", "p50", "p95")
    TOOL_NARROW = ("calls", "error %", "p95")
    COMPARED_WIDE = (*WIDE, "Δ calls", "Δ p95", "Δ error", "Δ cost")
    COMPARED_NARROW = ("calls", "p95", "cost", "Δ p95", "Δ cost")

    def _layout_for(self, width: int) -> tuple[str, ...]:
        wide = width >= 110 or not width
        if self.by == "tool":
            return self.TOOL_WIDE if wide else self.TOOL_NARROW
        if self.llmobs.compare_mode != "off":
            return self.COMPARED_WIDE if wide else self.COMPARED_NARROW
        return self.WIDE if wide else self.NARROW

    def on_resize(self) -> None:
        self.set_class(not self.charts_shown, "-short")
        layout = self._layout_for(self.size.width)
        if layout != getattr(self, "_layout", None):
            self.reset_columns()
            self.llmobs.wake()

    def reset_columns(self) -> None:
        """Columns for the grouping and the width (after `g` or `:by`, or a resize)."""
        self._layout = self._layout_for(self.size.width)
        narrow = self._layout in (self.NARROW, self.TOOL_NARROW, self.COMPARED_NARROW)
        table = self.query_one(KeyedTable)
        table.reset(columns=True)
        table.add_column(self.by, width=28 if narrow else None)
        table.add_columns(*self._layout)
        table.focus()

    async def load(self, reader, now_s: float) -> list[GroupStats] | list[ToolStats]:
        window = self.llmobs.window_s
        self._charts_missing = None
        try:
            self._trends = [await reader.trends(metric, self.by, window, now_s, top_n=self.CHART_SERIES)
                            for metric in self.chart_metrics()] if self.charts_shown else []
        except NotInThisStore as exc:  # the table does not depend on its charts (a store without their data)
            self._trends, self._charts_missing = [], str(exc)
        if self.by == "tool":
            return await reader.tool_calls(self.llmobs.window_s, now_s)
        groups = await reader.breakdown(self.llmobs.window_s, now_s, self.by)
        shift = self.llmobs.compare_shift_s()
        past = await reader.breakdown(self.llmobs.window_s, now_s - shift, self.by) if shift else None
        self._past = None if past is None else {repr(tuple(g.key.values())): g for g in past}
        return groups

    def show(self, groups: list[GroupStats] | list[ToolStats]) -> None:
        if groups and isinstance(groups[0], ToolStats) != (self.by == "tool"):
            return  # loaded for the grouping before a `g`: the next refresh brings the right rows
        if self._layout != self._layout_for(self.size.width):
            self.reset_columns()  # `v` turned the comparison on or off
        self._show_charts()
        if self.by == "tool":
            self._show_tools(groups)  # type: ignore[arg-type]
            return
        rows = []
        self._groups = {}
        for group in groups:
            if not group["calls"] and not (group["errors_api"] + group["errors_validation"]
                                           + group["errors_guardrail"]):
                continue  # a rollup row with nothing in this window (a 0-call "–" row says nothing)
            if self.by == "prompt":
                pid, version = group.key.get("prompt_id"), group.key.get("prompt_version")
                name = f"{pid or '–'}@{version}" if version else (pid or "–")
            else:
                name = next(iter(group.key.values()), None) or "–"
            key = repr(tuple(group.key.values()))
            self._groups[key] = group
            calls = group["calls"]
            errors = group["errors_api"] + group["errors_validation"] + group["errors_guardrail"]
            p95 = group.percentiles_ms("latency", (0.95,))[0]
            ttft = group.percentiles_ms("ttft", (0.95,))[0]
            decode = group["decode_tokens"] / (group["decode_ns"] / 1e9) if group["decode_ns"] else None
            unpriced = group["unpriced_calls"]
            if unpriced and unpriced == calls:
                cost = Text("unpriced", style="yellow")
            else:
                cost = Text(fmt.money(group["cost_nusd"]))
                if unpriced:
                    cost.append(f" +{unpriced}?", style="yellow")
            label = fmt.safe(name, limit=48)
            label.truncate(28 if self._layout in (self.NARROW, self.COMPARED_NARROW) else 48, overflow="ellipsis")
            cells = {
                "calls": Text(f"{calls:,}"), "p95": Text(fmt.duration(p95 * 1e6) if p95 else "–"),
                "TTFT p95": Text(fmt.duration(ttft * 1e6) if ttft else "–"),
                "error %": Text(fmt.percent(errors / calls) if calls else (f"{errors:,} err" if errors else "–"),
                                style="red" if errors else ""),  # failed before any call (no model): a count
                "tokens": Text(fmt.tokens(group["input_tokens"] + group["output_tokens"])), "cost": cost,
                "cache hit": Text(fmt.percent(group.cache_hit_rate)),
                "decode": Text(f"{decode:,.0f}/s" if decode else "–"),
            }
            if self._past is not None:
                cells.update(_deltas(group, self._past.get(key)))
            rows.append((key, (label, *(cells[c] for c in self._layout))))
        self.query_one(KeyedTable).sync(rows)
        self._show_empty(not rows)

    def _show_charts(self) -> None:
        if self._charts_missing is not None:
            for chart_id, metric in zip(("#breakdown-chart-a", "#breakdown-chart-b"), self.chart_metrics()):
                chart = self.query_one(chart_id, TimeChart)
                set_border_title(chart, f"{METRIC[metric].label} by {self.by}")
                chart.show(ChartData(times=(), empty_text=self._charts_missing))
            return
        trends = [t for t in self._trends if t.by == self.by]  # not a read from before a `g`
        if len(trends) != 2:
            return
        marks, selected = self.llmobs.chart_marks()
        for chart_id, read in zip(("#breakdown-chart-a", "#breakdown-chart-b"), trends):
            data = trends_chart_data(read, marks, selected)
            # Labelled here (Trends has its table as the legend): plotext's legend names the lines.
            data.lines = [replace(line, label=series_label(read.by, series))
                          for line, series in zip(data.lines, read.series)]
            chart = self.query_one(chart_id, TimeChart)
            set_border_title(chart, f"{read.metric.label} by {self.by} · top {self.CHART_SERIES}")
            chart.show(data, "7: Trends for any signal")

    def _show_empty(self, empty: bool) -> None:
        note = self.query_one("#breakdown-empty", Static)
        note.display = empty
        if empty:
            what = "tool calls" if self.by == "tool" else "LLM calls"
            note.update(empty_window_text(what, self.llmobs.window_s,
                                          "g: group by something else · 1: how to send spans"))

    def _show_tools(self, groups: list[ToolStats]) -> None:
        rows = []
        self._groups = {}
        narrow = self._layout is self.TOOL_NARROW
        for group in groups:
            if not group.calls and not group.errors:
                continue
            key = repr(tuple(group.key.values()))
            self._groups[key] = group
            label = fmt.safe(group.key.get("tool") or "–", limit=48)
            label.truncate(28 if narrow else 48, overflow="ellipsis")
            p50, p95 = group.percentile_ms(0.5), group.percentile_ms(0.95)
            cells = {
                "calls": Text(f"{group.calls:,}"),
                "errors": Text(f"{group.errors:,}", style="red" if group.errors else ""),
                "error %": Text(fmt.percent(group.error_rate), style="red" if group.errors else ""),
                "p50": Text(fmt.duration(p50 * 1e6) if p50 is not None else "–"),
                "p95": Text(fmt.duration(p95 * 1e6) if p95 is not None else "–"),
            }
            rows.append((key, (label, *(cells[c] for c in self._layout))))
        self.query_one(KeyedTable).sync(rows)
        self._show_empty(not rows)

    def action_next_grouping(self) -> None:
        self.by = GROUPINGS[(GROUPINGS.index(self.by) + 1) % len(GROUPINGS)]
        self.reset_columns()
        self.llmobs.refresh_chrome(self)
        self.llmobs.wake()

    def action_drill(self) -> None:
        key = self.query_one(KeyedTable).cursor_key
        group = self._groups.get(key or "")
        if group is None:
            return
        if self.by == "prompt":
            pid = group.key.get("prompt_id")
            version = group.key.get("prompt_version")
            parts = [f"prompt={pid}"] if pid else []
            if version:
                parts.append(f"version={version}")
            flt = " ".join(parts)
        else:
            value = next(iter(group.key.values()), None)
            flt = f"{FILTER_FIELD[self.by]}={value}" if value else ""
        # The filter line already says which group (a description would repeat it: "model model=x").
        self.llmobs.open_traces(_quote_values(flt), "start", True, "")

    def on_data_table_row_selected(self, _) -> None:
        self.action_drill()


def _deltas(group: GroupStats, past: GroupStats | None) -> dict[str, Text]:
    """The row against the same group in the past period (a group new since then: `new`)."""
    def error_rate(g: GroupStats | None) -> float | None:
        if g is None or not g["calls"]:
            return None
        return (g["errors_api"] + g["errors_validation"] + g["errors_guardrail"]) / g["calls"]

    return {
        "Δ calls": delta_text("calls", group["calls"], past["calls"] if past else None),
        "Δ p95": delta_text("latency", group.percentiles_ms("latency", (0.95,))[0],
                            past.percentiles_ms("latency", (0.95,))[0] if past else None),
        "Δ error": delta_text("error_rate", error_rate(group), error_rate(past)),
        "Δ cost": delta_text("cost", group["cost_nusd"], past["cost_nusd"] if past else None),
    }


def _quote_values(flt: str) -> str:
    """Quote values with spaces so the filter parser reads them as one term."""
    import shlex

    out = []
    for term in flt.split(" ") if flt else []:
        field, _, value = term.partition("=")
        out.append(f"{field}={shlex.quote(value)}" if " " in value else term)
    return " ".join(out)
