"""Stragglers between replicas: before a replica's writer decides anything about a batch's traces, it brings
into its working store what other replicas stored of them in ClickHouse (issue 17, capability 3).

The router keeps a trace's spans in one replica, but not always: when the replica set changes, the
Collector's ring moves about 1/N of the traces, and a span that arrives late (a root exported after its
children, a log record with a finish reason, the second instrumentation's twin of a call) lands in a
replica that holds nothing of its trace, or an out-of-date copy. Deciding from that copy bills a call
twice, leaves a call's feature and tenant uninherited, or undoes another replica's correction.

So each batch starts with one query: the newest summary version of the batch's traces in ClickHouse.
A trace whose version there is newer than the one this working store wrote was written by another
replica since: its spans are read from ClickHouse (FINAL: as every reader sees them) and replace this
store's copy, and the writer's cache forgets it. The writer then
applies its rules to the whole trace as usual, and the deltas it ships are taken against what
ClickHouse holds, so the rollups end up as if one replica had seen every span. Whatever this replica
ships of such a trace carries a version above the one it read, so it wins over it even when the other
replica's clock is ahead.

A trace forgotten in ClickHouse (`forget --store`: a deletion newer than this copy) is dropped from the
working store instead, so that a straggler does not bring the forgotten spans back.

Two replicas given spans of one trace in the same moment each commit before they could see the other's
rows: each decided from half the trace (a call billed twice, a child without its root's feature, a summary
of half the spans). So every trace a replica writes is looked up again `TRACE_CHECK_AFTER_S` after the write
(`traces_due`, off the path of any request's ack): if ClickHouse holds a newer version than the one this
replica wrote, another replica wrote it since or at once, and the trace is pulled as for a batch. If that
newest version's summary counts fewer spans than this store holds once the pull is in (`undecided`), its
writer did not see them all: the two wrote at once, and this replica applies its rules to the whole trace again and
ships what changed. A straggler's replica, which read the trace before writing it, counted every span: the
first replica leaves it. Of two writes in the same moment, the one with the older version finds the other's;
the other, at its next check, finds a summary that counts every span, and writes nothing.

While ClickHouse cannot be reached nothing is read: the batch is decided from the working store alone, as
before, and its requests wait for the outbox to be shipped anyway; the trace checks due wait for it.
"""

from __future__ import annotations

import logging
import sqlite3
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from store.clickhouse import rows as ch_rows
from store.clickhouse.client import ClickHouseClient, ClickHouseError, batches
from store.clickhouse.twin_calls import (
    ANY_MOVE,
    LATE_S,
    LEAD_NS,
    MARGIN_S,
    MAX_QUEUED,
    PASS_CALLS,
    RECHECK_AFTER_S,
    AnyMove,
    MovePolicy,
    Rechecks,
    by_time,
    stored_twins,
    stored_twins_under_roots,
)
from store.connection import immediate_transaction
from store.models import COL, SPAN_COLUMNS, Call
from store.sessions import rows_in

if TYPE_CHECKING:
    from store.writer import SpanWriter

log = logging.getLogger("llmobs.clickhouse")

# How long the writes are logged for a killed replica's restart (TraceSync.log_write): the reach of a write's
# last lookup, and a margin. That is a late root's lookup put off until the other replica's rechecks are over
# (Rechecks.later: under RECHECK_AFTER_S[-1] + MARGIN_S after the root's write, since it is put off only when
# the other trace was written less than MARGIN_S before the root); it is not a write of its own, so the root's
# logged write, replayed, is what brings it back. Older rows are dropped every PRUNE_EVERY_S.
RECENT_WRITES_S = RECHECK_AFTER_S[-1] + MARGIN_S + 10
# When a trace this replica wrote is looked up again for a write of it by another replica in the same moment.
# 2 s: the other write of the same moment is shipped by then (a replica acks a request only once ClickHouse
# confirmed it). 60 s: one held up longer (ClickHouse briefly unreachable for that replica).
TRACE_CHECK_AFTER_S = (2, 60)
PRUNE_EVERY_S = 10

_UPDATED_COLUMNS = tuple(c for c in ch_rows.SPAN_VALUE_COLUMNS if c not in ("trace_id", "span_id"))
_UPDATE_SPAN = (f"UPDATE spans SET {', '.join(f'{c} = ?' for c in _UPDATED_COLUMNS)}, "
                "resource_id = ?, scope_id = ? WHERE trace_id = ? AND span_id = ?")
_INSERT_SPAN = (f"INSERT INTO spans ({', '.join(SPAN_COLUMNS)}) VALUES ({', '.join('?' * len(SPAN_COLUMNS))})")


@dataclass
class SyncStats:
    batches: int = 0  # batches whose traces were looked up in ClickHouse
    traces_pulled: int = 0  # traces another replica had written since this one: read from ClickHouse
    spans_pulled: int = 0
    traces_dropped: int = 0  # traces forgotten in ClickHouse, dropped from the working store
    skipped: int = 0  # batches decided without the lookup (ClickHouse unreachable)
    twin_traces: int = 0  # traces looked up because they hold a twin of a call the batch writes or rechecks
    rechecks: int = 0  # calls looked up again after they were written
    lookups_refused: int = 0  # rechecks' lookups ClickHouse refused (retried in halves)
    recheck_writes: int = 0  # recheck passes that found twins and committed what they moved
    trace_checks: int = 0  # traces looked up again after this replica wrote them (TRACE_CHECK_AFTER_S)
    traces_rewritten: int = 0  # of those, written again: another replica had stored spans of them at once


class TraceSync:
    """`pull(writer, trace_ids)` at the start of every batch (SpanWriter.sync). `client` is the shipper's
    connection (Shipper.reader): it raises at once while ClickHouse is known to be down."""

    def __init__(self, client: Callable[[], ClickHouseClient]) -> None:
        self.client = client
        self.stats = SyncStats()
        self.rechecks = Rechecks()
        # The version this replica last wrote each recent trace at: it is that trace's last writer while
        # ClickHouse holds no newer one (a copy read from ClickHouse is not this replica's).
        self._written: OrderedDict[bytes, int] = OrderedDict()
        self.policy: MovePolicy | AnyMove = ANY_MOVE
        self.unreachable = False  # the last pull could not reach ClickHouse
        self.pulled: set[bytes] = set()  # the traces the last pull read from ClickHouse (written elsewhere)
        # Of the traces to rewrite the last pull read, those whose newest summary in ClickHouse counts fewer spans than
        # this store holds of them with the pull's: written by two replicas at once, each from its part.
        self.undecided: set[bytes] = set()
        # Each written trace's lookups for another replica's write of it (TRACE_CHECK_AFTER_S): a queue per step
        # of (due, trace id, version), in the order written; an entry whose version is no longer the trace's
        # newest write here is dropped when due (that write has entries of its own).
        self._trace_checks: list[deque[tuple[int, bytes, int]]] = [deque() for _ in TRACE_CHECK_AFTER_S]
        self._traces_again: list[bytes] = []  # a check that could not reach ClickHouse: the next pass's first
        self._next_prune = 0
        # Calls a recheck pass looks up: halved at each refused pass, doubled back at each one that runs.
        self.pass_size = PASS_CALLS
        self._next_refusal_log = 0

    def written(self, trace_ids: Iterable[bytes], call_rows: Iterable[int], version: int) -> None:
        """A committed write of these traces at `version`; the calls of them to look up again, by row id."""
        for trace_id in trace_ids:
            self._written[trace_id] = version
            self._written.move_to_end(trace_id)
        while len(self._written) > MAX_QUEUED:
            self._written.popitem(last=False)
        self.rechecks.written(call_rows, version)
        self._check_trace_later(trace_ids, version)

    def _check_trace_later(self, trace_ids: Iterable[bytes], version: int, step: int = 0) -> None:
        queue = self._trace_checks[step]
        due = version + TRACE_CHECK_AFTER_S[step] * 10**9
        for trace_id in trace_ids:
            if len(queue) < MAX_QUEUED:
                queue.append((due, trace_id, version))

    def traces_due(self, now: int, limit: int = PASS_CALLS) -> list[bytes]:
        """Up to `limit` traces whose lookup for another replica's write is due by `now`, of which this replica is
        still the last writer here, each taken on to its next step (the rest are the next pass's)."""
        due: dict[bytes, None] = dict.fromkeys(self._traces_again)
        self._traces_again = []
        for step, queue in enumerate(self._trace_checks):
            while queue and queue[0][0] <= now and len(due) < limit:
                _due, trace_id, version = queue.popleft()
                if self._written.get(trace_id) != version:
                    continue
                due[trace_id] = None
                if step + 1 < len(TRACE_CHECK_AFTER_S):
                    self._check_trace_later((trace_id,), version, step + 1)
        return list(due)

    def traces_due_by(self, now: int) -> bool:
        """Whether a trace's lookup is due by `now` (one put back after ClickHouse did not answer waits a pass)."""
        return any(queue and queue[0][0] <= now for queue in self._trace_checks)

    def written_elsewhere(self, db: sqlite3.Connection, trace_ids: Sequence[bytes]) -> list[bytes] | None:
        """Of these traces, those ClickHouse holds a newer version of than the one this replica last wrote: another
        replica wrote them since, or in the same moment (or forgot them: the pull drops those). None: ClickHouse did
        not answer (they are looked up again at the next pass)."""
        starts = dict(rows_in(db, "SELECT trace_id, start_ns FROM traces WHERE trace_id IN ({marks})", trace_ids))
        versions = {t: self._written[t] for t in trace_ids if t in starts and t in self._written}
        try:
            newer = ch_rows.newer_versions(self.client(), versions, starts, LEAD_NS)
        except (ClickHouseError, OSError) as exc:
            log.debug("looking traces up again in ClickHouse failed: %s", exc)
            self._traces_again = list(trace_ids)
            return None
        self.stats.trace_checks += len(versions)
        return [t for t in versions if t in newer]

    def check_again(self, trace_ids: Sequence[bytes]) -> None:
        """A rewrite of these traces did not commit: they are the next pass's."""
        self._traces_again = list(dict.fromkeys([*trace_ids, *self._traces_again]))

    def log_write(self, db: sqlite3.Connection, trace_ids: Sequence[bytes], call_rows: Sequence[int],
                  version: int) -> None:
        """In the writer's transaction, beside `written` once it commits: the same write, kept in the working
        store for RECENT_WRITES_S, from which a replica killed before its clean stop's `save` rebuilds its
        rechecks and versions (`restore`). One row a transaction: 16 bytes a trace, 8 a call."""
        db.execute("INSERT INTO clickhouse_recent_writes (version, traces, calls) VALUES (?, ?, ?)",
                   (version, b"".join(trace_ids), array("q", call_rows).tobytes()))

    def prune_log(self, db: sqlite3.Connection, now: int) -> None:
        """The logged writes older than RECENT_WRITES_S dropped, every PRUNE_EVERY_S at most."""
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_S * 10**9
        db.execute("DELETE FROM clickhouse_recent_writes WHERE version < ?", (now - RECENT_WRITES_S * 10**9,))

    def save(self, db: sqlite3.Connection) -> int:
        """At a clean stop: the calls still to be rechecked, and the versions this replica last wrote its recent
        traces at, kept in the working store (m015) so that the replica that restarts on it finishes the
        rechecks as its last writer. Without them a call written in its last two minutes stays billed twice
        when only this replica could find its twin (store/clickhouse/twin_calls.py). Returns the calls kept."""
        waiting = self.rechecks.waiting()
        with immediate_transaction(db):
            db.execute("DELETE FROM clickhouse_rechecks")
            db.execute("DELETE FROM clickhouse_written")
            db.executemany("INSERT INTO clickhouse_rechecks (span_row, version, step, due_ns) VALUES (?, ?, ?, ?)",
                           waiting)
            db.executemany("INSERT INTO clickhouse_written (trace_id, version, ord) VALUES (?, ?, ?)",
                           ((trace_id, version, n) for n, (trace_id, version) in enumerate(self._written.items())))
        return len(waiting)

    def restore(self, db: sqlite3.Connection) -> int:
        """At start: take back what the last clean stop saved, and clear it (a later stop saves afresh); after a
        stop that saved nothing (the process killed), the writes logged in its last RECENT_WRITES_S, replayed
        (their rechecks due then run at once). Returns the calls to look up again."""
        with immediate_transaction(db):
            waiting = db.execute("SELECT span_row, version, step, due_ns FROM clickhouse_rechecks").fetchall()
            written = db.execute("SELECT trace_id, version FROM clickhouse_written ORDER BY ord").fetchall()
            db.execute("DELETE FROM clickhouse_rechecks")
            db.execute("DELETE FROM clickhouse_written")
            logged = [] if written else db.execute(
                "SELECT traces, calls, version FROM clickhouse_recent_writes ORDER BY version").fetchall()
        if logged:
            for traces, calls, version in logged:
                self.written([bytes(traces[i:i + 16]) for i in range(0, len(traces), 16)],
                             array("q", bytes(calls)), version)
            return len(self.rechecks)
        self.rechecks.restore(waiting)
        for trace_id, version in written[-MAX_QUEUED:]:
            self._written[bytes(trace_id)] = version
        # The traces written within the last step's reach of the stop are looked up once more, at that step.
        newest = max((version for _t, version in written), default=0)
        for trace_id, version in self._written.items():
            if newest - version <= TRACE_CHECK_AFTER_S[-1] * 10**9:
                self._check_trace_later((trace_id,), version, len(TRACE_CHECK_AFTER_S) - 1)
        return len(waiting)

    def reachable(self) -> bool:
        try:
            self.client()
        except (ClickHouseError, OSError):
            return False
        return True

    def one_late_stretch(self, due: Sequence[tuple[int, int]], calls: Sequence[tuple[Call, int]],
                         row_of: Mapping[Call, int], now: int
                         ) -> tuple[list[tuple[int, int]], list[tuple[Call, int]]]:
        """A recheck pass's `due` entries and their `calls` (`row_of`: each call's row id) holding late roots of
        one stretch of time at most (by_time): the late roots of the others, put back due at once, are the next
        pass's. Each stretch is a query over about two hours of spans; a backfill's roots spread over a day made
        24 in one pass, seconds that the writer and every ack waited on."""
        stretches = by_time(self._late(calls, now))
        if len(stretches) <= 1:
            return list(due), list(calls)
        later = {call for stretch in stretches[1:] for call in stretch}
        self.rechecks.again([(row_of[call], version) for call, version in calls if call in later], now, wait=0)
        kept = {row_of[call] for call, _ in calls if call not in later}
        return ([entry for entry in due if entry[0] in kept],
                [(call, version) for call, version in calls if call not in later])

    @staticmethod
    def _late(calls: Sequence[tuple[Call, int]], now: int) -> list[Call]:
        """The root calls stored more than LATE_S after they ended, at their last recheck: they are looked up
        among every call too, since a twin under another root may have been stored long before, past that
        replica's rechecks (rare: a backlog; a backfill of history makes every root call late, so once, not at
        each recheck)."""
        return [call for call, version in calls if call.root and version - call.end_ns > LATE_S * 10**9
                and now - version >= RECHECK_AFTER_S[-1] * 10**9]

    def with_stored_twins(self, due: Sequence[tuple[int, int]], calls: Sequence[tuple[Call, int]], now: int
                          ) -> tuple[list[tuple[Call, int]], set[bytes]] | None:
        """Of a recheck pass's `due` (row id, version) entries, holding `calls`: those calls that ClickHouse holds
        a twin of in another trace (the only ones a recheck can change: a twin in this working store was joined
        when the later of the two was written), and the traces holding those twins. None: the lookup did not
        run (ClickHouse unreachable, or it refused the lookup: `refused`), and the entries are due again."""
        late = self._late(calls, now)
        try:
            client = self.client()
        except (ClickHouseError, OSError) as exc:
            log.debug("ClickHouse unreachable for the rechecks: %s", exc)
            self.rechecks.again(due, now)
            return None
        try:
            pairs = stored_twins(client, [call for call, _ in calls])
            if late:
                pairs += stored_twins_under_roots(client, late)
        except (ClickHouseError, OSError) as exc:
            if _answers(client):
                self.refused(due, now, exc)
            else:
                log.debug("looking calls up again in ClickHouse failed: %s", exc)
                self.rechecks.again(due, now)
            return None
        self.pass_size = min(PASS_CALLS, self.pass_size * 2)
        found = {call for call, _trace in pairs}
        return [(call, version) for call, version in calls if call in found], {trace for _call, trace in pairs}

    def refused(self, entries: Sequence[tuple[int, int]], now: int, error: BaseException) -> None:
        """ClickHouse answers, but refused (or stopped) the lookup of a pass of these (row id, version) entries:
        looked up again a second later in halves, the first half first, until a call refused alone twice is given
        up, so that what ClickHouse cannot take of one call (or an overload that passes) does not hold up the
        rechecks of every other call for ever."""
        self.stats.lookups_refused += 1
        if len(entries) > 1 or self.pass_size > 1:
            self.pass_size = max(1, len(entries) // 2)
            self.rechecks.again(entries, now)
            return
        self.rechecks.give_up(entries)
        if now >= self._next_refusal_log:
            self._next_refusal_log = now + 60 * 10**9
            log.warning("ClickHouse refused looking a call up again for a twin (%d given up so far; its billing "
                        "stays as written): %s", self.rechecks.given_up, str(error).splitlines()[0][:300])

    def pull(self, writer: SpanWriter, trace_ids: Iterable[bytes], rechecked: Sequence[tuple[Call, int]] = (),
             twin_traces: Iterable[bytes] = (), rewrite: Collection[bytes] = ()) -> int:
        """Bring these traces up to date from ClickHouse, and those of `rechecked` (calls this replica wrote
        before, with that write's version) and `twin_traces` (their twins', from with_stored_twins); returns the
        newest version read
        (0: none), which everything this batch writes must exceed. Sets `policy`: who may move a call's billing
        in this batch (store/clickhouse/twin_calls.py). A batch's new calls are not looked up for twins here:
        their first recheck, two seconds later, sees all this lookup would, and what came since."""
        batch = set(trace_ids)
        ids = sorted(batch | {call.trace_id for call, _ in rechecked})
        self.policy = ANY_MOVE
        self.unreachable = False
        self.pulled = set()
        self.undecided = set()
        if not ids:
            return 0
        try:
            client = self.client()
            twins = set(twin_traces) - set(ids)
            self.stats.twin_traces += len(twins)
            ids = sorted(set(ids) | twins)
            remote = ch_rows.newest_summaries(client, ids)
        except (ClickHouseError, OSError) as exc:
            self.stats.skipped += 1
            self.unreachable = True
            log.debug("trace lookup in ClickHouse skipped: %s", exc)
            return 0
        self.stats.batches += 1
        mine: dict[bytes, int | None] = {t: v for t, r in remote.items() if (v := self._written.get(t)) == r[1]}
        mine.update((t, None) for t in batch)
        self.policy = MovePolicy({t: r[1] for t, r in remote.items()}, mine)
        if not remote:
            return 0
        # Every version this batch writes must be above the newest one ClickHouse holds of its traces, this
        # replica's own included: a clock that is behind must not make a later row lose to an earlier one.
        floor = max(r[1] for r in remote.values())
        if writer.outbox is not None:
            writer.outbox.seen_version(floor)
            # Where ClickHouse holds each summary: if this batch moves its start to another hour, or its cost
            # or start day, that row gets a deletion row (the sort keys hold them).
            writer.outbox.remote_keys.update((t, (r[2], r[4])) for t, r in remote.items() if not r[0])
        db = writer.db
        local = dict(rows_in(db, "SELECT trace_id, updated_ns FROM traces WHERE trace_id IN ({marks})", list(remote)))
        newer = {t: r for t, r in remote.items() if r[1] > (local.get(t) or 0)}
        if not newer:
            return floor
        forgotten = [t for t, r in newer.items() if r[0]]
        written = {t: r for t, r in newer.items() if not r[0]}
        if forgotten:
            self._drop(writer, forgotten)
            writer.forget_traces(forgotten)
        if written:
            to_rewrite = [t for t in written if t in rewrite]
            try:
                spans = _spans_of(client, written)
                resources, scopes = _blobs_for(client, db, spans)
                counted = ch_rows.newest_span_counts(client, to_rewrite) if to_rewrite else {}
            except (ClickHouseError, OSError) as exc:
                self.stats.skipped += 1
                self.unreachable = True
                log.debug("reading traces from ClickHouse failed: %s", exc)
                return floor
            self._adopt(writer, spans, resources, scopes)
            if to_rewrite:
                # Counted here, after the pull: this store's spans and ClickHouse's. The pull reads only within the
                # newest summary's time range, and the spans its writer lacked (this replica's) may lie outside.
                held = dict(rows_in(db, "SELECT trace_id, count(*) FROM spans WHERE trace_id IN ({marks}) "
                                    "GROUP BY trace_id", to_rewrite))
                self.undecided = {t for t in to_rewrite if held.get(t, 0) > counted.get(t, 0)}
            self.pulled = set(written)
            self.stats.traces_pulled += len(written)
            self.stats.spans_pulled += len(spans)
            # This copy is now the one in ClickHouse: it is not read again until another replica writes.
            db.executemany("UPDATE traces SET updated_ns = ? WHERE trace_id = ?",
                           [(r[1], t) for t, r in written.items()])
            writer.forget_traces(written)
        return floor

    def _adopt(self, writer: SpanWriter, spans: list[dict[str, Any]], resources: dict, scopes: dict) -> None:
        """ClickHouse's rows of these spans replace this store's: updated in place where the span is here
        (its row id stays, for the outbox and the search index), inserted where it is not."""
        db = writer.db
        resource_ids = writer.intern_blobs(resources, "resources")
        scope_ids = writer.intern_blobs(scopes, "scopes")
        here = {(bytes(t), bytes(s)) for t, s in rows_in(
            db, "SELECT trace_id, span_id FROM spans WHERE trace_id IN ({marks})",
            sorted({span["trace_id"] for span in spans}))}
        updates, inserts = [], []
        for span in spans:
            span["raw"] = ch_rows.sqlite_raw(span["raw"]) or b""
            resource_id = resource_ids.get(span.pop("resource_digest"))
            scope_id = scope_ids.get(span.pop("scope_digest"))
            if (span["trace_id"], span["span_id"]) in here:
                updates.append((*(span[c] for c in _UPDATED_COLUMNS),
                                resource_id, scope_id, span["trace_id"], span["span_id"]))
            else:
                row: list[Any] = [None] * len(SPAN_COLUMNS)
                for name, value in span.items():
                    row[COL[name]] = value
                row[COL["resource_id"]], row[COL["scope_id"]] = resource_id, scope_id
                row[COL["id"]] = writer.next_span_id()
                inserts.append(row)
        if updates:
            db.executemany(_UPDATE_SPAN, updates)
        if inserts:
            db.executemany(_INSERT_SPAN, inserts)

    def _drop(self, writer: SpanWriter, trace_ids: Sequence[bytes]) -> None:
        """Traces forgotten in ClickHouse since this copy was written: gone here too, without touching
        ClickHouse (its rollups already moved)."""
        from store import content_index  # imports store.queries, which imports store.writer

        db = writer.db
        content_index.delete_traces(db, trace_ids)
        for table in ("spans", "logs", "traces"):
            list(rows_in(db, f"DELETE FROM {table} WHERE trace_id IN ({{marks}})", trace_ids))
        content_index.clamp_watermarks(db)
        self.stats.traces_dropped += len(trace_ids)


def _answers(client: ClickHouseClient) -> bool:
    """Whether ClickHouse answers at all (after a failed lookup: was it refused, or did it not get there)."""
    try:
        client.query("SELECT 1")
    except (ClickHouseError, OSError):
        return False
    return True


def _spans_of(client: ClickHouseClient, traces: dict[bytes, tuple[int, int, int, int, int]]) -> list[dict[str, Any]]:
    """The spans of these traces as ClickHouse holds them, read within the traces' time range (the partition
    key) so that the lookup does not visit every part."""
    return ch_rows.stored_spans(client, sorted(traces), min(r[2] for r in traces.values()),
                                max(r[3] for r in traces.values()))


def _blobs_for(client: ClickHouseClient, db: sqlite3.Connection, spans: list[dict[str, Any]]
               ) -> tuple[dict[bytes, tuple], dict[bytes, tuple]]:
    """The resources and scopes these spans refer to that the working store lacks, from ClickHouse, in the
    shapes the writer interns: {digest: (service, None, blob)} and {digest: (name, version, blob)}."""
    found: list[dict[bytes, tuple]] = []
    for table, key, select in (("resources", "resource_digest", "service, NULL, blob"),
                               ("scopes", "scope_digest", "name, version, blob")):
        wanted = sorted({s[key] for s in spans if s[key] is not None})
        have = {bytes(row[0]) for row in rows_in(db, f"SELECT digest FROM {table} WHERE digest IN ({{marks}})", wanted)}
        missing = [d for d in wanted if d not in have]
        blobs: dict[bytes, tuple] = {d: () for d in wanted if d in have}
        for chunk in batches(missing):
            for digest, *value in client.query(
                    f"SELECT digest, {select} FROM {table} FINAL WHERE digest IN {{ids:Array(FixedString(16))}}",
                    {"ids": chunk}, bytes_columns=("blob",)):
                blobs[bytes(digest)] = tuple(value)
        found.append(blobs)
    return found[0], found[1]
