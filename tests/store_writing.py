"""Writing a test store the way serve does: the real Normalizer and the store's one SpanWriter, with
the writer lock held for the duration (shared by the tests and fixtures that build stores)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store.connection import WriterLock, open_writer
from store.writer import SpanWriter


@contextmanager
def writing(path: Path | str, now_ns: int) -> Iterator[tuple[Normalizer, SpanWriter, sqlite3.Connection]]:
    """(normalizer, writer, its connection) for a block; the writer's clock says `now_ns`."""
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    try:
        yield normalizer, SpanWriter(db, clock=lambda: now_ns), db
    finally:
        db.close()
        lock.release()
