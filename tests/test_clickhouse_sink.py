"""The ClickHouse sink (store/clickhouse/sink.py): the writer's outbox, the shipper, copy_store, and a real
`serve --store clickhouse://…` against tests/chdb_http_server.py (the real engine behind ClickHouse's HTTP
protocol). Ground truth is always the replica's own SQLite store, written by the real Normalizer and
SpanWriter: what ClickHouse folds (spans FINAL, summaries FINAL, rollups summed) must equal it row for row.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from store import histogram
from store.changes import changes_query, parse_changes
from store.clickhouse import dashboards as clickhouse_dashboards
from store.clickhouse import rows as ch_rows
from store.clickhouse import schema
from store.clickhouse import sessions as clickhouse_sessions
from store.clickhouse.client import ChdbClient, ClickHouseError, HttpClient
from store.clickhouse.outbox import OutboxRecorder
from store.clickhouse.schema import BY_COST_TABLE
from store.clickhouse.sink import Shipper, copy_store
from store.clickhouse.url import PASSWORD_ENV, ClickHouseUrl, parse_store_url
from store.content_index import searchable_log_text, searchable_span_text
from store.fts5_words import words
from store.metrics import series_digest
from store.queries import decompress
from store.sessions import CONVERSATION_COLUMNS
from store.writer import HISTOGRAMS
from tests.clickhouse_fixtures import PASSWORD, PROCESSES, USER
from tests.otlp_factory import log_record, logs_request, make_span, trace_request
from tests.store_writing import write_through, writing

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


# --- traffic: agent traces whose billing moves --------------------------------------------------------------


def _llm(model: str, tokens: int, **extra: Any) -> dict[str, Any]:
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
            "gen_ai.response.model": model, "gen_ai.usage.input_tokens": tokens, "gen_ai.usage.output_tokens": 40,
            **extra}


def agent_traffic(t0: int, traces: int = 6) -> tuple[list[list[Any]], list[Any]]:
    """Requests of spans, in arrival order, and log records. Each trace: an agent root (feature, tenant), a
    framework-level chat span and a tool span in the first request; the SDK's chat span under the framework
    one (the straggler: it moves billing from the framework span to itself, another model) and the root
    itself in a later request (root inheritance: feature/tenant move to every span, late)."""
    first, later = [], []
    for n in range(1, traces + 1):
        start = t0 + n * 7_000_000_000
        conversation = {"gen_ai.conversation.id": f"conv-{n % 3}", "user.id": f"user-{n % 2}"}
        root = make_span(n, 1, None, f"agent 'run' {n}\" ; DROP TABLE spans", {
            "app.llm.feature": "research", "app.llm.tenant": f"tenant-{n % 2}", **conversation},
            start_ns=start, end_ns=start + 5_000_000_000)
        question = json.dumps([{"role": "user", "parts": [{"type": "text", "content": f"Refund policy, order #{n}?"}]}])
        framework = make_span(n, 2, 1, "chat gpt-4o", _llm("gpt-4o", 1000 + n, **conversation,
                                                           **{"gen_ai.input.messages": question}),
                              start_ns=start + 10_000_000, end_ns=start + 2_000_000_000)
        sdk = make_span(n, 3, 2, "chat gpt-4o-mini", _llm("gpt-4o-mini", 1000 + n,
                                                          **{"gen_ai.response.id": f"resp-{n}"}),
                        start_ns=start + 20_000_000, end_ns=start + 1_900_000_000)
        tool = make_span(n, 4, 1, "tool search", {"gen_ai.operation.name": "execute_tool",
                                                  "gen_ai.tool.name": "search"},
                         start_ns=start + 2_100_000_000, end_ns=start + 2_200_000_000, status_code=2,
                         status_message="boom")
        first += [framework, tool]
        later += [sdk, root]
    records = [log_record(n, 3, "gen_ai.choice", body={"finish_reason": "stop"},
                          attrs={"gen_ai.response.finish_reasons": ["stop"]}, time_ns=t0 + n * 7_000_000_000)
               for n in range(1, traces + 1)]
    return [first, later], records


# --- ground truth: the SQLite store against ClickHouse -------------------------------------------------------


def _nonzero(h: dict[int, int]) -> dict[int, int]:
    return {b: c for b, c in sorted(h.items()) if c}


def sqlite_rollups(db: sqlite3.Connection) -> tuple[dict[tuple, tuple], dict[tuple, tuple]]:
    """(per-key rows as ClickHouse keys them, SQLite's total rows) from SQLite, zero rows left out."""
    dims = ", ".join(f"d.{d}" for d in schema.ROLLUP_DIMENSIONS)
    per_key: dict[tuple, tuple] = {}
    totals: dict[tuple, tuple] = {}
    for row in db.execute(f"SELECT r.res, r.bucket, r.dims_id, {dims}, "
                          f"{', '.join('r.' + c for c in schema.ROLLUP_COUNTERS)}, {', '.join(HISTOGRAMS)} "
                          "FROM rollups r LEFT JOIN dims d ON d.id = r.dims_id"):
        res, bucket, dims_id = row[:3]
        names = tuple(row[3:3 + len(schema.ROLLUP_DIMENSIONS)])
        counters = tuple(row[3 + len(names):3 + len(names) + len(schema.ROLLUP_COUNTERS)])
        hists = []
        for blob in row[3 + len(names) + len(counters):]:
            counts: dict[int, int] = {}
            histogram.decode_into(blob, counts)
            hists.append(_nonzero(counts))
        value = (counters, tuple(json.dumps(h) for h in hists))
        if not any(counters) and not any(hists):
            continue
        if dims_id == 0:
            totals[(res, bucket)] = value
            if res == 10:
                per_key[(res, bucket, *ch_rows.NO_DIMS)] = value
        else:
            per_key[(res, bucket, *names)] = value
    return per_key, totals


def clickhouse_rollups(client: Any) -> tuple[dict[tuple, tuple], dict[tuple, tuple]]:
    counters = ", ".join(f"sum({c})" for c in schema.ROLLUP_COUNTERS)
    hists = ", ".join(f"sumMap({schema.histogram_column(h)}.bucket, {schema.histogram_column(h)}.count)"
                      for h in schema.ROLLUP_HISTOGRAMS)
    dims = ", ".join(schema.ROLLUP_DIMENSIONS)

    def fold(rows: list[tuple], width: int) -> dict[tuple, tuple]:
        out = {}
        for row in rows:
            key = tuple(row[:width])
            sums = tuple(int(v) for v in row[width:width + len(schema.ROLLUP_COUNTERS)])
            maps = tuple(json.dumps(_nonzero(dict(zip(*m)))) for m in row[width + len(schema.ROLLUP_COUNTERS):])
            if any(sums) or any(m != "{}" for m in maps):
                out[key] = (sums, maps)
        return out

    per_key = fold(client.query(f"SELECT res, bucket, {dims}, {counters}, {hists} FROM rollups "
                                f"GROUP BY res, bucket, {dims}"), 2 + len(schema.ROLLUP_DIMENSIONS))
    totals = fold(client.query(f"SELECT res, bucket, {counters}, {hists} FROM rollups WHERE res != 10 "
                               "GROUP BY res, bucket"), 2)
    return per_key, totals


def sqlite_tool_rollups(db: sqlite3.Connection) -> dict[tuple, tuple]:
    """(res, bucket, tool) → (calls, errors, duration, latency histogram) of tool spans, zero rows left out."""
    out = {}
    for res, bucket, tool, calls, errors, duration, blob in db.execute(
            "SELECT res, bucket, tool, calls, errors, duration_ns, hist_latency FROM tool_rollups"):
        counts: dict[int, int] = {}
        histogram.decode_into(blob, counts)
        if calls or errors or duration or _nonzero(counts):
            out[(res, bucket, tool)] = (calls, errors, duration, _nonzero(counts))
    return out


def clickhouse_tool_rollups(client: Any) -> dict[tuple, tuple]:
    out = {}
    for res, bucket, tool, calls, errors, duration, latency in client.query(
            "SELECT res, bucket, tool, sum(calls), sum(errors), sum(duration_ns), "
            "sumMap(latencyMap.bucket, latencyMap.count) FROM tool_rollups GROUP BY res, bucket, tool"):
        counts = _nonzero(dict(zip(*latency)))
        if calls or errors or duration or counts:
            out[(res, bucket, tool)] = (calls, errors, duration, counts)
    return out


def sqlite_tool_calls(db: sqlite3.Connection) -> list[tuple]:
    """(trace id, span id, start, tool, duration, failed) of every call the store keeps (store/tool_rollups.py)."""
    return db.execute("SELECT s.trace_id, s.span_id, t.start_ns, t.tool, t.duration_ns, t.failed FROM tool_calls t "
                      "JOIN spans s ON s.id = t.call_id ORDER BY s.trace_id, s.span_id").fetchall()


def clickhouse_tool_calls(client: Any) -> list[tuple]:
    return [(bytes(t), bytes(s), *rest) for t, s, *rest in client.query(
        "SELECT trace_id, span_id, start_ns, tool, duration_ns, failed FROM tool_calls FINAL "
        "ORDER BY trace_id, span_id")]


def assert_clickhouse_equals_sqlite(db: sqlite3.Connection, client: Any, *, same_clock: bool = True,
                                    markers: bool = True) -> None:
    """ClickHouse holds what the SQLite store `db` holds. `same_clock`: the summaries' updated_ns too (False
    when `db` is another run's store given the same traffic). `markers`: the change markers drawn, every one
    (False when `db` was written differently: a store that never saw forgotten traces, or was repriced)."""
    span_cols = [*ch_rows.SPAN_VALUE_COLUMNS, "resource_digest", "scope_digest"]
    expected_spans = [list(r) for r in db.execute(
        f"SELECT {', '.join('s.' + c for c in ch_rows.SPAN_VALUE_COLUMNS)}, r.digest, sc.digest FROM spans s "
        "LEFT JOIN resources r ON r.id = s.resource_id LEFT JOIN scopes sc ON sc.id = s.scope_id "
        "ORDER BY s.trace_id, s.span_id")]
    raw_at, kind_at = span_cols.index("raw"), span_cols.index("kind")
    for row in expected_spans:
        # A `text:` search's words (m010): those of the text the SQLite content index indexes of the span.
        row.append(words(searchable_span_text(row[raw_at], row[kind_at])))
        row[raw_at] = decompress(row[raw_at])
    span_cols.append("search_words")
    got_spans = [list(r) for r in client.query(f"SELECT {', '.join(span_cols)} FROM spans FINAL ORDER BY trace_id, "
                                               "span_id", bytes_columns=("raw", "duplicate_of"))]
    assert len(got_spans) == len(expected_spans) > 0
    for got, want in zip(got_spans, expected_spans):
        assert dict(zip(span_cols, got)) == dict(zip(span_cols, want))
    log_words = sorted(words(searchable_log_text(raw, event)) for raw, event in
                       db.execute("SELECT raw, event_name FROM logs"))
    assert sorted(row[0] for row in client.query("SELECT search_words FROM logs FINAL")) == log_words
    trace_cols = [*ch_rows.TRACE_COLUMNS, "updated_ns"] if same_clock else list(ch_rows.TRACE_COLUMNS)
    select = ", ".join(trace_cols)
    assert [list(r) for r in client.query(f"SELECT {select} FROM trace_summaries FINAL ORDER BY trace_id")] == \
        [list(r) for r in db.execute(f"SELECT {select} FROM traces ORDER BY trace_id")]
    # The by-cost copy holds the same live summaries, and no row a later one left behind (m007).
    assert [list(r) for r in client.query(f"SELECT {select} FROM {BY_COST_TABLE} FINAL ORDER BY trace_id")] == \
        [list(r) for r in db.execute(f"SELECT {select} FROM traces ORDER BY trace_id")]
    # Conversations and users are not shipped: ClickHouse computes them from the summaries when read.
    conversation_columns = [c for c in CONVERSATION_COLUMNS if c != "updated_ns"]
    assert clickhouse_sessions.conversation_rows(client) == \
        db.execute(f"SELECT {', '.join(conversation_columns)} FROM conversations ORDER BY conversation_id").fetchall()
    users = db.execute("SELECT * FROM users ORDER BY user_id").fetchall()
    assert clickhouse_sessions.user_rows(client) == users
    if users:  # the users seen since a moment: those whose last turn ended at or after it
        since = sorted(row[-1] for row in users)[len(users) // 2]
        assert clickhouse_sessions.user_rows(client, seen_since_ns=since) == [row for row in users if row[-1] >= since]
    assert client.query("SELECT count() FROM logs FINAL")[0][0] == db.execute("SELECT count(*) FROM logs").fetchone()[0]
    assert clickhouse_tool_calls(client) == sqlite_tool_calls(db)
    assert clickhouse_tool_rollups(client) == sqlite_tool_rollups(db)
    if markers:
        every = changes_query(0, 2**62 / 10**9)
        assert parse_changes(clickhouse_dashboards.change_rows(client, 0, 2**62 / 10**9)) == \
            parse_changes(db.execute(every.sql, every.params).fetchall())
    want_rollups, want_totals = sqlite_rollups(db)
    got_rollups, got_totals = clickhouse_rollups(client)
    assert got_rollups == want_rollups
    assert got_totals == {k: v for k, v in want_totals.items() if k[0] != 10}
    assert clickhouse_metric_points(client) == sqlite_metric_points(db)


def sqlite_metric_points(db: sqlite3.Connection) -> dict[tuple, tuple]:
    """OTLP metric buckets, keyed as ClickHouse keys them (res, bucket, name, series digest); the sums
    approximate (replicas add a bucket's points in another order)."""
    out = {}
    for res, bucket, name, unit, kind, service, attrs, n, total, low, high, last, last_ns, blob in db.execute(
            "SELECT p.res, p.bucket, s.name, s.unit, s.kind, s.service, s.attrs_json, p.n, p.total, p.min, p.max, "
            "p.last, p.last_ns, p.hist FROM metric_points p JOIN metric_series s ON s.id = p.series_id"):
        out[(res, bucket, name, series_digest(name, unit, kind, service, attrs))] = (
            n, pytest.approx(total), low, high, last_ns, last, _nonzero(_decoded(blob)))
    return out


def clickhouse_metric_points(client: Any) -> dict[tuple, tuple]:
    return {(res, bucket, name, bytes(series)): (n, total, low, high, last[0], last[1], _nonzero(dict(zip(*hist))))
            for res, bucket, name, series, n, total, low, high, last, hist in client.query(
                "SELECT res, bucket, name, series, sum(n), sum(total), min(min), max(max), max(last), sumMap(hist) "
                "FROM metric_points GROUP BY res, bucket, name, series", bytes_columns=("series",))}


def _decoded(blob: bytes | None) -> dict[int, int]:
    counts: dict[int, int] = {}
    if blob:
        histogram.decode_into(blob, counts)
    return counts


def write_store(path: Path, now: int, recorder: OutboxRecorder | None = None,
                shipper_factory: Any = None) -> None:
    requests, records = agent_traffic(now - 120 * 10**9)
    with writing(path, now) as (normalizer, writer, db):
        writer.outbox = recorder
        shipper = shipper_factory(db) if shipper_factory else None
        for spans in requests:
            write_through(normalizer, writer, spans, [], now)
            if shipper:
                assert shipper.ship()
        write_through(normalizer, writer, [], records, now)
        if shipper:
            assert shipper.ship()


# --- copy_store ----------------------------------------------------------------------------------------------


def test_copy_store_fills_clickhouse_with_what_sqlite_holds(tmp_path: Path, http: HttpClient,
                                                            engine: ChdbClient) -> None:
    path = tmp_path / "replica.db"
    write_store(path, time.time_ns())
    db = sqlite3.connect(path)
    try:
        counts = copy_store(db, http)
        assert counts["spans"] == 24 and counts["trace_summaries"] == 6 and counts["logs"] == 6
        assert counts["rollups"] > 0 and "conversations" not in counts and "users" not in counts
        assert len(clickhouse_sessions.conversation_rows(http)) == 3 and len(clickhouse_sessions.user_rows(http)) == 2
        # Billing moved in every trace: the SDK's gpt-4o-mini span is the billed one, gpt-4o's is not.
        assert db.execute("SELECT count(*) FROM spans WHERE billed AND request_model = 'gpt-4o-mini'").fetchone()[0] == 6
        assert_clickhouse_equals_sqlite(db, engine)
        assert_clickhouse_equals_sqlite(db, http)
        # A database migrated to m008 with tool spans in it: tool_rollups is filled from them, once.
        tools = sqlite_tool_rollups(db)
        assert sum(calls for (res, _, _), (calls, *_) in tools.items() if res == 3600) == 6, tools
        http.command("TRUNCATE TABLE tool_rollups")
        schema.MIGRATIONS[7](http)
        assert clickhouse_tool_rollups(http) == tools
        schema.MIGRATIONS[7](http)
        assert clickhouse_tool_rollups(http) == tools
    finally:
        db.close()


# --- the outbox ------------------------------------------------------------------------------------------------


def test_the_outbox_is_written_in_the_writers_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time_ns()
    requests, _ = agent_traffic(now - 60 * 10**9, traces=2)
    with writing(tmp_path / "r.db", now) as (normalizer, writer, db):
        writer.outbox = OutboxRecorder()
        write_through(normalizer, writer, requests[0], [], now)
        assert db.execute("SELECT count(*) FROM clickhouse_outbox").fetchone()[0] == 1
        # A failure late in the transaction (after spans, logs and rollups were recorded): nothing of it stays.
        from store import sessions

        def broken(*args: Any, **kwargs: Any) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(sessions, "write_traces", broken)
        with pytest.raises(sqlite3.OperationalError):
            write_through(normalizer, writer, requests[1], [], now)
        assert db.execute("SELECT count(*) FROM clickhouse_outbox").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM spans").fetchone()[0] == 4
        assert writer.outbox.empty()
        monkeypatch.undo()
        write_through(normalizer, writer, requests[1], [], now)
        payloads = [json.loads(p) for (p,) in db.execute("SELECT payload FROM clickhouse_outbox ORDER BY batch")]
        # 4 new spans, and the first batch's 4 corrected: the framework spans unbilled, and every span given
        # the late root's feature and tenant.
        assert len(payloads) == 2 and len(payloads[1]["spans"]) == 4 + 4


def test_a_billing_move_ships_minus_old_plus_new_and_folds_to_sqlites_rollups(tmp_path: Path, http: HttpClient,
                                                                              engine: ChdbClient) -> None:
    now = time.time_ns()
    requests, _ = agent_traffic(now - 60 * 10**9, traces=1)
    with writing(tmp_path / "r.db", now) as (normalizer, writer, db):
        writer.outbox = OutboxRecorder()
        for spans in requests:
            write_through(normalizer, writer, spans, [], now)
        payloads = [json.loads(p) for (p,) in db.execute("SELECT payload FROM clickhouse_outbox ORDER BY batch")]
        calls = schema.ROLLUP_COUNTERS.index("calls")
        model_at = 2 + schema.ROLLUP_DIMENSIONS.index("model")

        def calls_by_model(payload: dict[str, Any], res: int = 60) -> Counter[str]:
            out: Counter[str] = Counter()
            for r, _bucket, dims, counters, _h in payload["rollups"]:
                if r == res:
                    out[dims[model_at - 2]] += counters.get(str(calls), 0)
            return out

        assert calls_by_model(payloads[0]) == Counter({"gpt-4o": 1})
        # The straggler: gpt-4o's call taken back (−1) and gpt-4o-mini's added (+1), under the root's feature.
        second = calls_by_model(payloads[1])
        assert second["gpt-4o"] == -1 and second["gpt-4o-mini"] == 1
        assert Shipper(db, lambda: http).ship()
        assert db.execute("SELECT count(*) FROM clickhouse_outbox").fetchone()[0] == 0
        assert_clickhouse_equals_sqlite(db, engine)


def test_shipping_every_batch_keeps_clickhouse_equal_to_sqlite(tmp_path: Path, http: HttpClient,
                                                               engine: ChdbClient) -> None:
    path = tmp_path / "replica.db"
    write_store(path, time.time_ns(), OutboxRecorder(), lambda db: Shipper(db, lambda: http))
    db = sqlite3.connect(path)
    try:
        assert_clickhouse_equals_sqlite(db, engine)
    finally:
        db.close()


def test_clickhouse_down_keeps_the_outbox_and_a_reshipped_batch_doubles_nothing(
        tmp_path: Path, url: ClickHouseUrl, http: HttpClient, engine: ChdbClient) -> None:
    now = time.time_ns()
    requests, records = agent_traffic(now - 60 * 10**9)
    up = {"value": False}

    def connect() -> HttpClient:
        if not up["value"]:
            raise ClickHouseError("Connection refused")
        client = HttpClient(url)
        client.use_database()
        return client

    with writing(tmp_path / "r.db", now) as (normalizer, writer, db):
        writer.outbox = OutboxRecorder()
        shipper = Shipper(db, connect, retry_every_s=0.0)
        for spans in requests:
            write_through(normalizer, writer, spans, [], now)
            assert not shipper.ship()
        write_through(normalizer, writer, [], records, now)
        assert not shipper.ship()
        assert shipper.pending() == 3 and shipper.stats.down_since is not None and shipper.stats.backlog == 3
        assert engine.query("SELECT count() FROM spans") == [(0,)]
        up["value"] = True
        # ClickHouse confirms the first batch, then the process "dies" before the outbox delete.
        crash = {"once": True}

        def die_once(batch: int) -> None:
            if crash.pop("once", False):
                raise ClickHouseError("connection reset after the insert")

        shipper.after_insert = die_once
        assert not shipper.ship()
        assert shipper.pending() == 3  # the confirmed batch is still in the outbox: it is shipped again
        assert shipper.ship(), shipper.stats.last_error
        assert shipper.pending() == 0 and shipper.stats.down_since is None
        assert_clickhouse_equals_sqlite(db, engine)  # rollups summed once, not twice
        # A batch whose token ClickHouse has seen adds nothing; the same rows under a new token would.
        bucket = now // 10**9 // 60 * 60
        rows = ch_rows.rollup_row(60, bucket, ("dedup-check", *ch_rows.NO_DIMS[1:]), {0: 1},
                                  [{}] * len(schema.ROLLUP_HISTOGRAMS))
        for token in ("t-1", "t-1", "t-2"):
            http.insert("rollups", [rows], ch_rows.ROLLUP_INSERT_COLUMNS,
                        settings={"insert_deduplication_token": token})
        assert engine.query("SELECT sum(calls) FROM rollups WHERE service = 'dedup-check'") == [(2,)]


def test_no_clickhouse_store_writes_no_outbox(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    write_store(path, time.time_ns())
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM clickhouse_outbox").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM spans").fetchone()[0] == 24
    finally:
        db.close()


# --- a real serve --------------------------------------------------------------------------------------------


def _start_serve(data_home: Path, store: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "XDG_DATA_HOME": str(data_home), PASSWORD_ENV: PASSWORD}
    env.pop("LLMOBS_DB", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmobs_tui", "serve", "--store", store, "--grpc-port", "0", "--http-port", "0",
         "--stats-every", "1h"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env,
    )
    assert proc.stdout is not None
    # The writer's first word about ClickHouse (its probe at start) may come before the start line.
    early = []
    for _ in range(20):
        line = proc.stdout.readline()
        match = re.search(r"OTLP/gRPC on (127\.0\.0\.1:\d+)", line)
        if match or not line:
            break
        early.append(line)
    assert match, f"serve did not start: {''.join(early)}{line}{proc.stdout.read() if proc.poll() is not None else ''}"
    proc.early_output = "".join(early)  # type: ignore[attr-defined]
    return proc, match.group(1)


def _export(channel: grpc.Channel, method: str, body: bytes) -> grpc.StatusCode:
    try:
        channel.unary_unary(method)(body, timeout=20)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _export_until_acked(channel: grpc.Channel, method: str, body: bytes, timeout: float = 60) -> None:
    """As an exporter does: retry a retryable refusal until it is acknowledged."""
    deadline = time.monotonic() + timeout
    while (code := _export(channel, method, body)) != grpc.StatusCode.OK:
        assert code == grpc.StatusCode.UNAVAILABLE, code
        assert time.monotonic() < deadline, "never acknowledged"
        time.sleep(0.2)


def reconnected(reader: HttpClient, url: ClickHouseUrl) -> HttpClient:
    """A new client in place of `reader`, whose connection went with the ClickHouse that was restarted."""
    reader.close()
    client = HttpClient(url)
    client.use_database()
    return client


def stopped(proc: subprocess.Popen, channel: grpc.Channel) -> str:
    """Stop `serve` as systemd or Kubernetes would (SIGTERM); its output."""
    channel.close()
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=60)[0]


def _clickhouse_process(path: Path, port: int = 0) -> tuple[subprocess.Popen, int]:
    """A ClickHouse (the chdb HTTP front) in a process of its own, so that it can really go away: a stopped
    in-process front keeps serving the connections it has open."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.chdb_http_server", "--path", str(path), "--port", str(port),
                             "--user", USER, "--password", PASSWORD], stdout=subprocess.PIPE, text=True)
    PROCESSES.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert match, line
    return proc, int(match.group(1))


def test_serve_with_a_clickhouse_store_acks_what_clickhouse_holds(tmp_path: Path) -> None:
    clickhouse, port = _clickhouse_process(tmp_path / "chdb")
    database = "served"
    url = parse_store_url(f"clickhouse://{USER}@127.0.0.1:{port}/{database}", {PASSWORD_ENV: PASSWORD})
    proc, address = _start_serve(tmp_path, url.display())
    replica = next((tmp_path / "llmobs-tui").glob("clickhouse-*.db"), None)
    assert replica is not None and database in replica.name
    channel = grpc.insecure_channel(address)
    reader = HttpClient(url)
    try:
        now = time.time_ns()
        requests, records = agent_traffic(now - 60 * 10**9)
        _export_until_acked(channel, TRACE_METHOD, trace_request(requests[0]).SerializeToString())
        reader.use_database()
        # Acknowledged = in ClickHouse: no waiting, the spans are there the moment the ack came back.
        assert reader.query("SELECT count() FROM spans FINAL") == [(12,)]
        # ... and searchable: a `text:` search finds a span by its content at its ack (the working store
        # indexes nothing: it says so to a search of its own).
        assert reader.query("SELECT DISTINCT search_words FROM spans WHERE search_words != '' ORDER BY 1 LIMIT 1") \
            == [(" refund policy order 1",)]
        found = clickhouse_dashboards.trace_list(reader, 3600, time.time(), [("text", "=", "REFUND pol")], False)
        assert {t.trace_id for t in found} == {n.to_bytes(16, "big") for n in range(1, 7)}
        db = sqlite3.connect(replica)
        assert db.execute("SELECT value FROM meta WHERE key = 'content_index.off'").fetchone()[0] == \
            "a ClickHouse store: searched there"
        db.close()

        # ClickHouse goes away: the next request is refused retryably, not acknowledged, and kept.
        clickhouse.kill()
        clickhouse.wait()
        body = trace_request(requests[1]).SerializeToString()
        assert _export(channel, TRACE_METHOD, body) == grpc.StatusCode.UNAVAILABLE
        db = sqlite3.connect(replica)
        assert db.execute("SELECT count(*) FROM clickhouse_outbox").fetchone()[0] == 1
        db.close()
        # Back on the same port and data: the exporter's retry is acknowledged, nothing doubled.
        clickhouse, _ = _clickhouse_process(tmp_path / "chdb", port)
        _export_until_acked(channel, TRACE_METHOD, body)
        _export_until_acked(channel, LOGS_METHOD, logs_request(records).SerializeToString())
        reader = reconnected(reader, url)
    finally:
        out = stopped(proc, channel)
    try:
        assert proc.returncode == 0, out
        assert "cannot write to ClickHouse at" in out and "is back after" in out, out
        # One line that says what is wrong and what to do, not the HTTP library's text.
        assert "cannot reach ClickHouse at" in out and "is it running, and is the URL right?" in out, out
        assert "HTTPConnectionPool" not in out and "Traceback" not in out, out
        db = sqlite3.connect(replica)
        try:
            assert db.execute("SELECT count(*) FROM clickhouse_outbox").fetchone()[0] == 0
            assert db.execute("SELECT count(*) FROM spans").fetchone()[0] == 24
            assert_clickhouse_equals_sqlite(db, reader)
            # The SDK's six calls, still within their two minutes of twin rechecks, were kept at the stop
            # (store/clickhouse/twin_calls.py) ...
            kept = db.execute("SELECT span_row FROM clickhouse_rechecks ORDER BY 1").fetchall()
            assert kept == db.execute("SELECT id FROM spans WHERE response_id IS NOT NULL ORDER BY 1").fetchall()
            assert len(kept) == 6
        finally:
            db.close()
        # ... and the next serve on this working store takes them back, to keep them again at its own stop; one
        # killed (SIGKILL: nothing kept) leaves the next one its logged writes to take them back from.
        for stop in ("clean", "killed", "clean"):
            proc, address = _start_serve(tmp_path, url.display())
            if stop == "killed":
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=60)
                continue
            out = stopped(proc, grpc.insecure_channel(address))
            assert proc.returncode == 0, out
            db = sqlite3.connect(replica)
            try:
                assert db.execute("SELECT span_row FROM clickhouse_rechecks ORDER BY 1").fetchall() == kept, stop
            finally:
                db.close()
    finally:
        reader.close()
        clickhouse.kill()
        clickhouse.wait()


def test_forget_reaches_clickhouse_as_deletions_and_negative_deltas(tmp_path: Path, http: HttpClient,
                                                                     engine: ChdbClient) -> None:
    path = tmp_path / "replica.db"
    now = time.time_ns()
    requests, records = agent_traffic(now - 120 * 10**9)
    with writing(path, now) as (normalizer, writer, db):
        writer.outbox = OutboxRecorder()
        shipper = Shipper(db, lambda: http)
        for spans in requests:
            write_through(normalizer, writer, spans, [], now)
        write_through(normalizer, writer, [], records, now)
        assert shipper.ship()
        # Every trace of user-1 (a user's deletion request), through the writer as `forget` does it.
        gone = [t for (t,) in db.execute("SELECT trace_id FROM traces WHERE user_id = 'user-1'")]
        assert len(gone) == 3
        writer.forget(gone)
        assert shipper.ship()
        assert db.execute("SELECT count(*) FROM spans").fetchone()[0] == 12
        assert db.execute("SELECT count(*) FROM users WHERE user_id = 'user-1'").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM logs").fetchone()[0] == 3
        assert_clickhouse_equals_sqlite(db, engine)  # logs FINAL: the forgotten traces' records are gone
        assert engine.query("SELECT count() FROM logs FINAL WHERE trace_id IN {t:Array(FixedString(16))}",
                            {"t": gone}) == [(0,)]


def test_serve_says_at_start_that_its_clickhouse_cannot_be_reached(tmp_path: Path) -> None:
    """Not at the first export request, which may be minutes later: at start, and once."""
    import select

    from tests.test_clickhouse_client import socket_closed_port

    with socket_closed_port() as port:
        proc, _address = _start_serve(tmp_path, f"clickhouse://{USER}@127.0.0.1:{port}/db")
        assert proc.stdout is not None
        seen = proc.early_output  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        try:
            while "is it running" not in seen and time.monotonic() < deadline:
                if select.select([proc.stdout], [], [], 0.5)[0]:
                    seen += proc.stdout.readline()
        finally:
            proc.send_signal(signal.SIGTERM)
            seen += proc.communicate(timeout=60)[0]
    assert f"cannot reach ClickHouse at clickhouse://{USER}@127.0.0.1:{port}/db (connection refused)" in seen, seen
    assert seen.count("cannot write to ClickHouse") == 1, seen
