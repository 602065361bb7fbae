"""The TUI's read side on a ClickHouse store (`llmobs-tui --store clickhouse://…`): StoreReader's methods.

Each method runs its reads off the event loop (asyncio.to_thread around the synchronous client of
store/clickhouse/client.py) and hands the rows, shaped as the SQLite queries return them
(store/clickhouse/dashboards.py), to the same parse_* functions StoreReader uses: every figure a screen
shows is computed by one code on both backends. One client, its calls one at a time (a thread lock, held
by the worker thread itself: a refresh cancelled mid-read leaves its read running, and the next must not
overlap it on the client).

ClickHouse has no read snapshot: a refresh's reads each see what was inserted when they ran. A view this
store could not serve would raise store.clickhouse.dashboards.NotOnClickHouse naming it, which the app shows
on its status line; the read-only live loop never stops (since `text:` search came, every view is served).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from llmobs_tui.filtering import Filter
from llmobs_tui.reader import TraceDetail
from store import cohort
from store import dashboards as q
from store import metrics as metric_store
from store import sessions as conv
from store.changes import Change, parse_changes
from store.charts import Charts, parse_charts
from store.clickhouse import cohort as ch_cohort
from store.clickhouse import dashboards as ch
from store.clickhouse import search
from store.cohort import CallCohort, TraceCohort
from store.connection import StoreError
from store.content_index import SearchResult
from store.drift import Drift, parse_drift
from store.queries import GroupStats, ToolStats
from store.span_detail import SpanDetail, decode_span_detail
from store.trends import Trends, parse_trends

if TYPE_CHECKING:
    from store.backends import ClickHouseReader
    from store.clickhouse.client import ClickHouseClient
    from store.clickhouse.url import ClickHouseUrl

T = TypeVar("T")
BYTES_EVERY_S = 10.0  # how often the footer's store size is read again (a query of its own: 5 ms of CPU)


class ClickHouseStoreReader:
    def __init__(self, url: ClickHouseUrl, client: ClickHouseClient | None = None) -> None:
        """`client`: an open client to use (tests: chdb); default: an HTTP client to `url`, made by connect()."""
        self.url = url
        self._client = client
        self._store: ClickHouseReader | None = None
        self.last_query_ms: float = 0.0
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()
        # newest_span_id: a count that only grows (the stored row count drops when a merge folds a
        # corrected span's rows), and the database's size for the footer.
        self._counted: tuple[int, int] | None = None  # (rows seen last, the running figure)
        self._bytes: int | None = None
        # The last trace list's positive searches: (filter text, window start in ns, whether one was cut).
        self._searched: tuple[str, int, bool] | None = None
        self._bytes_at: float | None = None

    @property
    def name(self) -> str:
        """The store as the status line says it: its URL, never the password."""
        return self.url.display()

    def connect(self) -> None:
        """Reach the store and check its schema, synchronously: a StoreError whose message is the one line
        to print (unreachable, wrong password, never migrated). `llmobs-tui --store` calls it before the
        app starts, so that a store it cannot read is an error on the terminal, not an empty screen."""
        if self._store is None:
            from store.backends import ClickHouseReader

            self._store = ClickHouseReader(self.url, self._client)

    async def open(self) -> None:
        if self._store is None:
            await asyncio.to_thread(self.connect)

    async def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            await asyncio.to_thread(store.close)

    @property
    def client(self) -> ClickHouseClient:
        if self._store is None:
            raise StoreError("the store is not open")
        return self._store.client

    async def _run(self, read: Callable[..., T], *args: Any) -> T:
        """`read(client, *args)` in a worker thread, alone on the client; a ClickHouse error as the one
        line store.backends.describe_clickhouse_error says."""
        from store.backends import describe_clickhouse_error
        from store.clickhouse.client import ClickHouseError

        client = self.client

        def run() -> T:
            with self._thread_lock:
                return read(client, *args)

        async with self._lock:
            started = time.perf_counter()
            try:
                return await asyncio.to_thread(run)
            except ClickHouseError as exc:
                store = self._store
                raise StoreError(describe_clickhouse_error(self.url, exc, store.schema_version if store else None)
                                 ) from None
            finally:
                self.last_query_ms = (time.perf_counter() - started) * 1000

    # -- screens -------------------------------------------------------------------------------

    async def overview(self, window_s: float, now_s: float) -> q.Overview:
        return q.parse_overview(window_s, now_s, await self._run(ch.overview_rows, window_s, now_s))

    async def charts(self, window_s: float, now_s: float, shift_s: float | None = None) -> Charts:
        rows = await self._run(ch.charts_rows, window_s, now_s, shift_s)
        return parse_charts(window_s, now_s, rows, shift_s)

    async def changes(self, start_s: float, end_s: float) -> list[Change]:
        return parse_changes(await self._run(ch.change_rows, start_s, end_s))

    async def drift(self, window_s: float, now_s: float, min_calls: int = 1,
                    eval_baseline: dict[str, tuple[float, int]] | None = None) -> Drift:
        rows = await self._run(ch.drift_rows, window_s, now_s, eval_baseline is None)
        return parse_drift(window_s, now_s, rows, min_calls=min_calls, eval_baseline=eval_baseline)

    async def breakdown(self, window_s: float, now_s: float, by: str) -> list[GroupStats]:
        return q.parse_breakdown(by, await self._run(ch.breakdown_rows, window_s, now_s, by))

    async def traces(self, window_s: float, now_s: float, flt: Filter, sort: str, descending: bool,
                     limit: int = 500) -> list[q.TraceRow]:
        # Positive searches read once, here: the list tests their traces' ids, and the Traces screen's
        # text_matches that follows knows whether they were cut without reading them again.
        since_ns = int((now_s - window_s) * q.NS)
        terms = await self._run(search.resolved, flt.terms, flt.inverted, since_ns)
        cuts = [value.cut for _, _, value in terms if isinstance(value, search.Matched)]
        self._searched = (flt.text, since_ns, any(cuts)) if cuts else None
        return await self._run(ch.trace_list, window_s, now_s, terms, flt.inverted, sort, descending, limit)

    async def text_matches(self, trace_ids: list[bytes], flt: Filter, since_s: float) -> SearchResult:
        """As StoreReader.text_matches, from the words ClickHouse keeps (store/clickhouse/search.py)."""
        searches = flt.positive_searches
        since_ns = int(since_s * q.NS)
        known = self._searched
        cut = known[2] if known is not None and known[:2] == (flt.text, since_ns) else None
        return await self._run(search.text_matches, trace_ids, since_ns, searches, flt.text_search or "", cut)

    async def sessions(self, window_s: float, now_s: float, flt: Filter, by: str, sort: str, descending: bool,
                       limit: int = 500, user: str | None = None) -> list[conv.ConversationRow] | list[conv.UserRow]:
        """The Sessions screen: conversations and users computed from the trace summaries
        (store/clickhouse/sessions.py), then windowed, sorted and cut as the SQLite queries do."""
        from store.clickhouse import sessions as ch_sessions

        matching = await self._run(ch.matching_conversations, flt.terms, flt.inverted) if flt.terms else None
        since = int((now_s - window_s) * q.NS)
        if by == "user" and matching is None:
            if sort not in conv.USER_SORTS:
                raise ValueError(f"cannot sort users by {sort!r}")
            users = [conv.UserRow(*row) for row in await self._run(
                lambda client: ch_sessions.user_rows(client, seen_since_ns=since))]
            return _sorted(users, sort, "user_id", descending, limit)
        if sort not in (conv.USER_SORTS if by == "user" else conv.SESSION_SORTS):
            raise ValueError(f"cannot sort {'users' if by == 'user' else 'conversations'} by {sort!r}")
        rows = [conv.ConversationRow(*row)
                for row in await self._run(lambda client: ch_sessions.conversation_rows(client, seen_since_ns=since))]
        rows = [r for r in rows if r.last_ns >= since and (matching is None or r.conversation_id in matching)]
        if by == "user":
            # As users_query with a filter: each user's matching conversations summed, ties by user id.
            return _sorted(_users_of(rows), sort, "user_id", descending, limit, tiebreak="user_id")
        rows = [r for r in rows if user is None or r.user_id == user]
        return _sorted(rows, sort, "conversation_id", descending, limit)

    async def conversation(self, conversation_id: str) -> conv.ConversationDetail:
        turns, calls = await self._run(ch.conversation_rows, conversation_id)
        return conv.parse_conversation(conversation_id, turns, calls)

    async def trends(self, metric: str, by: str, window_s: float, now_s: float, top_n: int = 8,
                     others: bool = False) -> Trends:
        rows = await self._run(ch.trends_rows, metric, by, window_s, now_s)
        return parse_trends(metric, by, window_s, now_s, rows, top_n, others)

    async def tool_calls(self, window_s: float, now_s: float) -> list[ToolStats]:
        return await self._run(ch.tool_stats, window_s, now_s)

    async def metrics(self, window_s: float, now_s: float) -> metric_store.MetricsOverview:
        """The Metrics screen's list, from the points the replicas shipped (store/clickhouse/metrics.py)."""
        from store.clickhouse import metrics as ch_metrics

        rows = await self._run(ch_metrics.overview_rows, window_s, now_s)
        return metric_store.parse_overview(rows, window_s)

    async def metric_chart(self, name: str, window_s: float, now_s: float) -> metric_store.MetricChart:
        from store.clickhouse import metrics as ch_metrics

        return metric_store.parse_chart(name, window_s, now_s,
                                        await self._run(ch_metrics.chart_rows, name, window_s, now_s))

    async def serving_saturation(self, now_s: float) -> metric_store.ServingSaturation | None:
        """Model servers' queue and KV cache, for the Overview's Saturation card (None: none report)."""
        from store.clickhouse import metrics as ch_metrics

        return metric_store.parse_saturation(await self._run(ch_metrics.saturation_rows, now_s))

    async def runaway(self, detector: Any, settings: Any, now_s: float) -> Any:
        return await self._run(lambda client: detector.detect_clickhouse(client, settings, now_s))

    async def trace(self, trace_id: bytes) -> TraceDetail:
        from store.clickhouse import reports

        def read(client: ClickHouseClient) -> TraceDetail:
            spans = reports.trace_spans(client, trace_id)
            return TraceDetail(trace_id, spans, dict(ch.trace_log_counts(client, trace_id)))

        return await self._run(read)

    async def call_cohort(self, model: str, feature: str | None, window_s: float, now_s: float) -> CallCohort:
        start_s = now_s - window_s
        rows = await self._run(ch_cohort.call_cohort_rows, model, feature, start_s, now_s)
        return cohort.parse_call_cohort(model, feature, start_s, now_s, rows)

    async def trace_cohort(self, trace_id: bytes, window_s: float, now_s: float,
                           typical: int = 5) -> tuple[TraceCohort, list[list[q.SpanRow]]]:
        from store.clickhouse import reports

        start_s = now_s - window_s

        def read(client: ClickHouseClient) -> tuple[TraceCohort, list[list[q.SpanRow]]]:
            found = cohort.parse_trace_cohort(start_s, now_s, ch_cohort.trace_cohort_rows(client, trace_id, start_s,
                                                                                          now_s))
            return found, reports.traces_spans(client, cohort.typical_trace_ids(found, typical))

        return await self._run(read)

    async def traces_with_prefix(self, prefix: str, limit: int = 1000) -> list[bytes]:
        from store.clickhouse import reports

        return await self._run(reports.trace_ids_with_prefix, prefix, limit)

    async def known_values(self, now_s: float) -> dict[str, list[str]]:
        return q.parse_known_values(await self._run(ch.known_values_rows, now_s))

    async def span_detail(self, trace_id: bytes, span: q.SpanRow) -> SpanDetail:
        def read(client: ClickHouseClient) -> SpanDetail:
            raw = ch.span_raw_rows(client, trace_id, [span.span_id]).get(span.span_id)
            resource = ch.resource_blob(client, raw[1]) if raw is not None else None
            logs = ch.log_rows(client, trace_id, span.span_id)
            price = ch.span_price_row(ch.span_tier(client, trace_id, span.span_id)) if raw is not None else None
            return decode_span_detail(span, raw, logs, resource, price)

        return await self._run(read)

    async def span_details(self, trace_id: bytes, spans: list[q.SpanRow], max_logs: int = 20_000
                           ) -> list[SpanDetail]:
        def read(client: ClickHouseClient) -> list[SpanDetail]:
            raws = ch.span_raw_rows(client, trace_id, [s.span_id for s in spans])
            logs_by_span: dict[bytes, list[tuple]] = {}
            for span_id, *log in ch.log_rows(client, trace_id, None, max_logs):
                logs_by_span.setdefault(span_id, []).append(tuple(log))
            return [decode_span_detail(span, raws.get(span.span_id), logs_by_span.get(span.span_id, []), None)
                    for span in spans]

        return await self._run(read)

    async def export_trace(self, trace_id: bytes) -> Any:
        from store.clickhouse import reports

        return await self._run(reports.export_trace, trace_id)

    async def newest_span_id(self) -> int:
        """A figure that grows by the spans stored since the last call (0: no span yet), for the status
        line's spans/s and the Overview's "is the store empty": ClickHouse has no row ids. The stored row
        count also counts a corrected span's older row until a merge folds it away (then it drops), so the
        figure follows its increases only: it may overstate spans/s while the writers correct many spans,
        never go backwards."""
        rows = await self._run(ch.span_rows)
        if self._bytes_at is None or time.monotonic() - self._bytes_at >= BYTES_EVERY_S:
            self._bytes_at = time.monotonic()
            self._bytes = await self._run(ch.store_bytes)
        if self._counted is None:
            self._counted = (rows, rows)
        else:
            last_rows, figure = self._counted
            self._counted = (rows, figure + max(0, rows - last_rows) if rows else 0)
        return self._counted[1]

    def file_bytes(self) -> int | None:
        """The ClickHouse database's size on its disks (active parts, compressed), as of the last
        newest_span_id(); None when unknown (the footer then leaves it out)."""
        return self._bytes


def _users_of(conversations: list[conv.ConversationRow]) -> list[conv.UserRow]:
    """store.sessions.users_query's grouped form: per user, the sums over these conversations."""
    users: dict[str, list[conv.ConversationRow]] = {}
    for c in conversations:
        if c.user_id is not None:
            users.setdefault(c.user_id, []).append(c)
    return [conv.UserRow(user_id, len(cs), sum(c.turns for c in cs), sum(c.llm_calls for c in cs),
                         sum(c.input_tokens for c in cs), sum(c.output_tokens for c in cs),
                         sum(c.cost_nusd for c in cs), sum(c.unpriced_calls for c in cs), sum(c.errors for c in cs),
                         min(c.first_ns for c in cs), max(c.last_ns for c in cs)) for user_id, cs in users.items()]


_SORT_FIELDS = {"last": "last_ns", "first": "first_ns", "p95": "p95_ns", "cost": "cost_nusd"}


def _sorted(rows: list[Any], sort: str, name_field: str, descending: bool, limit: int,
            tiebreak: str | None = None) -> list[Any]:
    """store.sessions' ORDER BY in Python: the sort's value (NULL first ascending, as SQLite), then
    last_ns, or the name when the sort is by last_ns; both in the same direction."""
    def value(row: Any) -> Any:
        if sort == "tokens":
            return row.input_tokens + row.output_tokens
        if sort == "user":
            return row.user_id
        return getattr(row, _SORT_FIELDS.get(sort, sort))

    tiebreak = tiebreak or (name_field if sort == "last" else "last_ns")

    def key(row: Any) -> tuple:
        v = value(row)
        return (v is not None, v if v is not None else 0, getattr(row, tiebreak))

    return sorted(rows, key=key, reverse=descending)[:limit]
