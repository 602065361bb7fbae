"""Change markers on a ClickHouse store (issue 17): what a replica's writer records in its working store
(store/changes.py) reaches ClickHouse through the outbox, and the TUI's change line and `[` `]` read there
what they read on SQLite; forgetting a trace, through the writer or with `forget --store`, leaves the
markers' facts without their example; markers seen by several replicas fold to the first sighting of each
value and the value first seen before it, whichever replica saw either.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from store.changes import Change, changes_query, parse_changes, record_prices
from store.clickhouse import dashboards as ch
from store.clickhouse import rows as ch_rows
from store.clickhouse.client import ChdbClient, HttpClient
from store.clickhouse.forget import forget
from store.clickhouse.outbox import OutboxRecorder
from store.clickhouse.sink import Shipper
from tests.otlp_factory import make_span
from tests.store_writing import write_through, writing

NS = 10**9
MS = 10**6
EVER = (0, 2**62 / NS)


def _root(trace: int, start: int, user: str) -> Any:
    return make_span(trace, 1, None, "POST /ask", {"app.llm.feature": "ask", "user.id": user},
                     start_ns=start, end_ns=start + 1000 * MS, kind=2)


def _chat(trace: int, start: int, served: str, version: str, **attrs: Any) -> Any:
    return make_span(trace, 2, 1, "chat gpt-4o", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": served, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10,
        "app.llm.prompt.template.id": "answer", "app.llm.prompt.template.version": version, **attrs},
        start_ns=start + 10 * MS, end_ns=start + 900 * MS)


def _drawn_on_sqlite(db: sqlite3.Connection) -> list[Change]:
    query = changes_query(*EVER)
    return parse_changes(db.execute(query.sql, query.params).fetchall())


def test_a_replicas_change_markers_read_on_clickhouse_as_on_sqlite_and_forget_keeps_their_facts(
        tmp_path: Path, http: HttpClient, engine: ChdbClient) -> None:
    now = time.time_ns()
    t0 = now - 600 * NS
    path = tmp_path / "replica.db"
    with writing(path, now) as (normalizer, writer, db):
        writer.outbox = OutboxRecorder()
        shipper = Shipper(db, lambda: http)
        # Baselines, then a new snapshot and prompt version in trace 3 (user-b), an error class in trace 4.
        for trace, offset, served, version, user in ((1, 0, "gpt-4o-2024-08-06", "v1", "user-a"),
                                                     (2, 5, "gpt-4o-2024-08-06", "v1", "user-a"),
                                                     (3, 60, "gpt-4o-2024-11-20", "v2", "user-b")):
            start = t0 + offset * NS
            write_through(normalizer, writer, [_root(trace, start, user), _chat(trace, start, served, version)], [], now)
            assert shipper.ship()
        start = t0 + 90 * NS
        write_through(normalizer, writer, [_root(4, start, "user-c"), _chat(
            4, start, "gpt-4o-2024-11-20", "v2", **{"error.type": "RateLimitError", "http.response.status_code": 429})],
            [], now)
        # A price table recorded outside any batch (as at the writer's start) goes with the next batch.
        with db:
            record_prices(db, "digest-1", t0 + 100 * NS)
            assert record_prices(db, "digest-2", t0 + 110 * NS)
        write_through(normalizer, writer, [_root(5, t0 + 120 * NS, "user-a")], [], now)
        assert shipper.ship()
        drawn = _drawn_on_sqlite(db)
        assert [(c.kind, c.before, c.after) for c in drawn] == [
            ("served_model", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"), ("prompt_version", "v1", "v2"),
            ("error_class", None, "api/rate_limit"), ("prices", "digest-1", "digest-2")]
        assert drawn[0].trace_id == (3).to_bytes(16, "big")
        assert parse_changes(ch.change_rows(engine, *EVER)) == drawn
        # The same read through the app's ClickHouse reader, for a window that leaves the first change out.
        window = (drawn[1].time_s + 0.001, drawn[-1].time_s + 0.001)
        query = changes_query(*window)
        assert parse_changes(ch.change_rows(http, *window)) == \
            parse_changes(db.execute(query.sql, query.params).fetchall()) == drawn[2:]

        # Forgotten through the writer (a replica's own forget): the markers stay, without trace 3.
        writer.forget([(3).to_bytes(16, "big")])
        assert shipper.ship()
        drawn = _drawn_on_sqlite(db)
        assert len(drawn) == 4 and drawn[0].trace_id is None and drawn[1].trace_id is None
        assert parse_changes(ch.change_rows(engine, *EVER)) == drawn
        # Forgotten in ClickHouse (`forget --store`): the error class's example, trace 4, goes the same way.
        assert forget(http, "user", "user-c").traces == 1
        on_clickhouse = parse_changes(ch.change_rows(engine, *EVER))
        assert [c.trace_id for c in on_clickhouse] == [None, None, None, None]
        assert [c.after for c in on_clickhouse] == [c.after for c in drawn]
        assert db.execute("SELECT count(*) FROM changes WHERE trace_id = ?",
                          ((4).to_bytes(16, "big"),)).fetchone()[0] == 1  # the working store was not asked


def _marker(kind: str, scope: str, after: str, time_s: int, before: str | None, trace: int | None, seq: int,
            version: int = 1) -> list[Any]:
    return [kind, scope, after, time_s * NS, before, None if trace is None else trace.to_bytes(16, "big"), seq,
            version]


def test_markers_of_two_replicas_fold_to_each_values_first_sighting_and_the_value_seen_before_it(
        engine: ChdbClient) -> None:
    t = 1_800_000_000
    replica_a = [  # saw v1, then v2 (its `before`: v1)
        _marker("served_model", "gpt-4o", "v1", t + 10, None, 0xA1, 1),
        _marker("served_model", "gpt-4o", "v2", t + 20, "v1", 0xA2, 2),
        _marker("error_class", "", "api/rate_limit", t + 40, None, 0xA4, 3),
    ]
    replica_b = [  # never saw v1: its first v2, earlier than A's, is its baseline; then v3
        _marker("served_model", "gpt-4o", "v2", t + 19, None, 0xB2, 1),
        _marker("served_model", "gpt-4o", "v3", t + 30, "v2", 0xB3, 2),
        _marker("error_class", "", "api/rate_limit", t + 35, None, 0xB4, 3),
        _marker("prompt_version", "answer", "p1", t + 50, None, 0xB5, 4),
    ]
    engine.insert("changes", replica_a + replica_b, ch_rows.CHANGE_INSERT_COLUMNS)
    got = [(c.kind, c.before, c.after, c.time_s - t, c.trace_id) for c in parse_changes(
        ch.change_rows(engine, t, t + 100))]
    assert got == [
        ("served_model", "v1", "v2", 19, (0xB2).to_bytes(16, "big")),  # B's sighting, A's v1 before it
        ("served_model", "v2", "v3", 30, (0xB3).to_bytes(16, "big")),
        ("error_class", None, "api/rate_limit", 35, (0xB4).to_bytes(16, "big")),
    ]  # v1 and p1, the first values of their kind and scope, are baselines
    # The window cuts by the first sighting; what a value changed from is found outside the window too.
    assert [c.after for c in parse_changes(ch.change_rows(engine, t + 25, t + 100))] == ["v3", "api/rate_limit"]
    assert [c.after for c in parse_changes(ch.change_rows(engine, t + 19.5, t + 29))] == []
    # A newer version of a row (forget dropping its example) replaces it; the fold keeps the NULL.
    engine.insert("changes", [_marker("served_model", "gpt-4o", "v2", t + 19, None, None, 1, version=2)],
                  ch_rows.CHANGE_INSERT_COLUMNS)
    assert parse_changes(ch.change_rows(engine, t, t + 100))[0].trace_id is None
