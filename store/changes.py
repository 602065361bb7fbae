"""Change markers: the first time each value of a changing thing was seen (table `changes`, m007).

A row with no `before` is a baseline (the first prompt version, the first model a requested model
was served as, the first service.version) and is not drawn; an error class's or a price table's
first occurrence is itself the change. The read side is here; the writer records them.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.dashboards import Query

NS = 1_000_000_000
# Kinds whose first row is a change in itself (there is no "before" to compare with).
CHANGES_WITHOUT_BEFORE = ("error_class", "prices")
KIND_WORDS = {
    "prompt_version": "prompt",
    "served_model": "model",
    "service_version": "service",
    "error_class": "new error",
    "prices": "prices",
}


@dataclass(frozen=True, slots=True)
class Change:
    time_s: float
    kind: str
    scope: str
    before: str | None
    after: str
    trace_id: bytes | None

    def describe(self) -> str:
        """One line of plain text (the caller escapes it for display): what changed, from what."""
        words = KIND_WORDS.get(self.kind, self.kind)
        what = f"{words} {self.scope}" if self.scope else words
        if self.before is None:
            return f"{what}: {self.after}"
        return f"{what}: {self.before} → {self.after}"


def changes_query(start_s: float, end_s: float, limit: int = 500) -> Query:
    """The changes to draw in [start_s, end_s], oldest first (baselines left out)."""
    kinds = ", ".join("?" * len(CHANGES_WITHOUT_BEFORE))
    return Query(
        "SELECT time_ns, kind, scope, before, after, trace_id FROM changes "
        f"WHERE time_ns >= ? AND time_ns <= ? AND (before IS NOT NULL OR kind IN ({kinds})) "
        "ORDER BY time_ns, id LIMIT ?",
        (int(start_s * NS), int(end_s * NS), *CHANGES_WITHOUT_BEFORE, limit))


def parse_changes(rows: list[tuple]) -> list[Change]:
    return [Change(time_ns / NS, kind, scope, before, after, None if trace_id is None else bytes(trace_id))
            for time_ns, kind, scope, before, after, trace_id in rows]
