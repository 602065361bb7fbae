"""The clock's refresh of a quiet store costs nothing it need not (llmobs_tui/widgets/quiet.py,
KeyedTable.holds): equal data is not laid out, rendered or turned into table rows again, and anything
that changes what a person would see still is: a new trace, a start time that turns 20 h old and is
shown with its date, a style of a line whose text stayed the same."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widget import Widget
from textual.widgets import Static

from llmobs_tui.app import LlmobsApp
from llmobs_tui.widgets import chart as chart_module
from llmobs_tui.widgets.keyed_table import KeyedTable
from llmobs_tui.widgets.quiet import set_border_subtitle, update_static
from tests.test_tui import _append_trace, settle, table_keys
from tests.tui_fixtures import FROZEN_NOW, build_store, trace_id_of, use_utc

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    use_utc()
    return build_store(tmp_path_factory.mktemp("quiet") / "tui.db")


def counting(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[object]:
    calls: list[object] = []
    original = getattr(cls, name)

    def counted(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, counted)
    return calls


def layouts(monkeypatch: pytest.MonkeyPatch) -> list[Widget]:
    """Every widget that asks for a layout pass of its screen."""
    asked: list[Widget] = []
    original = Widget.refresh

    def refresh(self, *regions, **kwargs):
        if kwargs.get("layout"):
            asked.append(self)
        return original(self, *regions, **kwargs)

    monkeypatch.setattr(Widget, "refresh", refresh)
    return asked


async def test_a_quiet_overview_is_not_laid_out_or_drawn_again(store: Path, monkeypatch) -> None:
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        drawn = counting(monkeypatch, chart_module.TimeChart, "render")
        asked = layouts(monkeypatch)
        await settle(pilot)  # the same clock, the same store: the same data
        assert drawn == [] and asked == [], (drawn, [type(w).__name__ for w in asked])


def growing(store: Path, tmp_path: Path) -> tuple[Path, list[float], LlmobsApp]:
    """A copy of the store to append traces to, the clock to move (now[0]) and the app over 24 h."""
    copy = tmp_path / "growing.db"
    shutil.copy(store, copy)
    now = [FROZEN_NOW]
    return copy, now, LlmobsApp(copy, clock=lambda: now[0], refresh_s=None, window_s=86400)


async def test_the_trace_list_is_rebuilt_only_when_what_it_shows_changes(store: Path, tmp_path: Path,
                                                                         monkeypatch) -> None:
    copy, now, app = growing(store, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        synced = counting(monkeypatch, KeyedTable, "_sync")
        await settle(pilot)
        assert synced == []  # the same traces: no rows built, nothing diffed
        _append_trace(copy)
        await settle(pilot)
        assert len(synced) == 1 and table_keys(app.screen)[0] == trace_id_of(950_000).hex()
        # Late enough that the traces of the hour before FROZEN_NOW turn 20 h old, not the newest:
        # their start is shown with its date from now on.
        table = app.screen.query_one(KeyedTable)
        oldest = table.get_row_at(table.row_count - 1)[0].plain
        now[0] = FROZEN_NOW + 20 * 3600 - 30 * 60
        await settle(pilot)
        assert len(synced) == 2
        assert ":" in oldest and "-" not in oldest
        assert "-" in table.get_row_at(table.row_count - 1)[0].plain  # MM-DD HH:MM
        assert "-" not in table.get_row_at(0)[0].plain


async def test_the_sessions_list_is_rebuilt_only_when_it_changes(store: Path, monkeypatch) -> None:
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None, window_s=86400)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("6")
        await settle(pilot)
        assert table_keys(app.screen)
        synced = counting(monkeypatch, KeyedTable, "_sync")
        await settle(pilot)
        assert synced == []
        await pilot.press("u")  # by user: other rows
        await settle(pilot)
        assert synced and app.screen.grouping == "user"


async def test_a_changed_conversation_is_the_only_row_built_again(store: Path, monkeypatch) -> None:
    """RowCells on the Sessions list: one conversation's figures change, its row alone is formatted
    again, and the table shows the new figure."""
    import dataclasses

    from llmobs_tui.screens.sessions import SessionsScreen

    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None, window_s=86400)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("6")
        await settle(pilot)
        screen = app.screen
        rows = list(screen.rows.values())
        assert len(rows) > 3
        built = counting(monkeypatch, SessionsScreen, "_conversation_cells")
        changed = dataclasses.replace(rows[1], turns=rows[1].turns + 1000)
        screen.show(("conversation", [rows[0], changed, *rows[2:]], FROZEN_NOW))
        await pilot.pause()
        assert len(built) == 1
        turns_at = screen._layout.index("turns")
        table = screen.query_one(KeyedTable)
        assert table.get_row(changed.conversation_id)[turns_at].plain == str(changed.turns)
        assert table.get_row(rows[2].conversation_id)[turns_at].plain == str(rows[2].turns)


class Two(App):
    def compose(self) -> ComposeResult:
        yield Static(id="line")
        yield Static("below", id="below")


async def test_update_static_skips_only_what_is_equal(monkeypatch) -> None:
    app = Two()
    async with app.run_test(size=(60, 10)) as pilot:
        line = app.query_one("#line", Static)
        refreshed = counting(monkeypatch, Static, "refresh")
        update_static(line, Text("12 calls", style="dim"))
        await pilot.pause()
        assert len(refreshed) == 1
        update_static(line, Text("12 calls", style="dim"))  # a new Text, equal: nothing
        update_static(line, Text("12 calls", style="dim"), layout=False)
        assert len(refreshed) == 1
        # Rich's Text == ignores the base style: a line that turns bold must still be shown bold.
        update_static(line, Text("12 calls", style="bold"))
        assert len(refreshed) == 2 and str(line.content.style) == "bold"
        text = Text("13 calls")
        update_static(line, text)
        text.append(" and more")  # the caller changes its Text afterwards: compared against what it showed
        update_static(line, Text("13 calls and more"))
        assert len(refreshed) == 4
        set_border_subtitle(line, "1 h")
        set_border_subtitle(line, "1 h")
        assert len(refreshed) == 5


class Sized(App):
    CSS = "#narrow { width: auto; } #tall { height: 3; }"

    def compose(self) -> ComposeResult:
        yield Static("12 calls", id="line")
        yield Static("12", id="narrow")
        yield Static("a", id="tall")
        yield Static("below", id="below")


async def test_new_content_lays_the_screen_out_only_when_it_changes_the_widgets_size() -> None:
    """update_static: a new text on as many lines repaints its widget and lays nothing out; a new text on
    more or fewer lines, or in a widget as wide as its content (width: auto), lays the screen out and
    moves what is below; a widget of a fixed height never does."""
    app = Sized()
    async with app.run_test(size=(40, 12)) as pilot:
        line, narrow, tall, below = (app.query_one(f"#{name}", Static) for name in ("line", "narrow", "tall", "below"))
        await pilot.pause()
        assert below.region.y == 5
        update_static(line, "13 calls")
        assert not line._layout_required and line._repaint_required
        update_static(tall, "b\nc\nd")
        assert not tall._layout_required
        update_static(narrow, "1300")  # as wide as its text: a layout
        assert narrow._layout_required
        await pilot.pause()
        update_static(line, "13 calls\nof which 2 failed")
        assert line._layout_required
        await pilot.pause()
        assert line.size.height == 2 and narrow.size.width == 4 and below.region.y == 6
        update_static(line, "a line of more than forty characters, so it wraps")  # still two lines
        assert not line._layout_required
        update_static(line, "one line")
        await pilot.pause()
        assert line.size.height == 1 and below.region.y == 5
        assert str(line.render()) == "one line"


async def test_a_screen_shown_again_is_restyled_only_when_the_apps_styles_changed(store: Path,
                                                                                   monkeypatch) -> None:
    """LiveScreen.on_screen_resume: Textual restyles a whole screen each time it is shown again; ours
    skip that unless the theme or the app's classes or pseudo-classes changed while it was hidden,
    and a change of theme made while a screen was hidden still reaches it."""
    from textual.css.stylesheet import Stylesheet

    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        overview = app.screen
        restyled = counting(monkeypatch, Stylesheet, "update_nodes")
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        assert app.screen is overview and restyled == []

        top = overview.query_one("TopBar")
        dark_background = top.styles.background
        await pilot.press("2")
        await settle(pilot)
        app.theme = "textual-light"  # while the Overview is hidden
        await settle(pilot)
        restyled.clear()
        await pilot.press("1")
        await settle(pilot)
        assert restyled, "the theme changed while the Overview was hidden: it must be restyled"
        assert top.styles.background != dark_background
        light_background = top.styles.background

        # A class of the app's (what a theme or an app's own CSS may select on), set while hidden.
        await pilot.press("2")
        await settle(pilot)
        app.add_class("-llmobs-test")
        await settle(pilot)
        restyled.clear()
        await pilot.press("1")
        await settle(pilot)
        assert restyled and top.styles.background == light_background


async def test_a_refresh_builds_cells_only_for_the_rows_that_changed(store: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    """RowCells: a new trace at the top of a 24 h list is the only row whose cells are made again;
    the root column is cut to the room there is on a copy, so widening the table again shows the
    whole name; a start that turns 20 h old is shown with its date (a new input, new cells)."""
    from llmobs_tui.screens.traces import TracesScreen

    copy, now, app = growing(store, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        table = app.screen.query_one(KeyedTable)
        rows_before = table.row_count
        assert rows_before > 20
        built = counting(monkeypatch, TracesScreen, "_cells_of")
        _append_trace(copy, root_name="POST /v2/assistants/support/threads/{id}:stream")
        await settle(pilot)
        assert table_keys(app.screen)[0] == trace_id_of(950_000).hex()
        assert table.row_count == min(500, rows_before + 1) and len(built) == 1

        def roots() -> dict[str, str]:
            at = app.screen._layout.index("root")
            return {key: table.get_row(key)[at].plain for key in table_keys(app.screen)}

        wide = roots()
        assert wide[trace_id_of(950_000).hex()].endswith(":stream")
        for narrower in (112, 80):  # the same columns with less room; the 80-column layout
            await pilot.resize_terminal(narrower, 40)
            await settle(pilot)
            assert roots()[trace_id_of(950_000).hex()].endswith("…"), narrower
            await pilot.resize_terminal(160, 48)
            await settle(pilot)
            assert roots() == wide

        built.clear()
        now[0] = FROZEN_NOW + 20 * 3600 - 30 * 60  # the oldest hour's starts turn 20 h old
        await settle(pilot)
        starts = [table.get_row_at(i)[0].plain for i in range(table.row_count)]
        assert built and "-" in starts[-1] and "-" not in starts[0]
        assert len(built) < table.row_count  # the others' cells were kept
