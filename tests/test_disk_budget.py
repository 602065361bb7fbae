"""`--max-db-size` bounds the store's files at every moment, not only between the writer's turns.

The end-to-end test (tests/test_hold_under_attack.py) samples the files every 0.2 s while serve runs
at full speed, so a peak that lasts one eviction (30 ms here, longer on a loaded machine) is seen only
sometimes. Here the writer's loop runs in this process and the files are measured before every SQL
statement it executes: a WAL that grows past its cap inside an eviction, or a database file that a
commit pushes past its share, is caught every time.
"""

from __future__ import annotations

import os
import threading
import time
from multiprocessing import Pipe
from pathlib import Path

import pytest

from store.disk_budget import DiskBudget, store_files_bytes
from store.writer_process import WriterLoop
from tests.otlp_factory import make_span, trace_request
from tests.store_writing import writing

LIMIT = 8_000_000


def _chat_span(trace: int, now_ns: int, content: str) -> object:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
             "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10}
    if content:
        attrs["gen_ai.input.messages"] = content
    return make_span(trace, 1, None, "chat gpt-4o", attrs, start_ns=now_ns, end_ns=now_ns + 10**6)


CONTENTS = {
    # The attack test's shape: 2,000 bytes that compress to almost nothing.
    "compressible": lambda i: "x" * 2000,
    # Text that does not compress much: more pages per span.
    "incompressible": lambda i: os.urandom(1000).hex(),
    # No content: the rows and their indexes are all there is.
    "bare": lambda i: "",
}


@pytest.mark.parametrize("content", list(CONTENTS))
def test_the_store_files_stay_under_the_limit_before_every_statement_while_evicting(tmp_path: Path, content: str):
    db_path = tmp_path / "s.db"
    now_ns = time.time_ns()
    make_content = CONTENTS[content]
    inbox, _to_writer = Pipe(duplex=False)
    from_writer, outbox = Pipe(duplex=False)
    drained = threading.Event()

    def drain() -> None:  # the acks the loop sends, read as the main process would
        while not drained.is_set():
            if from_writer.poll(0.05):
                from_writer.recv()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    peak = 0
    with writing(db_path, now_ns) as (normalizer, writer, db):
        loop = WriterLoop(db, writer, inbox, outbox, {"db_path": str(db_path), "max_db_bytes": LIMIT})

        def measure(_statement: str) -> None:
            nonlocal peak
            peak = max(peak, store_files_bytes(db_path))

        db.set_trace_callback(measure)
        trace = 0
        # Until the oldest traces went several times, in requests of 200 spans as the exporters send them.
        while loop.evicted_traces < 3000:
            spans = [_chat_span(trace + i + 1, now_ns, make_content(trace + i)) for i in range(200)]
            trace += len(spans)
            rows, resources, scopes, rejected = normalizer.decode_traces(trace_request(spans), now_ns)
            assert rejected.count == 0
            loop.commit([(trace, rows, [], resources, scopes, 0, "", True)])
            loop.housekeeping()
        db.set_trace_callback(None)
        newest = db.execute("SELECT count(*) FROM traces WHERE trace_id = ?",
                            (trace.to_bytes(16, "big"),)).fetchone()[0]
    drained.set()
    reader.join(5)
    budget = DiskBudget.for_limit(LIMIT)
    assert loop.evicted_traces > 0 and newest == 1, "the oldest traces went, the newest stayed"
    assert loop.failed_commits == 0, loop.last_error
    assert peak <= LIMIT, (f"peak {peak:,} bytes over the {LIMIT:,} limit (data share {budget.data_bytes:,}, "
                           f"WAL cap {budget.wal_cap:,}, reserve {budget.reserve:,})")
