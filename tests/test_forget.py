"""Deletion on request (issue 16, capability 6): `forget` leaves a store equal, table by table, to
one that never received the forgotten traces: spans, logs, search index, trace summaries,
conversations, users, rollups (histograms included), tool rollups and tool calls. The ground truth is
a second store written through the same normalizer and writer with the other traces only."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from store import histogram
from store.connection import open_reader
from store.content_index import ContentIndexer, phrase_query
from store.forget import forget, traces_of
from store.writer import HISTOGRAMS, ROLLUP_COUNTERS
from tests.otlp_factory import MS, T0, log_record, make_span
from tests.store_writing import write_through, writing

S = 1_000_000_000
NOW = T0 + 3600 * S
USERS = ("alice", "bob", "carol")


def _traffic(seed: int = 5) -> dict[int, tuple[str, str, list, list]]:
    """Per trace number: (user, tenant, spans, log records). A trace: an HTTP root naming the user
    and tenant, an agent, 1-3 chat calls in a conversation (some failing, some priced, one with a
    tool call), a log record with the completion."""
    rng = random.Random(seed)
    traces = {}
    for number in range(1, 61):
        user = USERS[number % 3]
        tenant = f"tenant-{number % 4}"
        conversation = f"conv-{user}-{number % 5}"
        at = T0 + number * 37 * S
        spans = [make_span(number, 1, None, "POST /chat", {"user.id": user, "tenant.id": tenant}, at, at + 3 * S,
                           kind=2),
                 make_span(number, 2, 1, "invoke_agent support", {"gen_ai.operation.name": "invoke_agent",
                                                                   "gen_ai.agent.name": "support"},
                           at + MS, at + 2900 * MS)]
        records = []
        for call in range(rng.randint(1, 3)):
            start = at + (call + 1) * 100 * MS
            failed = rng.random() < 0.15
            attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                     "gen_ai.request.model": rng.choice(("gpt-4o", "gpt-4o-mini")),
                     "gen_ai.conversation.id": conversation,
                     "gen_ai.usage.input_tokens": rng.randint(100, 4000),
                     "gen_ai.usage.output_tokens": rng.randint(10, 400),
                     "gen_ai.input.messages": f'[{{"role": "user", "parts": [{{"type": "text", '
                                              f'"content": "question {user} number {number}"}}]}}]'}
            spans.append(make_span(number, 10 + call, 2, "chat gpt-4o", attrs, start,
                                   start + rng.randint(200, 2500) * MS, status_code=2 if failed else 0,
                                   status_message="rate limited 429" if failed else ""))
            records.append(log_record(number, 10 + call, "gen_ai.choice",
                                      body={"message": {"content": f"answer for {user} {number}"}},
                                      time_ns=start + 5 * MS))
        if number % 4 == 0:
            spans.append(make_span(number, 30, 2, "execute_tool lookup",
                                   {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"},
                                   at + 50 * MS, at + 80 * MS))
        traces[number] = (user, tenant, spans, records)
    return traces


def _store(path: Path, traces: dict[int, tuple[str, str, list, list]], numbers: list[int]) -> None:
    with writing(path, NOW) as (normalizer, writer, db):
        for number in numbers:
            _user, _tenant, spans, records = traces[number]
            write_through(normalizer, writer, spans, records, NOW)
        ContentIndexer(db).run(deadline_s=60)


def _decoded(blob: bytes | None) -> dict[int, int]:
    counts: dict[int, int] = {}
    histogram.decode_into(blob, counts)
    return counts


def _tables(path: Path) -> dict[str, Any]:
    """Every table a forgotten trace leaves a mark in, keyed without the store's own ids and clocks."""
    db = open_reader(path)
    try:
        dims = "d.service, d.provider, d.model, d.operation, d.feature, d.tenant, d.prompt_id, d.prompt_version, d.variant"
        rollups = sorted(
            (row[:3 + len(ROLLUP_COUNTERS)] + tuple(sorted(_decoded(b).items()) for b in row[3 + len(ROLLUP_COUNTERS):]))
            for row in db.execute(f"SELECT r.res, r.bucket, CASE WHEN r.dims_id = 0 THEN 'total' ELSE "
                                  f"json_array({dims}) END, {', '.join('r.' + c for c in ROLLUP_COUNTERS)}, "
                                  f"{', '.join('r.' + h for h in HISTOGRAMS)} FROM rollups r "
                                  f"LEFT JOIN dims d ON d.id = r.dims_id"))
        span_columns = [c[1] for c in db.execute("PRAGMA table_info(spans)") if c[1] not in ("id", "resource_id",
                                                                                             "scope_id")]
        trace_columns = [c[1] for c in db.execute("PRAGMA table_info(traces)") if c[1] != "updated_ns"]
        user_columns = [c[1] for c in db.execute("PRAGMA table_info(users)")]
        conversation_columns = [c[1] for c in db.execute("PRAGMA table_info(conversations)")
                                if c[1] not in ("updated_ns",)]
        return {
            "spans": sorted(db.execute(f"SELECT {', '.join(span_columns)} FROM spans")),
            "logs": sorted(db.execute("SELECT trace_id, span_id, time_ns, event_name, finish_reason FROM logs")),
            "traces": sorted(db.execute(f"SELECT {', '.join(trace_columns)} FROM traces")),
            "conversations": sorted(db.execute(f"SELECT {', '.join(conversation_columns)} FROM conversations")),
            "users": sorted(db.execute(f"SELECT {', '.join(user_columns)} FROM users")),
            "rollups": rollups,
            "tool_rollups": sorted((r[0], r[1], r[2], r[3], r[4], r[5], sorted(_decoded(r[6]).items()))
                                   for r in db.execute("SELECT res, bucket, tool, calls, errors, duration_ns, "
                                                       "hist_latency FROM tool_rollups") if r[3]),
            "tool_calls": sorted(db.execute("SELECT start_ns, tool, duration_ns, failed FROM tool_calls")),
            "dims": sorted(db.execute(f"SELECT {dims} FROM dims d")),
            "index": sorted(db.execute("SELECT trace_id, span_id, body FROM content_text")),
        }
    finally:
        db.close()


@pytest.mark.parametrize(("kind", "value", "of"), [
    ("user", "alice", lambda user, tenant: user == "alice"),
    ("tenant", "tenant-2", lambda user, tenant: tenant == "tenant-2"),
    ("conversation", "conv-bob-3", None),
])
def test_forget_leaves_the_store_a_store_without_those_traces_would_be(tmp_path: Path, kind, value, of) -> None:
    traffic = _traffic()
    if of is None:  # a conversation: the traces whose calls name it
        forgotten = {n for n, (user, _t, _s, _r) in traffic.items() if f"conv-{user}-{n % 5}" == value}
    else:
        forgotten = {n for n, (user, tenant, _s, _r) in traffic.items() if of(user, tenant)}
    assert 0 < len(forgotten) < len(traffic)
    full, truth = tmp_path / "full.db", tmp_path / "truth.db"
    _store(full, traffic, sorted(traffic))
    _store(truth, traffic, sorted(set(traffic) - forgotten))
    before = _tables(full)

    with writing(full, NOW) as (_normalizer, writer, db):
        assert len(traces_of(db, kind, value)) == len(forgotten)
        done = forget(db, writer, kind, value)
    assert done.removed.traces == len(forgotten)
    assert done.removed.spans == len(before["spans"]) - len(_tables(truth)["spans"])

    after, expected = _tables(full), _tables(truth)
    for table in expected:
        assert after[table] == expected[table], table
    db = open_reader(full)
    try:  # the search no longer finds what only the forgotten traces said
        if kind == "user":
            assert db.execute("SELECT count(*) FROM content_index WHERE content_index MATCH ?",
                               (phrase_query("question alice"),)).fetchone()[0] == 0
            assert db.execute("SELECT count(*) FROM traces WHERE user_id = 'alice'").fetchone()[0] == 0
    finally:
        db.close()


def test_a_call_billed_in_a_forgotten_trace_is_billed_in_its_kept_twin(tmp_path: Path) -> None:
    """The same provider response seen by an SDK's span in one trace and an instrumentation's in
    another (see SpanWriter._join_twins_across_traces): billed once. Forgetting the trace of the
    billed one must bill the other, as a store that only ever had the other would."""
    sdk_scope, instrumentation_scope = ("com.anthropic.sdk.python", "1.0"), ("opentelemetry.instrumentation.anthropic", "2.0")
    at = T0 + 100 * S

    def call(trace: int, scope_user: str, start: int, end: int) -> Any:
        return make_span(trace, 100 + trace, None, "chat claude-sonnet-4",  # span ids differ, as real ones do
                         {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                          "gen_ai.request.model": "claude-sonnet-4", "gen_ai.response.id": "msg_shared_1",
                          "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100,
                          "user.id": scope_user}, start, end)

    from tests.otlp_factory import trace_request

    def write(path: Path, which: list[tuple[Any, tuple[str, str]]]) -> None:
        with writing(path, NOW) as (normalizer, writer, _db):
            for span, scope in which:
                rows, resources, scopes, _ = normalizer.decode_traces(trace_request([span], scope=scope), NOW)
                writer.write(rows, [], resources, scopes)

    outer = (call(1, "alice", at, at + 900 * MS), instrumentation_scope)
    inner = (call(2, "bob", at + 10 * MS, at + 800 * MS), sdk_scope)
    full, truth = tmp_path / "full.db", tmp_path / "truth.db"
    write(full, [outer, inner])
    db = sqlite3.connect(full)
    billed = dict(db.execute("SELECT user_id, billed FROM spans"))
    db.close()
    assert sorted(billed.values()) == [0, 1], billed  # one call, billed once across the two traces
    keeper = next(user for user, b in billed.items() if b)
    write(truth, [inner] if keeper == "alice" else [outer])  # the store that only ever had the other span
    with writing(full, NOW) as (_normalizer, writer, db):
        done = forget(db, writer, "user", keeper)
    assert done.removed.rebilled_traces == 1  # what the command says: "(1 kept traces that also saw ...)"
    after, expected = _tables(full), _tables(truth)
    for table in ("spans", "traces", "rollups", "dims"):
        assert after[table] == expected[table], table


def test_the_command_refuses_while_serve_writes_and_says_what_it_removed(tmp_path: Path) -> None:
    from store.connection import WriterLock

    path = tmp_path / "cli.db"
    _store(path, _traffic(), list(range(1, 13)))
    command = [sys.executable, "-m", "llmobs_tui", "forget", "--db", str(path)]
    lock = WriterLock(path)
    lock.acquire()
    try:  # what serve holds while it runs
        busy = subprocess.run([*command, "--user", "alice"], capture_output=True, text=True, timeout=60)
    finally:
        lock.release()
    assert busy.returncode != 0 and "stop `serve` first" in busy.stderr, busy.stderr
    done = subprocess.run([*command, "--user", "alice"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("forgot user 'alice': 4 traces,"), done.stdout
    again = subprocess.run([*command, "--user", "alice"], capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == "nothing stored for user 'alice'"
    blank = subprocess.run([*command, "--user", " "], capture_output=True, text=True, timeout=60)
    assert blank.returncode == 2 and "an id is required" in blank.stderr


# The CLI as a SQLite build that does not overwrite deleted rows runs it (SQLite's own default; Debian's
# turns it on): every connection starts with secure_delete off.
_BUILD_WITHOUT_SECURE_DELETE = """
import runpy, sqlite3, sys
_connect = sqlite3.connect
def connect(*args, **kwargs):
    db = _connect(*args, **kwargs)
    db.execute("PRAGMA secure_delete = OFF")
    return db
sqlite3.connect = connect
sys.argv = ["llmobs-tui", *sys.argv[1:]]
runpy.run_module("llmobs_tui", run_name="__main__")
"""


def _occurrences(path: Path, word: bytes) -> dict[str, int]:
    """How often `word` can be read off each of the store's files, as anyone with the files could."""
    return {f.name: f.read_bytes().count(word) for f in path.parent.glob(f"{path.name}*") if f.is_file()}


def test_forgotten_words_cannot_be_read_off_the_files(tmp_path: Path) -> None:
    """Deleted means gone from the database file and its WAL, not only from the tables: on a build whose
    deletes leave the rows' bytes in free pages, and with the search index keeping a deleted row's words
    until a merge meets them. While a reader holds the store open the WAL cannot be emptied: forget says so,
    and the same command run again once it is closed finishes the job."""
    path = tmp_path / "erase.db"
    _store(path, _traffic(), list(range(1, 61)))
    assert _occurrences(path, b"alice")[path.name] > 100
    command = [sys.executable, "-c", _BUILD_WITHOUT_SECURE_DELETE, "forget", "--db", str(path), "--user", "alice"]
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM spans").fetchone()  # a snapshot the WAL must be kept for
    try:
        held = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        reader.close()
    assert held.returncode == 0, held.stderr
    assert held.stdout.startswith("forgot user 'alice': 20 traces,"), held.stdout
    assert "could not be emptied" in held.stderr and "run the same command again" in held.stderr, held.stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip() == "nothing stored for user 'alice'", again
    assert again.stderr == ""
    found = _occurrences(path, b"alice")
    assert sum(found.values()) == 0, found
    assert _occurrences(path, b"bob")[path.name] > 100  # the kept users' rows are still read off the same file
    db = open_reader(path)
    try:
        assert db.execute("SELECT count(*) FROM content_index WHERE content_index MATCH ?",
                          (phrase_query("bob"),)).fetchone()[0] > 0
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
