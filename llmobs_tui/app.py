"""The llmobs-tui Textual app: five screens, k9s keys, one live refresh loop.

The app only reads. The receiver and writer (when embedded) run outside it, started before
`run_async()` and drained after it returns (llmobs_tui/run.py), never in a Textual worker, because
Textual cancels workers before unmount and a cut-short drain would lose acknowledged spans.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import events, work
from textual.app import App
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.screen import Screen

from llmobs_tui import format as fmt
from llmobs_tui.alerting.source import AlertSource
from llmobs_tui.filtering import FilterError, parse
from llmobs_tui.gc_policy import restore_collection, tune_for_interaction
from llmobs_tui.reader import StoreReader
from llmobs_tui.screens.alerts import AlertsScreen
from llmobs_tui.screens.base import LiveScreen, css_state
from llmobs_tui.screens.breakdown import GROUPINGS, BreakdownScreen
from llmobs_tui.screens.conversation import ConversationScreen
from llmobs_tui.screens.help import HelpScreen, describe_bindings
from llmobs_tui.screens.metrics import MetricsScreen
from llmobs_tui.screens.overview import OverviewScreen
from llmobs_tui.screens.prompt import PromptScreen
from llmobs_tui.screens.sessions import SessionsScreen
from llmobs_tui.screens.trace import TraceScreen
from llmobs_tui.screens.traces import TracesScreen
from llmobs_tui.screens.trends import TrendsScreen
from llmobs_tui.widgets.change_line import ChangeLine
from llmobs_tui.widgets.chart import Mark
from llmobs_tui.widgets.chrome import AlertBanner, AlertLine, IngestStatus, StatusLine, TopBar
from store.changes import Change
from store.sessions import SessionSettings

log = logging.getLogger(__name__)

WINDOWS = (300, 3600, 86400, 7 * 86400)
PAINT_HOLD_S = 0.25  # after a screen switch, how long the old data may keep the new screen from painting
# The screens composed ahead of their first key (warm_screens), likeliest first, and the pause before each:
# composing one holds the UI thread for 20-100 ms, and a key pressed meanwhile waits for at most one.
WARM_ORDER = ("traces", "breakdown", "alerts", "sessions", "trends", "trace", "metrics", "conversation")
WARM_GAP_S = 0.15
# Between the steps that finish one screen (its read, a layout, a render: 10-60 ms each), long enough
# for its widgets to handle what the last step sent them and for a key to come in between.
SETTLE_GAP_S = 0.03


def default_export_dir() -> Path:
    """Where Ctrl-S writes without --export-dir: under the data directory, not wherever the TUI started."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("llmobs-tui", appauthor=False)) / "exports"


class LlmobsApp(App):
    TITLE = "llmobs-tui"
    CSS = """
    Screen { layout: vertical; }
    #traces-filter, #alerts-note { height: 1; }
    """
    BINDINGS = [
        Binding("1", "goto('overview')", "Overview", show=False),
        Binding("2", "goto('breakdown')", "Breakdown", show=False),
        Binding("3", "goto('traces')", "Traces", show=False),
        Binding("4", "goto('trace')", "Trace", show=False),
        Binding("5", "goto('alerts')", "Alerts", show=False),
        Binding("6", "goto('sessions')", "Sessions", show=False),
        Binding("7", "goto('trends')", "Trends", show=False),
        Binding("8", "goto('metrics')", "Metrics", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("slash", "filter", "Filter"),
        Binding("colon", "command", "Command", show=False),
        Binding("f", "follow", "Follow"),
        Binding("t", "window", "Window"),
        Binding("v", "compare", "Compare"),
        Binding("left_square_bracket", "change_mark(-1)", "Previous change marker (on every chart)", show=False),
        Binding("right_square_bracket", "change_mark(1)", "Next change marker", show=False),
        Binding("y", "copy", "Copy id"),
        Binding("ctrl+s", "export", "Export trace"),
        Binding("escape", "back", "Back", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, db_path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
                 refresh_s: float | None = 1.0, status: Callable[[], IngestStatus] | None = None,
                 alerts: AlertSource | None = None, window_s: float = 3600,
                 export_dir: str | os.PathLike[str] | None = None, sessions: SessionSettings | None = None,
                 reader: Any = None) -> None:
        """`reader`: the store's reader when it is not the SQLite file at db_path (a ClickHouseStoreReader)."""
        super().__init__()
        self.sessions_settings = sessions or SessionSettings()  # [sessions]: the context-window warning
        self.db_path = Path(db_path)
        self.reader: StoreReader = reader if reader is not None else StoreReader(self.db_path)
        self.store_label: str = getattr(reader, "name", None) or str(self.db_path)  # the status line's "read-only …"
        self.clock = clock
        self.refresh_s = refresh_s
        self.status_source = status
        self.alerts = alerts or AlertSource()
        # [alerts] bell: the terminal bell when a page fires; the rules' config is the engine adapter's.
        rules = getattr(self.alerts, "config", None)
        self.bell_on_page: bool = rules.alerts.bell if rules is not None else True
        self._pages_rung: set[tuple[str, float]] = set()  # (key, since) of the pages firing at the last tick
        self.window_s = window_s
        self.export_dir = Path(export_dir).expanduser() if export_dir else default_export_dir()
        self.following = True
        self.marked_trace: tuple[bytes, str] | None = None  # `m`: (trace id, root name), for `d` on another
        self._history: list[str] = []
        self.prompt_history: dict[str, list[str]] = {"filter": [], "command": []}  # this session's, in memory
        self._known_values: tuple[float, dict[str, list[str]]] | None = None
        self._wake = asyncio.Event()
        self._tick_lock = asyncio.Lock()
        self._alerts_task: asyncio.Task[None] | None = None
        self._live_tick: asyncio.Future[None] | None = None
        self._ticking_for: Any = None  # the screen the tick in progress reads for
        self._paint_held = False
        self._first_shown = False
        self.screens_warmed = asyncio.Event()  # set once warm_screens has composed every screen
        self._last_counts: tuple[float, int] | None = None
        self.status = IngestStatus(mode=f"read-only {self.store_label}")
        self.load_error: str | None = None
        self.ticks = 0
        # Called on the UI thread right after a screen's show(data), with the screen and the
        # time.perf_counter() at which the load it shows started: bench/tui_keys.py times a key press
        # to the first show of the new screen whose load started after the key.
        self.shown_hook: Callable[[LiveScreen, float], None] | None = None
        # Compare with the past (`v`) and the window's change markers (`[` `]`): app-wide, every chart shows them.
        self.compare_mode = "off"
        self.changes: list[Change] = []
        self.selected_change: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def on_mount(self) -> None:
        await self.reader.open()
        for screen in (OverviewScreen(), BreakdownScreen(), TracesScreen(), TraceScreen(), AlertsScreen(),
                       SessionsScreen(), ConversationScreen(), TrendsScreen(), MetricsScreen()):
            self.install_screen(screen, name=screen.NAME)
        await self.push_screen("overview")
        if self.refresh_s is not None:
            self.live()
        else:
            await self.tick()

    async def on_unmount(self) -> None:
        restore_collection()
        if self._alerts_task is not None:
            self._alerts_task.cancel()
        await self.reader.close()

    @work(exclusive=True, group="live", exit_on_error=False)
    async def live(self) -> None:
        """One refresh loop: the next tick starts only after the last one finished."""
        assert self.refresh_s is not None
        by_clock = False  # the first tick, and one a key asked for (wake), always reads
        while True:
            # A task of its own, so that a key that changes the screen can cancel it (wake): its read
            # serves a screen no longer shown, and the new screen's read would queue behind it.
            tick = self._live_tick = asyncio.ensure_future(self.tick(by_clock=by_clock))
            try:
                await asyncio.wait([tick])
            finally:
                tick.cancel()  # a no-op once done; when this worker is cancelled, its tick goes too
                self._live_tick = None
            if not tick.cancelled():
                tick.result()
            by_clock = await self._wait_for_next_tick()

    async def _wait_for_next_tick(self) -> bool:
        """Wait until a key wakes the loop or refresh_s passes; returns whether the next tick is the
        clock's. Decided by the wake flag, not by how the wait ended: wait_for can report a timeout in
        the same moment a key sets the flag, and that key's read was then taken for the clock's, so a
        resting view it asked for was not read (seen as a rare CI failure)."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=self.refresh_s)
        except TimeoutError:
            pass
        by_clock = not self._wake.is_set()
        self._wake.clear()
        return by_clock

    def wake(self) -> None:
        """Refresh now (after a key changed what is shown) instead of at the next tick."""
        if self.refresh_s is None:
            # No live loop (tests, screenshots): refresh once, right away. Not exclusive: cancelling
            # a tick midway through its read would leave the reader's transaction open.
            self.run_worker(self.tick, group="tick", exit_on_error=False)
        else:
            if self._live_tick is not None and self._ticking_for is not self._served_screen():
                # Superseded: a screen switch. The read in flight finishes on the reader's thread
                # and its transaction is ended (reader._snapshot); the rest of that tick is skipped.
                self._live_tick.cancel()
            self._wake.set()

    async def tick(self, by_clock: bool = False) -> None:
        async with self._tick_lock:  # ticks never overlap, whoever asks for one
            await self._tick(by_clock)

    async def _tick(self, by_clock: bool = False) -> None:
        self.ticks += 1
        started = time.perf_counter()
        now_s = self.clock()
        screen = self._ticking_for = self._served_screen()
        data = None
        error = None
        try:
            await self._evaluate_alerts(now_s)
            await self._load_changes(now_s)
            if screen is not self._served_screen():
                return  # a key moved on while we read: its own tick follows at once (wake)
            if isinstance(screen, LiveScreen) and not (by_clock and screen.resting()):
                data = await screen.timed_load(self.reader, now_s)
            self._update_status(await self.reader.newest_span_id(), now_s)
        except Exception as exc:  # a locked or damaged file must not take the UI down
            error = f"store read failed: {exc}"
        self.load_error = error
        if screen is not self._served_screen():
            return  # the user moved on while we read; the next tick serves the new screen
        with self.batch_update():
            if isinstance(screen, LiveScreen) and data is not None and error is None:
                screen.show(data)
            self.refresh_chrome(screen)
        self._ring_for_new_pages()
        self._release_paint()
        if not self._first_shown:  # the first tick that got this far: a key may have cut the first short
            self._first_shown = True
            self.call_after_refresh(tune_for_interaction)  # once the first screen is painted: see gc_policy
            if self.refresh_s is not None:
                self.run_worker(self.warm_screens, group="warm", exit_on_error=False)
        if self.shown_hook is not None and isinstance(screen, LiveScreen) and error is None:
            self.shown_hook(screen, started)

    async def warm_screens(self) -> None:
        """Compose, style and lay out the installed screens not shown yet, one at a time, after the first
        screen is painted: Textual does that the first time a screen is shown, so the first press of each
        key cost 130-260 ms against 40-100 ms for the next ones (bench.tui_keys' first round, week.db).
        Only with the live loop: tests and screenshots compose a screen when they show it, as before.
        Then each is laid out until its widgets stop asking for it and rendered once, drawn nowhere; and a
        screen that reads nothing it is not shown with (WARM_WITH_DATA: the lists, not a trace) reads and
        shows its data once, so that a key shows fresh data over rows and widths already built. A first
        press still cost 1.5-2x a later one after composing alone. With all of it, the median paint of a
        first press in two sets of three starts, ingest on, week.db: traces 98, 113 → 82, 75 ms; alerts
        147, 137 → 108, 105; sessions 116, 102 → 94, 82; trends 118, 109 → 57, 61; breakdown 124, 110 →
        124, 105."""
        for name in WARM_ORDER:
            await asyncio.sleep(WARM_GAP_S)
            screen = self.get_screen(name)
            if screen.is_running:
                continue  # a key has shown it already
            # App._get_screen is what switch_screen calls to start an installed screen (Textual is
            # pinned exactly): it registers the screen and mounts its widgets without making it current.
            await self._get_screen(screen)[1]
            screen._refresh_layout(self.size)  # laid out as it will be shown (displayed only if current)
            if isinstance(screen, LiveScreen) and screen.WARM_WITH_DATA:
                await asyncio.sleep(SETTLE_GAP_S)
                await self._warm_data(screen)
            await self._settle_layout(screen)
            await self._render_unseen(screen)
            if isinstance(screen, LiveScreen):
                # Styled as it mounted, for the app as it is: its first resume restyles it (25-35 ms for
                # the trace screen) only if the app's styles change before then (LiveScreen.on_screen_resume).
                screen.styled_for(css_state(self))
        # What the screens hold lives as long as the app: out of the collector's full passes (gc_policy).
        tune_for_interaction()
        self.screens_warmed.set()

    async def _settle_layout(self, screen: Screen[Any], rounds: int = 5) -> None:
        """Lay a screen out again until its widgets stop asking for it. The resize and show events of a
        layout, and a first show of data, make widgets ask for another (a table's new rows, a class set
        by a size); a screen that is not current keeps that request (Screen._layout_required) until it
        is shown, and its first key paid for two whole layouts and paints (2 × 60 ms) instead of none."""
        for _ in range(rounds):
            await asyncio.sleep(SETTLE_GAP_S)  # the widgets handle what the last layout sent them
            if not screen._layout_required or screen is self.screen:
                return
            screen._layout_required = False
            screen._refresh_layout(self.size)

    async def _render_unseen(self, screen: Screen[Any]) -> None:
        """Render a screen that is not shown, drawing it nowhere: each widget keeps its rendered lines
        until its content changes, and the first key's paint rendered every line of the screen."""
        await asyncio.sleep(SETTLE_GAP_S)
        if screen is not self.screen:
            screen._compositor.render_update(full=True, screen_stack=[])

    async def _warm_data(self, screen: LiveScreen) -> None:
        """One read and show of a screen not shown yet, between the live loop's ticks (one reader)."""
        async with self._tick_lock:
            if screen is self._served_screen():
                return  # a key showed it meanwhile: its own tick reads for it
            try:
                data = await screen.timed_load(self.reader, self.clock())
            except Exception:  # a failing read is the live loop's to report when the screen is shown
                log.debug("warming %s with data failed", screen.NAME, exc_info=True)
                return
            if screen is not self._served_screen() and data is not None:
                with self.batch_update():
                    screen.show(data)

    async def _evaluate_alerts(self, now_s: float) -> None:
        """With the live loop, the alert rules are evaluated beside the refresh, not inside it: an
        evaluation takes 0.2–0.6 s on a week of spans while ingest runs, and a key pressed meanwhile
        waited for it before its screen could load. The banner shows the result at the next tick.
        Without the loop (tests, screenshots) it is awaited, so a tick shows what it evaluated."""
        if self.refresh_s is None:
            await self.alerts.evaluate(self.reader, now_s)
        elif self._alerts_task is None or self._alerts_task.done():
            last, self._alerts_task = self._alerts_task, asyncio.create_task(self.alerts.evaluate(self.reader, now_s))
            failed = last.exception() if last is not None and not last.cancelled() else None
            if failed is not None:  # the tick says it as it says a failed read
                raise failed

    async def _load_changes(self, now_s: float) -> None:
        """The window's changes, the selected one kept by identity (new ones arrive, old ones leave)."""
        kept = self.changes[self.selected_change] if self.selected_change is not None else None
        self.changes = await self.reader.changes(now_s - self.window_s, now_s)
        self.selected_change = self.changes.index(kept) if kept in self.changes else None

    def chart_marks(self) -> tuple[list[Mark], int | None]:
        """The change markers for a chart of the current window, and which one is selected (`[` `]`):
        `TimeChart.show(ChartData(..., marks=marks, selected_mark=selected))`. Refreshed every tick."""
        return [Mark(c.time_s, c.describe()) for c in self.changes], self.selected_change

    def compare_shift_s(self) -> float | None:
        """How far back the compared past period lies (`v`: the previous window, or a week), None when off."""
        from store.charts import compare_shift_s

        return compare_shift_s(self.compare_mode, self.window_s)

    def action_compare(self) -> None:
        from llmobs_tui.compare import COMPARE_WORDS, next_mode

        self.compare_mode = next_mode(self.compare_mode)
        self.notify(f"Comparing {COMPARE_WORDS[self.compare_mode]}" if self.compare_mode != "off"
                    else "Comparison off", title="compare")
        self.wake()

    def action_change_mark(self, step: int) -> None:
        unavailable = getattr(self.reader, "changes_unavailable", None)
        if unavailable:
            self.notify(unavailable, title="changes")
            return
        if not self.changes:
            self.notify("No changes in this window: no new prompt version, served model, service version, "
                        "price table or error class.", title="changes")
            return
        if self.selected_change is None:
            self.selected_change = len(self.changes) - 1 if step < 0 else 0
        else:
            self.selected_change = max(0, min(len(self.changes) - 1, self.selected_change + step))
        lines = self.screen.query(ChangeLine)
        for line in lines:
            line.show(self.changes, self.selected_change)
        if not lines:  # a screen without the line: say it in a toast
            change = self.changes[self.selected_change]
            self.notify(f"{time.strftime('%H:%M:%S', time.localtime(change.time_s))} {change.describe()}",
                        title=f"change {self.selected_change + 1}/{len(self.changes)}")
        self.wake()

    def _served_screen(self) -> Any:
        """The screen a refresh serves: the one on top, or the one under the `/` `:` prompt (the
        filter applies as it is typed, and the list under the prompt shows it)."""
        if isinstance(self.screen, PromptScreen) and len(self.screen_stack) > 1:
            return self.screen_stack[-2]
        return self.screen

    def _update_status(self, max_id: int, now_s: float) -> None:
        if self.status_source is not None:
            self.status = self.status_source()
        else:
            rate = None
            if self._last_counts is not None:
                then, last_id = self._last_counts
                if now_s > then:
                    rate = (max_id - last_id) / (now_s - then)
            self._last_counts = (now_s, max_id)
            self.status = IngestStatus(mode=f"read-only {fmt.clean(self.store_label)}", spans_per_s=rate,
                                       store_bytes=self.reader.file_bytes())
        self.status.error = self.load_error or self.status.error

    def _ring_for_new_pages(self) -> None:
        """The terminal bell once for each page that starts firing (again, after it resolved; or a ticket
        that became a page), so a page is heard while the terminal is in another window."""
        pages = {(a.key, a.since_s) for a in self.alerts.snapshot(self.clock()) if a.firing and a.severity == "page"}
        if self.bell_on_page and pages - self._pages_rung:
            self.bell()
        self._pages_rung = pages

    def refresh_chrome(self, screen: Any) -> None:
        try:
            extra = ""
            if isinstance(screen, BreakdownScreen):
                extra = f"by {screen.by} (g)"
            elif isinstance(screen, TrendsScreen):
                extra = screen.header_text()
            screen.query_one(TopBar).show(screen.NAME, self.window_s, self.following, extra, link=self.status.link)
            screen.query_one(AlertBanner).show([
                AlertLine(a.severity, a.title, f"{a.value_text} ({a.window})" if a.window else a.value_text)
                for a in self.alerts.snapshot(self.clock()) if a.firing and not a.acknowledged])
            if self.load_error:
                self.status.error = self.load_error
            screen.query_one(StatusLine).show(self.status)
        except Exception:
            pass  # a modal or a screen without chrome

    # -- notifications -------------------------------------------------------------------------

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Every toast is plain text, whoever asks: notifications quote alert titles (a remote
        sender's feature and prompt-version names), filter errors and paths, and Textual would
        otherwise parse them as markup (`[@click=app.quit]` live, a stray `[/]` a MarkupError
        that ends the app). `Widget.notify` passes markup=True by default, so it is ignored here."""
        super().notify(fmt.clean(message, newlines=True, limit=1000), title=fmt.clean(title, limit=80),
                       severity=severity, timeout=timeout, markup=False)

    def action_help_quit(self) -> None:
        """Textual's ctrl+c hint, in plain text (its own wording uses markup, which `notify` shows literally)."""
        keys = [key for key, active in self.active_bindings.items() if active.binding.action in ("quit", "app.quit")]
        if keys:
            self.notify(f"Press {keys[0]} to quit the app", title="Do you want to quit?")

    def on_delivery_complete(self, event: events.DeliveryComplete) -> None:
        """Textual's 'Saved screenshot' toast (command palette), in plain text for the same reason."""
        if event.name == "screenshot":
            event.prevent_default()  # Textual's own handler would say it again, in markup
            self.notify(f"Saved screenshot to {event.path}" if event.path else "Saved screenshot", title="Screenshot")

    # -- navigation ----------------------------------------------------------------------------

    def _switch(self, name: str) -> None:
        current = self.screen
        if isinstance(current, LiveScreen) and name == current.NAME:
            self.wake()  # the same screen with something new to show (another trace opened on Trace)
            return
        if isinstance(current, LiveScreen):
            self._history.append(current.NAME)
            del self._history[:-20]
        # The new screen's on_screen_resume wakes the loop once it is in place (LiveScreen). A second
        # wake after the next refresh used to read and draw the whole screen twice per key.
        self._hold_paint()
        self.switch_screen(name)

    def _hold_paint(self) -> None:
        """Paint the screen a key switched to once, with its new data, not first with what it showed
        when it was last left and then again: a full paint is 30–100 ms of the UI thread, and the first
        one delayed the read of the new data behind it. Held for at most PAINT_HOLD_S (a slow read
        shows the old data meanwhile, as before); the tick that shows the data releases it."""
        if self.refresh_s is None or self._paint_held:
            return  # tests and screenshots paint as they always did
        self._paint_held = True
        self._begin_batch()
        self.set_timer(PAINT_HOLD_S, self._release_paint)

    def _release_paint(self) -> None:
        if self._paint_held:
            self._paint_held = False
            self._end_batch()
            # Textual drops what a batch would have painted, and ending one wakes the app, not the screen: a
            # screen switched to whose show() changed no widget (an idle store: the same rows) stayed unpainted,
            # the old screen on the terminal, until a later key. Its whole paint is the one the switch needs.
            self.screen.refresh()

    def action_goto(self, name: str) -> None:
        self._switch(name)

    def action_back(self) -> None:
        if self._history:
            self._hold_paint()
            self.switch_screen(self._history.pop())  # its on_screen_resume wakes the loop

    def open_traces(self, filter_text: str, sort: str = "start", descending: bool = True,
                    description: str = "") -> None:
        traces: TracesScreen = self.get_screen("traces")  # type: ignore[assignment]
        error = traces.set_query(filter_text, sort, descending, description)
        if error:
            self.notify(error, severity="error", title="filter")
            return
        self._switch("traces")

    def open_trace(self, trace_id: bytes, slowest: bool = False, span_id: bytes | None = None) -> None:
        screen: TraceScreen = self.get_screen("trace")  # type: ignore[assignment]
        screen.open(trace_id, slowest=slowest, span_id=span_id)
        self._switch("trace")

    def open_conversation(self, conversation_id: str) -> None:
        screen: ConversationScreen = self.get_screen("conversation")  # type: ignore[assignment]
        screen.open(conversation_id)
        self._switch("conversation")

    # -- keys ----------------------------------------------------------------------------------

    def action_help(self) -> None:
        screen = self.screen
        self.push_screen(HelpScreen(describe_bindings(self, screen), getattr(screen, "NAME", "").capitalize()))

    def action_filter(self) -> None:
        if isinstance(self.screen, SessionsScreen):  # there `/` filters the conversations
            self.screen.prompt_filter()
            return
        traces: TracesScreen = self.get_screen("traces")  # type: ignore[assignment]
        before = (traces.flt.text, traces.sort, traces.descending, traces.description)
        live = isinstance(self.screen, TracesScreen)  # elsewhere the list is not showing: Enter applies
        applied = [before[0]]

        def change(value: str) -> str | None:
            """Typing paused: apply the filter to the list under the prompt, or say what is wrong."""
            if self._looks_like_trace_id(value):
                return "Enter opens the trace whose id starts with this"
            error = self.validate_filter(value)
            if error is None and live and value != applied[-1]:
                applied.append(value)
                traces.set_query(value, traces.sort, traces.descending, "")
                self.wake()
            return error

        def done(value: str | None) -> None:
            if value is None:
                if applied[-1] != before[0]:  # Esc: back to the filter there was
                    traces.set_query(before[0], *before[1:])
                    self.wake()
            elif self._looks_like_trace_id(value):
                self.open_trace_by_id(value)
            else:
                if self.validate_filter(value) is not None and applied[-1] != before[0]:
                    traces.set_query(before[0], *before[1:])  # a bad filter keeps the one there was
                    self.wake()
                self.open_traces(value, traces.sort, traces.descending, "" if value != before[0] else before[3])

        self.push_screen(PromptScreen("/", traces.flt.text, "filter traces: model=~gpt-4.* ttft>1s status=error "
                                      'text:"refund policy" · '
                                      "a leading ! inverts · Tab completes, ↑↓ history · a trace id opens it · "
                                      "Enter keeps, Esc restores", history=self.prompt_history["filter"],
                                      complete=self.complete_filter, on_change=change,
                                      on_submit_early=self.is_full_trace_id), done)

    def action_command(self) -> None:
        self.push_screen(PromptScreen(":", "", "window 1h · sort cost · filter … · by feature · open TRACE-ID · "
                                      "export · follow · quit", history=self.prompt_history["command"],
                                      complete=self.complete_command), self.run_command)

    @staticmethod
    def is_full_trace_id(text: str) -> bool:
        from store.dashboards import TRACE_ID_HEX, normalize_trace_id_prefix

        prefix = normalize_trace_id_prefix(text)
        return prefix is not None and len(prefix) == TRACE_ID_HEX

    @staticmethod
    def _looks_like_trace_id(text: str) -> bool:
        """Filter text that is a trace id or the start of one (hex, no operator: never a filter)."""
        from store.dashboards import normalize_trace_id_prefix

        return normalize_trace_id_prefix(text) is not None and parse_or_none(text) is None

    async def known_values(self) -> dict[str, list[str]]:
        """Field values for completion, read from the store at most every few seconds."""
        now = time.monotonic()
        if self._known_values is None or now - self._known_values[0] > 5:
            try:
                values = await self.reader.known_values(self.clock())
            except Exception:  # a busy or damaged store: complete field names only
                values = self._known_values[1] if self._known_values else {}
            self._known_values = (now, values)
        return self._known_values[1]

    async def complete_filter(self, text: str) -> list[str]:
        from llmobs_tui.filtering import complete

        return complete(text, await self.known_values())

    async def complete_command(self, text: str) -> list[str]:
        from store.dashboards import TRACE_SORTS

        verb, space, rest = text.partition(" ")
        if not space:
            verbs = ("alerts", "breakdown", "by", "export", "filter", "follow", "help", "metrics", "open", "overview",
                     "quit", "sessions", "sort", "trace", "traces", "trends", "window")
            return [v for v in verbs if v.startswith(verb) and v != verb]
        options = {"by": GROUPINGS, "sort": tuple(TRACE_SORTS), "window": ("5m", "1h", "24h", "7d")}.get(verb)
        if verb == "filter":
            return [f"filter {c}" for c in await self.complete_filter(rest)]
        return [f"{verb} {o}" for o in options or () if o.startswith(rest) and o != rest]

    @work(group="open-id", exit_on_error=False)
    async def open_trace_by_id(self, text: str) -> None:
        """`:open ID`, or an id typed or pasted at `/`: the full id or a unique start of it."""
        from store.dashboards import TRACE_ID_HEX, normalize_trace_id_prefix

        prefix = normalize_trace_id_prefix(text)
        if prefix is None:
            self.notify(f"{text.strip()!r} is not a trace id: expected up to {TRACE_ID_HEX} hex characters "
                        "(the start of an id will do)", severity="error", title="open")
            return
        try:
            found = await self.reader.traces_with_prefix(prefix, limit=1000)
        except Exception as exc:
            self.notify(f"store read failed: {exc}", severity="error", title="open")
            return
        if not found:
            what = f"trace {prefix}" if len(prefix) == TRACE_ID_HEX else f"trace id starting with {prefix}"
            self.notify(f"No {what} in this store (not received yet, or older than retention keeps).",
                        severity="warning", title="open")
        elif len(found) > 1:
            count = "More than 1000" if len(found) > 1000 else str(len(found))
            self.notify(f"{count} traces have ids starting with {prefix}: type more of the id.",
                        severity="warning", title="open")
        else:
            self.open_trace(found[0])

    def run_command(self, text: str | None) -> None:
        if not text:
            return
        verb, _, rest = text.strip().partition(" ")
        rest = rest.strip()
        traces: TracesScreen = self.get_screen("traces")  # type: ignore[assignment]
        if verb in ("q", "quit"):
            self.exit()
        elif verb == "window":
            from llmobs_tui.units import parse_duration

            try:
                self.window_s = parse_duration(rest)
            except ValueError as exc:
                self.notify(str(exc), severity="error")
                return
            self.refresh_chrome(self.screen)
            self.wake()
        elif verb == "sort":
            from store.dashboards import TRACE_SORTS

            if rest not in TRACE_SORTS:
                self.notify(f"sort by one of: {', '.join(TRACE_SORTS)}", severity="error")
                return
            self.open_traces(traces.flt.text, rest, True)
        elif verb == "filter":
            self.open_traces(rest, traces.sort, traces.descending)
        elif verb == "by":
            if rest not in GROUPINGS:
                self.notify(f"group by one of: {', '.join(GROUPINGS)}", severity="error")
                return
            breakdown: BreakdownScreen = self.get_screen("breakdown")  # type: ignore[assignment]
            breakdown.by = rest
            if breakdown.is_mounted:
                breakdown.reset_columns()
            self._switch("breakdown")
        elif verb == "open":
            if not rest:
                self.notify("open takes a trace id, or the start of one: open 4bf92f35", severity="error")
                return
            self.open_trace_by_id(rest)
        elif verb == "export":
            self.action_export()
        elif verb == "follow":
            self.action_follow()
        elif verb in ("help", "?"):
            self.action_help()
        elif verb in ("overview", "breakdown", "traces", "trace", "alerts", "sessions", "trends", "metrics"):
            self._switch(verb)
        else:
            self.notify(f"unknown command {fmt.clean(verb)!r}: "
                        "try window, sort, filter, by, open, export, follow, quit",
                        severity="error")

    def action_follow(self) -> None:
        self.following = not self.following
        if self.following and isinstance(self.screen, TracesScreen):
            table = self.screen.query_one("#traces")
            table.move_cursor(row=0)
            table.scroll_home(animate=False)
        self.refresh_chrome(self.screen)
        self.wake()

    def action_window(self) -> None:
        index = WINDOWS.index(self.window_s) if self.window_s in WINDOWS else -1
        self.window_s = WINDOWS[(index + 1) % len(WINDOWS)]
        self.refresh_chrome(self.screen)
        self.wake()

    def _current_trace_id(self) -> bytes | None:
        screen = self.screen
        if isinstance(screen, TraceScreen):
            return screen.trace_id
        if isinstance(screen, TracesScreen) and screen.selected_trace is not None:
            return screen.selected_trace.trace_id
        return None

    def action_copy(self) -> None:
        screen = self.screen
        if isinstance(screen, TraceScreen) and screen.selected_span is not None and screen.trace_id:
            what, value = "span id", screen.selected_span.span_id.hex()
        else:
            trace_id = self._current_trace_id()
            if trace_id is None:
                self.notify("Nothing to copy here: select a trace or a span.", severity="warning")
                return
            what, value = "trace id", trace_id.hex()
        self.copy_value(what, value)

    def copy_value(self, what: str, value: str) -> None:
        """Copy with the system clipboard if there is one, else the terminal's (OSC 52), and say which."""
        tools = (("pbcopy",), ("wl-copy",), ("xclip", "-selection", "clipboard"), ("xsel", "--clipboard", "--input"))
        for tool in tools:
            needs = {"wl-copy": "WAYLAND_DISPLAY", "xclip": "DISPLAY", "xsel": "DISPLAY"}.get(tool[0])
            if shutil.which(tool[0]) and (needs is None or os.environ.get(needs)):
                try:
                    subprocess.run(tool, input=value.encode(), check=True, timeout=2, capture_output=True)
                except (OSError, subprocess.SubprocessError):
                    continue
                self.notify(f"Copied {what} {value}")
                return
        if self.is_headless or not os.environ.get("TERM"):
            self.notify(f"No clipboard available here. The {what} is {value}", severity="warning", timeout=10)
            return
        self.copy_to_clipboard(value)
        self.notify(f"Sent the {what} to the terminal clipboard (OSC 52; terminals without it copy nothing): {value}",
                    timeout=8)

    def action_export(self) -> None:
        trace_id = self._current_trace_id()
        if trace_id is None:
            self.notify("Open or select a trace to export it.", severity="warning")
            return
        self.export_trace(trace_id)

    @work(exclusive=True, group="export")
    async def export_trace(self, trace_id: bytes) -> None:
        import json

        from store.otlp_values import message_to_otlp_json

        request = await self.reader.export_trace(trace_id)
        if request is None:
            self.notify(f"Trace {trace_id.hex()} is no longer in the store.", severity="error")
            return
        path = (self.export_dir / f"trace-{trace_id.hex()}.json").absolute()  # the toast says where, in full
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(message_to_otlp_json(request), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            self.notify(f"Cannot write {path}: {exc.strerror or exc}", severity="error")
            return
        self.notify(f"Exported to {path} (OTLP/JSON: POST it to /v1/traces to send it again)")

    def validate_filter(self, text: str) -> str | None:
        try:
            parse(text)
        except FilterError as exc:
            return str(exc)
        return None


def parse_or_none(text: str) -> Any:
    try:
        return parse(text)
    except FilterError:
        return None
