"""The one-line prompt for `/` (filter) and `:` (command), shown at the bottom like k9s."""

from __future__ import annotations

from rich.highlighter import Highlighter
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from llmobs_tui import format as fmt


class VisibleControls(Highlighter):
    """Shows control, format and bidi characters in the input as visible stand-ins, one for one
    (the cursor stays where it is): a filter drilled from a remote feature name, or pasted, can
    hold an escape sequence, and Input would otherwise send it to the terminal as it is. The value
    itself is untouched, so the filter still matches what was stored."""

    def highlight(self, text: Text) -> None:
        text.plain = fmt.clean_in_place(text.plain)


class PromptScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    PromptScreen { align: left bottom; background: transparent; }
    PromptScreen > Static { height: 1; width: 100%; background: $panel; color: $text-muted; }
    /* :focus too: Input's own `Input:focus { border: tall }` outranks a plain type selector, and a
       bordered input one row high has no room left for the text being typed. */
    PromptScreen > Input, PromptScreen > Input:focus { width: 100%; border: none; height: 1; padding: 0 1;
                                                      background: $boost; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, prefix: str, value: str = "", hint: str = "") -> None:
        super().__init__()
        self.prefix = prefix
        self.value = value
        self.hint = hint

    def compose(self) -> ComposeResult:
        yield Static(fmt.safe(f" {self.hint}"))
        yield Input(value=self.value, placeholder=self.prefix, highlighter=VisibleControls(), id="prompt-input")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
