"""The live TUI on a ClickHouse store shows what it shows on SQLite for the same traffic (issue 17, the TUI).

One store is written by the real Normalizer and SpanWriter (tests/test_clickhouse_reports.py's traffic:
agent traces with errors of several classes, cached tokens, tools, users and conversations, twins billed
once, a late root, looping agents) and copied into ClickHouse (chdb behind tests/chdb_http_server.py, read
through the real network client). Then every read of the TUI is made twice, by llmobs_tui.reader's
StoreReader on the SQLite file and by ClickHouseStoreReader on the copy, and the parsed results must be
equal (dataclasses compare by value); then the real app is driven through its keys on both and the
figures its widgets show must be equal.
"""

from __future__ import annotations

import dataclasses
import io
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmobs_tui.app import LlmobsApp
from llmobs_tui.clickhouse_reader import ClickHouseStoreReader
from llmobs_tui.filtering import parse
from llmobs_tui.reader import StoreReader
from store.charts import WEEK_S
from store.clickhouse import schema, search
from store.clickhouse.client import ChdbClient, HttpClient
from store.clickhouse.sink import copy_store
from store.clickhouse.url import PASSWORD_ENV, ClickHouseUrl, parse_store_url
from store.connection import StoreError
from store.content_index import CHAR_SEPARATOR, make_snippets
from store.queries import TOOL_PERCENTILES, decompress
from tests.chdb_http_server import ChdbHttpServer, engine_path
from tests.clickhouse_fixtures import PASSWORD, USER
from tests.metrics_factory import serving_requests, write_metrics
from tests.test_clickhouse_reports import LOOP_TRACE, NOW_S, TOOL_TRACE, TWIN_TRACE, _write_store
from tests.test_content_search import index_all

pytestmark = pytest.mark.anyio
NOW = float(NOW_S)
WINDOWS = (300, 3600, 2 * 3600, 86400)


@pytest.fixture(scope="module")
def stores(server: ChdbHttpServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ClickHouseUrl]]:
    """(the SQLite store, the URL of its copy in ClickHouse)."""
    db_path = tmp_path_factory.mktemp("ch_tui") / "truth.db"
    _write_store(db_path)
    write_metrics(db_path, serving_requests(NOW), NOW)  # a model server's queue and GPUs, an app's histograms
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        index_all(db)  # the content index, as the writer process keeps it
    finally:
        db.close()
    database = f"tui_{uuid.uuid4().hex[:12]}"
    url = parse_store_url(f"clickhouse://{USER}@127.0.0.1:{server.port}/{database}", {PASSWORD_ENV: PASSWORD})
    client = HttpClient(url)
    schema.migrate(client)
    db = sqlite3.connect(db_path)
    try:
        copied = copy_store(db, client, version=1)
    finally:
        db.close()
        client.close()
    assert copied["spans"] > 1000 and copied["rollups"] > 100 and copied["metric_points"] > 100, copied
    yield db_path, url
    admin = ChdbClient(engine_path(), "default")
    admin.command("DROP DATABASE IF EXISTS {db:Identifier} SYNC", {"db": database})
    admin.close()


@pytest.fixture
async def readers(stores) -> Any:
    sqlite_reader, clickhouse_reader = StoreReader(stores[0]), ClickHouseStoreReader(stores[1])
    await sqlite_reader.open()
    await clickhouse_reader.open()
    yield sqlite_reader, clickhouse_reader
    await sqlite_reader.close()
    await clickhouse_reader.close()


def _trace_ids(db_path: Path, n: int = 4) -> list[bytes]:
    """The biggest traces, the twin, the tool chain, the looping agent, one without a root."""
    db = sqlite3.connect(db_path)
    try:
        biggest = [row[0] for row in db.execute("SELECT trace_id FROM traces ORDER BY spans DESC, trace_id LIMIT ?",
                                                (n,))]
        with_logs = [row[0] for row in db.execute("SELECT trace_id FROM logs WHERE trace_id IS NOT NULL "
                                                  "GROUP BY trace_id ORDER BY count(*) DESC LIMIT 2")]
    finally:
        db.close()
    return [*biggest, *with_logs, *(t.to_bytes(16, "big") for t in (TWIN_TRACE, TOOL_TRACE, LOOP_TRACE, 0x0E0E))]


# --- every read, parsed, equal --------------------------------------------------------------------------------


def _ties_by_name(overview: Any) -> Any:
    """The Overview with its top models and features in a defined order among equals: SQLite's ORDER BY
    calls DESC LIMIT 8 leaves the order of equal counts to its sorter; ClickHouse's read breaks them by name."""
    return dataclasses.replace(overview, models=sorted(overview.models, key=lambda m: (-m[2], m[0] or "")),
                               features=sorted(overview.features, key=lambda f: (-f[1], -f[2], f[0] or "")))


@pytest.mark.parametrize("window_s", WINDOWS)
async def test_overview_and_charts_are_equal(readers, window_s: int) -> None:
    sqlite_reader, clickhouse_reader = readers
    truth = await sqlite_reader.overview(window_s, NOW)
    assert truth["calls"] > 0 and truth.buckets
    assert _ties_by_name(await clickhouse_reader.overview(window_s, NOW)) == _ties_by_name(truth)
    for shift_s in (None, float(window_s), float(WEEK_S)):
        charts = await sqlite_reader.charts(window_s, NOW, shift_s)
        got = await clickhouse_reader.charts(window_s, NOW, shift_s)
        assert dataclasses.replace(got, overview=_ties_by_name(got.overview)) == dataclasses.replace(
            charts, overview=_ties_by_name(charts.overview)), shift_s
    # Not equal by being empty: the figures the cards show.
    assert charts.overview.percentiles("latency")[1] is not None and charts.cost.total_usd > 0
    assert charts.overview.features and charts.overview.models


@pytest.mark.parametrize("by", ["model", "feature", "tenant", "prompt", "variant", "provider", "service",
                                "operation"])
async def test_breakdown_is_equal_for_every_grouping(readers, by: str) -> None:
    sqlite_reader, clickhouse_reader = readers
    for window_s in (2 * 3600, 86400):
        truth = await sqlite_reader.breakdown(window_s, NOW, by)
        assert truth and sum(g["calls"] for g in truth) > 0
        assert await clickhouse_reader.breakdown(window_s, NOW, by) == truth
    # The compared period (`v`): a window back, where there is little or nothing.
    assert await clickhouse_reader.breakdown(3600, NOW - 3600, by) == await sqlite_reader.breakdown(3600, NOW - 3600, by)


@pytest.mark.parametrize("sort", ["start", "duration", "cost", "tokens", "calls", "errors", "root", "service"])
async def test_trace_list_is_equal_for_every_sort(readers, sort: str) -> None:
    sqlite_reader, clickhouse_reader = readers
    empty = parse("")
    everything = set(await sqlite_reader.traces(86400, NOW, empty, "start", True, 10_000))
    assert len(everything) > 200 and any(t.service is None for t in everything)
    for descending, limit in ((True, 500), (False, 500), (True, 7)):
        truth = await sqlite_reader.traces(86400, NOW, empty, sort, descending, limit)
        got = await clickhouse_reader.traces(86400, NOW, empty, sort, descending, limit)
        # The same rows in the same order of the sort's value. Among equal values (traces started in the
        # same ns) SQLite's order is its row ids', which ClickHouse does not have.
        assert [_sort_value(t, sort) for t in got] == [_sort_value(t, sort) for t in truth]
        assert set(got) <= everything and len(set(got)) == len(got)
        if limit > len(everything):
            assert set(got) == set(truth)


def _sort_value(t: Any, sort: str) -> tuple:
    value = {"start": t.start_ns, "duration": t.duration_ns, "cost": t.cost_nusd,
             "tokens": t.input_tokens + t.output_tokens, "calls": t.llm_calls,
             "errors": t.errors_api + t.errors_validation + t.errors_guardrail + t.error_spans,
             "root": t.root_name, "service": t.service}[sort]
    return value, t.start_ns


FILTERS = ["model=gpt-4o", "model!=gpt-4o", "model=~GPT-4", "model!~claude", "svc=twin-svc", "feature=~sup",
           "feature!=support", "status=error", "status=ok", "!status=error", "duration>2s", "dur<=800ms",
           "cost>$0.01", "tokens>=1000", "calls>2", "spans<5", "error=~rate", "err!=rate_limit", "ttft>500ms",
           "latency>1s", "tool=lookup", "tool!=search", "kind=tool", "user=~u-", "conversation=conv-loop",
           "root=~^POST", "provider=anthropic", "name=~'chat claude'", "!model=gpt-4o feature=~a",
           "model=~gpt service!=agent-svc cost<$0.05", "tenant=nobody", "variant!=b", "prompt=~.", "version!=v2", "text:polic", "text!=policy model=gpt-4o",
           "!text:policy cost>$0.001"]


@pytest.mark.parametrize("text", FILTERS)
async def test_the_trace_list_filtered_is_equal(readers, text: str) -> None:
    sqlite_reader, clickhouse_reader = readers
    flt = parse(text)
    truth = await sqlite_reader.traces(86400, NOW, flt, "cost", True, 1000)
    got = await clickhouse_reader.traces(86400, NOW, flt, "cost", True, 1000)
    assert [_sort_value(t, "cost") for t in got] == [_sort_value(t, "cost") for t in truth]
    assert set(got) == set(truth)


async def test_the_filters_select_something_and_not_everything(readers) -> None:
    """The filter comparison is not between empty lists: most filters pick a part of the traffic."""
    sqlite_reader, _ = readers
    everything = len(await sqlite_reader.traces(86400, NOW, parse(""), "start", True, 10_000))
    sizes = [len(await sqlite_reader.traces(86400, NOW, parse(text), "start", True, 10_000)) for text in FILTERS]
    assert sum(0 < n < everything for n in sizes) >= len(FILTERS) - 6, dict(zip(FILTERS, sizes))


def _searches(db_path: Path) -> list[str]:
    """`text:` filters over what this traffic says: its commonest word (in most traces), a rare one, a word cut short, two words in a row, negations, one inverted, one with a field, and words in
    no text (one of them in a script written without spaces)."""
    db = sqlite3.connect(db_path)
    try:
        db.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, content_index, 'row')")
        terms = db.execute("SELECT term, doc FROM temp.vocab WHERE length(term) > 3 ORDER BY doc DESC, term").fetchall()
        body = db.execute("SELECT body FROM content_text WHERE id > 0 ORDER BY id LIMIT 1").fetchone()[0]
    finally:
        db.close()
    common, rare = terms[0][0], next(t for t, n in terms if n <= 3 and t.isalpha())
    middle = terms[len(terms) // 3][0]
    two_words = " ".join(decompress(body).decode().split()[1:3])
    return [f"text:{common}", f"text:{rare}", f"text:{middle[:-2]}", f"text:'{two_words}'", f"text!={rare}",
            f"text!={middle}", f"!text:{middle}", f"model=gpt-4o text:{middle}", f"text:{rare} text:{common}",
            "text:zzyzx", "text:退款政策", f"text:{common.upper()}"]


@pytest.fixture(scope="module")
def searches(stores) -> list[str]:
    return _searches(stores[0])


@pytest.mark.parametrize("window_s", (3600, 86400))
async def test_a_text_search_finds_the_same_traces_and_snippets(readers, stores, searches, window_s: int) -> None:
    """Every search lists the same traces on both stores; each trace's match on ClickHouse is a row that
    matches on SQLite, with the snippet SQLite makes of it."""
    sqlite_reader, clickhouse_reader = readers
    sizes = []
    for text in searches:
        flt = parse(text)
        truth = await sqlite_reader.traces(window_s, NOW, flt, "start", True, 10_000)
        got = await clickhouse_reader.traces(window_s, NOW, flt, "start", True, 10_000)
        assert set(got) == set(truth), text
        sizes.append(len(truth))
        if flt.text_search is None:
            continue
        ids = [t.trace_id for t in truth]
        expected = await sqlite_reader.text_matches(ids, flt, NOW - window_s)
        found = await clickhouse_reader.text_matches(ids, flt, NOW - window_s)
        assert set(found.matches) == set(expected.matches) == set(ids), text
        assert found.lag_spans == 0 and found.off_reason == ""
        db = sqlite3.connect(stores[0])
        try:
            rows = {(bytes(t), bytes(s) if s else None): decompress(body).decode() for t, s, body in db.execute(
                "SELECT trace_id, span_id, body FROM content_text WHERE id IN "
                "(SELECT rowid FROM content_index WHERE content_index MATCH ?)", (flt.text_search,))}
        finally:
            db.close()
        for trace_id, match in found.matches.items():
            assert (trace_id, match.span_id) in rows, text
            snippet = make_snippets(flt.text_search, {1: rows[trace_id, match.span_id]})[1]
            assert match.snippet == snippet.replace(CHAR_SEPARATOR, ""), text
        assert found.cut == expected.cut, text
    assert sum(n > 0 for n in sizes) >= len(searches) - (3 if window_s > 3600 else 4), dict(zip(searches, sizes))


async def test_a_search_reads_the_newest_matches_only_and_says_it_was_cut(readers, stores, searches,
                                                                        monkeypatch) -> None:
    """With room for 20 matching rows: the traces of the 20 newest matching spans (by hour, the spans' sort
    order) and log records, all of those in a newer hour than the 20th, and the search said cut; a rarer
    search is not cut, and a negation still reads every match."""
    sqlite_reader, clickhouse_reader = readers
    monkeypatch.setattr(search, "MATCH_SCAN_LIMIT", 20)
    common = searches[0]
    flt = parse(common)
    every = {t.trace_id for t in await sqlite_reader.traces(86400, NOW, flt, "start", True, 10_000)}
    got = {t.trace_id for t in await clickhouse_reader.traces(86400, NOW, flt, "start", True, 10_000)}
    db = sqlite3.connect(stores[0])
    try:
        matched = db.execute(
            "SELECT c.trace_id, c.id > 0, coalesce(s.start_ns, l.time_ns) FROM content_text c "
            "LEFT JOIN spans s ON s.id = c.id LEFT JOIN logs l ON l.id = -c.id WHERE c.id IN "
            "(SELECT rowid FROM content_index WHERE content_index MATCH ?)", (flt.text_search,)).fetchall()
    finally:
        db.close()
    hours = sorted((ns // (3600 * 10**9) for _, is_span, ns in matched if is_span and ns >= (NOW - 86400) * 1e9),
                   reverse=True)
    log_times = sorted((ns for _, is_span, ns in matched if not is_span and ns >= (NOW - 86400) * 1e9), reverse=True)
    assert len(hours) > 20
    oldest_log_read = log_times[19] if len(log_times) >= 20 else 0
    newest = {t for t, is_span, ns in matched if is_span and ns // (3600 * 10**9) > hours[19]}
    possible = {t for t, is_span, ns in matched
                if (ns // (3600 * 10**9) >= hours[19] if is_span else ns >= oldest_log_read)}
    assert newest <= got <= possible & every and len(got) < len(every)
    ids = sorted(got)
    assert (await clickhouse_reader.text_matches(ids, flt, NOW - 86400)).cut
    assert not (await clickhouse_reader.text_matches(ids, parse(searches[1]), NOW - 86400)).cut
    negated = parse(common.replace("text:", "text!="))
    assert set(await clickhouse_reader.traces(86400, NOW, negated, "start", True, 10_000)) == \
        set(await sqlite_reader.traces(86400, NOW, negated, "start", True, 10_000))


@pytest.mark.parametrize("text", ["model=gpt-4o", "!status=error", "user=~u-", "tool=search", "text:polic",
                                  "text!=policy"])
async def test_sessions_filtered_are_equal(readers, text: str) -> None:
    sqlite_reader, clickhouse_reader = readers
    flt = parse(text)
    for by, sort in (("conversation", "last"), ("conversation", "cost"), ("user", "cost"), ("user", "last")):
        truth = await sqlite_reader.sessions(86400, NOW, flt, by, sort, True)
        assert await clickhouse_reader.sessions(86400, NOW, flt, by, sort, True) == truth, (by, sort)


def _without_row_id(spans: list) -> list:
    # No row ids on ClickHouse: a span's id there is its place in the trace.
    return sorted((dataclasses.replace(s, id=0) for s in spans), key=lambda s: (s.start_ns, s.span_id))


async def test_traces_spans_log_counts_and_details_are_equal(readers, stores) -> None:
    sqlite_reader, clickhouse_reader = readers
    checked_logs = checked_messages = 0
    for trace_id in _trace_ids(stores[0]):
        truth = await sqlite_reader.trace(trace_id)
        got = await clickhouse_reader.trace(trace_id)
        assert truth.spans, trace_id.hex()
        assert _without_row_id(got.spans) == _without_row_id(truth.spans)
        assert got.log_counts == truth.log_counts
        checked_logs += sum(truth.log_counts.values())
        # Details decoded from the same blobs: attributes, resource, scope, events, logs, messages. The
        # price row is not kept on ClickHouse (its tier is).
        details = await sqlite_reader.span_details(trace_id, truth.spans)
        assert await clickhouse_reader.span_details(trace_id, truth.spans) == details
        for span in truth.spans[:6]:
            detail = await sqlite_reader.span_detail(trace_id, span)
            found = await clickhouse_reader.span_detail(trace_id, span)
            assert dataclasses.replace(found, price=detail.price, cost=detail.cost) == detail
            checked_messages += len(detail.messages) + len(detail.attributes)
        assert _spans_of(await clickhouse_reader.export_trace(trace_id)) == _spans_of(
            await sqlite_reader.export_trace(trace_id))
    assert checked_logs > 0 and checked_messages > 0
    # Nothing there: the same nothing.
    assert (await clickhouse_reader.trace(b"\xff" * 16)).spans == []
    assert await clickhouse_reader.export_trace(b"\xff" * 16) is None


def _spans_of(request: Any) -> list[tuple[bytes, bytes, bytes]]:
    """An exported trace as (resource, scope, span) per span, in span id order: SQLite exports in the order
    spans arrived (a late root last), ClickHouse in start order."""
    return sorted((rs.resource.SerializeToString(deterministic=True), ss.scope.SerializeToString(deterministic=True),
                   span.SerializeToString(deterministic=True))
                  for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans)


async def test_opening_by_prefix_and_completion_are_equal(readers, stores) -> None:
    sqlite_reader, clickhouse_reader = readers
    trace_id = _trace_ids(stores[0])[0].hex()
    for prefix in (trace_id, trace_id[:5], trace_id[:1], "f" * 32):
        assert await clickhouse_reader.traces_with_prefix(prefix, 1000) == await sqlite_reader.traces_with_prefix(
            prefix, 1000)
    truth = await sqlite_reader.known_values(NOW)
    assert truth["model"] and truth["feature"] and truth["tool"]
    assert await clickhouse_reader.known_values(NOW) == truth


def _cohort_subjects(db_path: Path, n: int = 3) -> list[tuple[str, str | None]]:
    """The (model, feature) pairs with the most calls (a call cohort's subject)."""
    db = sqlite3.connect(db_path)
    try:
        return [(model, feature or None) for model, feature, _ in db.execute(
            "SELECT d.model, d.feature, sum(r.calls) FROM rollups r JOIN dims d ON d.id = r.dims_id "
            "WHERE d.model != '' GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT ?", (n,))]
    finally:
        db.close()


@pytest.mark.parametrize("window_s", (3600, 86400))
async def test_why_slow_reads_the_same_cohorts(readers, stores, window_s: int) -> None:
    """`w`: a call's cohort (rollup histograms and sampled calls) and a trace's (its root name and feature's
    traces, and the spans of the typical ones), then what the dialog explains from them."""
    from llmobs_tui import why_slow

    sqlite_reader, clickhouse_reader = readers
    for model, feature in _cohort_subjects(stores[0]):
        want = await sqlite_reader.call_cohort(model, feature, window_s, NOW)
        assert await clickhouse_reader.call_cohort(model, feature, window_s, NOW) == want
        assert want.calls > 20 and len(want.samples) > 20 and want.latency
    for trace_id in _trace_ids(stores[0]):
        want_cohort, want_typical = await sqlite_reader.trace_cohort(trace_id, window_s, NOW)
        got_cohort, got_typical = await clickhouse_reader.trace_cohort(trace_id, window_s, NOW)
        assert got_cohort == want_cohort
        spans = (await sqlite_reader.trace(trace_id)).spans
        window = f"{window_s}s"
        assert why_slow.explain_trace(spans, got_cohort, got_typical, window) == \
            why_slow.explain_trace(spans, want_cohort, want_typical, window)
        # No span row ids on ClickHouse (a span's place in its trace): the spans themselves are the same.
        assert [[(s.span_id, s.name, s.start_ns, s.duration_ns) for s in trace] for trace in got_typical] == \
            [[(s.span_id, s.name, s.start_ns, s.duration_ns) for s in trace] for trace in want_typical]


@pytest.mark.parametrize("scan_limit", (1, 7, 40, 10**6))
async def test_the_cohorts_newest_rows_stop_at_their_limit_as_on_sqlite(stores, readers, scan_limit: int) -> None:
    """The call cohort's sampled spans and the trace cohort's summaries are the window's newest `scan_limit`
    (SQLite walks them back from the window's end; ClickHouse looks back an hour, then four times as long)."""
    from store import cohort
    from store.clickhouse import cohort as ch_cohort

    _, clickhouse_reader = readers
    client = clickhouse_reader.client
    db = sqlite3.connect(stores[0])
    try:
        def on_sqlite(queries: dict[str, Any]) -> dict[str, list[tuple]]:
            return {key: db.execute(query.sql, query.params).fetchall() for key, query in queries.items()}

        capped = []
        for window_s in (600, 7200, 86400):
            start = NOW - window_s
            for model, feature in _cohort_subjects(stores[0], 2):
                want = cohort.parse_call_cohort(model, feature, start, NOW, on_sqlite(
                    cohort.call_cohort_queries(model, feature, start, NOW, scan_limit)), scan_limit)
                got = cohort.parse_call_cohort(model, feature, start, NOW, ch_cohort.call_cohort_rows(
                    client, model, feature, start, NOW, scan_limit), scan_limit)
                assert got == want, (window_s, model, feature)
                capped.append(want.samples_capped)
            for trace_id in _trace_ids(stores[0], 2):
                want_trace = cohort.parse_trace_cohort(start, NOW, on_sqlite(
                    cohort.trace_cohort_queries(trace_id, start, NOW, scan_limit)), scan_limit)
                got_trace = cohort.parse_trace_cohort(start, NOW, ch_cohort.trace_cohort_rows(
                    client, trace_id, start, NOW, scan_limit), scan_limit)
                assert got_trace == want_trace, (window_s, trace_id.hex())
                capped.append(want_trace.capped)
    finally:
        db.close()
    assert (True in capped) == (scan_limit < 10**6)  # cut short below the limit, whole windows above it


@pytest.mark.parametrize("window_s", (*WINDOWS, 30 * 86400))
async def test_tool_calls_are_equal(readers, window_s: int) -> None:
    """The Breakdown by tool: calls, failures and the percentiles shown, exact, per tool (SQLite computes them
    from every duration here, ClickHouse there)."""
    sqlite_reader, clickhouse_reader = readers

    def comparable(stats: list[Any]) -> list[Any]:
        return [(s.key, s.calls, s.errors, *(s.percentile_ms(q) for q in TOOL_PERCENTILES)) for s in stats]

    want = await sqlite_reader.tool_calls(window_s, NOW)
    assert comparable(await clickhouse_reader.tool_calls(window_s, NOW)) == comparable(want)
    if window_s >= 86400:
        assert sum(s.calls for s in want) > 20 and any(s.errors for s in want), want


def test_the_tool_percentiles_clickhouse_picks_are_the_nearest_rank_ones(http) -> None:
    """Tools of 1 to 41 calls (the ranks' edges: 0.95 × 20 is 19 exactly), some durations unknown: ClickHouse
    picks the very durations ToolStats.percentile_ms picks from all of them."""
    import random

    from store.clickhouse.reports import tool_call_groups
    from store.queries import ToolStats

    rng = random.Random(3)
    start = int((NOW - 3600) * 10**9)  # within the table's TTL
    rows, want = [], {}
    for n in range(1, 42):
        durations = [rng.randrange(1, 10**10) for _ in range(n)]
        unknown = n % 7 == 0
        want[f"tool-{n}"] = ToolStats(key={"tool": f"tool-{n}"}, calls=n + unknown, durations_ns=durations)
        rows += [[(n * 1000 + i).to_bytes(16, "big"), i.to_bytes(8, "big"), start + i, f"tool-{n}", d, 0, 1]
                 for i, d in enumerate([*durations, *([None] if unknown else [])])]
    http.insert("tool_calls", rows, ["trace_id", "span_id", "start_ns", "tool", "duration_ns", "failed", "version"])
    got = {s.key["tool"]: s for s in tool_call_groups(http, start, start + 10**9)}
    assert sorted(got) == sorted(want)
    for tool, stats in want.items():
        assert got[tool].calls == stats.calls
        assert [got[tool].percentile_ms(q) for q in TOOL_PERCENTILES] == \
            [stats.percentile_ms(q) for q in TOOL_PERCENTILES], tool


@pytest.mark.parametrize("window_s", (*WINDOWS, 30 * 86400))
async def test_change_markers_are_equal(readers, window_s: int) -> None:
    sqlite_reader, clickhouse_reader = readers
    want = await sqlite_reader.changes(NOW - window_s, NOW)
    assert await clickhouse_reader.changes(NOW - window_s, NOW) == want
    if window_s > 86400:
        assert {c.kind for c in want} >= {"served_model", "error_class"}, want  # not two empty lists agreeing


@pytest.mark.parametrize("window_s", [3600, 86400])
async def test_drift_and_trends_are_equal(readers, window_s: int) -> None:
    sqlite_reader, clickhouse_reader = readers
    truth = await sqlite_reader.drift(window_s, NOW)
    got = await clickhouse_reader.drift(window_s, NOW)
    assert truth.current.calls > 0
    # Evaluation means are averages computed by two engines: equal to the last bits they may not be.
    assert [(e.name, e.count) for e in got.evals] == [(e.name, e.count) for e in truth.evals]
    for ours, theirs in zip(got.evals, truth.evals):
        assert ours.mean == pytest.approx(theirs.mean)
    assert dataclasses.replace(got, evals=truth.evals, eval_baseline=truth.eval_baseline) == truth
    for metric in ("cost", "latency_p95", "calls", "error_rate", "errors_api"):
        for by in ("model", "feature", "variant", "tool"):
            expected = await sqlite_reader.trends(metric, by, window_s, NOW)
            assert await clickhouse_reader.trends(metric, by, window_s, NOW) == expected, (metric, by)
            if by == "tool" and metric != "cost":  # tool spans' figures (cost: a metric tools do not have)
                assert expected.supported and any(v for s in expected.series for v in s.values), (metric, expected)


@pytest.mark.parametrize("sort", ["last", "first", "turns", "tokens", "cost", "errors", "p95", "user"])
async def test_sessions_and_users_are_equal(readers, sort: str) -> None:
    sqlite_reader, clickhouse_reader = readers
    empty = parse("")
    for descending in (True, False):
        truth = await sqlite_reader.sessions(86400, NOW, empty, "conversation", sort, descending)
        assert len(truth) >= 2
        assert await clickhouse_reader.sessions(86400, NOW, empty, "conversation", sort, descending) == truth
    user_sort = {"p95": "conversations"}.get(sort, sort)
    users = await sqlite_reader.sessions(86400, NOW, empty, "user", user_sort, True)
    assert users and await clickhouse_reader.sessions(86400, NOW, empty, "user", user_sort, True) == users
    user = users[0].user_id
    mine = await sqlite_reader.sessions(86400, NOW, empty, "conversation", sort, True, user=user)
    assert mine and await clickhouse_reader.sessions(86400, NOW, empty, "conversation", sort, True, user=user) == mine


async def test_a_conversation_is_equal(readers) -> None:
    sqlite_reader, clickhouse_reader = readers
    for row in (await sqlite_reader.sessions(86400, NOW, parse(""), "conversation", "turns", True))[:3]:
        truth = await sqlite_reader.conversation(row.conversation_id)
        got = await clickhouse_reader.conversation(row.conversation_id)
        assert got.turns == truth.turns and len(truth.turns) == row.turns
        # Calls: no row ids, and no price rows (the context view's prices) on ClickHouse.
        assert [(c.trace_id, dataclasses.replace(c.span, id=0)) for c in got.calls] == [
            (c.trace_id, dataclasses.replace(c.span, id=0)) for c in truth.calls]


@pytest.mark.parametrize("window_s", [300, 3600, 2 * 3600, 86400])
async def test_otlp_metrics_are_equal(readers, window_s: int) -> None:
    """The Metrics screen's list and every metric's chart, and the Overview's Saturation card."""
    sqlite_reader, clickhouse_reader = readers
    truth = await sqlite_reader.metrics(window_s, NOW)
    got = await clickhouse_reader.metrics(window_s, NOW)
    # The series ids are the working store's on SQLite, the series' digests on ClickHouse.
    assert [dataclasses.replace(s, series_id=0) for s in got.series] == \
        [dataclasses.replace(s, series_id=0) for s in truth.series]
    assert got.dropped_points == truth.dropped_points
    names = sorted({s.name for s in truth.series})
    assert len(names) >= 6 and {s.kind for s in truth.series} == {"gauge", "histogram"}
    for name in names:
        assert await clickhouse_reader.metric_chart(name, window_s, NOW) == \
            await sqlite_reader.metric_chart(name, window_s, NOW), name
    saturation = await sqlite_reader.serving_saturation(NOW)
    assert saturation is not None and saturation.waiting is not None and saturation.kv_cache is not None
    assert await clickhouse_reader.serving_saturation(NOW) == saturation


async def test_a_store_of_an_older_schema_says_to_migrate_it(server) -> None:
    """A store whose replicas run an older serve (schema 9: no words) reads what it has; a search, which needs
    schema 10, says which version the store has and how to migrate it, on the screen and on the command line."""
    database = f"tui_old_{uuid.uuid4().hex[:8]}"
    url = parse_store_url(f"clickhouse://{USER}@127.0.0.1:{server.port}/{database}", {PASSWORD_ENV: PASSWORD})
    client = HttpClient(url)
    schema.migrate(client)
    for table in ("spans", "logs"):
        client.command(f"ALTER TABLE {table} DROP COLUMN search_words")
    client.command("TRUNCATE TABLE schema_migrations")
    client.insert("schema_migrations", [(v, f"m{v:03}", 0, "older") for v in range(1, len(schema.MIGRATIONS))],
                  ["version", "name", "applied_ns", "applied_by"])
    client.close()
    older = ClickHouseStoreReader(url)
    try:
        await older.open()
        assert (await older.overview(3600, NOW))["calls"] == 0
        said = rf"schema version {len(schema.MIGRATIONS) - 1}, older than this llmobs-tui's {len(schema.MIGRATIONS)}"
        with pytest.raises(StoreError, match=f"{said}.*llmobs-tui serve --store"):
            await older.traces(86400, NOW, parse("text:refund"), "start", True)
    finally:
        await older.close()
        admin = ChdbClient(engine_path(), "default")
        admin.command("DROP DATABASE IF EXISTS {db:Identifier} SYNC", {"db": database})
        admin.close()


async def test_the_live_figures_and_what_is_not_on_clickhouse(readers, stores, server) -> None:
    _, clickhouse_reader = readers
    newest = await clickhouse_reader.newest_span_id()
    assert newest > 0 and await clickhouse_reader.newest_span_id() == newest  # nothing written in between
    size = clickhouse_reader.file_bytes()
    assert size is not None and size > 0
    # An empty store is empty.
    database = f"tui_empty_{uuid.uuid4().hex[:8]}"
    url = parse_store_url(f"clickhouse://{USER}@127.0.0.1:{server.port}/{database}", {PASSWORD_ENV: PASSWORD})
    client = HttpClient(url)
    schema.migrate(client)
    client.close()
    empty = ClickHouseStoreReader(url)
    try:
        await empty.open()
        assert await empty.newest_span_id() == 0
        assert (await empty.overview(3600, NOW))["calls"] == 0
        assert (await empty.metrics(3600, NOW)).series == [] and await empty.serving_saturation(NOW) is None
    finally:
        await empty.close()
        admin = ChdbClient(engine_path(), "default")
        admin.command("DROP DATABASE IF EXISTS {db:Identifier} SYNC", {"db": database})
        admin.close()


# --- the app, driven through its keys, on both stores ----------------------------------------------------------


def _texts(screen: Any) -> list[str]:
    """What the screen shows a person, widget by widget: every Static and every table row, less the status
    line (it names the store) and toasts."""
    from rich.console import Console
    from textual.widgets import DataTable, Static

    from llmobs_tui.widgets.chrome import StatusLine

    out = []
    for widget in screen.query("*"):
        if isinstance(widget, StatusLine):  # the store's name
            continue
        if isinstance(widget, DataTable):
            out.extend(" | ".join(str(cell) for cell in widget.get_row_at(i)) for i in range(widget.row_count))
        elif isinstance(widget, Static):
            console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
            console.print(widget.content)
            out.append(widget.id or type(widget).__name__)
            out.append(console.export_text())
    return out


async def _walk(app: LlmobsApp) -> dict[str, list[str]]:
    """Keys 1..5, and Enter on the trace list's first trace: what each screen showed."""
    shown: dict[str, list[str]] = {}
    async with app.run_test(size=(160, 50)) as pilot:

        async def settle() -> None:
            await pilot.pause()
            await app.workers.wait_for_complete()
            await app.tick()
            await pilot.pause()

        await settle()
        for key, name in (("1", "overview"), ("2", "breakdown"), ("3", "traces"), ("enter", "trace"),
                          ("5", "alerts"), ("8", "metrics")):
            await pilot.press(key)
            await settle()
            assert name == app.screen.NAME, (key, app.screen.NAME)
            assert app.load_error is None, app.load_error
            shown[name] = _texts(app.screen)
        shown["status"] = [str(app.status)]
    return shown


def _app(db_path: Path, reader: Any = None) -> LlmobsApp:
    return LlmobsApp(db_path, clock=lambda: NOW, refresh_s=None, window_s=86400, reader=reader)


async def test_the_app_shows_the_same_figures_on_both_stores(stores) -> None:
    db_path, url = stores
    truth = await _walk(_app(db_path))
    app = _app(db_path, ClickHouseStoreReader(url))
    got = await _walk(app)
    assert isinstance(app.reader, ClickHouseStoreReader)  # the screens read ClickHouse, not the file beside it
    for name in ("overview", "breakdown", "trace", "alerts", "metrics"):
        assert got[name] == truth[name], name
    # The list: two traces started in the same ns (the twin's and the late root's) are in SQLite's row id
    # order there, which ClickHouse does not have. Everything else in place.
    assert sorted(got["traces"]) == sorted(truth["traces"]) and got["traces"][:30] == truth["traces"][:30]
    # Not two empty screens agreeing, and the status line names the store, without its password.
    assert any("gpt-4o" in text for text in truth["breakdown"])
    assert any("vllm:num_requests_waiting" in text for text in truth["metrics"])
    assert any("Saturation" in text or "KV" in text for text in truth["overview"]), truth["overview"]
    assert len(truth["traces"]) > 50
    assert f"read-only clickhouse://{USER}@127.0.0.1" in got["status"][0] and PASSWORD not in got["status"][0]


async def _why_slow_texts(app: LlmobsApp) -> list[str]:
    """`w` on the call a trace opens on (the trace list's first), then on its root (the trace): what the
    dialog says each time."""
    said = []
    async with app.run_test(size=(160, 50)) as pilot:
        for keys in (("3", "enter", "w"), ("escape", "home", "w")):
            for key in keys:
                await pilot.press(key)
                await pilot.pause()
                await app.workers.wait_for_complete()
                await pilot.pause()
            assert app.load_error is None, app.load_error
            said.append(_texts_of(app.screen.query_one("#why-slow-body")))
    return said


async def test_why_slow_in_the_app_says_the_same_on_both_stores(stores) -> None:
    truth = await _why_slow_texts(_app(stores[0]))
    assert truth[0].startswith("Why slow? this call") and truth[1].startswith("Why slow? this trace"), truth
    assert all("cohort:" in text for text in truth)
    assert await _why_slow_texts(_app(stores[0], ClickHouseStoreReader(stores[1]))) == truth


async def _breakdown_by_tool(app: LlmobsApp, pilot: Any) -> None:
    """Key 2, then `g` until the Breakdown groups by tool, its reads done."""
    from llmobs_tui.screens.breakdown import GROUPINGS

    await pilot.press("2")
    for _ in range(len(GROUPINGS)):
        if app.screen.by == "tool":
            break
        await pilot.press("g")
    await pilot.pause()
    await app.workers.wait_for_complete()
    await app.tick()
    await pilot.pause()
    assert app.screen.by == "tool" and app.load_error is None, app.load_error


async def test_the_breakdown_by_tool_shows_its_calls_and_its_charts_as_on_sqlite(stores) -> None:
    """The table reads the tool calls ClickHouse keeps, its two charts the tool rollups (m008): the same
    rows and the same charts as on SQLite."""
    from llmobs_tui.widgets.chart import TimeChart

    shown, drawn = [], []
    for reader in (None, ClickHouseStoreReader(stores[1])):
        app = _app(stores[0], reader)
        async with app.run_test(size=(160, 50)) as pilot:
            await _breakdown_by_tool(app, pilot)
            shown.append(_texts(app.screen))
            drawn.append([(str(c.border_title), _plain(c.render())) for c in app.screen.query(TimeChart)])
            assert all(" by tool" in title for title, _ in drawn[-1]), [t for t, _ in drawn[-1]]
    table = [line for line in shown[0] if " | " in line]
    assert len(table) >= 3 and [line for line in shown[1] if " | " in line] == table
    assert len(drawn[0]) == 2 and drawn[1] == drawn[0]
    assert all("check_inventory" in chart and "not available" not in chart for _, chart in drawn[0]), drawn[0]


async def test_a_screen_whose_data_is_not_on_clickhouse_says_so(stores, monkeypatch) -> None:
    """A view a store lacks (NotOnClickHouse, as `text:` search is) is one line on the status line, and the
    other screens still read. Here the Metrics screen's read is made to lack it."""

    from store.clickhouse.dashboards import NotOnClickHouse

    async def lacking(self: Any, window_s: float, now_s: float) -> Any:
        raise NotOnClickHouse("OTLP metrics")

    monkeypatch.setattr(ClickHouseStoreReader, "metrics", lacking)
    app = _app(stores[0], ClickHouseStoreReader(stores[1]))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.press("8")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await app.tick()
        await pilot.pause()
        assert app.load_error is not None and "OTLP metrics: not available on a ClickHouse store yet" in app.load_error
        from llmobs_tui.widgets.chrome import StatusLine

        line = _texts_of(app.screen.query_one(StatusLine))
        assert "not available on a ClickHouse store yet" in line and "Traceback" not in line
        await pilot.press("1")  # and the others still read
        await pilot.pause()
        await app.workers.wait_for_complete()
        await app.tick()
        assert app.load_error is None


def _texts_of(widget: Any) -> str:
    return _plain(widget.content)


def _plain(renderable: Any) -> str:
    from rich.console import Console

    console = Console(width=300, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def test_an_unreachable_clickhouse_is_one_line_and_exit_1(capsys, monkeypatch) -> None:
    from llmobs_tui.cli import main

    monkeypatch.setenv(PASSWORD_ENV, "x")
    code = main(["--store", "clickhouse://default@127.0.0.1:1/llmobs"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.startswith("llmobs-tui: cannot reach ClickHouse at clickhouse://default@127.0.0.1:1/llmobs")
    assert "Traceback" not in err and err.count("\n") == 1


async def test_the_alert_rules_in_the_app_fire_the_same_on_both_stores(stores, tmp_path) -> None:
    """The app's alert source (the rule engine) evaluates on ClickHouse when the TUI reads ClickHouse
    (store/clickhouse/alerts.py's reads): the Alerts screen lists the same alerts and the same SLO table."""
    from llmobs_tui.alerting.live import EngineAlerts
    from llmobs_tui.config import load_config
    from tests.test_clickhouse_reports import STRICT

    db_path, url = stores
    config_file = tmp_path / "llmobs.toml"
    config_file.write_text(STRICT, encoding="utf-8")
    config = load_config(config_file)
    shown = []
    for store_url, reader in ((None, None), (url, ClickHouseStoreReader(url))):
        alerts = EngineAlerts(db_path, config, interval_s=3600, store_url=store_url)  # once: the clock stands still
        app = LlmobsApp(db_path, clock=lambda: NOW, refresh_s=None, window_s=86400, reader=reader, alerts=alerts)
        try:
            shown.append(await _walk(app))
            assert alerts.error is None, alerts.error
            assert alerts.engine.store_url == store_url  # the rules read the store the screens read
            firing = [view.title for view in alerts.snapshot(NOW) if view.firing]
        finally:
            alerts.close()
        assert len(firing) >= 2, firing  # not two quiet rule sets agreeing
    truth, got = shown
    assert got["alerts"] == truth["alerts"]
    assert got["overview"] == truth["overview"]  # the banner of firing alerts, on every screen


def test_llmobs_tui_store_opens_the_app_on_clickhouse(stores, capsys, monkeypatch, tmp_path) -> None:
    """`llmobs-tui --store URL` (the default command): the app reads the ClickHouse store through
    ClickHouseStoreReader, its alert rules evaluate there, and no receiver starts. (The app's run is
    replaced: no terminal here; what it would show is tested above.)"""
    from llmobs_tui.cli import main

    seen: dict[str, Any] = {}

    async def run_async(app: LlmobsApp) -> None:
        seen["reader"], seen["alerts"], seen["status"] = app.reader, app.alerts, app.status

    monkeypatch.setattr(LlmobsApp, "run_async", run_async)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.chdir(tmp_path)  # no llmobs.toml from the working directory
    code = main(["--store", stores[1].display(), "--grpc-port", "1", "--http-port", "1"])
    _, err = capsys.readouterr()
    assert code == 0, err
    reader = seen["reader"]
    assert isinstance(reader, ClickHouseStoreReader) and reader.url.database == stores[1].database
    assert seen["alerts"].engine.store_url == reader.url
    assert seen["status"].mode == f"read-only {stores[1].display()}" and not seen["status"].address


def test_a_wrong_password_is_one_line_and_exit_1(stores, capsys, monkeypatch) -> None:
    from llmobs_tui.cli import main

    monkeypatch.setenv(PASSWORD_ENV, "not-it")
    code = main(["--store", stores[1].display()])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert f"refused user {USER}: wrong user or password" in err and err.count("\n") == 1, err


async def test_the_breakdown_keeps_its_table_when_a_store_lacks_its_charts_data(stores, monkeypatch) -> None:
    """A store without the trends a Breakdown's charts read (NotInThisStore): the charts say so under titles
    for the grouping shown, and the table and the status line are not taken down with them."""
    from llmobs_tui.widgets.chart import TimeChart
    from store.clickhouse import dashboards as clickhouse_dashboards

    def lacking(*args: Any, **kwargs: Any) -> Any:
        raise clickhouse_dashboards.NotOnClickHouse("tool call trends")

    monkeypatch.setattr(clickhouse_dashboards, "trends_rows", lacking)
    app = _app(stores[0], ClickHouseStoreReader(stores[1]))
    async with app.run_test(size=(160, 50)) as pilot:
        await _breakdown_by_tool(app, pilot)
        charts = [_plain(chart.render()) for chart in app.screen.query(TimeChart)]
        assert len(charts) == 2 and all("tool call trends: not available on a ClickHouse store yet" in c
                                        for c in charts), charts
        assert all(" by tool" in str(c.border_title) for c in app.screen.query(TimeChart))
        assert len([line for line in _texts(app.screen) if " | " in line]) >= 3
