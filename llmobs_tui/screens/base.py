"""What every screen shares: the chrome, and the load/show contract of the live loop."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
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

    def on_screen_resume(self) -> None:
        self.llmobs.refresh_chrome(self)
        self.llmobs.wake()
