"""The one-line prompt for `/` (filter) and `:` (command), shown at the bottom like k9s."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from rich.highlighter import Highlighter
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.timer import Timer
from textual.widgets import Input, Static

from llmobs_tui import format as fmt


class VisibleControls(Highlighter):
    """Shows control, format and bidi characters in the input as visible stand-ins, one for one
    (the cursor stays where it is): a filter drilled from a remote feature name, or pasted, can
    hold an escape sequence, and Input would otherwise send it to the terminal as it is. The value
    itself is untouched, so the filter still matches what was stored."""

    def highlight(self, text: Text) -> None:
        text.plain = fmt.clean_in_place(text.plain)


Completer = Callable[[str], Awaitable[list[str]]]


class PromptSuggester(Suggester):
    """The first completion that extends what is typed, shown dim after it (→ or Tab takes it)."""

    def __init__(self, complete: Completer) -> None:
        super().__init__(use_cache=False, case_sensitive=True)  # known values change: no cache
        self.complete = complete

    async def get_suggestion(self, value: str) -> str | None:
        return next((c for c in await self.complete(value) if c.startswith(value) and c != value), None)


class PromptScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    PromptScreen { align: left bottom; background: transparent; }
    PromptScreen > Static { height: 1; width: 100%; background: $panel; color: $text-muted; }
    /* :focus too: Input's own `Input:focus { border: tall }` outranks a plain type selector, and a
       bordered input one row high has no room left for the text being typed. */
    PromptScreen > Input, PromptScreen > Input:focus { width: 100%; border: none; height: 1; padding: 0 1;
                                                      background: $boost; }
    """
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("up", "history(-1)", "Earlier entry", show=False),
        Binding("down", "history(1)", "Later entry", show=False),
        Binding("tab", "complete", "Complete", show=False, priority=True),
    ]
    DEBOUNCE_S = 0.25

    def __init__(self, prefix: str, value: str = "", hint: str = "", *, history: list[str] | None = None,
                 complete: Completer | None = None, on_change: Callable[[str], str | None] | None = None,
                 on_submit_early: Callable[[str], bool] | None = None) -> None:
        """`history`: earlier entries of this kind, oldest first (↑/↓ walk it; Enter adds to it).
        `complete`: completions of the text, each the whole new text (Tab cycles through them).
        `on_change`: called with the text once typing pauses (DEBOUNCE_S); returns an error to show.
        `on_submit_early`: called on every change; True submits the text right away (a pasted id)."""
        super().__init__()
        self.prefix = prefix
        self.value = value
        self.hint = hint
        self.history = history if history is not None else []
        self.complete = complete
        self.on_change = on_change
        self.on_submit_early = on_submit_early
        self._position = len(self.history)  # len(history): the draft being typed
        self._draft = value
        self._timer: Timer | None = None
        self._cycle: list[str] = []
        self._cycle_at = 0
        self._settled = value

    def compose(self) -> ComposeResult:
        yield Static(fmt.safe(f" {self.hint}"), id="prompt-hint")
        yield Input(value=self.value, placeholder=self.prefix, highlighter=VisibleControls(), id="prompt-input",
                    suggester=PromptSuggester(self.complete) if self.complete else None)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def show_hint(self, error: str | None = None, candidates: list[str] | None = None) -> None:
        if error:
            text = fmt.safe(f" ✗ {error}", style="red", limit=300)
        else:
            text = fmt.safe(f" {self.hint}")
        if candidates:
            shown = [re.split(r"=~|!~|!=|>=|<=|=|>|<", c.rpartition(" ")[2], maxsplit=1)[-1] for c in candidates[:8]]
            text = fmt.safe(" Tab: " + " · ".join(shown)
                            + (" …" if len(candidates) > 8 else ""), limit=300)
            if error:
                text.append_text(fmt.safe(f"   ✗ {error}", style="red", limit=200))
        self.query_one("#prompt-hint", Static).update(text)

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.on_submit_early is not None and self.on_submit_early(event.value):
            self._submit(event.value)
            return
        if self.on_change is None and self.complete is None:
            return
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(self.DEBOUNCE_S, self._typing_paused)

    async def _typing_paused(self) -> None:
        self._timer = None
        value = self.query_one(Input).value
        error = None
        if self.on_change is not None and value != self._settled:
            self._settled = value
            error = self.on_change(value)
        candidates = await self.complete(value) if self.complete and value else []
        if self.is_attached:
            self.show_hint(error, candidates)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit(event.value)

    def _submit(self, value: str) -> None:
        if self._timer is not None:
            self._timer.stop()
        text = value.strip()
        if text:
            if text in self.history:
                self.history.remove(text)
            self.history.append(text)
            del self.history[:-100]
        self.dismiss(value)

    def _set(self, value: str) -> None:
        field = self.query_one(Input)
        field.value = value
        field.cursor_position = len(value)

    def action_history(self, step: int) -> None:
        position = max(0, min(len(self.history), self._position + step))
        if position == self._position:
            return
        if self._position == len(self.history):
            self._draft = self.query_one(Input).value
        self._position = position
        self._set(self.history[position] if position < len(self.history) else self._draft)

    async def action_complete(self) -> None:
        value = self.query_one(Input).value
        if self._cycle and value == self._cycle[self._cycle_at]:
            self._cycle_at = (self._cycle_at + 1) % len(self._cycle)
        else:
            candidates = [c for c in await self.complete(value) if c != value] if self.complete else []
            if not candidates:
                self.app.bell()
                return
            self._cycle, self._cycle_at = candidates, 0
        self._set(self._cycle[self._cycle_at])

    def action_cancel(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self.dismiss(None)
