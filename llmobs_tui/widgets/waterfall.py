"""The span tree of one trace as a waterfall scaled to the terminal.

Rows are spans in tree order (children by start time, so parallel siblings sit under each other
with overlapping bars). LLM calls carry model, tokens and cost, and a tick where the first token
arrived. Drawn with the line API: a 500-span trace renders only the lines on screen.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from llmobs_tui import format as fmt
from llmobs_tui.critical_path import CriticalPath, analyse
from store.dashboards import SpanRow

KIND_MARK = fmt.KIND_MARK  # defined in format, Textual-free, for `llmobs-tui show` too
ZOOMS = (1, 2, 4, 8, 16, 32)
# Label parts, most important first: a narrow label drops them from the end.
LABEL_KEEP = ("duration", "dup", "error", "self", "cost", "model", "tokens")
# The gutter mark of a span on the critical path (a glyph, so it survives NO_COLOR).
CRITICAL_MARK = "┃"

# Explicit colours: a theme's ANSI magenta and red can be the same pink, and LLM calls must not
# look like failures. Under NO_COLOR, Textual turns these into shades.
STYLE_NAME = Style()
STYLE_DIM = Style(dim=True)
STYLE_LLM = Style(color="#a78bfa", bold=True)
STYLE_ERROR = Style(color="#f87171", bold=True)
# Bars are background colour (htop style), so a label can sit on a bar without hiding it.
STYLE_BAR = Style(color="#f9fafb", bgcolor="#4b5563")
STYLE_BAR_LLM = Style(color="#f9fafb", bgcolor="#6d28d9")
STYLE_BAR_WAIT = Style(color="#f9fafb", bgcolor="#92400e")  # waiting for the first token
STYLE_BAR_ERROR = Style(color="#f9fafb", bgcolor="#b91c1c")
STYLE_LABEL = Style(color="cyan")
STYLE_CURSOR = Style(reverse=True)
STYLE_CRITICAL = Style(color="#fbbf24", bold=True)
# A span that matches the search inside the trace (`/`): a glyph before the name (it survives
# NO_COLOR) and the name on an amber ground. Drawn only while a search is on.
MATCH_MARK = "»"
STYLE_MATCH_MARK = Style(color="#fbbf24", bold=True)
STYLE_MATCH = Style(color="#111827", bgcolor="#fbbf24", bold=True)


@functools.cache
def _underlined(style: Style) -> Style:
    # Cached: one object per style, so runs of equal styles still merge by identity.
    return style + Style(underline=True)


@dataclass(slots=True)
class Row:
    span: SpanRow
    depth: int
    prefix: str
    has_children: bool
    collapsed: bool


class Waterfall(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    Waterfall { height: 1fr; scrollbar-size-horizontal: 0; }
    """
    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "cursor(-10)", show=False),
        Binding("pagedown", "cursor(10)", show=False),
        Binding("home", "cursor(-1000000)", show=False),
        Binding("end", "cursor(1000000)", show=False),
        Binding("space", "toggle", "Collapse"),
        Binding("l", "llm_only", "LLM only"),
        Binding("p", "critical_only", "Critical path only"),
        Binding("plus,equals_sign", "zoom(1)", "Zoom in"),
        Binding("minus", "zoom(-1)", "Zoom out"),
        Binding("n", "next_error(1)", "Next error"),
        Binding("N", "next_error(-1)", "Prev error"),
        # While a search is on, n/N step through its matches instead (check_action picks one of
        # the two bindings of each key); Esc on the Trace screen ends the search.
        Binding("n", "next_match(1)", "Next match"),
        Binding("N", "next_match(-1)", "Prev match"),
    ]

    cursor: reactive[int] = reactive(0)
    llm_only: reactive[bool] = reactive(False)
    critical_only: reactive[bool] = reactive(False)
    zoom_level: reactive[int] = reactive(0)

    class Selected(Message):
        def __init__(self, span: SpanRow | None) -> None:
            super().__init__()
            self.span = span

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._spans: list[SpanRow] = []
        self._children: dict[bytes | None, list[SpanRow]] = {}
        self._collapsed: set[bytes] = set()
        self._rows: list[Row] = []
        self._t0 = 0
        self._t1 = 1
        self.critical_path: CriticalPath = analyse([])
        self._critical_sections: dict[bytes, list[tuple[int, int]]] = {}
        self._matches: frozenset[bytes] | None = None  # None: no search on
        self._tree_order: list[SpanRow] = []  # every span in tree order, collapsed or filtered or not

    # -- data ----------------------------------------------------------------------------------

    def set_spans(self, spans: Sequence[SpanRow], select: bytes | None = None) -> None:
        selected = select or (self.selected.span_id if self.selected else None)
        self._spans = list(spans)
        present = {s.span_id for s in self._spans}
        self._children = {}
        for span in sorted(self._spans, key=lambda s: (s.start_ns, s.id)):
            parent = span.parent_span_id if span.parent_span_id in present else None
            self._children.setdefault(parent, []).append(span)
        if self._spans:
            self._t0 = min(s.start_ns for s in self._spans)
            self._t1 = max(max(s.end_ns for s in self._spans), self._t0 + 1)
        self.critical_path = analyse(self._spans)
        self._critical_sections = {}
        for span_id, start, end in self.critical_path.sections:
            self._critical_sections.setdefault(span_id, []).append((start, end))
        self._tree_order = []
        self._walk_all(None, set())
        self._build_rows()
        if selected is not None:
            self.select_span(selected)
        else:
            self.cursor = min(self.cursor, max(0, len(self._rows) - 1))
            self._post_selected()

    def _build_rows(self) -> None:
        rows: list[Row] = []
        llm_only = self.llm_only
        on_path = self.critical_path.on_path if self.critical_only else None

        def walk(parent: bytes | None, depth: int, prefix: str) -> None:
            children = self._children.get(parent, [])
            for i, span in enumerate(children):
                last = i == len(children) - 1
                has_children = span.span_id in self._children
                collapsed = span.span_id in self._collapsed
                branch = ("└─" if last else "├─") if depth else ""
                if (not llm_only or span.is_llm) and (on_path is None or span.span_id in on_path):
                    rows.append(Row(span, depth, prefix + branch, has_children, collapsed))
                if has_children and not collapsed:
                    walk(span.span_id, depth + 1, prefix + (("  " if last else "│ ") if depth else ""))

        walk(None, 0, "")
        self._rows = rows
        self.virtual_size = Size(self.scrollable_content_region.width, len(rows))
        self.refresh()

    @property
    def rows(self) -> list[Row]:
        return self._rows

    @property
    def selected(self) -> SpanRow | None:
        if 0 <= self.cursor < len(self._rows):
            return self._rows[self.cursor].span
        return None

    def select_span(self, span_id: bytes) -> bool:
        for i, row in enumerate(self._rows):
            if row.span.span_id == span_id:
                self.cursor = i
                self.scroll_to_cursor()  # also when the cursor index did not change (another trace)
                self._post_selected()
                return True
        return False

    # -- rendering -----------------------------------------------------------------------------

    def _window(self) -> tuple[int, int]:
        """The time range on screen: the whole trace, or a zoomed slice around the cursor."""
        zoom = ZOOMS[self.zoom_level]
        if zoom == 1 or self.selected is None:
            return self._t0, self._t1
        width = (self._t1 - self._t0) / zoom
        center = self.selected.start_ns + (self.selected.end_ns - self.selected.start_ns) / 2
        start = max(self._t0, min(center - width / 2, self._t1 - width))
        return int(start), int(start + width)

    def render_line(self, y: int) -> Strip:
        # Not size.width: a vertical scrollbar takes columns from it, and a label must end on screen.
        width = self.scrollable_content_region.width
        index = int(self.scroll_offset.y) + y
        if index >= len(self._rows) or width <= 0:
            # Every segment carries a Style: Textual's NO_COLOR filter fails on a style of None.
            return Strip.blank(width, STYLE_NAME)
        return Strip(self._segments(self._rows[index], width, index == self.cursor), width)

    def _segments(self, row: Row, width: int, is_cursor: bool) -> list[Segment]:
        span = row.span
        name_width = max(16, min(width * 2 // 5, 48))
        mark = KIND_MARK.get(span.kind, "·")
        toggle = ("▸" if row.collapsed else "▾") if row.has_children else " "
        name = fmt.clean(span.name, limit=200)
        head = f"{row.prefix}{toggle}{mark} "
        label_room = name_width - len(head) - 1
        if len(name) > label_room:
            name = name[: max(0, label_room - 1)] + "…"
        name_style = STYLE_ERROR if span.failed else (STYLE_LLM if span.is_llm else STYLE_NAME)
        critical = span.span_id in self.critical_path.contribution_ns
        segments = [Segment(CRITICAL_MARK if critical else " ", STYLE_CRITICAL if critical else STYLE_NAME),
                    Segment(head, STYLE_DIM), Segment(name.ljust(max(0, label_room)), name_style)]
        if self._matches is not None and span.span_id in self._matches:
            segments[1:] = [Segment(head[:-1], STYLE_DIM), Segment(MATCH_MARK, STYLE_MATCH_MARK),
                            Segment(name, STYLE_MATCH), Segment(" " * max(0, label_room - len(name)), STYLE_NAME)]

        bar_width = width - name_width - 1
        if bar_width < 4:
            return self._finish(segments, width, is_cursor)
        t0, t1 = self._window()
        scale = bar_width / max(1, t1 - t0)
        start = (span.start_ns - t0) * scale
        end = (span.end_ns - t0) * scale
        cells = [" "] * bar_width
        styles = [STYLE_DIM] * bar_width
        a = max(0, min(bar_width - 1, int(start)))
        b = max(a + 1, min(bar_width, round(end)))
        bar_style = STYLE_BAR_ERROR if span.failed else (STYLE_BAR_LLM if span.is_llm else STYLE_BAR)
        if end < 0 or start > bar_width:
            pass  # outside the zoomed window
        else:
            for i in range(a, b):
                styles[i] = bar_style
            if span.ttft_ns is not None and span.is_llm and not span.failed:
                tick = int((span.start_ns + span.ttft_ns - t0) * scale)
                for i in range(a, min(b, tick)):
                    styles[i] = STYLE_BAR_WAIT
                if a <= tick < b:
                    cells[tick] = "▏"  # the first token
            if start < 0:
                cells[0] = "◂"
            if end > bar_width:
                cells[-1] = "▸"
        # The label goes right of the bar, else left of it, else on it: wherever the most of it
        # fits. Whole parts are dropped from the least important end, never a figure cut.
        best: tuple[int, str, str] = (0, "", "")
        for where, room in (("right", bar_width - b - 1), ("left", a - 1), ("inside", b - a - 2)):
            parts = self.label_parts(span, room, self.critical_path.self_ns.get(span.span_id))
            if len(parts) > best[0]:
                best = (len(parts), where, " ".join(text for _, text in parts))
        _, where, label = best
        if where == "right":
            for i, ch in enumerate(label):
                cells[b + 1 + i] = ch
                styles[b + 1 + i] = STYLE_LABEL
        elif where == "left":
            for i, ch in enumerate(label):
                cells[a - 1 - len(label) + i] = ch
                styles[a - 1 - len(label) + i] = STYLE_LABEL
        elif where == "inside":
            # No room beside the bar: write the label on it (the bar's colour stays).
            for i, ch in enumerate(label):
                cells[a + 1 + i] = ch
        # The part of the bar on the critical path is underlined (Jaeger draws a line over it).
        for section_start, section_end in self._critical_sections.get(span.span_id, ()):
            first = max(0, int((section_start - t0) * scale))
            last = min(bar_width, max(first + 1, round((section_end - t0) * scale)))
            for i in range(first, last):
                styles[i] = _underlined(styles[i])
        segments.append(Segment(" ", STYLE_NAME))
        run_start = 0
        for i in range(1, bar_width + 1):
            if i == bar_width or styles[i] is not styles[run_start]:
                segments.append(Segment("".join(cells[run_start:i]), styles[run_start]))
                run_start = i
        return self._finish(segments, width, is_cursor)

    @staticmethod
    def label_parts(span: SpanRow, room: int | None = None, self_ns: int | None = None) -> list[tuple[str, str]]:
        """(kind, text) of a bar's label in display order; with `room`, the most important parts
        that fit in that many cells (tokens go first, then model, cost, self time, error, dup; the
        duration last). `self_ns`: the span's own time, shown when children cover part of it."""
        parts = [("duration", fmt.duration(span.duration_ns))]
        if self_ns is not None and span.duration_ns is not None and self_ns < span.duration_ns:
            parts.append(("self", f"self {fmt.duration(self_ns)}"))
        if span.is_llm:
            if not span.billed and span.duplicate_of is not None:
                # First after the duration, so that a narrow label still says it: billed on its twin.
                parts.append(("dup", "dup"))
            if span.model:
                parts.append(("model", fmt.clean(span.model, limit=40)))
            if span.input_tokens is not None or span.output_tokens is not None:
                parts.append(("tokens", f"{fmt.tokens(span.input_tokens)}→{fmt.tokens(span.output_tokens)}"))
            if span.billed:
                parts.append(("cost", fmt.money(span.cost_nusd, unpriced=True)))
        if span.error_subclass or span.error_class:
            parts.append(("error", f"✗ {fmt.clean(span.error_subclass or span.error_class, limit=24)}"))
        if room is None:
            return parts
        while parts and len(" ".join(text for _, text in parts)) > room:
            parts.remove(max(parts, key=lambda part: LABEL_KEEP.index(part[0])))
        return parts

    @classmethod
    def label(cls, span: SpanRow, room: int | None = None, self_ns: int | None = None) -> str:
        return " ".join(text for _, text in cls.label_parts(span, room, self_ns))

    @staticmethod
    def _finish(segments: list[Segment], width: int, is_cursor: bool) -> list[Segment]:
        strip = Strip(segments).crop(0, width)
        if is_cursor:
            strip = strip.apply_style(STYLE_CURSOR)
        return list(strip)

    # -- interaction ---------------------------------------------------------------------------

    def on_resize(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, len(self._rows))
        self.refresh()
        self.call_after_refresh(self.scroll_to_cursor)

    def on_mount(self) -> None:
        self.call_after_refresh(self.scroll_to_cursor)

    def watch_cursor(self, old: int, new: int) -> None:
        self.scroll_to_cursor()
        self.refresh()

    def scroll_to_cursor(self) -> None:
        """Keep the selected row on screen (also once the size is known, and after a resize)."""
        self.scroll_to_region_if_needed(self.cursor)

    def scroll_to_region_if_needed(self, index: int) -> None:
        if not self.size.height or not self._rows:
            return  # not laid out yet: on_resize scrolls once it is
        top = int(self.scroll_offset.y)
        height = self.size.height
        if index < top:
            self.scroll_to(y=index, animate=False)
        elif index >= top + height:
            self.scroll_to(y=index - height + 1, animate=False)

    def _post_selected(self) -> None:
        self.post_message(self.Selected(self.selected))

    def action_cursor(self, step: int) -> None:
        if not self._rows:
            return
        self.cursor = max(0, min(len(self._rows) - 1, self.cursor + step))
        self._post_selected()

    def action_toggle(self) -> None:
        span = self.selected
        if span is None or span.span_id not in self._children:
            return
        if span.span_id in self._collapsed:
            self._collapsed.discard(span.span_id)
        else:
            self._collapsed.add(span.span_id)
        self._build_rows()
        self.select_span(span.span_id)

    def action_llm_only(self) -> None:
        self.llm_only = not self.llm_only

    def action_critical_only(self) -> None:
        self.critical_only = not self.critical_only

    def watch_critical_only(self) -> None:
        self._rebuild_keeping_selection()

    def watch_llm_only(self) -> None:
        self._rebuild_keeping_selection()

    def _rebuild_keeping_selection(self) -> None:
        """Rows change with a filter (LLM only, critical path only): keep the selected span if it stays."""
        selected = self.selected
        self._build_rows()
        if selected is None or not self.select_span(selected.span_id):
            self.cursor = 0
            self._post_selected()

    def action_zoom(self, step: int) -> None:
        self.zoom_level = max(0, min(len(ZOOMS) - 1, self.zoom_level + step))

    def watch_zoom_level(self) -> None:
        self.refresh()

    def action_next_error(self, step: int) -> None:
        if not self._rows:
            return
        n = len(self._rows)
        for k in range(1, n + 1):
            i = (self.cursor + step * k) % n
            if self._rows[i].span.failed:
                self.cursor = i
                self._post_selected()
                return
        self.notify("No failed span in this trace", severity="information", timeout=2)

    # -- search inside the trace ---------------------------------------------------------------

    def _walk_all(self, parent: bytes | None, seen: set[bytes]) -> None:
        """Every span under `parent` in tree order into _tree_order; a stack, not recursion, so a
        chain thousands of spans deep does not hit Python's recursion limit."""
        stack = list(reversed(self._children.get(parent, [])))
        while stack:
            span = stack.pop()
            if span.span_id in seen:
                continue  # a repeated span id must not loop
            seen.add(span.span_id)
            self._tree_order.append(span)
            stack.extend(reversed(self._children.get(span.span_id, [])))

    def set_matches(self, span_ids: Collection[bytes] | None) -> None:
        """Mark the spans a search matched (None: no search, the rows drawn as without one)."""
        matches = None if span_ids is None else frozenset(span_ids)
        if matches == self._matches:
            return  # the live loop marks the same matches every tick
        self._matches = matches
        self.refresh()
        self.refresh_bindings()

    @property
    def searching(self) -> bool:
        return self._matches is not None

    @property
    def match_order(self) -> list[SpanRow]:
        """The matching spans in tree order (top to bottom as if nothing were collapsed)."""
        if not self._matches:
            return []
        return [span for span in self._tree_order if span.span_id in self._matches]

    def hidden_by_filter(self, span: SpanRow) -> bool:
        return (self.llm_only and not span.is_llm) or (
            self.critical_only and span.span_id not in self.critical_path.on_path)

    def action_next_match(self, step: int) -> None:
        """The next (step 1) or previous (-1) matching span after the selected one, wrapping round;
        a match inside a collapsed subtree is shown by expanding it, one hidden by `l` or `p` is
        skipped (the header counts it)."""
        order = self.match_order
        if not order:
            self.notify("No span matches the search", severity="information", timeout=2)
            return
        position = {span.span_id: i for i, span in enumerate(self._tree_order)}
        here = position.get(self.selected.span_id, -1) if self.selected else -1
        if step > 0:
            candidates = [s for s in order if position[s.span_id] > here] + \
                [s for s in order if position[s.span_id] <= here]
        else:
            candidates = [s for s in order if position[s.span_id] < here][::-1] + \
                [s for s in order if position[s.span_id] >= here][::-1]
        for span in candidates:
            if self.hidden_by_filter(span):
                continue
            if not self.select_span(span.span_id):
                self._expand_to(span)
                self.select_span(span.span_id)
            return
        self.notify("Every match is hidden by l (LLM only) or p (critical path only)", severity="information",
                    timeout=3)

    def _expand_to(self, span: SpanRow) -> None:
        by_id = {s.span_id: s for s in self._spans}
        parent = span.parent_span_id
        for _ in range(len(by_id)):
            if parent is None or parent not in by_id:
                break
            self._collapsed.discard(parent)
            parent = by_id[parent].parent_span_id
        self._build_rows()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # n/N: the search's matches while one is on, else the failed spans.
        if action == "next_match":
            return self.searching
        if action == "next_error":
            return not self.searching
        return True

    def on_click(self, event) -> None:
        index = int(self.scroll_offset.y) + event.y
        if 0 <= index < len(self._rows):
            self.cursor = index
            self._post_selected()
