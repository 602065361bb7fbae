"""The Trace screen uses the space it has (issue 14): a short tree takes the rows it needs and the
selected span's card and tabs the rest; a 2,000-span tree shares the screen and scrolls; 80×24
keeps the stacked layout. The card's figures are checked against the spans table, written through
the real Normalizer and SpanWriter."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.app import LlmobsApp
from llmobs_tui.scenarios import MS, S, SpanSpec, Trace, to_otlp_request, trace_id_of
from llmobs_tui.screens.trace import TraceScreen
from llmobs_tui.widgets.distribution import bins_of, column_of, distribution
from llmobs_tui.widgets.span_card import SpanCard
from llmobs_tui.widgets.span_detail import SpanDetailView
from llmobs_tui.widgets.waterfall import Waterfall
from receiver.normalize import Normalizer
from store.writer import SpanWriter
from tests.tui_fixtures import FROZEN_NOW
from tests.tui_scenarios import settle

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SHORT, LONG = 7001, 7002
LONG_SPANS = 2000


def chat(parent: int, start_ms: int, duration_ms: int, ttft_s: float, inp: int, out: int, reasoning: int = 0,
         cache_read: int = 0) -> SpanSpec:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
             "gen_ai.request.stream": True, "gen_ai.response.time_to_first_chunk": ttft_s,
             "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out,
             "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}])}
    if reasoning:
        attrs["gen_ai.usage.reasoning.output_tokens"] = reasoning
    if cache_read:
        attrs["gen_ai.usage.cache_read.input_tokens"] = cache_read
    return SpanSpec("chat gpt-4o", parent, start_ms * MS, duration_ms * MS, attrs, kind=3)


def short_trace() -> Trace:
    spans = [SpanSpec("support request", None, 0, 3000 * MS, {"app.llm.feature": "support"}, kind=2),
             chat(0, 10, 1200, 0.4, 3000, 300, reasoning=100, cache_read=1000),
             SpanSpec("lookup_order", 0, 1220 * MS, 200 * MS, {"gen_ai.operation.name": "execute_tool",
                                                               "gen_ai.tool.name": "lookup_order"}),
             chat(0, 1430, 1500, 0.9, 4000, 500)]
    return Trace("support", "support-bot", spans)


def long_trace() -> Trace:
    spans = [SpanSpec("batch job", None, 0, 60_000 * MS, {"app.llm.feature": "batch"}, kind=2)]
    spans += [SpanSpec(f"step {i}", 0, (i * 25) * MS, 20 * MS) for i in range(LONG_SPANS - 1)]
    return Trace("batch", "batch-bot", spans)


@pytest.fixture
def store(db_path: Path, writer_db: sqlite3.Connection, normalizer: Normalizer) -> Path:
    writer = SpanWriter(writer_db, clock=lambda: int(FROZEN_NOW * S))
    for trace, number in ((short_trace(), SHORT), (long_trace(), LONG)):
        request = to_otlp_request([(trace, number, int((FROZEN_NOW - 300) * S))])
        rows, resources, scopes, rejections = normalizer.decode_traces(request, int(FROZEN_NOW * S))
        assert rejections.count == 0, rejections.message()
        writer.write(rows, [], resources, scopes)
    return db_path


async def open_trace(pilot, number: int) -> TraceScreen:
    pilot.app.open_trace(trace_id_of(number))
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, TraceScreen)
    return screen


async def test_a_short_tree_takes_its_rows_and_the_span_the_rest(store):
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_trace(pilot, SHORT)
        body = screen.query_one("#trace-body")
        waterfall, card = screen.query_one(Waterfall), screen.query_one(SpanCard)
        tabs = screen.query_one(SpanDetailView)
        assert body.has_class("-wide", "-fit")
        assert waterfall.size.height == 5  # four spans; five rows at least
        assert waterfall.region.width >= 158, "full width: finer time bars"
        # The card and the tabs side by side under the waterfall, as tall as the rest of the screen.
        assert card.display and card.region.y > waterfall.region.bottom - 1 and tabs.region.y == card.region.y
        assert card.region.right <= tabs.region.x and card.size.height >= 20
        # Collapsing the root, or `l`, keeps the layout: the detail does not jump under the cursor.
        await pilot.press("home", "space")
        await settle(pilot)
        assert len(waterfall.rows) == 1 and waterfall.size.height == 5 and body.has_class("-fit")
        await pilot.press("space", "l")
        await settle(pilot)
        assert all(r.span.is_llm for r in waterfall.rows) and waterfall.size.height == 5
        for key, tab in (("a", "attributes"), ("e", "events"), ("dollar_sign", "cost"), ("c", "conversation")):
            await pilot.press(key)
            await settle(pilot)
            assert screen.query_one("TabbedContent").active == f"tab-{tab}"


async def test_the_card_shows_the_call_as_the_store_has_it(store, db_path):
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT span_id, duration_ns, ttft_ns, input_tokens, output_tokens, cache_read_tokens, "
                      "reasoning_tokens FROM spans WHERE trace_id = ? AND ttft_ns IS NOT NULL ORDER BY start_ns",
                      (trace_id_of(SHORT),)).fetchall()
    trace_ns = db.execute("SELECT duration_ns FROM traces WHERE trace_id = ?", (trace_id_of(SHORT),)).fetchone()[0]
    db.close()
    assert len(rows) == 2
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_trace(pilot, SHORT)
        waterfall, card = screen.query_one(Waterfall), screen.query_one(SpanCard)
        for span_id, duration, ttft, inp, out, cache_read, reasoning in rows:
            waterfall.select_span(span_id)
            await settle(pilot)
            text = " ".join(card.text().split())
            assert f"first token {fmt.duration(ttft)} {ttft / duration:.0%}" in text, text
            assert f"decode {fmt.duration(duration - ttft)} {(duration - ttft) / duration:.0%}" in text, text
            assert f"in {fmt.tokens(inp)}" in text and f"uncached {fmt.tokens(inp - (cache_read or 0))}" in text
            assert f"out {fmt.tokens(out)}" in text and f"visible {fmt.tokens(out - (reasoning or 0))}" in text
            if cache_read:
                assert f"cache read {fmt.tokens(cache_read)}" in text
            if reasoning:
                assert f"reasoning {fmt.tokens(reasoning)}" in text
            # Both calls run one after the other under the root: each is on the critical path.
            assert f"{fmt.duration(duration)} of the trace's critical path ({duration / trace_ns:.0%}" in text, text
            assert "gen_ai.usage.input_tokens" in text, "the attributes follow, one line each"


async def test_a_2000_span_tree_shares_the_screen_and_scrolls(store):
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_trace(pilot, LONG)
        body = screen.query_one("#trace-body")
        waterfall, card = screen.query_one(Waterfall), screen.query_one(SpanCard)
        tabs = screen.query_one(SpanDetailView)
        assert len(waterfall.rows) == LONG_SPANS
        assert body.has_class("-wide") and not body.has_class("-fit")
        assert waterfall.size.height == body.size.height, "the tree takes every row and scrolls"
        # Side by side: the card above the tabs, right of the waterfall.
        assert card.display and card.region.x >= waterfall.region.right and card.region.bottom <= tabs.region.y
        await pilot.press("end")
        await settle(pilot)
        assert waterfall.cursor == LONG_SPANS - 1
        assert int(waterfall.scroll_offset.y) <= waterfall.cursor < int(waterfall.scroll_offset.y) + \
            waterfall.size.height
        # The same screen then a short trace: the layout follows the trace.
        await open_trace(pilot, SHORT)
        assert body.has_class("-fit") and waterfall.size.height == 5


async def test_80_by_24_keeps_the_stacked_layout(store):
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(80, 24)) as pilot:
        for number in (SHORT, LONG):
            screen = await open_trace(pilot, number)
            waterfall, tabs = screen.query_one(Waterfall), screen.query_one(SpanDetailView)
            assert not screen.query_one("#trace-body").has_class("-wide")
            assert not screen.query_one(SpanCard).display, "no room for the card: the Cost tab has its figures"
            assert waterfall.size.height >= 3 and tabs.region.y > waterfall.region.y


def test_the_distribution_counts_every_member_once_and_marks_the_value():
    points = [(100.0, 3), (200.0, 5), (400.0, 1), (1600.0, 2), (50.0, 0)]
    counts, low, high = bins_of(points, 800.0, 10)
    assert sum(counts) == 11 and (low, high) == (100.0, 1600.0)
    assert counts[0] == 3 and counts[-1] == 2
    assert column_of(800.0, low, high, 10) == 7  # log2(8) / log2(16) of the way
    from rich.console import Console

    console = Console(width=80, no_color=True)
    with console.capture() as capture:
        console.print(distribution(points, 800.0, fmt.duration, "this call", width=40, height=3))
    lines = capture.get().splitlines()
    assert len(lines) == 3 + 2 + 1 and "this call" in lines[-1]
    assert lines[-1].index("▲") > 20, "800 sits right of the middle of 100…1600 (on a log axis)"


async def test_switching_the_arrangement_restyles_what_a_full_restyle_would(store):
    """TraceScreen._arrange restyles only the widgets whose rules name -wide or -fit. A rule added to
    DEFAULT_CSS for a widget under them (`#trace-body.-fit TabPane { ... }`) would go stale: every
    widget's styles after each switch must be what restyling the whole screen gives."""
    def styles_of(screen) -> list[tuple[str, dict]]:
        nodes = [screen, *screen.walk_children(with_self=False)]
        return [(f"{type(n).__name__}#{n.id}", dict(n._css_styles.get_rules())) for n in nodes]

    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        for number, fit in ((SHORT, True), (LONG, False), (SHORT, True)):
            screen = await open_trace(pilot, number)
            assert screen.query_one("#trace-body").has_class("-fit") == fit
            scoped = styles_of(screen)
            app.stylesheet.update(screen)
            assert styles_of(screen) == scoped
        await pilot.resize_terminal(100, 40)  # narrow: -wide off
        await settle(pilot)
        assert not screen.query_one("#trace-body").has_class("-wide")
        scoped = styles_of(screen)
        app.stylesheet.update(screen)
        assert styles_of(screen) == scoped


async def test_a_trace_opens_with_its_span_details_read_with_it(store, monkeypatch: pytest.MonkeyPatch):
    """The span a trace opens on (its first LLM call) has its details read in the same load as the
    trace: the card and the tabs show them with the waterfall, no read of their own follows. Moving to
    another span reads that span's."""
    reads: list[bytes] = []
    load_span = TraceScreen.load_span

    def counted(self, trace_id, span):
        reads.append(span.span_id)
        return load_span(self, trace_id, span)

    monkeypatch.setattr(TraceScreen, "load_span", counted)
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_trace(pilot, SHORT)
        waterfall, card = screen.query_one(Waterfall), screen.query_one(SpanCard)
        first = waterfall.selected
        assert first is not None and first.is_llm
        assert reads == [], "the first span's details came with the trace"
        assert card.detail is not None and card.detail.span.span_id == first.span_id
        assert "gen_ai.usage.input_tokens" in " ".join(card.text().split())
        assert "gen_ai.request.model" in _plain(screen.query_one("#detail-attributes", Static).content)
        await pilot.app.tick()  # a live refresh of the same trace reads no span again
        await settle(pilot)
        assert reads == []
        await pilot.press("down")
        await settle(pilot)
        assert reads == [waterfall.selected.span_id] and waterfall.selected.span_id != first.span_id
        assert card.detail is not None and card.detail.span.span_id == waterfall.selected.span_id


def _plain(renderable) -> str:
    console = Console(width=120, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()
