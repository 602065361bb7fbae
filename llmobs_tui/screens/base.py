"""What every screen shares: the chrome, and the load/show contract of the live loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.screen import Screen

from llmobs_tui.widgets.chrome import AlertBanner, KeysFooter, StatusLine, TopBar

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

    async def load(self, reader: StoreReader, now_s: float) -> Any:  # pragma: no cover - overridden
        return None

    def show(self, data: Any) -> None:  # pragma: no cover - overridden
        pass

    def on_screen_resume(self) -> None:
        self.llmobs.refresh_chrome(self)
        self.llmobs.wake()
