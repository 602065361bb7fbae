"""The ClickHouse sink: what `serve --store clickhouse://…` writes, and how it keeps "ack = committed".

Each serve keeps its SQLite writer as a replica-local working store (trace cache, billing-once, root
inheritance are the SQLite writer's, unchanged). In the same SQLite transaction as every write, the writer
records what changed for ClickHouse in an outbox row (store/clickhouse/outbox.py, table clickhouse_outbox,
migration m013): ids of the spans inserted or corrected, the log rows added, the traces touched (not their
conversations and users: ClickHouse computes those when read, store/clickhouse/sessions.py), the
resources and scopes, and every signed rollup delta. The `Shipper` here turns an outbox
batch into ClickHouse rows (store/clickhouse/rows.py), inserts them, and deletes the batch only after
ClickHouse confirmed every insert; the writer process acknowledges a request only once the outbox is
empty, i.e. once its rows are in ClickHouse.

Idempotence: a batch shipped again (ClickHouse confirmed, then the process died before the delete; or an
insert that failed half-way) is sent with the same insert_deduplication_token per table, which ClickHouse
remembers (schema m002's non_replicated_deduplication_window), so rollup deltas are never added twice;
spans and summaries would collapse by their ReplacingMergeTree version anyway.

Spans are read from SQLite at ship time, not copied into the outbox: the outbox stays a few dozen bytes a
span (no second copy of the content), and a span corrected again before shipping goes out in its newest
state under each batch's version, which is harmless (the later batch carries the same row, versioned later).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from store.clickhouse import rows as ch_rows
from store.clickhouse.client import ClickHouseClient, ClickHouseError
from store.clickhouse.schema import BY_COST_TABLE
from store.metrics import dropped_points

log = logging.getLogger("llmobs.clickhouse")

COPY_CHUNK_ROWS = 20_000


# --- a whole SQLite store --------------------------------------------------------------------------------


def copy_store(sqlite_db: sqlite3.Connection, client: ClickHouseClient, *, version: int | None = None
               ) -> dict[str, int]:
    """Copy a whole SQLite store into a migrated ClickHouse database through the sink's converters: spans,
    logs, trace summaries, rollups, tool calls, change markers, resources, scopes and OTLP metric points
    (conversations and users are computed from the summaries when read). Returns the rows inserted per table.
    Spans take `version` (default: now, in ns); summaries keep their updated_ns. Copying the same store
    twice doubles nothing but the rollups (they are deltas): copy into an empty database."""
    version = version if version is not None else time.time_ns()
    db = sqlite_db
    token = uuid.uuid4().hex
    counts: dict[str, int] = {}

    def put(table: str, rows: Any, columns: Sequence[str]) -> None:
        batch: list[Any] = []
        done = counts.get(table, 0)
        part = 0
        for row in rows:
            batch.append(row)
            if len(batch) >= COPY_CHUNK_ROWS:
                done += _insert(client, table, batch, columns, f"{token}-{part}")
                part += 1
                batch = []
        if batch:
            done += _insert(client, table, batch, columns, f"{token}-{part}")
        counts[table] = done

    put("resources", ch_rows.resource_rows(db, None), ch_rows.RESOURCE_INSERT_COLUMNS)
    put("scopes", ch_rows.scope_rows(db, None), ch_rows.SCOPE_INSERT_COLUMNS)
    last_id = 0
    counts["spans"] = 0
    while True:  # in id order, a chunk at a time: the content of a big store does not fit in memory
        ids = [row[0] for row in db.execute("SELECT id FROM spans WHERE id > ? ORDER BY id LIMIT ?",
                                            (last_id, COPY_CHUNK_ROWS))]
        if not ids:
            break
        last_id = ids[-1]
        put("spans", ch_rows.spans_by_id(db, ids, version), ch_rows.SPAN_INSERT_COLUMNS)
    counts["logs"] = 0
    max_log = db.execute("SELECT coalesce(max(id), 0) FROM logs").fetchone()[0]
    for after in range(0, max_log, COPY_CHUNK_ROWS):
        put("logs", ch_rows.logs_in_range(db, after, after + COPY_CHUNK_ROWS, 1), ch_rows.LOG_INSERT_COLUMNS)
    summaries = ch_rows.trace_rows(db, None)
    put("trace_summaries", summaries, ch_rows.TRACE_INSERT_COLUMNS)
    put(BY_COST_TABLE, ch_rows.by_cost_rows(summaries, {}), ch_rows.TRACE_INSERT_COLUMNS)
    put("tool_calls", ch_rows.tool_call_rows(db, None, version), ch_rows.TOOL_CALL_INSERT_COLUMNS)
    put("changes", ch_rows.change_rows(db, None, version), ch_rows.CHANGE_INSERT_COLUMNS)
    put("rollups", ch_rows.stored_rollup_rows(db), ch_rows.ROLLUP_INSERT_COLUMNS)
    put("tool_rollups", ch_rows.stored_tool_rollup_rows(db), ch_rows.TOOL_ROLLUP_INSERT_COLUMNS)
    put("metric_points", ch_rows.stored_metric_point_rows(db), ch_rows.METRIC_POINT_INSERT_COLUMNS)
    dropped = dropped_points(db)
    put("metric_points_dropped", [[version, dropped]] if dropped else [], ch_rows.METRIC_DROPPED_INSERT_COLUMNS)
    return counts


def _insert(client: ClickHouseClient, table: str, rows: list[Any], columns: Sequence[str], token: str) -> int:
    if not rows:
        return 0
    client.insert(table, rows, list(columns), settings={"insert_deduplication_token": token})
    return len(rows)


# --- outbox batches ----------------------------------------------------------------------------------------


def batch_rows(db: sqlite3.Connection, payload: dict[str, Any], version: int) -> dict[str, tuple[list, Sequence[str]]]:
    """One outbox batch as ClickHouse rows: {table: (rows, column names)}."""
    out: dict[str, tuple[list, Sequence[str]]] = {}
    unhex = bytes.fromhex
    if payload.get("resources"):
        out["resources"] = (ch_rows.resource_rows(db, [unhex(d) for d in payload["resources"]]),
                            ch_rows.RESOURCE_INSERT_COLUMNS)
    if payload.get("scopes"):
        out["scopes"] = (ch_rows.scope_rows(db, [unhex(d) for d in payload["scopes"]]), ch_rows.SCOPE_INSERT_COLUMNS)
    spans: list[list[Any]] = []
    if payload.get("spans"):
        spans.extend(ch_rows.spans_by_id(db, payload["spans"], version))
    if payload.get("gone_spans"):
        spans.extend(ch_rows.span_tombstones(
            [(unhex(t), unhex(s), start) for t, s, start in payload["gone_spans"]], version))
    if spans:
        out["spans"] = (spans, ch_rows.SPAN_INSERT_COLUMNS)
    logs: list[list[Any]] = []
    if payload.get("logs"):
        after, last = payload["logs"]
        logs.extend(ch_rows.logs_in_range(db, after, last, 1))
    if payload.get("gone_logs"):
        logs.extend(ch_rows.log_tombstones(
            [(unhex(t), unhex(s), time_ns, unhex(d)) for t, s, time_ns, d in payload["gone_logs"]], version))
    if logs:
        out["logs"] = (logs, ch_rows.LOG_INSERT_COLUMNS)
    if payload.get("traces"):
        # Deleted traces (forget) take the batch's version, stored ones their updated_ns. A deletion's times
        # are the deletion's: the table's TTL (end_ns + retention) would drop a row dated 1970 on insert.
        traces = ch_rows.trace_rows(db, [unhex(t) for t in payload["traces"]])
        start_at, end_at = ch_rows.TRACE_COLUMNS.index("start_ns"), ch_rows.TRACE_COLUMNS.index("end_ns")
        old_starts = payload.get("old_starts", {})
        moved: list[list[list[Any]]] = []
        for row in traces:
            if row[-1]:
                row[-2] = row[start_at] = row[end_at] = version
            # The rows this trace's summary had at the starts it moved from (or, deleted, at every start it
            # had): the sort key holds the start's hour, so the new row does not replace them.
            moved.extend(ch_rows.trace_tombstones([row[0]], row[-2], start)
                         for start in old_starts.get(row[0].hex(), ()))
        old_cost_keys = {unhex(t): [tuple(key) for key in keys] for t, keys in payload.get("old_cost_keys", {}).items()}
        by_cost = ch_rows.by_cost_rows(traces, old_cost_keys)
        if by_cost:
            out[BY_COST_TABLE] = (by_cost, ch_rows.TRACE_INSERT_COLUMNS)
        traces.extend(tombstone for found in moved for tombstone in found)
        out["trace_summaries"] = (traces, ch_rows.TRACE_INSERT_COLUMNS)
    tool_calls: list[list[Any]] = []
    if payload.get("tool_traces"):
        tool_calls.extend(ch_rows.tool_call_rows(db, [unhex(t) for t in payload["tool_traces"]], version))
    if payload.get("gone_tool_calls"):
        tool_calls.extend(ch_rows.tool_call_tombstones(
            [(unhex(t), unhex(s), start) for t, s, start in payload["gone_tool_calls"]], version))
    if tool_calls:
        out["tool_calls"] = (tool_calls, ch_rows.TOOL_CALL_INSERT_COLUMNS)
    if payload.get("changes"):
        out["changes"] = (ch_rows.change_rows(db, payload["changes"], version), ch_rows.CHANGE_INSERT_COLUMNS)
    if payload.get("tool_rollups"):
        out["tool_rollups"] = ([ch_rows.tool_rollup_row(res, bucket, tool, calls, errors, duration,
                                                        {int(b): c for b, c in hist.items()})
                                for res, bucket, tool, calls, errors, duration, hist in payload["tool_rollups"]],
                               ch_rows.TOOL_ROLLUP_INSERT_COLUMNS)
    if payload.get("metric_points"):
        out["metric_points"] = ([ch_rows.metric_point_row(*point) for point in payload["metric_points"]],
                                ch_rows.METRIC_POINT_INSERT_COLUMNS)
    if payload.get("metric_points_dropped"):
        out["metric_points_dropped"] = ([[version, payload["metric_points_dropped"]]],
                                        ch_rows.METRIC_DROPPED_INSERT_COLUMNS)
    if payload.get("rollups"):
        out["rollups"] = (
            [ch_rows.rollup_row(res, bucket, dims, {int(i): v for i, v in counters.items()},
                                [{int(b): c for b, c in h.items()} for h in hists])
             for res, bucket, dims, counters, hists in payload["rollups"]],
            ch_rows.ROLLUP_INSERT_COLUMNS,
        )
    return out


# The order a batch's tables are inserted in: what a row refers to goes first, rollups last.
TABLE_ORDER = ("resources", "scopes", "spans", "logs", "trace_summaries", BY_COST_TABLE, "tool_calls", "changes",
               "tool_rollups", "metric_points", "metric_points_dropped", "rollups")


@dataclass
class ShipStats:
    batches: int = 0
    rows: int = 0
    failures: int = 0
    cpu_seconds: float = 0.0
    seconds: float = 0.0
    last_error: str | None = None
    down_since: float | None = None  # monotonic time of the first failure of the current outage
    backlog: int = 0  # batches waiting in the outbox after the last attempt
    tables: dict[str, int] = field(default_factory=dict)


class Shipper:
    """Sends the outbox to ClickHouse, oldest batch first; deletes a batch once ClickHouse confirmed it.

    `ship()` is called by the writer process after each commit (and periodically): it returns True when
    the outbox is empty, the only state in which the writer may acknowledge requests. While ClickHouse is
    unreachable it is retried at most every `retry_every_s` (an attempt may wait for a connect timeout;
    between attempts `ship()` answers False at once, and the requests are refused retryably)."""

    def __init__(self, db: sqlite3.Connection, client_factory: Callable[[], ClickHouseClient], *,
                 retry_every_s: float = 1.0, describe: str = "ClickHouse",
                 explain: Callable[[BaseException], str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`explain`: a failure as one line saying what to do (default: the error's own text)."""
        self.db = db
        self.explain = explain
        self._client_factory = client_factory
        self._client: ClickHouseClient | None = None
        self.retry_every_s = retry_every_s
        self.describe = describe
        self.clock = clock
        self.stats = ShipStats()
        self._next_attempt = 0.0
        # A test's hook: called after ClickHouse confirmed a batch, before its outbox row is deleted.
        self.after_insert: Callable[[int], None] | None = None

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None

    def pending(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM clickhouse_outbox").fetchone()[0])

    def ship(self, *, force: bool = False) -> bool:
        """Ship every waiting batch. True: the outbox is empty (everything is in ClickHouse)."""
        if not force and self.stats.down_since is not None and self.clock() < self._next_attempt:
            return False
        started, cpu = time.perf_counter(), time.process_time()
        try:
            if self.stats.down_since is not None:
                self._connected()  # back only once it answers, even with nothing waiting to ship
            while True:
                batches = self.db.execute(
                    "SELECT batch, token, version, payload FROM clickhouse_outbox ORDER BY batch LIMIT 16"
                ).fetchall()
                if not batches:
                    break
                for batch, token, version, payload in batches:
                    self._ship_one(batch, token, version, payload)
        except (ClickHouseError, OSError) as exc:
            self._failed(exc)
            return False
        finally:
            self.stats.seconds += time.perf_counter() - started
            self.stats.cpu_seconds += time.process_time() - cpu
        if self.stats.down_since is not None:
            waited = self.clock() - self.stats.down_since
            log.warning("%s is back after %.0f s: the outbox is shipped, requests are acknowledged again",
                        self.describe, waited)
            self.stats.down_since = None
        self.stats.backlog = 0
        return True

    def _ship_one(self, batch: int, token: str, version: int, payload: bytes) -> None:
        tables = batch_rows(self.db, json.loads(payload), version)
        client = self._connected()
        for table in TABLE_ORDER:
            if table in tables:
                rows, columns = tables[table]
                # The same token on every attempt at this batch: ClickHouse drops a block it has seen.
                self.stats.rows += _insert(client, table, rows, columns, token)
                self.stats.tables[table] = self.stats.tables.get(table, 0) + len(rows)
        if self.after_insert is not None:
            self.after_insert(batch)
        with self.db:
            self.db.execute("DELETE FROM clickhouse_outbox WHERE batch = ?", (batch,))
        self.stats.batches += 1

    def probe(self) -> bool:
        """Connect (and migrate) now, at serve's start: an unreachable or misconfigured ClickHouse is said
        at once in the log, not at the first export request. False if it could not."""
        try:
            self._connected()
        except (ClickHouseError, OSError) as exc:
            self._failed(exc)
            return False
        return True

    def reader(self) -> ClickHouseClient:
        """The connection, for the writer's reads (store/clickhouse/trace_sync.py). Raises at once while
        ClickHouse is down and no new attempt is due: a batch then waits on nothing it cannot have."""
        if self.stats.down_since is not None and self.clock() < self._next_attempt:
            raise ClickHouseError(f"{self.describe} is unreachable")
        return self._connected()

    def _connected(self) -> ClickHouseClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _failed(self, exc: BaseException) -> None:
        self.stats.failures += 1
        self.stats.last_error = (self.explain(exc) if self.explain is not None
                                 else f"{self.describe}: {exc}").splitlines()[0][:300]
        now = self.clock()
        self._next_attempt = now + self.retry_every_s
        self.close()  # a fresh connection next time: the old one may be half-dead
        try:
            self.stats.backlog = self.pending()
        except sqlite3.Error:
            pass
        if self.stats.down_since is None:
            self.stats.down_since = now
            log.error("cannot write to %s: %s; %d batch(es) wait in the outbox, kept across restarts; "
                      "export requests are refused retryably (UNAVAILABLE / 503) until it answers",
                      self.describe, self.stats.last_error, self.stats.backlog)
