"""KeyedTable's bulk row removal and append (DataTable's private state, written directly) against
the same syncs done through DataTable's public remove_row / add_row: the same rows, cells, cursor,
column widths and drawn lines after every step of random refreshes."""

from __future__ import annotations

import functools
import random

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.widgets import DataTable

from llmobs_tui.widgets.keyed_table import KeyedTable

COLUMNS = ("start", "trace", "root", "tokens", "status")


class PublicApiTable(KeyedTable):
    """The reference: every row removed and added one at a time through DataTable's own methods."""

    def _remove_rows(self, keys) -> None:
        for key in keys:
            self.remove_row(key)
            self._cells.pop(key, None)

    def _append_rows(self, rows) -> None:
        for key, cells in rows:
            self.add_row(*cells, key=key)
            self._cells[key] = tuple(cells)


class Tables(App):
    CSS = "Tables.alarm KeyedTable > .datatable--cursor { background: red; }"

    def compose(self) -> ComposeResult:
        yield KeyedTable(id="bulk")
        yield PublicApiTable(id="reference")

    def on_mount(self) -> None:
        for table in self.query(KeyedTable):
            for label in COLUMNS:
                table.add_column(label, key=label)


def _row(rng: random.Random, key: int) -> tuple[str, tuple]:
    status = rng.choice([Text("ok", style="green"), Text("api 2", style="bold red")])
    return (f"k{key}", (Text(f"12:00:{key % 60:02d}"), Text(f"{key:08x}", style="dim"),
                        Text("agent " + "x" * rng.randint(0, 30)), Text(str(rng.randint(0, 99_999))), status))


def _drawn(table: KeyedTable) -> list[str]:
    table._styles_cache.clear()
    return [strip.text for strip in table.render_lines(Region(0, 0, table.size.width, table.size.height))]


def _state(table: KeyedTable) -> tuple:
    keys = table.keys()
    return (keys, [tuple(table.get_row(key)) for key in keys], table.cursor_coordinate,
            table.cursor_key, [c.content_width for c in table.ordered_columns], table.row_count)


@pytest.mark.anyio
async def test_bulk_sync_matches_the_public_api_step_by_step() -> None:
    rng = random.Random(7)
    app = Tables()
    async with app.run_test(size=(120, 40)) as pilot:
        bulk = app.query_one("#bulk", KeyedTable)
        reference = app.query_one("#reference", PublicApiTable)
        newest = 0
        shown: list[tuple[str, tuple]] = []
        for step in range(40):
            kind = rng.choice(["new on top", "stale at bottom", "some gone", "cells change", "all new", "empty"])
            if kind == "new on top":  # a newest-first list with ingest running: a new order
                fresh = [_row(rng, newest + i) for i in range(rng.randint(1, 30))]
                newest += len(fresh)
                shown = (fresh[::-1] + shown)[:200]
            elif kind == "stale at bottom" and shown:  # rows fall out of the window
                shown = shown[:rng.randint(0, len(shown))]
            elif kind == "some gone" and shown:  # rows leave from anywhere, new ones append
                shown = [r for r in shown if rng.random() < 0.6] + [_row(rng, newest + i) for i in range(5)]
                newest += 5
            elif kind == "cells change":
                shown = [(key, _row(rng, int(key[1:]))[1]) for key, _ in shown]
            elif kind == "all new":
                shown = [_row(rng, newest + i) for i in range(rng.randint(50, 250))]
                newest += len(shown)
            elif kind == "empty":
                shown = []
            reorder = rng.random() < 0.8
            if bulk.row_count:
                row = rng.randrange(bulk.row_count)
                for table in (bulk, reference):
                    table.move_cursor(row=row, animate=False)
            held = [table.sync([(k, tuple(c.copy() for c in cells)) for k, cells in shown], reorder=reorder)
                    for table in (bulk, reference)]
            await pilot.pause()
            assert held[0] == held[1], (step, kind)
            assert _state(bulk) == _state(reference), (step, kind)
            assert _drawn(bulk) == _drawn(reference), (step, kind)


@pytest.mark.anyio
async def test_removing_every_row_then_adding_highlights_the_first_row_again() -> None:
    app = Tables()
    highlighted: list[str] = []
    async with app.run_test(size=(120, 40)) as pilot:
        bulk = app.query_one("#bulk", KeyedTable)
        app.on_data_table_row_highlighted = lambda event: highlighted.append(str(event.row_key.value))  # type: ignore[attr-defined]
        rng = random.Random(1)
        bulk.sync([_row(rng, i) for i in range(10)])
        await pilot.pause()
        bulk.sync([])
        await pilot.pause()
        assert bulk.row_count == 0 and bulk.cursor_key is None
        bulk.sync([_row(rng, i) for i in range(100, 103)])
        await pilot.pause()
        assert bulk.keys() == ["k100", "k101", "k102"]
        assert bulk.cursor_key == "k100"


@pytest.mark.anyio
async def test_a_paused_list_whose_rows_all_left_shows_the_new_ones_instead_of_nothing() -> None:
    rng = random.Random(3)
    app = Tables()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one("#bulk", KeyedTable)
        table.sync([_row(rng, i) for i in range(20)])
        await pilot.pause()
        # Paused (reorder=False): rows still shown stay, new ones are held back...
        assert table.sync([_row(rng, i) for i in range(10, 30)], reorder=False) == 10
        assert table.keys() == [f"k{i}" for i in range(10, 20)]
        # ...but once none of them is in the list any more, an empty table would say nothing.
        assert table.sync([_row(rng, i) for i in range(100, 120)], reorder=False) == 0
        await pilot.pause()
        assert table.keys() == [f"k{i}" for i in range(100, 120)]



def _segments(table: KeyedTable) -> list[list]:
    """Every drawn line's segments: text, colours and the meta a mouse click reads (row, column)."""
    table._styles_cache.clear()
    table._line_cache.clear()
    return [list(strip) for strip in table.render_lines(Region(0, 0, table.size.width, table.size.height))]


@pytest.mark.anyio
async def test_kept_cells_draw_what_datatable_draws_and_only_changed_cells_render_again(monkeypatch) -> None:
    rendered = [0]  # cells rendered anew: by KeyedTable (a miss of its kept cells), or by DataTable
    original, direct = DataTable._render_cell, KeyedTable._render_text_cell

    def counting(self, row_index, *args, **kwargs):
        rendered[0] += row_index >= 0 and self.id == "bulk"
        return original(self, row_index, *args, **kwargs)

    def counting_direct(self, *args, **kwargs):
        lines = direct(self, *args, **kwargs)
        rendered[0] += lines is not None and self.id == "bulk"
        return lines

    monkeypatch.setattr(DataTable, "_render_cell", counting)
    monkeypatch.setattr(KeyedTable, "_render_text_cell", counting_direct)
    rng = random.Random(11)
    app = Tables()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one("#bulk", KeyedTable)
        # The same cell objects from step to step for unchanged rows, as RowCells hands them back.
        shown = [_row(rng, i) for i in range(30)][::-1]
        newest = 30
        for step in range(16):
            kind = ("first", "new on top", "one cell", "cursor", "theme", "cursor colour")[min(step, 1 + (step - 1) % 5)]
            if kind == "new on top":  # every row below moves down one: its cells are restamped, not rendered
                shown = [_row(rng, newest), *shown]
                newest += 1
            elif kind == "one cell":
                key, cells = shown[5]
                shown[5] = (key, (*cells[:3], Text(str(rng.randint(100_000, 999_999))), cells[4]))
            elif kind == "cursor":
                table.move_cursor(row=rng.randrange(10), animate=False)
            elif kind == "theme":
                app.theme = "textual-light" if app.theme != "textual-light" else "textual-dark"
            elif kind == "cursor colour":  # a component style alone: the table's own style is the same
                app.toggle_class("alarm")
            rendered[0] = 0
            table.sync(shown)
            await pilot.pause()  # the screen drawn
            drawn = _segments(table)
            cells_drawn = rendered[0]
            kept = table._kept_cells
            table._clear_caches()  # DataTable's own caches and the kept cells: everything rendered anew,
            table._render_cell = functools.partial(counting, table)  # by DataTable itself
            assert drawn == _segments(table), (step, kind)
            del table._render_cell
            table._kept_cells = kept  # as the next refresh finds them
            every_cell = rendered[0] - cells_drawn
            assert every_cell == min(len(shown), table.size.height - 1) * len(COLUMNS)
            if kind in ("first", "theme", "cursor colour"):
                assert cells_drawn == every_cell, (step, kind)
            else:  # the new row, the changed cell, the rows the cursor (or the mouse) left and reached
                assert cells_drawn <= 3 * len(COLUMNS), (step, kind, cells_drawn)


def _random_text(rng: random.Random) -> Text:
    words = ["ok", "api 2", "checkout-api", "POST /v1/agent", "模型", "🙂 emoji", "", " lead", "trail ", "a" * 40,
             "tab\tbed", "two\nlines"]
    text = Text(rng.choice(words) + rng.choice(["", " ", "x", "全角"]),
                style=rng.choice(["", "dim", "bold red", "italic", "on blue", "link https://x.test"]),
                justify=rng.choice([None, None, None, "default", "left", "right", "center"]),
                end=rng.choice(["\n", "\n", ""]))
    if text.plain and rng.random() < 0.5:
        start = rng.randrange(len(text.plain))
        text.stylize(rng.choice(["green", "bold", "underline yellow"]), start, rng.randint(start, len(text.plain)))
    return text


@pytest.mark.anyio
async def test_text_cells_built_directly_equal_datatables_on_random_cells() -> None:
    """_render_text_cell against DataTable's _render_cell: random texts (styles, spans, links, wide
    characters, justified, too wide), widths, cursor and hover, the cursor shown or not."""
    rng = random.Random(5)
    app = Tables()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one("#bulk", KeyedTable)
        compared = built = 0
        for round_ in range(8):
            rows = [(f"r{round_}-{i}", tuple(_random_text(rng) for _ in COLUMNS)) for i in range(12)]
            table.reset()
            table.sync(rows)
            table.show_cursor = round_ % 3 != 0
            table._show_hover_cursor = round_ % 2 == 0
            await pilot.pause()
            base = table.rich_style
            for row_index in range(len(rows)):
                for column_index in range(len(COLUMNS)):
                    width = rng.randint(1, 30)
                    cursor, hover = rng.random() < 0.3, rng.random() < 0.3
                    row_key = table._row_locations.get_key(row_index)
                    direct = table._render_text_cell(row_key, row_index, column_index, base, width, cursor, hover)
                    table._clear_caches()
                    reference = DataTable._render_cell(table, row_index, column_index, base, width, cursor, hover)
                    compared += 1
                    if direct is not None:
                        built += 1
                        assert direct == reference, (rows[row_index][1][column_index], width, cursor, hover)
        assert built > compared // 4  # the direct path is taken, not skipped


@pytest.mark.anyio
async def test_new_columns_on_a_paused_list_bring_back_the_rows_it_showed() -> None:
    """A resize that changes the layout replaces the columns (reset(columns=True)): a paused list
    (reorder=False) showed nothing after it, every row held back as new."""
    rng = random.Random(4)
    app = Tables()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one("#bulk", KeyedTable)
        table.sync([_row(rng, i) for i in range(20)])
        table.move_cursor(row=8, animate=False)
        await pilot.pause()
        reading = table.cursor_key
        assert reading == "k8"
        table.reset(columns=True)
        for label in COLUMNS[:3]:  # the narrow layout
            table.add_column(label, key=label)
        newer = [(key, cells[:3]) for key, cells in [_row(rng, i) for i in range(5, 30)]]
        assert table.sync(newer, reorder=False) == 10  # k20..k29 held back, as before the resize
        assert table.keys() == [f"k{i}" for i in range(5, 20)]
        assert table.cursor_key == reading
        # An empty paused list (its rows filtered away) shows what comes rather than nothing.
        table.reset()
        assert table.sync(newer, reorder=False) == 0 and table.row_count == len(newer)
