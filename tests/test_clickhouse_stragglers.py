"""Stragglers between replicas (store/clickhouse/trace_sync.py): spans of one trace written by two replicas, one
after the other (the Collector's ring moved the trace, or a late root, twin or log record landed elsewhere),
leave ClickHouse holding what one store given all of them holds: the billing move, the root's feature and
tenant, the finish reason from a log record, and the rollups' deltas taken against what ClickHouse held.

Ground truth is a single SQLite store written by the real Normalizer and SpanWriter with the same requests.
The replicas are two real SpanWriters, each with its own working store, outbox and Shipper, writing one
ClickHouse database through the HTTP client, as two `serve --store` processes do.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from store.clickhouse.client import ChdbClient, ClickHouseError, HttpClient
from store.clickhouse.forget import forget as forget_in_clickhouse
from store.clickhouse.outbox import OutboxRecorder
from store.clickhouse.sink import Shipper
from store.clickhouse.trace_sync import TraceSync
from store.writer import ROLLUP_COUNTERS
from tests.otlp_factory import trace_id_bytes
from tests.store_writing import write_through, writing
from tests.test_clickhouse_sink import agent_traffic, assert_clickhouse_equals_sqlite, clickhouse_rollups

S = 10**9


@contextmanager
def replica(path: Path, now: int, client: Any, sync: bool = True) -> Iterator[Any]:
    """A writer as `serve --store` runs it: outbox, shipper after every batch, and (sync) the trace lookup."""
    with writing(path, now) as (normalizer, writer, db):
        writer.outbox = OutboxRecorder()
        shipper = Shipper(db, lambda: client)
        if sync:
            writer.sync = TraceSync(shipper.reader)

        def write(spans: list[Any], records: list[Any] = (), ship: bool = True) -> None:  # type: ignore[assignment]
            write_through(normalizer, writer, spans, list(records), now)
            assert not ship or shipper.ship()

        write.writer = writer  # type: ignore[attr-defined]
        write.db = db  # type: ignore[attr-defined]
        write.shipper = shipper  # type: ignore[attr-defined]
        yield write


def single_store(path: Path, now: int, rounds: list[tuple[list[Any], list[Any]]]) -> sqlite3.Connection:
    with writing(path, now) as (normalizer, writer, _db):
        for spans, records in rounds:
            write_through(normalizer, writer, spans, records, now)
    return sqlite3.connect(path)


def _split(now: int, traces: int = 6) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """agent_traffic's parts: (framework + tool spans, SDK chat spans, roots, log records)."""
    (first, later), records = agent_traffic(now - 300 * S, traces)
    return first, later[0::2], later[1::2], records


def test_a_trace_moved_between_replicas_is_stored_as_one_replica_would_store_it(
        tmp_path: Path, http: HttpClient, engine: ChdbClient) -> None:
    """Replica A gets each trace's first spans; B the SDK's call below the framework's (billing moves to it,
    a model B never saw billed) and the log records; then A the roots (A's copy is stale: B corrected its
    framework span since). Each straggler reads the other's rows before deciding."""
    now = time.time_ns()
    first, sdk, roots, records = _split(now)
    with ExitStack() as stack:
        a = stack.enter_context(replica(tmp_path / "a.db", now, http))
        b = stack.enter_context(replica(tmp_path / "b.db", now, http))
        a(first)
        b(sdk)
        a(roots)
        b([], records)
        pulled = a.writer.sync.stats.traces_pulled + b.writer.sync.stats.traces_pulled
    assert pulled == 3 * 6  # B twice (the SDK spans, then the logs after A's roots), A once (the roots)
    db = single_store(tmp_path / "one.db", now, [(first, []), (sdk, []), (roots, []), ([], records)])
    try:
        assert db.execute("SELECT count(*) FROM spans WHERE billed AND request_model = 'gpt-4o-mini' "
                          "AND feature = 'research' AND finish_reason = 'stop'").fetchone()[0] == 6
        assert_clickhouse_equals_sqlite(db, engine, same_clock=False)
    finally:
        db.close()


def test_without_the_lookup_the_same_traffic_is_billed_twice(tmp_path: Path, http: HttpClient,
                                                             engine: ChdbClient) -> None:
    """The control: replicas that decide from their working store alone bill the framework span (A) and the
    SDK span (B) of each call, so the comparison above is able to fail."""
    now = time.time_ns()
    first, sdk, roots, records = _split(now)
    with replica(tmp_path / "a.db", now, http, sync=False) as a, \
            replica(tmp_path / "b.db", now, http, sync=False) as b:
        a(first)
        b(sdk)
        a(roots)
        b([], records)
    db = single_store(tmp_path / "one.db", now, [(first, []), (sdk, []), (roots, []), ([], records)])
    try:
        with pytest.raises(AssertionError):
            assert_clickhouse_equals_sqlite(db, engine, same_clock=False)
        calls = ROLLUP_COUNTERS.index("calls")
        _rollups, totals = clickhouse_rollups(engine)
        assert sum(v[0][calls] for k, v in totals.items() if k[0] == 60) == 12  # 6 calls, each billed twice
    finally:
        db.close()


def test_a_replica_whose_clock_is_behind_still_replaces_what_it_read(tmp_path: Path, http: HttpClient,
                                                                    engine: ChdbClient) -> None:
    """B's clock is an hour behind A's: what B ships after reading A's rows must still replace them (a
    version above the one it read), or FINAL would keep A's uncorrected rows."""
    now = time.time_ns()
    first, sdk, roots, records = _split(now, traces=3)
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now - 3600 * S, http) as b:
        a(first + roots)
        b(sdk, records)
    db = single_store(tmp_path / "one.db", now, [(first + roots, []), (sdk, records)])
    try:
        assert_clickhouse_equals_sqlite(db, engine, same_clock=False)
        versions = engine.query("SELECT max(updated_ns) FROM trace_summaries")[0][0]
        assert versions > now  # B wrote above A's version, not at its own clock
    finally:
        db.close()


def _written_at_once(a: Any, b: Any, clocks: dict[str, int], a_spans: list[Any], b_spans: list[Any]) -> None:
    """A and B, each on its own clock, write their part of the same traces before either ships: B's lookup
    finds nothing of them, A's rows are not in ClickHouse yet. Then both ship."""
    a.writer.clock = lambda: clocks["a"]
    b.writer.clock = lambda: clocks["b"]
    a(a_spans, ship=False)
    b(b_spans, ship=False)
    assert a.shipper.ship() and b.shipper.ship()


def _passes_at(seconds: int, now: int, clocks: dict[str, int], *replicas: tuple[str, Any]) -> None:
    """The writer loop's pass (SpanWriter.recheck_twins) of each replica at `seconds` after `now` on its clock,
    all decided before either ships (their timers fired together)."""
    for name, write in replicas:
        clocks[name] = now + seconds * S + (10**6 if name == "b" else 0)
        write.writer.recheck_twins()
    for _name, write in replicas:
        assert write.shipper.ship()


@pytest.mark.parametrize(("checks", "traces"), [(True, 6), (True, 1), (False, 6)],
                         ids=["looked-up-again", "one-trace", "control"])
def test_one_traces_spans_written_by_two_replicas_at_once_end_as_one_store_holds_them(
        tmp_path: Path, http: HttpClient, engine: ChdbClient, checks: bool, traces: int) -> None:
    """The router splits traces between two replicas mid-flight (the Collector's ring changed): A gets the
    framework spans and roots, B the SDK's calls below them, in the same moment, so neither sees the other's rows
    when it commits. Each decided from half of each trace: the call billed at A's framework span and at B's SDK
    span, B's calls without the root's feature, summaries of half the spans. At its check two seconds later A,
    whose version is the older, finds B's summaries counting only B's spans and decides each trace again as a
    whole; B, at its 60 s check, finds A's counting every span and leaves them; then neither writes again. The
    control skips the checks: ClickHouse stays wrong."""
    now = time.time_ns()
    first, sdk, roots, records = _split(now, traces)
    clocks = {"a": now, "b": now + 10**6}
    with ExitStack() as stack:
        a = stack.enter_context(replica(tmp_path / "a.db", now, http))
        b = stack.enter_context(replica(tmp_path / "b.db", now, http))
        _written_at_once(a, b, clocks, first + roots, sdk)
        if checks:
            for seconds in (1, 2, 3, 60, 61, 62, 120):
                _passes_at(seconds, now, clocks, ("a", a), ("b", b))
            assert a.writer.sync.stats.traces_rewritten == traces  # at 2 s
            assert b.writer.sync.stats.traces_rewritten == 0  # at 60 s A's summaries count every span
            rewritten = a.writer.sync.stats.traces_rewritten + b.writer.sync.stats.traces_rewritten
            for seconds in (180, 240):
                _passes_at(seconds, now, clocks, ("a", a), ("b", b))
            assert a.writer.sync.stats.traces_rewritten + b.writer.sync.stats.traces_rewritten == rewritten
        clocks["b"] = now + 300 * S
        b([], records)  # a straggler afterwards: decided from the whole trace
    db = single_store(tmp_path / "one.db", now, [(first + roots, []), (sdk, []), ([], records)])
    try:
        assert db.execute("SELECT count(*) FROM spans WHERE billed AND feature = 'research'").fetchone()[0] == traces
        if checks:
            assert_clickhouse_equals_sqlite(db, engine, same_clock=False)
        else:
            with pytest.raises(AssertionError):
                assert_clickhouse_equals_sqlite(db, engine, same_clock=False)
    finally:
        db.close()


def test_a_trace_check_clickhouse_did_not_answer_is_made_when_it_answers_again(
        tmp_path: Path, http: HttpClient, engine: ChdbClient) -> None:
    """ClickHouse is unreachable for A at its 2 s check of traces B also wrote at once: the check is put back, not
    dropped, and made at A's first pass once ClickHouse answers (here at 5 s, long before the 60 s one), which
    decides them again as one store would."""
    now = time.time_ns()
    first, sdk, roots, _records = _split(now, traces=3)
    clocks = {"a": now, "b": now + 10**6}

    def down() -> Any:
        raise ClickHouseError("ClickHouse is unreachable")

    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now, http) as b:
        _written_at_once(a, b, clocks, first + roots, sdk)
        reader, a.writer.sync.client = a.writer.sync.client, down
        for seconds in (2, 3, 4):
            clocks["a"] = now + seconds * S
            a.writer.recheck_twins()
        assert a.writer.sync.stats.trace_checks == 0 and a.writer.sync.stats.traces_rewritten == 0
        a.writer.sync.client = reader
        clocks["a"] = now + 5 * S
        a.writer.recheck_twins()
        assert a.writer.sync.stats.trace_checks == 3 and a.writer.sync.stats.traces_rewritten == 3
        assert a.shipper.ship()
    db = single_store(tmp_path / "one.db", now, [(first + roots, []), (sdk, [])])
    try:
        assert_clickhouse_equals_sqlite(db, engine, same_clock=False)
    finally:
        db.close()


def test_the_writer_loop_ships_a_trace_it_wrote_again_at_once(tmp_path: Path, http: HttpClient,
                                                               engine: ChdbClient) -> None:
    """The writer process's pass (WriterLoop.recheck_twins) ships what a trace's check wrote again without
    waiting for the next batch, as it does a moved billing, even when no call was due in that pass."""
    from multiprocessing import Pipe

    from store.writer_process import WriterLoop

    now = time.time_ns()
    first, sdk, roots, _records = _split(now, traces=2)
    clocks = {"a": now, "b": now + 10**6}
    calls = ROLLUP_COUNTERS.index("calls")
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now, http) as b:
        _written_at_once(a, b, clocks, first + roots, sdk)
        inbox, _sender = Pipe(duplex=False)
        _receiver, outbox = Pipe(duplex=False)
        loop = WriterLoop(a.db, a.writer, inbox, outbox, {"db_path": str(tmp_path / "a.db"), "clickhouse": True},
                          None, a.shipper)
        try:
            a.writer.sync.rechecks.due_by = lambda now: False  # no call due: only the traces' checks run
            clocks["a"] = now + 2 * S
            loop.recheck_twins()
            assert a.writer.sync.stats.traces_rewritten == 2 and a.shipper.pending() == 0
            _rollups, totals = clickhouse_rollups(engine)
            assert sum(v[0][calls] for k, v in totals.items() if k[0] == 60) == 2  # billed once each
        finally:
            loop.reserve.give_up()


def test_a_trace_forgotten_in_clickhouse_is_not_brought_back_by_a_straggler(tmp_path: Path, http: HttpClient,
                                                                           engine: ChdbClient) -> None:
    """`forget --store` deletes in ClickHouse only; the replica that wrote the trace keeps its copy for a day.
    A late span of that trace reaching that replica must not ship the forgotten spans again."""
    now = time.time_ns()
    first, sdk, roots, _records = _split(now, traces=2)
    with replica(tmp_path / "a.db", now, http) as a:
        a(first + sdk)
        forget_in_clickhouse(http, "user", "user-1")  # trace 1 (users alternate: user-1, user-0)
        a(roots)
        assert a.writer.sync.stats.traces_dropped == 1
        assert a.db.execute("SELECT count(*) FROM spans WHERE trace_id = ?", (trace_id_bytes(1),)
                            ).fetchone()[0] == 1  # only the late root of the forgotten trace is here now
    spans = engine.query("SELECT trace_id, span_id FROM spans FINAL ORDER BY trace_id, span_id")
    by_trace: dict[bytes, int] = {}
    for trace_id, _span in spans:
        by_trace[bytes(trace_id)] = by_trace.get(bytes(trace_id), 0) + 1
    assert sorted(by_trace.values()) == [1, 4]  # trace 1: its root alone, arrived after the forget; trace 2 whole


def test_an_unreachable_clickhouse_leaves_the_batch_to_the_working_store(tmp_path: Path, http: HttpClient) -> None:
    """While ClickHouse does not answer, the lookup is skipped at once (the shipper knows it is down): the
    batch is decided from the working store and waits in the outbox like every other."""
    now = time.time_ns()
    first, sdk, _roots, _records = _split(now, traces=2)
    up = {"value": True}

    def client() -> Any:
        if not up["value"]:
            raise ClickHouseError("Connection refused")
        return http

    with writing(tmp_path / "a.db", now) as (normalizer, writer, db):
        writer.outbox = OutboxRecorder()
        shipper = Shipper(db, client, retry_every_s=3600)
        writer.sync = TraceSync(shipper.reader)
        write_through(normalizer, writer, first, [], now)
        assert shipper.ship()
        up["value"] = False
        shipper.close()
        write_through(normalizer, writer, sdk, [], now)  # the lookup fails: skipped, nothing lost
        assert not shipper.ship() and shipper.stats.down_since is not None
        write_through(normalizer, writer, sdk[:1], [], now)  # down: skipped at once, no new attempt
        assert writer.sync.stats.skipped == 2 and shipper.stats.failures == 1
        assert db.execute("SELECT count(*) FROM spans").fetchone()[0] == 6
        up["value"] = True
        assert shipper.ship(force=True) and shipper.pending() == 0


def _tool_chain(now: int) -> tuple[list[Any], list[Any]]:
    """(the MCP client's and server's `tools/call` spans, then the framework's execute_tool span above them and
    the root): one call of `search`, failed because the server's span failed; its outermost span comes last."""
    from tests.otlp_factory import make_span

    start = now - 120 * S
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
    root = make_span(9, 1, None, "agent", {"app.llm.feature": "research"}, start_ns=start, end_ns=start + 5 * S)
    framework = make_span(9, 2, 1, "execute_tool search", tool, start_ns=start + S, end_ns=start + 3 * S)
    client = make_span(9, 3, 2, "tools/call search", tool, start_ns=start + S + 10**6, end_ns=start + 3 * S - 10**6)
    server = make_span(9, 4, 3, "tools/call search", tool, start_ns=start + S + 2 * 10**6,
                       end_ns=start + 3 * S - 2 * 10**6, status_code=2, status_message="boom")
    return [client, server], [framework, root]


@pytest.mark.parametrize("sync", [True, False])
def test_a_tool_calls_outer_span_reaching_another_replica_folds_the_call_there(
        tmp_path: Path, http: HttpClient, engine: ChdbClient, sync: bool) -> None:
    """The MCP spans reach replica A, which counts a call at the client's span; the framework's span above
    them reaches B: the call is the framework span's, the inner ones ship as deletion rows. Without the
    lookup, B never sees the inner spans, and ClickHouse keeps two calls where one store has one."""
    from tests.test_clickhouse_sink import clickhouse_tool_calls, sqlite_tool_calls

    now = time.time_ns()
    inner, outer = _tool_chain(now)
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now, http, sync=sync) as b:
        a(inner)
        assert [row[1] for row in clickhouse_tool_calls(engine)] == [(3).to_bytes(8, "big")]
        b(outer)
    one = single_store(tmp_path / "one.db", now, [(inner, []), (outer, [])])
    try:
        want = sqlite_tool_calls(one)
        assert [(row[1], row[-1]) for row in want] == [((2).to_bytes(8, "big"), 1)]  # one call, failed
        assert (clickhouse_tool_calls(engine) == want) is sync
    finally:
        one.close()


def test_trace_checks_come_a_pass_at_a_time_and_follow_the_newest_write() -> None:
    """Each written trace is looked up 2 and 60 s after its write, at most a pass's worth at a time (the writer
    loop runs passes back to back while more are due); a trace written again is looked up after that write."""
    t0 = 10**18
    sync = TraceSync(lambda: None)  # type: ignore[arg-type,return-value]
    ids = [bytes([i]) * 16 for i in range(5)]
    sync.written(ids, [], t0)
    assert not sync.traces_due_by(t0 + S) and sync.traces_due_by(t0 + 2 * S)
    assert sync.traces_due(t0 + 2 * S, limit=3) == ids[:3]
    assert sync.traces_due(t0 + 2 * S, limit=3) == ids[3:]
    assert not sync.traces_due_by(t0 + 2 * S)
    sync.written(ids[:1], [], t0 + 30 * S)  # written again: the first write's next check is dropped
    assert sync.traces_due(t0 + 32 * S) == ids[:1]
    assert sync.traces_due(t0 + 60 * S) == ids[1:]
    assert sync.traces_due(t0 + 90 * S) == ids[:1]
    assert not sync.traces_due_by(10 * t0)
