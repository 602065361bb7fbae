"""Breakdown: the window by model, feature, tenant, prompt version or provider."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from llmobs_tui import format as fmt
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.widgets.keyed_table import KeyedTable
from store.queries import GroupStats

GROUPINGS = ("model", "feature", "tenant", "prompt", "provider")
FILTER_FIELD = {"model": "model", "feature": "feature", "tenant": "tenant", "prompt": "prompt", "provider": "provider"}


class BreakdownScreen(LiveScreen):
    NAME = "breakdown"
    BINDINGS = [Binding("g", "next_grouping", "Group by"), Binding("enter", "drill", "Traces", show=False)]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.by = "model"
        self._groups: dict[str, GroupStats] = {}

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield KeyedTable(id="breakdown")
        yield from self.compose_chrome_bottom()

    def on_mount(self) -> None:
        self._columns()

    WIDE = ("calls", "p95", "TTFT p95", "error %", "tokens", "cost", "cache hit", "decode")
    NARROW = ("calls", "p95", "error %", "cost", "cache hit")

    def on_resize(self) -> None:
        layout = self.WIDE if self.size.width >= 110 else self.NARROW
        if layout != getattr(self, "_layout", None):
            self._columns()
            self.llmobs.wake()

    def _columns(self) -> None:
        self._layout = self.WIDE if self.size.width >= 110 or not self.size.width else self.NARROW
        table = self.query_one(KeyedTable)
        table.clear(columns=True)
        table._cells.clear()
        table.add_column(self.by, width=28 if self._layout is self.NARROW else None)
        table.add_columns(*self._layout)
        table.focus()

    async def load(self, reader, now_s: float) -> list[GroupStats]:
        return await reader.breakdown(self.llmobs.window_s, now_s, self.by)

    def show(self, groups: list[GroupStats]) -> None:
        rows = []
        self._groups = {}
        for group in groups:
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
                "error %": Text(fmt.percent(errors / calls) if calls else "–", style="red" if errors else ""),
                "tokens": Text(fmt.tokens(group["input_tokens"] + group["output_tokens"])), "cost": cost,
                "cache hit": Text(fmt.percent(group.cache_hit_rate)), "decode": Text(f"{decode:,.0f}/s" if decode else "–"),
            }
            rows.append((key, (label, *(cells[c] for c in self._layout))))
        self.query_one(KeyedTable).sync(rows)

    def action_next_grouping(self) -> None:
        self.by = GROUPINGS[(GROUPINGS.index(self.by) + 1) % len(GROUPINGS)]
        self._columns()
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
        self.llmobs.open_traces(_quote_values(flt), "start", True, f"{self.by} {flt}")

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
