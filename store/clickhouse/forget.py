"""Deletion on request on the ClickHouse store (`llmobs-tui forget --store clickhouse://…`): every trace of
a user, a conversation or a tenant goes (its spans, log records and summary, as deletion rows that
ReplacingMergeTree's FINAL drops), and the rollups move by the exact contribution each of its spans made,
as signed delta rows: the same arithmetic as SpanWriter.forget on SQLite (SpanWriter._contribution of each
stored span, whose effective fields the writer decided when it stored it). A change marker whose example
was one of the traces keeps its fact without it, as on SQLite.

It works from ClickHouse's own rows, not from a replica's working store: with N replicas none holds all of
a user's traces, and a working store keeps a day at most. Conversations and users are computed from the
trace summaries when read (store/clickhouse/sessions.py), so they follow by themselves.

Exactly once, as far as ClickHouse allows: a chunk's rollup deltas are inserted first, with a
deduplication token made from the chunk's trace ids, and its deletion rows after them. Run again after a
crash in between, the same chunk finds the same traces and its deltas are dropped as a duplicate.

A call billed in a forgotten trace whose twin (the same call seen by another instrumentation, in another
trace: store/clickhouse/twin_calls.py) sits in a kept trace is billed in the kept one instead, as SQLite's
forget does: the kept traces are read into a working store of forget's own and decided by the writer's
rules, whose changes are shipped as a replica ships them (`rebill_kept_twins`). That happens before the
chunk's deletion rows, so that a run stopped in between finds the chunk again, and the kept twin already
billed. Not done here (said in the README): a replica's working store keeps the traces until its own
retention (a day) removes them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from store.clickhouse import rows as ch_rows
from store.clickhouse.client import ClickHouseClient, ClickHouseError, text_batches
from store.clickhouse.outbox import OutboxRecorder
from store.clickhouse.schema import BY_COST_TABLE, HOUR_NS
from store.clickhouse.sink import Shipper
from store.clickhouse.trace_sync import TraceSync
from store.clickhouse.twin_calls import LEAD_NS
from store.connection import scratch_writer
from store.writer import BILLABLE, ROLLUP_COUNTERS, SpanWriter

CHUNK_TRACES = 500

# As store/forget.py: a trace is the user's (conversation's, tenant's) when its summary or any of its spans
# names it.
_BY = {
    "user": ("SELECT trace_id FROM trace_summaries FINAL WHERE user_id = {v:String} "
             "UNION DISTINCT SELECT trace_id FROM spans FINAL WHERE user_id = {v:String}"),
    "conversation": ("SELECT trace_id FROM trace_summaries FINAL WHERE conversation_id = {v:String} "
                     "UNION DISTINCT SELECT trace_id FROM spans FINAL WHERE conversation_id = {v:String}"),
    "tenant": ("SELECT trace_id FROM trace_summaries FINAL WHERE tenant = {v:String} "
               "UNION DISTINCT SELECT trace_id FROM spans FINAL WHERE tenant = {v:String} OR own_tenant = {v:String}"),
}


@dataclass(slots=True)
class ClickHouseForgotten:
    traces: int = 0
    spans: int = 0
    logs: int = 0
    calls: int = 0
    cost_nusd: int = 0
    rebilled_traces: int = 0  # kept traces now billed for a call whose billed span was forgotten


def traces_of(client: ClickHouseClient, kind: str, value: str) -> list[bytes]:
    """The trace ids to forget for `kind` (user, conversation, tenant) = `value`, in id order."""
    rows = client.query(f"SELECT trace_id FROM ({_BY[kind]}) ORDER BY trace_id", {"v": value})
    return [bytes(row[0]) for row in rows]


def rebill_kept_twins(client: ClickHouseClient, forgotten: Sequence[dict[str, Any]], forgetting: set[bytes]) -> int:
    """The calls billed in `forgotten` (span rows) that a kept trace (one not in `forgetting`) holds a twin of:
    billed there instead. Returns how many kept traces changed."""
    keepers = [span for span in forgotten if span["billed"] and span["response_id"] and span["kind"] in BILLABLE]
    if not keepers:
        return 0
    hours = {"first": (min(s["start_ns"] for s in keepers) - LEAD_NS) // HOUR_NS,
             "last": (max(s["end_ns"] for s in keepers) + LEAD_NS) // HOUR_NS}
    response_ids = sorted({span["response_id"] for span in keepers})
    # A chunk's calls' ids in batches that fit a form field (ids are kept up to 256 characters).
    linked = {bytes(row[0]) for ids in text_batches(response_ids)
              for row in client.query(
                  "SELECT DISTINCT trace_id FROM spans WHERE response_id IN {ids:Array(String)} AND is_deleted = 0 "
                  f"AND intDiv(start_ns, {HOUR_NS}) BETWEEN {{first:Int64}} AND {{last:Int64}}",
                  {"ids": ids, **hours})} - forgetting
    if not linked:
        return 0
    with scratch_writer("llmobs-forget-") as db:
        writer = SpanWriter(db)
        writer.outbox = OutboxRecorder()
        shipper = Shipper(db, lambda: client)
        writer.sync = TraceSync(shipper.reader)
        changed = writer.rebill_kept_twins(linked, set(response_ids), {bytes(span["span_id"]) for span in forgotten})
        if not shipper.ship(force=True):
            raise ClickHouseError(shipper.stats.last_error or "ClickHouse did not take the re-billed twins")
    return changed


def forget(client: ClickHouseClient, kind: str, value: str,
           progress: Callable[[int, int], None] | None = None) -> ClickHouseForgotten:
    """Forget every trace of `kind` = `value` in this (migrated) ClickHouse database."""
    done = ClickHouseForgotten()
    trace_ids = traces_of(client, kind, value)
    forgetting = set(trace_ids)
    columns = [c for c in ch_rows.SPAN_VALUE_COLUMNS if c != "raw"]  # the content counts for nothing
    calls_at, cost_at = ROLLUP_COUNTERS.index("calls"), ROLLUP_COUNTERS.index("cost_nusd")
    for start in range(0, len(trace_ids), CHUNK_TRACES):
        chunk = trace_ids[start:start + CHUNK_TRACES]
        spans = client.query(
            f"SELECT {', '.join(columns)} FROM spans FINAL WHERE trace_id IN {{ids:Array(FixedString(16))}}",
            {"ids": chunk}, bytes_columns=("duplicate_of",))
        logs = client.query("SELECT trace_id, span_id, time_ns, record_digest FROM logs FINAL "
                            "WHERE trace_id IN {ids:Array(FixedString(16))}", {"ids": chunk})
        done.rebilled_traces += rebill_kept_twins(client, [dict(zip(columns, row)) for row in spans], forgetting)
        recorder = OutboxRecorder()
        span_keys, tool_keys = [], []
        for row in spans:
            values = dict(zip(columns, row))
            contribution = SpanWriter._contribution(ch_rows.span_state(values))
            if contribution is not None:
                recorder.rollup(contribution, -1)
                counters = dict(contribution[2])
                done.calls += counters.get(calls_at, 0)
                done.cost_nusd += counters.get(cost_at, 0)
            span_keys.append((bytes(values["trace_id"]), bytes(values["span_id"]), values["start_ns"]))
            if values["kind"] == "tool":  # a call's key, or not one: a deletion row for each
                tool_keys.append(span_keys[-1])
                recorder.tool_rollup(SpanWriter.tool_contribution(ch_rows.span_state(values),
                                                                  values["tool_name"] or ""), -1)
        version = time.time_ns()
        token = hashlib.sha256(f"forget:{kind}:{value}:".encode() + b"".join(chunk)).hexdigest()
        deltas = [ch_rows.rollup_row(*rollup) for rollup in recorder.changed_rollups()]
        if deltas:
            client.insert("rollups", deltas, ch_rows.ROLLUP_INSERT_COLUMNS,
                          settings={"insert_deduplication_token": token})
        tool_deltas = [ch_rows.tool_rollup_row(*rollup) for rollup in recorder.changed_tool_rollups()]
        if tool_deltas:
            client.insert("tool_rollups", tool_deltas, ch_rows.TOOL_ROLLUP_INSERT_COLUMNS,
                          settings={"insert_deduplication_token": token})
        if span_keys:
            client.insert("spans", ch_rows.span_tombstones(span_keys, version), ch_rows.SPAN_INSERT_COLUMNS)
        if tool_keys:
            client.insert("tool_calls", ch_rows.tool_call_tombstones(tool_keys, version),
                          ch_rows.TOOL_CALL_INSERT_COLUMNS)
        if logs:
            client.insert("logs", ch_rows.log_tombstones([(bytes(t), bytes(s), n, bytes(d)) for t, s, n, d in logs],
                                                         version), ch_rows.LOG_INSERT_COLUMNS)
        # At the start each stored summary has (its hour is in the sort key), and at the deletion's time for a
        # trace that has spans but no summary yet, so that its straggler finds it deleted (trace_sync). Each
        # (hour, trace) key's newest row, as FINAL keeps it (a live row wins a tie: one deletion row too many
        # changes nothing), without FINAL: sorted by hour first, FINAL merged every summary of the retention
        # for any 500 ids. At 100M spans (chdb, 500 ids, the same rows): 142–162 ms, 275–297 ms of CPU; by
        # FINAL 552–624 ms, 1,062–1,140 ms of CPU.
        summaries = [ch_rows.trace_tombstones([bytes(t)], version, start) for t, start in client.query(
            "SELECT trace_id, argMax(start_ns, (updated_ns, 1 - is_deleted)) FROM trace_summaries "
            f"PREWHERE trace_id IN {{ids:Array(FixedString(16))}} GROUP BY intDiv(start_ns, {HOUR_NS}), trace_id "
            "HAVING argMax(is_deleted, (updated_ns, 1 - is_deleted)) = 0", {"ids": chunk})]
        summaries.append(ch_rows.trace_tombstones(chunk, version))
        client.insert("trace_summaries", [row for rows in summaries for row in rows], ch_rows.TRACE_INSERT_COLUMNS)
        # And in the by-cost copy, at every (start, cost) it holds a row of them at: the live one, and any an
        # older version left there unknown to its writer (a straggler written while ClickHouse was down).
        # Without FINAL: a deletion row at a key already deleted changes nothing.
        by_cost: dict[bytes, list[tuple[int, int]]] = {}
        for t, start, cost in client.query(
                f"SELECT DISTINCT trace_id, start_ns, cost_nusd FROM {BY_COST_TABLE} "
                "PREWHERE trace_id IN {ids:Array(FixedString(16))} WHERE is_deleted = 0", {"ids": chunk}):
            by_cost.setdefault(bytes(t), []).append((start, cost))
        if by_cost:
            client.insert(BY_COST_TABLE, ch_rows.by_cost_rows(ch_rows.trace_tombstones(list(by_cost), version),
                                                              by_cost), ch_rows.TRACE_INSERT_COLUMNS)
        # A change marker keeps its fact (a model, a prompt version), not the forgotten example (store/forget.py).
        markers = client.query("SELECT kind, scope, after, time_ns, before, seq FROM changes FINAL "
                               "WHERE trace_id IN {ids:Array(FixedString(16))}", {"ids": chunk})
        if markers:
            client.insert("changes", [[*row[:5], None, row[5], version] for row in markers],
                          ch_rows.CHANGE_INSERT_COLUMNS)
        done.traces += len(chunk)
        done.spans += len(span_keys)
        done.logs += len(logs)
        if progress is not None:
            progress(min(start + CHUNK_TRACES, len(trace_ids)), len(trace_ids))
    return done
