"""Tool calls kept by the writer (store/tool_rollups.py, migration m010) for the Breakdown by tool.

Spans go through the real Normalizer into a real SQLite store through the real SpanWriter, in
batches that deliver children before their parents, retries and all; every window's figures are
checked against store.queries.tool_calls_query over the stored tool spans (the ground truth: what
the Breakdown read before), not against the module's own output.
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import pytest

from llmobs_tui.reader import StoreReader
from store import tool_rollups
from store.migrations import MIGRATIONS
from store.queries import parse_tool_calls, tool_calls_query
from store.retention import enforce
from store.writer import SpanWriter
from tests.otlp_factory import T0, make_span, trace_id_bytes, trace_request

NS = 10**9
MS = 10**6
HOUR_NS = 3600 * NS
BASE = T0 - T0 % HOUR_NS  # a whole hour: windows below cut it at known places


def tool_span(trace: int, span: int, parent: int | None, name: str | None, start_ns: int, dur_ms: int,
              failed: bool = False) -> Any:
    attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool"}
    if name is not None:
        attrs["gen_ai.tool.name"] = name
    elif failed:
        attrs["error.type"] = "ToolError"  # failed through error.type rather than the status
    return make_span(trace, span, parent, f"execute_tool {name}" if name else "", attrs, start_ns=start_ns,
                     end_ns=start_ns + dur_ms * MS, status_code=2 if failed and name else 0,
                     status_message="boom" if failed and name else "")


def root_span(trace: int, start_ns: int) -> Any:
    return make_span(trace, 1, None, "POST /agent", {}, start_ns=start_ns, end_ns=start_ns + 60 * NS, kind=2)


def write(writer: SpanWriter, normalizer, spans: list, received_ns: int = T0 + 10**13) -> None:
    rows, resources, scopes, rejected = normalizer.decode_traces(trace_request(spans), received_ns=received_ns)
    assert rejected.count == 0, rejected.message()
    writer.write(rows, [], resources, scopes)


def truth(db: sqlite3.Connection, start_ns: int, end_ns: int) -> list[tuple]:
    """The Breakdown's figures as they were read from the spans: (tool, calls, errors, durations)."""
    sql, params = tool_calls_query(start_ns, end_ns)
    return sorted((g.key["tool"] or "", g.calls, g.errors, sorted(g.durations_ns))
                  for g in parse_tool_calls(("tool",), db.execute(sql, params)))


def kept(db: sqlite3.Connection, start_ns: int, end_ns: int) -> list[tuple]:
    sql, params = tool_rollups.tool_calls_query(start_ns, end_ns)
    return sorted((g.key["tool"] or "", g.calls, g.errors, sorted(g.durations_ns))
                  for g in tool_rollups.parse_tool_calls(db.execute(sql, params)))


def windows() -> list[tuple[int, int]]:
    """Whole hours, partial hours at either end, less than an hour, nothing, everything."""
    return [(BASE, BASE + 6 * HOUR_NS - 1), (BASE + 17 * 60 * NS, BASE + 4 * HOUR_NS + 5 * NS),
            (BASE + HOUR_NS - 1, BASE + 3 * HOUR_NS), (BASE + 10 * 60 * NS, BASE + 50 * 60 * NS),
            (BASE + 2 * HOUR_NS, BASE + 2 * HOUR_NS), (BASE - 10**15, BASE + 10**15),
            (BASE + 7 * HOUR_NS, BASE + 9 * HOUR_NS)]


def random_traces(rng: random.Random, traces: int) -> list:
    """Agent traces: tool spans under the root or under another tool span, often of the same tool
    (an MCP client's and server's spans below a framework's), some failed, a few unnamed."""
    spans = []
    for trace in range(1, traces + 1):
        start = BASE + rng.randrange(0, 6 * HOUR_NS)
        spans.append(root_span(trace, start))
        tools: list[tuple[int, str | None]] = []
        for span in range(2, 2 + rng.randrange(1, 9)):
            parent, name = 1, rng.choice(["search", "search", "lookup", "weather", None])
            if tools and rng.random() < 0.6:
                parent, parent_name = rng.choice(tools)
                if rng.random() < 0.7:
                    name = parent_name  # a chain: the same tool one layer down
            tools.append((span, name))
            spans.append(tool_span(trace, span, parent, name, start + rng.randrange(0, 3600) * NS,
                                   rng.randrange(1, 5000), failed=rng.random() < 0.2))
    return spans


@pytest.mark.parametrize("seed", range(4))
def test_kept_calls_equal_the_tool_spans_read_in_any_order_of_arrival(writer_db, normalizer, seed):
    rng = random.Random(seed)
    spans = random_traces(rng, 120)
    rng.shuffle(spans)  # children before their parents, a trace across batches
    writer = SpanWriter(writer_db, trace_cache_spans=50)  # small: traces reload from the store too
    batches = []
    while spans:
        size = rng.randrange(1, 40)
        batches.append(spans[:size])
        spans = spans[size:]
    for batch in batches:
        write(writer, normalizer, batch)
    for batch in rng.sample(batches, 3):  # retried deliveries: duplicates change nothing
        write(writer, normalizer, batch)
    chained = writer_db.execute(
        "SELECT count(*) FROM spans c JOIN spans p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id "
        "WHERE c.kind = 'tool' AND p.kind = 'tool' AND p.tool_name IS c.tool_name").fetchone()[0]
    assert chained > 20, "the traces have chains: the test exercises the merging"
    last = writer_db.execute("SELECT max(start_ns) FROM tool_calls").fetchone()[0]
    # Ending in the last call's hour: at it and after it (a live window: that hour is read from its row),
    # and just before it (that call is after the end: the hour is read call by call, without it).
    for start_ns, end_ns in [*windows(), (BASE + 17 * 60 * NS, last), (BASE + 17 * 60 * NS, last + 5 * NS),
                             (BASE + 17 * 60 * NS, last - 1)]:
        assert kept(writer_db, start_ns, end_ns) == truth(writer_db, start_ns, end_ns), (start_ns, end_ns)
    # The hour rows hold every call: the read takes whole hours from them, not call by call, and the live
    # window's last hour too: only the partial hour at its start is read call by call.
    calls = writer_db.execute("SELECT count(*) FROM tool_calls").fetchone()[0]
    assert writer_db.execute("SELECT sum(calls) FROM tool_call_hours").fetchone()[0] == calls > 100
    start_ns = (last // HOUR_NS - 2) * HOUR_NS + 10 * 60 * NS  # 50 minutes, a whole hour, the last call's hour
    sql, params = tool_rollups.tool_calls_query(start_ns, last + 5 * NS)
    read_one_by_one = sum(row[3] for row in writer_db.execute(sql, params) if row[0] == 0)
    head = writer_db.execute("SELECT count(*) FROM tool_calls WHERE start_ns >= ? AND start_ns < ?",
                             (start_ns, (last // HOUR_NS - 1) * HOUR_NS)).fetchone()[0]
    assert read_one_by_one == head > 0


def test_a_parent_arriving_last_takes_its_childrens_calls_and_failures(writer_db, normalizer, writer):
    start = BASE + 30 * 60 * NS
    # The MCP server's span and the client's arrive first (they end first), each a call of its own...
    write(writer, normalizer, [tool_span(1, 4, 3, "weather", start + 2 * MS, 50, failed=True)])
    write(writer, normalizer, [tool_span(1, 3, 2, "weather", start + MS, 80)])
    assert kept(writer_db, BASE, BASE + HOUR_NS) == [("weather", 1, 1, [80 * MS])]
    # ...then the framework's execute_tool span above them: one call, its duration, failed below it.
    write(writer, normalizer, [tool_span(1, 2, 1, "weather", start, 100), root_span(1, start)])
    assert kept(writer_db, BASE, BASE + HOUR_NS) == truth(writer_db, BASE, BASE + HOUR_NS) == [
        ("weather", 1, 1, [100 * MS])]
    # A span of another tool below is a call of its own; so is each span of a cycle: none (as the query).
    write(writer, normalizer, [tool_span(1, 5, 4, "geocode", start + 3 * MS, 10),
                               tool_span(2, 2, 3, "loop", start, 10), tool_span(2, 3, 2, "loop", start, 20)])
    assert kept(writer_db, BASE, BASE + HOUR_NS) == truth(writer_db, BASE, BASE + HOUR_NS) == [
        ("geocode", 1, 0, [10 * MS]), ("weather", 1, 1, [100 * MS])]


def test_retention_drops_the_calls_and_the_read_still_adds_up(writer_db, normalizer, writer):
    old, new = BASE, BASE + 8 * 86400 * NS
    write(writer, normalizer, [root_span(1, old), tool_span(1, 2, 1, "search", old + NS, 30),
                               root_span(2, old + 60 * NS), tool_span(2, 2, 1, "search", old + 70 * NS, 40, True)])
    write(writer, normalizer, [root_span(3, new), tool_span(3, 2, 1, "search", new + NS, 50)], new + HOUR_NS)
    enforce(writer_db, writer, max_age_s=7 * 86400, max_bytes=None, now_ns=new + HOUR_NS)
    assert writer_db.execute("SELECT count(*) FROM tool_calls").fetchone()[0] == 1
    assert writer_db.execute("SELECT count(*) FROM tool_call_hours WHERE hour < ?",
                             ((new // NS) - 86400,)).fetchone()[0] == 0
    assert writer_db.execute("SELECT count(*) FROM tool_call_hours_stale").fetchone()[0] == 1  # the old hour
    # An hour whose rows no longer add up (rows edited behind the writer's back) is read call by call.
    writer_db.execute("UPDATE tool_call_hours SET calls = calls + 5")
    for start_ns, end_ns in ((old - HOUR_NS, new + 2 * HOUR_NS), (new - new % HOUR_NS, new + HOUR_NS)):
        assert kept(writer_db, start_ns, end_ns) == truth(writer_db, start_ns, end_ns) == [
            ("search", 1, 0, [50 * MS])]


def test_an_hour_partly_deleted_is_read_call_by_call_ever_after(writer_db, normalizer, writer):
    """Spans deleted behind the writer (retention evicts whole traces, by age or by disk budget): their
    hour turns stale, and calls the writer later changes in that hour never touch its (gone) rows."""
    at = BASE + 10 * 60 * NS
    write(writer, normalizer, [root_span(1, at), tool_span(1, 2, 1, "search", at + NS, 30),
                               root_span(2, at + NS), tool_span(2, 3, 2, "search", at + 2 * NS, 40),
                               root_span(3, at + 2 * NS), tool_span(3, 2, 1, "lookup", at + 3 * NS, 50)])
    window = (BASE, BASE + 2 * HOUR_NS - 1)
    assert kept(writer_db, *window) == truth(writer_db, *window)
    writer_db.execute("DELETE FROM spans WHERE trace_id = ?", (trace_id_bytes(1),))  # as retention does
    assert writer_db.execute("SELECT hour FROM tool_call_hours_stale").fetchall() == [(BASE // NS,)]
    assert writer_db.execute("SELECT count(*) FROM tool_call_hours").fetchone()[0] == 0
    # Trace 2's parent arrives, failed, of the same tool: trace 2's call becomes its; a new call in the hour.
    write(writer, normalizer, [tool_span(2, 2, 1, "search", at + NS, 90, failed=True),
                               root_span(4, at + 5 * NS), tool_span(4, 2, 1, "search", at + 6 * NS, 60)])
    assert writer_db.execute("SELECT count(*) FROM tool_call_hours").fetchone()[0] == 0
    assert kept(writer_db, *window) == truth(writer_db, *window) == [
        ("lookup", 1, 0, [50 * MS]), ("search", 2, 1, [60 * MS, 90 * MS])]


def test_m010_backfills_what_the_writer_keeps(writer_db, normalizer):
    rng = random.Random(7)
    writer = SpanWriter(writer_db)
    spans = random_traces(rng, 60)
    rng.shuffle(spans)
    for i in range(0, len(spans), 25):
        write(writer, normalizer, spans[i:i + 25])
    by_writer = writer_db.execute("SELECT * FROM tool_calls ORDER BY call_id").fetchall()
    hours_by_writer = hour_rows(writer_db)
    # The store as schema 9 had it: no tool_calls, then the migration (only m010: later ones are applied).
    writer_db.execute("DROP TRIGGER tool_calls_follow_spans")
    writer_db.execute("DROP TABLE tool_calls")
    writer_db.execute("DROP TABLE tool_call_hours")
    writer_db.execute("DROP TABLE tool_call_hours_stale")
    (m010,) = [m for m in MIGRATIONS if m.__name__ == "m010_tool_calls"]
    writer_db.execute("BEGIN IMMEDIATE")
    m010(writer_db)
    writer_db.execute("COMMIT")
    assert writer_db.execute("SELECT * FROM tool_calls ORDER BY call_id").fetchall() == by_writer
    assert hour_rows(writer_db) == hours_by_writer and len(by_writer) > 100
    for start_ns, end_ns in windows():
        assert kept(writer_db, start_ns, end_ns) == truth(writer_db, start_ns, end_ns)


def hour_rows(db: sqlite3.Connection) -> list[tuple]:
    return [(*row[:5], sorted(tool_rollups._unpack(row[5])))
            for row in db.execute("SELECT * FROM tool_call_hours ORDER BY hour, unnamed, tool")]


def test_the_read_searches_indexes_only(writer_db, normalizer, writer):
    write(writer, normalizer, [root_span(1, BASE), tool_span(1, 2, 1, "search", BASE + NS, 30)])
    sql, params = tool_rollups.tool_calls_query(BASE - 86400 * NS, BASE + 10 * NS)
    plan = [row[-1] for row in writer_db.execute("EXPLAIN QUERY PLAN " + sql, params)]
    assert any("SEARCH tool_call_hours USING PRIMARY KEY" in step for step in plan), plan
    assert any("SEARCH t USING COVERING INDEX tool_calls_by_start" in step for step in plan), plan
    assert not any(step.startswith(("SCAN tool_calls", "SCAN t", "SCAN tool_call_hours")) for step in plan), plan
    # The writer reads the tool spans of a batch's traces by trace, never through every tool span.
    sql = tool_rollups._TOOL_SPANS_OF_TRACES.format("?, ?")
    plan = [row[-1] for row in writer_db.execute("EXPLAIN QUERY PLAN " + sql, (b"a", b"b"))]
    assert plan == ["SEARCH spans USING INDEX spans_by_trace (trace_id=?)"], plan


@pytest.mark.anyio
async def test_the_breakdown_reads_the_kept_calls(db_path, writer_db, normalizer, writer):
    spans = random_traces(random.Random(3), 40)
    write(writer, normalizer, spans)
    writer_db.commit()
    reader = StoreReader(db_path)
    await reader.open()
    try:
        now_s = (BASE + 5 * HOUR_NS + 123 * MS) / NS
        groups = await reader.tool_calls(3 * 3600, now_s)
    finally:
        await reader.close()
    now_ns = int(now_s * 1e9)
    sql, params = tool_calls_query(now_ns - 3 * HOUR_NS, now_ns)
    expected = parse_tool_calls(("tool",), writer_db.execute(sql, params))
    assert [(g.key, g.calls, g.errors, g.percentile_ms(0.5), g.percentile_ms(0.95)) for g in groups] == [
        (g.key, g.calls, g.errors, g.percentile_ms(0.5), g.percentile_ms(0.95)) for g in expected]
    assert len(groups) >= 3
