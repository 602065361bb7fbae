"""Critical path and self time of a trace: which spans made it as long as it is.

The critical path is the chain of work the trace's end waited on (Jaeger's definition): start at the
root's end and walk back in time; at each moment the span on the path is the deepest one whose
last-finishing child has not yet been entered. A parent's time between its children's ends is its own
contribution; children running in parallel with the path contribute nothing (making them faster would
not shorten the trace). Each span's contribution summed over the path is the trace's duration.

A span that outlives its parent (an async call the root did not wait for) still held the trace open:
the walk follows each span's extent, the hull of it and its descendants, so the contributions always
add up to the trace's duration.

Pure and Textual-free: the waterfall, the trace header and `llmobs-tui show` all use it. Iterative (a
2,000-deep chain of spans must not hit Python's recursion limit) and O(n log n).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llmobs_tui import format as fmt


class Timed(Protocol):
    """What the analysis needs of a span (store.dashboards.SpanRow has these fields)."""

    @property
    def span_id(self) -> Hashable: ...
    @property
    def parent_span_id(self) -> Hashable | None: ...
    @property
    def start_ns(self) -> int: ...
    @property
    def end_ns(self) -> int: ...


class Labelled(Timed, Protocol):
    """A span that can be named in the list of top contributors."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...


# The synthetic root above several roots (or orphans whose parent was never received): its own
# contribution is time in which no received span was running.
GAP: Hashable = None


@dataclass(slots=True)
class CriticalPath:
    duration_ns: int
    # span id → nanoseconds of the trace's duration this span accounts for on the path (GAP: no span).
    contribution_ns: dict[Hashable, int] = field(default_factory=dict)
    # span id → its own time: duration minus the time any child was running (clipped to the span).
    self_ns: dict[Hashable, int] = field(default_factory=dict)
    # Ordered back from the end: (span id, section start, section end).
    sections: list[tuple[Hashable, int, int]] = field(default_factory=list)

    @property
    def on_path(self) -> set[Hashable]:
        """Spans the path goes through (also a span whose whole time is covered by its children)."""
        return {span_id for span_id in self.contribution_ns if span_id is not GAP}

    def top(self, n: int = 3) -> list[tuple[Hashable, int]]:
        """The n largest contributors, gaps included (time nothing was running is a finding too)."""
        ranked = sorted(self.contribution_ns.items(), key=lambda item: -item[1])
        return [(span_id, ns) for span_id, ns in ranked if ns > 0][:n]


NO_SPAN_RUNNING = "no span running"


def contributor_parts(path: CriticalPath, spans: Sequence[Labelled], n: int = 3) -> list[tuple[str, str]]:
    """The top `n` contributors to the trace's duration as (label, figures), the wording the trace
    header and `llmobs-tui show` share: `● chat gpt-4o` and `1.20s 60%`. Time in which no span ran
    is `no span running`. Labels are cleaned of control characters; empty when there is nothing to
    rank (a single span, or no duration)."""
    if len(spans) < 2 or not path.duration_ns:
        return []
    by_id = {s.span_id: s for s in spans}
    parts = []
    for span_id, ns in path.top(n):
        span = by_id.get(span_id) if span_id is not GAP else None
        if span is None:
            label = NO_SPAN_RUNNING
        else:
            label = f"{fmt.KIND_MARK.get(span.kind, '·')} {fmt.clean(span.name, limit=40)}"
        parts.append((label, f"{fmt.duration(ns)} {ns / path.duration_ns:.0%}"))
    return parts


def analyse(spans: Sequence[Timed]) -> CriticalPath:
    if not spans:
        return CriticalPath(0)
    present = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_span_id is None or s.parent_span_id not in present
             or s.parent_span_id == s.span_id]
    root_ids = {id(s) for s in roots}
    t0 = min(s.start_ns for s in spans)
    t1 = max(max(s.end_ns, s.start_ns) for s in spans)
    bounds: dict[Hashable, tuple[int, int]] = {}
    children: dict[Hashable, list[Hashable]] = {}
    parent_of: dict[Hashable, Hashable] = {}
    by_parent: dict[Hashable, list[Timed]] = {}
    for span in spans:
        if id(span) in root_ids:
            continue
        by_parent.setdefault(span.parent_span_id, []).append(span)

    if len(roots) == 1:
        root_id: Hashable = roots[0].span_id
        top_level: list[Timed] = by_parent.get(root_id, [])
    else:
        root_id = GAP
        top_level = roots

    # Each span's own interval, and its extent: the hull of its interval and its descendants'. A child
    # that outlives its parent (an async call the root did not wait for) still held the trace open, so
    # the walk follows extents; a span's self time uses its own interval.
    own: dict[Hashable, tuple[int, int]] = {GAP: (t0, t1)}
    order: list[Hashable] = [root_id]
    if root_id is not GAP:
        own[root_id] = (roots[0].start_ns, max(roots[0].end_ns, roots[0].start_ns))
    queue: list[tuple[Hashable, list[Timed]]] = [(root_id, top_level)]
    while queue:
        parent, kids = queue.pop()
        listed = []
        for kid in kids:
            if kid.span_id in own:
                continue  # a repeated id: the first one stands
            own[kid.span_id] = (kid.start_ns, max(kid.end_ns, kid.start_ns))
            parent_of[kid.span_id] = parent
            listed.append(kid.span_id)
            order.append(kid.span_id)
            if kid.span_id in by_parent:
                queue.append((kid.span_id, by_parent[kid.span_id]))
        children[parent] = listed
    for sid in reversed(order):  # children before parents
        start, end = own[sid]
        for kid in children.get(sid, ()):
            start, end = min(start, bounds[kid][0]), max(end, bounds[kid][1])
        bounds[sid] = (start, end)
    for kids in children.values():
        kids.sort(key=lambda sid: (bounds[sid][1], bounds[sid][0]))

    result = CriticalPath(bounds[root_id][1] - bounds[root_id][0])
    result.self_ns = {sid: _self_time(own[sid], [own[c] for c in children.get(sid, ())])
                      for sid in order if sid is not GAP}
    # Walk back from the end. `next_child[p]`: children of p at this index and above were entered or
    # end too late; it only decreases, so every child is entered at most once and the walk ends.
    next_child = {sid: len(kids) for sid, kids in children.items()}
    current, bound = root_id, bounds[root_id][1]
    contribution = result.contribution_ns
    while True:
        kids = children.get(current, [])
        index = next_child.get(current, 0) - 1
        while index >= 0 and bounds[kids[index]][1] > bound:
            index -= 1  # ends after the point the walk has reached: ran alongside the path
        if index >= 0:
            next_child[current] = index
            child = kids[index]
            child_end = bounds[child][1]
            _add(result, current, child_end, bound)
            current, bound = child, child_end
            continue
        next_child[current] = 0
        _add(result, current, bounds[current][0], bound)
        if current == root_id and current not in parent_of:
            break
        current, bound = parent_of[current], bounds[current][0]
    if contribution.get(GAP) == 0:
        del contribution[GAP]
    return result


def _add(result: CriticalPath, span_id: Hashable, start: int, end: int) -> None:
    result.contribution_ns[span_id] = result.contribution_ns.get(span_id, 0) + max(0, end - start)
    if end > start:
        result.sections.append((span_id, start, end))


def _self_time(span: tuple[int, int], kids: list[tuple[int, int]]) -> int:
    """The span's duration minus the union of its children's intervals (clipped to the span)."""
    start, end = span
    covered = 0
    run_start = run_end = None
    clipped = ((max(k_start, start), min(k_end, end)) for k_start, k_end in kids)
    for k_start, k_end in sorted(c for c in clipped if c[0] < c[1]):
        if run_end is None or k_start > run_end:
            if run_end is not None:
                covered += run_end - run_start
            run_start, run_end = k_start, k_end
        else:
            run_end = max(run_end, k_end)
    if run_end is not None:
        covered += run_end - run_start
    return max(0, end - start - covered)
