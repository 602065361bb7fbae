"""The writer process: owns the database file, commits decoded batches, acknowledges them.

Group commit: it takes everything that is waiting (up to `max_batch_rows`) and commits it in one
transaction, so under load many export requests share a COMMIT, and at low load a request is
committed the moment it arrives. A request is acknowledged only after its COMMIT returned; with a ClickHouse
store (`serve --store`), only after the outbox that COMMIT wrote was confirmed by ClickHouse too
(store/clickhouse/sink.py): while ClickHouse cannot be reached, requests are refused retryably and what
was committed waits in the outbox, shipped when it answers again (a retry finds its spans already
stored: nothing doubles).
"""

from __future__ import annotations

import logging
import marshal
import os
import pickle
import signal
import sqlite3
import time
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from store import retention
from store.batch_inlet import BatchInlet, waitables
from store.checkpointer import Checkpointer
from store.connection import StoreError, WriterLock, describe_error, open_writer
from store.content_index import ContentIndexer, index_lag, record_indexing
from store.disk_budget import DiskBudget, RecentWrites, Reserve, store_files_bytes, truncate_wal, wal_bytes
from store.gctuning import tune_for_throughput
from store.metrics import MetricWriter, dropped_message
from store.pricing import record_price_rows
from store.process_logs import follow_parent_log
from store.writer import SpanWriter

if TYPE_CHECKING:
    from store.clickhouse.sink import Shipper

log = logging.getLogger("llmobs.writer")

TAG_BATCH = b"B"
TAG_STOP = b"S"
# receiver/protocol.py's batch frame: TAG_BATCH, the 8-byte request id, the format byte, the payload.
_PAYLOAD_AT = 10
_FORMAT_MARSHAL = ord("m")
# How long the twin rechecks run back to back before the loop looks at its inbox again (one pass may run over:
# about 3 ms for 2,000 calls under app spans, 190 ms when every call is a root; bench/clickhouse_twins.py).
RECHECK_SLICE_S = 0.2


def decode_batch(frame: bytes) -> tuple:
    """A decoder's batch (receiver/protocol.encode_batch): marshal's, or pickle's when marshal refused it."""
    payload = memoryview(frame)[_PAYLOAD_AT:]
    return marshal.loads(payload) if frame[_PAYLOAD_AT - 1] == _FORMAT_MARSHAL else pickle.loads(payload)


def run(inbox: Connection, outbox: Connection, options: dict[str, Any]) -> None:
    """Entry point of the writer process (started by receiver/child_process.py)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    follow_parent_log()  # under the TUI: its log file, never the terminal
    db_path = options["db_path"]
    lock = WriterLock(_path(db_path))
    try:
        lock.acquire()
        db = open_writer(db_path)
    except StoreError as exc:
        outbox.send(("fatal", str(exc)))
        return
    except OSError as exc:
        outbox.send(("fatal", f"cannot open {db_path}: {exc}"))
        return
    checkpointer = Checkpointer(db_path, interval_s=options.get("checkpoint_every_s", 5.0))
    checkpointer.start()
    writer = SpanWriter(db)
    if options.get("price_rows") is not None:
        try:
            record_price_rows(db, options["price_rows"], time.time_ns())
        except sqlite3.Error as exc:
            log.warning("could not record the price table: %s", describe_error(db_path, exc))
    tune_for_throughput()
    inlet = None
    if options.get("batch_address"):
        try:
            inlet = BatchInlet(options["batch_address"], options["batch_authkey"])
        except OSError as exc:
            outbox.send(("fatal", f"the writer cannot listen on {options['batch_address']}: {exc}"))
            checkpointer.stop()
            db.close()
            lock.release()
            return
    shipper = clickhouse_shipper(db, writer, options["clickhouse"]) if options.get("clickhouse") else None
    carry_rechecks(db, writer, db_path, stopping=False)
    loop = WriterLoop(db, writer, inbox, outbox, options, inlet, shipper)
    try:
        outbox.send(("ready", {"db_path": str(db_path), "pid": os.getpid()}))
        loop.run()
    finally:
        if shipper is not None:
            carry_rechecks(db, writer, db_path, stopping=True)
            shipper.close()
        if inlet is not None:
            inlet.close()
        checkpointer.stop()
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        db.close()
        lock.release()


def clickhouse_shipper(db: sqlite3.Connection, writer: SpanWriter, options: dict[str, Any]) -> Shipper:
    """Turn on the writer's outbox and make the shipper that empties it into ClickHouse. The ClickHouse
    schema is migrated at the first connection, not here: serve starts (and keeps what it accepts in the
    outbox) while ClickHouse is still down."""
    from store.clickhouse.client import HttpClient
    from store.clickhouse.outbox import OutboxRecorder
    from store.clickhouse.schema import DEFAULT_RETENTION_DAYS, ensure_retention, migrate
    from store.clickhouse.sink import Shipper
    from store.clickhouse.trace_sync import TraceSync

    url = options["url"]

    def connect() -> HttpClient:
        # Short timeouts: the writer waits on each insert, and an unreachable server must turn into
        # refused (retryable) requests quickly, not hold every export for minutes.
        client = HttpClient(url, connect_timeout=3.0, send_receive_timeout=60.0)
        try:
            migrate(client)
            ensure_retention(client, options.get("retention_days", DEFAULT_RETENTION_DAYS))
        except BaseException:
            client.close()
            raise
        return client

    writer.outbox = OutboxRecorder()

    def explain(exc: BaseException) -> str:
        from store.backends import describe_clickhouse_error
        from store.clickhouse.client import ClickHouseError

        return describe_clickhouse_error(url, exc) if isinstance(exc, ClickHouseError) else str(exc)

    shipper = Shipper(db, connect, describe=f"ClickHouse at {url.display()}", explain=explain,
                      retry_every_s=options.get("retry_every_s", 1.0))
    writer.sync = TraceSync(shipper.reader)
    return shipper


def carry_rechecks(db: sqlite3.Connection, writer: SpanWriter, db_path: str, stopping: bool) -> None:
    """The twin rechecks across a restart: kept in the working store at a clean stop (TraceSync.save), taken
    back at the next start (TraceSync.restore). Nothing accepted depends on them: a store that refuses them
    costs those calls' rechecks, not the start or the stop."""
    if writer.sync is None:
        return
    move, what = (writer.sync.save, "kept for the next start") if stopping else (writer.sync.restore,
                                                                                  "taken back from the last run")
    try:
        calls = move(db)
    except sqlite3.Error as exc:
        log.warning("the calls to look up again in ClickHouse were not %s: %s", what, describe_error(db_path, exc))
    else:
        if calls:
            log.info("%d calls to look up again in ClickHouse %s", calls, what)


def _path(db_path: str) -> Any:
    from pathlib import Path

    return Path(db_path)


class WriterLoop:
    def __init__(self, db: sqlite3.Connection, writer: SpanWriter, inbox: Connection, outbox: Connection,
                 options: dict[str, Any], inlet: BatchInlet | None = None, shipper: Shipper | None = None) -> None:
        self.db = db
        self.shipper = shipper  # a ClickHouse store: acks wait for it
        self._ship_due = shipper is not None  # an outbox left by an earlier run is shipped at start
        self.writer = writer
        self.inbox = inbox  # the main process: stop, and (without an inlet) batches
        self.outbox = outbox
        self.inlet = inlet  # the decoders' batches (store/batch_inlet.py)
        self.db_path = options["db_path"]
        self.max_batch_rows = options.get("max_batch_rows", 8192)
        self.retention_s = options.get("retention_s")
        self.max_db_bytes = options.get("max_db_bytes")
        self.budget = DiskBudget.for_limit(self.max_db_bytes)
        self.reserve = Reserve(self.db_path, self.budget.reserve)
        self.reserve.hold()
        # The room kept for the next write (store/disk_budget.py): in the WAL, and in the data share.
        self.wal_writes = RecentWrites(floor=self.budget.wal_cap // 4)
        self.data_writes = RecentWrites(floor=self.budget.batch_bytes)
        self._wal_seen = wal_bytes(self.db_path)
        self._used_seen = retention.used_bytes(db) if self.max_db_bytes else 0
        self.wal_truncations = 0
        self.room_made = 0
        self.retention_every_s = options.get("retention_every_s", 60.0)
        self.size_check_every_s = options.get("size_check_every_s", 10.0)
        self.stats_every_s = options.get("stats_every_s", 1.0)
        self.commit_seconds = 0.0
        self.commits = 0
        self.failed_commits = 0
        self.last_error: str | None = None
        self.evicted_traces = 0
        # Full-text search is indexed after the ack, never inside the commit (store/content_index.py).
        # Not under --max-db-size: an FTS5 delete leaves the evicted postings until a merge meets
        # them, so a store evicting at its limit would overshoot it (tests/test_hold_under_attack.py).
        # With a ClickHouse store the TUI searches ClickHouse, where the shipper puts each span's words
        # (store/clickhouse/rows.py): this working store's index would be read by nobody.
        off_reason = ("--no-search-index" if not options.get("content_index", True)
                      else "--max-db-size" if self.max_db_bytes
                      else "a ClickHouse store: searched there" if options.get("clickhouse") else "")
        self.indexer = None if off_reason else ContentIndexer(db)
        try:
            record_indexing(db, off_reason)
        except sqlite3.Error as exc:
            log.warning("could not record the search index's state: %s", describe_error(self.db_path, exc))
        self.index_idle_slice_s = options.get("index_idle_slice_s", 0.05)
        self.metric_writer: MetricWriter | None = None  # made at the first metric points
        self._next_retention = time.monotonic() + 1.0
        self._next_size_check = time.monotonic() + 1.0
        self._next_stats = time.monotonic()
        # With replicas: the calls written in the last two minutes are looked up again for a twin another
        # replica stored meanwhile (store/clickhouse/twin_calls.py), every second.
        self._next_recheck = time.monotonic() + 1.0 if shipper is not None else None

    def run(self) -> None:
        stopping = False
        eof = False
        while not (stopping or eof):
            pending: list[tuple] = []
            deadlines = [self._next_stats, self._next_retention]
            if self._next_recheck is not None:
                deadlines.append(self._next_recheck)
            if self.max_db_bytes:
                deadlines.append(self._next_size_check)
            timeout = max(0.0, min(deadlines) - time.monotonic())
            if self.indexer is not None and self.indexer.has_work:
                timeout = 0.0  # content is waiting to be indexed: look at the inbox, then index
            ready = wait(waitables(self.inbox, self.inlet), timeout)
            if ready:
                stopping, eof = self.receive(ready, pending)
            if pending:
                self.commit(pending)
            self.housekeeping()
            if not (stopping or eof):
                self.index_content()
        if stopping:
            self.drain_inlet()
            if self.shipper is not None and not self.shipper.ship(force=True):
                log.warning("stopping with %d batch(es) for ClickHouse in the outbox: shipped at the next start",
                            self.shipper.stats.backlog)
        self.send(("stats", self.stats()))

    def receive(self, ready: list[Any], pending: list[tuple]) -> tuple[bool, bool]:
        """Drain what is already waiting, a frame from each source in turn (the decoders' connections
        and the main process's pipe): that is the group in group commit. Bounded in rows and bytes:
        one commit must not overshoot the WAL cap by much (store/disk_budget.py). Returns (stop asked,
        the main process gone)."""
        if self.inlet is not None and self.inlet.wake in ready:
            self.inlet.take_new()
        active = [source for source in ready if not isinstance(source, int)]
        rows = size = 0
        while active:
            still = []
            for source in active:
                try:
                    frame = source.recv_bytes()
                except (EOFError, OSError):
                    if source is self.inbox:
                        return False, True  # the main process is gone: commit what we have and exit
                    assert self.inlet is not None
                    self.inlet.drop(source)  # a decoder went away; a restarted one connects anew
                    continue
                tag = frame[:1]
                if tag == TAG_STOP:
                    return True, False
                if tag == TAG_BATCH:
                    batch = decode_batch(frame)
                    pending.append(batch)
                    rows += len(batch[1]) + len(batch[2]) + (len(batch[8]) if len(batch) > 8 else 0)
                    size += len(frame)
                if rows >= self.max_batch_rows or size >= self.budget.batch_bytes:
                    return False, False
                if source.poll(0):
                    still.append(source)
            active = still
        return False, False

    def drain_inlet(self) -> None:
        """Stopping: commit the batches the decoders had already sent (the main process waited for
        its requests to be acknowledged, so this is what was in flight when that wait ran out)."""
        while self.inlet is not None:
            ready = [c for c in self.inlet.connections if c.poll(0)]
            if not ready:
                return
            pending: list[tuple] = []
            self.receive(ready, pending)
            if not pending:
                return
            self.commit(pending)

    def work_waiting(self) -> bool:
        """A frame is waiting on any source: the indexer yields to it."""
        return bool(wait(waitables(self.inbox, self.inlet), 0))

    def commit(self, pending: list[tuple]) -> None:
        spans: list = []
        logs: list = []
        resources: dict = {}
        scopes: dict = {}
        for _req_id, batch_spans, batch_logs, batch_resources, batch_scopes, *_rest in pending:
            spans.extend(batch_spans)
            logs.extend(batch_logs)
            resources.update(batch_resources)
            scopes.update(batch_scopes)
        started = time.perf_counter()
        try:
            self.writer.write(spans, logs, resources, scopes)
        except sqlite3.Error as exc:
            self.failed_commits += 1
            self.last_error = describe_error(self.db_path, exc)
            log.error("commit failed: %s", self.last_error)
            self.send(("nack", [p[0] for p in pending], self.last_error))
            if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
                # The exporter retries the nacked requests; with a size limit there is room for them
                # once the oldest traces are gone.
                self.make_room()
            return
        self.commit_seconds += time.perf_counter() - started
        self.commits += 1
        # Metric points (a ninth batch element, receiver/decoder_process.handle_metrics): their own
        # transaction after the spans', acked only once committed; if it fails, only their requests are nacked.
        # On a ClickHouse store the outbox holds both transactions' batches, shipped below before any ack; a
        # refused request's retry adds no point twice (store/metrics.py: a point not newer than its stream's).
        stored_points, failed = self.commit_metrics(pending)
        self.keep_within_budget()  # after both transactions: the room noted for the next write is theirs
        if self.shipper is not None and not self.shipped(pending):
            return
        acks = [(req_id, len(s) + len(lg) + stored, rejected + dropped,
                 "; ".join(m for m in (message, dropped_message(dropped)) if m), final)
                for (req_id, s, lg, _r, _sc, rejected, message, final, *_m), (stored, dropped)
                in zip(pending, stored_points) if req_id not in failed]
        if failed:
            self.send(("nack", sorted(failed), self.last_error))
        self.send(("ack", acks))
        if self.indexer is not None:
            self.indexer.notify_commit(time.perf_counter() - started)

    def shipped(self, pending: list[tuple]) -> bool:
        """A ClickHouse store: ship the outbox (this commit's batch and any older one). If ClickHouse did
        not confirm it, the requests are nacked (retryable), not acked: their spans stay committed here and
        in the outbox, and the exporter's retry of them is a duplicate that adds nothing."""
        assert self.shipper is not None
        try:
            if self.shipper.ship():
                return True
            self.last_error = self.shipper.stats.last_error
        except sqlite3.Error as exc:
            self.last_error = describe_error(self.db_path, exc)
            log.error("reading the ClickHouse outbox failed: %s", self.last_error)
        message = (f"{self.last_error}; the batch is kept and shipped when ClickHouse answers: retry"
                   if self.last_error else "ClickHouse is unreachable: retry")
        self.send(("nack", [p[0] for p in pending], message))
        return False

    def commit_metrics(self, pending: list[tuple]) -> tuple[list[tuple[int, int]], set[int]]:
        """Store the metric points of the pending batches: (stored, dropped) per batch, and the
        requests to nack because their points could not be committed."""
        metric_batches = [p[8] if len(p) > 8 else () for p in pending]
        if not any(metric_batches):
            return [(0, 0)] * len(pending), set()
        if self.metric_writer is None:
            self.metric_writer = MetricWriter(self.db, outbox=self.writer.outbox)
        try:
            return self.metric_writer.write(metric_batches), set()
        except sqlite3.Error as exc:
            self.failed_commits += 1
            self.last_error = describe_error(self.db_path, exc)
            log.error("metrics commit failed: %s", self.last_error)
            return [(0, 0)] * len(pending), {p[0] for p, rows in zip(pending, metric_batches) if rows}

    def index_content(self) -> None:
        """Index stored content, after the acks went out: while the inbox is idle, until a request
        arrives (checked between the indexer's small transactions); under sustained load, for the
        indexer's share of the commit time, so the index keeps moving without holding acks back."""
        if self.indexer is None or not self.indexer.has_work:
            return
        try:
            if not self.work_waiting():
                indexed = self.indexer.run(self.index_idle_slice_s, stop=self.work_waiting)
            else:
                indexed = self.indexer.step_under_load()
            if indexed:
                # The index takes more room than the spans it covers: it counts against the WAL cap
                # and the size limit like any commit (tests/test_hold_under_attack.py).
                self.keep_within_budget()
        except (EOFError, OSError):
            pass  # the main process is gone: the loop sees it at its next receive
        except sqlite3.Error as exc:
            self.last_error = describe_error(self.db_path, exc)
            log.error("content indexing failed: %s", self.last_error)
            self.indexer.pause(5.0)

    def keep_within_budget(self) -> None:
        """After anything written (a commit, a slice of indexing): keep the WAL under its cap, and
        when the data leaves less than a write's room under the size limit evict right away, not at
        the next periodic check (at full speed, 10 s of ingest is tens of MB past the limit)."""
        self.bound_wal()
        data_target = self.data_target
        if data_target is None:
            return
        used = retention.used_bytes(self.db)
        self.data_writes.note(used - self._used_seen)
        self._used_seen = used
        if used > data_target:
            self._next_size_check = time.monotonic()

    @property
    def data_target(self) -> int | None:
        """What eviction keeps the live pages under: the data share less the room for the next write
        (never less than half the share: one write that large is not the typical one)."""
        data_bytes = self.budget.data_bytes
        if data_bytes is None:
            return None
        return max(data_bytes // 2, data_bytes - self.data_writes.largest)

    def bound_wal(self) -> None:
        """Truncate the WAL once the next write, as large as the largest recent one, could take it past its
        cap, and past half the cap in any case (store/disk_budget.py)."""
        wal = wal_bytes(self.db_path)
        self.wal_writes.note(wal - self._wal_seen)
        cap = self.budget.wal_cap
        if wal > min(cap // 2, cap - self.wal_writes.largest) and truncate_wal(self.db):
            self.wal_truncations += 1
            wal = wal_bytes(self.db_path)
        self._wal_seen = wal

    def make_room(self) -> None:
        """The disk is full below the size limit: give up the reserve so that eviction can be written,
        evict the oldest tenth, checkpoint so the file shrinks, and take the reserve back."""
        if self.budget.limit is None:
            return  # no size limit: nothing may be evicted; new spans are refused (retryably)
        self.reserve.give_up()
        try:
            # Small steps, each followed by a checkpoint that empties the WAL: on a full disk the
            # WAL has only the reserve's room to grow into.
            truncate_wal(self.db)
            live = retention.used_bytes(self.db)
            target = min(self.budget.data_bytes or live, int(live * 0.9))
            result = retention.enforce(self.db, self.writer, max_age_s=None, max_bytes=target, deadline_s=5.0,
                                       chunk=25, after_chunk=lambda: truncate_wal(self.db))
            self.evicted_traces += result.traces
            truncate_wal(self.db)
            self.room_made += 1
            log.warning("disk full below the size limit: evicted %d oldest traces", result.traces)
        except sqlite3.Error as exc:
            self.last_error = describe_error(self.db_path, exc)
            log.error("could not make room on a full disk: %s", self.last_error)
        finally:
            self.reserve.hold()

    def housekeeping(self) -> None:
        if self.shipper is not None and (self._ship_due or self.shipper.stats.down_since is not None):
            # Without traffic too: a backlog (ClickHouse was down, or an earlier run left one) drains.
            try:
                if self._ship_due:
                    self.shipper.probe()
                self.shipper.ship()
            except sqlite3.Error as exc:
                self.last_error = describe_error(self.db_path, exc)
                log.error("reading the ClickHouse outbox failed: %s", self.last_error)
            self._ship_due = False
        now = time.monotonic()
        if self._next_recheck is not None and now >= self._next_recheck:
            # Calls still due after a slice (more than a pass a second is written) are taken at the next turn of
            # the loop, after the batches that came meanwhile.
            self._next_recheck = now if self.recheck_twins() else now + 1.0
        if now >= self._next_retention or (self.max_db_bytes and now >= self._next_size_check):
            age = self.retention_s if now >= self._next_retention else None
            try:
                # Under a size limit, in chunks of about a quarter of the WAL cap, the WAL bounded after each.
                result = retention.enforce(self.db, self.writer, max_age_s=age, max_bytes=self.data_target,
                                           deadline_s=1.0, after_chunk=self.bound_wal,
                                           chunk_bytes=self.budget.wal_cap // 4 if self.max_db_bytes else None)
                self.evicted_traces += result.traces
                if result.traces or result.logs or result.rollups:
                    self.bound_wal()  # eviction is written to the WAL too
                if self.max_db_bytes:
                    self._used_seen = retention.used_bytes(self.db)
            except sqlite3.Error as exc:
                self.last_error = describe_error(self.db_path, exc)
                log.error("retention failed: %s", self.last_error)
            if now >= self._next_retention:
                # No ANALYZE / PRAGMA optimize here: planner statistics are pinned (store/migrations.py).
                self._next_retention = now + self.retention_every_s
            self._next_size_check = now + self.size_check_every_s
        if now >= self._next_stats:
            self._next_stats = now + self.stats_every_s
            self.send(("stats", self.stats()))

    def recheck_twins(self) -> bool:
        """Calls written in the last two minutes looked up again (SpanWriter.recheck_twins), a pass at a time
        for up to RECHECK_SLICE_S, or until a batch is waiting: acks do not wait on more than a pass. What moved
        is shipped after each pass (acks do not wait on it: it is in the outbox, shipped by the next commit
        otherwise); a pass that moved nothing ships nothing (an empty outbox still costs a read). The traces written
        are looked up again in the same passes (TraceSync.traces_due). Returns whether calls or traces are still
        due that a next pass could look up now."""
        assert self.shipper is not None and self.writer.sync is not None
        sync = self.writer.sync
        slice_ends = time.monotonic() + RECHECK_SLICE_S
        try:
            while True:
                moves = sync.stats.recheck_writes
                checked = sync.stats.trace_checks
                looked_up = self.writer.recheck_twins()
                if sync.stats.recheck_writes != moves:  # a billing moved, or a trace written again
                    self.shipper.ship()
                if not looked_up and sync.stats.trace_checks == checked:
                    return False  # none due, or ClickHouse did not take the lookup: again in a second
                now = self.writer.clock()
                if not (sync.rechecks.due_by(now) or sync.traces_due_by(now)):
                    return False
                if time.monotonic() >= slice_ends or self.work_waiting():
                    return True
        except sqlite3.Error as exc:
            self.last_error = describe_error(self.db_path, exc)
            log.error("looking calls up again for twins failed: %s", self.last_error)
            return False

    def stats(self) -> dict[str, Any]:
        s = self.writer.stats
        return {
            "spans": s.spans,
            "logs": s.logs,
            "duplicates": s.duplicates,
            "conflicting_duplicates": s.conflicting,
            "updated": s.updated,
            "commits": self.commits,
            "failed_commits": self.failed_commits,
            "commit_seconds": self.commit_seconds,
            "db_bytes": store_files_bytes(self.db_path),
            "wal_truncations": self.wal_truncations,
            "room_made": self.room_made,
            "evicted_traces": self.evicted_traces,
            "last_error": self.last_error,
            **self.index_stats(),
            **self.clickhouse_stats(),
        }

    def clickhouse_stats(self) -> dict[str, Any]:
        if self.shipper is None:
            return {}
        s = self.shipper.stats
        return {"clickhouse_batches": s.batches, "clickhouse_rows": s.rows, "clickhouse_failures": s.failures,
                "clickhouse_backlog": s.backlog, "clickhouse_down": s.down_since is not None,
                "clickhouse_cpu_seconds": s.cpu_seconds, "clickhouse_seconds": s.seconds,
                **({} if self.writer.sync is None else {
                    "clickhouse_traces_pulled": self.writer.sync.stats.traces_pulled,
                    "clickhouse_spans_pulled": self.writer.sync.stats.spans_pulled,
                    "clickhouse_traces_dropped": self.writer.sync.stats.traces_dropped,
                    "clickhouse_sync_skipped": self.writer.sync.stats.skipped,
                    "clickhouse_twin_traces": self.writer.sync.stats.twin_traces,
                    "clickhouse_calls_rechecked": self.writer.sync.stats.rechecks,
                    "clickhouse_rechecks_waiting": len(self.writer.sync.rechecks),
                    "clickhouse_rechecks_dropped": self.writer.sync.rechecks.dropped,
                    "clickhouse_recheck_lookups_refused": self.writer.sync.stats.lookups_refused,
                    "clickhouse_rechecks_given_up": self.writer.sync.rechecks.given_up,
                    "clickhouse_recheck_writes": self.writer.sync.stats.recheck_writes,
                    "clickhouse_trace_checks": self.writer.sync.stats.trace_checks,
                    "clickhouse_traces_rewritten": self.writer.sync.stats.traces_rewritten})}

    def index_stats(self) -> dict[str, Any]:
        if self.indexer is None:
            return {}
        try:
            lag_spans, lag_logs = index_lag(self.db)
        except sqlite3.Error:
            lag_spans = lag_logs = -1
        s = self.indexer.stats
        return {"index_spans": s.spans, "index_logs": s.logs, "index_rows": s.rows, "index_seconds": s.seconds,
                "index_cpu_seconds": s.cpu_seconds, "index_lag_spans": lag_spans, "index_lag_logs": lag_logs}

    def send(self, message: tuple) -> None:
        try:
            self.outbox.send(message)
        except (BrokenPipeError, OSError):
            pass
