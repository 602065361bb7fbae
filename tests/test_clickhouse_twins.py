"""Billing-once across traces and replicas (store/clickhouse/twin_calls.py): OpenLLMetry's span of a call reaches
replica A, the anthropic SDK's own span of the same call (a trace of its own: OpenLLMetry never makes its span
current) reaches B. Two shapes: OpenLLMetry's span under the app's root span (one root and a span under another
root: only A finds the pair), or, with no app span around the call, a root too (both find it). Whatever the
order and the delay between the two spans, once the replicas have looked their calls up again ClickHouse holds
what one store given both holds: the SDK's span billed, OpenLLMetry's pointing at it, the call counted once in
the rollups; never unbilled twice.

The replicas are two real SpanWriters, each with its own working store, outbox and Shipper, writing one
ClickHouse through the HTTP client, with clocks the test moves; the ground truth is one SQLite store written by
the real Normalizer and SpanWriter with the same spans.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from store.clickhouse.client import ChdbClient, HttpClient
from store.clickhouse.outbox import OutboxRecorder
from store.clickhouse.sink import Shipper
from store.clickhouse.trace_sync import TraceSync
from store.clickhouse.twin_calls import Rechecks
from store.models import Call
from store.writer import ROLLUP_COUNTERS
from store.writer_process import carry_rechecks
from tests.otlp_factory import make_span, trace_request
from tests.store_writing import writing
from tests.test_billing_once import APP, NATIVE, OPENLLMETRY, SONNET_CALL_NUSD
from tests.test_clickhouse_sink import assert_clickhouse_equals_sqlite, clickhouse_rollups

S = 10**9
MS = 10**6
T0 = time.time_ns() // S * S - 600 * S  # recent: ClickHouse's retention drops older spans at merges
CALLS = 3
Scoped = tuple[Span, tuple[str, str]]


def _chat(trace: int, span: int, parent: int | None, scope: tuple[str, str], n: int, start: int, end: int) -> Scoped:
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-sonnet-4-5",
                             "gen_ai.response.model": "claude-sonnet-4-5", "gen_ai.response.id": f"msg_{n}",
                             "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}
    attrs["gen_ai.provider.name" if scope == NATIVE else "gen_ai.system"] = "anthropic"
    name = "chat claude-sonnet-4-5" if scope == NATIVE else "anthropic.chat"
    return make_span(trace, span, parent, name, attrs, start_ns=start, end_ns=end), scope


def traffic(t0: int, app_span: bool = True) -> tuple[list[Scoped], list[Scoped]]:
    """(for replica A: OpenLLMetry's span of each call, under the app's root span if `app_span`, else the root
    itself; for replica B: the SDK's span of each call, the root of a trace of its own)."""
    apps, sdks = [], []
    for n in range(1, CALLS + 1):
        start = t0 + n * 3 * S
        if app_span:
            apps.append((make_span(0xA00 + n, 1, None, "POST /ask", {"app.llm.feature": "ask"}, start_ns=start,
                                   end_ns=start + 2 * S, kind=2), APP))
        apps.append(_chat(0xA00 + n, 2, 1 if app_span else None, OPENLLMETRY, n, start + 10 * MS, start + 900 * MS))
        sdks.append(_chat(0xB00 + n, 7, None, NATIVE, n, start + 12 * MS, start + 880 * MS))
    return apps, sdks


class Replica:
    """A writer as `serve --store` runs it (outbox, shipper, trace lookup), its clock set by the test."""

    def __init__(self, normalizer: Any, writer: Any, db: sqlite3.Connection, shipper: Shipper, now: int) -> None:
        self.normalizer, self.writer, self.db, self.shipper, self.now = normalizer, writer, db, shipper, now
        writer.clock = lambda: self.now

    def write(self, spans: Sequence[Scoped], ship: bool = True) -> None:
        rows: list[Any] = []
        resources: dict = {}
        scopes: dict = {}
        for scope in sorted({scope for _, scope in spans}):
            request = trace_request([span for span, s in spans if s == scope], scope=scope)
            decoded, found_resources, found_scopes, rejected = self.normalizer.decode_traces(request, self.now)
            assert rejected.count == 0
            rows += decoded
            resources.update(found_resources)
            scopes.update(found_scopes)
        self.writer.write(rows, [], resources, scopes)
        if ship:
            assert self.shipper.ship()

    def at(self, now: int) -> int:
        """Move the clock to `now` and run the rechecks due, as the writer process does every second."""
        return at_once(now, self)[0]


def at_once(now: int, *replicas: Replica) -> list[int]:
    """The replicas' rechecks due by `now`, all decided before any ships what it changed (their timers fired
    together); how many calls each looked up."""
    looked = []
    for replica in replicas:
        replica.now = now
        looked.append(replica.writer.recheck_twins())
    for replica in replicas:
        assert replica.shipper.ship()
    return looked


@contextmanager
def replica(path: Path, now: int, client: Any) -> Iterator[Replica]:
    with writing(path, now) as (normalizer, writer, db):
        writer.outbox = OutboxRecorder()
        shipper = Shipper(db, lambda: client)
        writer.sync = TraceSync(shipper.reader)
        yield Replica(normalizer, writer, db, shipper, now)


def single_store(path: Path, now: int, spans: list[Scoped]) -> sqlite3.Connection:
    with writing(path, now) as (normalizer, writer, db):
        one = Replica(normalizer, writer, db, None, now)  # type: ignore[arg-type]
        one.write(spans, ship=False)
    return sqlite3.connect(path)


def calls_counted(engine: ChdbClient) -> tuple[int, int]:
    """(calls, cost) in ClickHouse's rollup totals at the 1-minute resolution."""
    _rollups, totals = clickhouse_rollups(engine)
    calls, cost = ROLLUP_COUNTERS.index("calls"), ROLLUP_COUNTERS.index("cost_nusd")
    rows = [v[0] for k, v in totals.items() if k[0] == 60]
    return sum(r[calls] for r in rows), sum(r[cost] for r in rows)


def assert_billed_once(tmp_path: Path, engine: ChdbClient, now: int, app_span: bool) -> None:
    apps, sdks = traffic(T0, app_span)
    db = single_store(tmp_path / "one.db", now, apps + sdks)
    try:
        billed = db.execute("SELECT name, count(*) FROM spans WHERE billed GROUP BY name").fetchall()
        assert billed == [("chat claude-sonnet-4-5", CALLS)]  # the SDK's spans
        assert calls_counted(engine) == (CALLS, CALLS * SONNET_CALL_NUSD)
        assert_clickhouse_equals_sqlite(db, engine, same_clock=False)
    finally:
        db.close()


SHAPES = pytest.mark.parametrize("app_span", [True, False], ids=["under-an-app-span", "two-roots"])


@SHAPES
def test_twins_written_in_the_same_moment_are_billed_once_after_the_first_recheck(
        tmp_path: Path, http: HttpClient, engine: ChdbClient, app_span: bool) -> None:
    """The common case: one export request, split between the replicas by the router. Neither can see the
    other's span when it writes; at the first recheck A (whose span is to be unbilled) moves the billing, B
    (whose span keeps it) leaves A's trace alone, so the call is not unbilled twice."""
    now = T0 + 60 * S
    apps, sdks = traffic(T0, app_span)
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now, http) as b:
        a.write(apps, ship=False)
        b.write(sdks, ship=False)
        assert a.shipper.ship() and b.shipper.ship()
        assert calls_counted(engine) == (2 * CALLS, 2 * CALLS * SONNET_CALL_NUSD)  # what a lookup alone leaves
        assert at_once(now + S, a, b) == [0, 0]  # not due yet
        assert at_once(now + 2 * S, a, b) == [CALLS, CALLS]
        assert calls_counted(engine)[0] == CALLS
        for later in (60, 120, 130):  # A wrote its trace again at 2 s: its rechecks start over
            at_once(now + later * S, a, b)
        assert len(a.writer.sync.rechecks) == len(b.writer.sync.rechecks) == 0  # done after the last
        assert a.writer.sync.stats.twin_traces >= CALLS
        # B finds A's spans only when they are roots too: roots look up roots.
        assert (b.writer.sync.stats.twin_traces >= CALLS) is not app_span
    assert_billed_once(tmp_path, engine, now, app_span)


@SHAPES
@pytest.mark.parametrize("stop", ["clean", "killed"])
def test_a_replica_restarted_before_its_rechecks_does_them_after(
        tmp_path: Path, http: HttpClient, engine: ChdbClient, app_span: bool, stop: str) -> None:
    """A rolling restart, or a replica killed: the call's two spans are written in one moment, and A stops and
    starts again on its working store before its first recheck. What its clean stop kept (TraceSync.save), or
    else the writes it logged (TraceSync.log_write), comes back at the start: its rechecks, and that it wrote
    its traces last. Under an app span A alone can find the pair (without its rechecks the call stays billed
    twice); of two roots A, the last writer of the span to unbill, moves it at 2 s (without its versions only
    B would, at 120 s)."""
    now = T0 + 60 * S
    apps, sdks = traffic(T0, app_span)
    with replica(tmp_path / "b.db", now, http) as b:
        with replica(tmp_path / "a.db", now, http) as a:
            a.write(apps, ship=False)
            b.write(sdks, ship=False)
            assert a.shipper.ship() and b.shipper.ship()
            if stop == "clean":
                assert a.writer.sync.save(a.db) == CALLS
        with replica(tmp_path / "a.db", now + S, http) as a:
            assert a.writer.sync.restore(a.db) == CALLS
            assert at_once(now + 2 * S, a, b) == [CALLS, CALLS]
            assert calls_counted(engine)[0] == CALLS
            for later in (60, 120, 130):
                at_once(now + later * S, a, b)
            assert len(a.writer.sync.rechecks) == 0
            # Taken back once: the next start finds nothing left of this one unless it stops cleanly again;
            # the log keeps the last RECENT_WRITES_S of writes only.
            assert a.db.execute("SELECT count(*) FROM clickhouse_rechecks").fetchone() == (0,)
            assert a.db.execute("SELECT count(*) FROM clickhouse_recent_writes").fetchone()[0] > 0
            at_once(now + 300 * S, a, b)
            assert a.db.execute("SELECT count(*) FROM clickhouse_recent_writes").fetchone() == (0,)
    assert_billed_once(tmp_path, engine, now, app_span)


def test_a_store_that_refuses_the_kept_rechecks_costs_them_not_the_stop(
        tmp_path: Path, http: HttpClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk at the stop (or a locked store at the start): the writer says so in its log and goes on."""
    with replica(tmp_path / "a.db", T0, http) as a:
        a.write(traffic(T0)[0])

        def full(db: sqlite3.Connection) -> int:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(a.writer.sync, "save", full)
        monkeypatch.setattr(a.writer.sync, "restore", full)
        carry_rechecks(a.db, a.writer, str(tmp_path / "a.db"), stopping=True)
        carry_rechecks(a.db, a.writer, str(tmp_path / "a.db"), stopping=False)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 2 and all("disk is full" in line for line in said), said
    assert "not kept for the next start" in said[0] and "not taken back from the last run" in said[1]


def test_rechecks_kept_at_a_stop_come_back_in_their_order() -> None:
    """Rechecks.waiting and restore: each call once, at the step and time it was due, in the queues' order."""
    before = Rechecks()
    before.written([1, 2], 100 * S)
    before.written([3], 101 * S)
    before.due(102 * S, 10)  # 1 and 2 move on to their 60 s recheck
    before.written([2], 103 * S)  # written again: its older entry is stale
    before.again([(1, 100 * S)], 102 * S)  # a recheck that failed: back at the first step, at 103 s
    kept = before.waiting()
    assert sorted(kept) == [(1, 100 * S, 0, 103 * S), (2, 103 * S, 0, 105 * S), (3, 101 * S, 0, 103 * S)]
    after = Rechecks()
    after.restore(reversed(kept))
    assert len(after) == 3
    assert sorted(after.due(104 * S, 10)) == [(1, 100 * S), (3, 101 * S)]
    assert after.due(105 * S, 10) == [(2, 103 * S)]


def a_then_b(a: Replica, b: Replica, now: int, delay_s: int, app_span: bool) -> None:
    """A writes OpenLLMetry's spans at `now` and rechecks them at 2 and 60 s; B writes the SDK's `delay_s`
    later, and rechecks them 2 s after that."""
    apps, sdks = traffic(T0, app_span)
    a.write(apps)
    a.at(now + 2 * S)
    a.at(now + 60 * S)
    b.write(sdks)
    b.at(now + (delay_s + 2) * S)


@SHAPES
def test_a_twin_arriving_100_s_later_is_moved_once(tmp_path: Path, http: HttpClient, engine: ChdbClient,
                                                   app_span: bool) -> None:
    """B's SDK span 100 s after A's span: under an app span A moves it, at its recheck 120 s after its write
    (B, its span stored late, finds the pair at its last recheck, moved already); two roots, B moves it at its
    first recheck (A's window for its own span has passed)."""
    now = T0 + 60 * S
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now + 100 * S, http) as b:
        a_then_b(a, b, now, 100, app_span)
        assert calls_counted(engine)[0] == (2 * CALLS if app_span else CALLS)
        assert b.writer.sync.stats.traces_pulled == (0 if app_span else CALLS)
        a.at(now + 120 * S)
        assert calls_counted(engine)[0] == CALLS
        for later in (60, 120):
            b.at(now + (100 + later) * S)
    assert_billed_once(tmp_path, engine, now, app_span)


@SHAPES
def test_a_root_twin_arriving_after_the_others_last_recheck_is_moved_by_its_replica(
        tmp_path: Path, http: HttpClient, engine: ChdbClient, app_span: bool) -> None:
    """B's SDK span 200 s after A's span (a backlog): A's rechecks, the last 120 s after its write, are over.
    B's span is a root stored long after it ended, so at its last recheck B looks it up among every call, and
    moves the billing itself, as the last writer of the root's trace once A's rechecks are over (150 s after
    A's trace's version). Two roots: the keeper's replica (B) moves it by the two-root rule, as before."""
    now = T0 + 60 * S
    apps, sdks = traffic(T0, app_span)
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now + 200 * S, http) as b:
        a.write(apps)
        for later in (2, 60, 120):
            assert a.at(now + later * S) == CALLS  # nothing to find yet
        assert len(a.writer.sync.rechecks) == 0  # done
        b.write(sdks)
        assert calls_counted(engine)[0] == 2 * CALLS
        for later in (2, 60):
            b.at(now + (200 + later) * S)
        # Two roots: moved at B's first recheck by the two-root rule; under an app span B looks its late roots up
        # among every call at their last recheck, and moves them then.
        assert calls_counted(engine)[0] == (2 * CALLS if app_span else CALLS)
        b.at(now + 320 * S)
        assert calls_counted(engine)[0] == CALLS
        assert b.writer.sync.stats.traces_pulled == CALLS  # A's traces, to move their billing
    assert_billed_once(tmp_path, engine, now, app_span)


def test_a_passs_late_roots_are_looked_up_a_stretch_of_hours_at_a_time(tmp_path: Path, http: HttpClient,
                                                                        engine: ChdbClient) -> None:
    """B's SDK spans reach it long after A's rechecks (a backlog), for calls three hours apart: at their last
    recheck, one pass looks up the late roots of one stretch of hours (one query), and puts the others back due
    at once, for the next pass: a backfill spread over a day does not hold the writer for a query per hour in
    one pass. Every call ends billed once."""
    now = T0 + 60 * S
    apps, sdks = [], []
    for n in (1, 2, 3, 11, 12, 13):  # three calls three hours before the other three
        start = T0 - (3 * 3600 * S if n < 10 else 0) + n * 3 * S
        apps.append((make_span(0xA00 + n, 1, None, "POST /ask", {"app.llm.feature": "ask"}, start_ns=start,
                               end_ns=start + 2 * S, kind=2), APP))
        apps.append(_chat(0xA00 + n, 2, 1, OPENLLMETRY, n, start + 10 * MS, start + 900 * MS))
        sdks.append(_chat(0xB00 + n, 7, None, NATIVE, n, start + 12 * MS, start + 880 * MS))
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now + 200 * S, http) as b:
        a.write(apps)
        for later in (2, 60, 120):
            assert a.at(now + later * S) == 2 * CALLS  # nothing to find yet
        b.write(sdks)
        for later in (2, 60):
            b.at(now + (200 + later) * S)
        assert calls_counted(engine)[0] == 4 * CALLS
        assert b.at(now + 320 * S) == CALLS  # the early stretch's: the recent one's are due again at once
        assert calls_counted(engine)[0] == 3 * CALLS
        assert b.writer.sync.rechecks.due_by(now + 320 * S)
        assert b.at(now + 320 * S) == CALLS
        assert calls_counted(engine)[0] == 2 * CALLS


@pytest.mark.parametrize("killed", [False, True], ids=["running", "killed-after-its-last-recheck"])
def test_a_late_root_stored_just_after_a_later_write_of_the_other_trace_is_moved_when_its_rechecks_are_over(
        tmp_path: Path, http: HttpClient, engine: ChdbClient, killed: bool) -> None:
    """A's trace is written again at 190 s (a span without a call: its call's rechecks do not start over), and
    B's late SDK root reaches B at 200 s. At B's last recheck (320 s) A's trace was written 130 s before, so
    A's rechecks of that write could still run and B leaves the move; A's rechecks of the call ended at 120 s,
    so nobody would move it. B looks the call up once more when they are over (340 s), and moves it.

    Killed: B dies at 335 s, after its writer pruned the writes it logs for a restart, and restarts on its
    working store. The log must still hold B's write of 200 s (up to 150 s old when its last lookup is due):
    replayed, its rechecks run again and the last one finds the move still waiting, until 340 s."""
    now = T0 + 60 * S
    apps, sdks = traffic(T0)
    more = [(make_span(0xA00 + n, 9, 1, "db query", {"db.system": "postgresql"}, start_ns=T0 + n * 3 * S + S,
                       end_ns=T0 + n * 3 * S + S + 50 * MS), APP) for n in range(1, CALLS + 1)]
    with replica(tmp_path / "a.db", now, http) as a:
        with replica(tmp_path / "b.db", now + 200 * S, http) as b:
            a.write(apps)
            for later in (2, 60, 120):
                assert a.at(now + later * S) == CALLS  # nothing to find yet
            a.now = now + 190 * S
            a.write(more)
            assert len(a.writer.sync.rechecks) == 0  # no call of A's written again
            b.write(sdks)
            for later in (2, 60, 120):
                b.at(now + (200 + later) * S)
            assert calls_counted(engine)[0] == 2 * CALLS  # B's last recheck: A's could still run
            assert b.writer.sync.rechecks.due_by(now + 340 * S) and not b.writer.sync.rechecks.due_by(now + 339 * S)
            if not killed:
                assert b.at(now + 340 * S) == CALLS
            else:
                assert b.at(now + 335 * S) == 0  # nothing due; the log pruned as it is every 10 s
        if killed:  # no clean stop's save: the restart replays the logged writes
            with replica(tmp_path / "b.db", now + 336 * S, http) as b:
                assert b.writer.sync.restore(b.db) == CALLS
                # Its rechecks are past due: the late root's lookup runs at once, and finds the move still waiting.
                assert b.at(now + 336 * S) == CALLS
                assert calls_counted(engine)[0] == 2 * CALLS
                assert b.at(now + 340 * S) == CALLS
        assert calls_counted(engine)[0] == CALLS
    db = single_store(tmp_path / "one.db", now, apps + more + sdks)
    try:
        assert_clickhouse_equals_sqlite(db, engine, same_clock=False)
    finally:
        db.close()


def test_a_late_root_twin_is_left_to_the_other_replica_while_its_rechecks_run(
        tmp_path: Path, http: HttpClient, engine: ChdbClient) -> None:
    """Both spans written in one moment, long after the call ended; B's outbox reaches ClickHouse only just
    before A's last recheck (it was down for B), and B's last recheck runs in that same moment: both find the
    pair. A moves it (it wrote the trace under the app's root); B, for which A's rechecks could still be
    running, leaves it: the call is not unbilled twice."""
    now = T0 + 200 * S  # the calls ended more than LATE_S before they are stored
    apps, sdks = traffic(T0, True)
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now, http) as b:
        a.write(apps)
        b.write(sdks, ship=False)
        for later in (2, 60):
            a.at(now + later * S)
            b.now = now + later * S
            b.writer.recheck_twins()  # nothing to find (roots among roots), nothing written
        assert b.shipper.ship()
        assert at_once(now + 120 * S, a, b) == [CALLS, CALLS]
        assert a.writer.sync.stats.twin_traces == b.writer.sync.stats.twin_traces == CALLS  # both found it
        assert calls_counted(engine)[0] == CALLS
    assert_billed_once(tmp_path, engine, now, True)


def test_two_root_twins_arriving_between_the_two_rules_wait_for_the_keepers_recheck(
        tmp_path: Path, http: HttpClient, engine: ChdbClient) -> None:
    """Two roots, B's twin 70 s after A's span: past A's window, within the clocks' margin, so neither moves it
    then (both could otherwise do it at once, and unbill the call twice); B's recheck a minute later does."""
    now = T0 + 60 * S
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now + 70 * S, http) as b:
        a_then_b(a, b, now, 70, app_span=False)
        a.at(now + 120 * S)
        assert calls_counted(engine)[0] == 2 * CALLS  # nobody moved it yet
        b.at(now + 130 * S)
        assert calls_counted(engine)[0] == CALLS
        b.at(now + 190 * S)
    assert_billed_once(tmp_path, engine, now, app_span=False)


@SHAPES
def test_the_span_to_unbill_arriving_late_is_moved_at_its_first_recheck(
        tmp_path: Path, http: HttpClient, engine: ChdbClient, app_span: bool) -> None:
    """B's SDK spans first; A's OpenLLMetry spans 100 s later: A finds the keeper in ClickHouse at its first
    recheck and unbills its own span."""
    now = T0 + 60 * S
    apps, sdks = traffic(T0, app_span)
    with replica(tmp_path / "a.db", now + 100 * S, http) as a, replica(tmp_path / "b.db", now, http) as b:
        b.write(sdks)
        for later in (2, 60):
            b.at(now + later * S)
        a.write(apps)
        a.at(now + 102 * S)
        assert calls_counted(engine)[0] == CALLS
        b.at(now + 120 * S)
        for later in (60, 120):
            a.at(now + (100 + later) * S)
    assert_billed_once(tmp_path, engine, now, app_span)


def test_a_trace_another_replica_writes_meanwhile_is_rechecked_there(tmp_path: Path, http: HttpClient,
                                                                      engine: ChdbClient) -> None:
    """Under an app span, only the replica that last wrote OpenLLMetry's trace may move the billing. A late
    span of that trace reaches B a second after A wrote it (the Collector's ring moved): B now writes the
    trace, so B rechecks its calls and moves the billing; A, no longer its writer, leaves it."""
    now = T0 + 60 * S
    apps, sdks = traffic(T0)
    late = [(make_span(0xA00 + n, 9, 1, "tool search", {"gen_ai.operation.name": "execute_tool",
                                                        "gen_ai.tool.name": "search"},
                       start_ns=T0 + n * 3 * S + S, end_ns=T0 + n * 3 * S + S + 50 * MS), APP)
            for n in range(1, CALLS + 1)]
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now, http) as b:
        a.write(apps)
        b.write(sdks)
        b.now = now + S
        b.write(late)
        assert b.writer.sync.stats.traces_pulled == CALLS
        assert at_once(now + 3 * S, a, b) == [CALLS, 2 * CALLS]  # B: its SDK calls and A's, read from ClickHouse
        assert calls_counted(engine)[0] == CALLS
        for later in (60, 120, 130):
            at_once(now + later * S, a, b)
    db = single_store(tmp_path / "one.db", now, apps + sdks + late)
    try:
        assert calls_counted(engine) == (CALLS, CALLS * SONNET_CALL_NUSD)
        assert_clickhouse_equals_sqlite(db, engine, same_clock=False)
    finally:
        db.close()


def test_one_replica_joins_twins_however_late_the_second_arrives(tmp_path: Path, http: HttpClient,
                                                                 engine: ChdbClient) -> None:
    """One `serve --store`: the SDK's root span an hour after OpenLLMetry's span under the app's root, long
    after every recheck. Its working store holds the first, so it is joined when the second is written, as
    on a SQLite store."""
    now = T0 + 60 * S
    apps, sdks = traffic(T0)
    with replica(tmp_path / "a.db", now, http) as a:
        a.write(apps)
        for later in (2, 60, 120):
            a.at(now + later * S)
        a.now = now + 3600 * S
        a.write(sdks)
    assert_billed_once(tmp_path, engine, now, app_span=True)


def test_a_recheck_while_clickhouse_is_unreachable_waits(tmp_path: Path, http: HttpClient,
                                                        engine: ChdbClient) -> None:
    """ClickHouse down at the recheck: nothing is decided from the working store alone (another replica's
    copy there may be stale), and the calls are looked up when it answers again."""
    from store.clickhouse.client import ClickHouseError

    now = T0 + 60 * S
    apps, sdks = traffic(T0)
    up = {"value": True}

    def client() -> Any:
        if not up["value"]:
            raise ClickHouseError("Connection refused")
        return http

    with replica(tmp_path / "b.db", now, http) as b, writing(tmp_path / "a.db", now) as (normalizer, writer, db):
        writer.outbox = OutboxRecorder()
        shipper = Shipper(db, client, retry_every_s=0)
        writer.sync = TraceSync(shipper.reader)
        a = Replica(normalizer, writer, db, shipper, now)
        a.write(apps, ship=False)
        b.write(sdks, ship=False)
        assert a.shipper.ship() and b.shipper.ship()
        up["value"] = False
        shipper.close()  # the next use connects anew, and is refused
        a.now = now + 2 * S
        assert a.writer.recheck_twins() == 0
        up["value"] = True
        assert a.at(now + 3 * S) == CALLS  # due again
        assert calls_counted(engine)[0] == CALLS
        for later in (60, 120):
            a.at(now + later * S)
            b.at(now + later * S)
    assert_billed_once(tmp_path, engine, now, app_span=True)


def test_rechecks_follow_the_newest_write_of_a_call() -> None:
    rechecks = Rechecks()
    rechecks.written([1, 2], 0)
    assert rechecks.due(S, 10) == []
    rechecks.written([1], 5 * S)  # written again: the first write's entries are stale
    assert rechecks.due(2 * S, 10) == [(2, 0)]
    assert rechecks.due(7 * S, 10) == [(1, 5 * S)]
    assert rechecks.due(10**6 * S, 1) == [(2, 0)]  # a limit, oldest first
    assert len(rechecks) == 2
    last = rechecks.due(10**6 * S, 10) + rechecks.due(10**6 * S + 1, 10)  # a step at a time
    assert len(rechecks) == 0 and (2, 0) in last
    rechecks.again([(2, 0)], 10**6 * S)  # its last recheck could not run: due again, and after that done
    assert len(rechecks) == 1
    assert rechecks.due(10**6 * S + S, 10) == [(2, 0)] and len(rechecks) == 0


def test_a_response_id_many_calls_share_is_not_looked_up(engine: ChdbClient) -> None:
    """A mock server's fixed id, on every call: its rows would be matched against every call that carries it.
    Left out, while a real id among them is still found (nesting windows, another layer, another trace)."""
    from store.clickhouse.schema import ROOT_CALLS_TABLE
    from store.clickhouse.twin_calls import ROWS_PER_ID, SHARED_ID_CALLS, stored_twins

    start = time.time_ns() - 60 * S
    columns = ["response_id", "call_layer", "trace_id", "span_id", "start_ns", "end_ns", "version", "is_deleted"]
    stored = [("msg_fixed", 0, n.to_bytes(16, "big"), b"s" * 8, start, start + S, 1, 0) for n in range(3 * ROWS_PER_ID)]
    stored += [("msg_real", 0, b"R" * 16, b"s" * 8, start, start + S, 1, 0),
               ("msg_other_layer", 1, b"L" * 16, b"s" * 8, start, start + S, 1, 0),
               ("msg_apart", 0, b"A" * 16, b"s" * 8, start + 10 * S, start + 11 * S, 1, 0)]
    engine.insert(ROOT_CALLS_TABLE, stored, columns)
    fixed = [Call(n.to_bytes(16, "big") + b"x", b"c" * 8, "msg_fixed", 1, start, start + S)
             for n in range(SHARED_ID_CALLS + 1)]
    real = Call(b"C" * 16, b"c" * 8, "msg_real", 1, start + MS, start + S - MS)
    others = [Call(b"C" * 16, b"d" * 8, "msg_other_layer", 1, start, start + S),
              Call(b"C" * 16, b"e" * 8, "msg_apart", 1, start, start + S)]
    assert stored_twins(engine, [*fixed, real, *others]) == [(real, b"R" * 16)]
    assert len(stored_twins(engine, fixed[:SHARED_ID_CALLS])) == SHARED_ID_CALLS * ROWS_PER_ID  # a capped read


def test_long_response_ids_are_looked_up_in_parameters_the_server_takes(http: HttpClient) -> None:
    """Response ids are kept up to 256 characters: 500 of them, non-ASCII, pass the server's 128 KiB cap on a
    form field. Both lookups split their ids by size as well as by count, and find every twin."""
    from store.clickhouse.schema import ROOT_CALLS_TABLE
    from store.clickhouse.twin_calls import stored_twins, stored_twins_under_roots

    start = time.time_ns() - 60 * S
    ids = [f"{n:04}" + "é" * 252 for n in range(1200)]
    http.insert(ROOT_CALLS_TABLE, [(rid, 0, b"R" * 16, b"s" * 8, start, start + S, 1, 0) for rid in ids],
                ["response_id", "call_layer", "trace_id", "span_id", "start_ns", "end_ns", "version", "is_deleted"])
    http.insert("spans", [(b"U" * 16, n.to_bytes(8, "big"), b"p" * 8, "chat", "llm", start, start + S, rid, 0, 1)
                          for n, rid in enumerate(ids)],
                ["trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "response_id",
                 "call_layer", "version"])
    calls = [Call(b"C" * 16, n.to_bytes(8, "big"), rid, 1, start, start + S, True) for n, rid in enumerate(ids)]
    assert {trace for _call, trace in stored_twins(http, calls)} == {b"R" * 16}
    assert len(stored_twins(http, calls)) == len(calls)
    assert len(stored_twins_under_roots(http, calls)) == len(calls)


def test_response_id_batches_fit_a_form_field_and_keep_every_id() -> None:
    """The splitter forget --store shares with the lookups (store.clickhouse.client.text_batches): every id once,
    in order, each batch at most IDS_PER_QUERY ids and 64 KiB escaped at worst."""
    from store.clickhouse.client import IDS_PER_QUERY, TEXT_BATCH_BYTES, text_batches

    ids = [f"{n:04}" + "é" * 252 for n in range(1200)] + [f"chatcmpl-{n}" for n in range(1500)]
    parts = list(text_batches(ids))
    assert [rid for part in parts for rid in part] == ids
    assert all(len(part) <= IDS_PER_QUERY and sum(2 * len(r.encode()) + 4 for r in part) <= TEXT_BATCH_BYTES
               for part in parts)
    assert len(parts) > 1200 * 1024 // TEXT_BATCH_BYTES  # the long ones split by size, the short ones by count


class Refusing:
    """The HTTP client, except that ClickHouse refuses (as it does a lookup past its memory limit) every query
    whose parameters hold one of `poison`, and the first `refuse_first` lookups whatever they hold."""

    def __init__(self, client: HttpClient, poison: set[str], refuse_first: int = 0) -> None:
        self.client, self.poison, self.refuse_first = client, poison, refuse_first
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def query(self, sql: str, parameters: Any = None, **kwargs: Any) -> Any:
        from store.clickhouse.client import ClickHouseError

        held = {v for value in (parameters or {}).values() if isinstance(value, list) for v in value}
        if "`response_id` IN" in sql and (held & self.poison or self.refused < self.refuse_first):
            self.refused += 1
            raise ClickHouseError("Code: 241. DB::Exception: Memory limit (for query) exceeded", 241)
        return self.client.query(sql, parameters, **kwargs)


@pytest.mark.parametrize(("poison", "refuse_first", "given_up"), [({"msg_17"}, 0, 1), (set(), 1, 0)],
                         ids=["one-call-refused-always", "an-overload-that-passes"])
def test_a_lookup_clickhouse_refuses_holds_up_no_other_call(tmp_path: Path, http: HttpClient, engine: ChdbClient,
                                                            poison: set[str], refuse_first: int,
                                                            given_up: int) -> None:
    """ClickHouse answers but refuses a recheck's lookup: retried in halves, a second apart, so that the calls
    it can look up are moved; a call refused alone twice is given up (and billed as written), not retried every
    second for ever ahead of every other call."""
    calls, now = 40, T0 + 200 * S
    apps, sdks = [], []
    for n in range(1, calls + 1):
        start = T0 + n * S
        apps.append((make_span(0xA00 + n, 1, None, "POST /ask", {"app.llm.feature": "ask"}, start_ns=start,
                               end_ns=start + 2 * S, kind=2), APP))
        apps.append(_chat(0xA00 + n, 2, 1, OPENLLMETRY, n, start + 10 * MS, start + 900 * MS))
        sdks.append(_chat(0xB00 + n, 7, None, NATIVE, n, start + 12 * MS, start + 880 * MS))
    refusing = Refusing(http, poison, refuse_first)
    with replica(tmp_path / "a.db", now, refusing) as a, replica(tmp_path / "b.db", now, http) as b:
        b.write(sdks)
        a.write(apps)
        tick = 2
        while a.writer.sync.rechecks.due_by(now + tick * S) and tick < 40:
            a.at(now + tick * S)
            tick += 1
        sync = a.writer.sync
        assert sync.stats.lookups_refused == refusing.refused > 0
        assert sync.rechecks.given_up == given_up
        assert tick < 30  # halving: a few passes a refused call, not a retry every second for ever
        assert calls_counted(engine)[0] == calls + given_up  # every call but the refused one counted once
        billed = a.db.execute("SELECT count(*) FROM spans WHERE billed AND name = 'anthropic.chat'").fetchone()[0]
        assert billed == given_up


def test_the_writer_loop_runs_passes_back_to_back_until_a_batch_waits(tmp_path: Path, http: HttpClient,
                                                                     engine: ChdbClient, monkeypatch) -> None:
    """More calls due than a pass takes (a replica writing more calls a second than a pass holds): the writer
    loop runs passes one after another, not one a second, and yields to a batch that is waiting."""
    from multiprocessing import Pipe

    from store import writer_process
    from store.writer_process import WriterLoop

    monkeypatch.setattr(writer_process, "RECHECK_SLICE_S", 60.0)  # this machine's speed out of it
    now = T0 + 60 * S
    apps, sdks = traffic(T0)
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now, http) as b:
        b.write(sdks)
        a.write(apps)
        inbox, sender = Pipe(duplex=False)
        _receiver, outbox = Pipe(duplex=False)
        loop = WriterLoop(a.db, a.writer, inbox, outbox, {"db_path": str(tmp_path / "a.db"), "clickhouse": True},
                          None, a.shipper)
        try:
            sync = a.writer.sync
            a.now = now + 2 * S
            sync.pass_size = 1  # a pass a call: CALLS passes due
            sync.rechecks.due = _one_at_a_time(sync.rechecks.due)
            sender.send_bytes(b"S")  # a frame waits: one pass, then the loop looks at it
            assert loop.recheck_twins() is True
            assert sync.stats.rechecks == 1
            inbox.recv_bytes()
            assert loop.recheck_twins() is False  # nothing waits: every call due looked up in this slice
            assert sync.stats.rechecks == CALLS
        finally:
            loop.reserve.give_up()
    assert_billed_once(tmp_path, engine, now, app_span=True)


def test_a_recheck_pass_that_finds_no_twin_ships_nothing(tmp_path: Path, http: HttpClient, monkeypatch) -> None:
    """Calls with no twin anywhere: their passes write nothing, so the writer loop does not ship after them (on
    an empty outbox a ship is still a read); a pass that moved a billing ships at once."""
    from multiprocessing import Pipe

    from store import writer_process
    from store.writer_process import WriterLoop

    monkeypatch.setattr(writer_process, "RECHECK_SLICE_S", 60.0)
    now = T0 + 60 * S
    apps, sdks = traffic(T0)
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now, http) as b:
        a.write(apps)
        inbox, _sender = Pipe(duplex=False)
        _receiver, outbox = Pipe(duplex=False)
        loop = WriterLoop(a.db, a.writer, inbox, outbox, {"db_path": str(tmp_path / "a.db"), "clickhouse": True},
                          None, a.shipper)
        ships: list[int] = []
        ship = a.shipper.ship
        monkeypatch.setattr(a.shipper, "ship", lambda: ships.append(1) or ship())
        try:
            sync = a.writer.sync
            sync.pass_size = 1
            sync.rechecks.due = _one_at_a_time(sync.rechecks.due)
            a.now = now + 2 * S
            assert loop.recheck_twins() is False
            assert sync.stats.rechecks == CALLS and sync.stats.recheck_writes == 0 and not ships
            b.write(sdks)  # the twins arrive: the next round (60 s) finds and moves them, a pass each
            a.now = now + 60 * S
            assert loop.recheck_twins() is False
            assert sync.stats.recheck_writes == CALLS and len(ships) == CALLS
        finally:
            loop.reserve.give_up()


def _one_at_a_time(due: Any) -> Any:
    """Rechecks.due held to one call a pass (a successful pass doubles the pass size back)."""
    return lambda now, limit: due(now, 1)


def test_rechecks_put_back_keep_their_order_and_given_up_ones_are_done() -> None:
    rechecks = Rechecks()
    rechecks.written([1, 2, 3, 4], 0)
    rechecks.written([5], S)
    taken = rechecks.due(2 * S, 3)
    assert taken == [(1, 0), (2, 0), (3, 0)]
    rechecks.again(taken, 2 * S)  # first again, in their order, ahead of those not taken
    assert rechecks.due(3 * S, 10) == [(1, 0), (2, 0), (3, 0), (4, 0), (5, S)]
    rechecks.give_up([(2, 0), (5, 0)])  # 5's entry is stale (written again at 1 s): not given up
    assert rechecks.given_up == 1 and len(rechecks) == 4
    assert rechecks.due(10**6 * S, 10) == [(1, 0), (3, 0), (4, 0), (5, S)]  # once each at their next step


def test_a_call_put_back_is_looked_up_once_at_each_step() -> None:
    """A recheck that could not run is retried at the step it was taken at: the entry its first taking queued at
    the next step goes stale, so no call is looked up twice at a step (twice in one pass, before), and a call
    put back at its last step is still done after one recheck that ran."""
    rechecks = Rechecks()
    rechecks.written([1, 2], 0)
    assert rechecks.due(2 * S, 10) == [(1, 0), (2, 0)]
    taken = rechecks.due(60 * S, 10)
    assert taken == [(1, 0), (2, 0)]
    rechecks.again(taken[:1], 60 * S)  # 1's second recheck could not run
    assert [(row, step) for row, _version, step, _due in rechecks.waiting()] == [(1, 1), (2, 2)]
    assert rechecks.due(61 * S, 10) == [(1, 0)]
    assert sorted(rechecks.due(10**6 * S, 10)) == [(1, 0), (2, 0)]  # their last step, once each
    assert len(rechecks) == 0 and not rechecks.due_by(10**7 * S)
    rechecks.written([3], 10 * S)
    for at in (12, 70):
        rechecks.due(at * S, 10)
    last = rechecks.due(130 * S, 10)
    rechecks.give_up(last)  # refused alone at its last step: given up, counted once
    rechecks.give_up(last)
    assert last == [(3, 10 * S)] and rechecks.given_up == 1 and len(rechecks) == 0


def test_a_call_looked_up_later_is_kept_at_a_stop_and_follows_a_newer_write() -> None:
    """Rechecks.later: a call looked up once more after its last step, when it is due, in order of due time
    (not of asking); kept at a clean stop with the others; a newer write of the call supersedes it."""
    rechecks = Rechecks()
    rechecks.written([1, 2], 0)
    for at in (2, 60, 120):
        rechecks.due(at * S, 10)
    assert len(rechecks) == 0
    rechecks.later(1, 0, 500 * S)
    rechecks.later(2, 0, 400 * S)
    assert not rechecks.due_by(399 * S) and rechecks.due_by(400 * S)
    restarted = Rechecks()
    restarted.restore(rechecks.waiting())
    assert restarted.due(10**6 * S, 10) == [(2, 0), (1, 0)] and len(restarted) == 0
    rechecks.written([1], 300 * S)  # written again: that write's rechecks look it up
    assert rechecks.due(10**6 * S, 10) == [(1, 300 * S), (2, 0)]


def test_serve_says_when_calls_are_not_rechecked() -> None:
    """The once-a-minute line names the calls whose twin may stay billed twice (queue full, lookup refused)."""
    from types import SimpleNamespace

    from llmobs_tui.cli.serve import StatsPrinter

    writer: dict[str, Any] = {"spans": 10, "clickhouse_rechecks_waiting": 1200, "clickhouse_rechecks_dropped": 0,
                              "clickhouse_rechecks_given_up": 0}
    stats = SimpleNamespace(writer=writer, invalid_requests=0, inflight_requests=0, inflight_bytes=0, rejected=0,
                            overloaded=0)
    backend = SimpleNamespace(pipeline=SimpleNamespace(stats=stats), auth=SimpleNamespace(enabled=False), tls=None,
                              http=None, forward=None)
    assert "twin rechecks" not in StatsPrinter(backend).line()  # type: ignore[arg-type]
    writer.update(clickhouse_rechecks_dropped=2500, clickhouse_rechecks_given_up=1)
    assert ("twin rechecks: 1,200 waiting, 2,500 skipped (queue full), 1 given up (lookup refused)"
            in StatsPrinter(backend).line())  # type: ignore[arg-type]
    assert "another replica" not in StatsPrinter(backend).line()  # type: ignore[arg-type]
    writer.update(clickhouse_traces_rewritten=1500)  # store/clickhouse/trace_sync.py's trace checks
    assert ("1,500 traces also written by another replica at once, decided again whole"
            in StatsPrinter(backend).line())  # type: ignore[arg-type]


def test_a_lookup_cut_off_with_clickhouse_is_not_taken_for_a_refusal(tmp_path: Path, http: HttpClient,
                                                                     engine: ChdbClient) -> None:
    """The connection drops during a recheck's lookup, and ClickHouse does not answer a `SELECT 1` either: the
    calls wait for it as they do while it is unreachable (nothing halved, nothing given up), and are moved once
    it answers."""
    from store.clickhouse.client import ClickHouseError

    now = T0 + 60 * S
    apps, sdks = traffic(T0)
    down = {"value": False}

    class Dropping(Refusing):
        def query(self, sql: str, parameters: Any = None, **kwargs: Any) -> Any:
            if down["value"] and ("`response_id` IN" in sql or sql == "SELECT 1"):
                raise ClickHouseError("HTTPConnectionPool: Connection reset by peer")
            return self.client.query(sql, parameters, **kwargs)

    with replica(tmp_path / "a.db", now, Dropping(http, set())) as a, replica(tmp_path / "b.db", now, http) as b:
        b.write(sdks)
        a.write(apps)
        down["value"] = True
        assert a.at(now + 2 * S) == 0
        assert a.writer.sync.stats.lookups_refused == 0 and a.writer.sync.pass_size > 1
        down["value"] = False
        assert a.at(now + 3 * S) == CALLS
        assert a.writer.sync.rechecks.given_up == 0
        for later in (60, 120):
            a.at(now + later * S)
            b.at(now + later * S)
    assert_billed_once(tmp_path, engine, now, app_span=True)


def test_late_roots_hours_apart_are_looked_up_in_their_own_hours(http: HttpClient) -> None:
    """A pass's late roots ten hours apart (a backfill replayed by two workers at once): each stretch of them is
    one query over its own hours, not one reading the ten hours between (which the server would stop at
    LOOKUP_TIMEOUT_S on a busy store); every twin is found."""
    from store.clickhouse.twin_calls import LEAD_NS, STRETCH_NS, stored_twins_under_roots
    from store.writer import TWIN_SLACK_NS

    now = time.time_ns()
    starts = [now - 10 * 3600 * S + n * S for n in range(3)] + [now - 60 * S + n * S for n in range(3)]
    http.insert("spans", [(b"U" * 16, n.to_bytes(8, "big"), b"p" * 8, "chat", "llm", start, start + S, f"late-{n}",
                           0, 1) for n, start in enumerate(starts)],
                ["trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "response_id",
                 "call_layer", "version"])
    windows: list[tuple[int, int]] = []

    class Recording(Refusing):
        def query(self, sql: str, parameters: Any = None, **kwargs: Any) -> Any:
            windows.append((parameters["first"], parameters["last"]))
            return self.client.query(sql, parameters, **kwargs)

    calls = [Call(b"C" * 16, n.to_bytes(8, "big"), f"late-{n}", 1, start, start + S, True)
             for n, start in enumerate(starts)]
    assert len(stored_twins_under_roots(Recording(http, set()), calls[::-1])) == len(calls)
    assert len(windows) == 2
    assert all(last - first <= LEAD_NS + STRETCH_NS + S + TWIN_SLACK_NS for first, last in windows)
