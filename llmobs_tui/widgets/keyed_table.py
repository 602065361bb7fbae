"""A DataTable that is updated by key, so that a refresh never moves the user's cursor."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import RenderableType
from rich.segment import Segment
from rich.style import Style
from rich.text import Text, TextType
from textual._two_way_dict import TwoWayDict
from textual.cache import LRUCache
from textual.widgets import DataTable
from textual.widgets.data_table import CellKey, DuplicateKey, Row, RowKey

from llmobs_tui import format as fmt

_NULL_STYLE = Style.null()  # what Rich's Padding styles its spaces with ("none")
_JOIN = Text("\n")
KEPT_CELLS = 4096  # rendered cells kept (a 48-row screen of 12 columns shows ~580)


class KeyedTable(DataTable):
    """`sync(rows)` diffs by row key: changed cells are updated in place, stale rows removed, and
    when the order itself changes the table is rebuilt with the cursor kept on the same row key
    and at the same height on screen."""

    # As wide as the screen (a table sized to its columns left its scrollbar mid-screen as stray
    # ▂▂ glyphs), and no vertical scrollbar: the cursor row is the position, and at 80 columns the
    # bar was a blue strip taking two of them. The horizontal one shows only when columns overflow.
    DEFAULT_CSS = """
    KeyedTable { height: 1fr; width: 1fr; scrollbar-size-vertical: 0; overflow-x: auto; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._cells: dict[str, tuple] = {}
        self._measured: set[RowKey] = set()  # new rows whose widths add_row took (see add_row)
        self._source: tuple | None = None  # what the rows on show were built from (sync's source)
        self._shown_before_columns: tuple[list[str], str | None] | None = None  # see reset
        # Rendered cells kept across updates (see _render_cell): {cell's place and look: (value, row index, lines)}.
        self._kept_cells: LRUCache[tuple, tuple[Any, int, list[list[Segment]]]] = LRUCache(KEPT_CELLS)

    def reset(self, *, columns: bool = False) -> None:
        """Remove every row (and with columns=True every column) and forget the shown cells. The
        rendered cells are kept when the columns are: a rebuild shows most of the same values again."""
        kept = self._kept_cells
        # New columns (a resize changed the layout) show the same rows: a paused list keeps them (_sync).
        self._shown_before_columns = (self.keys(), self.cursor_key) if columns and self.row_count else None
        self.clear(columns=columns)
        if not columns:
            self._kept_cells = kept
        self._cells.clear()
        self._source = None

    def _clear_caches(self) -> None:
        # DataTable calls this when what a cell looks like may change (the cursor shown or not, padding,
        # fixed rows, a clear): the kept cells go too.
        super()._clear_caches()
        self._kept_cells = LRUCache(KEPT_CELLS)

    def notify_style_update(self) -> None:
        super().notify_style_update()  # a new theme or class: every cell's colours
        self._kept_cells = LRUCache(KEPT_CELLS)

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> list[list[Segment]]:
        """DataTable's _render_cell, with the result kept for as long as the cell holds the same value.

        DataTable keys its rendered cells on a count of the table's updates, and clears them all at
        each update: with ingest running, one changed or new row in a list made every visible cell
        render again through Rich (the largest part of drawing a 48-row list). Kept here, keyed on the
        cell's row and column keys and everything DataTable's own key holds but that count, and valid
        while the cell's value is the same object (an update replaces it; RowCells hands back the same
        cells for an unchanged row). A row that moved (new rows above it) only has the row index in
        its segments' meta (what a mouse click reads) restamped. Header and label cells, and tables
        with fixed rows or columns (whose look depends on the index), go to DataTable as before."""
        if row_index < 0 or column_index < 0 or self.fixed_rows or self.fixed_columns:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        row = self._data.get(row_key) if row_key is not None else None
        if row is None or column_key is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        value = row.get(column_key)
        key = (row_key, column_key, column_index, base_style, width, cursor, hover, self._show_hover_cursor,
               self._pseudo_class_state, self.show_cursor, self.rows[row_key].height)
        kept = self._kept_cells.get(key)
        if kept is not None and kept[0] is value:
            if kept[1] == row_index:
                return kept[2]
            meta = Style.from_meta({"row": row_index, "column": column_index})
            lines = [[Segment(text, style + meta if style is not None else meta, control)
                      for text, style, control in line] for line in kept[2]]
        else:
            lines = (self._render_text_cell(row_key, row_index, column_index, base_style, width, cursor, hover)
                     or super()._render_cell(row_index, column_index, base_style, width, cursor, hover))
        self._kept_cells.set(key, (value, row_index, lines))
        return lines

    def _render_text_cell(self, row_key: RowKey, row_index: int, column_index: int, base_style: Style,
                          width: int, cursor: bool, hover: bool) -> list[list[Segment]] | None:
        """What DataTable's _render_cell draws for a one-line Text that fits its column (most cells of
        every list), built directly: DataTable renders it through Rich's Styled, Padding and two passes
        of line splitting and cropping, several times the work for the same segments
        (tests/test_keyed_table.py compares them on random cells). None: anything else (several lines,
        tabs, a justified or overflowing text, a taller row), left to DataTable."""
        cell = self._get_row_renderables(row_index).cells[column_index]
        if type(cell) is not Text:
            return None
        plain = cell.plain
        padding = self.cell_padding
        inner = width - 2 * padding
        # (DataTable's console options set no justify: Textual is pinned exactly.)
        if (inner < 1 or "\n" in plain or "\t" in plain or cell.end not in ("\n", "")
                or cell.justify not in (None, "default") or self.rows[row_key].height != 1):
            return None
        text_width = cell_len(plain)
        if text_width > inner:
            return None
        component_style, post_style = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css")
        pre = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component_style
        # Padding's spaces and the fill after the text carry Padding's own (null) style.
        segments: list[Segment] = []
        if padding:
            segments.append(Segment(" " * padding, _NULL_STYLE))
        # Text.__rich_console__ renders the line joined into a new Text (its base style as a span).
        segments.extend(_JOIN.join([cell]).render(self.app.console))
        if inner > text_width:
            segments.append(Segment(" " * (inner - text_width), _NULL_STYLE))
        if padding:
            segments.append(Segment(" " * padding, _NULL_STYLE))
        # Segment.apply_style(segments, pre, post), as Styled does.
        styled = []
        for text, style, control in segments:
            if pre:
                style = pre + style
            if post_style:
                style = style + post_style if style else post_style
            styled.append(Segment(text, style, control))
        return [styled]

    def set_column_width(self, label: str, width: int) -> None:
        """Give the column labelled `label` a fixed width (it no longer sizes to its content)."""
        for column in self.ordered_columns:
            if str(column.label.plain) == label and (column.width != width or column.auto_width):
                column.width = width
                column.auto_width = False
                self._require_update_dimensions = True
                self.refresh()

    def fit_columns(self, rows: Sequence[tuple[str, Sequence[RenderableType]]], flex: str, *,
                    least: int, most: int) -> int:
        """Give every column a fixed width measured from `rows` and the labels, and the column
        labelled `flex` the room the others leave (between least and most); returns that width.

        The table's own sizing happens later, on idle, and only for rows it saw as new: a width
        read from it right after `sync` depended on whether a refresh had run in between, so the
        same rows drew differently. Measuring the rows handed to `sync` draws them the same way."""
        columns = list(self.ordered_columns)
        widths = [column.label.cell_len for column in columns]
        for _key, cells in rows:
            for index, cell in enumerate(cells[:len(columns)]):
                width = cell.cell_len if isinstance(cell, Text) else len(str(cell))
                widths[index] = max(widths[index], width)
        labels = [str(column.label.plain) for column in columns]
        padding = 2 * self.cell_padding
        others = sum(w + padding for label, w in zip(labels, widths) if label != flex)
        flex_width = most if not self.size.width else max(least, min(most, self.size.width - others - padding))
        for label, width in zip(labels, widths):
            self.set_column_width(label, flex_width if label == flex else width)
        return flex_width

    def add_row(self, *cells: RenderableType, height: int | None = 1, key: str | None = None,
                label: TextType | None = None) -> RowKey:
        """DataTable's add_row, with the row's auto-width columns grown here, from the cells' text.
        DataTable measures every cell of every new row later, on idle, through Rich (a console
        measure each); with ingest running most of a 500-row list is new every second, and that
        measure was 100–180 ms of the UI thread per refresh, in front of any key pressed meanwhile.
        A one-line Text measures as its longest line's cell length: the same width, a fraction of
        the cost. Other rows (several lines, a label, other renderables) are left to DataTable."""
        row_key = super().add_row(*cells, height=height, key=key, label=label)
        if height == 1 and label is None and all(isinstance(cell, Text) for cell in cells):
            for column, cell in zip(self.ordered_columns, cells):
                if column.auto_width:
                    lines = cell.plain.splitlines()  # type: ignore[union-attr]
                    column.content_width = max([column.content_width, *(cell_len(line) for line in lines)])
            self._measured.add(row_key)
        return row_key

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        measured = self._measured
        super()._update_dimensions([key for key in new_rows if key not in measured])
        measured.clear()

    def keys(self) -> list[str]:
        return [str(row.key.value) for row in self.ordered_rows]

    @property
    def cursor_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except Exception:
            return None

    def holds(self, source: object) -> bool:
        """Whether the rows on show were built from `source` (compared by value, as given to `sync`) at
        this width, and nothing changed them since: the live loop's refresh of a quiet store brings the
        same data every second, and building 500 rows of cells to diff them cost 15-25 ms each time."""
        return self._source is not None and self._source == (source, self.size.width, self.row_count)

    def sync(self, rows: Sequence[tuple[str, Sequence[RenderableType]]], *, reorder: bool = True,
             source: object = None) -> int:
        """Show `rows` (key, cells). With reorder=False, rows not yet shown are held back (the
        user is reading); returns how many were held back. `source`: what the rows were built from
        (everything they depend on but the table's width), for `holds`.

        A cell given as a str is shown literally: DataTable itself would parse it as markup."""
        held = self._sync(rows, reorder)
        self._source = None if source is None else (source, self.size.width, self.row_count)
        return held

    def _sync(self, rows: Sequence[tuple[str, Sequence[RenderableType]]], reorder: bool) -> int:
        rows = [(key, tuple(fmt.safe(c) if isinstance(c, str) else c for c in cells)) for key, cells in rows]
        desired = [key for key, _ in rows]
        desired_set = set(desired)
        current = self.keys()
        current_set = set(current)
        before_columns, self._shown_before_columns = self._shown_before_columns, None
        if not reorder and not current and before_columns is not None:
            # Paused, and the columns were just replaced (a resize): the rows shown before come back,
            # with the cursor on the same row; the others stay held back.
            shown_before = set(before_columns[0])
            kept = [(key, cells) for key, cells in rows if key in shown_before]
            if kept:
                self._append_rows(kept)
                if before_columns[1] in self._cells:
                    self.move_cursor(row=self.get_row_index(before_columns[1]), animate=False)
                return len(rows) - len(kept)
        if not reorder and (not current or current_set.isdisjoint(desired_set)):
            # Nothing shown, or every row the user was reading has left (a newest-500 list moves on while
            # paused): holding the new ones back would leave the table empty, so show them; the caller
            # stays paused.
            reorder = True
        if reorder:
            surviving = [k for k in current if k in desired_set]
            if surviving != desired[:len(surviving)]:
                # A new order: rebuild at once. Removing the stale rows first, one remove_row each, costs
                # a pass over every row per removal (with ingest running, hundreds of rows a second).
                # The cursor lands where those removals would have left it: same index, clamped.
                index = min(self.cursor_row, len(surviving) - 1) if surviving else 0
                self._rebuild(rows, surviving[index] if index > 0 else None, index - int(self.scroll_y))
                return 0
        self._remove_rows(current_set - desired_set)
        if not reorder:
            held = 0
            for key, cells in rows:
                if key in current_set:
                    self._update(key, cells)
                else:
                    held += 1
            return held
        # Unchanged order: the surviving rows keep their relative order and new rows only append.
        appended = []
        for key, cells in rows:
            if key in current_set:
                self._update(key, cells)
            else:
                appended.append((key, cells))
        self._append_rows(appended)
        return 0

    def _update(self, key: str, cells: Sequence[RenderableType]) -> None:
        old = self._cells.get(key)
        cells = tuple(cells)
        if old == cells:
            return
        for column, (before, after) in enumerate(zip(old or (None,) * len(cells), cells)):
            if before != after:
                self.update_cell_at((self.get_row_index(key), column), after, update_width=False)
        self._cells[key] = cells

    def _rebuild(self, rows: Sequence[tuple[str, Sequence[RenderableType]]], cursor_key: str | None,
                 offset: int) -> None:
        """`cursor_key`: the row the cursor stays on, at `offset` rows below the top of the view;
        None: a cursor on the top row stays on top (following the newest)."""
        self.reset()
        self._append_rows(rows)
        if cursor_key is not None and cursor_key in self._cells:
            index = self.get_row_index(cursor_key)
            self.move_cursor(row=index, animate=False, scroll=False)
            self.scroll_to(y=max(0, index - offset), animate=False)

    def _remove_rows(self, keys: Iterable[str]) -> None:
        """DataTable.remove_row, for many rows at once. remove_row rebuilds the whole index of row
        positions for each row it removes: with ingest running, a list of 500 rows shedding 250 stale
        ones took 100 ms of the UI thread, this takes ~1 ms. Relies on DataTable's private state
        (Textual is pinned exactly; tests/test_keyed_table.py compares the result with remove_row's)."""
        gone = {RowKey(key) for key in keys}
        if not gone:
            return
        for row_key in gone:
            for column_key in self._data.pop(row_key):
                self._updated_cells.discard(CellKey(row_key, column_key))
            del self.rows[row_key]
            self._cells.pop(str(row_key.value), None)
        kept = sorted((index, row_key) for row_key, index in self._row_locations._forward.items()
                      if row_key not in gone)
        self._row_locations = TwoWayDict({row_key: new_index for new_index, (_old, row_key) in enumerate(kept)})
        self._require_update_dimensions = True
        self.check_idle()
        self.cursor_coordinate = self.cursor_coordinate  # clamped to the rows left, as remove_row does
        self.hover_coordinate = self.hover_coordinate
        self._update_count += 1
        self.refresh(layout=True)

    def _append_rows(self, rows: Sequence[tuple[str, Sequence[RenderableType]]]) -> None:
        """add_row for each of `rows`, with the per-row work DataTable repeats done once: it re-sorts
        the columns three times and re-validates the cursor for every row (a 500-row list: 41 → 9 ms).
        Rows that are not one line of Text each go through add_row."""
        if not all(len(cells) == len(self.columns) and all(isinstance(c, Text) for c in cells) for _k, cells in rows):
            for key, cells in rows:
                self.add_row(*cells, key=key)
                self._cells[key] = tuple(cells)
            return
        was_empty = self.row_count == 0
        columns = self.ordered_columns
        column_keys = [column.key for column in columns]
        widths = [column.content_width for column in columns]
        auto = [column.auto_width for column in columns]
        locations, data, table_rows, new_rows = self._row_locations, self._data, self.rows, self._new_rows
        for key, cells in rows:
            row_key = RowKey(key)
            if row_key in locations:
                raise DuplicateKey(f"The row key {row_key!r} already exists.")  # as add_row says it
            locations[row_key] = len(table_rows)
            data[row_key] = dict(zip(column_keys, cells))
            table_rows[row_key] = Row(row_key, 1, None, False)
            new_rows.add(row_key)
            self._measured.add(row_key)
            for index, cell in enumerate(cells):
                if auto[index]:
                    plain = cell.plain  # type: ignore[union-attr]
                    width = max(map(cell_len, plain.splitlines())) if "\n" in plain else cell_len(plain)
                    if width > widths[index]:
                        widths[index] = width
            self._cells[key] = tuple(cells)
        for column, width in zip(columns, widths):
            column.content_width = width
        self._require_update_dimensions = True
        self.cursor_coordinate = self.cursor_coordinate
        if was_empty and self.row_count and self.show_cursor and self.cursor_type != "none":
            self._highlight_cursor()
        self._update_count += 1
        self.check_idle()

    def row_key_at_cursor(self) -> RowKey | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key


class RowCells:
    """The cells of a list's rows, built again only for rows whose inputs changed since the last
    build. While ingest runs, a list of 500 traces or conversations is read again every second and a
    few of its rows are new or changed: formatting all 500 rows' cells each time took 10-12 ms of the
    UI thread (traces, week.db), in front of any key pressed meanwhile.

    `inputs` must hold everything a row's cells are made from (the row itself, the layout, what the
    clock or the column widths change); the cells given back are shared with the last build, so they
    must not be changed in place (copy a cell before truncating it). Only the last build's rows are
    kept: the memo is as large as the list on show."""

    def __init__(self) -> None:
        self._last: dict[Hashable, tuple] = {}
        self._this: dict[Hashable, tuple] = {}

    def cells(self, inputs: Hashable, build: Callable[..., tuple], *args: Any) -> tuple:
        """The last build's cells for these inputs, or build(*args)."""
        cells = self._last.get(inputs)
        if cells is None:
            cells = build(*args)
        self._this[inputs] = cells
        return cells

    def built(self) -> None:
        """This build's rows are the ones kept for the next."""
        self._last, self._this = self._this, {}
