"""The content indexer alone (store/content_index.py): CPU and disk per span over a store of stored
spans, the rest of serve left out.

    python -m bench.search_index                     # 40,000 heavy spans (≈4 KB of content each)
    python -m bench.search_index --workload agent --spans 40000 --json out.json

A source store is written through the real Normalizer and SpanWriter (bench.ingest's request
templates, every trace id made unique) with nothing indexed: in a temporary directory removed at the
end, or kept under --cache DIR for the next run (building it takes ~10 s). The measurement copies
it and runs ContentIndexer over the copy until the watermark reaches the top, as the writer does
when idle, in its default 64-row transactions.
Reported, per span: the CPU time of the whole indexing, of the text extraction alone
(searchable_span_text over the same rows, no SQLite), and the bytes the index adds (dbstat: the FTS5
tables and any side table of the index), the time of forget's merge of the whole index after 1 % of the
traces were deleted (content_index.purge_deleted), and the time to delete the other index rows the way
retention does (delete_traces, in 64-trace chunks).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import SPANS_PER_TRACE, build_request

T_BASE = 1_700_000_000 * 10**9
TRACES_PER_REQUEST = 64


def build_source(path: Path, spans: int, heavy: bool) -> None:
    """A store of `spans` spans written by the real normalizer and writer, nothing indexed."""
    from receiver.normalize import IngestOptions, Normalizer
    from receiver.prices import PriceTable
    from store.connection import WriterLock, open_writer
    from store.writer import SpanWriter

    templates = [build_request(seed, TRACES_PER_REQUEST, heavy) for seed in range(4)]
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    try:
        writer = SpanWriter(db, clock=lambda: T_BASE)
        for number in range(-(-spans // (TRACES_PER_REQUEST * SPANS_PER_TRACE))):
            request = type(templates[0])()
            request.CopyFrom(templates[number % len(templates)])
            for span in request.resource_spans[0].scope_spans[0].spans:
                span.trace_id = (number + 1).to_bytes(12, "big") + span.trace_id[12:]
            rows, resources, scopes, rejections = normalizer.decode_traces(request, received_ns=T_BASE)
            assert rejections.count == 0, rejections.message()
            writer.write(rows, [], resources, scopes)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
        lock.release()


def index_bytes(db: sqlite3.Connection) -> int:
    """Bytes of the index's tables (the FTS5 shadow tables and the side table, if any)."""
    return db.execute("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE 'content\\_%' ESCAPE '\\' "
                      "OR name LIKE 'sqlite_autoindex_content\\_%' ESCAPE '\\'").fetchone()[0]


def measure(source: Path, work: Path) -> dict:
    from store import content_index
    from store.connection import WriterLock, open_writer

    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    shutil.copyfile(source, work)
    lock = WriterLock(work)
    lock.acquire()
    db = open_writer(work)
    try:
        spans = db.execute("SELECT count(*) FROM spans").fetchone()[0]
        before = index_bytes(db)
        # Extraction alone: the same rows, read and turned into text, nothing written.
        raws = db.execute("SELECT kind, raw FROM spans ORDER BY id").fetchall()
        cpu = time.process_time()
        chars = sum(len(content_index.searchable_span_text(raw, kind)) for kind, raw in raws)
        extract_cpu = time.process_time() - cpu
        del raws
        indexer = content_index.ContentIndexer(db)
        wall, cpu = time.perf_counter(), time.process_time()
        indexer.run(deadline_s=3600)
        index_cpu, index_wall = time.process_time() - cpu, time.perf_counter() - wall
        assert content_index.index_lag(db) == (0, 0)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        after = index_bytes(db)
        rows = indexer.stats.rows
        trace_ids = [row[0] for row in db.execute("SELECT trace_id FROM traces")]
        # forget's erasure (store/forget.py): 1 % of the traces deleted, then the whole index merged so that no
        # segment keeps their words (content_index.purge_deleted), whatever few were deleted.
        forgotten, trace_ids = trace_ids[:max(1, len(trace_ids) // 100)], trace_ids[max(1, len(trace_ids) // 100):]
        db.execute("BEGIN IMMEDIATE")
        content_index.delete_traces(db, forgotten)
        db.execute("COMMIT")
        wall, cpu = time.perf_counter(), time.process_time()
        db.execute("BEGIN IMMEDIATE")
        content_index.purge_deleted(db)
        db.execute("COMMIT")
        purge_cpu, purge_wall = time.process_time() - cpu, time.perf_counter() - wall
        # Deleting the rest again as retention does (a chunk of traces per transaction).
        cpu = time.process_time()
        for start in range(0, len(trace_ids), 64):
            db.execute("BEGIN IMMEDIATE")  # as retention does (the connection is in autocommit mode)
            content_index.delete_traces(db, trace_ids[start:start + 64])
            db.execute("COMMIT")
        delete_cpu = time.process_time() - cpu
        left = db.execute("SELECT count(*) FROM content_index").fetchone()[0]
    finally:
        db.close()
        lock.release()
    return {
        "spans": spans, "index_rows": rows, "indexed_chars_per_span": round(chars / spans),
        "index_cpu_us_per_span": round(index_cpu / spans * 1e6, 1),
        "index_wall_us_per_span": round(index_wall / spans * 1e6, 1),
        "extract_cpu_us_per_span": round(extract_cpu / spans * 1e6, 1),
        "index_bytes_per_span": round((after - before) / spans),
        "delete_cpu_us_per_row": round(delete_cpu / max(rows, 1) * 1e6, 1),
        "purge_cpu_s": round(purge_cpu, 3), "purge_wall_s": round(purge_wall, 3),
        "purge_cpu_s_per_index_mb": round(purge_cpu / max(after - before, 1) * 2**20, 4),
        "rows_left_after_delete": left,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=("agent", "heavy"), default="heavy")
    parser.add_argument("--spans", type=int, default=40_000)
    parser.add_argument("--cache", type=Path, help="keep the source store in this directory between runs "
                        "(default: build it in a temporary directory, removed at the end)")
    parser.add_argument("--rebuild", action="store_true", help="write the source store again")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.cache is None:
        with tempfile.TemporaryDirectory(prefix="search_index_") as scratch:
            return run(args, Path(scratch))
    return run(args, args.cache)


def run(args: argparse.Namespace, cache: Path) -> int:
    source = cache / f"search_index_{args.workload}_{args.spans}.db"
    if args.rebuild or not source.exists():
        source.unlink(missing_ok=True)
        started = time.perf_counter()
        build_source(source, args.spans, args.workload == "heavy")
        print(f"source store: {source} ({time.perf_counter() - started:.0f} s to build)", file=sys.stderr)
    work = cache / f"search_index_{args.workload}_{args.spans}.work.db"
    try:
        report = {"workload": args.workload, **measure(source, work)}
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(str(work) + suffix).unlink(missing_ok=True)
    print(f"{report['spans']} {args.workload} spans: indexing {report['index_cpu_us_per_span']} µs CPU per span "
          f"({report['index_wall_us_per_span']} µs wall), of which extraction {report['extract_cpu_us_per_span']} µs; "
          f"index {report['index_bytes_per_span']} bytes per span; "
          f"delete {report['delete_cpu_us_per_row']} µs per row; forget's merge of the whole index "
          f"{report['purge_cpu_s']} s CPU ({report['purge_wall_s']} s wall, "
          f"{report['purge_cpu_s_per_index_mb']} s per MB of index)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
