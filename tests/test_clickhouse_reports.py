"""The read commands on a ClickHouse store print what they print on SQLite (issue 17, slice 3).

One store is written by the real Normalizer and SpanWriter (agent traces from the demo's traffic model:
errors of several classes, cached tokens, tool calls, users and conversations, several models, services
and features; plus billing-once twins, a nested tool chain and a late root), copied into ClickHouse by the
sink's copy_store (chdb behind tests/chdb_http_server.py, which clickhouse-connect talks to unchanged), and
every command is run through the real CLI entry point twice, `--db` then `--store`, with the clock pinned:
the outputs must be equal (`check`: the verdict, every finding and the SLO table; only the example trace
a finding links to may be another of equals).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmobs_tui.cli import investigate, main
from llmobs_tui.cli import reports as report_commands
from llmobs_tui.filtering import parse
from llmobs_tui.scenarios import Traffic, TrafficState, to_otlp_logs_request, to_otlp_request
from store.clickhouse import rows as ch_rows
from store.clickhouse import schema
from store.clickhouse.client import ChdbClient, HttpClient
from store.clickhouse.sink import copy_store
from store.clickhouse.url import PASSWORD_ENV, parse_store_url
from tests.chdb_http_server import ChdbHttpServer, engine_path
from tests.otlp_factory import make_span, trace_request
from tests.store_writing import writing
from tests.test_content_search import index_all

USER, PASSWORD = "reader", "s3cret-pass"
S = 10**9
MS = 10**6
# Recent (the ClickHouse tables drop rows past their 7-day TTL) and fixed for the whole module; minute
# aligned a little in the past so that hour rollups and ragged minute edges both take part.
NOW_S = int(time.time()) // 60 * 60 - 60 + 17
TRAFFIC_TRACES = 240
TRAFFIC_SPACING_S = 45  # 3 h of traffic: whole hour rollups and minute rollups at both edges of 2 h windows
TWIN_TRACE, TOOL_TRACE, ORPHAN_TRACE, LATE_TRACE = 0xB111, 0x7001, 0x0E0E, 0x1A7E
RUNNING_TRACE, LOOP_TRACE = 0x4A11, 0x4A12


def _extra_spans(start_ns: int) -> list[tuple[Any, str, tuple[str, str]]]:
    """(span, service, scope): one call seen by the anthropic SDK and by OpenLLMetry (billed once), and a
    framework tool span around an MCP client span around an MCP server span of the same tool (one call)."""
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.model": "claude-sonnet-4-5", "gen_ai.response.id": "msg_twin",
            "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100, "user.id": "u-twin",
            "gen_ai.conversation.id": "conv-twin"}
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"}
    t = start_ns
    return [
        (make_span(TWIN_TRACE, 1, None, "POST /ask", {"app.llm.feature": "ask"}, start_ns=t, end_ns=t + 2000 * MS,
                   kind=2), "twin-svc", ("app", "1.0")),
        (make_span(TWIN_TRACE, 2, 1, "chat claude-sonnet-4-5", {**chat, "gen_ai.provider.name": "anthropic"},
                   start_ns=t + 12 * MS, end_ns=t + 880 * MS), "twin-svc", ("com.anthropic.sdk.python", "0.75.0")),
        (make_span(TWIN_TRACE, 3, 1, "anthropic.chat", {**chat, "gen_ai.system": "anthropic"},
                   start_ns=t + 10 * MS, end_ns=t + 900 * MS),
         "twin-svc", ("opentelemetry.instrumentation.anthropic", "0.47.0")),
        # A trace whose root never arrived, from a process without a service name: a NULL service, which
        # SQLite sorts first ascending and last descending.
        (make_span(ORPHAN_TRACE, 5, 4, "orphan step", {}, start_ns=t + 3 * S, end_ns=t + 4 * S), "",
         ("app", "1.0")),
        # A call whose trace's root (with the feature) arrives after it: counted without a feature first,
        # then moved to the feature by signed deltas: its first group nets to nothing.
        (make_span(LATE_TRACE, 2, 1, "chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                                     "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 70,
                                                     "gen_ai.usage.output_tokens": 7},
                   start_ns=t + 100 * MS, end_ns=t + 700 * MS), "late-svc", ("app", "1.0")),
        (make_span(LATE_TRACE, 1, None, "POST /late", {"app.llm.feature": "late-feature"}, start_ns=t,
                   end_ns=t + 800 * MS, kind=2), "late-svc", ("app", "1.0")),
        (make_span(TOOL_TRACE, 1, None, "agent run", {"app.llm.feature": "agent"}, start_ns=t + S,
                   end_ns=t + 5 * S, kind=2), "tool-svc", ("app", "1.0")),
        (make_span(TOOL_TRACE, 2, 1, "execute_tool lookup", tool, start_ns=t + 2 * S, end_ns=t + 3 * S),
         "tool-svc", ("app", "1.0")),
        (make_span(TOOL_TRACE, 3, 2, "tools/call lookup", {**tool, "mcp.method.name": "tools/call"},
                   start_ns=t + 2 * S + 10 * MS, end_ns=t + 3 * S - 10 * MS), "tool-svc", ("mcp.client", "1.0")),
        (make_span(TOOL_TRACE, 4, 3, "tools/call lookup", {**tool, "mcp.method.name": "tools/call"},
                   start_ns=t + 2 * S + 20 * MS, end_ns=t + 3 * S - 20 * MS, status_code=2, status_message="boom"),
         "tool-svc", ("mcp.server", "1.0")),
    ]


def _agent_spans(trace: int, start_s: int, steps: int, root: bool) -> list[Any]:
    """An agent turn calling the same tool with the same arguments at every step (a loop); without its
    root it is still running (the root span is exported when the agent ends)."""
    spans = []
    for step in range(steps):
        at = (start_s + 2 * step) * S
        spans.append(make_span(trace, 2 + 2 * step, 1, "chat gpt-4o", {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 900, "gen_ai.usage.output_tokens": 90, "gen_ai.conversation.id": "conv-loop"},
            start_ns=at, end_ns=at + 800 * MS))
        spans.append(make_span(trace, 3 + 2 * step, 1, "execute_tool search", {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
            "gen_ai.tool.call.arguments": '{"q": "refund policy", "k": 5}', "gen_ai.conversation.id": "conv-loop"},
            start_ns=at + S, end_ns=at + S + 100 * MS))
    if root:
        spans.append(make_span(trace, 1, None, "invoke_agent support", {"gen_ai.operation.name": "invoke_agent",
                                                                         "gen_ai.conversation.id": "conv-loop"},
                               start_ns=start_s * S, end_ns=(start_s + 2 * steps + 1) * S, kind=2))
    return spans


def _write_store(path: Path) -> None:
    now_ns = NOW_S * S
    with writing(path, now_ns) as (normalizer, writer, _db):
        traffic = Traffic(11, TrafficState())
        first_s = NOW_S - TRAFFIC_TRACES * TRAFFIC_SPACING_S
        batch = [(traffic.next_trace(), i + 1, (first_s + i * TRAFFIC_SPACING_S) * S) for i in range(TRAFFIC_TRACES)]
        for i in range(0, len(batch), 40):
            part = batch[i:i + 40]
            decoded, resources, scopes, rejected = normalizer.decode_traces(to_otlp_request(part), now_ns)
            assert rejected.count == 0, rejected.message()
            writer.write(decoded, [], resources, scopes)
            logs, resources, scopes, _ = normalizer.decode_logs(to_otlp_logs_request(part), now_ns)
            if logs:
                writer.write([], logs, resources, scopes)
        # Agents looping on one tool call in the last minutes: one still running (no root), one finished.
        agents = [*_agent_spans(RUNNING_TRACE, NOW_S - 300, 4, root=False),
                  *_agent_spans(LOOP_TRACE, NOW_S - 200, 3, root=True)]
        decoded, resources, scopes, rejected = normalizer.decode_traces(trace_request(agents, "agent-svc"), now_ns)
        assert rejected.count == 0, rejected.message()
        writer.write(decoded, [], resources, scopes)
        # The twins one per request, in two orders of arrival: the second makes the writer correct the first.
        for span, service, scope in _extra_spans((NOW_S - 1800 + 7) * S):  # no start shared with the traffic
            decoded, resources, scopes, rejected = normalizer.decode_traces(trace_request([span], service, scope),
                                                                            now_ns)
            assert rejected.count == 0, rejected.message()
            writer.write(decoded, [], resources, scopes)


def _insert(client: HttpClient, table: str, rows: list[list[Any]], columns: tuple[str, ...]) -> None:
    # Each insert its own token: the tables deduplicate equal blocks (schema m002), and these are all new.
    for i in range(0, len(rows), 2000):
        client.insert(table, rows[i:i + 2000], list(columns), settings={"insert_deduplication_token": uuid.uuid4().hex})


@pytest.fixture(scope="module")
def server() -> Iterator[ChdbHttpServer]:
    server = ChdbHttpServer(engine_path(), {USER: PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stores(server: ChdbHttpServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """(the SQLite store, the --store URL of its copy in ClickHouse)."""
    db_path = tmp_path_factory.mktemp("ch_reports") / "truth.db"
    _write_store(db_path)
    database = f"reports_{uuid.uuid4().hex[:12]}"
    url = f"clickhouse://{USER}@127.0.0.1:{server.port}/{database}"
    client = HttpClient(parse_store_url(url, {PASSWORD_ENV: PASSWORD}))
    schema.migrate(client)
    db = sqlite3.connect(db_path)
    try:
        copied = copy_store(db, client, version=1)  # version 1: the retried export below re-sends the same rows
    finally:
        db.close()
    client.close()
    assert copied["spans"] > 1000 and copied["rollups"] > 100 and copied["trace_summaries"] > 200, copied
    yield db_path, url
    admin = ChdbClient(engine_path(), "default")
    admin.command("DROP DATABASE IF EXISTS {db:Identifier} SYNC", {"db": database})
    admin.close()


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(investigate, "clock", lambda: float(NOW_S))
    monkeypatch.setattr(report_commands, "clock", lambda: float(NOW_S))
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.delenv("LLMOBS_DB", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def both(capsys: pytest.CaptureFixture[str], stores: tuple[Path, str], *argv: str) -> tuple[str, str]:
    """The command's stdout on SQLite and on ClickHouse; both must succeed."""
    db_path, url = stores
    code, sqlite_out, err = run(capsys, *argv, "--db", str(db_path))
    assert code == 0, err
    code, clickhouse_out, err = run(capsys, *argv, "--store", url)
    assert code == 0, err
    return sqlite_out, clickhouse_out


# --- report -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("by,window", [("model", "24h"), ("service,feature", "24h"), ("feature", "2h"),
                                       ("model", "2h"), ("provider", "45m"), ("prompt", "24h"), ("tool", "24h"),
                                       ("tool,service", "2h"), ("user", "24h")])
def test_report_json_is_identical_on_both_backends(stores, frozen, capsys, by: str, window: str) -> None:
    sqlite_out, clickhouse_out = both(capsys, stores, "report", "--by", by, "--window", window, "--format", "json")
    truth, got = json.loads(sqlite_out), json.loads(clickhouse_out)
    assert got == truth
    # Not two empty reports agreeing: the traffic reaches every breakdown.
    assert len(truth["groups"]) >= 2
    assert sum(g["calls"] for g in truth["groups"]) > 0


def test_report_covers_the_traffic_it_was_built_for(stores, frozen, capsys) -> None:
    """The fixture holds what the comparisons are about: error classes, cache reads, a twin billed once."""
    _, out = both(capsys, stores, "report", "--by", "model", "--window", "24h", "--format", "json")
    groups = {g["key"]["model"]: g for g in json.loads(out)["groups"]}
    assert len(groups) >= 2
    assert groups["claude-sonnet-4-5"]["calls"] >= 1
    errors = {k for g in groups.values() for k, v in g["errors"]["api_by_class"].items() if v}
    assert len(errors) >= 2, errors
    assert any(g["tokens"]["cache_read"] for g in groups.values())
    # The call counted without a feature and then moved to its root's: that group netted to nothing.
    _, out = both(capsys, stores, "report", "--by", "service,feature", "--window", "24h", "--format", "json")
    late = {g["key"]["feature"]: g["calls"] for g in json.loads(out)["groups"] if g["key"]["service"] == "late-svc"}
    assert late == {"late-feature": 1}
    db = sqlite3.connect(stores[0])
    try:
        netted = db.execute("SELECT count(*), sum(abs(r.calls)) FROM rollups r JOIN dims d ON d.id = r.dims_id "
                            "WHERE d.service = 'late-svc' AND d.feature = ''").fetchone()
    finally:
        db.close()
    assert netted[0] > 0 and netted[1] == 0, netted  # rows of the feature-less group, netted to zero calls
    _, out = both(capsys, stores, "report", "--by", "tool", "--window", "24h", "--format", "json")
    lookup = next(g for g in json.loads(out)["groups"] if g["key"]["tool"] == "lookup")
    assert (lookup["calls"], lookup["errors"]) == (1, 1)  # three nested spans, one call, failed inside


def test_report_text_is_identical_on_both_backends(stores, frozen, capsys) -> None:
    sqlite_out, clickhouse_out = both(capsys, stores, "report", "--by", "service,feature", "--window", "24h")
    assert clickhouse_out == sqlite_out and "|" in sqlite_out


# --- traces, show, export -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sort,order", [("start", ()), ("cost", ()), ("duration", ("--asc",)), ("errors", ()),
                                        ("root", ("--asc",)), ("service", ()), ("service", ("--asc",))])
def test_traces_are_identical_on_both_backends(stores, frozen, capsys, sort: str, order: tuple[str, ...]) -> None:
    sqlite_out, clickhouse_out = both(capsys, stores, "traces", "--window", "24h", "--sort", sort, *order,
                                      "--limit", "400", "--format", "json")
    truth = json.loads(sqlite_out)
    assert json.loads(clickhouse_out) == truth
    assert len(truth["traces"]) > 200
    assert any(t["service"] is None for t in truth["traces"])
    sqlite_out, clickhouse_out = both(capsys, stores, "traces", "--window", "24h", "--sort", sort, *order,
                                      "--limit", "7")
    assert clickhouse_out == sqlite_out and sqlite_out.count("\n") == 8  # the table: header and 7 rows


def _trace_ids(stores: tuple[Path, str]) -> list[str]:
    db = sqlite3.connect(stores[0])
    try:
        return [row[0].hex() for row in db.execute("SELECT trace_id FROM traces ORDER BY spans DESC, trace_id")]
    finally:
        db.close()


def test_show_and_export_are_identical_on_both_backends(stores, frozen, capsys) -> None:
    ids = _trace_ids(stores)
    twin = f"{TWIN_TRACE:032x}"
    for trace_id in [*ids[:3], twin, f"{TOOL_TRACE:032x}", ids[-1]]:
        for fmt in ("json", "tree"):
            sqlite_out, clickhouse_out = both(capsys, stores, "show", trace_id, "--format", fmt)
            assert clickhouse_out == sqlite_out
        sqlite_out, clickhouse_out = both(capsys, stores, "export", trace_id)
        assert json.loads(clickhouse_out) == json.loads(sqlite_out)
        assert json.loads(sqlite_out)["resourceSpans"]
    # The twin shows as billed once on both.
    _, out = both(capsys, stores, "show", twin, "--format", "json")
    shown = json.loads(out)
    assert shown["llm_calls"] == 1


def test_show_by_prefix_and_its_errors_match(stores, frozen, capsys) -> None:
    url = stores[1]
    ids = _trace_ids(stores)
    prefix = ids[0][:12]
    sqlite_out, clickhouse_out = both(capsys, stores, "show", prefix, "--format", "json")
    assert clickhouse_out == sqlite_out
    code, _, err = run(capsys, "show", "f" * 32, "--store", url)
    assert code == 1 and f"no trace {'f' * 32} in clickhouse://{USER}@127.0.0.1" in err
    code, _, err = run(capsys, "export", "e" * 32, "--store", url)
    assert code == 1 and "no trace eeee" in err and "clickhouse://" in err


def test_a_retried_export_and_a_stale_summary_count_once(stores, frozen, capsys) -> None:
    """Spans shipped twice (a retried batch) and an older version of a trace summary, not merged: FINAL
    folds them, so every command reads each span and trace once."""
    db_path, url = stores
    tool = f"{TOOL_TRACE:032x}"
    commands = [("show", tool, "--format", "json"), ("export", tool),
                ("report", "--by", "tool", "--window", "24h", "--format", "json"),
                ("report", "--by", "user", "--window", "24h", "--format", "json"),
                ("traces", "--window", "24h", "--sort", "cost", "--limit", "400", "--format", "json")]
    before = [both(capsys, stores, *argv)[0] for argv in commands]
    client = HttpClient(parse_store_url(url, {PASSWORD_ENV: PASSWORD}))
    db = sqlite3.connect(db_path)
    try:
        client.use_database()
        ids = [row[0] for row in db.execute("SELECT id FROM spans WHERE trace_id IN (?, ?)",
                                            (TOOL_TRACE.to_bytes(16, "big"), TWIN_TRACE.to_bytes(16, "big")))]
        _insert(client, "spans", ch_rows.spans_by_id(db, ids, 1), ch_rows.SPAN_INSERT_COLUMNS)
        stale = ch_rows.trace_rows(db, [TWIN_TRACE.to_bytes(16, "big")], version=1)
        stale[0][ch_rows.TRACE_COLUMNS.index("cost_nusd")] += 10**12
        _insert(client, "trace_summaries", stale, ch_rows.TRACE_INSERT_COLUMNS)
    finally:
        db.close()
        client.close()
    for argv, truth in zip(commands, before):
        code, out, err = run(capsys, *argv, "--store", url)
        assert code == 0, err
        assert out == truth, argv


# --- signed deltas, not merged ------------------------------------------------------------------------------------


def test_signed_delta_rows_not_yet_merged_fold_into_the_same_report(stores, frozen, capsys, server) -> None:
    """A correction as the writer ships it: −old contribution, +new, as separate rows of the same key. Read
    before any merge (the parts are separate: nothing merges in between), the report is as if applied."""
    url = stores[1]
    _, before = both(capsys, stores, "report", "--by", "model", "--window", "24h", "--format", "json")
    client = HttpClient(parse_store_url(url, {PASSWORD_ENV: PASSWORD}))
    try:
        client.use_database()
        key = client.query("SELECT res, bucket, service, provider, model, operation, feature, tenant, prompt_id, "
                           "prompt_version, variant FROM rollups WHERE res = 3600 AND model != '' ORDER BY bucket, "
                           "model LIMIT 1")[0]
        calls_at = ch_rows.ROLLUP_INSERT_COLUMNS.index("calls") - 2 - len(key[2:])
        assert calls_at == 0
        minus = ch_rows.rollup_row(key[0], key[1], key[2:], {0: -1}, [{}, {}, {}, {}, {}, {}, {}])
        plus = ch_rows.rollup_row(key[0], key[1], key[2:], {0: 1}, [{}, {}, {}, {}, {}, {}, {}])
        _insert(client, "rollups", [minus], ch_rows.ROLLUP_INSERT_COLUMNS)
        _insert(client, "rollups", [plus], ch_rows.ROLLUP_INSERT_COLUMNS)
        parts = client.query("SELECT count() FROM system.parts WHERE database = {db:String} AND table = 'rollups' "
                             "AND active", {"db": client.database})[0][0]
        assert parts >= 3  # the copy, the −, the +: not merged into one
        code, after, err = run(capsys, "report", "--by", "model", "--window", "24h", "--format", "json",
                               "--store", url)
        assert code == 0, err
        assert json.loads(after) == json.loads(before)
        # Only the − row: the report moves by exactly one call (the fold reads it).
        _insert(client, "rollups", [minus], ch_rows.ROLLUP_INSERT_COLUMNS)
        code, after, err = run(capsys, "report", "--by", "model", "--window", "24h", "--format", "json",
                               "--store", url)
        moved = {g["key"]["model"]: g["calls"] for g in json.loads(after)["groups"]}
        was = {g["key"]["model"]: g["calls"] for g in json.loads(before)["groups"]}
        assert moved[key[4]] == was[key[4]] - 1
        assert {m: c for m, c in moved.items() if m != key[4]} == {m: c for m, c in was.items() if m != key[4]}
        _insert(client, "rollups", [plus], ch_rows.ROLLUP_INSERT_COLUMNS)
    finally:
        client.close()


# --- what cannot be read ------------------------------------------------------------------------------------------


def test_an_unreachable_clickhouse_is_one_line(frozen, capsys) -> None:
    code, out, err = run(capsys, "report", "--store", "clickhouse://default@127.0.0.1:1/llmobs")
    assert code == 1 and out == ""
    assert err.startswith("llmobs-tui: cannot reach ClickHouse at clickhouse://default@127.0.0.1:1/llmobs")
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_wrong_password_is_one_line(stores, frozen, capsys, monkeypatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-it")
    for argv in (("report",), ("traces",), ("show", "ab"), ("export", "a" * 32)):
        code, out, err = run(capsys, *argv, "--store", stores[1])
        assert code == 1 and out == "", (argv, out)
        assert f"refused user {USER}: wrong user or password" in err and err.count("\n") == 1, err
    code, out, err = run(capsys, "check", "--store", stores[1])
    assert code == 3 and out == "" and f"refused user {USER}" in err and err.count("\n") == 1, err


def test_a_database_not_migrated_says_so(server, frozen, capsys) -> None:
    url = f"clickhouse://{USER}@127.0.0.1:{server.port}/never_migrated_{uuid.uuid4().hex[:8]}"
    code, out, err = run(capsys, "report", "--by", "user", "--store", url)
    assert code == 1 and out == ""
    assert "has no llmobs-tui schema yet" in err and err.count("\n") == 1, err
    code, out, err = run(capsys, "check", "--store", url)
    assert code == 3 and out == "" and "has no llmobs-tui schema yet" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("text", ["model=gpt-4o", "status=error", "!status=error", "cost>0.001 tokens>=500",
                                  "feature=~^ch duration<3s", "tenant!=acme", "model!~mini", "tool=search"])
def test_traces_filtered_are_identical_on_both_backends(stores, frozen, capsys, text: str) -> None:
    sqlite_out, clickhouse_out = both(capsys, stores, "traces", "--window", "24h", "--filter", text, "--limit", "1000",
                                      "--format", "json")
    truth, got = json.loads(sqlite_out), json.loads(clickhouse_out)
    # Newest first on both; among traces that started in the same nanosecond SQLite's order is its query
    # plan's (a filter changes it), so the rows are compared as a set and the order by start alone.
    starts = [t["start_ns"] for t in got["traces"]]
    assert starts == sorted(starts, reverse=True)
    by_id = {"traces": sorted(truth["traces"], key=lambda t: t["trace_id"])}
    assert {**got, **{"traces": sorted(got["traces"], key=lambda t: t["trace_id"])}} == {**truth, **by_id}
    everything = json.loads(both(capsys, stores, "traces", "--window", "24h", "--limit", "1000", "--format",
                                 "json")[0])
    assert 0 < len(truth["traces"]) < len(everything["traces"])  # a filter that selects, not all or nothing


@pytest.mark.parametrize("search", ["text:polic", "model=gpt-4o text:'are a'", "text!=policy", "!text:polic"])
def test_traces_with_a_text_search_list_the_same_on_both_backends(stores, frozen, capsys, search: str) -> None:
    """`traces --filter text:…` on ClickHouse: the same traces, each with a match and its snippet where the
    search is positive (the span it names may be another matching span of the trace: ClickHouse takes the
    first by start, SQLite the first stored), and nothing left to index."""
    db = sqlite3.connect(stores[0], isolation_level=None)
    try:
        index_all(db)
    finally:
        db.close()
    sqlite_out, clickhouse_out = both(capsys, stores, "traces", "--window", "24h", "--filter", search, "--limit",
                                      "1000", "--format", "json")
    truth, got = json.loads(sqlite_out), json.loads(clickhouse_out)
    assert 0 < len(truth["traces"]) < 1000 and got["text_index_lag"] == truth["text_index_lag"]
    positive = parse(search).text_search is not None
    for t in (*truth["traces"], *got["traces"]):
        match = t.pop("match")
        assert (match is not None and match["matched"]) if positive else match is None, (search, t, match)
    assert sorted(got["traces"], key=lambda t: t["trace_id"]) == sorted(truth["traces"], key=lambda t: t["trace_id"])
    sqlite_out, clickhouse_out = both(capsys, stores, "traces", "--window", "24h", "--filter", search, "--limit", "5")
    assert clickhouse_out.count("\n") == sqlite_out.count("\n") > 2


# Rules tight enough that this traffic fires several (budgets, SLO burn, error spikes, tokens per call,
# running agents over a step ceiling) and leaves others quiet.
STRICT = """
[[slo]]
name = "availability"
kind = "availability"
objective = "99.9%"

[[slo]]
name = "support latency"
kind = "latency"
threshold = "2s"
objective = "99%"
feature = "support"

[[slo]]
name = "structured output"
kind = "validity"
objective = "99.5%"

[[slo]]
name = "answer quality"
kind = "quality"
threshold = 0.85
objective = "90%"

[[slo]]
name = "support relevance"
kind = "quality"
threshold = 0.7
objective = "99%"
evaluation = "answer_relevance"
feature = "support"

[budgets.daily_cost]
"*" = 0.5

[budgets.tokens_per_call]
support = 2000

[alerts]
min_calls = 3

[alerts.error_spike]
rate_limit = "1%"
provider = "1%"

[alerts.runaway]
max_steps = 3
repeats = 2
"""


@pytest.mark.parametrize("rules", ["demo", "strict"])
def test_check_verdict_and_slo_table_are_identical_on_both_backends(stores, frozen, capsys, tmp_path,
                                                                    rules: str) -> None:
    if rules == "demo":
        config = Path(investigate.__file__).parent.parent / "data" / "demo.toml"
    else:
        config = tmp_path / "llmobs.toml"
        config.write_text(STRICT, encoding="utf-8")
    db_path, url = stores
    argv = ("check", "--config", str(config), "--format", "json")
    sqlite_code, sqlite_out, err = run(capsys, *argv, "--db", str(db_path))
    assert sqlite_code in (0, 1, 2), err
    clickhouse_code, clickhouse_out, err = run(capsys, *argv, "--store", url)
    assert clickhouse_code == sqlite_code, err
    truth, got = json.loads(sqlite_out), json.loads(clickhouse_out)
    # The example trace is the first of equals in each store's own order: it need not be the same one.
    for document in (truth, got):
        for alert in document["alerts"]:
            assert alert.pop("example_trace_id") or alert["rule"] in ("prompt_regression",), alert
    assert got == truth
    if rules == "strict":
        rules_fired = {a["rule"] for a in truth["alerts"]}
        assert truth["status"] == "page" and {"slo_burn", "daily_cost", "error_spike", "token_budget",
                                              "runaway"} <= rules_fired, truth["alerts"]
        quality = {row["name"]: row["events"] for row in truth["slos"] if row["kind"] == "quality"}
        assert all(quality.values()) and len(quality) == 2, quality  # evaluation scores were counted
        runaway = {a["key"] for a in truth["alerts"] if a["rule"] == "runaway"}
        assert any(f"{RUNNING_TRACE:032x}" in key for key in runaway), runaway  # over its step ceiling
        assert len(runaway) >= 2, runaway  # and looping
    for by in ("model", "user"):
        sqlite_out, clickhouse_out = both(capsys, stores, "report", "--by", by, "--window", "24h", "--format", "json",
                                          "--config", str(config))
        assert json.loads(clickhouse_out) == json.loads(sqlite_out)
        assert json.loads(sqlite_out)["slos"]


def test_check_on_an_unreachable_clickhouse_cannot_evaluate(frozen, capsys) -> None:
    code, out, err = run(capsys, "check", "--store", "clickhouse://default@127.0.0.1:1/llmobs")
    assert code == 3 and out == ""
    assert err.startswith("llmobs-tui: cannot reach ClickHouse at") and err.count("\n") == 1, err


def test_several_windows_read_in_one_query_equal_one_query_each(stores) -> None:
    """The alert engine's batched read of an SLO's burn windows (reports.rollup_reads, one read of several
    windows) gives each window what grouped_rollups gives it alone: nested, overlapping, edge-aligned and
    empty windows, filtered or not, with histograms."""
    from store.clickhouse.reports import RollupRead, grouped_rollups, rollup_reads

    def windowed_totals(client: Any, windows: list[tuple[int, int]], hists: tuple[str, ...],
                        where: dict[str, str]) -> list[Any]:
        return rollup_reads(client, [RollupRead(tuple(windows), (), tuple(where.items()), hists)])[0]

    _db_path, url = stores
    client = HttpClient(parse_store_url(url, {PASSWORD_ENV: PASSWORD}))
    client.use_database()
    try:
        end = NOW_S
        windows = [(end - w, end) for w in (300, 1800, 3600, 6 * 3600, 86400, 3 * 86400)]
        windows += [(end - 7200 - 37, end - 3600 + 11), (end + 60, end + 120)]  # ragged edges; nothing in it
        for where in ({}, {"feature": "support"}, {"feature": "no-such-feature"}):
            for hists in ((), ("latency", "ttft"), ("cost",)):
                batched = windowed_totals(client, windows, hists, where)
                alone = [grouped_rollups(client, start, stop, [], hists, where=where) for start, stop in windows]
                assert [[(g.counters, g.latency, g.ttft, g.cost) for g in groups] for groups in batched] == \
                    [[(g.counters, g.latency, g.ttft, g.cost) for g in groups] for groups in alone], (where, hists)
        assert any(groups for groups in batched) is False  # the last where: no such feature
        assert windowed_totals(client, windows, (), {})[2][0].counters[0] > 0  # the last hour has calls
    finally:
        client.close()


def test_reads_batched_in_one_query_equal_sqlite_window_by_window(stores) -> None:
    """An alert evaluation's rollup reads in one query (reports.rollup_reads: a branch per read, a read's
    windows summed from segments between their edges) give each window what SQLite's grouped_rollups gives
    it alone: grouped and not, filtered, with histograms, nested and ragged windows, one in the future."""
    from store.clickhouse.reports import RollupRead, rollup_reads
    from store.queries import grouped_rollups as sqlite_grouped

    db_path, url = stores
    client = HttpClient(parse_store_url(url, {PASSWORD_ENV: PASSWORD}))
    client.use_database()
    db = sqlite3.connect(db_path)
    end = NOW_S
    burn = tuple((end - w, end) for w in (300, 1800, 3600, 6 * 3600, 86400, 3 * 86400))
    ragged = ((end - 7200 - 37, end - 3600 + 11), (end - 3 * 3600 + 59, end - 61), (end + 60, end + 120))
    reads = [
        RollupRead(burn, (), (("feature", "support"),), ("latency",)),
        RollupRead(burn + ragged, ("model",), (), ("ttft", "cost")),
        RollupRead(((end - 3600, end), (end - 8 * 86400, end - 3600)), ("feature", "prompt"), (), ()),
        RollupRead(((end - 86400, end),), ("service", "feature"), (), ("latency", "ttft")),
        RollupRead(((end - 900, end),), (), (("feature", "no-such-feature"),), ("tokens",)),
        RollupRead(ragged, (), (("model", None),), ()),
        RollupRead((), ("model",), (), ("latency",)),  # no window: nothing asked, nothing read
    ]
    # Reads that share a branch (the same windows and groups, filters on the same columns): several features'
    # burn windows, one of them naming no feature, and the whole service's, beside the support read above;
    # by model, filters on two different columns (a branch each, and one for the read without a filter);
    # two columns at once, with a value nothing has.
    features = [row[0] for row in db.execute("SELECT DISTINCT feature FROM dims WHERE feature IS NOT NULL")]
    tenants = [row[0] for row in db.execute("SELECT DISTINCT tenant FROM dims WHERE tenant IS NOT NULL")]
    assert len(features) >= 2 and tenants
    reads += [
        RollupRead(burn, (), (("feature", features[1]),), ("ttft",)),
        RollupRead(burn, (), (("feature", None),), ()),
        RollupRead(burn, (), (), ("cost",)),
        RollupRead(burn + ragged, ("model",), (("feature", features[0]),), ()),
        RollupRead(burn + ragged, ("model",), (("tenant", tenants[0]),), ("latency",)),
        RollupRead(ragged, (), (("feature", features[0]), ("model", None)), ()),
        RollupRead(ragged, (), (("model", "no-such-model"), ("feature", features[0])), ("latency",)),
    ]
    # Reads folded from a finer read's rows, no branch of their own (reports._sources): the groups by feature
    # and a feature's totals from the groups by feature and prompt, with a histogram that read does not ask
    # for; from the groups by service and feature, a feature's by service and a NULL service's by feature.
    hour_and_week = reads[2].windows
    reads += [
        RollupRead(hour_and_week, ("feature",), (), ("latency",)),
        RollupRead(hour_and_week, (), (("feature", features[0]),), ()),
        RollupRead(((end - 86400, end),), ("service",), (("feature", features[1]),), ("ttft",)),
        RollupRead(((end - 86400, end),), ("feature",), (("service", None),), ()),
    ]
    queries: list[str] = []
    query = client.query

    def watched(sql: str, *args: Any, **kwargs: Any) -> Any:
        queries.append(sql)
        return query(sql, *args, **kwargs)

    client.query = watched  # type: ignore[method-assign]

    def as_data(groups: list[Any], hists: tuple[str, ...]) -> list[Any]:
        return [(g.key, g.counters, [getattr(g, h) for h in hists]) for g in groups]

    try:
        batched = rollup_reads(client, reads)
        assert len(batched) == len(reads)
        for read, per_window in zip(reads, batched):
            assert len(per_window) == len(read.windows)
            for (start, stop), groups in zip(read.windows, per_window):
                truth = sqlite_grouped(db, start, stop, list(read.by), dict(read.where) or None,
                                       [f"hist_{h}" for h in read.hists])
                assert as_data(groups, read.hists) == as_data(truth, read.hists), (read, start, stop)
        # Not an empty comparison: the burn windows have calls, by model and with histograms.
        assert len(batched[1][2]) >= 2 and any(g.ttft for g in batched[1][2]) and any(g.cost for g in batched[1][2])
        assert batched[0][5] and batched[0][5][0].latency
        assert not batched[4][0] and not batched[1][8]  # no such feature; the window in the future
        assert batched[9][0] and batched[9][0][0].cost and batched[10][5] and batched[11][2]
        assert len(batched[14][0]) >= 2 and all(g.latency for g in batched[14][0]) and batched[15][1]
        assert batched[16][0] and batched[16][0][0].ttft
        # 18 reads (one without windows) in 9 branches: the four of the burn windows in one, the two by model
        # filtered on other columns and the one without a filter in three, the ragged windows' two with two
        # columns in one and the one with a column in another, the four others alone, the last four folded
        # from two of those.
        [sql] = queries
        assert sql.count(" UNION ALL ") == 8, sql
    finally:
        db.close()
        client.close()


def test_an_evaluation_reads_every_rollup_window_in_one_query(stores, frozen, tmp_path) -> None:
    """The alert engine names every rollup window its rules read (AlertEngine._rollup_plan), so that an
    evaluation of every rule on ClickHouse folds them all in one query, and finds what it finds when each
    rule reads its own windows."""
    from llmobs_tui.alerting.engine import AlertEngine
    from llmobs_tui.config import load_config

    _db_path, url = stores
    config_path = tmp_path / "llmobs.toml"
    # A budget per feature as well (the plan names each feature's windows), and the SLO kinds STRICT has
    # not (each reads its own histogram).
    more_slos = ('[[slo]]\nname = "support ttft"\nkind = "ttft"\nthreshold = "3s"\nobjective = "95%"\n'
                 'feature = "support"\n\n[[slo]]\nname = "cost per call"\nkind = "cost_per_call"\n'
                 'threshold = 0.01\nobjective = "99%"\n\n')
    config_path.write_text(more_slos + STRICT.replace('"*" = 0.5', '"*" = 0.5\nsupport = 0.1'), encoding="utf-8")
    config = load_config(config_path)

    def evaluate(planned: bool) -> tuple[list[Any], list[str]]:
        engine = AlertEngine(tmp_path / "unused.db", config, parse_store_url(url, {PASSWORD_ENV: PASSWORD}))
        if not planned:
            engine._rollup_plan = lambda now_s: []  # type: ignore[method-assign]
        asked: list[str] = []
        client = engine.db
        query = client.query

        def counted(sql: str, *args: Any, **kwargs: Any) -> Any:
            asked.append(sql)
            return query(sql, *args, **kwargs)

        client.query = counted  # type: ignore[method-assign]
        try:
            findings = engine.evaluate(float(NOW_S))
            assert engine._drift_rule._key is not None  # the drift rule read its windows too
        finally:
            engine.close()
        return [f.as_json() for f in findings], [sql for sql in asked if "FROM rollups" in sql]

    planned, planned_reads = evaluate(True)
    alone, alone_reads = evaluate(False)
    assert len(planned_reads) == 1, planned_reads
    assert len(alone_reads) >= 10  # every rule's windows, one query each (an SLO's in one)
    assert planned == alone
    assert {f["rule"] for f in planned} >= {"slo_burn", "daily_cost", "error_spike", "token_budget", "runaway"}
