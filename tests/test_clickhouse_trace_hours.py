"""trace_summaries is sorted by the hour a trace started in (store/clickhouse/schema.py, m004), so a trace
whose start moves to an earlier hour (its root, which started before every other span, exported after
them) must leave no row behind at its old hour: ClickHouse collapses rows only with equal sort keys. The
writer ships a deletion row for the old key, whether it knew the old start from its working store or only
from ClickHouse (another replica wrote the trace), and `forget --store` deletes the row where it is.

Ground truth is a single SQLite store given the same spans (tests/test_clickhouse_sink.py compares every
summary column); the trace list and the sessions read from ClickHouse must show each trace once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from store.clickhouse import dashboards, reports, schema
from store.clickhouse.client import ChdbClient, HttpClient
from store.clickhouse.forget import forget as forget_in_clickhouse
from tests.otlp_factory import make_span, trace_id_bytes
from tests.test_clickhouse_sink import assert_clickhouse_equals_sqlite
from tests.test_clickhouse_stragglers import replica, single_store

S = 10**9
HOUR = 3600 * S
TRACES = 4


def straddling(now: int) -> tuple[list[Any], list[Any]]:
    """(children, roots): each trace's root starts seconds before the last hour boundary, its LLM
    call and tool seconds after it; the roots are sent last, as an SDK exports a root after its children."""
    boundary = now // HOUR * HOUR
    if now - boundary < 60 * S:  # the children must not start in the future
        boundary -= HOUR
    children, roots = [], []
    for n in range(1, TRACES + 1):
        start = boundary - n * S
        roots.append(make_span(n, 1, None, f"agent {n}", {"app.llm.feature": "research", "user.id": f"user-{n % 2}",
                                                           "gen_ai.conversation.id": f"conv-{n}"},
                               start_ns=start, end_ns=boundary + 30 * S))
        children.append(make_span(n, 2, 1, "chat gpt-4o", {
            "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o", "gen_ai.usage.input_tokens": 100 * n,
            "gen_ai.usage.output_tokens": 10 * n}, start_ns=boundary + n * S, end_ns=boundary + 20 * S))
        children.append(make_span(n, 3, 1, "tool search", {"gen_ai.operation.name": "execute_tool",
                                                           "gen_ai.tool.name": "search"},
                                  start_ns=boundary + 21 * S, end_ns=boundary + 22 * S))
    return children, roots


def summary_rows(engine: ChdbClient) -> dict[bytes, list[int]]:
    """trace id → the starts of its live summary rows (FINAL): one per trace when nothing is left behind."""
    out: dict[bytes, list[int]] = {}
    for trace_id, start in engine.query("SELECT trace_id, start_ns FROM trace_summaries FINAL ORDER BY start_ns"):
        out.setdefault(bytes(trace_id), []).append(int(start))
    return out


def listed(engine: ChdbClient, now: int) -> list[bytes]:
    return [row.trace_id for row in dashboards.trace_list(engine, 86400, now / S, (), False, "cost")]


def test_a_late_root_in_an_earlier_hour_leaves_one_summary_row(tmp_path: Path, http: HttpClient,
                                                             engine: ChdbClient) -> None:
    now = time.time_ns()
    children, roots = straddling(now)
    with replica(tmp_path / "a.db", now, http) as a:
        a(children)
        assert all(start % HOUR < 60 * S for starts in summary_rows(engine).values() for start in starts)
        a(roots)
    rows = summary_rows(engine)
    assert sorted(rows) == sorted(trace_id_bytes(n) for n in range(1, TRACES + 1))
    assert all(len(starts) == 1 and starts[0] % HOUR > HOUR - 60 * S for starts in rows.values())
    assert sorted(listed(engine, now)) == sorted(rows)  # the trace list shows each trace once
    assert reports.trace_ids_with_prefix(engine, "00", 1000) == sorted(rows)  # and `:open 00…` too
    db = single_store(tmp_path / "one.db", now, [(children, []), (roots, [])])
    try:
        assert_clickhouse_equals_sqlite(db, engine, same_clock=False)
    finally:
        db.close()


def test_a_root_reaching_another_replica_moves_the_row_that_replica_only_read(
        tmp_path: Path, http: HttpClient, engine: ChdbClient) -> None:
    """B has none of these traces: it learns where ClickHouse holds their summaries from its lookup
    (trace_sync) and deletes those rows when its roots move the starts an hour back. Then a last span of
    each reaches A, whose lookup meets the moved row and its old key's deletion row at one version: the
    trace is live, not forgotten."""
    now = time.time_ns()
    children, roots = straddling(now)
    boundary = roots[0].end_time_unix_nano - 30 * S
    last = [make_span(n, 4, 1, "tool fetch", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch"},
                      start_ns=boundary + 23 * S, end_ns=boundary + 24 * S) for n in range(1, TRACES + 1)]
    with replica(tmp_path / "a.db", now, http) as a, replica(tmp_path / "b.db", now, http) as b:
        a(children)
        b(roots)
        assert b.writer.sync.stats.traces_pulled == TRACES
        assert all(len(starts) == 1 for starts in summary_rows(engine).values())
        a(last)
        assert a.writer.sync.stats.traces_pulled == TRACES and a.writer.sync.stats.traces_dropped == 0
    rows = summary_rows(engine)
    assert len(rows) == TRACES and all(len(starts) == 1 for starts in rows.values())
    assert sorted(listed(engine, now)) == sorted(rows)
    db = single_store(tmp_path / "one.db", now, [(children, []), (roots, []), (last, [])])
    try:
        assert_clickhouse_equals_sqlite(db, engine, same_clock=False)
    finally:
        db.close()


def test_forget_deletes_a_moved_trace_where_its_row_is(tmp_path: Path, http: HttpClient, engine: ChdbClient) -> None:
    now = time.time_ns()
    children, roots = straddling(now)
    with replica(tmp_path / "a.db", now, http) as a:
        a(children)
        a(roots)
    forget_in_clickhouse(http, "user", "user-1")  # traces 1 and 3
    kept = {trace_id_bytes(2), trace_id_bytes(4)}
    assert set(summary_rows(engine)) == kept
    assert set(listed(engine, now)) == kept
    assert reports.trace_ids_with_prefix(engine, "00", 1000) == sorted(kept)  # forgotten: not found by prefix
    conversations = {row[0] for row in engine.query("SELECT DISTINCT conversation_id FROM trace_summaries FINAL")}
    assert conversations == {"conv-2", "conv-4"}


def test_forget_deletes_a_trace_left_live_at_two_hours_and_not_a_deleted_key_again(http: HttpClient,
                                                                                   engine: ChdbClient) -> None:
    """Two replicas racing can leave a trace live at two hours (each key's newest row live): `forget --store`
    deletes both. A key whose newest row is already a deletion gets none: it is read without FINAL, each
    key's newest row as FINAL keeps it."""
    from store.clickhouse.rows import TRACE_INSERT_COLUMNS, trace_tombstones

    now = time.time_ns()
    twice, moved = trace_id_bytes(7), trace_id_bytes(8)
    columns = ("trace_id", "start_ns", "end_ns", "spans", "user_id", "updated_ns", "is_deleted")
    http.insert("trace_summaries", [[twice, now - 3 * HOUR, now, 2, "user-x", now, 0],
                                    [twice, now - HOUR, now, 3, "user-x", now + 1, 0],
                                    [moved, now - 5 * HOUR, now, 2, "user-x", now, 0],
                                    [moved, now - 2 * HOUR, now, 3, "user-x", now + 2, 0]], columns)
    http.insert("trace_summaries", trace_tombstones([moved], now + 2, now - 5 * HOUR), TRACE_INSERT_COLUMNS)
    assert sorted(bytes(r[0]) for r in engine.query("SELECT trace_id FROM trace_summaries FINAL")) == \
        [twice, twice, moved]
    before = engine.query("SELECT count() FROM trace_summaries WHERE is_deleted = 1")[0][0]
    assert forget_in_clickhouse(http, "user", "user-x").traces == 2
    assert engine.query("SELECT count() FROM trace_summaries FINAL") == [(0,)]
    # a deletion at each live key (two hours of one, one of the other) and at the deletion's time for each
    assert engine.query("SELECT count() FROM trace_summaries WHERE is_deleted = 1")[0][0] == before + 3 + 2


def test_the_writers_forget_deletes_a_trace_at_the_hour_it_started(tmp_path: Path, http: HttpClient,
                                                                   engine: ChdbClient) -> None:
    """`forget` through the serving writer (its outbox): the deletion row goes where the summary is, the
    hour the trace started, not the hour of the deletion (the same hour in most tests, by the clock)."""
    now = time.time_ns()
    children, roots = straddling(now)
    with replica(tmp_path / "a.db", now, http) as a:
        a(children)
        a(roots)
        gone = [trace_id_bytes(1), trace_id_bytes(3)]
        a.writer.forget(gone)
        a([])
    assert set(summary_rows(engine)) == {trace_id_bytes(2), trace_id_bytes(4)}
    assert set(listed(engine, now)) == {trace_id_bytes(2), trace_id_bytes(4)}


def test_m004_copies_the_summaries_into_the_hour_sorted_table(url: Any, database: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A database at m003 (sorted by trace id) holding two versions of one trace and a deleted one, with a
    retention changed to 3 days: after m004, the same rows read back with FINAL, sorted by hour, same TTL."""
    from tests.chdb_http_server import engine_path

    client = HttpClient(url)
    engine = ChdbClient(engine_path(), database)
    try:
        monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
        assert schema.migrate(client) == [1, 2, 3]
        schema.ensure_retention(client, 3)
        engine.use_database()
        now = time.time_ns()
        columns = ("trace_id", "start_ns", "end_ns", "spans", "cost_nusd", "updated_ns", "is_deleted")
        client.insert("trace_summaries", [
            [trace_id_bytes(1), now - HOUR, now, 2, 10, 1, 0],
            [trace_id_bytes(1), now - 2 * HOUR, now, 3, 30, 2, 0],  # the newer version: its root came late
            [trace_id_bytes(2), now - HOUR, now, 1, 5, 1, 0],
            [trace_id_bytes(2), now, now, 0, 0, 2, 1],  # forgotten
            [trace_id_bytes(3), now - 5 * HOUR, now, 4, 7, 1, 0],
        ], columns)
        read = "SELECT trace_id, start_ns, spans, cost_nusd FROM trace_summaries FINAL ORDER BY trace_id"
        before = [list(row) for row in engine.query(read)]
        assert [row[2] for row in before] == [3, 4]
        monkeypatch.undo()
        assert schema.migrate(client)[0] == 4
        assert [list(row) for row in engine.query(read)] == before
        sorting, ttl = engine.query("SELECT sorting_key, engine_full FROM system.tables WHERE database = "
                                    "currentDatabase() AND name = 'trace_summaries'")[0]
        assert sorting.startswith("intDiv(start_ns") and "toIntervalDay(3)" in ttl
        assert schema.migrate(client) == []  # done once
    finally:
        client.close()
        engine.close()


def test_the_lookup_takes_a_moved_trace_for_live_whichever_row_it_meets_first(http: HttpClient) -> None:
    """A move writes the live row and its old key's deletion row at one version (a deletion's end is its
    version, in ns: the table's TTL keeps it as long as the row it deletes); trace_sync's lookup must
    report the live one (a forgotten trace would be dropped from the working store), in either order."""
    from store.clickhouse.rows import TRACE_INSERT_COLUMNS, newest_summaries, trace_tombstones

    now = time.time_ns()
    columns = ("trace_id", "start_ns", "end_ns", "spans", "cost_nusd", "updated_ns", "is_deleted")
    for n, deletion_first in ((1, True), (2, False)):
        trace_id = trace_id_bytes(n)
        http.insert("trace_summaries", [[trace_id, now - HOUR, now, 2, 5, now, 0]], columns)  # the row that moves
        live = [[trace_id, now - 2 * HOUR, now, 3, 7, now + 9, 0]]
        deletion = trace_tombstones([trace_id], now + 9, now - HOUR)
        for rows, names in ([(deletion, TRACE_INSERT_COLUMNS), (live, columns)] if deletion_first
                            else [(live, columns), (deletion, TRACE_INSERT_COLUMNS)]):
            http.insert("trace_summaries", rows, names)
        assert newest_summaries(http, [trace_id]) == {trace_id: (0, now + 9, now - 2 * HOUR, now, 7)}
    forgotten = trace_id_bytes(3)
    http.insert("trace_summaries", [[forgotten, now - HOUR, now, 2, 5, now, 0]], columns)
    http.insert("trace_summaries", trace_tombstones([forgotten], now + 9, now - HOUR), TRACE_INSERT_COLUMNS)
    assert newest_summaries(http, [forgotten])[forgotten][:2] == (1, now + 9)


def test_the_runaway_reads_find_traces_by_their_end_and_a_malformed_span_by_id(http: HttpClient) -> None:
    """The runaway rule reads the summaries of traces with a span since the window's start by their end
    (the end_minmax index, m004), not the whole table. A trace whose only span in the window ends before it
    starts (kept, flagged invalid) has an end before the window: it is still found."""
    from store.clickhouse.alerts import runaway_rows

    now = time.time_ns()
    since = now - 600 * S
    span_columns = ("trace_id", "span_id", "kind", "tool_name", "start_ns", "end_ns", "version", "raw")
    summary_columns = ("trace_id", "root_known", "start_ns", "end_ns", "spans", "updated_ns", "conversation_id")
    spans, summaries = [], []
    for n, (start, end) in {1: (now - 60 * S, now - 59 * S),  # an ordinary tool call in the window
                            2: (now - 60 * S, since - 5 * S),  # ends before it starts, and before the window
                            3: (since - 100 * S, since - 99 * S)}.items():  # before the window: not read
        trace_start = min(start, end) - 30 * S
        spans.append([trace_id_bytes(n), (n).to_bytes(8, "big"), "tool", "search", start, end, now, b"\x0a\x03abc"])
        summaries.append([trace_id_bytes(n), 0, trace_start, end, 1, now, f"conv-{n}"])
    asked: list[str] = []
    query = http.query

    def counted(sql: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(sql)
        return query(sql, *args, **kwargs)

    # Without a malformed span in the window, the reads by id are left out (a quick look says so).
    http.insert("spans", [spans[0], spans[2]], span_columns)
    http.insert("trace_summaries", [summaries[0], summaries[2]], summary_columns)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(http, "query", counted)
        rows, _raws = runaway_rows(http, {"tools": None, "running": None}, since, 100, 100, lambda tools: tools)
    assert [row[1] for row in rows["tools"]] == [trace_id_bytes(1)]
    assert [row[0] for row in rows["running"]] == [trace_id_bytes(1)]
    assert asked and not any("UNION ALL" in sql for sql in asked), asked
    http.insert("spans", [spans[1]], span_columns)
    http.insert("trace_summaries", [summaries[1]], summary_columns)
    # Every tool row's arguments asked for: read back by (trace id, span id) pairs.
    asked.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(http, "query", counted)
        rows, raws = runaway_rows(http, {"tools": None, "running": None}, since, 100, 100, lambda tools: tools)
    assert sum("UNION ALL" in sql for sql in asked) == 2, asked
    assert sorted(row[1] for row in rows["tools"]) == [trace_id_bytes(1), trace_id_bytes(2)]
    assert sorted(raws) == sorted(row[0] for row in rows["tools"]) and all(raws.values())
    assert sorted(row[0] for row in rows["running"]) == [trace_id_bytes(1), trace_id_bytes(2)]
    assert {row[1]: row[6] for row in rows["tools"]} == {trace_id_bytes(1): "conv-1", trace_id_bytes(2): "conv-2"}


def test_sessions_read_the_conversations_seen_since_whole(http: HttpClient) -> None:
    """The Sessions screen reads only the conversations with a turn that ended in its window (found by the
    summaries' end), and each of them whole: the same rows as computing every conversation and keeping
    those whose last turn ended since the window's start."""
    from store.clickhouse.sessions import conversation_rows

    now = time.time_ns()
    columns = ("trace_id", "root_known", "start_ns", "end_ns", "duration_ns", "spans", "llm_calls", "cost_nusd",
               "updated_ns", "conversation_id", "user_id")
    rows, n = [], 0
    # conversation → its turns' (start, end) in hours before now: one long-running turn that started
    # before every window, turns either side of each window's start, an old conversation.
    shape = {"long": [(30, 0.5)], "recent": [(26, 25), (2, 1.9)], "edge": [(5, 3.01), (3.2, 2.99)],
             "old": [(40, 39)], "one": [(0.3, 0.2)]}
    for conversation, turns in shape.items():
        for start_h, end_h in turns:
            n += 1
            start, end = now - int(start_h * HOUR), now - int(end_h * HOUR)
            rows.append([trace_id_bytes(n), 1, start, end, end - start, 2, 1, 10 * n, now, conversation,
                         f"user-{conversation}"])
    http.insert("trace_summaries", rows, columns)
    everything = conversation_rows(http)
    assert len(everything) == len(shape)
    for hours in (0.25, 1, 3, 24, 48):
        since = now - int(hours * HOUR)
        seen = conversation_rows(http, seen_since_ns=since)
        assert seen == [row for row in everything if row[4] >= since], hours
    assert [row[0] for row in conversation_rows(http, seen_since_ns=now - 3 * HOUR)] == ["edge", "long", "one",
                                                                                       "recent"]
    recent = next(row for row in conversation_rows(http, seen_since_ns=now - 3 * HOUR) if row[0] == "recent")
    assert recent[2] == 2  # both of its turns, the one before the window too


def test_a_conversations_user_is_its_first_named_turns_in_start_then_trace_id_order(http: HttpClient) -> None:
    """As SQLite sorts turns (start, then trace id bytewise): of turns that start together, the one with the
    smaller trace id names the user, though its bytes read little-endian would be the larger number; a turn
    that names nobody does not count, however early; a start before 1970 (an Int64 below zero) is earliest."""
    from store.clickhouse.sessions import conversation_rows, user_rows

    now = time.time_ns()
    columns = ("trace_id", "root_known", "start_ns", "end_ns", "duration_ns", "spans", "llm_calls", "cost_nusd",
               "updated_ns", "conversation_id", "user_id")
    small, large = bytes([0] * 15 + [2]), bytes([1] + [0] * 15)  # small < large bytewise, not little-endian
    at = now - HOUR
    turns = [  # (trace id, start, conversation, user)
        (bytes([9] * 16), at - HOUR, "tie", None),
        (large, at, "tie", "user-large"),
        (small, at, "tie", "user-small"),
        (bytes([7] * 16), -5 * 10**9, "early", "user-early"),
        (bytes([3] * 16), at, "early", "user-later"),
    ]
    http.insert("trace_summaries", [[trace, 1, start, now, now - start, 1, 1, 10, now, conversation, user]
                                    for trace, start, conversation, user in turns], columns)
    assert {row[0]: row[1] for row in conversation_rows(http)} == {"early": "user-early", "tie": "user-small"}
    assert [(row[0], row[1], row[2]) for row in user_rows(http)] == [("user-early", 1, 2), ("user-small", 1, 3)]


def test_a_conversations_p95_turn_is_the_nearest_rank_whatever_its_turns(http: HttpClient) -> None:
    """store.sessions.nearest_rank's p95 (the ceil(0.95 n)-th smallest duration) for conversations of 1 to 41
    turns, 20 and 40 among them (0.95 n whole: quantileExact(0.95) takes one past it)."""
    from store.clickhouse.sessions import conversation_rows
    from store.sessions import nearest_rank

    now = time.time_ns()
    columns = ("trace_id", "root_known", "start_ns", "end_ns", "duration_ns", "spans", "llm_calls", "updated_ns",
               "conversation_id")
    rows, want = [], {}
    for n in range(1, 42):
        durations = [(7 * k) % 101 * 10**6 + k for k in range(n)]  # distinct, not in start order
        want[f"c{n:02}"] = nearest_rank(sorted(durations), 0.95)
        rows += [[(n * 100 + k).to_bytes(16, "big"), 1, now - HOUR + k, now - HOUR + k + d, d, 1, 1, now, f"c{n:02}"]
                 for k, d in enumerate(durations)]
    http.insert("trace_summaries", rows, columns)
    assert {row[0]: row[-1] for row in conversation_rows(http)} == want


def test_a_conversation_reads_the_calls_of_its_shown_turns_from_the_first_one_on(http: HttpClient) -> None:
    """An opened conversation reads its shown turns' billed calls by their trace ids among the spans that
    started since the first shown turn (the spans' sort key starts with the hour): a call that starts with
    its turn is found, an older turn's call is not read, nor an unbilled span, nor a call's older version."""
    now = time.time_ns()
    span_columns = ("trace_id", "span_id", "kind", "start_ns", "end_ns", "billed", "version")
    summary_columns = ("trace_id", "root_known", "start_ns", "end_ns", "spans", "llm_calls", "updated_ns",
                       "conversation_id")
    turns = {11: now - 3 * HOUR, 12: now - 2 * HOUR, 13: now - 60 * S}  # turn → its start (its call's too)
    spans = [[trace_id_bytes(n), (n).to_bytes(8, "big"), "llm", start, start + S, 1, now] for n, start in turns.items()]
    spans.append([trace_id_bytes(13), (99).to_bytes(8, "big"), "tool", now - 50 * S, now - 49 * S, 0, now])
    http.insert("spans", spans, span_columns)
    http.insert("trace_summaries", [[trace_id_bytes(n), 1, start, start + S, 1, 1, now, "conv-hours"]
                                    for n, start in turns.items()], summary_columns)
    shown, calls = dashboards.conversation_rows(http, "conv-hours", limit=2)  # the latest two turns
    assert [row[0] for row in shown] == [trace_id_bytes(12), trace_id_bytes(13)]
    assert [(row[-3], row[5]) for row in calls] == [(trace_id_bytes(12), turns[12]), (trace_id_bytes(13), turns[13])]
    assert dashboards.conversation_rows(http, "no-such-conversation") == ([], [])
    # A newer version of a call that is no longer billed (its twin was billed instead): FINAL folds the
    # versions before `billed` is looked at, so the older billed version is not shown either.
    http.insert("spans", [[trace_id_bytes(12), (12).to_bytes(8, "big"), "llm", turns[12], turns[12] + S, 0, now + 1]],
                span_columns)
    assert [row[-3] for row in dashboards.conversation_rows(http, "conv-hours", limit=2)[1]] == [trace_id_bytes(13)]


def test_a_conversation_of_two_thousand_turns_opens_over_http(http: HttpClient) -> None:
    """Its calls are read by their traces' ids, IDS_PER_QUERY at a time: the 2,000 ids in one parameter
    are ~136 KB, over the 128 KiB ClickHouse reads in a form field (the test server refuses it likewise)."""
    now = time.time_ns()
    turns = 2_000
    starts = {n: now - (turns - n) * 10 * S for n in range(turns)}
    http.insert("spans", [[trace_id_bytes(100_000 + n), (n + 1).to_bytes(8, "big"), "llm", start, start + S, 1, now]
                          for n, start in starts.items()],
                ("trace_id", "span_id", "kind", "start_ns", "end_ns", "billed", "version"))
    http.insert("trace_summaries", [[trace_id_bytes(100_000 + n), 1, start, start + S, 1, 1, now, "conv-long"]
                                    for n, start in starts.items()],
                ("trace_id", "root_known", "start_ns", "end_ns", "spans", "llm_calls", "updated_ns", "conversation_id"))
    shown, calls = dashboards.conversation_rows(http, "conv-long")
    assert len(shown) == turns
    assert [(row[-3], row[5]) for row in calls] == [(trace_id_bytes(100_000 + n), starts[n]) for n in range(turns)]
    assert [row[0] for row in calls] == list(range(1, turns + 1))  # each call's place in start order


def test_a_batch_of_two_thousand_traces_is_looked_up_over_http(http: HttpClient) -> None:
    """The writer's lookup before a batch (trace_sync) sent up to 2,000 ids in one parameter: ~136 KB,
    over the 128 KiB ClickHouse reads in a form field. It takes IDS_PER_QUERY at a time."""
    from store.clickhouse.rows import newest_summaries

    now = time.time_ns()
    ids = [trace_id_bytes(300_000 + n) for n in range(2_100)]
    http.insert("trace_summaries", [[ids[-1], 1, now - HOUR, now, 1, now]],
                ("trace_id", "root_known", "start_ns", "end_ns", "spans", "updated_ns"))
    assert newest_summaries(http, ids) == {ids[-1]: (0, now, now - HOUR, now, 0)}


def test_a_prefix_finds_each_live_trace_once_without_final(http: HttpClient) -> None:
    """`:open PREFIX` reads each (hour, trace) key's newest row, not FINAL over the whole table: a deleted
    trace is not found, a moved one once, and one left live at two hours (two replicas' race, README) once."""
    now = time.time_ns()
    columns = ("trace_id", "start_ns", "end_ns", "updated_ns", "is_deleted")
    rows = [
        [trace_id_bytes(1), now - 2 * HOUR, now, 1, 0], [trace_id_bytes(1), now - 2 * HOUR, now, 2, 1],  # forgotten
        [trace_id_bytes(2), now, now, 1, 0], [trace_id_bytes(2), now, now, 2, 1],              # moved an hour back
        [trace_id_bytes(2), now - HOUR, now, 2, 0],
        [trace_id_bytes(3), now, now, 1, 0], [trace_id_bytes(3), now - HOUR, now, 1, 0],      # live at two hours
        [trace_id_bytes(4), now, now, 1, 1], [trace_id_bytes(4), now, now, 2, 0],              # deleted, then back
    ]
    for version in (1, 2):  # apart: an insert folds its own block's rows of one key (optimize_on_insert)
        http.insert("trace_summaries", [row for row in rows if row[3] == version], columns)
    assert reports.trace_ids_with_prefix(http, "00", 1000) == [trace_id_bytes(n) for n in (2, 3, 4)]
    assert reports.trace_ids_with_prefix(http, "00", 1) == [trace_id_bytes(n) for n in (2, 3)]  # limit + 1
