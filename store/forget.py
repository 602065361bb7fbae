"""Deletion on request (`llmobs-tui forget`): every trace of a user, a conversation or a tenant goes,
with its spans, log records and search-index rows, and what the store derived from it moves by exact
deltas (rollups, tool rollups, conversation and user summaries: SpanWriter.forget).

A trace is the user's (conversation's, tenant's) when its summary names it or any of its spans does:
the summary names the first span's, and a later span may name another. The spans are scanned, not
an index: a deletion request is rare, and an index on user ids would cost every insert.

What cannot be found this way is said, not guessed: a log record with no trace id is not tied to any
user, and a span of another trace that merely mentions the id in its text is not that user's.

Deleted means gone from the files, not only from the tables: the writer's connection overwrites what it
deletes (secure_delete, store/connection.py), the search index is merged so that no segment keeps the
forgotten words (content_index.purge_deleted), and the WAL, which may still hold pages written before,
is checkpointed and emptied. A reader open on the store (the TUI) can keep the WAL from being emptied:
`erased` says whether it was.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from store import content_index
from store.connection import immediate_transaction
from store.disk_budget import truncate_wal
from store.writer import ForgetResult, SpanWriter

# Traces per transaction: each is exact on its own, so a run that stops half-way (Ctrl-C, a full
# disk) leaves a consistent store, and running it again finishes the job.
CHUNK_TRACES = 500

_BY = {
    "user": ("SELECT trace_id FROM traces WHERE user_id = ? "
             "UNION SELECT trace_id FROM spans WHERE user_id = ?"),
    "conversation": ("SELECT trace_id FROM traces WHERE conversation_id = ? "
                     "UNION SELECT trace_id FROM spans WHERE conversation_id = ?"),
    "tenant": ("SELECT trace_id FROM traces WHERE tenant = ? "
               "UNION SELECT trace_id FROM spans WHERE tenant = ? OR own_tenant = ?"),
}


@dataclass(slots=True)
class Forgotten:
    kind: str
    value: str
    removed: ForgetResult = field(default_factory=ForgetResult)
    erased: bool = True  # nothing of the forgotten traces is left in the store's files (see above)


def traces_of(db: sqlite3.Connection, kind: str, value: str) -> list[bytes]:
    """The trace ids to forget for `kind` (user, conversation, tenant) = `value`, oldest first."""
    sql = _BY[kind]
    return [row[0] for row in db.execute(f"SELECT trace_id FROM ({sql}) ORDER BY trace_id",
                                         (value,) * sql.count("?"))]


def forget(db: sqlite3.Connection, writer: SpanWriter, kind: str, value: str,
           progress: Callable[[int, int], None] | None = None,
           erasing: Callable[[], None] | None = None) -> Forgotten:
    """Forget every trace of `kind` = `value`; `progress(done, total)` after each chunk, `erasing()` before the
    files are rid of what was deleted (erase_leftovers: the longest step on a large store)."""
    done = Forgotten(kind, value)
    trace_ids = traces_of(db, kind, value)
    total = done.removed
    for start in range(0, len(trace_ids), CHUNK_TRACES):
        part = writer.forget(trace_ids[start:start + CHUNK_TRACES])
        for name in ForgetResult.__slots__:
            setattr(total, name, getattr(total, name) + getattr(part, name))
        if progress is not None:
            progress(min(start + CHUNK_TRACES, len(trace_ids)), len(trace_ids))
    # Also when nothing was found: a run that could not empty the WAL is finished by running it again.
    if erasing is not None:
        erasing()
    done.erased = erase_leftovers(db)
    return done


def erase_leftovers(db: sqlite3.Connection) -> bool:
    """After the deletes: the index's deleted postings merged away, the freed pages given back to the file
    system, and the WAL emptied. Returns whether the WAL was (a reader's snapshot can hold it)."""
    with immediate_transaction(db):
        content_index.purge_deleted(db)
    db.execute("PRAGMA incremental_vacuum").fetchall()
    return truncate_wal(db)
