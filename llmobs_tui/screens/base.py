"""What every screen shares: the chrome, and the load/show contract of the live loop."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from textual import events
from textual.app import App, ComposeResult
from textual.screen import Screen

from llmobs_tui.widgets.chrome import AlertBanner, KeysFooter, StatusLine, TopBar

# A view whose read takes long is refreshed by the clock no more often than this many times its read:
# Breakdown by tool over 24 h reads raw spans (~2 s at 3M spans), and refreshed every second it would
# hold the one reader connection all the time, so that a key for another screen waited behind it.
# A key (a switch, a new window, a new grouping) still reads at once.
SLOW_VIEW_BACKOFF = 10

if TYPE_CHECKING:
    from llmobs_tui.app import LlmobsApp
    from llmobs_tui.reader import StoreReader


class LiveScreen(Screen):
    """A screen the live loop refreshes: `load` reads (async, off the UI), `show` draws (in a batch)."""

    NAME = ""
    # Read and shown once in the background before its first key (LlmobsApp.warm_screens): only a
    # screen whose load depends on nothing but the window and its own settings (not a chosen trace).
    WARM_WITH_DATA = False

    @property
    def llmobs(self) -> LlmobsApp:
        return self.app  # type: ignore[return-value]

    def compose_chrome_top(self) -> ComposeResult:
        yield TopBar()
        yield AlertBanner()

    def compose_chrome_bottom(self) -> ComposeResult:
        yield KeysFooter()
        yield StatusLine()

    # The last load's duration and when it ended (time.monotonic): see resting().
    last_load_s = 0.0
    loaded_at = float("-inf")

    async def load(self, reader: StoreReader, now_s: float) -> Any:  # pragma: no cover - overridden
        return None

    async def timed_load(self, reader: StoreReader, now_s: float) -> Any:
        """load(), timed for resting()."""
        started = time.monotonic()
        data = await self.load(reader, now_s)
        self.loaded_at = time.monotonic()
        self.last_load_s = self.loaded_at - started
        return data

    def resting(self) -> bool:
        """Whether a refresh by the clock should skip this screen's read: its last read took long
        enough that reading again now would keep the reader busy more than 1/SLOW_VIEW_BACKOFF of the
        time. Fast views (nearly all: a few ms) are never resting."""
        return time.monotonic() - self.loaded_at < SLOW_VIEW_BACKOFF * self.last_load_s

    def show(self, data: Any) -> None:  # pragma: no cover - overridden
        pass

    # What the app's styles depended on when this screen was last styled on a resume (css_state).
    _styled_for: tuple[Any, ...] | None = None

    def styled_for(self, state: tuple[Any, ...]) -> None:
        """Say that every widget of the screen has been styled for the app's `state` (css_state)."""
        self._styled_for = state

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        # Dispatched before Screen._on_screen_resume (subclass first), which restyles every widget of
        # the screen on each resume: 5-13 ms of the UI thread per screen key at 160x48, for styles
        # that cannot have changed. A class or pseudo-class changed on a widget of a hidden screen
        # restyles it then (DOMNode.add_class and the rest), so what a resume must catch is a change
        # of the app's own: the theme, its classes, its pseudo-classes (focus, dark, ansi, ...).
        state = css_state(self.app)
        if state == self._styled_for:
            event.refresh_styles = False
        self._styled_for = state
        self.llmobs.refresh_chrome(self)
        self.llmobs.wake()


def css_state(app: App[Any]) -> tuple[Any, ...]:
    """What every style of a screen depends on outside its own widgets: the stylesheet's generation
    (bumped on a theme or variable change), the app's classes and its pseudo-classes (App._PSEUDO_CLASSES:
    Textual is pinned exactly)."""
    pseudo = frozenset(name for name, test in App._PSEUDO_CLASSES.items() if test(app))
    return (app._css_update_count, frozenset(app.classes), pseudo)
