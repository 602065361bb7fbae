"""Writing a test store the way serve does: the real Normalizer and the store's one SpanWriter, with
the writer lock held for the duration (shared by the tests and fixtures that build stores)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store.connection import WriterLock, open_writer
from store.writer import SpanWriter
from tests.otlp_factory import logs_request, trace_request


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


def write_through(normalizer: Normalizer, writer: SpanWriter, spans: Sequence[Span], records: Sequence[LogRecord],
                  now_ns: int, chunk: int = 2000) -> None:
    """Spans (in requests of `chunk`), then log records, decoded and written as serve would."""
    for i in range(0, len(spans), chunk):
        rows, resources, scopes, rejected = normalizer.decode_traces(trace_request(spans[i:i + chunk]), now_ns)
        assert rejected.count == 0, rejected.message()
        writer.write(rows, [], resources, scopes)
    if records:
        rows, resources, scopes, _ = normalizer.decode_logs(logs_request(records), now_ns)
        writer.write([], rows, resources, scopes)
