"""Several `serve` replicas behind a trace-id router (tests/trace_router.py, what the Collector's
`loadbalancing` exporter with `routing_key: traceID` does) store the same numbers as one `serve` given the
same traffic: the premise of issue 17's scale-out. Billing-once and root inheritance need a trace's spans
in one place, and the router puts them there, even when a trace's spans come in different requests,
children before their root, and its log records later still.

Ground truth is a single real `serve` fed the same requests. The replicas' stores are combined the way a
shared store must combine them: spans, logs and trace summaries are a union (each trace is in exactly
one replica); rollups are summed per key (counters and histogram buckets); a conversation's additive
columns are summed and its times taken min/max. What does not add up across replicas is checked to
differ only where a conversation or a user spans replicas, so a shared store has to compute those at
read time (a user's distinct conversations, a conversation's p95).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import signal
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from store import histogram
from store.connection import open_reader
from store.writer import HISTOGRAMS, ROLLUP_COUNTERS
from tests.metrics_factory import add_gauge, add_histogram, metrics_request, serving_requests
from tests.otlp_factory import log_record, logs_request, make_span, trace_request
from tests.test_durability import start_serve
from tests.trace_router import TraceRouter, by_service, by_trace_id

pytestmark = pytest.mark.slow

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
MS = 1_000_000
S = 1000 * MS
NATIVE = ("com.anthropic.sdk.python", "0.75.0")
OPENLLMETRY = ("opentelemetry.instrumentation.anthropic", "0.47.0")
APP = ("app", "1.0")
USERS = ("alice", "bob", "carol", "dave")


def traffic(seed: int, traces: int, now_ns: int, lone_sdk_every: int = 0,
            lone_twin_every: int = 0) -> tuple[list[bytes], list[bytes]]:
    """(trace export bodies, log export bodies). A trace: an HTTP root naming user and tenant, an agent,
    1-3 chat calls in a conversation (some failing), every other call also seen by a second
    instrumentation as a sibling span with the same response id (billed once), a tool call now and
    then, and a log record per call with its finish reason. A trace's spans are spread over several
    requests in shuffled order, so children often arrive before their root. `lone_sdk_every`: in every
    such trace, the SDK's span of each call OpenLLMetry sees too is the root of a trace of its own (OpenLLMetry
    never makes its span current), so the router sends the two spans of one call to either replica.
    `lone_twin_every`: the same with OpenLLMetry's span alone instead (the SDK's, under the agent, is billed)."""
    rng = random.Random(seed)
    pieces: list[tuple[tuple[str, str], Any]] = []
    records = []
    for number in range(1, traces + 1):
        trace = 0x5E0000 + number
        user = USERS[number % 4]
        conversation = f"conv-{user}-{number % 7}"
        at = now_ns - 600 * S + number * 3 * S
        pieces.append((APP, make_span(trace, 1, None, "POST /chat", {
            "user.id": user, "app.llm.tenant.id": f"tenant-{number % 3}", "app.llm.feature": rng.choice(("ask", "chat"))},
            at, at + rng.randint(2000, 4000) * MS, kind=2)))
        pieces.append((APP, make_span(trace, 2, 1, "invoke_agent support", {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"}, at + MS, at + 2900 * MS)))
        for call in range(rng.randint(1, 3)):
            start = at + (call + 1) * 200 * MS
            failed = rng.random() < 0.15
            end = start + rng.randint(200, 1500) * MS
            response_id = f"msg_{number}_{call}"
            attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                     "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.response.model": "claude-sonnet-4-5",
                     "gen_ai.conversation.id": conversation, "gen_ai.response.id": response_id,
                     "gen_ai.usage.input_tokens": rng.randint(100, 4000),
                     "gen_ai.usage.output_tokens": rng.randint(10, 400)}
            if failed:
                attrs["error.type"] = "anthropic.RateLimitError"
                attrs["http.response.status_code"] = 429
            span_id = 10 + 2 * call
            lone = lone_sdk_every and number % lone_sdk_every == 0 and call % 2 == 0
            sdk_trace, sdk_parent = (trace + 0x100000 * (call + 1), None) if lone else (trace, 2)
            pieces.append((NATIVE, make_span(sdk_trace, span_id, sdk_parent, "chat claude-sonnet-4-5", attrs,
                                             start + 2 * MS, end - 2 * MS, status_code=2 if failed else 0)))
            if call % 2 == 0:  # the same call seen by OpenLLMetry too: a sibling, billed once
                twin = {k: v for k, v in attrs.items() if k != "gen_ai.provider.name"} | {"gen_ai.system": "anthropic"}
                lone_twin = lone_twin_every and number % lone_twin_every == 0
                twin_trace, twin_parent = (trace + 0x200000 * (call + 1), None) if lone_twin else (trace, 2)
                pieces.append((OPENLLMETRY, make_span(twin_trace, span_id + 1, twin_parent, "anthropic.chat", twin,
                                                      start, end, status_code=2 if failed else 0)))
            records.append(log_record(sdk_trace, span_id, "gen_ai.choice", time_ns=start + 5 * MS,
                                      body={"finish_reason": "stop" if not failed else "error",
                                            "message": {"content": f"answer {number} {call}"}}))
        if number % 3 == 0:
            pieces.append((APP, make_span(trace, 30, 2, "execute_tool lookup", {
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"}, at + 50 * MS, at + 90 * MS)))
    rng.shuffle(pieces)
    bodies = []
    for i in range(0, len(pieces), 37):
        by_scope: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for scope, span in pieces[i:i + 37]:
            by_scope[scope].append(span)
        for scope, spans in by_scope.items():
            bodies.append(trace_request(spans, service="support-bot", scope=scope).SerializeToString())
    rng.shuffle(records)
    log_bodies = [logs_request(records[i:i + 25], service="support-bot").SerializeToString()
                  for i in range(0, len(records), 25)]
    return bodies, log_bodies


def metric_traffic(now_s: float) -> list[bytes]:
    """A model server's and an app's metrics (tests/metrics_factory.py), and a chat app's: three services, which
    the router's by-service split sends to both replicas."""
    chat = metrics_request("chat-app")
    add_gauge(chat, "app.sessions.active", "", [(now_s - m * 60, {}, float(10 + m)) for m in range(30, -1, -1)])
    add_histogram(chat, "gen_ai.client.operation.duration", "s", now_s - 30, {"gen_ai.request.model": "gpt-4o"},
                  [0.5, 1, 2], [3, 5, 2, 1], 9.5)
    return [request.SerializeToString() for request in (*serving_requests(now_s, minutes=30), chat)]


def send(address: str, bodies: list[bytes], log_bodies: list[bytes], metric_bodies: Sequence[bytes] = ()) -> None:
    """Every body, each retried until acknowledged (an ack means committed)."""
    with grpc.insecure_channel(address) as channel:
        for method, group in ((TRACE_METHOD, bodies), (LOGS_METHOD, log_bodies), (METRICS_METHOD, metric_bodies)):
            export = channel.unary_unary(method)
            for body in group:
                for attempt in range(50):
                    try:
                        export(body, timeout=30)
                        break
                    except grpc.RpcError as exc:
                        if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 49:
                            raise
                        time.sleep(0.1)


def _histogram(blob: bytes | None) -> dict[int, int]:
    counts: dict[int, int] = {}
    histogram.decode_into(blob, counts)
    return counts


def store_tables(paths: list[Path]) -> dict[str, Any]:
    """The stores' contents combined as a shared store must combine them, keyed without local ids."""
    spans: list[tuple] = []
    logs: list[tuple] = []
    traces: list[tuple] = []
    rollups: dict[tuple, list] = {}
    conversations: dict[str, dict[str, Any]] = {}
    users: dict[str, dict[str, Any]] = {}
    user_conversations: dict[str, set[str]] = defaultdict(set)
    dims = "d.service, d.provider, d.model, d.operation, d.feature, d.tenant, d.prompt_id, d.prompt_version, d.variant"
    for path in paths:
        db = open_reader(path)
        try:
            span_columns = [c[1] for c in db.execute("PRAGMA table_info(spans)")
                            if c[1] not in ("id", "resource_id", "scope_id")]
            trace_columns = [c[1] for c in db.execute("PRAGMA table_info(traces)") if c[1] != "updated_ns"]
            spans += db.execute(f"SELECT {', '.join(span_columns)} FROM spans").fetchall()
            logs += db.execute("SELECT trace_id, span_id, time_ns, event_name, finish_reason FROM logs").fetchall()
            traces += db.execute(f"SELECT {', '.join(trace_columns)} FROM traces").fetchall()
            for row in db.execute(
                    f"SELECT r.res, r.bucket, CASE WHEN r.dims_id = 0 THEN 'total' ELSE json_array({dims}) END, "
                    f"{', '.join('r.' + c for c in ROLLUP_COUNTERS)}, {', '.join('r.' + h for h in HISTOGRAMS)} "
                    "FROM rollups r LEFT JOIN dims d ON d.id = r.dims_id"):
                key = tuple(row[:3])
                counters = list(row[3:3 + len(ROLLUP_COUNTERS)])
                hists = [_histogram(b) for b in row[3 + len(ROLLUP_COUNTERS):]]
                if key not in rollups:
                    rollups[key] = [counters, hists]
                    continue
                total = rollups[key]
                total[0] = [a + b for a, b in zip(total[0], counters)]
                for into, more in zip(total[1], hists):
                    for bucket, count in more.items():
                        into[bucket] = into.get(bucket, 0) + count
            for row in db.execute("SELECT conversation_id, user_id, turns, first_ns, last_ns, llm_calls, input_tokens, "
                                  "output_tokens, cost_nusd, unpriced_calls, errors, failed_turns FROM conversations"):
                merged = conversations.setdefault(row[0], {"user_id": row[1], "first_ns": row[3], "last_ns": row[4]})
                merged["first_ns"] = min(merged["first_ns"], row[3])
                merged["last_ns"] = max(merged["last_ns"], row[4])
                for name, value in zip(("turns", "llm_calls", "input_tokens", "output_tokens", "cost_nusd",
                                        "unpriced_calls", "errors", "failed_turns"), row[2:3] + row[5:]):
                    merged[name] = merged.get(name, 0) + value
                if row[1] is not None:
                    user_conversations[row[1]].add(row[0])
            for row in db.execute("SELECT user_id, turns, llm_calls, input_tokens, output_tokens, cost_nusd, "
                                  "unpriced_calls, errors, first_ns, last_ns FROM users"):
                merged = users.setdefault(row[0], {"first_ns": row[8], "last_ns": row[9]})
                merged["first_ns"] = min(merged["first_ns"], row[8])
                merged["last_ns"] = max(merged["last_ns"], row[9])
                for name, value in zip(("turns", "llm_calls", "input_tokens", "output_tokens", "cost_nusd",
                                        "unpriced_calls", "errors"), row[1:8]):
                    merged[name] = merged.get(name, 0) + value
        finally:
            db.close()
    for user, merged in users.items():
        merged["conversations"] = len(user_conversations[user])
    return {
        "spans": sorted(spans), "logs": sorted(logs), "traces": sorted(traces),
        "rollups": {key: (value[0], [sorted(h.items()) for h in value[1]]) for key, value in rollups.items()
                    if any(value[0]) or any(value[1])},
        "conversations": conversations, "users": users,
    }


def stop(proc: Any) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def one_serve(path: Path, bodies: list[bytes], log_bodies: list[bytes], metric_bodies: Sequence[bytes] = ()) -> Path:
    """The ground truth: one SQLite `serve` given the traffic, stopped. Returns its store."""
    proc, address = start_serve(path)
    try:
        send(address, bodies, log_bodies, metric_bodies)
    finally:
        stop(proc)
    return path


def routed(replicas: list[tuple[Any, str]], bodies: list[bytes], log_bodies: list[bytes],
           route: Any = by_trace_id, metric_bodies: Sequence[bytes] = (), settled: Any = None) -> list[int]:
    """The traffic sent through a router to these started replicas, which are then stopped (once `settled()`
    says so, if given). Returns the parts each replica acknowledged."""
    router = TraceRouter([address for _proc, address in replicas], route=route)
    try:
        send(f"127.0.0.1:{router.start()}", bodies, log_bodies, metric_bodies)
        deadline = time.monotonic() + 60
        while settled is not None and not settled() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        router.stop()
        for proc, _address in replicas:
            stop(proc)
    return router.sent


def test_two_replicas_behind_a_trace_id_router_store_what_one_serve_stores(tmp_path: Path) -> None:
    bodies, log_bodies = traffic(seed=17, traces=120, now_ns=time.time_ns())
    one_serve(tmp_path / "single.db", bodies, log_bodies)
    sent = routed([start_serve(tmp_path / f"replica{i}.db") for i in range(2)], bodies, log_bodies)
    assert all(sent), f"both replicas must have been given traces: {sent}"
    one = store_tables([tmp_path / "single.db"])
    two = store_tables([tmp_path / "replica0.db", tmp_path / "replica1.db"])
    assert len(one["spans"]) > 500 and any(row for row in one["rollups"])
    for table in ("spans", "logs", "traces", "rollups", "conversations", "users"):
        assert two[table] == one[table], table


def test_a_trace_split_across_replicas_is_billed_twice_so_the_router_must_keep_traces_whole(tmp_path: Path) -> None:
    """The control: the same traffic routed by span instead of by trace (what a round-robin balancer
    does) bills twin calls in both replicas. The comparison above is able to see that."""
    bodies, log_bodies = traffic(seed=18, traces=30, now_ns=time.time_ns())
    one_serve(tmp_path / "single.db", bodies, log_bodies)

    def by_scope_order(trace_id: bytes, replicas: int) -> int:  # scattered: not a function of the trace alone
        by_scope_order.calls += 1  # type: ignore[attr-defined]
        return by_scope_order.calls % replicas  # type: ignore[attr-defined]

    by_scope_order.calls = 0  # type: ignore[attr-defined]
    routed([start_serve(tmp_path / f"replica{i}.db") for i in range(2)], bodies, log_bodies, route=by_scope_order)
    one = store_tables([tmp_path / "single.db"])
    two = store_tables([tmp_path / "replica0.db", tmp_path / "replica1.db"])
    assert sorted(r[:2] for r in two["spans"]) == sorted(r[:2] for r in one["spans"])  # every span arrived
    total_cost = {key[2]: value[0][ROLLUP_COUNTERS.index("cost_nusd")]
                  for key, value in one["rollups"].items() if key[2] == "total" and key[0] == 60}
    split_cost = {key[2]: value[0][ROLLUP_COUNTERS.index("cost_nusd")]
                  for key, value in two["rollups"].items() if key[2] == "total" and key[0] == 60}
    assert sum(split_cost.values()) > sum(total_cost.values()) > 0


def test_the_router_keeps_a_trace_whole_and_splits_requests() -> None:
    bodies, log_bodies = traffic(seed=3, traces=40, now_ns=time.time_ns())
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tests.trace_router import split_logs, split_traces

    owner: dict[bytes, int] = {}
    for body in bodies:
        for replica, part in split_traces(body, 3, by_trace_id).items():
            for rs in ExportTraceServiceRequest.FromString(part).resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        assert owner.setdefault(span.trace_id, replica) == replica
    assert set(owner.values()) == {0, 1, 2}
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    for body in log_bodies:
        for replica, part in split_logs(body, 3, by_trace_id).items():
            for rl in ExportLogsServiceRequest.FromString(part).resource_logs:
                for sl in rl.scope_logs:
                    for record in sl.log_records:
                        assert owner[record.trace_id] == replica


async def _tui_figures(path: Path, url: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the TUI's readers give on the SQLite store and on the ClickHouse URL: the Overview, the Breakdown
    by model, feature and tenant, the sessions and the trace list (as a set: ties may come in either order)."""
    from llmobs_tui.clickhouse_reader import ClickHouseStoreReader
    from llmobs_tui.filtering import parse
    from llmobs_tui.reader import StoreReader

    now_s = time.time()
    out = []
    for reader in (StoreReader(path), ClickHouseStoreReader(url)):
        await reader.open()
        try:
            overview = await reader.overview(3600, now_s)
            out.append({
                "overview": {"calls": overview["calls"], "cost": overview["cost_nusd"],
                             "errors": [overview[k] for k in ("errors_api", "errors_validation", "errors_guardrail")],
                             "latency": overview.percentiles("latency")},
                "breakdown": [await reader.breakdown(3600, now_s, by) for by in ("model", "feature", "tenant")],
                "sessions": await reader.sessions(3600, now_s, parse(""), "conversation", "last", True),
                "traces": set(await reader.traces(3600, now_s, parse(""), "cost", True, 1000)),
                # The series ids are each store's own (a replica's, or the series' digest on ClickHouse).
                "metrics": [dataclasses.replace(s, series_id=0) for s in (await reader.metrics(3600, now_s)).series],
                "saturation": await reader.serving_saturation(now_s),
            })
        finally:
            await reader.close()
    return out[0], out[1]


def test_two_replicas_writing_one_clickhouse_store_hold_what_one_serve_stores(tmp_path: Path) -> None:
    """Issue 17's done-when: `serve --store clickhouse://…` in two replicas behind the router, and the
    ClickHouse store they share, read as the readers read it (FINAL, rollups folded, conversations and
    users computed from the summaries), holds what a single SQLite `serve` stores for the same traffic."""
    from store.clickhouse import sessions as clickhouse_sessions
    from store.clickhouse.client import ClickHouseError, HttpClient
    from store.clickhouse.url import PASSWORD_ENV, parse_store_url
    from tests.test_clickhouse_sink import (
        PASSWORD,
        USER,
        _clickhouse_process,
        _start_serve,
        assert_clickhouse_equals_sqlite,
    )

    # Every 4th trace's SDK spans in traces of their own: twins of one call that the router sends to either
    # replica, in the same request, billed once only after the replicas look their calls up again.
    bodies, log_bodies = traffic(seed=19, traces=80, now_ns=time.time_ns(), lone_sdk_every=4)
    metric_bodies = metric_traffic(time.time())
    one_serve(tmp_path / "single.db", bodies, log_bodies, metric_bodies)
    db = open_reader(tmp_path / "single.db")
    try:
        billed_once = db.execute("SELECT sum(billed) FROM spans").fetchone()[0]
        across = db.execute("SELECT count(*) FROM spans s WHERE duplicate_of IS NOT NULL AND NOT EXISTS "
                            "(SELECT 1 FROM spans k WHERE k.trace_id = s.trace_id AND k.span_id = s.duplicate_of)"
                            ).fetchone()[0]
        traces = db.execute("SELECT count(*) FROM traces").fetchone()[0]
        assert across >= 10 and traces == 80 + across  # twins in two traces, billed once by one serve
    finally:
        db.close()
    clickhouse, port = _clickhouse_process(tmp_path / "chdb")
    url = parse_store_url(f"clickhouse://{USER}@127.0.0.1:{port}/shared", {PASSWORD_ENV: PASSWORD})
    try:
        reader = HttpClient(url)
        reader.use_database()

        def billed_as_one_serve() -> bool:
            try:
                return reader.query("SELECT sum(billed) FROM spans FINAL")[0][0] == billed_once
            except ClickHouseError:  # the replicas have not created the schema yet
                return False

        sent = routed([_start_serve(tmp_path / f"replica{i}", url.display()) for i in range(2)], bodies, log_bodies,
                      metric_bodies=metric_bodies, settled=billed_as_one_serve)
        assert all(sent), sent
        db = open_reader(tmp_path / "single.db")
        try:
            assert db.execute("SELECT count(*) FROM spans").fetchone()[0] > 300
            assert_clickhouse_equals_sqlite(db, reader, same_clock=False)
            columns = "conversation_id, user_id, turns, first_ns, last_ns, llm_calls, input_tokens, output_tokens, " \
                      "cost_nusd, unpriced_calls, errors, failed_turns, p95_ns"
            want = db.execute(f"SELECT {columns} FROM conversations ORDER BY conversation_id").fetchall()
            assert len(want) == 28 and len({row[-1] for row in want}) > 1  # p95s that differ: a real check
            assert clickhouse_sessions.conversation_rows(reader) == want
            assert clickhouse_sessions.user_rows(reader) == db.execute("SELECT * FROM users ORDER BY user_id").fetchall()
        finally:
            db.close()
            reader.close()
        # And the TUI on that URL shows what it shows on the single store (tests/test_clickhouse_tui.py checks
        # every read on a copy; this is the replicas' own writing).
        single, shared = asyncio.run(_tui_figures(tmp_path / "single.db", url))
        assert single == shared and single["overview"]["calls"] > 50 and len(single["traces"]) == traces
        assert all(single["breakdown"]) and single["sessions"]
        # The metrics the router split by service, shipped by both replicas: each service's on one of them.
        assert {s.service for s in single["metrics"]} == {"vllm", "support-bot", "chat-app"}
        assert {by_service(s.service, 2) for s in single["metrics"]} == {0, 1}
        assert single["saturation"] is not None and single["saturation"].waiting is not None
    finally:
        clickhouse.kill()
        clickhouse.wait()
