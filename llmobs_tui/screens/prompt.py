"""The one-line prompt for `/` (filter) and `:` (command), shown at the bottom like k9s."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class PromptScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    PromptScreen { align: left bottom; background: transparent; }
    PromptScreen > Static { height: 1; width: 100%; background: $panel; color: $text-muted; }
    PromptScreen > Input { width: 100%; border: none; height: 1; padding: 0 1; background: $boost; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, prefix: str, value: str = "", hint: str = "") -> None:
        super().__init__()
        self.prefix = prefix
        self.value = value
        self.hint = hint

    def compose(self) -> ComposeResult:
        yield Static(f" {self.hint}")
        yield Input(value=self.value, placeholder=self.prefix, id="prompt-input")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
