"""Two experiment variants side by side: each figure for A and B, and B's change against A in percent
(▲/▼, red when the change is worse, green when better), with the calls behind each. Under
MIN_CALLS calls a side is too small to compare, and the deltas say so instead of a percentage."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.trends import ComparisonRow, VariantComparison

NAME_LIMIT = 16


def delta_text(row: ComparisonRow, too_few: bool) -> Text:
    if too_few and row.worse_when_up is not None:
        return Text("too few calls", style="dim")
    delta = row.delta
    if delta is None:
        if row.a == 0 and row.b:
            return Text("▲ from 0", style="red" if row.worse_when_up else "")
        return Text("–", style="dim")
    if abs(delta) < 0.005:
        return Text("±0%", style="dim")
    arrow = "▲" if delta > 0 else "▼"
    style = ""
    if row.worse_when_up is not None:
        style = "red" if (delta > 0) == row.worse_when_up else "green"
    return Text(f"{arrow}{abs(delta) * 100:,.0f}%", style=style)


def comparison_table(comparison: VariantComparison) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 1), show_edge=False, expand=False)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column(fmt.safe(comparison.a, limit=NAME_LIMIT), justify="right", no_wrap=True)
    table.add_column(fmt.safe(comparison.b, limit=NAME_LIMIT), justify="right", no_wrap=True)
    table.add_column("Δ B vs A", justify="right", no_wrap=True)
    for row in comparison.rows:
        table.add_row(Text(row.label), Text(row.format(row.a)), Text(row.format(row.b)),
                      delta_text(row, comparison.too_few))
    return table


class VariantComparisonPanel(Static):
    DEFAULT_CSS = """
    VariantComparisonPanel { width: auto; min-width: 40; height: 1fr; border: round $panel-lighten-2;
                             padding: 0 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "variants"

    def show(self, comparison: VariantComparison | None, pinned: str | None = None) -> None:
        if comparison is None:
            self.border_subtitle = ""
            self.update(Text("Fewer than two variants have calls in this window: nothing to compare.",
                             style="dim"))
            return
        # Border titles are parsed as markup: the untrusted variant names go in the table's header only.
        self.border_title = "variants: A vs B"
        note = f"fewer than {comparison.min_calls} calls on a side" if comparison.too_few else (
            "c: A = the selected variant" if pinned is None else "c on A: unpin")
        self.border_subtitle = note
        self.update(comparison_table(comparison))
