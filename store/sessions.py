"""Conversations (sessions): one summary row per conversation, kept current by the writer.

A trace belongs to the conversation named by its first span, in start order, that carries one
(`traces.conversation_id`, set by store/writer.py `_summary`; its user likewise). The
`conversations` row sums that conversation's traces (its turns). After each batch the writer
refreshes the rows of the conversations its traces were in before the batch and are in after it,
reading their turns through `traces_by_conversation`, and then the `users` rows of those
conversations' users (the sum of each user's conversations); retention does the same for the
traces it evicts. So the Sessions screen reads one row per conversation (or per user), sorted on an
index, and never groups spans (the target: 100k conversations listed in ≤ 50 ms).

Also here, pure and free of I/O: the per-turn growth of a conversation's context (the prompt it
sends, the history it re-sends and what that costs) and the models' context windows.

Read queries are returned as (sql, params), as store.queries.tool_calls_query does: this module is
imported by the writer, which store.dashboards imports, so it cannot import store.dashboards first.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from store.models import TraceErrorCounts

NS = 1_000_000_000
_CHUNK = 400  # ids per IN (...) list: well under SQLite's variable limit

# What a conversation's row holds, in the table's column order.
CONVERSATION_COLUMNS = (
    "conversation_id", "user_id", "turns", "first_ns", "last_ns", "llm_calls", "input_tokens", "output_tokens",
    "cost_nusd", "unpriced_calls", "errors", "failed_turns", "p95_ns", "updated_ns",
)


def _upsert(table: str, columns: Sequence[str]) -> str:
    """An upsert that updates a row in place: SQLite then rewrites only the indexes whose columns
    changed (INSERT OR REPLACE deletes and reinserts the row in every index)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({columns[0]}) DO UPDATE SET {updates}")


_UPSERT = _upsert("conversations", CONVERSATION_COLUMNS)
# One row per turn, in the order the refresh folds them (conversation, then start).
_TURN_FIGURES = (
    "conversation_id, start_ns, end_ns, duration_ns, user_id, llm_calls, input_tokens, output_tokens, cost_nusd, "
    "unpriced_calls, errors_api + errors_validation + errors_guardrail, error_spans"
)


# --- the write side (the writer process and migrations) ----------------------------------------------


def rows_in(db: sqlite3.Connection, sql: str, ids: Sequence[Any]) -> Iterator[tuple]:
    """The rows of `sql` (with `{marks}` where the IN list goes) for `ids`, in chunks of _CHUNK (an
    UPDATE or DELETE runs the same way; its rows are none)."""
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        yield from db.execute(sql.format(marks=", ".join("?" * len(chunk))), chunk)


def stored_conversations(db: sqlite3.Connection, trace_ids: Sequence[bytes]) -> set[str]:
    """The conversations these traces are stored in now (before an upsert or a delete changes them)."""
    return {row[0] for row in rows_in(
        db, "SELECT conversation_id FROM traces WHERE trace_id IN ({marks}) AND conversation_id IS NOT NULL",
        trace_ids)}


def write_traces(db: sqlite3.Connection, upsert_sql: str, rows: Sequence[tuple], conversation_at: int,
                 now_ns: int) -> None:
    """Upsert the writer's trace summary rows, then bring every conversation they touch up to date:
    the one each trace is in now and, when a late span moved a trace, the one it was in. The turns
    as they were and as they are let a long conversation's row move by deltas (apply_turn_changes)."""
    if not rows:
        return
    trace_ids = [row[0] for row in rows]
    before = stored_turns(db, trace_ids)
    db.executemany(upsert_sql, rows)
    if not before and all(row[conversation_at] is None for row in rows):
        return  # no conversation before or after: nothing to refresh
    apply_turn_changes(db, before, stored_turns(db, trace_ids), now_ns)


def stored_turns(db: sqlite3.Connection, trace_ids: Sequence[bytes]) -> dict[bytes, tuple]:
    """The turn figures (_TURN_FIGURES) of those of these traces that are in a conversation."""
    return {row[0]: row[1:] for row in rows_in(
        db, f"SELECT trace_id, {_TURN_FIGURES} FROM traces WHERE trace_id IN ({{marks}}) "
            "AND conversation_id IS NOT NULL", trace_ids)}


# A conversation of at most this many turns is recomputed from its turns (cheap, and exact in every
# case); a longer one moves by deltas (its user and p95 read through an index) unless a change could
# have moved its first or last turn away (a late root moving a trace to another conversation), when
# it too is recomputed. Recomputing reads every turn of every touched conversation on every batch:
# with 64 here, bench.components --workload heavy --per-commit 1 (~20 turns a conversation) wrote
# 66-71 µs per span, against 58-63 at 8 and 16 (57-58 at 2, where one-turn conversations take
# two point queries instead of reading their one row).
RECOMPUTE_TURNS = 8
# Positions in a conversations row (CONVERSATION_COLUMNS) and in a turn (_TURN_FIGURES).
_ADDED = ((5, 5), (6, 6), (7, 7), (8, 8), (9, 9), (10, 10))  # (row column, turn figure) summed as-is


def apply_turn_changes(db: sqlite3.Connection, before: Mapping[bytes, tuple], after: Mapping[bytes, tuple],
                       now_ns: int) -> None:
    """Update the rows of the conversations whose turns changed (turn figures before and after, by
    trace id), and then their users' rows. Exact: a delta is applied only where it is provably the
    same as recomputing; otherwise, and for short conversations, the row is recomputed."""
    changes: dict[str, list[tuple[tuple | None, tuple | None]]] = {}
    for trace_id in before.keys() | after.keys():
        old, new = before.get(trace_id), after.get(trace_id)
        if old == new:
            continue
        for conversation in {turn[0] for turn in (old, new) if turn is not None}:
            changes.setdefault(conversation, []).append((old if old is not None and old[0] == conversation else None,
                                                         new if new is not None and new[0] == conversation else None))
    if not changes:
        return
    rows = _conversation_rows(db, list(changes))
    recompute: list[str] = []
    updated: list[tuple] = []
    users: set[str] = set()
    for conversation, turn_changes in changes.items():
        row = rows.get(conversation)
        moved = _moved_by_deltas(db, row, turn_changes, now_ns) if row is not None else None
        if moved is None:
            recompute.append(conversation)
            continue
        updated.append(moved)
        users.update(user for user in (row[1], moved[1]) if user is not None)  # type: ignore[index]
    if updated:
        db.executemany(_UPSERT, updated)
    if recompute:
        refresh(db, recompute, now_ns)  # the users of these conversations are refreshed there
    refresh_users(db, users)


def _conversation_rows(db: sqlite3.Connection, conversation_ids: Sequence[str]) -> dict[str, tuple]:
    return {row[0]: row for row in rows_in(
        db, f"SELECT {', '.join(CONVERSATION_COLUMNS)} FROM conversations WHERE conversation_id IN ({{marks}})",
        conversation_ids)}


def _moved_by_deltas(db: sqlite3.Connection, row: tuple, turn_changes: Sequence[tuple[tuple | None, tuple | None]],
                     now_ns: int) -> tuple | None:
    """The conversation's new row from its old one and the changed turns, or None when it must be
    recomputed (short, or a change that may have moved its first turn, last turn or user)."""
    turns = row[2] + sum(new is not None for _, new in turn_changes) - sum(old is not None for old, _ in turn_changes)
    if min(row[2], turns) <= RECOMPUTE_TURNS:
        return None
    first, last, user = row[3], row[4], row[1]
    for old, new in turn_changes:
        # A turn that held the first start (or the last end) and moved or left: the next one is unknown.
        # (A late span only moves a trace's start earlier and its end later: this is a trace leaving.)
        if old is not None and old[1] == first and (new is None or new[1] > old[1]):
            return None
        if old is not None and old[2] == last and (new is None or new[2] < old[2]):
            return None
    if any(turn is not None and turn[4] is not None for change in turn_changes for turn in change):
        user = first_named_user(db, row[0])  # a changed turn names a user, or named the one it had
    out = list(row)
    out[1], out[2] = user, turns
    for _old, new in turn_changes:
        if new is not None:
            first, last = min(first, new[1]), max(last, new[2])
    out[3], out[4] = first, last
    for column, figure in _ADDED:
        out[column] += (sum(new[figure] for _, new in turn_changes if new is not None)
                        - sum(old[figure] for old, _ in turn_changes if old is not None))
    out[11] += (sum(bool(new[10] or new[11]) for _, new in turn_changes if new is not None)
                - sum(bool(old[10] or old[11]) for old, _ in turn_changes if old is not None))
    out[12] = turn_duration_rank(db, row[0], turns, 0.95)
    out[13] = now_ns
    return tuple(out)


def first_named_user(db: sqlite3.Connection, conversation_id: str) -> str | None:
    """The user of the conversation's first turn (start, then trace id) that names one: the first
    entry of traces_by_conversation with a user, usually its first."""
    row = db.execute("SELECT user_id FROM traces WHERE conversation_id = ? AND user_id IS NOT NULL "
                     "ORDER BY start_ns, trace_id LIMIT 1", (conversation_id,)).fetchone()
    return row[0] if row is not None else None


def turn_duration_rank(db: sqlite3.Connection, conversation_id: str, turns: int, q: float) -> int:
    """The q-quantile of a conversation's turn durations by nearest rank (as nearest_rank), read from
    the top of traces_by_conversation_duration: a p95 walks 5 % of the turns' index entries."""
    from_top = turns - max(1, math.ceil(q * turns))
    row = db.execute("SELECT duration_ns FROM traces WHERE conversation_id = ? ORDER BY duration_ns DESC "
                     "LIMIT 1 OFFSET ?", (conversation_id, from_top)).fetchone()
    return row[0] if row is not None else 0


def refresh(db: sqlite3.Connection, conversation_ids: Iterable[str], now_ns: int) -> int:
    """Recompute these conversations' rows from their traces (a conversation with none left is
    deleted), then the rows of the users they had and have. Returns the conversation rows written."""
    ordered = sorted(set(conversation_ids))
    written = 0
    users: set[str] = set()
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start:start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        users.update(row[0] for row in db.execute(
            f"SELECT user_id FROM conversations WHERE conversation_id IN ({marks}) AND user_id IS NOT NULL", chunk))
        turns: dict[str, list[tuple]] = {}
        # trace_id last: turns starting together fold in one order, the one first_named_user reads.
        for row in db.execute(f"SELECT {_TURN_FIGURES} FROM traces WHERE conversation_id IN ({marks}) "
                              f"ORDER BY conversation_id, start_ns, trace_id", chunk):
            turns.setdefault(row[0], []).append(row)
        gone = [(c,) for c in chunk if c not in turns]
        if gone:
            db.executemany("DELETE FROM conversations WHERE conversation_id = ?", gone)
        if turns:
            summaries = [summarize(c, rows, now_ns) for c, rows in turns.items()]
            db.executemany(_UPSERT, summaries)
            users.update(row[1] for row in summaries if row[1] is not None)
            written += len(turns)
    refresh_users(db, users)
    return written


_USER_FIGURES = ("user_id", "conversations", "turns", "llm_calls", "input_tokens", "output_tokens", "cost_nusd",
                 "unpriced_calls", "errors", "first_ns", "last_ns")
_UPSERT_USER = _upsert("users", _USER_FIGURES)


def refresh_users(db: sqlite3.Connection, user_ids: Iterable[str]) -> None:
    """Recompute these users' rows from their conversations (conversations_by_user); a user with no
    conversation left is deleted."""
    ordered = sorted(set(user_ids))
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start:start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(
            "SELECT user_id, count(*), sum(turns), sum(llm_calls), sum(input_tokens), sum(output_tokens), "
            "sum(cost_nusd), sum(unpriced_calls), sum(errors), min(first_ns), max(last_ns) FROM conversations "
            f"WHERE user_id IN ({marks}) GROUP BY user_id", chunk).fetchall()
        found = {row[0] for row in rows}
        gone = [(u,) for u in chunk if u not in found]
        if gone:
            db.executemany("DELETE FROM users WHERE user_id = ?", gone)
        if rows:
            db.executemany(_UPSERT_USER, rows)


def summarize(conversation_id: str, turns: Sequence[Sequence[Any]], now_ns: int) -> tuple:
    """A conversation's row from its turns (rows of _TURN_FIGURES, in start order)."""
    user = next((t[4] for t in turns if t[4] is not None), None)
    durations = sorted(t[3] for t in turns)
    return (
        conversation_id, user, len(turns), min(t[1] for t in turns), max(t[2] for t in turns),
        sum(t[5] for t in turns), sum(t[6] for t in turns), sum(t[7] for t in turns), sum(t[8] for t in turns),
        sum(t[9] for t in turns), sum(t[10] for t in turns), sum(1 for t in turns if t[10] or t[11]),
        nearest_rank(durations, 0.95), now_ns,
    )


def nearest_rank(ordered: Sequence[int], q: float) -> int:
    """The q-quantile of sorted values by nearest rank (an observed value, exact; 0 when empty)."""
    if not ordered:
        return 0
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def backfill(db: sqlite3.Connection, now_ns: int | None = None) -> int:
    """Fill traces' conversation and user from their spans, then every conversation's row: for a
    store written before the writer kept them (migration m006). Returns the conversations written."""
    # The same rule as the writer's summary: the first span in (start, span id) order carrying one.
    for column in ("conversation_id", "user_id"):
        db.execute(
            f"UPDATE traces SET {column} = (SELECT s.{column} FROM spans s WHERE s.trace_id = traces.trace_id "
            f"AND s.{column} IS NOT NULL ORDER BY s.start_ns, s.span_id LIMIT 1) "
            f"WHERE EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = traces.trace_id AND s.{column} IS NOT NULL)")
    ids = [row[0] for row in db.execute(
        "SELECT DISTINCT conversation_id FROM traces WHERE conversation_id IS NOT NULL")]
    return refresh(db, ids, time.time_ns() if now_ns is None else now_ns)


# --- the read side: the Sessions screen, a conversation, `report --by user` --------------------------

# Sessions screen sorts → the expression ordered by (each but `first` and `user` walks an index).
SESSION_SORTS = {
    "last": "c.last_ns",
    "first": "c.first_ns",
    "turns": "c.turns",
    "tokens": "(c.input_tokens + c.output_tokens)",
    "cost": "c.cost_nusd",
    "errors": "c.errors",
    "p95": "c.p95_ns",
    "user": "c.user_id",
}
# By user: over the users table (no filter; `last`, `cost` and `tokens` walk an index), or grouping
# the matching conversations (a filter: the figures of those conversations only).
USER_SORTS = {
    "last": ("u.last_ns", "max(c.last_ns)"),
    "first": ("u.first_ns", "min(c.first_ns)"),
    "conversations": ("u.conversations", "count(*)"),
    "turns": ("u.turns", "sum(c.turns)"),
    "tokens": ("(u.input_tokens + u.output_tokens)", "sum(c.input_tokens + c.output_tokens)"),
    "cost": ("u.cost_nusd", "sum(c.cost_nusd)"),
    "errors": ("u.errors", "sum(c.errors)"),
    "user": ("u.user_id", "c.user_id"),
}


@dataclass(frozen=True, slots=True)
class ConversationRow:
    conversation_id: str
    user_id: str | None
    turns: int
    first_ns: int
    last_ns: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_nusd: int
    unpriced_calls: int
    errors: int
    failed_turns: int
    p95_ns: int


@dataclass(frozen=True, slots=True)
class UserRow:
    user_id: str
    conversations: int
    turns: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_nusd: int
    unpriced_calls: int
    errors: int
    first_ns: int
    last_ns: int


def _matching(where: str) -> str:
    """A filter over `traces t` (llmobs_tui.filtering) as a clause over `conversations c`: the
    conversation matches when any of its traces does (through traces_by_conversation)."""
    if where.strip() in ("", "1"):
        return "1"
    return f"EXISTS (SELECT 1 FROM traces t WHERE t.conversation_id = c.conversation_id AND ({where}))"


def conversations_query(window_s: float, now_s: float, where: str = "1", params: Sequence[Any] = (),
                        sort: str = "last", descending: bool = True, limit: int = 500,
                        user: str | None = None) -> tuple[str, tuple]:
    """Conversations seen in the window (their last turn ended in it), one row each: figures over
    the whole conversation. Sorted on the sort's index, stopping at `limit`. `user`: only that
    user's conversations (the ones their row in `users` sums; through conversations_by_user)."""
    order = SESSION_SORTS[sort]
    direction = "DESC" if descending else "ASC"
    since = int((now_s - window_s) * NS)
    columns = ", ".join("c." + c for c in CONVERSATION_COLUMNS[:-1])
    # Ties broken in the index's own order (each index ends with last_ns, then the primary key).
    tiebreak = "c.conversation_id" if sort == "last" else "c.last_ns"
    whose = "" if user is None else "c.user_id = ? AND "
    return (f"SELECT {columns} FROM conversations c WHERE {whose}c.last_ns >= ? AND {_matching(where)} "
            f"ORDER BY {order} {direction}, {tiebreak} {direction} LIMIT ?",
            (*(() if user is None else (user,)), since, *params, limit))


def parse_conversations(rows: Iterable[Sequence[Any]]) -> list[ConversationRow]:
    return [ConversationRow(*row) for row in rows]


def users_query(window_s: float, now_s: float, where: str = "1", params: Sequence[Any] = (),
                sort: str = "cost", descending: bool = True, limit: int = 500) -> tuple[str, tuple]:
    """The users of the window's conversations (top users by cost, tokens, …): each user's row over
    all their conversations, or with a filter the sums of their conversations that match."""
    user_order, grouped_order = USER_SORTS[sort]
    direction = "DESC" if descending else "ASC"
    since = int((now_s - window_s) * NS)
    if _matching(where) == "1":
        tiebreak = "u.user_id" if sort == "last" else "u.last_ns"
        return (f"SELECT {', '.join('u.' + c for c in _USER_FIGURES)} FROM users u WHERE u.last_ns >= ? "
                f"ORDER BY {user_order} {direction}, {tiebreak} {direction} LIMIT ?", (since, limit))
    order = grouped_order
    return ("SELECT c.user_id, count(*), sum(c.turns), sum(c.llm_calls), sum(c.input_tokens), "
            "sum(c.output_tokens), sum(c.cost_nusd), sum(c.unpriced_calls), sum(c.errors), min(c.first_ns), "
            f"max(c.last_ns) FROM conversations c WHERE c.last_ns >= ? AND c.user_id IS NOT NULL "
            f"AND {_matching(where)} GROUP BY c.user_id ORDER BY {order} {direction}, c.user_id LIMIT ?",
            (since, *params, limit))


def parse_users(rows: Iterable[Sequence[Any]]) -> list[UserRow]:
    return [UserRow(*row) for row in rows]


# A conversation opened: its turns, and the billed calls of each (the context they sent).
TURN_COLUMNS = (
    "trace_id", "start_ns", "end_ns", "duration_ns", "root_name", "llm_calls", "input_tokens", "output_tokens",
    "cost_nusd", "unpriced_calls", "errors_api", "errors_validation", "errors_guardrail", "error_spans", "user_id",
    "models",
)
MAX_TURNS = 2000  # a conversation view shows at most this many turns (the latest)


@dataclass(frozen=True, slots=True)
class TurnRow(TraceErrorCounts):
    trace_id: bytes
    start_ns: int
    end_ns: int
    duration_ns: int
    root_name: str | None
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_nusd: int
    unpriced_calls: int
    errors_api: int
    errors_validation: int
    errors_guardrail: int
    error_spans: int
    user_id: str | None
    models: str | None


def turns_query(conversation_id: str, limit: int = MAX_TURNS) -> tuple[str, tuple]:
    """The conversation's latest `limit` turns (traces), oldest first."""
    columns = ", ".join("t." + c for c in TURN_COLUMNS)
    return (f"SELECT * FROM (SELECT {columns} FROM traces t WHERE t.conversation_id = ? "
            f"ORDER BY t.start_ns DESC, t.trace_id DESC LIMIT ?) ORDER BY start_ns, trace_id",
            (conversation_id, limit))


def parse_turns(rows: Iterable[Sequence[Any]]) -> list[TurnRow]:
    return [TurnRow(bytes(row[0]), *row[1:]) for row in rows]


def calls_query(conversation_id: str, span_columns: Sequence[str], since_ns: int = 0) -> tuple[str, tuple]:
    """The billed calls of the conversation's turns starting at or after `since_ns`: `span_columns`
    of each (store.dashboards.SPAN_COLUMNS_FOR_TRACE, for a SpanRow), then its trace id and the
    input and cache-read prices (USD per 1M tokens) of the row that priced it."""
    columns = ", ".join("s." + c for c in span_columns)
    return (f"SELECT {columns}, s.trace_id, p.input, p.cache_read FROM traces t "
            f"JOIN spans s ON s.trace_id = t.trace_id LEFT JOIN price_rows p ON p.id = s.price_id "
            f"WHERE t.conversation_id = ? AND t.start_ns >= ? AND s.billed = 1 ORDER BY s.start_ns, s.id",
            (conversation_id, since_ns))


@dataclass(frozen=True, slots=True)
class BilledCall:
    """A billed call of a turn: its span (store.dashboards.SpanRow) and the input and cache-read
    prices (USD per 1M tokens) of the row that priced it."""

    trace_id: bytes
    span: Any
    input_price: float | None
    cache_read_price: float | None


@dataclass(slots=True)
class ConversationDetail:
    """An opened conversation: its turns in order and their billed calls in start order."""

    conversation_id: str
    turns: list[TurnRow]
    calls: list[BilledCall]

    def growth(self, windows: Mapping[str, int] | None = None) -> list[TurnContext]:
        calls = [Call(c.trace_id, c.span.input_tokens or 0, c.span.output_tokens or 0, c.span.cache_read_tokens or 0,
                      c.span.model, c.input_price, c.cache_read_price) for c in self.calls]
        return context_growth(self.turns, calls, windows)

    def last_calls(self) -> dict[bytes, Any]:
        """Each turn's last billed call (by start): its prompt holds the conversation so far and its
        output is the turn's answer."""
        return {c.trace_id: c.span for c in self.calls}


def parse_conversation(conversation_id: str, turn_rows: Iterable[Sequence[Any]],
                       call_rows: Iterable[Sequence[Any]]) -> ConversationDetail:
    """turns_query's and calls_query's rows (with store.dashboards.SPAN_COLUMNS_FOR_TRACE) as one detail."""
    from store.dashboards import SpanRow  # not at the top: see the module docstring

    turns = parse_turns(turn_rows)
    shown = {t.trace_id for t in turns}
    calls = []
    for row in call_rows:
        *span, trace_id, input_price, cache_price = row
        if bytes(trace_id) in shown:
            calls.append(BilledCall(bytes(trace_id), SpanRow(*span), input_price, cache_price))
    return ConversationDetail(conversation_id, turns, calls)


def user_report(db: sqlite3.Connection, window_s: float, now_s: float | None = None,
                limit: int = 1000) -> dict[str, Any]:
    """`report --by user`: per user, over the traces that started in the window: LLM calls,
    conversations, turns (traces), tokens, cost, errors. User is no rollup dimension (cardinality):
    this reads the traces table (traces_by_start), not the rollups."""
    from store.connection import read_snapshot

    now_s = int(now_s if now_s is not None else time.time())
    start_s = now_s - int(window_s)
    sql = ("SELECT user_id, count(*), count(DISTINCT conversation_id), sum(llm_calls), sum(input_tokens), "
           "sum(output_tokens), sum(cache_read_tokens), sum(cost_nusd), sum(unpriced_calls), sum(errors_api), "
           "sum(errors_validation), sum(errors_guardrail), sum(error_spans > 0) FROM traces "
           "WHERE start_ns >= ? AND start_ns <= ? AND user_id IS NOT NULL GROUP BY user_id "
           "ORDER BY sum(cost_nusd) DESC, sum(input_tokens + output_tokens) DESC, user_id LIMIT ?")
    with read_snapshot(db):
        rows = db.execute(sql, (start_s * NS, now_s * NS, limit)).fetchall()
    return user_report_result(start_s, now_s, window_s, rows)


def user_report_result(start_s: int, now_s: int, window_s: float, rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """user_report's document from its query's rows (user, traces, conversations, calls, input, output,
    cache read, cost, unpriced, api, validation and guardrail errors, failed traces), from either backend."""
    users = []
    for (user, traces, conversations, calls, inp, out, cache_read, cost, unpriced, e_api, e_val, e_guard,
         failed) in rows:
        users.append({
            "user": user, "traces": traces, "conversations": conversations, "calls": calls,
            "tokens": {"input": inp, "output": out, "cache_read": cache_read},
            "cost_usd": cost / 1e9, "unpriced_calls": unpriced,
            "errors": {"api": e_api, "validation": e_val, "guardrail": e_guard}, "failed_traces": failed,
        })
    return {
        "window": {"start": _iso(start_s), "end": _iso(now_s), "seconds": int(window_s)},
        "by": ["user"],
        "groups": users,
    }


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# --- context growth ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """`[sessions]` in llmobs.toml (parsed by llmobs_tui/config.py): warn when a conversation's prompt
    passes `context_warning` of its model's context window; `context_windows` (model-name prefix →
    tokens) adds to or overrides CONTEXT_WINDOWS."""

    context_warning: float = 0.8
    context_windows: Mapping[str, int] = field(default_factory=dict)


# Context windows (input tokens) of known model families, as the providers document them. The most
# specific prefix of the model name wins (`gpt-4o-mini` before `gpt-4o` before `gpt-4`); a version
# suffix (`-2024-08-06`) still matches. `[sessions] context_windows` in llmobs.toml adds or overrides.
CONTEXT_WINDOWS: Mapping[str, int] = {
    "gpt-5": 400_000,
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "claude": 200_000,
    "gemini-1.5-pro": 2_097_152,
    "gemini-1.5-flash": 1_048_576,
    "gemini-2": 1_048_576,
    "gemini-3": 1_048_576,
    "llama-3": 128_000,
    "mistral-large": 128_000,
    "command-r": 128_000,
    "deepseek": 128_000,
}


def context_window(model: str | None, overrides: Mapping[str, int] | None = None) -> int | None:
    """The context window of `model`: the longest matching prefix, the user's table first (a
    provider prefix such as `openai/` or `models/` is ignored). None for an unknown model."""
    if not model:
        return None
    name = model.lower().rsplit("/", 1)[-1]
    for table in (overrides or {}, CONTEXT_WINDOWS):
        best = max((p for p in table if name.startswith(p.lower())), key=len, default=None)
        if best is not None:
            return table[best]
    return None


@dataclass(frozen=True, slots=True)
class Call:
    """A billed call of a turn, as the growth needs it (prices in USD per 1M tokens)."""

    trace_id: bytes
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    model: str | None
    input_price: float | None
    cache_read_price: float | None


@dataclass(frozen=True, slots=True)
class TurnContext:
    """One turn's context. `context_tokens`: the largest prompt a call of the turn sent; `history_tokens`:
    what of it the previous turn had already sent or received (re-sent history, estimated as
    min(this prompt, the previous turn's largest prompt + its last call's output)); `history_nusd`: what
    re-sending it cost (cached tokens at the cache-read price, the rest at the input price; None unpriced);
    `cumulative_input`: input tokens of every turn so far; `window`: the model's context window."""

    trace_id: bytes
    context_tokens: int
    history_tokens: int
    history_nusd: int | None
    cumulative_input: int
    model: str | None
    window: int | None

    @property
    def share(self) -> float | None:
        return self.context_tokens / self.window if self.window else None


def context_growth(turns: Sequence[TurnRow], calls: Sequence[Call],
                   windows: Mapping[str, int] | None = None) -> list[TurnContext]:
    """Per turn (in order), the context it sent and what re-sending the history cost."""
    by_trace: dict[bytes, list[Call]] = {}
    for call in calls:
        by_trace.setdefault(call.trace_id, []).append(call)
    growth: list[TurnContext] = []
    cumulative = 0
    previous_context = previous_output = None
    for turn in turns:
        cumulative += turn.input_tokens
        turn_calls = by_trace.get(turn.trace_id, [])
        largest = max(turn_calls, key=lambda c: c.input_tokens, default=None)
        context = largest.input_tokens if largest is not None else 0
        history = 0
        if previous_context is not None and previous_output is not None:
            history = min(context, previous_context + previous_output)
        cost = None
        if largest is not None and largest.input_price is not None:
            cached = min(history, largest.cache_read_tokens)
            cache_price = largest.cache_read_price if largest.cache_read_price is not None else largest.input_price
            # USD per 1M tokens → nano-USD per token is × 1000.
            cost = round(cached * cache_price * 1000 + (history - cached) * largest.input_price * 1000)
        model = largest.model if largest is not None else None
        growth.append(TurnContext(turn.trace_id, context, history, cost, cumulative, model,
                                  context_window(model, windows)))
        if turn_calls:
            previous_context = context
            previous_output = turn_calls[-1].output_tokens
    return growth


def context_warning(growth: Sequence[TurnContext], share: float) -> tuple[int, TurnContext] | None:
    """The first turn (1-based number, its context) whose prompt passed `share` of its model's window."""
    for number, turn in enumerate(growth, start=1):
        if turn.share is not None and turn.share >= share:
            return number, turn
    return None
