"""The TUI, driven as a person would through Textual's Pilot, on a deterministic store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmobs_tui import format as fmt
from llmobs_tui.app import LlmobsApp
from llmobs_tui.screens.breakdown import BreakdownScreen
from llmobs_tui.screens.overview import OverviewScreen
from llmobs_tui.screens.trace import TraceScreen
from llmobs_tui.screens.traces import TracesScreen
from llmobs_tui.widgets.keyed_table import KeyedTable
from llmobs_tui.widgets.stat_card import StatCard
from llmobs_tui.widgets.waterfall import Waterfall
from receiver.prices import PriceTable
from store.connection import open_reader
from tests.tui_fixtures import FROZEN_NOW, HOSTILE_TRACE_NUMBER, build_store, trace_id_of, use_utc

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="session")
def tui_store(tmp_path_factory) -> Path:
    use_utc()
    return build_store(tmp_path_factory.mktemp("tui") / "tui.db")


def make_app(store: Path, **kwargs) -> LlmobsApp:
    return LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None, **kwargs)


async def settle(pilot) -> None:
    """Let key handling and scheduled refreshes finish, then refresh once more, deterministically."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.app.tick()
    await pilot.pause()


def text_of(widget) -> str:
    """The plain text a Static shows (its content rendered as a person would read it)."""
    import io

    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
    console.print(widget.content)
    return console.export_text()


def card_text(screen, card_id: str) -> str:
    card = screen.query_one(card_id, StatCard)
    return text_of(card.query_one(".card--figures"))


def table_keys(screen) -> list[str]:
    return screen.query_one(KeyedTable).keys()


async def test_overview_figures_match_the_store(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, OverviewScreen)
        db = open_reader(tui_store)
        # Rollups count whole minutes: the hour's figures start at its first minute's bucket (the
        # fixture has traffic before the hour too).
        start = int(FROZEN_NOW - 3600)
        start -= start % 60
        calls, cost = db.execute("SELECT count(*), sum(cost_nusd) FROM spans WHERE billed = 1 AND start_ns >= ?",
                                 (start * 10**9,)).fetchone()
        traffic = card_text(app.screen, "#card-traffic")
        assert f"({calls:,})" in traffic
        # The fixture covers more than the hour, so $/h is the hour's cost; each feature line its share.
        spend = card_text(app.screen, "#card-cost")
        assert cost and f"$/h {fmt.usd(cost / 1e9)}" in " ".join(spend.split()), spend
        by_feature = db.execute("SELECT feature, sum(cost_nusd) FROM spans WHERE billed = 1 AND start_ns >= ? "
                                "GROUP BY feature ORDER BY 2 DESC LIMIT 2", (start * 10**9,)).fetchall()
        for feature, feature_cost in by_feature:
            assert f"· {feature or 'no feature'} {fmt.money(feature_cost)}" in " ".join(spend.split()), spend
        errors = card_text(app.screen, "#card-errors")
        assert "rate limit" in errors and "validation" in errors and "guardrail" in errors
        latency = card_text(app.screen, "#card-latency")
        assert "total" in latency and "TTFT" in latency and "TPOT" in latency


async def test_from_a_slow_p95_to_the_slowest_span_in_two_keystrokes(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("enter")  # on Latency → total p95: the slowest traces
        await settle(pilot)
        assert isinstance(app.screen, TracesScreen)
        assert app.screen.sort == "duration" and app.screen.descending
        db = open_reader(tui_store)
        slowest_trace = db.execute(
            "SELECT trace_id FROM traces WHERE start_ns >= ? AND llm_calls > 0 ORDER BY duration_ns DESC LIMIT 1",
            (int((FROZEN_NOW - 3600) * 10**9),)).fetchone()[0]
        assert table_keys(app.screen)[0] == slowest_trace.hex()
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        selected = app.screen.query_one(Waterfall).selected
        slowest_span = db.execute(
            "SELECT span_id FROM spans WHERE trace_id = ? AND kind IN ('llm', 'embedding') "
            "ORDER BY duration_ns DESC LIMIT 1", (slowest_trace,)).fetchone()[0]
        assert selected is not None and selected.span_id == slowest_span


async def test_every_error_figure_leads_to_matching_traces(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.screen.query_one("#card-errors", StatCard).focus()
        await pilot.press("down")  # "· rate limit"
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.flt.text == "error=rate_limit"
        keys = table_keys(app.screen)
        assert keys
        db = open_reader(tui_store)
        for key in keys[:20]:
            n = db.execute("SELECT count(*) FROM spans WHERE trace_id = ? AND error_subclass = 'rate_limit'",
                           (bytes.fromhex(key),)).fetchone()[0]
            assert n >= 1


async def test_breakdown_groups_and_drills(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(pilot)
        assert isinstance(app.screen, BreakdownScreen)
        table = app.screen.query_one(KeyedTable)
        assert table.row_count >= 6  # the demo's models
        await pilot.press("g")  # by feature
        await settle(pilot)
        assert app.screen.by == "feature"
        features = {str(table.get_row_at(i)[0]) for i in range(table.row_count)}
        assert {"support", "checkout", "search", "onboarding"} <= features
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TracesScreen)
        assert app.screen.flt.text.startswith("feature=")


async def test_filter_sort_and_bad_filter(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("slash")
        await pilot.press(*"model=~claude status=error")
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TracesScreen) and screen.flt.text == "model=~claude status=error"
        keys = table_keys(screen)
        assert keys
        db = open_reader(tui_store)
        for key in keys:
            trace_id = bytes.fromhex(key)
            assert db.execute("SELECT count(*) FROM spans WHERE trace_id = ? AND request_model LIKE 'claude%'",
                              (trace_id,)).fetchone()[0]
            assert db.execute("SELECT errors_api + errors_validation + errors_guardrail + error_spans FROM traces "
                              "WHERE trace_id = ?", (trace_id,)).fetchone()[0] > 0
        await pilot.press("slash")
        await pilot.press("ctrl+u", *"ttft>>1s")
        await pilot.press("enter")
        await settle(pilot)
        assert screen.flt.text == "model=~claude status=error", "a bad filter keeps the previous one"
        assert any("expected field op value" in n.message or "not a number" in n.message
                   for n in app._notifications)
        await pilot.press("C")  # Shift-C: most expensive first
        await settle(pilot)
        costs = [db.execute("SELECT cost_nusd FROM traces WHERE trace_id = ?", (bytes.fromhex(k),)).fetchone()[0]
                 for k in table_keys(screen)]
        assert costs == sorted(costs, reverse=True)
        await pilot.press("C")  # again: reversed
        await settle(pilot)
        costs = [db.execute("SELECT cost_nusd FROM traces WHERE trace_id = ?", (bytes.fromhex(k),)).fetchone()[0]
                 for k in table_keys(screen)]
        assert costs == sorted(costs)


async def test_inverted_filter(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_traces("!feature=search")
        await settle(pilot)
        db = open_reader(tui_store)
        features = {db.execute("SELECT feature FROM traces WHERE trace_id = ?", (bytes.fromhex(k),)).fetchone()[0]
                    for k in table_keys(app.screen)}
        assert "search" not in features and features


async def test_list_holds_still_while_the_user_reads(tui_store, tmp_path):
    import shutil

    store = tmp_path / "growing.db"
    shutil.copy(tui_store, store)
    app = make_app(store)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        table = app.screen.query_one(KeyedTable)
        await pilot.press("down", "down", "down")
        await settle(pilot)
        reading = table.cursor_key
        first = table_keys(app.screen)[0]
        assert not app.following, "moving off the top row pauses following"
        # New traffic lands while the user reads.
        _append_trace(store)
        app.wake()
        await settle(pilot)
        assert table.cursor_key == reading and table_keys(app.screen)[0] == first
        assert app.screen.held_back == 1
        await pilot.press("f")  # follow again: the new trace appears on top
        await settle(pilot)
        assert app.following and app.screen.held_back == 0
        assert table_keys(app.screen)[0] == trace_id_of(950_000).hex()


def _append_trace(store: Path, root_name: str | None = None) -> None:
    from llmobs_tui.scenarios import S, Traffic, to_otlp_request
    from receiver.normalize import IngestOptions, Normalizer
    from store.connection import WriterLock, open_writer
    from store.writer import SpanWriter

    lock = WriterLock(store)
    lock.acquire()
    db = open_writer(store)
    try:
        normalizer = Normalizer(PriceTable.load(), IngestOptions())
        request = to_otlp_request([(Traffic(99).rag("search"), 950_000, int((FROZEN_NOW - 1) * S))])
        if root_name is not None:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        if not span.parent_span_id:
                            span.name = root_name
        rows, resources, scopes, _ = normalizer.decode_traces(request, int(FROZEN_NOW * S))
        SpanWriter(db).write(rows, [], resources, scopes)
    finally:
        db.close()
        lock.release()


async def test_window_and_command(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.window_s == 3600
        await pilot.press("t")
        assert app.window_s == 86400
        await pilot.press("colon")
        await pilot.press(*"window 5m", "enter")
        await settle(pilot)
        assert app.window_s == 300
        await pilot.press("colon")
        await pilot.press(*"frobnicate", "enter")
        await settle(pilot)
        assert any("unknown command" in n.message for n in app._notifications)
        await pilot.press("colon")
        await pilot.press(*"by tenant", "enter")
        await settle(pilot)
        assert isinstance(app.screen, BreakdownScreen) and app.screen.by == "tenant"


async def test_trace_keys_errors_collapse_llm_only_zoom(tui_store):
    app = make_app(tui_store)
    db = open_reader(tui_store)
    failing = db.execute("SELECT trace_id FROM traces WHERE errors_api > 0 AND spans > 6 ORDER BY start_ns DESC "
                         "LIMIT 1").fetchone()[0]
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_trace(failing)
        await settle(pilot)
        waterfall = app.screen.query_one(Waterfall)
        total_rows = len(waterfall.rows)
        await pilot.press("n")
        await settle(pilot)
        assert waterfall.selected.failed
        first_error = waterfall.cursor
        await pilot.press("N")
        assert waterfall.selected.failed
        await pilot.press("home", "space")  # collapse the root
        assert len(waterfall.rows) == 1
        await pilot.press("space")
        assert len(waterfall.rows) == total_rows
        await pilot.press("l")
        assert waterfall.rows and all(r.span.is_llm for r in waterfall.rows)
        await pilot.press("l", "plus", "plus")
        assert waterfall.zoom_level == 2
        del first_error


async def test_span_detail_shows_conversation_cost_and_logs(tui_store):
    from tests.tui_fixtures import LOGGED_TRACE_NUMBER

    app = make_app(tui_store)
    async with app.run_test(size=(140, 44)) as pilot:
        app.open_trace(trace_id_of(LOGGED_TRACE_NUMBER))
        await settle(pilot)
        waterfall = app.screen.query_one(Waterfall)
        while not waterfall.selected.name.startswith("chat "):
            await pilot.press("down")
        await settle(pilot)
        conversation = text_of(app.screen.query_one("#detail-conversation"))
        assert "system" in conversation and "user" in conversation and "assistant" in conversation
        await pilot.press("dollar_sign")
        await settle(pilot)
        cost = text_of(app.screen.query_one("#detail-cost"))
        span = waterfall.selected
        assert f"price row {span.price_id}" in " ".join(cost.split()) and "formula" in cost
        await pilot.press("e")
        await settle(pilot)
        events = text_of(app.screen.query_one("#detail-events"))
        assert "log gen_ai.choice" in events and "Here is the policy." in events


async def test_copy_without_clipboard_says_so_and_export_writes_otlp_json(tui_store, tmp_path):
    app = make_app(tui_store, export_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        key = app.screen.query_one(KeyedTable).cursor_key
        await pilot.press("y")
        await settle(pilot)
        assert any("No clipboard available" in n.message and key in n.message for n in app._notifications)
        await pilot.press("ctrl+s")
        await settle(pilot)
        exported = json.loads((tmp_path / f"trace-{key}.json").read_text())
        spans = [s for rs in exported["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
        assert spans and {s["traceId"] for s in spans} == {key}


async def test_help_is_generated_from_the_bindings(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_trace(trace_id_of(1))
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        from textual.widgets import Static

        text = " ".join(text_of(w) for w in app.screen.query(Static))
        for expected in ("Filter", "Zoom in", "Next error", "Export trace", "Quit", "Collapse"):
            assert expected in text
        await pilot.press("escape")


async def test_untrusted_text_renders_literally(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(140, 40)) as pilot:
        app.open_trace(trace_id_of(HOSTILE_TRACE_NUMBER))
        await settle(pilot)
        waterfall = app.screen.query_one(Waterfall)
        lines = ["".join(seg.text for seg in waterfall.render_line(y)) for y in range(len(waterfall.rows))]
        assert any("[bold red]boom[/]" in line for line in lines), lines
        assert all("\x1b" not in line and "\x07" not in line for line in lines)
        assert any("␛]0;pwned␇" in line for line in lines), "control characters are shown, not executed"
        await pilot.press("down")
        await settle(pilot)
        detail = app.screen.query_one("#detail-conversation")
        rendered = text_of(detail)
        assert "[red]not markup[/red]" in rendered
        assert "␛[31mred␛[0m" in rendered and "\x1b" not in rendered
        assert "⁅U+202E⁆" in rendered, "a bidi override is shown, not applied"
        assert "┌─┐ boxed ╚═╝" in rendered and "עברית" in rendered
        await pilot.press("a")
        await settle(pilot)
        attributes = text_of(app.screen.query_one("#detail-attributes"))
        assert "\x1b" not in attributes


async def test_every_screen_works_in_80_by_24(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        for key in ("1", "2", "3"):
            await pilot.press(key)
            await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        assert app.screen.query_one(Waterfall).size.height >= 3
        await pilot.press("5")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen), "Esc goes back"


def _grey(hex_rgb: str) -> bool:
    """A shade: channels within a few steps of each other (the SVG export's own default foreground,
    #c5c8c6, is such a near-grey)."""
    r, g, b = (int(hex_rgb[i:i + 2], 16) for i in (0, 2, 4))
    return max(r, g, b) - min(r, g, b) <= 8


async def test_without_colour_failures_and_llm_calls_stay_distinguishable(tui_store, monkeypatch):
    """NO_COLOR: the screen is drawn in shades only, so what colour said must also be said in glyphs
    and words: a failed span keeps its ✗ and error class, an LLM call its ● mark, the error card its names."""
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(tui_store)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        svg = app.export_screenshot()
        colours = {c.lower() for c in re.findall(r"fill: #([0-9a-fA-F]{6})", svg)}
        assert colours and all(map(_grey, colours)), sorted(c for c in colours if not _grey(c))
        assert "rate limit" in card_text(app.screen, "#card-errors")
        db = open_reader(tui_store)
        failed = db.execute("SELECT trace_id, error_class FROM spans WHERE status = 2 AND kind = 'llm' "
                            "AND start_ns >= ? ORDER BY start_ns DESC LIMIT 1",
                            (int((FROZEN_NOW - 3600) * 10**9),)).fetchone()
        app.open_trace(failed[0])
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        svg = app.export_screenshot()
        assert "✗" in svg and "●" in svg
        colours = {c.lower() for c in re.findall(r"fill: #([0-9a-fA-F]{6})", svg)}
        assert all(map(_grey, colours)), sorted(c for c in colours if not _grey(c))
        # Every other screen draws under the monochrome filter too (a segment without a style breaks it).
        for keys in (["enter"], ["escape", "2"], ["3"], ["5"], ["question_mark"], ["escape", "1"], ["slash"]):
            await pilot.press(*keys)
            await settle(pilot)
            assert all(map(_grey, re.findall(r"fill: #([0-9a-fA-F]{6})", app.export_screenshot().lower())))
        assert app.is_running


async def test_a_damaged_store_is_reported_not_fatal(tui_store, tmp_path):
    import shutil

    store = tmp_path / "soon-gone.db"
    shutil.copy(tui_store, store)
    app = make_app(store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await app.reader.db.execute("PRAGMA query_only = 1")
        await app.reader.close()  # the connection is gone: every query now fails
        app.wake()
        await settle(pilot)
        assert app.load_error and "store read failed" in app.load_error
        assert isinstance(app.screen, OverviewScreen), "the UI stays up"


async def test_quitting_commits_every_acknowledged_span(tmp_path):
    """q while exporters are mid-stream: every span the receiver acknowledged is in the file after
    the app exits and the backend drains, as run_tui does it."""
    import asyncio

    import grpc

    from llmobs_tui.backend import Backend, BackendConfig
    from receiver.pipeline import PipelineConfig
    from tests.otlp_factory import make_span, trace_request

    store = tmp_path / "quit.db"
    backend = Backend(BackendConfig(PipelineConfig(db_path=str(store), decoders=1, retention_s=None), grpc_port=0, http_port=0))
    await backend.start()
    acked: list[int] = []
    stop = asyncio.Event()

    async def exporter(offset: int) -> None:
        async with grpc.aio.insecure_channel(backend.grpc_address) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            n = 0
            while not stop.is_set():
                ids = [offset + n * 100 + i for i in range(100)]
                n += 1
                body = trace_request([make_span(t, 1, None, "chat gpt-4o", {
                    "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 1}) for t in ids]).SerializeToString()
                try:
                    await export(body, timeout=30)
                except grpc.aio.AioRpcError:
                    continue
                acked.extend(ids)

    app = LlmobsApp(store, refresh_s=0.2)
    tasks = []
    async with app.run_test(size=(100, 30)) as pilot:
        tasks = [asyncio.create_task(exporter(k * 10**7)) for k in (1, 2)]
        while len(acked) < 2000:
            await asyncio.sleep(0.05)
        await pilot.press("q")
    stop.set()
    await backend.aclose()  # the drain run_tui does after the app returns
    await asyncio.gather(*tasks, return_exceptions=True)
    db = open_reader(store)
    stored = {int.from_bytes(t, "big") for (t,) in db.execute("SELECT trace_id FROM spans")}
    assert len(acked) >= 2000
    assert set(acked) <= stored
