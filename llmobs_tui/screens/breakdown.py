"""Breakdown: the window by model, feature, tenant, prompt version or provider (LLM calls, from
rollups), or by tool (tool calls: calls, errors, p50/p95 duration, from the tool spans)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.widgets.chrome import empty_window_text
from llmobs_tui.widgets.keyed_table import KeyedTable
from store.queries import GroupStats, ToolStats

GROUPINGS = ("model", "feature", "tenant", "prompt", "provider", "tool")
FILTER_FIELD = {"model": "model", "feature": "feature", "tenant": "tenant", "prompt": "prompt", "provider": "provider",
                "tool": "tool"}


class BreakdownScreen(LiveScreen):
    NAME = "breakdown"
    BINDINGS = [Binding("g", "next_grouping", "Group by"), Binding("enter", "drill", "Traces", show=False)]
    DEFAULT_CSS = """
    BreakdownScreen #breakdown-empty { height: auto; padding: 1 0; display: none; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.by = "model"
        self._groups: dict[str, GroupStats] = {}

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="breakdown-empty")
        yield KeyedTable(id="breakdown")
        yield from self.compose_chrome_bottom()

    def on_mount(self) -> None:
        self.reset_columns()

    WIDE = ("calls", "p95", "TTFT p95", "error %", "tokens", "cost", "cache hit", "decode")
    NARROW = ("calls", "p95", "error %", "cost", "cache hit")
    TOOL_WIDE = ("calls", "errors", "error %", "p50", "p95")
    TOOL_NARROW = ("calls", "error %", "p95")

    def _layout_for(self, width: int) -> tuple[str, ...]:
        wide = width >= 110 or not width
        if self.by == "tool":
            return self.TOOL_WIDE if wide else self.TOOL_NARROW
        return self.WIDE if wide else self.NARROW

    def on_resize(self) -> None:
        layout = self._layout_for(self.size.width)
        if layout != getattr(self, "_layout", None):
            self.reset_columns()
            self.llmobs.wake()

    def reset_columns(self) -> None:
        """Columns for the grouping and the width (after `g` or `:by`, or a resize)."""
        self._layout = self._layout_for(self.size.width)
        narrow = self._layout in (self.NARROW, self.TOOL_NARROW)
        table = self.query_one(KeyedTable)
        table.reset(columns=True)
        table.add_column(self.by, width=28 if narrow else None)
        table.add_columns(*self._layout)
        table.focus()

    async def load(self, reader, now_s: float) -> list[GroupStats] | list[ToolStats]:
        if self.by == "tool":
            return await reader.tool_calls(self.llmobs.window_s, now_s)
        return await reader.breakdown(self.llmobs.window_s, now_s, self.by)

    def show(self, groups: list[GroupStats] | list[ToolStats]) -> None:
        if groups and isinstance(groups[0], ToolStats) != (self.by == "tool"):
            return  # loaded for the grouping before a `g`: the next refresh brings the right rows
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
            label.truncate(28 if self._layout is self.NARROW else 48, overflow="ellipsis")
            cells = {
                "calls": Text(f"{calls:,}"), "p95": Text(fmt.duration(p95 * 1e6) if p95 else "–"),
                "TTFT p95": Text(fmt.duration(ttft * 1e6) if ttft else "–"),
                "error %": Text(fmt.percent(errors / calls) if calls else (f"{errors:,} err" if errors else "–"),
                                style="red" if errors else ""),  # failed before any call (no model): a count
                "tokens": Text(fmt.tokens(group["input_tokens"] + group["output_tokens"])), "cost": cost,
                "cache hit": Text(fmt.percent(group.cache_hit_rate)),
                "decode": Text(f"{decode:,.0f}/s" if decode else "–"),
            }
            rows.append((key, (label, *(cells[c] for c in self._layout))))
        self.query_one(KeyedTable).sync(rows)
        self._show_empty(not rows)

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


def _quote_values(flt: str) -> str:
    """Quote values with spaces so the filter parser reads them as one term."""
    import shlex

    out = []
    for term in flt.split(" ") if flt else []:
        field, _, value = term.partition("=")
        out.append(f"{field}={shlex.quote(value)}" if " " in value else term)
    return " ".join(out)
