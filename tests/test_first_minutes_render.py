"""Issue 11, "the first five minutes": waterfall labels, the selection kept on screen, tables
without stray scrollbars, and the wording and numbers a first look reads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from llmobs_tui import format as fmt
from llmobs_tui.app import LlmobsApp
from llmobs_tui.cli.markdown import format_report_md
from llmobs_tui.screens.breakdown import BreakdownScreen
from llmobs_tui.screens.trace import TraceScreen
from llmobs_tui.widgets.chrome import TopBar
from llmobs_tui.widgets.keyed_table import KeyedTable
from llmobs_tui.widgets.span_detail import _value_text, cost_view
from llmobs_tui.widgets.stat_card import StatCard
from llmobs_tui.widgets.waterfall import ZOOMS, Waterfall
from store.connection import open_reader
from store.dashboards import SpanRow
from store.queries import GroupStats
from tests.tui_fixtures import FROZEN_NOW, build_store, use_utc
from tests.tui_scenarios import settle

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    use_utc()
    return build_store(tmp_path_factory.mktemp("first-minutes") / "tui.db", minutes=20, traces_per_minute=8)


def make_app(store: Path) -> LlmobsApp:
    return LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)


def agentic_traces(store: Path, limit: int = 3) -> list[bytes]:
    """Traces with LLM calls nested under tool spans (planner → tools → nested calls → composer)."""
    db = open_reader(store)
    try:
        return [r[0] for r in db.execute(
            "SELECT trace_id FROM traces WHERE spans >= 8 AND llm_calls >= 4 ORDER BY spans DESC, trace_id LIMIT ?",
            (limit,))]
    finally:
        db.close()


def span(**changes) -> SpanRow:
    base = dict(id=1, span_id=b"\x01" * 8, parent_span_id=None, name="chat gpt-4o-mini", kind="llm", start_ns=0,
                end_ns=851_000_000, duration_ns=851_000_000, status=0, status_message=None, service="svc",
                provider="openai", operation="chat", request_model="gpt-4o-mini",
                response_model="gpt-4o-mini-2024-07-18", input_tokens=1800, output_tokens=338, cache_read_tokens=0,
                cache_write_tokens=0, reasoning_tokens=0, ttft_ns=None, streaming=0, finish_reason="stop",
                error_class=None, error_subclass=None, error_type=None, feature=None, tenant=None, prompt_id=None,
                prompt_version=None, conversation_id=None, user_id=None, cost_nusd=420_000, price_id="p",
                billed=1, flags=0, duplicate_of=None)
    base.update(changes)
    fields = {f.name for f in dataclasses.fields(SpanRow)}
    return SpanRow(**{k: v for k, v in base.items() if k in fields})


# -- 7. waterfall labels -------------------------------------------------------------------------

def test_a_narrow_label_drops_whole_parts_tokens_first_duration_last():
    s = span()
    full = Waterfall.label(s)
    assert full == "851ms gpt-4o-mini-2024-07-18 1.8k→338 $0.0004"
    assert Waterfall.label(s, len(full)) == full
    assert Waterfall.label(s, len(full) - 1) == "851ms gpt-4o-mini-2024-07-18 $0.0004"  # tokens go first
    assert Waterfall.label(s, 20) == "851ms $0.0004"  # then the model
    assert Waterfall.label(s, 10) == "851ms"  # then the cost; never `851ms g`
    assert Waterfall.label(s, 4) == ""
    twin = span(billed=0, duplicate_of=b"\x02" * 8)
    assert Waterfall.label(twin).startswith("851ms dup ")
    assert Waterfall.label(twin, 12) == "851ms dup"


def _bar_words(waterfall: Waterfall, index: int, width: int) -> list[str]:
    row = waterfall.rows[index]
    text = "".join(seg.text for seg in waterfall._segments(row, width, False))
    name_width = max(16, min(width * 2 // 5, 48))
    return [w.strip("◂▸▏") for w in text[name_width + 1:].split() if w.strip("◂▸▏")]


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_every_label_shows_whole_parts_and_the_duration_at_every_zoom(store, size):
    app = make_app(store)
    async with app.run_test(size=size) as pilot:
        for trace_id in agentic_traces(store, 2):
            app.open_trace(trace_id)
            await settle(pilot)
            waterfall = app.screen.query_one(Waterfall)
            # What is visible: the widget's width less a vertical scrollbar when rows overflow
            # (a label drawn under the scrollbar is a cut figure).
            scrollbar = waterfall.styles.scrollbar_size_vertical if waterfall.show_vertical_scrollbar else 0
            width = waterfall.region.width - scrollbar
            assert waterfall.render_line(0).cell_length == width
            nested = [i for i, r in enumerate(waterfall.rows) if r.span.is_llm and r.depth >= 2]
            assert nested, "the fixture has LLM calls nested under tool spans"
            for zoom in range(len(ZOOMS)):
                waterfall.zoom_level = zoom
                for i, row in enumerate(waterfall.rows):
                    waterfall.cursor = i  # zoom centres on the selection
                    words = _bar_words(waterfall, i, width)
                    self_ns = waterfall.critical_path.self_ns.get(row.span.span_id)
                    allowed = set(Waterfall.label(row.span, self_ns=self_ns).split())
                    assert set(words) <= allowed, (zoom, row.span.name, words, sorted(allowed))  # nothing cut
                    if zoom == 0:
                        assert fmt.duration(row.span.duration_ns) in words, (row.span.name, words)
                        if row.span.is_llm and row.span.billed and width >= 100:
                            # At full width every nested call shows its model and cost as well.
                            assert fmt.money(row.span.cost_nusd, unpriced=True) in words, (row.span.name, words)


# -- 8. the selection stays on screen ------------------------------------------------------------

def _cursor_visible(waterfall: Waterfall) -> bool:
    top = int(waterfall.scroll_offset.y)
    return top <= waterfall.cursor < top + waterfall.size.height


async def test_the_selected_span_is_on_screen_when_a_trace_opens_and_after_a_resize(store):
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        traces = agentic_traces(store, 3)
        for trace_id in traces:
            app.open_trace(trace_id, slowest=True)
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, TraceScreen)
            waterfall = screen.query_one(Waterfall)
            await pilot.press("end")
            await settle(pilot)
            assert waterfall.cursor == len(waterfall.rows) - 1 >= waterfall.size.height
            assert _cursor_visible(waterfall)
            # Select the last span of the next trace through the screen (the cursor index stays).
        app.open_trace(traces[0])
        await settle(pilot)
        waterfall = app.screen.query_one(Waterfall)
        waterfall.select_span(waterfall.rows[-1].span.span_id)
        await settle(pilot)
        app.open_trace(traces[1])
        await settle(pilot)
        waterfall.select_span(waterfall.rows[-1].span.span_id)
        await settle(pilot)
        assert _cursor_visible(waterfall)
        await pilot.resize_terminal(160, 48)
        await settle(pilot)
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        assert _cursor_visible(waterfall)


# -- 10. tables and the window glyph -------------------------------------------------------------

@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_tables_span_the_screen_with_no_stray_scrollbars(store, size):
    app = make_app(store)
    async with app.run_test(size=size) as pilot:
        for key in ("3", "2"):
            await pilot.press(key)
            await settle(pilot)
            table = app.screen.query_one(KeyedTable)
            assert table.region.width == size[0]
            assert table.scrollbar_size_vertical == 0
            assert not table.show_horizontal_scrollbar  # the columns fit
        bar = app.screen.query_one(TopBar)
        assert "⏱" not in str(bar.content) and "last 1h" in str(bar.content)


# -- 11. wording and numbers ---------------------------------------------------------------------

def test_plurals_articles_window_and_report_costs():
    assert fmt.plural(1, "call") == "1 call" and fmt.plural(1, "LLM call") == "1 LLM call"
    assert fmt.plural(1204, "call") == "1,204 calls"
    assert [fmt.window_label(s) for s in (300, 3600, 86400, 7 * 86400)] == ["5m", "1h", "24h", "7d"]
    assert fmt.usd_figure(0.00042) == "0.00042" and fmt.usd_figure(0.0000012) == "0.0000012"
    assert fmt.usd_figure(0.0163) == "0.0163" and fmt.usd_figure(12.5) == "12.5000" and fmt.usd_figure(0) == "0.0000"


def test_not_billed_wording():
    class Detail:
        pass

    for kind, expected in (("agent", "An agent span:"), ("span", "A span:"), ("tool", "A tool span:")):
        detail = Detail()
        detail.span = span(kind=kind)
        assert cost_view(detail).plain.startswith(expected), kind


def test_json_attribute_values_show_real_characters():
    value = json.dumps([{"role": "user", "content": "pages 3–5 — “quoted”"}])
    assert "\\u2013" in value
    shown = _value_text(value).plain
    assert "3–5 — “quoted”" in shown and "\\u" not in shown
    assert _value_text("C:\\users\\u2013").plain == "C:\\users\\u2013"  # not JSON: as it is


def test_report_costs_keep_significant_digits_and_plurals():
    group = {"key": {"model": "gpt-4o-mini"}, "calls": 1, "errors": {"api": 0, "validation": 0, "guardrail": 0},
             "tokens": {"input": 10, "output": 5, "cache_read": 0, "cache_write": 0, "reasoning": 0},
             "cost_usd": 0.00042, "unpriced_calls": 0, "cache_hit_rate": None,
             "ttft_ms": {"p50": None, "p95": None}, "latency_ms": {"p50": 10.0, "p95": 10.0}}
    md = format_report_md({"window": {"start": "a", "end": "b"}, "by": ["model"], "groups": [group]})
    assert "| 0.00042 |" in md and "0.0000" not in md
    assert "1 call, $0.00042" in md


async def test_trace_header_breakdown_and_overview_wording(store):
    app = make_app(store)
    db = open_reader(store)
    one_call = db.execute("SELECT trace_id FROM traces WHERE llm_calls = 1 LIMIT 1").fetchone()[0]
    db.close()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        traffic = app.screen.query_one("#card-traffic", StatCard)
        labels = [f.label for f in traffic._figures]
        long_models = [label for label in labels if label.startswith("· ") and len(label) > 14]
        assert long_models, labels
        rendered = str(traffic.query_one(".card--figures").content)
        for label in long_models:
            assert label in rendered  # room to spare: not cut at 12 characters
        app.open_trace(one_call)
        await settle(pilot)
        summary = str(app.screen.query_one("#trace-summary").content)
        assert "1 LLM call " in summary and "LLM calls" not in summary
        await pilot.press("2")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, BreakdownScreen)
        empty = GroupStats(key={"model": None})
        busy = GroupStats(key={"model": "gpt-4o"})
        busy.counters[0] = 0
        from store.queries import _RC
        busy.counters[_RC["calls"]] = 3
        screen.show([busy, empty])
        assert screen.query_one(KeyedTable).keys() == [repr(("gpt-4o",))]
        screen.query_one(KeyedTable).move_cursor(row=0)
        screen.action_drill()
        await settle(pilot)
        assert "model model=" not in str(app.screen.query_one("#traces-filter").content)


@pytest.mark.slow
async def test_the_critical_path_is_marked_named_and_can_be_shown_alone(store):
    """The waterfall marks the spans the trace's end waited on, the header names the top three
    contributors with their share, and p shows the path alone (and back)."""
    from llmobs_tui.critical_path import analyse

    trace_id = agentic_traces(store, 1)[0]
    db = open_reader(store)
    rows = db.execute("SELECT span_id, parent_span_id, start_ns, end_ns, name FROM spans WHERE trace_id = ?",
                      (trace_id,)).fetchall()
    names = {r[0]: r[4] for r in rows}
    spans = [dataclasses.make_dataclass("S", ["span_id", "parent_span_id", "start_ns", "end_ns"])(*r[:4])
             for r in rows]
    path = analyse(spans)
    assert sum(path.contribution_ns.values()) == path.duration_ns
    off_path = {r[0] for r in rows} - path.on_path
    app = make_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        app.open_trace(trace_id)
        await settle(pilot)
        summary = app.screen.query_one("#trace-summary")
        assert summary.size.height == 2, "the critical path line is on screen"
        header = " ".join(summary.render().plain.split())
        top_id, top_ns = path.top(1)[0]
        assert "critical path: " in header
        assert f"{names[top_id]} {fmt.duration(top_ns)} {top_ns / path.duration_ns:.0%}" in header, header
        waterfall = app.screen.query_one(Waterfall)
        for i, row in enumerate(waterfall.rows):
            gutter = "".join(seg.text for seg in waterfall.render_line(i - int(waterfall.scroll_offset.y)))[:1] \
                if 0 <= i - int(waterfall.scroll_offset.y) < waterfall.size.height else None
            if gutter is not None:
                assert (gutter == "┃") == (row.span.span_id in path.on_path), (row.span.name, gutter)
        await pilot.press("p")
        await settle(pilot)
        assert {r.span.span_id for r in waterfall.rows} == path.on_path
        assert off_path, "the fixture's agentic trace has work off the path (parallel or early spans)"
        await pilot.press("p")
        await settle(pilot)
        assert {r.span.span_id for r in waterfall.rows} == {r[0] for r in rows}
