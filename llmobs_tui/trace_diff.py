"""Trace diff (`m` marks a trace, `d` on another compares them): two traces aligned span by span.

A span's place is its path: the names from the root down to it, each with its order among the
siblings of the same name (the second `search_docs` under `agent`). Spans with the same path in
both traces are the same step; a path only in this trace is an added span, one only in the
marked trace a missing span. For each step: duration, token and cost deltas (this − marked); for
the whole traces: the first system prompt and the last LLM output, as line diffs. Pure and
Textual-free: the screen (screens/trace_diff.py) reads the spans and details and draws this.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmobs_tui import format as fmt
from llmobs_tui.trace_search import message_text
from store.dashboards import SpanRow
from store.span_detail import SpanDetail

PathKey = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class AlignedSpan:
    """One step of the two traces: the span at `path` in the marked trace and in this one."""

    path: PathKey
    marked: SpanRow | None
    this: SpanRow | None

    @property
    def depth(self) -> int:
        return len(self.path) - 1

    @property
    def name(self) -> str:
        return self.path[-1][0]

    @property
    def status(self) -> str:
        """"both", "added" (only in this trace) or "missing" (only in the marked trace)."""
        if self.marked is None:
            return "added"
        if self.this is None:
            return "missing"
        return "both"

    @property
    def duration_delta_ns(self) -> int | None:
        if self.marked is None or self.this is None:
            return None
        if self.marked.duration_ns is None or self.this.duration_ns is None:
            return None
        return self.this.duration_ns - self.marked.duration_ns

    @property
    def tokens_delta(self) -> int | None:
        """Input plus output tokens, this − marked (an added span: all of its own, a missing one:
        minus all of its), so that billed calls' deltas add up to the traces' difference. None
        when neither side has usage."""
        marked = span_tokens(self.marked) if self.marked is not None else None
        this = span_tokens(self.this) if self.this is not None else None
        if marked is None and this is None:
            return None
        return (this or 0) - (marked or 0)

    @property
    def cost_delta_nusd(self) -> int | None:
        """Billed cost, this − marked (added or missing spans as for tokens). None when neither
        side is a billed call, or one side is unpriced (the difference is not known)."""
        sides = [span for span in (self.marked, self.this) if span is not None]
        if not any(span.billed for span in sides) or any(_unpriced(span) for span in sides):
            return None
        this = span_cost(self.this) if self.this is not None else None
        marked = span_cost(self.marked) if self.marked is not None else None
        return (this or 0) - (marked or 0)

    @property
    def unpriced(self) -> bool:
        return any(span is not None and _unpriced(span) for span in (self.marked, self.this))


def span_tokens(span: SpanRow) -> int | None:
    if span.input_tokens is None and span.output_tokens is None:
        return None
    return (span.input_tokens or 0) + (span.output_tokens or 0)


def span_cost(span: SpanRow) -> int | None:
    """What the span was billed (None: not a billed call, or unpriced); a wrapper's cost is its call's."""
    return span.cost_nusd if span.billed else None


def _unpriced(span: SpanRow) -> bool:
    return bool(span.billed) and span.cost_nusd is None


def _children(spans: Sequence[SpanRow]) -> dict[bytes | None, list[SpanRow]]:
    """Children by parent in start order, as the waterfall draws them (an unknown parent: a root)."""
    present = {s.span_id for s in spans}
    children: dict[bytes | None, list[SpanRow]] = {}
    for span in sorted(spans, key=lambda s: (s.start_ns, s.id)):
        parent = span.parent_span_id if span.parent_span_id in present else None
        children.setdefault(parent, []).append(span)
    return children


def _keyed(siblings: Sequence[SpanRow]) -> list[tuple[tuple[str, int], SpanRow]]:
    seen: Counter[str] = Counter()
    keyed = []
    for span in siblings:
        keyed.append(((span.name, seen[span.name]), span))
        seen[span.name] += 1
    return keyed


def align(marked: Sequence[SpanRow], this: Sequence[SpanRow]) -> list[AlignedSpan]:
    """Both traces' spans as one tree in display order: siblings in this trace's order, each span
    only in the marked trace placed right after the sibling it follows there."""
    marked_children, this_children = _children(marked), _children(this)
    rows: list[AlignedSpan] = []
    # Per trace (a replayed trace can reuse span ids): a repeated id or a cycle must not loop forever.
    marked_seen: set[bytes] = set()
    this_seen: set[bytes] = set()

    def kids(children: dict[bytes | None, list[SpanRow]], seen: set[bytes], span: SpanRow | None) -> list[SpanRow]:
        if span is None or span.span_id in seen:
            return []
        seen.add(span.span_id)
        return children.get(span.span_id, [])

    def merged(marked_siblings: list[SpanRow], this_siblings: list[SpanRow], path: PathKey
               ) -> list[tuple[PathKey, SpanRow | None, SpanRow | None]]:
        a, b = _keyed(marked_siblings), _keyed(this_siblings)
        b_index = {key: i for i, (key, _) in enumerate(b)}
        b_span = dict(b)
        order: list[tuple[float, int, tuple[str, int], SpanRow | None, SpanRow | None]] = []
        last = -1.0
        for i, (key, span) in enumerate(a):
            if key in b_index:
                last = b_index[key]
                order.append((last, 0, key, span, b_span[key]))
            else:
                # Marked-only: right after the matched sibling before it (several: in their order).
                order.append((last + 0.5, i + 1, key, span, None))
        a_keys = {key for key, _ in a}
        order += [(b_index[key], 0, key, None, span) for key, span in b if key not in a_keys]
        return [((*path, key), m, t) for _, _, key, m, t in sorted(order, key=lambda o: (o[0], o[1]))]

    # Depth first with a stack of sibling lists, not recursion: a chain thousands deep is fine.
    stack = [iter(merged(marked_children.get(None, []), this_children.get(None, []), ()))]
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
            continue
        path, marked_span, this_span = step
        rows.append(AlignedSpan(path, marked_span, this_span))
        stack.append(iter(merged(kids(marked_children, marked_seen, marked_span),
                                 kids(this_children, this_seen, this_span), path)))
    return rows


@dataclass(frozen=True, slots=True)
class TraceTotals:
    duration_ns: int
    spans: int
    llm_calls: int
    tokens: int
    cost_nusd: int
    unpriced: int


def totals(spans: Sequence[SpanRow]) -> TraceTotals:
    """As the Trace screen's header counts them: billed calls' tokens and cost."""
    calls = [s for s in spans if s.billed]
    duration = max(s.end_ns for s in spans) - min(s.start_ns for s in spans) if spans else 0
    return TraceTotals(duration, len(spans), len(calls),
                       sum((s.input_tokens or 0) + (s.output_tokens or 0) for s in calls),
                       sum(s.cost_nusd or 0 for s in calls), sum(1 for s in calls if s.cost_nusd is None))


def _by_start(details: Sequence[SpanDetail]) -> list[SpanDetail]:
    return sorted(details, key=lambda d: (d.span.start_ns, d.span.id))


def first_system_prompt(details: Sequence[SpanDetail]) -> str | None:
    """The first system (or developer) message of the trace's first LLM call that has one."""
    for detail in _by_start(details):
        if not detail.span.is_llm:
            continue
        for message in detail.messages:
            if message.direction == "input" and message.role in ("system", "developer"):
                return message_text(message)
    return None


def final_output(details: Sequence[SpanDetail]) -> str | None:
    """The output messages of the trace's last LLM call (by end time) that recorded any."""
    for detail in sorted(details, key=lambda d: (d.span.end_ns, d.span.start_ns, d.span.id), reverse=True):
        if not detail.span.is_llm:
            continue
        outputs = [message_text(m) for m in detail.messages if m.direction == "output"]
        if any(outputs):
            return "\n".join(text for text in outputs if text)
    return None


@dataclass(frozen=True, slots=True)
class DiffLine:
    kind: str  # "same" | "added" | "removed" | "hunk"
    text: str


def line_diff(marked: str | None, this: str | None, context: int = 3) -> list[DiffLine]:
    """A unified line diff (difflib) of the marked text against this one, without the file header;
    empty when they are the same."""
    if marked == this:
        return []
    lines = difflib.unified_diff((marked or "").splitlines(), (this or "").splitlines(), lineterm="", n=context)
    out: list[DiffLine] = []
    for line in lines:
        if line.startswith(("---", "+++")) and not out:
            continue  # the header: two lines before the first hunk
        if line.startswith("@@"):
            out.append(DiffLine("hunk", line))
        elif line.startswith("+"):
            out.append(DiffLine("added", line[1:]))
        elif line.startswith("-"):
            out.append(DiffLine("removed", line[1:]))
        else:
            out.append(DiffLine("same", line[1:]))
    return out


@dataclass(frozen=True, slots=True)
class TraceDiff:
    spans: list[AlignedSpan]
    marked: TraceTotals
    this: TraceTotals
    marked_system: str | None
    this_system: str | None
    marked_output: str | None
    this_output: str | None

    @property
    def added(self) -> int:
        return sum(1 for row in self.spans if row.status == "added")

    @property
    def missing(self) -> int:
        return sum(1 for row in self.spans if row.status == "missing")

    @property
    def system_diff(self) -> list[DiffLine]:
        return line_diff(self.marked_system, self.this_system)

    @property
    def output_diff(self) -> list[DiffLine]:
        return line_diff(self.marked_output, self.this_output)


def diff_traces(marked: Sequence[SpanRow], this: Sequence[SpanRow], marked_details: Sequence[SpanDetail],
                this_details: Sequence[SpanDetail]) -> TraceDiff:
    return TraceDiff(align(marked, this), totals(marked), totals(this),
                     first_system_prompt(marked_details), first_system_prompt(this_details),
                     final_output(marked_details), final_output(this_details))


# -- signed figures: "+1.15s", "-300 tok", "+$0.0030" -------------------------------------------------


def _signed(value: int | None, show: Callable[[int], str]) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "±0"
    return ("+" if value > 0 else "-") + show(abs(value))


def signed_duration(ns: int | None) -> str:
    return _signed(ns, fmt.duration)


def signed_tokens(n: int | None) -> str:
    return _signed(n, lambda v: f"{fmt.tokens(v)} tok")


def signed_money(nusd: int | None) -> str:
    return _signed(nusd, fmt.money)
