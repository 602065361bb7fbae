"""The ClickHouse store's network path: store URLs, and clickhouse-connect (the real client, unchanged)
over HTTP to tests/chdb_http_server.py, which runs every statement on the real ClickHouse engine (chdb).

Ground truth: spans are written through the real Normalizer and SpanWriter into a SQLite store, copied
to ClickHouse over HTTP and read back, and must equal what SQLite holds; engine-side checks read the same
chdb engine directly (ChdbClient), not through the client under test."""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client as httplib
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from store.clickhouse import schema
from store.clickhouse.client import ChdbClient, ClickHouseError, HttpClient
from store.clickhouse.url import CA_CERT_ENV, PASSWORD_ENV, ClickHouseUrl, StoreUrlError, parse_store_url
from store.models import SPAN_COLUMNS
from store.queries import decompress
from tests.chdb_http_server import ChdbHttpServer, engine_path
from tests.clickhouse_fixtures import PASSWORD, USER
from tests.otlp_factory import make_span
from tests.store_writing import write_through, writing
from tests.test_clickhouse_schema import HOSTILE, expected_rollups, insert_rollups, read_rollups, signed_delta_rows
from tests.test_tls import self_signed

# --- URLs -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("clickhouse://llmobs@ch.internal:8123/llmobs", ("http", "ch.internal", 8123, "llmobs", "llmobs")),
        ("clickhouse://llmobs@ch.internal/obs", ("http", "ch.internal", 8123, "llmobs", "obs")),
        ("clickhouse+https://svc_user@ch.example.com:8443/prod_llm", ("https", "ch.example.com", 8443, "svc_user", "prod_llm")),
        ("clickhouse+https://u@ch.example.com/db", ("https", "ch.example.com", 8443, "u", "db")),
        ("CLICKHOUSE://u@[::1]:9000/db", ("http", "::1", 9000, "u", "db")),
        ("clickhouse://first.last%40corp@10.0.0.5:8123/db", ("http", "10.0.0.5", 8123, "first.last@corp", "db")),
    ],
)
def test_store_urls_that_parse(url: str, expected: tuple[Any, ...]) -> None:
    parsed = parse_store_url(url, {PASSWORD_ENV: "pw"})
    assert (parsed.interface, parsed.host, parsed.port, parsed.user, parsed.database) == expected
    assert parsed.password == "pw"
    assert "pw" not in parsed.display() and parsed.display().endswith("/" + expected[4])
    assert parse_store_url(url, {}).password == ""


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("clickhouse://llmobs:hunter2@ch:8123/db", f"must not contain a password.*{PASSWORD_ENV}"),
        ("clickhouse://llmobs:@ch:8123/db", "must not contain a password"),
        ("", "empty store URL"),
        ("   ", "empty store URL"),
        ("ch:8123/db", "unsupported store URL scheme"),
        ("http://u@ch:8123/db", "unsupported store URL scheme 'http://'"),
        ("clickhouse+http://u@ch:8123/db", "unsupported store URL scheme"),
        ("/var/lib/llmobs/store.db", "unsupported store URL scheme.*--db PATH"),
        ("clickhouse://ch:8123/db", "names no user"),
        ("clickhouse://u@:8123/db", "names no host"),
        ("clickhouse://u@ch:8123", "names no database"),
        ("clickhouse://u@ch:8123/", "names no database"),
        ("clickhouse://u@ch:8123/db/extra", "invalid database name"),
        ("clickhouse://u@ch:8123/my-db", "invalid database name"),
        ("clickhouse://u@ch:8123/db%3B%20DROP", "invalid database name"),
        ("clickhouse://u@ch:99999/db", "malformed store URL.*[Pp]ort"),
        ("clickhouse://u@ch:http/db", "malformed store URL"),
        ("clickhouse://u@ch:/db", "empty port"),
        ("clickhouse://u@ch:0/db", "port 0"),
        ("clickhouse://u@ch:8123/db?secure=1", "no '\\?query'"),
        ("clickhouse://u@ch:8123/db#x", "no '\\?query'"),
        ("clickhouse://u@[::1/db", "malformed store URL"),
        ("clickhouse://u@ch:8123/d b", "whitespace or control"),
        ("clickhouse://u\n@ch:8123/db", "whitespace or control"),
        ("clickhouse://bad'user@ch:8123/db", "invalid user name"),
    ],
)
def test_store_urls_that_are_refused_say_why(url: str, message: str) -> None:
    with pytest.raises(StoreUrlError, match=message):
        parse_store_url(url, {})


# --- the server and clients ----------------------------------------------------------------------------------


def test_clickhouse_connect_creates_the_schema_through_the_server(http: HttpClient, engine: ChdbClient,
                                                                   server: ChdbHttpServer) -> None:
    tables = {row[0] for row in engine.query("SHOW TABLES")}
    assert {"spans", "logs", "trace_summaries", "rollups", "schema_migrations"} <= tables
    assert sorted(engine.query("SELECT version FROM schema_migrations")) == [(v,) for v in list(range(1, len(schema.MIGRATIONS) + 1))]
    assert schema.migrate(http) == []
    # Parameters reached the engine as parameters: the SQL text the server ran never holds the value.
    assert any("{db:Identifier}" in q for q in server.queries)
    assert not any(f"CREATE DATABASE IF NOT EXISTS {http.database}" in q for q in server.queries)


# Spans from the real pipeline, with content, a hostile name and every kind of value (NULLs, blobs).
def _pipeline_spans(tmp_path: Path) -> list[dict[str, Any]]:
    db_path = tmp_path / "truth.db"
    t0 = time.time_ns() - 60 * 10**9  # recent: rows older than the retention TTL are dropped on insert
    llm = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
           "gen_ai.response.model": "gpt-4o", "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 80,
           "gen_ai.response.id": "chatcmpl-1", "gen_ai.response.finish_reasons": ["stop"],
           "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "' + "hi " * 400 + '"}]}]',
           "gen_ai.conversation.id": "conv-1", "user.id": "u-1"}
    spans = [
        make_span(1, 1, None, HOSTILE, {"app.llm.feature": "ask"}, start_ns=t0, end_ns=t0 + 3_000_000_000),
        make_span(1, 2, 1, "chat gpt-4o", llm, start_ns=t0 + 10_000_000, end_ns=t0 + 2_000_000_000),
        make_span(1, 3, 1, "tool search", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
                  start_ns=t0 + 2_100_000_000, end_ns=t0 + 2_200_000_000, status_code=2, status_message="boom"),
        make_span(2, 9, None, "chat gpt-4o", {**llm, "gen_ai.usage.input_tokens": 5}, start_ns=t0 + 5 * 10**9),
    ]
    with writing(db_path, t0 + 10 * 10**9) as (normalizer, writer, _db):
        write_through(normalizer, writer, spans, [], t0 + 10 * 10**9)
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    rows = [dict(row) for row in db.execute("SELECT * FROM spans ORDER BY trace_id, span_id")]
    db.close()
    assert len(rows) == 4 and any(r["billed"] for r in rows) and any(r["raw"] for r in rows)
    return rows


CH_SPAN_COLUMNS = [name for name in SPAN_COLUMNS if name not in ("id", "resource_id", "scope_id")]


def _as_clickhouse(row: dict[str, Any], version: int = 1) -> list[Any]:
    values = {name: row[name] for name in CH_SPAN_COLUMNS}
    values["raw"] = decompress(row["raw"]) if row["raw"] else b""  # ClickHouse's codec compresses it
    return [*(values[name] for name in CH_SPAN_COLUMNS), version]


def test_spans_from_the_real_pipeline_round_trip_exactly(http: HttpClient, engine: ChdbClient, tmp_path: Path) -> None:
    truth = _pipeline_spans(tmp_path)
    columns = [*CH_SPAN_COLUMNS, "version"]
    assert http.insert("spans", [_as_clickhouse(r) for r in truth], columns) == len(truth)
    # A retried export: the same batch again, and one span corrected by the writer (a higher version).
    http.insert("spans", [_as_clickhouse(r) for r in truth], columns)
    corrected = dict(truth[1], cost_nusd=(truth[1]["cost_nusd"] or 0) + 1)
    http.insert("spans", [_as_clickhouse(corrected, version=2)], columns)
    expected = [dict(r) for r in truth]
    expected[1] = corrected
    for r in expected:
        r["raw"] = decompress(r["raw"]) if r["raw"] else b""
    select = f"SELECT {', '.join(CH_SPAN_COLUMNS)} FROM spans FINAL ORDER BY trace_id, span_id"
    text_blobs = ("raw", "duplicate_of")
    for reader in (http, engine):
        got = [dict(zip(CH_SPAN_COLUMNS, row)) for row in reader.query(select, bytes_columns=text_blobs)]
        assert got == [{name: r[name] for name in CH_SPAN_COLUMNS} for r in expected]
    assert engine.query("SELECT count() FROM spans") == [(9,)]  # all rows are stored; reads fold them
    assert http.query("SELECT count() FROM spans FINAL") == [(4,)]
    engine.command("OPTIMIZE TABLE spans FINAL")
    assert engine.query("SELECT count() FROM spans") == [(4,)]
    assert http.query(select, bytes_columns=text_blobs)[1][CH_SPAN_COLUMNS.index("cost_nusd")] == corrected["cost_nusd"]
    # A trace's spans by id, the id bound as a parameter.
    trace = truth[0]["trace_id"]
    assert http.query("SELECT count() FROM spans FINAL WHERE trace_id = {t:FixedString(16)}", {"t": trace}) == [(3,)]


def test_rollup_delta_rows_over_http_fold_before_and_after_merges(http: HttpClient, engine: ChdbClient) -> None:
    rows = signed_delta_rows()
    for row in rows:
        insert_rollups(http, [row])
    truth = expected_rollups(rows)
    assert read_rollups(http) == truth
    assert read_rollups(engine) == truth
    engine.command("OPTIMIZE TABLE rollups FINAL")
    assert read_rollups(http) == truth


def test_a_hostile_string_round_trips_over_http(http: HttpClient, engine: ChdbClient) -> None:
    assert http.query("SELECT {s:String} AS s", {"s": HOSTILE}) == [(HOSTILE,)]
    now = time.time_ns()
    http.insert("logs", [[b"\x01" * 16, b"\x02" * 8, now, b"\x03" * 16, HOSTILE, HOSTILE.encode(), 1]],
                ["trace_id", "span_id", "time_ns", "record_digest", "event_name", "raw", "version"])
    assert http.query("SELECT event_name, raw FROM logs FINAL WHERE event_name = {e:String}", {"e": HOSTILE},
                      bytes_columns=("raw",)) == [(HOSTILE, HOSTILE.encode())]
    assert engine.query("SELECT event_name FROM logs") == [(HOSTILE,)]
    assert engine.query("SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'spans'",
                        {"db": engine.database}) == [(1,)]


def test_an_array_of_tuples_binds_on_both_clients(http: HttpClient, engine: ChdbClient) -> None:
    """(trace id, span id) pairs, as the runaway rule reads tool arguments by: a tuple is a Tuple literal
    "(a, b)" (sent as a list it was refused, CANNOT_PARSE_INPUT, and every alert rule failed with it)."""
    keys = [(b"\x01" * 16, b"\x02" * 8), (bytes(range(16)), b"'\\(\x00)[]"[:8].ljust(8, b"\x00"))]
    for client in (http, engine):
        rows = client.query("SELECT arrayJoin({keys:Array(Tuple(FixedString(16), FixedString(8)))}) AS k, "
                            "tupleElement(k, 1), tupleElement(k, 2)", {"keys": keys})
        assert [(bytes(a), bytes(b)) for _k, a, b in rows] == keys
    assert http.query("SELECT {ints:Array(Int64)}", {"ints": [1, 2]}) == [([1, 2],)]  # a list stays an Array


def test_parameters_too_long_for_a_url_bind_on_both_clients(http: HttpClient, engine: ChdbClient) -> None:
    """Trace ids by the hundred, a batch of alert windows: past 4 KB of URL, clickhouse-connect sends the
    query and its parameters as form fields (ClickHouse reads them there; this test server read only a body
    and the URL, so such a query failed with a syntax error). A field over 128 KiB is refused, as ClickHouse
    refuses it: reads by a list of ids take IDS_PER_QUERY at a time (store.clickhouse.client.batches)."""
    from store.clickhouse.client import IDS_PER_QUERY, ClickHouseError

    ids = [n.to_bytes(16, "big") for n in range(1_000)]
    edges = list(range(1_700_000_000, 1_700_000_000 + 600 * 60, 60))
    # Aliased: an expression's own name holds the parameter's value, bytes that are not UTF-8 here.
    sql = ("SELECT length({ids:Array(FixedString(16))}) AS n, has({ids:Array(FixedString(16))}, "
           "{last:FixedString(16)}) AS found, arraySum({edges:Array(Int64)}) AS total, {label:String} AS label")
    params = {"ids": ids, "last": ids[-1], "edges": edges, "label": "tab\there 'quoted' ü"}
    for client in (http, engine):
        assert client.query(sql, params) == [(1_000, 1, sum(edges), "tab\there 'quoted' ü")]
    too_many = [n.to_bytes(16, "big") for n in range(2_000)]  # ≈ 136 KB as one parameter
    with pytest.raises(ClickHouseError, match="http_max_field_value_size"):
        http.query("SELECT length({ids:Array(FixedString(16))}) AS n", {"ids": too_many})
    # The batch size stays far below it, for (trace, span) pairs too.
    pairs = [(n.to_bytes(16, "big"), n.to_bytes(8, "big")) for n in range(IDS_PER_QUERY)]
    assert http.query("SELECT length({p:Array(Tuple(FixedString(16), FixedString(8)))}) AS n",
                      {"p": pairs}) == [(IDS_PER_QUERY,)]


def test_wrong_credentials_are_refused_as_clickhouse_does(server: ChdbHttpServer, url: ClickHouseUrl) -> None:
    with pytest.raises(ClickHouseError) as caught:
        HttpClient(parse_store_url(url.display(), {PASSWORD_ENV: "wrong"}))
    assert caught.value.code == 516 and "Authentication failed" in str(caught.value)
    with pytest.raises(ClickHouseError) as caught:
        HttpClient(parse_store_url(url.display(), {}))  # LLMOBS_CLICKHOUSE_PASSWORD unset
    assert caught.value.code == 516
    status, headers, body = _post(server, "SELECT 1", user=USER, password="nope")
    assert status == 403
    assert headers["X-ClickHouse-Exception-Code"] == "516"
    assert body.startswith(b"Code: 516. DB::Exception: llmobs: Authentication failed")
    assert b"(AUTHENTICATION_FAILED)" in body


def _post(server: ChdbHttpServer, body: bytes | str, params: dict[str, str] | None = None,
          headers: dict[str, str] | None = None, user: str = USER, password: str = PASSWORD,
          auth: str = "basic") -> tuple[int, dict[str, str], bytes]:
    sent = dict(headers or {})
    query = dict(params or {})
    if auth == "basic":
        sent["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    elif auth == "headers":
        sent.update({"X-ClickHouse-User": user, "X-ClickHouse-Key": password})
    else:
        query.update(user=user, password=password)
    conn = httplib.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/?" + urlencode(query), body=body.encode() if isinstance(body, str) else body, headers=sent)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_the_http_protocol_pieces_clickhouse_connect_relies_on(server: ChdbHttpServer, http: HttpClient) -> None:
    db = http.database
    # Credentials three ways; the database as a header or a parameter.
    for auth in ("basic", "headers", "params"):
        status, _, body = _post(server, "SELECT currentDatabase()", headers={"X-ClickHouse-Database": db}, auth=auth)
        assert (status, body) == (200, db.encode() + b"\n")
    status, _, body = _post(server, "SELECT currentDatabase()", {"database": db})
    assert body == db.encode() + b"\n"
    # Server-side parameters and the requested output format.
    status, headers, body = _post(server, "SELECT {n:String} AS n, {k:UInt8} AS k FORMAT JSONEachRow",
                                  {"param_n": "a\\tb", "param_k": "7"})
    assert (status, body) == (200, b'{"n":"a\\tb","k":7}\n')
    status, _, body = _post(server, "SELECT 1 AS one", {"default_format": "CSVWithNames"})
    assert body == b'"one"\n1\n'
    # An INSERT: statement in the URL, gzip-compressed data in the body.
    csv_row = b"\x03" * 16 + b"\t" + b"\x04" * 8 + b"\t" + str(time.time_ns()).encode() + b"\ty\\tz\t6\n"
    status, headers, _ = _post(
        server, gzip.compress(b'"' + b"\x01" * 16 + b'","' + b"\x02" * 8 + b'",' + str(time.time_ns()).encode() + b',"x",5\n'),
        {"database": db, "query": "INSERT INTO logs (trace_id, span_id, time_ns, event_name, version) FORMAT CSV"},
        headers={"Content-Encoding": "gzip"},
    )
    assert status == 200 and '"written_rows": "1"' in headers["X-ClickHouse-Summary"]
    # Statement and data in one body: the data starts after the FORMAT clause's line.
    status, headers, _ = _post(
        server, b"INSERT INTO logs (trace_id, span_id, time_ns, event_name, version) FORMAT TabSeparated\n" + csv_row,
        {"database": db},
    )
    assert status == 200 and '"written_rows": "1"' in headers["X-ClickHouse-Summary"]
    assert http.query("SELECT event_name, version FROM logs ORDER BY version") == [("x", 5), ("y\tz", 6)]
    # A setting given as a URL parameter applies to that query only.
    _, _, body = _post(server, "SELECT getSetting('max_result_rows')", {"max_result_rows": "12345"})
    assert body == b"12345\n"
    _, _, body = _post(server, "SELECT getSetting('max_result_rows')")
    assert body == b"0\n"
    # Errors: ClickHouse's status for the code, the code in a header, its text in the body.
    status, headers, body = _post(server, "SELECT * FROM no_such_table", {"database": db})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "60")
    assert body.startswith(b"Code: 60. DB::Exception:") and b"(UNKNOWN_TABLE)" in body
    status, headers, body = _post(server, "SELEC 1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    status, _, body = _post(server, "SELECT 1", {"no_such_setting_xyz": "1"})
    assert status == 404 and b"(UNKNOWN_SETTING)" in body
    conn = httplib.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/ping")
    assert conn.getresponse().read() == b"Ok.\n"
    conn.close()


def test_clickhouse_https_speaks_tls_and_checks_the_certificate(tmp_path: Path, database: str) -> None:
    cert, key = self_signed(tmp_path)
    server = ChdbHttpServer(engine_path(), {USER: PASSWORD}, tls=(str(cert), str(key))).start()
    try:
        url = parse_store_url(f"clickhouse+https://{USER}@127.0.0.1:{server.port}/{database}", {PASSWORD_ENV: PASSWORD})
        client = HttpClient(url, ca_cert=str(cert))
        assert schema.migrate(client) == list(range(1, len(schema.MIGRATIONS) + 1))
        assert client.query("SELECT count() FROM schema_migrations") == [(len(schema.MIGRATIONS),)]
        client.close()
        with pytest.raises(ClickHouseError, match=r"(?i)certificate"):  # a server the system CAs do not vouch for
            HttpClient(url)
        plain = parse_store_url(f"clickhouse://{USER}@127.0.0.1:{server.port}/{database}", {PASSWORD_ENV: PASSWORD})
        with pytest.raises(ClickHouseError):  # plain HTTP to a TLS port gets no answer it can read
            HttpClient(plain, connect_timeout=3, send_receive_timeout=3)
        # The CA travels with the URL ($LLMOBS_CLICKHOUSE_CA_CERT or --store-ca-cert): every client made from it
        # (the commands, serve's writer, the TUI) trusts it.
        trusted = parse_store_url(url.display(), {PASSWORD_ENV: PASSWORD, CA_CERT_ENV: str(cert)})
        assert trusted.ca_cert == str(cert) and CA_CERT_ENV not in trusted.display()
        client = HttpClient(trusted)
        client.use_database()
        assert client.query("SELECT count() FROM schema_migrations") == [(len(schema.MIGRATIONS),)]
        client.close()
        from llmobs_tui.cli import main

        with pytest.MonkeyPatch.context() as env:
            env.setenv(PASSWORD_ENV, PASSWORD)
            env.delenv(CA_CERT_ENV, raising=False)
            assert main(["report", "--store", url.display(), "--store-ca-cert", str(cert), "--format", "json"]) == 0
            assert main(["report", "--store", url.display(), "--format", "json"]) == 1  # the system's CAs: refused
    finally:
        server.stop()


def test_a_ca_certificate_is_checked_when_the_url_is_read(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    https = "clickhouse+https://u@ch.internal:8443/db"
    for env, fault in (({CA_CERT_ENV: str(tmp_path / "missing.pem")}, "cannot read the CA certificate"),
                       ({CA_CERT_ENV: str(key)}, "holds no PEM certificate"),
                       ({CA_CERT_ENV: str(cert)}, None)):
        if fault is None:
            assert parse_store_url(https, env).ca_cert == str(cert)
        else:
            with pytest.raises(StoreUrlError, match=fault):
                parse_store_url(https, env)
    with pytest.raises(StoreUrlError, match="is for TLS"):
        parse_store_url("clickhouse://u@ch.internal:8123/db", {CA_CERT_ENV: str(cert)})


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """A local port nothing listens on (bound, never listened, so no one else takes it meanwhile)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_an_unreachable_clickhouse_is_one_line_on_the_terminal(tmp_path: Path) -> None:
    """The client library's own retry warnings must not reach the terminal before the store's one line."""
    import subprocess
    import sys

    with socket_closed_port() as port:
        done = subprocess.run([sys.executable, "-m", "llmobs_tui", "report", "--store",
                               f"clickhouse://{USER}@127.0.0.1:{port}/db"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              env={**os.environ, PASSWORD_ENV: PASSWORD})
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"llmobs-tui: cannot reach ClickHouse at clickhouse://{USER}@127.0.0.1:{port}/db "
                                        "(connection refused): is it running, and is the URL right?"]


def test_a_server_error_quoting_data_reaches_the_terminal_without_its_escapes() -> None:
    from store.backends import describe_clickhouse_error

    url = parse_store_url("clickhouse://u@ch:8123/db", {})
    line = describe_clickhouse_error(url, ClickHouseError("Code: 53. Cannot parse '\x1b[2J\x1b]0;pwned\x07'\nnext", 53))
    assert "\x1b" not in line and "\x07" not in line and "\n" not in line
    assert line.startswith("ClickHouse at clickhouse://u@ch:8123/db: Code: 53. Cannot parse")


def test_the_runaway_rule_reads_thousands_of_tool_arguments_in_one_query(http: HttpClient,
                                                                         engine: ChdbClient) -> None:
    """The runaway rule's tool arguments, 1,200 of them (three parameters of IDS_PER_QUERY pairs, past the
    URL: form fields), in one read within the calls' start: every call gets its own arguments, not an older
    version's."""
    import time

    from store.clickhouse.alerts import runaway_rows

    now = time.time_ns()
    since = now - 3600 * 10**9
    calls = [(n.to_bytes(16, "big"), (n + 1).to_bytes(8, "big"), since + n * 10**6) for n in range(1, 1201)]
    columns = ["trace_id", "span_id", "start_ns", "end_ns", "kind", "tool_name", "raw", "version"]
    old = [[t, s, start, start + 1, "tool", "lookup", b"old " + s, 1] for t, s, start in calls[:5]]
    http.insert("spans", old, columns)
    http.insert("spans", [[t, s, start, start + 1, "tool", "lookup", b"args " + s, 2] for t, s, start in calls],
                columns)
    http.insert("trace_summaries", [[t, start, now, 1, 0] for t, _s, start in calls],
                ["trace_id", "start_ns", "end_ns", "spans", "root_known"])
    # Their traces' other spans (read by trace id, then left out): a chat span before each of the first hundred.
    http.insert("spans", [[t, b"chat" + s[4:], start - 1, start, "llm", None, b"chat", 2] for t, s, start in calls[:100]],
                columns)
    for client in (http, engine):
        rows, raws = runaway_rows(client, {"tools": None}, since, 5000, 100, lambda tools: tools)
        assert len(rows["tools"]) == len(calls) == len(raws)
        by_span = {row[2]: raws[row[0]] for row in rows["tools"]}  # plain, as ClickHouse keeps them
        assert by_span == {s: b"args " + s for _t, s, _start in calls}
        # Only the spans asked for, though their traces hold others.
        rows, raws = runaway_rows(client, {"tools": None}, since, 5000, 100, lambda tools: tools[::2])
        assert {row[2]: raws[row[0]] for row in rows["tools"] if row[0] in raws} == \
            {row[2]: b"args " + row[2] for row in rows["tools"][::2]}
