"""`forget --store clickhouse://…`: after forgetting a user, a conversation or a tenant, the ClickHouse store
reads back (FINAL, rollups folded, conversations and users computed) exactly as a ClickHouse store given
the same traffic without those traces. Ground truth: a second SQLite store written through the real
Normalizer and SpanWriter without them. Forgetting twice changes nothing more."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmobs_tui.cli import main
from store.clickhouse.client import HttpClient
from store.clickhouse.sink import copy_store
from store.clickhouse.url import PASSWORD_ENV, ClickHouseUrl
from tests.clickhouse_fixtures import PASSWORD, USER
from tests.store_writing import writing
from tests.test_clickhouse_sink import assert_clickhouse_equals_sqlite
from tests.test_replicas import USERS, traffic

TRACE_BASE = 0x5E0000


def _without(bodies: list[bytes], log_bodies: list[bytes], gone: set[int]) -> tuple[list[bytes], list[bytes]]:
    """The same requests less the spans and log records of the traces numbered in `gone`."""
    def kept(request: Any, groups: str, scopes: str, items: str) -> bytes:
        for group in getattr(request, groups):
            for scope in getattr(group, scopes):
                keep = [i for i in getattr(scope, items) if int.from_bytes(i.trace_id, "big") - TRACE_BASE not in gone]
                del getattr(scope, items)[:]
                getattr(scope, items).extend(keep)
        return request.SerializeToString()

    return ([kept(ExportTraceServiceRequest.FromString(b), "resource_spans", "scope_spans", "spans") for b in bodies],
            [kept(ExportLogsServiceRequest.FromString(b), "resource_logs", "scope_logs", "log_records")
             for b in log_bodies])


def _store(path: Path, bodies: list[bytes], log_bodies: list[bytes], now_ns: int) -> None:
    with writing(path, now_ns) as (normalizer, writer, _db):
        for body in bodies:
            rows, resources, scopes, _ = normalizer.decode_traces(ExportTraceServiceRequest.FromString(body), now_ns)
            writer.write(rows, [], resources, scopes)
        for body in log_bodies:
            rows, resources, scopes, _ = normalizer.decode_logs(ExportLogsServiceRequest.FromString(body), now_ns)
            writer.write([], rows, resources, scopes)


def _copied(tmp_path: Path, client: HttpClient, seed: int, traces: int, gone: set[int],
            lone_twin_every: int = 0) -> sqlite3.Connection:
    """The traffic written to a SQLite store and copied into ClickHouse, and (returned, open) the ground
    truth: the same traffic less the traces numbered in `gone`, written to a store of its own."""
    now = time.time_ns()
    bodies, log_bodies = traffic(seed=seed, traces=traces, now_ns=now, lone_twin_every=lone_twin_every)
    _store(tmp_path / "all.db", bodies, log_bodies, now)
    _store(tmp_path / "kept.db", *_without(bodies, log_bodies, gone), now)
    with sqlite3.connect(tmp_path / "all.db") as db:
        copy_store(db, client)
    return sqlite3.connect(tmp_path / "kept.db")


@pytest.mark.parametrize(("flag", "value", "numbers"), [
    ("--user", USERS[1], lambda n: n % 4 == 1),                       # bob: traffic() names USERS[n % 4]
    ("--conversation", f"conv-{USERS[2]}-3", lambda n: n % 4 == 2 and n % 7 == 3),
    ("--tenant", "tenant-0", lambda n: n % 3 == 0),
])
def test_forget_on_clickhouse_leaves_what_a_store_without_those_traces_holds(
        tmp_path: Path, url: ClickHouseUrl, http: HttpClient, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, flag: str, value: str, numbers: Any) -> None:
    gone = {n for n in range(1, 61) if numbers(n)}
    assert 2 <= len(gone) < 40
    kept = _copied(tmp_path, http, seed=23, traces=60, gone=gone)
    try:
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        assert main(["forget", flag, value, "--store", url.display()]) == 0
        out = capsys.readouterr().out
        assert f"forgot {flag[2:]} {value!r}: {len(gone)} traces" in out, out
        assert kept.execute("SELECT count(*) FROM spans").fetchone()[0] > 100
        assert_clickhouse_equals_sqlite(kept, http, same_clock=False, markers=False)
        # Again: nothing left to forget, nothing moves.
        assert main(["forget", flag, value, "--store", url.display()]) == 0
        assert "nothing stored for" in capsys.readouterr().out
        assert_clickhouse_equals_sqlite(kept, http, same_clock=False, markers=False)
    finally:
        kept.close()


def test_forget_on_an_unreachable_clickhouse_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_clickhouse_client import socket_closed_port

    with socket_closed_port() as port:
        assert main(["forget", "--user", "x", "--store", f"clickhouse://{USER}@127.0.0.1:{port}/db"]) == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("is it running, and is the URL right?") and len(err.strip().splitlines()) == 1


def test_forget_stopped_between_its_deltas_and_its_deletions_finishes_exactly_when_run_again(
        tmp_path: Path, http: HttpClient) -> None:
    """A crash after ClickHouse took a chunk's negative deltas but before its deletion rows: the rerun finds
    the same traces, and ClickHouse drops the same deltas a second time (the chunk's deduplication token)."""
    from store.clickhouse.client import ClickHouseError
    from store.clickhouse.forget import forget

    gone = {n for n in range(1, 41) if n % 4 == 3}
    kept = _copied(tmp_path, http, seed=29, traces=40, gone=gone)

    class CrashAfterDeltas:
        def __getattr__(self, name: str) -> Any:
            return getattr(http, name)

        def insert(self, table: str, *args: Any, **kwargs: Any) -> int:
            if table == "spans":
                raise ClickHouseError("connection reset (the process died here)")
            return http.insert(table, *args, **kwargs)

    try:
        with pytest.raises(ClickHouseError):
            forget(CrashAfterDeltas(), "user", USERS[3])  # type: ignore[arg-type]
        assert forget(http, "user", USERS[3]).traces == len(gone)
        assert_clickhouse_equals_sqlite(kept, http, same_clock=False, markers=False)
    finally:
        kept.close()


def test_a_call_billed_in_a_forgotten_trace_is_billed_in_the_kept_trace_that_also_saw_it(
        tmp_path: Path, url: ClickHouseUrl, http: HttpClient, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every other trace's calls are also seen by OpenLLMetry in a trace of its own (no user in it), whose span
    is not billed while the SDK's span, in the user's trace, is. Forgetting the user leaves those traces
    billed for their calls, as a store that never received the user's traces bills them (the lone twins of
    the kept users' calls stay unbilled)."""
    gone = {n for n in range(1, 41) if n % 4 == 2}  # USERS[2]'s, each with lone twins (even numbers)
    kept = _copied(tmp_path, http, seed=31, traces=40, gone=gone, lone_twin_every=2)
    try:
        lone = "FROM spans WHERE name = 'anthropic.chat' AND parent_span_id IS NULL"
        rebilled = kept.execute(f"SELECT count(DISTINCT trace_id) {lone} AND billed").fetchone()[0]
        assert rebilled >= 5 and kept.execute(f"SELECT count(*) {lone} AND NOT billed").fetchone()[0] >= 5
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        assert main(["forget", "--user", USERS[2], "--store", url.display()]) == 0
        out = capsys.readouterr().out
        assert f"({rebilled} kept traces that also saw some of those calls are billed for them now)" in out, out
        assert_clickhouse_equals_sqlite(kept, http, same_clock=False, markers=False)
    finally:
        kept.close()
