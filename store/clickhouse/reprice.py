"""A changed price table applied to a ClickHouse store's history (`llmobs-tui reprice --store clickhouse://…`):
the same arithmetic as SpanWriter.reprice on SQLite, from ClickHouse's own rows, while the replicas keep
serving (with N replicas no working store holds all the calls, and a working store keeps a day at most).

Every billable span is priced again with `price(provider, response model, request model, tokens)`. For the
traces with a call whose price changed, a chunk at a time: the rollups move by each such span's exact
contribution before and after (SpanWriter._contribution of the row as stored, then with its new cost), the
spans get a new row version with the new cost, price row and tier, and the trace summaries are computed
again from all their spans (SpanWriter._summary), as SQLite's reprice leaves them.

Exactly once, as far as ClickHouse allows (as store/clickhouse/forget.py): a chunk's rollup deltas go first,
with a deduplication token made from the price table's digest and the chunk's trace ids, its rows after.
Stopped in between, a second run finds the same calls still at their old price, forms the same first chunk,
and its deltas are dropped as a duplicate. A replica that later receives a span of a repriced trace reads
the new rows first (store/clickhouse/trace_sync.py: the summary's version is newer than its copy).

New spans are priced by the replicas' own table: restart them with the same `--prices`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from store.clickhouse import rows as ch_rows
from store.clickhouse.client import ClickHouseClient
from store.clickhouse.outbox import OutboxRecorder
from store.clickhouse.schema import BY_COST_TABLE
from store.writer import TRACE_SUMMARY_COLUMNS, SpanWriter, TraceState

CHUNK_TRACES = 500
_PRICED = ("trace_id", "span_id", "provider", "response_model", "request_model", "input_tokens", "output_tokens",
           "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost_nusd", "price_id", "price_tier")
_SUMMARY_AT = [TRACE_SUMMARY_COLUMNS.index(name) for name in ch_rows.TRACE_COLUMNS]


@dataclass(slots=True)
class Repriced:
    scanned: int = 0  # billable calls priced again
    changed: int = 0  # of them, calls whose cost, price row or tier changed
    traces: int = 0


def reprice(client: ClickHouseClient, price: Callable[..., tuple], digest: str,
            progress: Callable[[int, int], None] | None = None) -> Repriced:
    """Apply `price` (PriceTable.price_call) to every billable call of this (migrated) ClickHouse database."""
    done = Repriced()
    changes: dict[bytes, dict[bytes, tuple]] = {}  # trace → span → (price_id, cost, tier)
    for row in client.query(f"SELECT {', '.join(_PRICED)} FROM spans FINAL WHERE kind IN ('llm', 'embedding') "
                            "ORDER BY trace_id, span_id"):
        trace_id, span_id, provider, response_model, request_model, *rest = row
        tokens, (cost, price_id, tier) = tuple(rest[:5]), rest[5:]
        done.scanned += 1
        priced = price(provider, response_model, request_model, tokens)
        new_tier = priced[2] if len(priced) > 2 else None
        if (priced[0], priced[1], new_tier) != (price_id, cost, tier):
            changes.setdefault(bytes(trace_id), {})[bytes(span_id)] = (priced[0], priced[1], new_tier)
            done.changed += 1
    trace_ids = sorted(changes)
    for start in range(0, len(trace_ids), CHUNK_TRACES):
        chunk = trace_ids[start:start + CHUNK_TRACES]
        _reprice_chunk(client, chunk, changes, digest)
        done.traces += len(chunk)
        if progress is not None:
            progress(min(start + CHUNK_TRACES, len(trace_ids)), len(trace_ids))
    return done


def _reprice_chunk(client: ClickHouseClient, chunk: list[bytes], changes: dict[bytes, dict[bytes, tuple]],
                   digest: str) -> None:
    traces: dict[bytes, TraceState] = {}
    changed_rows: list[list[Any]] = []
    recorder = OutboxRecorder()
    for span in ch_rows.stored_spans(client, chunk, with_words=True):
        trace_id = span["trace_id"]
        s = ch_rows.span_state(span)
        new = changes[trace_id].get(span["span_id"])
        if new is not None:
            old = SpanWriter._contribution(s)
            if old is not None:
                recorder.rollup(old, -1)
            s.cost = new[1]
            contribution = SpanWriter._contribution(s)
            if contribution is not None:
                recorder.rollup(contribution, +1)
            span["price_id"], span["cost_nusd"], span["price_tier"] = new
            changed_rows.append(list(span.values()))
        traces.setdefault(trace_id, TraceState()).add(s)
    version = time.time_ns()
    token = hashlib.sha256(f"reprice:{digest}:".encode() + b"".join(chunk)).hexdigest()
    deltas = [ch_rows.rollup_row(*rollup) for rollup in recorder.changed_rollups()]
    if deltas:
        client.insert("rollups", deltas, ch_rows.ROLLUP_INSERT_COLUMNS, settings={"insert_deduplication_token": token})
    if changed_rows:
        client.insert("spans", [[*r, version, 0] for r in changed_rows], ch_rows.SPAN_INSERT_COLUMNS)
    summaries = []
    for trace_id, trace in traces.items():
        summary = SpanWriter._summary(trace_id, trace, version)
        summaries.append([*(summary[i] for i in _SUMMARY_AT), version, 0])
    # Where the by-cost copy holds each summary now: a new cost is a new key there, the old one is deleted.
    stored = {t: [(r[2], r[4])] for t, r in ch_rows.newest_summaries(client, list(traces)).items() if not r[0]}
    client.insert("trace_summaries", summaries, ch_rows.TRACE_INSERT_COLUMNS)
    client.insert(BY_COST_TABLE, ch_rows.by_cost_rows(summaries, stored), ch_rows.TRACE_INSERT_COLUMNS)
