"""Tool calls kept by the writer (migration m010), so that the Breakdown by tool reads a day of them
without walking tool spans: at 3M spans a week, store.queries.tool_calls_query took ~2 s of CPU for
24 h (76k tool spans: a parent lookup and a children walk per span), far over a view's 50 ms.

The figures are exactly tool_calls_query's: one call per outermost tool span of a chain of tool
spans of one tool (a framework's execute_tool, the MCP client's and server's `tools/call` below it),
the outermost span's duration, failed if any span of the chain failed. Two tables:

- `tool_calls`: one row per call (its outermost span's id, start, tool, duration, failed), kept
  exact by recomputing a trace's calls from its stored tool spans whenever a batch brings that
  trace a tool span: a parent that arrives after its child turns the child's call into part of its
  own, in any order of arrival.
- `tool_call_hours`: per UTC hour and tool, the calls, the failed ones and every call's duration
  (int64s, in no order): the exact percentiles need every duration, but a day is then ~24 rows per
  tool instead of a row per call. Updated with the same deltas as `tool_calls`, in the same
  transaction.

A read takes the whole hours of the window from `tool_call_hours` and the two partial hours at its
ends from `tool_calls`; the last one from `tool_call_hours` too when none of its calls starts after the
window's end (the current hour of a live window). Retention deletes spans behind the writer's back:
a trigger drops their calls and marks their hours stale (`tool_call_hours_stale`: their rows dropped,
no longer kept by the writer), and a stale hour is read call by call, as is any hour whose rows do
not add up to the calls `tool_calls` holds for it: the answer never depends on the hour rows being
complete.
"""

from __future__ import annotations

import sqlite3
import sys
from array import array
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from store.models import COL

if TYPE_CHECKING:  # store.queries imports store.writer, which imports this module
    from store.queries import ToolStats

NS = 1_000_000_000
HOUR_S = 3600
HOUR_NS = HOUR_S * NS

_OLD_HOUR = "(old.start_ns - (old.start_ns % 3600000000000 + 3600000000000) % 3600000000000) / 1000000000"
CREATE_TABLES = (
    """CREATE TABLE tool_calls (
        call_id INTEGER PRIMARY KEY,      -- spans.id of the call's outermost tool span
        start_ns INTEGER NOT NULL,
        tool TEXT,                        -- spans.tool_name as stored (NULL and '' are two groups, as in spans)
        duration_ns INTEGER,
        failed INTEGER NOT NULL           -- a span of the call's chain has status error or error.type
    )""",
    "CREATE INDEX tool_calls_by_start ON tool_calls (start_ns, tool, duration_ns, failed)",
    """CREATE TABLE tool_call_hours (
        hour INTEGER NOT NULL,            -- UTC hour start, seconds
        unnamed INTEGER NOT NULL,         -- 1: the calls' tool_name is NULL (tool is then '')
        tool TEXT NOT NULL,
        calls INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        durations BLOB,                   -- the calls' duration_ns, int64 little-endian, in no order
        PRIMARY KEY (hour, unnamed, tool)
    ) WITHOUT ROWID""",
    "CREATE TABLE tool_call_hours_stale (hour INTEGER PRIMARY KEY)",  # hours read call by call from now on
    # Retention deletes whole traces: their calls go, and the hours they were in turn stale (the hour
    # is floored as hour_of does, negative times included).
    f"""CREATE TRIGGER tool_calls_follow_spans AFTER DELETE ON spans WHEN old.kind = 'tool' BEGIN
        DELETE FROM tool_calls WHERE call_id = old.id;
        INSERT OR IGNORE INTO tool_call_hours_stale (hour) VALUES ({_OLD_HOUR});
        DELETE FROM tool_call_hours WHERE hour = {_OLD_HOUR};
    END""",
)

# A call: (start_ns, tool, duration_ns, failed)
Call = tuple[int, str | None, int | None, int]
_LITTLE = sys.byteorder == "little"


def hour_of(start_ns: int) -> int:
    return start_ns // HOUR_NS * HOUR_S


def pack_durations(durations: Iterable[int]) -> bytes:
    """Durations (int64 ns) as the hour rows store them: little-endian, in no order."""
    packed = array("q", durations)
    if not _LITTLE:
        packed.byteswap()
    return packed.tobytes()


def _unpack(blob: bytes | None) -> array:
    values = array("q")
    if blob:
        values.frombytes(blob)
        if not _LITTLE:
            values.byteswap()
    return values


# --- the writer's side ----------------------------------------------------------------------------

_TOOL_SPANS_OF_TRACES = ("SELECT trace_id, id, span_id, parent_span_id, tool_name, start_ns, duration_ns, "
                         "(status = 2 OR error_type IS NOT NULL) FROM spans WHERE trace_id IN ({}) AND kind = 'tool'")
_CHUNK = 500  # ids per IN (…): far below SQLite's limit on parameters


def calls_of_trace(spans: Sequence[Sequence[Any]]) -> dict[int, Call]:
    """The calls among one trace's tool spans (rows of _TOOL_SPANS_OF_TRACES without the trace id:
    id, span id, parent, tool, start, duration, failed), by outermost span id: tool_calls_query's
    chains, computed in Python for one trace."""
    by_span = {row[1]: row for row in spans}
    children: dict[bytes, list[Sequence[Any]]] = {}
    for row in spans:
        if row[2] is not None:
            children.setdefault(row[2], []).append(row)
    calls: dict[int, Call] = {}
    for row in spans:
        parent = by_span.get(row[2]) if row[2] is not None else None
        if parent is not None and parent[3] == row[3]:
            continue  # part of its parent's call (None == None: `IS`, as the query compares)
        failed, seen, stack = 0, {row[1]}, [row]
        while stack:
            member = stack.pop()
            if member[6]:
                failed = 1
            for child in children.get(member[1], ()):
                if child[3] == row[3] and child[1] not in seen:
                    seen.add(child[1])
                    stack.append(child)
        calls[row[0]] = (row[4], row[3], row[5], failed)
    return calls


def note_new_spans(db: sqlite3.Connection, records: Iterable[Sequence[Any]]) -> None:
    """After a batch's spans are inserted (in its transaction): the calls of every trace the batch
    brought a tool span, recomputed from the trace's stored tool spans, and their changes applied
    to tool_calls and tool_call_hours. A batch without tool spans costs a pass over its records."""
    kind, trace_at = COL["kind"], COL["trace_id"]
    traces = {r[trace_at] for r in records if r[kind] == "tool"}
    if not traces:
        return
    deltas: dict[tuple[int, int, str], list[Any]] = {}  # hour row → [calls, errors, added, removed]

    def account(call: Call, sign: int) -> None:
        start, tool, duration, failed = call
        delta = deltas.setdefault((hour_of(start), int(tool is None), tool or ""), [0, 0, [], []])
        delta[0] += sign
        delta[1] += sign * failed
        if duration is not None:
            delta[2 if sign > 0 else 3].append(duration)

    # One read per 500 traces, not one per trace: a statement costs more than its few rows.
    tool_spans: dict[bytes, list[tuple]] = {}
    ordered = list(traces)
    for first in range(0, len(ordered), _CHUNK):
        chunk = ordered[first:first + _CHUNK]
        for row in db.execute(_TOOL_SPANS_OF_TRACES.format(", ".join("?" * len(chunk))), chunk):
            tool_spans.setdefault(row[0], []).append(row[1:])
    wanted: dict[int, Call] = {}
    for spans in tool_spans.values():
        wanted.update(calls_of_trace(spans))
    ids = [row[0] for spans in tool_spans.values() for row in spans]
    stored: dict[int, Call] = {}
    for first in range(0, len(ids), _CHUNK):
        chunk = ids[first:first + _CHUNK]
        stored.update((row[0], tuple(row[1:])) for row in db.execute(
            f"SELECT call_id, start_ns, tool, duration_ns, failed FROM tool_calls "
            f"WHERE call_id IN ({', '.join('?' * len(chunk))})", chunk))
    gone = [call_id for call_id in stored if call_id not in wanted]
    changed = [(call_id, *call) for call_id, call in wanted.items() if stored.get(call_id) != call]
    for call_id in gone:
        account(stored[call_id], -1)
    for call_id, *call in changed:
        if call_id in stored:
            account(stored[call_id], -1)
        account(tuple(call), +1)  # type: ignore[arg-type]
    if gone:
        db.executemany("DELETE FROM tool_calls WHERE call_id = ?", [(c,) for c in gone])
    if changed:
        db.executemany("INSERT OR REPLACE INTO tool_calls (call_id, start_ns, tool, duration_ns, failed) "
                       "VALUES (?, ?, ?, ?, ?)", changed)
    _apply_hours(db, deltas)


def _apply_hours(db: sqlite3.Connection, deltas: dict[tuple[int, int, str], list[Any]]) -> None:
    hours = sorted({key[0] for key in deltas})
    stale = {row[0] for row in db.execute(
        f"SELECT hour FROM tool_call_hours_stale WHERE hour IN ({', '.join('?' * len(hours))})", hours)}
    for key, (calls, errors, added, removed) in deltas.items():
        if key[0] in stale or (not calls and not errors and not added and not removed):
            continue  # a stale hour's rows are gone for good: its reads take the calls one by one
        row = db.execute("SELECT calls, errors, durations FROM tool_call_hours WHERE hour = ? AND unnamed = ? "
                         "AND tool = ?", key).fetchone()
        total_calls, total_errors, blob = row if row is not None else (0, 0, None)
        total_calls += calls
        total_errors += errors
        if removed:
            durations = _unpack(blob)
            for duration in removed:
                if duration in durations:
                    durations.remove(duration)
            blob = pack_durations(durations)
        if added:
            blob = (blob or b"") + pack_durations(added)
        if total_calls <= 0:
            db.execute("DELETE FROM tool_call_hours WHERE hour = ? AND unnamed = ? AND tool = ?", key)
        else:
            db.execute("INSERT OR REPLACE INTO tool_call_hours (hour, unnamed, tool, calls, errors, durations) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (*key, total_calls, total_errors, blob or None))


def backfill(db: sqlite3.Connection) -> None:
    """Every stored tool span's call into both tables (m010): what the writer would have kept."""
    from store.queries import tool_calls_query

    sql, params = tool_calls_query(-(2**63), 2**63 - 1, by=())
    # The same chains, with each call's id, start and tool (by=() selects only the duration and failed).
    select = "SELECT s.duration_ns, max(chain.failed)"
    assert select in sql, "store.queries.tool_calls_query changed: follow it here"
    sql = sql.replace(select, "SELECT s.id, s.start_ns, s.tool_name, s.duration_ns, max(chain.failed)")
    calls = db.execute(sql, params).fetchall()
    db.executemany("INSERT INTO tool_calls (call_id, start_ns, tool, duration_ns, failed) VALUES (?, ?, ?, ?, ?)",
                   calls)
    hours: dict[tuple[int, int, str], list[Any]] = {}
    for _, start, tool, duration, failed in calls:
        row = hours.setdefault((hour_of(start), int(tool is None), tool or ""), [0, 0, []])
        row[0] += 1
        row[1] += failed
        if duration is not None:
            row[2].append(duration)
    db.executemany("INSERT INTO tool_call_hours (hour, unnamed, tool, calls, errors, durations) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   [(*key, n, errors, pack_durations(durations) if durations else None)
                    for key, (n, errors, durations) in hours.items()])


# --- the read -------------------------------------------------------------------------------------

# last: where the hours taken whole end. The window's last, partial hour is taken whole when no call in
#   it starts after the window's end: a live window ends now, in the current hour, which is often the
#   busiest (read call by call it was most of a 24 h read: 117k of 218k calls, their durations as text).
# kept: the window's whole hours whose rows add up to the calls tool_calls holds for them.
# raw: the ranges read call by call: the partial hours at both ends, and the whole hours not kept.
_WINDOW_SQL = """
WITH RECURSIVE last(e) AS (
    SELECT CASE WHEN ?3 < ?4 AND NOT EXISTS (
        SELECT 1 FROM tool_calls WHERE start_ns > ?2 AND start_ns < (?4 + 3600) * 1000000000)
    THEN ?4 + 3600 ELSE ?4 END),
hours(h) AS (
    SELECT ?3 WHERE ?3 < (SELECT e FROM last)
    UNION ALL SELECT h + 3600 FROM hours WHERE h + 3600 < (SELECT e FROM last)),
kept(h) AS MATERIALIZED (
    SELECT h FROM hours
    WHERE h NOT IN (SELECT hour FROM tool_call_hours_stale)
      AND (SELECT count(*) FROM tool_calls WHERE start_ns >= h * 1000000000 AND start_ns < (h + 3600) * 1000000000)
        = (SELECT coalesce(sum(calls), 0) FROM tool_call_hours WHERE hour = h)),
raw(lo, hi) AS (
    SELECT ?1, ?5
    UNION ALL SELECT ?6, ?2 WHERE (SELECT e FROM last) = ?4
    UNION ALL SELECT h * 1000000000, (h + 3600) * 1000000000 - 1 FROM hours WHERE h NOT IN (SELECT h FROM kept))
SELECT 1, unnamed, tool, sum(calls), sum(errors), CAST(group_concat(durations, x'') AS BLOB)
    FROM tool_call_hours WHERE hour IN (SELECT h FROM kept) GROUP BY unnamed, tool
UNION ALL
SELECT 0, t.tool IS NULL, coalesce(t.tool, ''), count(*), sum(t.failed), group_concat(t.duration_ns)
    FROM raw JOIN tool_calls t ON t.start_ns >= raw.lo AND t.start_ns <= raw.hi GROUP BY 2, 3
"""


def tool_calls_query(start_ns: int, end_ns: int) -> tuple[str, tuple[int, ...]]:
    """(sql, params): the tool calls started in [start_ns, end_ns] per tool, for parse_tool_calls."""
    start_ns, end_ns = int(start_ns), int(end_ns)
    first_hour = -(-start_ns // HOUR_NS) * HOUR_S  # the first whole hour's start
    end_hour = (end_ns + 1) // HOUR_NS * HOUR_S  # the end of the last whole hour (exclusive)
    if first_hour >= end_hour:  # no whole hour: every call read from tool_calls
        head_end, tail_start = end_ns, end_ns + 1
    else:
        head_end, tail_start = first_hour * NS - 1, end_hour * NS
    # ?1 start_ns, ?2 end_ns, ?3 first whole hour, ?4 end of the whole hours, ?5 head's end, ?6 tail's start
    return _WINDOW_SQL, (start_ns, end_ns, first_hour, end_hour, head_end, tail_start)


def parse_tool_calls(rows: Iterable[Sequence[Any]]) -> list[ToolStats]:
    """Rows of tool_calls_query → one ToolStats per tool, most called first: what
    store.queries.parse_tool_calls(("tool",), …) makes of the spans (durations in another order)."""
    from store.queries import ToolStats

    groups: dict[tuple[int, str], ToolStats] = {}
    for from_hours, unnamed, tool, calls, errors, durations in rows:
        group = groups.get((unnamed, tool))
        if group is None:
            group = groups[(unnamed, tool)] = ToolStats(key={"tool": None if unnamed else (tool or None)})
        group.calls += calls
        group.errors += errors or 0
        if durations:
            group.durations_ns.extend(_unpack(durations) if from_hours else map(int, durations.split(",")))
    return most_called_first(list(groups.values()))


def most_called_first(stats: list[ToolStats]) -> list[ToolStats]:
    """parse_tool_calls' order: most calls, then most errors, then by key."""
    stats.sort(key=lambda g: (-g.calls, -g.errors, tuple(str(v or "") for v in g.key.values())))
    return stats
