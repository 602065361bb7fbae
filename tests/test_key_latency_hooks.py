"""What makes a key answer quickly while ingest runs (bench/tui_keys.py measures it): the shown hook
the benchmark times, a key that supersedes a refresh still reading for the old screen, the paint
held until the new screen's data is shown, a reader whose read was cancelled midway, the trace
list's cheap widths and rebuild, the footer that is not rebuilt on every switch, and the screens
composed before their first key. Driven through Textual's Pilot on a real store written by the real
normalizer and writer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from rich.text import Text
from textual import events
from textual._compositor import ChopsUpdate, LayoutUpdate
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from llmobs_tui import app as app_module
from llmobs_tui.app import PAINT_HOLD_S, WARM_ORDER, LlmobsApp
from llmobs_tui.filtering import Filter
from llmobs_tui.reader import StoreReader
from llmobs_tui.screens import base
from llmobs_tui.screens.overview import OverviewScreen
from llmobs_tui.screens.traces import TracesScreen
from llmobs_tui.widgets.chrome import KeysFooter
from llmobs_tui.widgets.keyed_table import KeyedTable
from store.connection import open_reader
from store.dashboards import Query
from tests.tui_fixtures import FROZEN_NOW, build_store, use_utc

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    use_utc()
    return build_store(tmp_path_factory.mktemp("keys") / "keys.db", minutes=15, traces_per_minute=6)


def live_app(store: Path) -> tuple[LlmobsApp, list[tuple[str, float]]]:
    """The app with its live loop on (a tick every 60 s, so that only keys refresh it), and the
    (screen, load started) pairs its shown hook reported."""
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=60.0)
    shown: list[tuple[str, float]] = []
    app.shown_hook = lambda screen, started: shown.append((screen.NAME, started))
    return app, shown


async def wait_for(pilot, condition, rounds: int = 400) -> bool:
    for _ in range(rounds):
        if condition():
            return True
        await pilot.pause(0.02)
    return condition()


def _composed(app: LlmobsApp) -> set[str]:
    return {name for name in WARM_ORDER if app.get_screen(name).is_running}


async def warmed(pilot, app: LlmobsApp) -> bool:
    """Wait until every screen has been composed ahead of its first key (LlmobsApp.warm_screens), and
    what composing them asked for after a refresh (their footers) has run."""
    done = await wait_for(pilot, app.screens_warmed.is_set)
    await pilot.pause(0.2)
    return done and _composed(app) == set(WARM_ORDER)


async def test_a_key_shows_the_new_screen_through_the_hook_with_the_stores_rows(store: Path) -> None:
    app, shown = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        assert await wait_for(pilot, lambda: any(name == "overview" for name, _ in shown))
        pressed = time.perf_counter()
        await pilot.press("3")
        assert await wait_for(pilot, lambda: any(n == "traces" and t >= pressed for n, t in shown))
        keys = app.screen.query_one(KeyedTable).keys()
        assert await warmed(pilot, app)  # composing a screen holds a batch of its own for a moment
        assert app._batch_count == 0  # the paint held for the switch was released by the show
    db = open_reader(store)
    try:
        expected = [bytes(r[0]).hex() for r in db.execute(
            "SELECT trace_id FROM traces WHERE start_ns >= ? ORDER BY start_ns DESC LIMIT 500",
            (int((FROZEN_NOW - app.window_s) * 1e9),))]
    finally:
        db.close()
    assert expected and keys == expected


async def test_a_key_supersedes_a_refresh_still_reading_for_the_old_screen(store: Path) -> None:
    """The Overview's read never finishes; pressing 2 must still show the Breakdown (before, the
    key's refresh queued behind the stuck one forever), and the held paint must be let go."""
    app, shown = live_app(store)
    stuck = asyncio.Event()
    overview_load = OverviewScreen.load

    async def never(self, reader, now_s):
        stuck.set()
        await asyncio.Event().wait()
        return await overview_load(self, reader, now_s)

    OverviewScreen.load = never  # type: ignore[method-assign]
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            assert await wait_for(pilot, stuck.is_set)
            await pilot.press("2")
            assert await wait_for(pilot, lambda: any(name == "breakdown" for name, _ in shown))
            assert not any(name == "overview" for name, _ in shown)
            assert await warmed(pilot, app)
            assert app._batch_count == 0
            rows = app.screen.query_one(KeyedTable).row_count
    finally:
        OverviewScreen.load = overview_load  # type: ignore[method-assign]
    assert rows > 0


async def test_the_held_paint_is_let_go_when_the_new_screens_read_is_slow(store: Path) -> None:
    app, shown = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        assert await wait_for(pilot, lambda: bool(shown))
        assert await warmed(pilot, app)
        app._hold_paint()
        assert app._batch_count == 1
        await pilot.pause(PAINT_HOLD_S + 0.2)
        assert app._batch_count == 0


def record_painted_rows(app: LlmobsApp) -> dict[str, set[int]]:
    """The terminal rows each screen's updates repainted: Textual drops an update made during a batch
    (App._display), so only those made outside one count."""
    painted: dict[str, set[int]] = {}
    display = app._display

    def recording(screen, renderable) -> None:
        if renderable is not None and not app._batch_count:
            rows = painted.setdefault(getattr(screen, "NAME", type(screen).__name__), set())
            if isinstance(renderable, LayoutUpdate):
                rows.update(range(renderable.region.y, renderable.region.bottom))
            elif isinstance(renderable, ChopsUpdate):
                rows.update(y for y, _x1, _x2 in renderable.spans)
        display(screen, renderable)

    app._display = recording  # type: ignore[method-assign]
    return painted


@pytest.mark.parametrize("keys", ["3", "313", "353"])
async def test_a_screen_switched_to_is_painted_whole_when_its_rows_have_not_changed(store: Path, keys: str) -> None:
    """A quiet store (nothing ingested, the clock still): the trace list a key switches to shows the rows it
    showed already, so its show() changes no widget. The switch's own paint fell in the held batch, whose
    updates Textual drops, and nothing woke the screen after it, so the terminal kept the old screen whole
    until a later change (found in tmux: `3` on an idle store did nothing; a second `3` or a resize showed
    the list). Every row of the terminal is painted after a switch, once (bench: one full update a key)."""
    app, shown = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        assert await wait_for(pilot, lambda: any(name == "overview" for name, _ in shown))
        assert await warmed(pilot, app)
        painted = record_painted_rows(app)
        for key in keys:
            painted.clear()
            pressed = time.perf_counter()
            # The key as the terminal's driver sends it, and waited for without Pilot's press and pause: they
            # post to every widget of the screen after the key, which wakes it (a terminal does no such thing).
            app.post_message(events.Key(key, key))
            name = {"1": "overview", "3": "traces", "5": "alerts"}[key]
            for _ in range(500):  # up to 10 s: a loaded CI machine
                if any(n == name and t >= pressed for n, t in shown) and painted.get(name) == set(range(48)):
                    break
                await asyncio.sleep(0.02)
            assert app._batch_count == 0
            assert painted.get(name) == set(range(48)), (key, sorted(painted.get(name, ())))


async def test_a_read_cancelled_midway_leaves_the_reader_usable(store: Path) -> None:
    reader = StoreReader(store)
    await reader.open()
    try:
        slow = Query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000000) "
                     "SELECT count(*) FROM c", ())
        task = asyncio.create_task(reader._snapshot({"slow": slow}))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        newest = await reader.newest_span_id()
        rows = await reader.traces(900, FROZEN_NOW, Filter(), "start", True)
    finally:
        await reader.close()
    db = open_reader(store)
    try:
        assert newest == db.execute("SELECT max(id) FROM spans").fetchone()[0]
        assert [r.trace_id for r in rows] == [bytes(r[0]) for r in db.execute(
            "SELECT trace_id FROM traces WHERE start_ns >= ? ORDER BY start_ns DESC LIMIT 500",
            (int((FROZEN_NOW - 900) * 1e9),))]
    finally:
        db.close()


class Tables(App):
    def compose(self) -> ComposeResult:
        yield KeyedTable(id="keyed")
        yield DataTable(id="plain")


ROWS = [(f"r{i}", (Text("x" * (i % 7)), Text(f"name {i} " + "é" * (i % 3)), Text("tall\nlonger line" if i == 4 else ""),
                   Text("日本" * (i % 2))))
        for i in range(12)]


async def test_the_tables_own_widths_are_those_datatable_measures() -> None:
    async with Tables().run_test(size=(160, 30)) as pilot:
        keyed, plain = pilot.app.query_one(KeyedTable), pilot.app.query_one("#plain", DataTable)
        for table in (keyed, plain):
            for label in ("a", "b", "c", "d"):
                table.add_column(label)
        keyed.sync(ROWS)
        for key, cells in ROWS:
            plain.add_row(*cells, key=key)
        await pilot.pause()
        await pilot.pause()
        assert [c.get_render_width(keyed) for c in keyed.ordered_columns] == \
            [c.get_render_width(plain) for c in plain.ordered_columns]


async def test_a_rebuild_keeps_the_cursor_where_removing_the_stale_rows_left_it() -> None:
    """Rows a…j, the cursor on d (index 3); b leaves and x arrives on top. Removing b first kept the
    cursor at index 3 (now e), and the rebuild kept it on e: the one-pass rebuild must agree."""
    async with Tables().run_test(size=(160, 30)) as pilot:
        table = pilot.app.query_one(KeyedTable)
        table.add_column("name")
        names = list("abcdefghij")
        table.sync([(k, (Text(k),)) for k in names])
        await pilot.pause()
        table.move_cursor(row=3)
        assert table.cursor_key == "d"
        table.sync([(k, (Text(k),)) for k in ["x", *[n for n in names if n != "b"]]])
        await pilot.pause()
        assert table.keys() == ["x", "a", "c", "d", "e", "f", "g", "h", "i", "j"]
        assert table.cursor_key == "e"


async def test_the_footer_is_rebuilt_only_when_its_keys_change(store: Path, monkeypatch) -> None:
    rebuilt: list[str] = []
    recompose = KeysFooter.recompose

    async def counted(self):
        rebuilt.append(self.screen.NAME)
        return await recompose(self)

    monkeypatch.setattr(KeysFooter, "recompose", counted)
    app, _shown = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        assert await warmed(pilot, app)  # each screen composed ahead builds its footer once
        for key in "1212":
            await pilot.press(key)
            await pilot.pause(0.1)
        first_visits = len(rebuilt)
        for key in "1212":
            await pilot.press(key)
            await pilot.pause(0.1)
        assert len(rebuilt) == first_visits  # the same keys as last time: nothing rebuilt
        labels = [k.key for k in app.screen.query_one(KeysFooter).query("FooterKey")]
        assert "g" in labels and "q" in labels  # Breakdown's own key and the app's, still shown
        built_ahead = rebuilt.count("traces")
        await pilot.press("3")
        await pilot.pause(0.3)
        # Its own keys (the sorts), built when the screen was composed ahead (warm_screens), not again now.
        labels = [k.key for k in app.screen.query_one(KeysFooter).query("FooterKey")]
        assert {"S", "D", "C", "q"} <= set(labels) and "g" not in labels
        assert built_ahead and rebuilt.count("traces") == built_ahead


async def test_a_slow_view_is_refreshed_by_the_clock_less_often_but_a_key_still_reads_it(store: Path,
                                                                                        monkeypatch) -> None:
    """A view whose read takes long (Breakdown by tool over a day of a big store) must not hold the
    reader every second: the clock's refreshes skip it for SLOW_VIEW_BACKOFF times its read; a key
    that asks for it reads at once."""
    loads: list[float] = []
    real_load = OverviewScreen.load

    async def slow_load(self, reader, now_s):
        loads.append(time.monotonic())
        await asyncio.sleep(0.1)  # a 100 ms read
        return await real_load(self, reader, now_s)

    monkeypatch.setattr(OverviewScreen, "load", slow_load)
    monkeypatch.setattr(base, "SLOW_VIEW_BACKOFF", 100)  # a 0.1 s read rests ≥ 10 s: no race with the clock
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=0.05)
    async with app.run_test(size=(160, 48)) as pilot:
        assert await wait_for(pilot, lambda: len(loads) >= 1)
        ticks = app.ticks
        assert await wait_for(pilot, lambda: app.ticks >= ticks + 3), "the clock ticks (status line, alerts)"
        settled, ticks = len(loads), app.ticks  # the start-up reads (asked for, not by the clock) are done
        assert await wait_for(pilot, lambda: app.ticks >= ticks + 5)
        assert len(loads) == settled, f"the slow view rested: {len(loads) - settled} more reads"
        monkeypatch.setattr(base, "SLOW_VIEW_BACKOFF", 0)  # its rest is over
        assert await wait_for(pilot, lambda: len(loads) > settled), "read again after its rest"
        monkeypatch.setattr(base, "SLOW_VIEW_BACKOFF", 10_000)  # resting again after that read, ≥ 1,000 s
        await pilot.press("3")
        assert await wait_for(pilot, lambda: isinstance(app.screen, TracesScreen))
        before = len(loads)
        await pilot.press("1")  # asked for by a key: read at once, though resting for 1,000 s
        # Generous rounds: on a loaded CI machine a Pilot pause takes far longer than its 20 ms (this
        # wait ran out twice beside other work); a view left resting would wait 1,000 s, and fail.
        assert await wait_for(pilot, lambda: len(loads) > before, rounds=1500), (
            f"no read after the key: screen {type(app.screen).__name__}, ticks {app.ticks}, "
            f"live tick {app._live_tick}, wake {app._wake.is_set()}, paint held {app._paint_held}, "
            f"workers {[(w.name, w.state.name) for w in app.workers]}, load error {app.load_error}")


async def test_a_key_that_wakes_the_loop_as_the_clock_times_out_is_not_taken_for_the_clock(
        store: Path, monkeypatch) -> None:
    """wait_for can report its timeout in the same moment a key sets the wake flag (the flag stays set,
    the wait was cancelled): the next tick is still the key's, so a resting view it asked for is read."""
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=0.05)

    async def times_out_although_woken(awaitable, timeout):
        awaitable.close()
        raise TimeoutError

    app._wake.set()  # the key's wake
    monkeypatch.setattr(asyncio, "wait_for", times_out_although_woken)
    assert await app._wait_for_next_tick() is False, "the key's tick"
    assert not app._wake.is_set()
    monkeypatch.undo()
    assert await app._wait_for_next_tick() is True, "nothing woke it: the clock's"


async def test_the_screens_not_shown_yet_are_composed_and_the_lists_read_once_after_the_first_paint(
        store: Path, monkeypatch) -> None:
    """With the live loop, the screens the first keys will show are composed in the background once the
    Overview is painted, so that a first press does not also compose and style its screen. The lists
    (WARM_WITH_DATA) also read and show their rows once, and every screen is laid out until no widget
    asks for another layout and rendered once, drawn nowhere; a screen that needs a choice first (a
    trace, a conversation) reads nothing. The Overview stays current and focused throughout, and a key
    still reads its screen afresh."""
    monkeypatch.setattr(app_module, "WARM_GAP_S", 0.01)
    loads: list[str] = []
    timed_load = base.LiveScreen.timed_load

    async def counted(self, reader, now_s):
        loads.append(self.NAME)
        return await timed_load(self, reader, now_s)

    monkeypatch.setattr(base.LiveScreen, "timed_load", counted)
    app, shown = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        assert await warmed(pilot, app), _composed(app)
        assert isinstance(app.screen, OverviewScreen)
        assert app.focused is not None and app.focused.screen is app.screen
        warm_reads = {name for name in WARM_ORDER if app.get_screen(name).WARM_WITH_DATA}
        assert warm_reads == {"traces", "breakdown", "alerts", "sessions", "trends"}
        # One read each, and none for the rest (the Overview's own are the live loop's).
        assert sorted(name for name in loads if name != "overview") == sorted(warm_reads)
        assert {name for name, _ in shown} == {"overview"}  # a warm read is not a screen shown
        for name in WARM_ORDER:
            assert not app.get_screen(name)._layout_required, name  # nothing left for the first key to lay out
        traces_table = app.get_screen("traces").query_one(KeyedTable)
        assert traces_table.row_count > 0  # shown once, not displayed
        assert traces_table.size.width > 100  # and laid out at the app's size (160 columns)
        assert traces_table._styles_cache._cache  # and rendered: its lines wait for the first key's paint
        pressed = time.perf_counter()
        await pilot.press("3")
        assert await wait_for(pilot, lambda: any(n == "traces" and t >= pressed for n, t in shown))
        assert loads.count("traces") == 2  # the key's own read
        assert app.screen.query_one(KeyedTable).row_count > 0
        assert app.focused is app.screen.query_one(KeyedTable)


async def test_a_key_pressed_while_the_screens_are_composed_is_served(store: Path, monkeypatch) -> None:
    monkeypatch.setattr(app_module, "WARM_GAP_S", 0.2)
    app, shown = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        assert await wait_for(pilot, lambda: any(name == "overview" for name, _ in shown))
        assert len(_composed(app)) < len(WARM_ORDER), "pressed before the last one was composed"
        pressed = time.perf_counter()
        await pilot.press("6")
        assert await wait_for(pilot, lambda: any(n == "sessions" and t >= pressed for n, t in shown))
        assert await warmed(pilot, app), _composed(app)
        assert app.screen.NAME == "sessions" and app.focused is app.screen.query_one(KeyedTable)


async def test_without_the_live_loop_a_screen_is_composed_when_it_is_first_shown(store: Path) -> None:
    """Tests and screenshots (no live loop) keep Textual's own order: nothing is composed ahead."""
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.3)
        assert _composed(app) == set()
