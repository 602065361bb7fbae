"""Drawing a 500-row list after a live refresh: KeyedTable's cells (kept across updates, one-line Text
drawn directly) against DataTable's own (its cache cleared at every update, each cell through Rich's
Styled and Padding), in the same run, CPU ms per refresh at 160×48.

    python -m bench.table_render
    python -m bench.table_render --refreshes 60

Three kinds of refresh, as the trace list sees them: one cell of a visible row changed (a late span
adds tokens), one new trace on top (every visible row moves down one: its cells keep their look and
only the row index in their mouse meta changes), and every visible row new (ingest at hundreds of
traces a second, newest first: nothing to keep). Each refresh is drawn in full once, timed with
time.process_time; the cells handed to `sync` are the same objects for unchanged rows, as RowCells
hands them back.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from rich.text import Text
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.widgets import DataTable

from llmobs_tui.widgets.keyed_table import KeyedTable

COLUMNS = ("start", "trace", "service", "root", "duration", "calls", "tokens", "cost", "status")


class DataTableCells(KeyedTable):
    """KeyedTable with DataTable's own cell rendering: the reference."""

    def _render_cell(self, *args, **kwargs):
        return DataTable._render_cell(self, *args, **kwargs)


class Lists(App):
    def __init__(self, table_class: type[KeyedTable]) -> None:
        super().__init__()
        self.table_class = table_class

    def compose(self) -> ComposeResult:
        yield self.table_class()

    def on_mount(self) -> None:
        table = self.query_one(KeyedTable)
        for label in COLUMNS:
            table.add_column(label, key=label)


def _row(rng: random.Random, n: int) -> tuple[str, tuple[Text, ...]]:
    return (f"{n:016x}", (
        Text(f"12:{n // 60 % 60:02d}:{n % 60:02d}"), Text(f"{n:08x}", style="dim"), Text("checkout-api"),
        Text("POST /v1/agent " + "plan " * rng.randint(0, 6)), Text(f"{rng.random() * 9:.2f}s"),
        Text(str(rng.randint(1, 9))), Text(f"{rng.randint(1, 99_999):,}"), Text(f"${rng.random():.4f}"),
        Text("ok", style="green") if rng.random() < 0.9 else Text("api 1", style="bold red"),
    ))


async def measure(table_class: type[KeyedTable], kind: str, refreshes: int) -> float:
    """Median CPU ms to draw the whole table after one refresh of this kind."""
    rng = random.Random(1)
    app = Lists(table_class)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one(KeyedTable)
        rows = [_row(rng, n) for n in range(500)][::-1]
        newest = 500
        table.sync(rows)
        await pilot.pause()
        cpu: list[float] = []
        for _ in range(refreshes):
            if kind == "one cell":
                key, cells = rows[7]
                rows[7] = (key, (*cells[:6], Text(f"{rng.randint(1, 99_999):,}"), *cells[7:]))
            elif kind == "one new row":
                rows = [_row(rng, newest), *rows[:499]]
                newest += 1
            else:
                rows = [_row(rng, newest + i) for i in range(60)][::-1] + rows[:440]
                newest += 60
            table.sync(rows)
            table._update_dimensions([])  # what the idle handler does before the next draw
            started = time.process_time()
            table.render_lines(Region(0, 0, table.size.width, table.size.height))
            cpu.append(time.process_time() - started)
            await pilot.pause()
    return statistics.median(cpu) * 1000


async def main_async(refreshes: int) -> None:
    print(f"CPU ms to draw a 500-row list at 160x48 after a refresh (median of {refreshes}):")
    print(f"{'refresh':<16}{'DataTable cells':>17}{'KeyedTable cells':>18}")
    for kind in ("one cell", "one new row", "all visible new"):
        reference = await measure(DataTableCells, kind, refreshes)
        kept = await measure(KeyedTable, kind, refreshes)
        print(f"{kind:<16}{reference:>17.1f}{kept:>18.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refreshes", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main_async(args.refreshes))


if __name__ == "__main__":
    main()
