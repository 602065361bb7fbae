"""Change markers: the first time each value of a changing thing was seen (table `changes`, m007).

A row with no `before` is a baseline (the first prompt version, the first model a requested model
was served as, the first service.version) and is not drawn; an error class's or a price table's
first occurrence is itself the change. The read side is here; the writer records them.
"""

from __future__ import annotations

import hashlib
import sqlite3
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
        if self.kind == "prices":
            # The values are digests of the whole table: naming them would tell a reader nothing.
            return "price table changed (`llmobs-tui prices` shows it)"
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


# -- the write side: the writer notes what each stored span shows ---------------------------------

MAX_CHANGES = 10_000  # past this, nothing more is recorded (meta CHANGES_CAPPED says so)
CHANGES_CAPPED = "changes_capped"
PRICES_SEEN = "changes_prices_digest"  # the price table digest last recorded (the next one's `before`)
_INSERT = "INSERT OR IGNORE INTO changes (time_ns, kind, scope, before, after, trace_id) VALUES (?, ?, ?, ?, ?, ?)"


class ChangeTracker:
    """The first time each (kind, scope, value) is seen becomes a row of `changes`; `before` is the
    value last seen for that (kind, scope). Per span this costs one set lookup of a small tuple, so
    the writer calls it for every stored span. Rows are never evicted by age: a value seen again
    after weeks is not new. Not thread-safe (the writer's thread only); writes join the writer's
    transaction, and `reload` rebuilds the memory after a rollback."""

    def __init__(self, db: sqlite3.Connection, limit: int = MAX_CHANGES) -> None:
        self.db = db
        self.limit = limit
        self.reload()

    def reload(self) -> None:
        self._seen: set[tuple[str, str, str]] = set()
        self._last: dict[tuple[str, str], tuple[int, str]] = {}  # (kind, scope) -> (time_ns, value)
        count = 0
        for time_ns, kind, scope, after in self.db.execute(
                "SELECT time_ns, kind, scope, after FROM changes ORDER BY time_ns, id"):
            count += 1
            self._seen.add((kind, scope, after))
            self._last[(kind, scope)] = (time_ns, after)
        self._count = count

    def note(self, kind: str, scope: str, value: str, time_ns: int, trace_id: bytes | None) -> None:
        key = (kind, scope, value)
        if key in self._seen:
            return
        if self._count >= self.limit:
            if self._count == self.limit:
                # Once: a store that reached the cap says so, and stops growing the table.
                self._count += 1
                self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                (CHANGES_CAPPED, str(self.limit)))
            return
        self._seen.add(key)
        last = self._last.get((kind, scope))
        if kind in CHANGES_WITHOUT_BEFORE:
            before = None
        else:
            # A value that shows up later than the one last seen replaced it; one that arrives late
            # with an earlier time (a delayed export) is still compared with the one last seen.
            before = None if last is None else last[1]
        if last is None or time_ns >= last[0]:
            self._last[(kind, scope)] = (time_ns, value)
        self._count += 1
        self.db.execute(_INSERT, (time_ns, kind, scope, before, value, trace_id))


def price_table_digest(rows: list[tuple]) -> str:
    """A short digest of a price table's rows (what changes when a price does)."""
    text = repr(sorted(rows, key=repr)).encode()
    return hashlib.blake2b(text, digest_size=6).hexdigest()


def record_prices(db: sqlite3.Connection, digest: str, time_ns: int) -> bool:
    """Record a price-table change when `digest` differs from the table recorded before (the first
    table a store ever records is not a change: there is nothing it changed from). Returns True
    when a change row was written. Runs inside the caller's transaction."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (PRICES_SEEN,)).fetchone()
    previous = None if row is None else row[0]
    if previous == digest:
        return False
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (PRICES_SEEN, digest))
    if previous is None:
        return False
    count = db.execute("SELECT count(*) FROM changes").fetchone()[0]
    if count >= MAX_CHANGES:
        return False
    # A table returning to an earlier digest keeps that digest's first row (changes_key is unique).
    return db.execute(_INSERT, (time_ns, "prices", "", previous, digest, None)).rowcount > 0
