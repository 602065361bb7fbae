"""The TUI's read side: one read-only aiosqlite connection, queries from store.dashboards.

Each refresh reads inside one short transaction (one consistent snapshot; short, so a reader never
holds the WAL back). Span details are decoded from the stored protobuf only when a span is opened,
by store.span_detail: the read side never reaches into ingest (receiver/)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from llmobs_tui.filtering import Filter, regexp
from store import cohort, tool_rollups
from store import dashboards as q
from store import metrics as metric_store
from store import sessions as conv
from store.alerts import span_raws_query
from store.changes import Change, changes_query, parse_changes
from store.charts import Charts, charts_queries, parse_charts
from store.cohort import CallCohort, TraceCohort
from store.connection import READER_PRAGMAS, StoreError, open_reader
from store.content_index import (
    MATCH_SCAN_LIMIT,
    SearchResult,
    indexing_off_query,
    lag_query,
    match_count_query,
    parse_text_matches,
    text_matches_query,
)
from store.drift import Drift, drift_queries, parse_drift
from store.queries import GroupStats, ToolStats
from store.span_detail import Attribute, SpanDetail, decode_span_detail
from store.trends import Trends, parse_trends, trends_queries

__all__ = ["Attribute", "SpanDetail", "StoreReader", "TraceDetail", "decode_span_detail"]


@dataclass(slots=True)
class TraceDetail:
    trace_id: bytes
    spans: list[q.SpanRow]
    log_counts: dict[bytes, int]


class StoreReader:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self.last_query_ms: float = 0.0
        # One connection serves the refresh loop and on-demand loads (a span's details): their
        # transactions must not interleave.
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        # Validate the file (schema, version) with the same checks as the CLI, then go async.
        open_reader(self.path).close()
        db = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        for pragma in READER_PRAGMAS:
            await db.execute(pragma)
        await db.create_function("regexp", 2, regexp, deterministic=True)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    async def _fetch(self, query: q.Query) -> list[tuple]:
        return list(await self.db.execute_fetchall(query.sql, query.params))

    async def _begin(self) -> None:
        try:
            await self.db.execute("BEGIN")
        except sqlite3.OperationalError:
            # A read cancelled between its BEGIN and COMMIT (a superseded refresh) left its
            # transaction open on the connection's thread: end it, then start ours.
            await self.db.execute("ROLLBACK")
            await self.db.execute("BEGIN")

    async def _snapshot(self, queries: dict[str, q.Query]) -> dict[str, list[tuple]]:
        async with self._lock:
            started = time.perf_counter()
            await self._begin()
            try:
                return {name: await self._fetch(query) for name, query in queries.items()}
            finally:
                await self.db.execute("COMMIT")
                self.last_query_ms = (time.perf_counter() - started) * 1000

    # -- screens -------------------------------------------------------------------------------

    async def overview(self, window_s: float, now_s: float) -> q.Overview:
        rows = await self._snapshot(q.overview_queries(window_s, now_s))
        return q.parse_overview(window_s, now_s, rows)

    async def charts(self, window_s: float, now_s: float, shift_s: float | None = None) -> Charts:
        """The Overview and its chart series, with the past period `shift_s` back (None: no compare),
        from one snapshot (store/charts.py)."""
        rows = await self._snapshot(charts_queries(window_s, now_s, shift_s))
        return parse_charts(window_s, now_s, rows, shift_s)

    async def changes(self, start_s: float, end_s: float) -> list[Change]:
        """The change markers to draw in [start_s, end_s], oldest first (store/changes.py)."""
        return parse_changes((await self._snapshot({"changes": changes_query(start_s, end_s)}))["changes"])

    async def drift(self, window_s: float, now_s: float, min_calls: int = 1,
                    eval_baseline: dict[str, tuple[float, int]] | None = None) -> Drift:
        """The drift panel: the window's token lengths, refusal and failed-output rates and evaluation
        scores against the 7 days before it, from rollups and scored logs (store/drift.py).
        `eval_baseline`: the week's evaluation means from an earlier read (Drift.eval_baseline), reused
        instead of read again."""
        rows = await self._snapshot(drift_queries(window_s, now_s, eval_baseline=eval_baseline is None))
        return parse_drift(window_s, now_s, rows, min_calls=min_calls, eval_baseline=eval_baseline)

    async def breakdown(self, window_s: float, now_s: float, by: str) -> list[GroupStats]:
        rows = await self._snapshot({"rows": q.breakdown_query(window_s, now_s, by)})
        return q.parse_breakdown(by, rows["rows"])

    async def traces(self, window_s: float, now_s: float, flt: Filter, sort: str, descending: bool,
                     limit: int = 500) -> list[q.TraceRow]:
        query = q.traces_query(window_s, now_s, flt.where, flt.params, sort, descending, limit)
        rows = await self._snapshot({"rows": query})
        return q.parse_traces(rows["rows"])

    async def text_matches(self, trace_ids: list[bytes], flt: Filter, since_s: float) -> SearchResult:
        """Where each of these traces (those the list shows, started since `since_s`) matched the filter's
        positive `text:` searches (flt.text_search), with a snippet; the spans not yet indexed (the search
        cannot find them yet); whether the search was cut to the newest matches. One snapshot."""
        text_search = flt.text_search or ""
        queries = {"lag": q.Query(*lag_query()), "count": q.Query(*match_count_query(text_search)),
                   "off": q.Query(*indexing_off_query())}
        if trace_ids:
            queries["matches"] = q.Query(*text_matches_query(text_search, trace_ids))
        rows = await self._snapshot(queries)
        # Snippets are built from the stored text (store.content_index.make_snippets): 15–35 ms for 500
        # rows, off the UI thread (SQLite and zstd release the GIL).
        matches = await asyncio.to_thread(parse_text_matches, rows.get("matches", []))
        return SearchResult(matches, rows["lag"][0][0] or 0,
                            rows["count"][0][0] > MATCH_SCAN_LIMIT, rows["off"][0][0])

    async def sessions(self, window_s: float, now_s: float, flt: Filter, by: str, sort: str, descending: bool,
                       limit: int = 500, user: str | None = None) -> list[conv.ConversationRow] | list[conv.UserRow]:
        """The Sessions screen: the window's conversations from their summary rows (`user`: only that
        user's), or (by="user") their users; `flt` matches a conversation when one of its traces does."""
        if by == "user":
            sql, params = conv.users_query(window_s, now_s, flt.where, flt.params, sort, descending, limit)
            return conv.parse_users((await self._snapshot({"rows": q.Query(sql, params)}))["rows"])
        sql, params = conv.conversations_query(window_s, now_s, flt.where, flt.params, sort, descending, limit,
                                               user)
        return conv.parse_conversations((await self._snapshot({"rows": q.Query(sql, params)}))["rows"])

    async def conversation(self, conversation_id: str) -> conv.ConversationDetail:
        """One conversation: its turns (traces) in order and their billed calls, from one snapshot."""
        rows = await self._snapshot({
            "turns": q.Query(*conv.turns_query(conversation_id)),
            "calls": q.Query(*conv.calls_query(conversation_id, q.SPAN_COLUMNS_FOR_TRACE))})
        return conv.parse_conversation(conversation_id, rows["turns"], rows["calls"])

    async def trends(self, metric: str, by: str, window_s: float, now_s: float, top_n: int = 8,
                     others: bool = False) -> Trends:
        """The Trends screen: one metric per bucket split by `by`, the top N series (store/trends.py)."""
        queries = trends_queries(metric, by, window_s, now_s)
        rows = await self._snapshot(queries) if queries else {}
        return parse_trends(metric, by, window_s, now_s, rows, top_n, others)

    async def tool_calls(self, window_s: float, now_s: float) -> list[ToolStats]:
        """Tool calls per tool over the window, from the calls the writer keeps (store/tool_rollups.py)."""
        now_ns = int(now_s * 1e9)
        sql, params = tool_rollups.tool_calls_query(now_ns - int(window_s * 1e9), now_ns)
        rows = await self._snapshot({"rows": q.Query(sql, params)})
        return tool_rollups.parse_tool_calls(rows["rows"])

    async def metrics(self, window_s: float, now_s: float) -> metric_store.MetricsOverview:
        """The Metrics screen's list: every OTLP metric series seen in the window (store/metrics.py)."""
        queries = {key: q.Query(sql, params)
                   for key, (sql, params) in metric_store.overview_queries(window_s, now_s).items()}
        return metric_store.parse_overview(await self._snapshot(queries), window_s)

    async def metric_chart(self, name: str, window_s: float, now_s: float) -> metric_store.MetricChart:
        """One metric over the window, per series (histograms: p50 and p95 of all its series)."""
        rows = await self._snapshot({"chart": q.Query(*metric_store.chart_query(name, window_s, now_s))})
        return metric_store.parse_chart(name, window_s, now_s, rows["chart"])

    async def serving_saturation(self, now_s: float) -> metric_store.ServingSaturation | None:
        """Model servers' queue and KV cache, for the Overview's Saturation card (None: none report)."""
        rows = await self._snapshot({"rows": q.Query(*metric_store.saturation_query(now_s))})
        return metric_store.parse_saturation(rows["rows"])

    async def runaway(self, detector: Any, settings: Any, now_s: float) -> Any:
        """Runaway agents (a RunawayReport): `detector`'s reads in one snapshot (and the blobs of any
        tool span it has not digested, in a second), its arithmetic in a thread (digesting new tool
        spans' arguments is CPU, and must not hold the UI). One detector per screen: it keeps digests."""
        queries = {name: q.Query(sql, params) for name, (sql, params) in detector.queries(settings, now_s).items()}
        rows = await self._snapshot(queries) if queries else {}
        missing = detector.missing(settings, rows)
        raws: dict[int, bytes | None] = {}
        if missing:
            sql, params = span_raws_query(missing)
            raws = dict((await self._snapshot({"raws": q.Query(sql, params)}))["raws"])
        return await asyncio.to_thread(detector.report, settings, now_s, rows, raws)

    async def trace(self, trace_id: bytes) -> TraceDetail:
        rows = await self._snapshot({"spans": q.trace_spans_query(trace_id),
                                     "logs": q.trace_log_counts_query(trace_id)})
        return TraceDetail(trace_id, q.parse_spans(rows["spans"]), {sid: n for sid, n in rows["logs"]})

    async def call_cohort(self, model: str, feature: str | None, window_s: float, now_s: float) -> CallCohort:
        """A call's cohort for "why slow?": its model on its feature over the window (store/cohort.py)."""
        start_s = now_s - window_s
        rows = await self._snapshot(cohort.call_cohort_queries(model, feature, start_s, now_s))
        return cohort.parse_call_cohort(model, feature, start_s, now_s, rows)

    async def trace_cohort(self, trace_id: bytes, window_s: float, now_s: float,
                           typical: int = 5) -> tuple[TraceCohort, list[list[q.SpanRow]]]:
        """A trace's cohort (its root name and feature over the window) and the spans of the cohort
        traces nearest its median duration, the baseline its critical path is set against."""
        start_s = now_s - window_s
        found = cohort.parse_trace_cohort(start_s, now_s, await self._snapshot(
            cohort.trace_cohort_queries(trace_id, start_s, now_s)))
        ids = cohort.typical_trace_ids(found, typical)
        rows = await self._snapshot({i.hex(): q.trace_spans_query(i) for i in ids}) if ids else {}
        return found, [q.parse_spans(rows[i.hex()]) for i in ids]

    async def traces_with_prefix(self, prefix: str, limit: int = 1000) -> list[bytes]:
        """Trace ids starting with a normalized hex prefix (q.normalize_trace_id_prefix), at most limit + 1."""
        rows = await self._snapshot({"ids": q.trace_prefix_query(prefix, limit)})
        return q.parse_trace_prefix(rows["ids"])

    async def known_values(self, now_s: float) -> dict[str, list[str]]:
        """Values the filter can complete, per field (model, feature, tenant, service, tool, …)."""
        return q.parse_known_values(await self._snapshot(q.known_values_queries(now_s)))

    async def span_detail(self, trace_id: bytes, span: q.SpanRow) -> SpanDetail:
        rows = await self._snapshot({"raw": q.span_raw_query(span.id),
                                     "logs": q.span_logs_query(trace_id, span.span_id),
                                     "price": q.span_price_query(span.id)})
        return decode_span_detail(span, rows["raw"][0] if rows["raw"] else None, rows["logs"],
                                  await self._resource(rows["raw"][0][1] if rows["raw"] else None),
                                  rows["price"][0] if rows["price"] else None)

    async def span_details(self, trace_id: bytes, spans: list[q.SpanRow], max_logs: int = 20_000
                           ) -> list[SpanDetail]:
        """Several spans' details (attributes, events, logs, messages; no resource or price), read
        in one snapshot and decoded in a thread: decoding a 2,000-span trace's protobuf on the event
        loop would freeze the UI. The caller bounds `spans` (each is one SQL parameter)."""
        rows = await self._snapshot({"raw": q.trace_raw_query(trace_id, [s.id for s in spans]),
                                     "logs": q.trace_logs_query(trace_id, max_logs)})

        def decode() -> list[SpanDetail]:
            raw_by_row = {row[0]: row[1:] for row in rows["raw"]}
            logs_by_span: dict[bytes, list[tuple]] = {}
            for span_id, *log in rows["logs"]:
                logs_by_span.setdefault(span_id, []).append(tuple(log))
            return [decode_span_detail(span, raw_by_row.get(span.id), logs_by_span.get(span.span_id, []), None)
                    for span in spans]

        return await asyncio.to_thread(decode)

    async def _resource(self, resource_id: int | None) -> bytes | None:
        if resource_id is None:
            return None
        rows = (await self._snapshot({"resource": q.resource_query(resource_id)}))["resource"]
        return rows[0][0] if rows else None

    async def export_trace(self, trace_id: bytes) -> Any:
        from store.queries import export_trace

        # export_trace is written for sqlite3; run it on a short-lived read-only connection.
        def run() -> Any:
            db = open_reader(self.path)
            try:
                return export_trace(db, trace_id)
            finally:
                db.close()

        return await asyncio.to_thread(run)

    async def newest_span_id(self) -> int:
        """The newest span's row id (0: no span yet): spans/s between two reads, and whether the store is empty."""
        return (await self._snapshot({"newest": q.newest_span_id_query()}))["newest"][0][0] or 0

    def file_bytes(self) -> int:
        """Disk the store takes (database, WAL, index, reserve): the figure `serve` reports and
        `--max-db-size` bounds, so the footer and the limit agree."""
        from store.disk_budget import store_files_bytes

        return store_files_bytes(self.path)
