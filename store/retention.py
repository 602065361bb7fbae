"""Retention: evict whole traces by age (`--retention`) and by size (`--max-db-size`), oldest first.

Runs in the writer process between batches, in short transactions so ingest keeps flowing. Rollups
are small and outlive the spans they summarize under the size limit (a week of dashboards stays
right even when old traces had to go); they are evicted by age only.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from store import content_index, lifetime_totals, metrics, sessions
from store.writer import SpanWriter

NS = 1_000_000_000
EVICT_CHUNK = 500  # traces per transaction
FINE_ROLLUP_KEEP_S = 2 * 3600


@dataclass(slots=True)
class RetentionResult:
    traces: int = 0
    spans: int = 0
    logs: int = 0
    rollups: int = 0
    freed_pages: int = 0


def used_bytes(db: sqlite3.Connection) -> int:
    """Bytes of the database's pages in use (free pages excluded; the WAL is budgeted apart, see
    store/disk_budget.py)."""
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    page_count = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return (page_count - free) * page_size


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite ends it itself on some errors (a full disk
    at COMMIT), and a second error from ROLLBACK would hide the one that matters."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def _evict(db: sqlite3.Connection, writer: SpanWriter | None, trace_ids: list[bytes], result: RetentionResult) -> None:
    marks = ", ".join("?" * len(trace_ids))
    db.execute("BEGIN IMMEDIATE")
    try:
        content_index.delete_traces(db, trace_ids)  # found through the spans and logs: before them
        result.spans += db.execute(f"DELETE FROM spans WHERE trace_id IN ({marks})", trace_ids).rowcount
        result.logs += db.execute(f"DELETE FROM logs WHERE trace_id IN ({marks})", trace_ids).rowcount
        content_index.clamp_watermarks(db)
        conversations = sessions.stored_conversations(db, trace_ids)
        result.traces += db.execute(f"DELETE FROM traces WHERE trace_id IN ({marks})", trace_ids).rowcount
        # A conversation loses the evicted turns (its row goes with its last one), in the same transaction.
        sessions.refresh(db, conversations, time.time_ns())
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise
    if writer is not None:
        writer.forget_traces(trace_ids)


def enforce(db: sqlite3.Connection, writer: SpanWriter | None, *, max_age_s: float | None,
            max_bytes: int | None, now_ns: int | None = None, deadline_s: float = 2.0,
            chunk: int = EVICT_CHUNK, chunk_bytes: int | None = None,
            after_chunk: Callable[[], object] | None = None) -> RetentionResult:
    """Evict what is older than `max_age_s`, then the oldest traces until under `max_bytes`.

    Stops after `deadline_s` so a large backlog is worked off across several calls without stalling
    ingest; the caller runs it again later. Each transaction evicts at most `chunk` traces, and about
    `chunk_bytes` of them when given: a delete writes to the WAL roughly what it frees (the leaf pages it
    empties, and with SQLite's secure_delete, Debian's default, every freed page zeroed), so a chunk of
    traces, not of bytes, is a WAL of any size. `after_chunk` runs after each (e.g. to empty the WAL).
    """
    now_ns = now_ns or time.time_ns()
    started = time.monotonic()
    result = RetentionResult()
    if chunk_bytes is not None:
        chunk = min(chunk, _traces_in(db, chunk_bytes))
    # 10-second rollups only serve the 5-minute view.
    db.execute("BEGIN IMMEDIATE")
    try:
        result.rollups += db.execute("DELETE FROM rollups WHERE res = 10 AND bucket < ?",
                                     (now_ns // NS - FINE_ROLLUP_KEEP_S,)).rowcount
        result.rollups += metrics.retire(db, now_ns, max_age_s)  # metric points age as the rollups
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise
    if max_age_s:
        cutoff = now_ns - int(max_age_s * NS)
        while time.monotonic() - started < deadline_s:
            # A trace still receiving spans is kept until its end is old too.
            ids = [r[0] for r in db.execute(
                "SELECT trace_id FROM traces WHERE start_ns < ? AND end_ns < ? ORDER BY start_ns LIMIT ?",
                (cutoff, cutoff, chunk))]
            if not ids:
                break
            _evict(db, writer, ids, result)
            if after_chunk is not None:
                after_chunk()
        db.execute("BEGIN IMMEDIATE")
        try:
            content_index.delete_traceless_logs(db, cutoff)
            result.logs += db.execute("DELETE FROM logs WHERE time_ns < ? AND trace_id IS NULL", (cutoff,)).rowcount
            content_index.clamp_watermarks(db)
            # What goes is kept in the totals since the store began (Prometheus counters never go down).
            lifetime_totals.retire(db, cutoff // NS)
            result.rollups += db.execute("DELETE FROM rollups WHERE bucket < ?", (cutoff // NS,)).rowcount
            # Tool rollups age with the rollups (the same 60 s and 1 h buckets); changes never do.
            result.rollups += db.execute("DELETE FROM tool_rollups WHERE bucket < ?", (cutoff // NS,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        if result.rollups and writer is not None:
            writer.forget_rollups()
    if max_bytes:
        while time.monotonic() - started < deadline_s:
            used = used_bytes(db)
            if used <= max_bytes:
                break
            span_count = db.execute("SELECT count(*) FROM traces").fetchone()[0]
            if span_count == 0:
                break
            # Evict roughly the excess, plus 5 % headroom so we are not back here next minute.
            per_trace = max(1, used // span_count)
            want = max(1, int((used - max_bytes * 0.95) // per_trace))
            evicted_any = False
            while want > 0 and time.monotonic() - started < deadline_s:
                ids = [r[0] for r in db.execute(
                    "SELECT trace_id FROM traces ORDER BY start_ns LIMIT ?", (min(want, chunk),))]
                if not ids:
                    break
                _evict(db, writer, ids, result)
                if after_chunk is not None:
                    after_chunk()  # e.g. empty the WAL, when the disk has no room for it to grow
                evicted_any = True
                want -= len(ids)
            if not evicted_any:
                break
            # Logs without a trace have no trace to evict with: drop the oldest alongside.
            db.execute("BEGIN IMMEDIATE")
            try:
                oldest = db.execute("SELECT min(start_ns) FROM traces").fetchone()[0]
                if oldest is not None:
                    content_index.delete_traceless_logs(db, oldest)
                    result.logs += db.execute(
                        "DELETE FROM logs WHERE trace_id IS NULL AND time_ns < ?", (oldest,)).rowcount
                    content_index.clamp_watermarks(db)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
    if result.traces or result.logs or result.rollups:
        # Give the freed pages back to the file system (auto_vacuum = INCREMENTAL).
        # In steps of about a chunk when chunks are bounded in bytes: moving pages writes them to the WAL.
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        step = free if chunk_bytes is None else max(1, chunk_bytes // _page_size(db))
        while free > 0:
            pages = min(free, step)
            db.execute(f"PRAGMA incremental_vacuum({pages})").fetchall()
            result.freed_pages += pages
            free -= pages
            if after_chunk is not None:
                after_chunk()
    return result


def _page_size(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA page_size").fetchone()[0])


def _traces_in(db: sqlite3.Connection, size: int) -> int:
    """About how many traces take `size` bytes of pages (the store's average; at least one)."""
    traces = db.execute("SELECT count(*) FROM traces").fetchone()[0]
    if not traces:
        return 1
    return max(1, size * traces // max(1, used_bytes(db)))
