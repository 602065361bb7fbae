"""One conversation (Enter on Sessions): its turns in order, each a trace (Enter opens it), the
growth of its context per turn — the prompt each turn sent, the input tokens so far, the history it
re-sent and what that cost — with a warning once a prompt passes `[sessions] context_warning` of the
model's context window, and the messages as a chat.

The chat shows, per turn, the messages its last call added to the conversation (the new user or
tool messages of its prompt; the whole prompt on the first turn) and that call's answer. Every id
and message is untrusted text, rendered as data (llmobs_tui.format.safe)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.widgets.keyed_table import KeyedTable
from llmobs_tui.widgets.span_detail import ROLE_STYLE
from store.content import Message
from store.sessions import ConversationDetail, TurnContext, context_warning

CHAT_TURNS = 50  # the chat shows the latest turns; the table lists them all
CHAT_TEXT_LIMIT = 4000  # characters of one message part in the chat (the span's Conversation tab has all)


class ConversationScreen(LiveScreen):
    NAME = "conversation"
    BINDINGS = [Binding("enter", "open", "Open the turn's trace", show=False)]
    DEFAULT_CSS = """
    ConversationScreen #conversation-summary { height: auto; max-height: 3; }
    /* The turns take the rows they need (up to half the screen, then they scroll); the chat the rest. */
    ConversationScreen #turns { height: auto; max-height: 50%; min-height: 4; }
    ConversationScreen #chat { height: 1fr; border-top: solid $panel-lighten-2; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conversation_id: str | None = None
        self.detail: ConversationDetail | None = None
        self.turns: list = []
        self.growth: list[TurnContext] = []
        # Decoded messages of each turn's last call, by span row id: decoded once, a turn's call never changes.
        self._messages: dict[int, list[Message]] = {}
        self._layout: tuple[str, ...] = ()
        self._shown_chat: tuple = ()

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="conversation-summary")
        yield KeyedTable(id="turns")
        with VerticalScroll(id="chat"):
            yield Static(id="chat-text")
        yield from self.compose_chrome_bottom()

    def open(self, conversation_id: str) -> None:
        if conversation_id == self.conversation_id:
            return
        self.conversation_id = conversation_id
        self.detail = None
        self.turns, self.growth = [], []
        self._messages.clear()
        self._shown_chat = ()
        if self.is_mounted:
            self.query_one(KeyedTable).reset()
            self.query_one("#chat-text", Static).update("")
            self.query_one("#conversation-summary", Static).update(Text(" loading…", style="dim"))

    WIDE = ("#", "start", "duration", "calls", "input", "output", "context", "of window", "input so far", "re-sent",
            "re-sent $", "cost", "status")
    NARROW = ("#", "start", "context", "of window", "input so far", "re-sent $", "cost")

    def on_mount(self) -> None:
        self._set_columns()
        self.query_one(KeyedTable).focus()

    def on_resize(self) -> None:
        if self._set_columns():
            self.llmobs.wake()

    def _set_columns(self) -> bool:
        layout = self.WIDE if self.size.width >= 110 or not self.size.width else self.NARROW
        if layout == self._layout:
            return False
        self._layout = layout
        table = self.query_one(KeyedTable)
        table.reset(columns=True)
        table.add_columns(*layout)
        return True

    async def load(self, reader, now_s: float) -> tuple[ConversationDetail, dict[int, list[Message]], float] | None:
        if self.conversation_id is None:
            return None
        detail = await reader.conversation(self.conversation_id)
        decoded: dict[int, list[Message]] = {}
        last = {call.trace_id: call for call in detail.calls}  # each turn's last call, in turn order
        for call in list(last.values())[-CHAT_TURNS:]:
            if call.span.id not in self._messages:
                decoded[call.span.id] = (await reader.span_detail(call.trace_id, call.span)).messages
        return detail, decoded, now_s

    def show(self, data: tuple[ConversationDetail, dict[int, list[Message]], float] | None) -> None:
        if data is None:
            self.query_one("#conversation-summary", Static).update(
                Text(" No conversation open: 6 lists them, Enter opens one.", style="bold"))
            return
        detail, decoded, now_s = data
        if detail.conversation_id != self.conversation_id:
            return  # read for the conversation before; the next refresh reads this one
        self._messages.update(decoded)
        self.detail = detail
        self.turns = detail.turns
        settings = self.llmobs.sessions_settings
        self.growth = detail.growth(settings.context_windows)
        self.query_one("#conversation-summary", Static).update(self._summary(detail, settings.context_warning))
        table = self.query_one(KeyedTable)
        rows = []
        for number, (turn, growth) in enumerate(zip(detail.turns, self.growth), start=1):
            share = growth.share
            over = share is not None and share >= settings.context_warning
            status = Text("ok", style="green")
            if turn.failed:
                status = Text(f"{turn.errors or turn.error_spans} err", style="bold red")
            cost = Text(fmt.money(turn.cost_nusd))
            if turn.unpriced_calls:
                cost.append("+?", style="yellow")
            cells = {
                "#": Text(str(number)), "start": Text(fmt.clock(turn.start_ns, now_s)),
                "duration": Text(fmt.duration(turn.duration_ns)), "calls": Text(str(turn.llm_calls)),
                "input": Text(fmt.tokens(turn.input_tokens)), "output": Text(fmt.tokens(turn.output_tokens)),
                "context": Text(fmt.tokens(growth.context_tokens)),
                "of window": Text(fmt.percent(share) if share is not None else "?",
                                  style="bold red" if over else ("" if share is not None else "dim")),
                "input so far": Text(fmt.tokens(growth.cumulative_input)),
                "re-sent": Text(fmt.tokens(growth.history_tokens)),
                "re-sent $": resent_cost(growth),
                "cost": cost, "status": status,
            }
            rows.append((turn.trace_id.hex(), tuple(cells[name] for name in self._layout)))
        table.sync(rows)
        chat_key = tuple(t.trace_id for t in detail.turns[-CHAT_TURNS:]) + tuple(decoded)
        if chat_key != self._shown_chat:
            self._shown_chat = chat_key
            self.query_one("#chat-text", Static).update(self._chat(detail))

    # -- rendering ------------------------------------------------------------------------------

    def _summary(self, detail: ConversationDetail, warning_share: float) -> Text:
        turns = detail.turns
        text = Text(" conversation ", style="dim")
        text.append_text(fmt.safe(detail.conversation_id, style="bold", limit=120))
        user = next((t.user_id for t in turns if t.user_id), None)
        if user:
            text.append("  user ", style="dim")
            text.append_text(fmt.safe(user, style="bold", limit=60))
        inp = sum(t.input_tokens for t in turns)
        out = sum(t.output_tokens for t in turns)
        history = sum(g.history_tokens for g in self.growth)
        history_cost = sum(g.history_nusd or 0 for g in self.growth)
        text.append(f"\n {fmt.plural(len(turns), 'turn')} · input {fmt.tokens(inp)} · output {fmt.tokens(out)} · "
                    f"cost {fmt.money(sum(t.cost_nusd for t in turns))} · history re-sent {fmt.tokens(history)} "
                    f"({fmt.money(history_cost)})")
        if not turns:
            text.append("\n No turns left: the conversation's traces were evicted.", style="yellow")
            return text
        text.append("\n context per turn ", style="dim")
        text.append(sparkline([g.context_tokens for g in self.growth][-SPARK_TURNS:]), style="cyan")
        warned = context_warning(self.growth, warning_share)
        if warned is not None:
            number, growth = warned
            peak = max((g for g in self.growth if g.share is not None), key=lambda g: g.share or 0)
            text.append("  ▲ ", style="bold yellow")
            text.append_text(fmt.safe(
                f"context passed {warning_share:.0%} of {growth.model or 'the model'}'s {fmt.tokens(growth.window)} "
                f"window at turn {number} ({fmt.tokens(growth.context_tokens)} tokens); "
                f"peak {fmt.percent(peak.share)}",
                style="bold yellow", limit=200))
        else:
            peak_share = max((g.share for g in self.growth if g.share is not None), default=None)
            if peak_share is not None:
                text.append(f"  peak {fmt.percent(peak_share)} of the model's context window "
                            f"(warning at {warning_share:.0%})", style="dim")
        return text

    def _chat(self, detail: ConversationDetail) -> RenderableType:
        last_calls = detail.last_calls()
        parts: list[RenderableType] = []
        first_shown = max(0, len(detail.turns) - CHAT_TURNS)
        if first_shown:
            parts.append(Text(f" {first_shown} earlier turns not shown: Enter on one opens its trace", style="dim"))
        shown_instructions: set[tuple] = set()  # a system prompt re-sent every turn is shown once
        for number, turn in enumerate(detail.turns[first_shown:], start=first_shown + 1):
            header = Text(f"── turn {number} · {fmt.clock(turn.start_ns, self.llmobs.clock())} · "
                          f"{turn.trace_id.hex()[:8]} ", style="bold")
            parts.append(header)
            span = last_calls.get(turn.trace_id)
            messages = self._messages.get(span.id, []) if span is not None else []
            if not messages:
                parts.append(Text("   (no content stored for this turn)", style="dim"))
                continue
            for message in new_messages(messages, first=number == 1):
                if message.role in ("system", "developer") and message.direction == "input":
                    text = (message.role, tuple(p.text for p in message.parts))
                    if text in shown_instructions:
                        continue
                    shown_instructions.add(text)
                parts.extend(_message(message))
        return Group(*parts) if parts else Text(" No turns.", style="dim")

    # -- for tests and the help ------------------------------------------------------------------

    def chat_text(self) -> str:
        """The chat as plain text."""
        from rich.console import Console

        console = Console(width=120, no_color=True)
        with console.capture() as capture:
            console.print(self._chat(self.detail) if self.detail is not None else "")
        return capture.get()

    def summary_text(self) -> str:
        if self.detail is None:
            return ""
        return self._summary(self.detail, self.llmobs.sessions_settings.context_warning).plain

    # -- keys -----------------------------------------------------------------------------------

    def action_open(self) -> None:
        key = self.query_one(KeyedTable).cursor_key
        if key:
            self.llmobs.open_trace(bytes.fromhex(key))

    def on_data_table_row_selected(self, _) -> None:
        self.action_open()


SPARK_TURNS = 40  # the summary's sparkline shows the latest turns' prompt sizes
_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[int]) -> str:
    """One bar per value, scaled to the largest (the growth of a conversation's context at a glance)."""
    top = max(values, default=0)
    if not top:
        return _BARS[0] * len(values)
    return "".join(_BARS[min(len(_BARS) - 1, v * (len(_BARS) - 1) // top)] for v in values)


def resent_cost(growth: TurnContext) -> Text:
    """What re-sending the history cost this turn; "unpriced" when its call has no price row."""
    if growth.history_nusd is not None:
        return Text(fmt.money(growth.history_nusd))
    return Text("unpriced", style="yellow") if growth.history_tokens else Text("–", style="dim")


def new_messages(messages: list[Message], first: bool) -> list[Message]:
    """What a turn's last call added to the conversation: its whole prompt on the first turn, else
    the prompt's messages after the last assistant message (what the user or tools said since),
    then the answer."""
    prompt = [m for m in messages if m.direction == "input"]
    answer = [m for m in messages if m.direction != "input"]
    if not first:
        last_assistant = max((i for i, m in enumerate(prompt) if m.role == "assistant"), default=-1)
        prompt = prompt[last_assistant + 1:]
    return prompt + answer


def _message(message: Message) -> list[RenderableType]:
    header = Text("  ")
    header.append_text(fmt.safe(message.role, style=ROLE_STYLE.get(message.role, "bold"), limit=40))
    if message.name:
        header.append(f" ({fmt.clean(message.name, limit=60)})", style="dim")
    out: list[RenderableType] = [header]
    for part in message.parts:
        if part.type == "text":
            body = fmt.safe(part.text or "", newlines=True, limit=CHAT_TEXT_LIMIT)
        elif part.type == "reasoning":
            body = fmt.safe("reasoning: " + (part.text or ""), style="dim italic", newlines=True, limit=CHAT_TEXT_LIMIT)
        elif part.type == "tool_call":
            body = Text("→ tool call ", style="cyan")
            body.append_text(fmt.safe(part.name or "?", style="bold", limit=80))
        elif part.type == "tool_call_response":
            body = Text("← tool result ", style="cyan")
            body.append_text(fmt.safe(part.response if isinstance(part.response, str) else str(part.response),
                                      newlines=True, limit=CHAT_TEXT_LIMIT))
        else:
            continue
        out.append(Padding(body, (0, 0, 0, 4)))
    return out
