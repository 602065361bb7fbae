"""Sessions (`6`): one row per conversation seen in the window — turns, first and last seen, user,
cumulative tokens, cost, errors, p95 turn latency — or (`u`) the same conversations grouped by
user, top users by cost. Sortable (Shift-letters), filterable with the `/` language (a conversation
matches when one of its traces does). Rows come from the writer's `conversations` summary
(store/sessions.py), so a refresh never groups spans."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.filtering import Filter, FilterError, parse
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.widgets.chrome import query_text
from llmobs_tui.widgets.keyed_table import KeyedTable, RowCells
from llmobs_tui.widgets.quiet import update_static
from store.sessions import ConversationRow, UserRow

# Shift-letter → sort, per grouping (pressing the same one again reverses).
CONVERSATION_SORT_KEYS = {"L": "last", "F": "first", "N": "turns", "T": "tokens", "C": "cost", "E": "errors",
                          "P": "p95", "U": "user"}
USER_SORT_KEYS = {"L": "last", "F": "first", "O": "conversations", "N": "turns", "T": "tokens", "C": "cost",
                  "E": "errors", "U": "user"}
_SORT_WORDS = {"L": "last seen", "F": "first seen", "O": "conversations (by user)", "N": "turns", "T": "tokens",
               "C": "cost", "E": "errors", "P": "p95 turn latency", "U": "user"}
GROUPINGS = ("conversation", "user")
USER_KEY = "user:"  # row keys of the user grouping (a conversation id could look like a user id)


class SessionsScreen(LiveScreen):
    WARM_WITH_DATA = True
    NAME = "sessions"
    BINDINGS = [
        *[Binding(key, f"sort('{key}')", f"Sort by {words}", show=key in "LCT") for key, words in _SORT_WORDS.items()],
        Binding("u", "toggle_grouping", "By user / conversation"),
        Binding("enter", "open", "Open conversation", show=False),
    ]
    DEFAULT_CSS = """
    SessionsScreen #sessions-filter { height: 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.flt: Filter = Filter()
        self.grouping = "conversation"
        self.sort = "last"
        self.descending = True
        self.rows: dict[str, ConversationRow] = {}
        self.users: dict[str, UserRow] = {}
        self.user: str | None = None  # Enter on a user: that user's conversations only (u: all users again)
        self._layout: tuple[str, ...] = ()
        self._id_widths: dict[str, int | None] = {}  # the id columns' widths, read once per show
        self._row_cells = RowCells()  # the rows' cells, built again only for rows that changed
        # Each grouping keeps its own sort: conversations by last seen, users by cost (top users).
        self._sorts = {"conversation": ("last", True), "user": ("cost", True)}

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="sessions-filter")
        yield KeyedTable(id="sessions")
        yield from self.compose_chrome_bottom()

    # Columns by width and grouping: at 80 columns what decides whether to open a conversation.
    WIDE = ("last seen", "conversation", "user", "turns", "first seen", "input", "output", "cost", "errors", "p95")
    NARROW = ("last seen", "conversation", "user", "turns", "tokens", "cost", "errors")
    USER_WIDE = ("user", "conversations", "turns", "calls", "input", "output", "cost", "errors", "last seen")
    USER_NARROW = ("user", "convs", "turns", "tokens", "cost", "errors")
    # Widths of the id columns (an id is cut with an ellipsis): at 80 columns what the figures leave.
    ID_WIDTH = {"conversation": 36, "user": 24}
    NARROW_ID_WIDTH = {"conversation": 18, "user": 11}
    NARROW_USER_WIDTH = 28  # the user grouping's first column

    def on_mount(self) -> None:
        self._layout = ()
        self._set_columns()
        self.query_one(KeyedTable).focus()
        self._describe()

    def on_resize(self) -> None:
        if self._set_columns():
            self.llmobs.wake()

    def _layout_for(self, width: int) -> tuple[str, ...]:
        wide = width >= 110 or not width
        if self.grouping == "user":
            return self.USER_WIDE if wide else self.USER_NARROW
        return self.WIDE if wide else self.NARROW

    def _set_columns(self, force: bool = False) -> bool:
        layout = self._layout_for(self.size.width)
        if layout == self._layout and not force:
            return False
        self._layout = layout
        table = self.query_one(KeyedTable)
        table.reset(columns=True)
        narrow = layout in (self.NARROW, self.USER_NARROW)
        for name in layout:
            width = None
            if name in self.ID_WIDTH:
                width = self.ID_WIDTH[name]
                if narrow:
                    width = self.NARROW_USER_WIDTH if self.grouping == "user" else self.NARROW_ID_WIDTH[name]
            table.add_column(name, width=width)
        return True

    # -- the query ------------------------------------------------------------------------------

    @property
    def sort_keys(self) -> dict[str, str]:
        return USER_SORT_KEYS if self.grouping == "user" else CONVERSATION_SORT_KEYS

    def set_filter(self, filter_text: str) -> str | None:
        """Apply a filter; returns an error message for a bad one (the filter there was stays)."""
        try:
            self.flt = parse(filter_text)
        except FilterError as exc:
            return str(exc)
        if self.is_mounted:
            self._describe()
            table = self.query_one(KeyedTable)
            table.reset()
            table.move_cursor(row=0)
        return None

    def _describe(self) -> None:
        text = query_text(self.flt.text, self.sort, self.descending)
        if self.grouping == "conversation" and self.user is not None:
            text.append("   conversations of user ", style="dim")
            text.append_text(fmt.safe(self.user, style="bold", limit=60))
            text.append(" (u: all users)", style="dim")
        else:
            other = "conversation" if self.grouping == "user" else "user"
            text.append(f"   by {self.grouping} (u: by {other})", style="dim")
        update_static(self.query_one("#sessions-filter", Static), text)

    async def load(self, reader, now_s: float) -> tuple[str, list, float]:
        grouping = self.grouping
        rows = await reader.sessions(self.llmobs.window_s, now_s, self.flt, grouping, self.sort, self.descending,
                                     user=self.user)
        return grouping, rows, now_s

    def show(self, data: tuple[str, list, float]) -> None:
        grouping, rows, now_s = data
        if grouping != self.grouping:
            return  # read before a `u`: the next refresh brings the other grouping
        table = self.query_one(KeyedTable)
        # The id columns' widths, read once: per cell it was a DOM query and a pass over the columns,
        # a thousand of them per refresh of 500 rows.
        self._id_widths = {str(c.label.plain): c.width for c in table.ordered_columns}
        # What the rows are built from: a time reads differently once it is 20 h old (fmt.clock).
        today = [(now_s - r.first_ns / 1e9 < fmt.CLOCK_TODAY_S, now_s - r.last_ns / 1e9 < fmt.CLOCK_TODAY_S)
                 for r in rows]
        source = (grouping, rows, self._layout, self._id_widths, today)
        if not table.holds(source):
            # A row's cells are made from the row, the layout, the id columns' widths and its times'
            # `today`: all of it in the memo's key.
            memo, widths = self._row_cells, tuple(self._id_widths.items())
            if grouping == "user":
                shown = [(USER_KEY + u.user_id,
                          memo.cells((u, self._layout, widths, recent), self._user_cells, u, now_s))
                         for u, recent in zip(rows, today)]
                self.users = {USER_KEY + u.user_id: u for u in rows}
            else:
                shown = [(c.conversation_id,
                          memo.cells((c, self._layout, widths, recent), self._conversation_cells, c, now_s))
                         for c, recent in zip(rows, today)]
                self.rows = {c.conversation_id: c for c in rows}
            memo.built()
            table.sync(shown, source=source)
        self._describe()
        if not rows:
            self._describe_empty()

    def _id_cell(self, value: str | None, column: str) -> Text:
        cell = fmt.safe(value or "–", limit=200, style="" if value else "dim")
        width = self._id_widths.get(column)
        if width:
            cell.truncate(width, overflow="ellipsis")
        return cell

    def _conversation_cells(self, c: ConversationRow, now_s: float) -> tuple[Text, ...]:
        cost = Text(fmt.money(c.cost_nusd))
        if c.unpriced_calls:
            cost.append("+?", style="yellow")
        cells = {
            "last seen": Text(fmt.clock(c.last_ns, now_s)), "first seen": Text(fmt.clock(c.first_ns, now_s)),
            "conversation": self._id_cell(c.conversation_id, "conversation"), "user": self._id_cell(c.user_id, "user"),
            "turns": Text(str(c.turns)), "input": Text(fmt.tokens(c.input_tokens)),
            "output": Text(fmt.tokens(c.output_tokens)), "tokens": Text(fmt.tokens(c.input_tokens + c.output_tokens)),
            "cost": cost,
            "errors": Text(str(c.errors), style="bold red") if c.errors else Text("0", style="dim"),
            "p95": Text(fmt.duration(c.p95_ns)),
        }
        return tuple(cells[name] for name in self._layout)

    def _user_cells(self, u: UserRow, now_s: float) -> tuple[Text, ...]:
        cost = Text(fmt.money(u.cost_nusd))
        if u.unpriced_calls:
            cost.append("+?", style="yellow")
        cells = {
            "user": self._id_cell(u.user_id, "user"), "conversations": Text(f"{u.conversations:,}"),
            "convs": Text(f"{u.conversations:,}"), "turns": Text(f"{u.turns:,}"), "calls": Text(f"{u.llm_calls:,}"),
            "input": Text(fmt.tokens(u.input_tokens)), "output": Text(fmt.tokens(u.output_tokens)),
            "tokens": Text(fmt.tokens(u.input_tokens + u.output_tokens)), "cost": cost,
            "errors": Text(str(u.errors), style="bold red") if u.errors else Text("0", style="dim"),
            "last seen": Text(fmt.clock(u.last_ns, now_s)),
        }
        return tuple(cells[name] for name in self._layout)

    def _describe_empty(self) -> None:
        from llmobs_tui.widgets.chrome import empty_window_text

        if self.flt.text:
            text = Text(" No conversation matches ", style="bold")
            text.append_text(fmt.safe(self.flt.text, style="bold cyan", limit=80))
            text.append(f" in the last {fmt.window_label(self.llmobs.window_s)}.", style="bold")
            text.append(" /: change the filter · t: a longer window")
        else:
            text = empty_window_text("conversations", self.llmobs.window_s,
                                     "spans name theirs with gen_ai.conversation.id or session.id")
        update_static(self.query_one("#sessions-filter", Static), text)

    # -- keys -----------------------------------------------------------------------------------

    def action_sort(self, key: str) -> None:
        name = self.sort_keys.get(key)
        if name is None:
            self.llmobs.notify(f"the {self.grouping} grouping has no {_SORT_WORDS[key]} to sort by", severity="warning")
            return
        if self.sort == name:
            self.descending = not self.descending
        else:
            self.sort, self.descending = name, name != "user"
        self._describe()
        self.llmobs.wake()

    def action_toggle_grouping(self) -> None:
        self._group_by(GROUPINGS[(GROUPINGS.index(self.grouping) + 1) % len(GROUPINGS)])

    def _group_by(self, grouping: str, user: str | None = None) -> None:
        self._sorts[self.grouping] = (self.sort, self.descending)
        self.grouping = grouping
        self.user = user
        self.sort, self.descending = self._sorts[grouping]
        self._set_columns(force=True)
        self._describe()
        self.llmobs.wake()

    def action_open(self) -> None:
        key = self.query_one(KeyedTable).cursor_key
        if key is None:
            return
        if self.grouping == "user":
            user = self.users.get(key)
            if user is None:
                return
            # A user's conversations: the ones their row sums (the filter line says whose).
            self._group_by("conversation", user=user.user_id)
            table = self.query_one(KeyedTable)
            table.reset()
            table.move_cursor(row=0)
        elif key in self.rows:
            self.llmobs.open_conversation(key)

    def on_data_table_row_selected(self, _) -> None:
        self.action_open()

    def prompt_filter(self) -> None:
        """`/` here filters conversations: applied as it is typed, Esc restores the one there was."""
        from llmobs_tui.screens.prompt import PromptScreen

        before = self.flt.text

        def change(value: str) -> str | None:
            error = self.llmobs.validate_filter(value)
            if error is None and value != self.flt.text:
                self.set_filter(value)
                self.llmobs.wake()
            return error

        def done(value: str | None) -> None:
            if value is None or self.llmobs.validate_filter(value) is not None:
                if value is not None:
                    self.llmobs.notify(self.llmobs.validate_filter(value) or "", severity="error", title="filter")
                self.set_filter(before)
            else:
                self.set_filter(value)
            self.llmobs.wake()

        app = self.llmobs
        app.push_screen(PromptScreen("/", before, "filter conversations (one of its traces matches): user=u42 "
                                     "model=~gpt-4.* status=error cost>$0.01 · Tab completes · Enter keeps, Esc "
                                     "restores", history=app.prompt_history["filter"], complete=app.complete_filter,
                                     on_change=change), done)
