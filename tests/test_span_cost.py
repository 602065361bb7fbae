"""The Cost tab shows the price row that priced a span, read from the store (issue 12): the tier
that applied (base or long-context), that tier's per-1M prices, and a formula whose terms add up to
the stored cost. A row changed since the span was priced is said so, and `reprice` puts it right.
TPOT and decode rate come from store.latency, the definition the writer's rollups use."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmobs_tui.reader import StoreReader
from llmobs_tui.widgets.span_detail import cost_view
from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store.connection import WriterLock, open_writer
from store.latency import decode_figures
from store.pricing import FEMTO_PER_NANO, TIER_BASE, TIER_LONG_CONTEXT, record_price_rows, round_nusd
from store.span_detail import SpanDetail
from store.writer import SpanWriter
from tests.otlp_factory import MS, make_span, trace_id_bytes, trace_request
from tests.test_tui import make_app, settle, text_of
from tests.tui_fixtures import FROZEN_NOW, use_utc

S = 1_000_000_000
TRACE = 0x5EED
PRICES = """
[[price]]
id = "test/long-context"
provider = "openai"
names = ["lc-model"]
input = 2.0
output = 8.0
cache_read = 0.5
long_context_threshold = 1000
long_input = 4.0
long_output = 12.0
long_cache_read = 1.0
checked = "2026-11-30"
"""
# input 1,500 (300 cache read, 100 cache write): above the 1,000 threshold. output 200 (50 reasoning).
USAGE = {"gen_ai.usage.input_tokens": 1500, "gen_ai.usage.cache_read.input_tokens": 300,
         "gen_ai.usage.cache_creation.input_tokens": 100, "gen_ai.usage.output_tokens": 200,
         "gen_ai.usage.reasoning.output_tokens": 50}
# Long-context prices: 1,100 uncached × $4 + 300 × $1 + 100 × $4 (cache write defaults to long_input)
# + 150 × $12 + 50 × $12 (reasoning costs long_output), per 1M tokens.
LONG_COST_NUSD = (1100 * 4 + 300 * 1 + 100 * 4 + 150 * 12 + 50 * 12) * 1000
BASE_COST_NUSD = (1100 * 2 + 300 * 0.5 + 100 * 2 + 150 * 8 + 50 * 8) * 1000


def _table(tmp_path: Path, text: str = PRICES, name: str = "prices.toml") -> PriceTable:
    path = tmp_path / name
    path.write_text(text)
    return PriceTable.load(path)


def _ingest(path: Path, table: PriceTable, *, record: bool = True) -> None:
    """A long-context call through the normalizer and the writer, as the receiver stores it."""
    start = int((FROZEN_NOW - 30) * S)
    span = make_span(TRACE, 1, None, "chat lc-model", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "lc-model",
        "gen_ai.response.time_to_first_chunk": 0.2, **USAGE}, start_ns=start, end_ns=start + 1000 * MS)
    rows, resources, scopes, _ = Normalizer(table, IngestOptions()).decode_traces(trace_request([span]),
                                                                                  int(FROZEN_NOW * S))
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    try:
        if record:  # what the writer process does at start
            record_price_rows(db, table.records(), int(FROZEN_NOW * S))
        SpanWriter(db).write(rows, [], resources, scopes)
    finally:
        db.close()
        lock.release()


def _reprice(path: Path, table: PriceTable) -> tuple[int, int]:
    """What `llmobs-tui reprice` does (llmobs_tui/cli/prices.py)."""
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    try:
        record_price_rows(db, table.records(), int(FROZEN_NOW * S))
        return SpanWriter(db).reprice(table.price_call)
    finally:
        db.close()
        lock.release()


def _detail(path: Path) -> SpanDetail:
    async def load() -> SpanDetail:
        reader = StoreReader(path)
        await reader.open()
        try:
            trace = await reader.trace(trace_id_bytes(TRACE))
            return await reader.span_detail(trace.trace_id, trace.spans[0])
        finally:
            await reader.close()

    return asyncio.run(load())


def _plain(detail: SpanDetail) -> str:
    return text_of(type("W", (), {"content": cost_view(detail)})())


def test_long_context_call_shows_the_long_context_row_and_a_formula_that_adds_up(tmp_path):
    table = _table(tmp_path)
    store = tmp_path / "store.db"
    _ingest(store, table)
    detail = _detail(store)
    span = detail.span
    assert span.price_id == "test/long-context" and span.cost_nusd == LONG_COST_NUSD != BASE_COST_NUSD
    assert detail.price is not None and detail.price.long_context_threshold == 1000
    assert detail.price_tier == TIER_LONG_CONTEXT
    cost = detail.cost
    assert cost is not None and cost.tier == TIER_LONG_CONTEXT and cost.tier_recorded
    assert cost.prices == (4.0, 1.0, 4.0, 12.0, 12.0)
    assert cost.tokens == (1100, 300, 100, 150, 50)
    # The terms add up to the stored cost (rounded once to nano-USD), and the view says so.
    assert round_nusd(sum(cost.terms_femto_usd)) == span.cost_nusd and cost.matches_stored
    assert sum(cost.terms_femto_usd) == span.cost_nusd * FEMTO_PER_NANO
    text = " ".join(_plain(detail).split())
    assert "price row test/long-context" in text
    assert "tier long context: input 1,500 > 1,000 tokens" in text
    assert "per 1M in $4 · cache read $1 · cache write $4 · out $12 · reasoning $12" in text
    assert "formula 1,100×$4 + 300×$1 + 100×$4 + 150×$12 + 50×$12 (/1M)" in text
    assert "= $0.0044 + $0.0003 + $0.0004 + $0.0018 + $0.0006 = $0.0075 the stored cost" in text
    assert "reprice" not in text
    # TPOT and decode rate: the store's figures (store.latency), the ones its TPOT histogram uses.
    assert detail.decode == decode_figures(span.duration_ns, span.ttft_ns, span.output_tokens)
    assert detail.decode is not None and detail.decode.tokens_per_s == pytest.approx(250)
    assert "TTFT 200ms" in text.replace(" ms", "ms") and "decode 250 tok/s" in text


@pytest.mark.anyio
async def test_the_cost_tab_shows_the_long_context_prices(tmp_path):
    use_utc()
    store = tmp_path / "store.db"
    _ingest(store, _table(tmp_path))
    app = make_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        app.open_trace(trace_id_bytes(TRACE))
        await settle(pilot)
        await pilot.press("dollar_sign")
        await settle(pilot)
        text = " ".join(text_of(app.screen.query_one("#detail-cost")).split())
    assert "tier long context" in text and "in $4 · cache read $1 · cache write $4 · out $12" in text
    assert "= $0.0044 + $0.0003 + $0.0004 + $0.0018 + $0.0006 = $0.0075 the stored cost" in text


def _restart_writer_with(store: Path, table: PriceTable) -> None:
    """The writer starts with another price table: it records its rows, and reprices nothing."""
    lock = WriterLock(store)
    lock.acquire()
    db = open_writer(store)
    record_price_rows(db, table.records(), int(FROZEN_NOW * S))
    db.close()
    lock.release()


def test_a_row_changed_since_is_said_and_reprice_puts_it_right(tmp_path):
    store = tmp_path / "store.db"
    _ingest(store, _table(tmp_path))
    # The writer restarts with a changed row: the stored cost no longer matches the stored row.
    changed = _table(tmp_path, PRICES.replace("long_input = 4.0", "long_input = 5.0"), "changed.toml")
    _restart_writer_with(store, changed)
    detail = _detail(store)
    assert detail.cost is not None and not detail.cost.matches_stored
    assert detail.span.cost_nusd == LONG_COST_NUSD
    text = " ".join(_plain(detail).split())
    assert "the price row changed since this call was priced (stored cost $0.0075): run llmobs-tui reprice" in text
    assert _reprice(store, changed) == (1, 1)
    detail = _detail(store)
    assert detail.cost is not None and detail.cost.matches_stored
    assert detail.span.cost_nusd == LONG_COST_NUSD + 1100 * 1000 + 100 * 1000
    # A threshold raised above the call's input: repriced at base prices, and the tier follows.
    raised = _table(tmp_path, PRICES.replace("long_context_threshold = 1000", "long_context_threshold = 2000")
                    .replace("long_input = 4.0", "long_input = 5.0"), "raised.toml")
    _restart_writer_with(store, raised)
    detail = _detail(store)
    assert detail.cost is not None and detail.cost.cost_nusd == detail.span.cost_nusd  # same long prices…
    assert not detail.cost.matches_stored  # …but the row would no longer pick them
    text = " ".join(_plain(detail).split())
    assert "tier long context prices priced this call; the row's threshold is now 2,000 tokens" in text
    assert "run llmobs-tui reprice" in text
    assert _reprice(store, raised) == (1, 1)
    detail = _detail(store)
    assert detail.price_tier == TIER_BASE and detail.span.cost_nusd == BASE_COST_NUSD
    assert detail.cost is not None and detail.cost.matches_stored
    assert "tier base: input 1,500 ≤ 2,000 tokens" in " ".join(_plain(detail).split())


def test_a_row_the_store_does_not_know_points_at_reprice(tmp_path):
    store = tmp_path / "store.db"
    table = _table(tmp_path)
    _ingest(store, table, record=False)
    detail = _detail(store)
    assert detail.price is None and detail.cost is None and detail.price_tier == TIER_LONG_CONTEXT
    text = " ".join(_plain(detail).split())
    assert "test/long-context: not recorded in this store" in text and "run llmobs-tui reprice" in text
    _reprice(store, table)
    assert _detail(store).cost is not None


def test_one_cost_formula():
    """The pricer's cost is the sum of the terms the Cost tab shows (store.pricing), both tiers."""
    table = PriceTable.load()
    record = next(r for r in table.records() if r.long_context_threshold)
    row = next(r for r in table.rows if r.id == record.id)
    from store.pricing import breakdown

    for inp in (record.long_context_threshold, record.long_context_threshold + 1):
        cost = table.cost_nusd(row, inp, 777, 123, 45, 67)
        shown = breakdown(record, table.tier(row, inp), inp, 777, 123, 45, 67, cost)
        assert shown.cost_nusd == cost and shown.matches_stored


@pytest.mark.anyio
async def test_the_writer_process_records_the_price_table_it_prices_with(tmp_path):
    import sqlite3

    from receiver.pipeline import IngestPipeline, PipelineConfig

    (tmp_path / "prices.toml").write_text(PRICES)
    store = tmp_path / "served.db"
    pipeline = IngestPipeline(PipelineConfig(db_path=str(store), decoders=1, retention_s=None,
                                             prices_file=str(tmp_path / "prices.toml")))
    await pipeline.start()
    await pipeline.aclose()
    db = sqlite3.connect(store)
    try:
        row = db.execute("SELECT long_context_threshold, long_input, in_table FROM price_rows "
                         "WHERE id = 'test/long-context'").fetchone()
        shipped = db.execute("SELECT count(*) FROM price_rows").fetchone()[0]
    finally:
        db.close()
    assert row == (1000, 4.0, 1) and shipped == len(PriceTable.load(tmp_path / "prices.toml").rows)


@pytest.mark.anyio
async def test_serves_last_counters_include_the_writers_final_report(tmp_path, monkeypatch):
    """The writer reports its counters once a period and once more as it stops; `serve`'s last line
    ("N spans committed") reads them right after aclose. With no periodic report in the run, only the
    final one can carry the count: it must have been taken in by then."""
    import time

    from receiver import pipeline as pipeline_module
    from receiver.pipeline import IngestPipeline, PipelineConfig
    from tests.otlp_factory import make_span, trace_request

    real_options = PipelineConfig.writer_options
    monkeypatch.setattr(PipelineConfig, "writer_options", lambda self: {**real_options(self), "stats_every_s": 3600})
    real_read = pipeline_module._Child._read_loop

    def slow_reader(child) -> None:  # a reader thread that a busy machine delays after each message
        receive = child.from_child.recv_bytes

        def receive_slowly():
            data = receive()
            time.sleep(0.3)
            return data

        child.from_child.recv_bytes = receive_slowly
        real_read(child)

    monkeypatch.setattr(pipeline_module._Child, "_read_loop", slow_reader)
    pipeline = IngestPipeline(PipelineConfig(db_path=str(tmp_path / "s.db"), decoders=1, retention_s=None))
    await pipeline.start()
    now = time.time_ns()
    spans = [make_span(1, i, None if i == 1 else 1, "chat", {"gen_ai.operation.name": "chat"}, now, now + 10**6)
             for i in range(1, 6)]
    outcome = await pipeline.submit("traces", trace_request(spans).SerializeToString())
    assert outcome.accepted == 5
    await pipeline.aclose()
    assert pipeline.stats.writer.get("spans") == 5, pipeline.stats.writer
