"""Issue 11, "the first five minutes": the help as a key reference, alerts that open on the call
that made their value with the error shown, empty states that say what to do, the export path,
and the attach header that tells the truth about the connection."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from textual.widgets import Static

from llmobs_tui.alerting.live import EngineAlerts
from llmobs_tui.app import AlertSource, LlmobsApp
from llmobs_tui.config import DEMO_CONFIG, load_config
from llmobs_tui.widgets.keyed_table import KeyedTable
from tests.tui_fixtures import FROZEN_NOW, build_store, trace_id_of, use_utc
from tests.tui_scenarios import settle

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    use_utc()
    return build_store(tmp_path_factory.mktemp("first") / "first.db")


def make_app(store: Path, alerts: AlertSource | None = None, **kwargs) -> LlmobsApp:
    return LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None, alerts=alerts,
                     **kwargs)


def text_of(renderable) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def statics_text(screen) -> str:
    return "\n".join(text_of(w.content) for w in screen.query(Static))


# -- help ------------------------------------------------------------------------------------------

GLOBAL_WORDS = ("This help", "Filter traces", "Command line", "Follow live data", "Next time window",
                "Export trace", "Back to the previous screen", "Quit", "Overview:", "Alerts:")


async def test_help_is_a_key_reference_in_words_on_every_screen(store):
    app = make_app(store)
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_trace(trace_id_of(1))
        await settle(pilot)
        for key, screen_words in (("1", "Traces behind the selected figure"), ("2", "Group by the next dimension"),
                                  ("3", "Open the selected trace"), ("4", "Collapse / expand"),
                                  ("5", "Acknowledge the selected alert")):
            await pilot.press(key)
            await settle(pilot)
            await pilot.press("question_mark")
            await settle(pilot)
            text = statics_text(app.screen)
            # No internals: raw action strings, Textual's own keys, widget class names.
            for leak in ("cursor(", "goto(", "tab(", "zoom(", "super+", "Waterfall", "KeyedTable", "StatCard",
                         "DataTable", "focus_next", "copy_text"):
                assert leak not in text, (key, leak, text)
            assert not re.search(r"\b[a-z_]+\(", text.split("Filter (/)")[0]), (key, text)
            # The global keys on every screen, first; then this screen's.
            for words in GLOBAL_WORDS:
                assert words in text, (key, words, text)
            assert text.index("Everywhere") < text.index("On the ") < text.index(screen_words), (key, text)
            assert "fields: feature" in text and "Commands (:)" in text
            await pilot.press("escape")
            await settle(pilot)


# -- alerts open on the call that made their value ---------------------------------------------------

async def test_an_error_alert_opens_on_the_failed_call_and_shows_its_error(store):
    app = make_app(store, EngineAlerts(store, load_config(DEMO_CONFIG)))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("5")
        await settle(pilot)
        table = app.screen.query_one("#alerts", KeyedTable)
        for alert_key in ("errors:rate_limit", "slo:checkout availability"):
            if app.screen.NAME != "alerts":
                await pilot.press("5")
                await settle(pilot)
            table.move_cursor(row=table.keys().index(alert_key))
            await pilot.press("enter")
            await settle(pilot)
            await settle(pilot)
            assert app.screen.NAME == "trace"
            span = app.screen.selected_span
            assert span is not None and span.failed and span.billed, (alert_key, span)
            if alert_key == "errors:rate_limit":
                assert span.error_subclass == "rate_limit"
            conversation = text_of(app.screen.query_one("#detail-conversation", Static).content)
            cost = text_of(app.screen.query_one("#detail-cost", Static).content)
            for tab in (conversation, cost):
                first = tab.lstrip().splitlines()[0]
                assert first.startswith("✕ failed"), (alert_key, tab)
                assert (span.error_subclass or span.error_class).replace("_", " ") in first
            if span.status_message:
                assert span.status_message.splitlines()[0][:40] in conversation


async def test_latency_and_cost_alerts_pick_the_slowest_and_the_costliest_call(store):
    from llmobs_tui.alerting.engine import AlertEngine
    from llmobs_tui.config import Config, SloSpec

    engine = AlertEngine(store, Config())
    since = FROZEN_NOW - 3600
    try:
        for kind, column, threshold in (("latency", "duration_ns", 0.5), ("ttft", "ttft_ns", 0.2),
                                        ("cost_per_call", "cost_nusd", 0.0001)):
            spec = SloSpec(kind, kind, 0.99, threshold=threshold)
            trace_id, span_id = engine._slo_example(spec, since)
            top = engine.db.execute(f"SELECT max({column}) FROM spans WHERE billed = 1 AND start_ns >= ?",
                                    (int(since * 1e9),)).fetchone()[0]
            chosen = engine.db.execute(f"SELECT {column} FROM spans WHERE trace_id = ? AND span_id = ?",
                                       (trace_id, span_id)).fetchone()[0]
            assert chosen == top, kind
    finally:
        engine.close()


# -- empty states ----------------------------------------------------------------------------------

@pytest.fixture
def empty_store(tmp_path) -> Path:
    from store.connection import WriterLock, open_writer

    path = tmp_path / "empty.db"
    lock = WriterLock(path)
    lock.acquire()
    open_writer(path).close()
    lock.release()
    return path


async def test_every_screen_says_what_to_do_on_an_empty_store(empty_store):
    app = make_app(empty_store, EngineAlerts(empty_store, load_config(None)))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        text = statics_text(app.screen)
        assert "No spans in this store yet" in text and "OTEL_EXPORTER_OTLP_ENDPOINT=http://" in text, text
        assert "llmobs-tui demo" in text
        await pilot.press("2")
        await settle(pilot)
        text = statics_text(app.screen)
        assert "No LLM calls in the last 1h" in text and "t: a longer window" in text, text
        await pilot.press("3")
        await settle(pilot)
        text = statics_text(app.screen)
        assert "No traces in the last 1h" in text and "t: a longer window" in text, text
        app.open_traces("feature=nope")
        await settle(pilot)
        text = statics_text(app.screen)
        assert "No trace matches feature=nope" in text and "/: change the filter" in text, text
        await pilot.press("5")
        await settle(pilot)
        text = statics_text(app.screen)
        for words in ("llmobs-tui init", "--config FILE", "built-in rules watch", "rate limit ≥ 5%",
                      "cache-hit rate", "first token"):
            assert words in text, (words, text)
        app.open_trace(bytes(16))
        await settle(pilot)
        text = statics_text(app.screen)
        assert "is not in the store" in text and "Press 3 for the trace list" in text, text


async def test_an_empty_window_on_a_store_with_data_says_press_t(store):
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW + 30 * 86400, refresh_s=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        text = statics_text(app.screen)
        assert "No LLM calls in the last 1h" in text and "No spans in this store yet" not in text, text


async def test_the_alerts_screen_with_rules_of_ones_own_shows_no_guide(store, tmp_path):
    config = tmp_path / "llmobs.toml"
    config.write_text('[[slo]]\nname = "loose"\nkind = "availability"\nobjective = 0.5\n')
    app = make_app(store, EngineAlerts(store, load_config(config)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await settle(pilot)
        assert not app.screen.query_one("#alerts-empty").display


# -- export ----------------------------------------------------------------------------------------

async def test_ctrl_s_writes_under_the_data_directory_and_toasts_the_absolute_path(store, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    app = make_app(store)
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_trace(trace_id_of(1))
        await settle(pilot)
        await pilot.press("ctrl+s")
        await settle(pilot)
        name = f"trace-{trace_id_of(1).hex()}.json"
        written = list((tmp_path / "data").rglob(name))
        assert len(written) == 1 and not (tmp_path / name).exists()
        toasts = [n.message for n in app._notifications]
        assert any(f"Exported to {written[0]}" in t for t in toasts), toasts
        assert written[0].is_absolute()


async def test_export_dir_is_a_flag_of_the_tui_commands(tmp_path):
    from llmobs_tui.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--export-dir", "/x"]).export_dir == "/x"
    assert parser.parse_args(["demo", "--export-dir", "/y"]).export_dir == "/y"
    assert parser.parse_args(["attach", "h:1", "--export-dir", "/z"]).export_dir == "/z"
    app = LlmobsApp(tmp_path / "none.db", export_dir="~/exports")
    assert app.export_dir.is_absolute()


# -- attach: the header tells the truth -------------------------------------------------------------

def top_bar_text(app: LlmobsApp) -> str:
    from llmobs_tui.widgets.chrome import TopBar

    return text_of(app.screen.query_one(TopBar).content)


async def test_a_refused_token_stops_attach_and_the_header_says_so(tmp_path):
    import time as time_

    from llmobs_tui.attach import AttachFeed, AttachPlan
    from tests.test_attach import batch, grpc_export_with_token, remote, until

    server = remote(tmp_path / "remote.db", token="right")
    await server.start()
    await grpc_export_with_token(server, batch(1, 5), "right")
    cache = tmp_path / "cache.db"
    feed = AttachFeed(AttachPlan(f"127.0.0.1:{server.query.port}", str(cache), token="wrong"))
    feed.start()
    try:
        await until(lambda: "refused the token" in feed.state.read()[0])
        await until(lambda: not feed.alive, timeout=10)  # it gave up: no retrying forever
        refused = server.auth.refused
        time_.sleep(1.5)
        assert server.auth.refused == refused
        status = feed.status()
        assert status.link == "stopped" and "refused the token" in (status.error or "")
        app = LlmobsApp(cache, refresh_s=None, status=feed.status, export_dir=tmp_path)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            for key in ("1", "3", "5"):
                await pilot.press(key)
                await settle(pilot)
                header = top_bar_text(app)
                assert "● live" not in header and "✕ stopped" in header, header
    finally:
        feed.stop()
        await server.aclose()


async def test_the_header_shows_each_link_state(store):
    from llmobs_tui.widgets.chrome import IngestStatus

    state = {"link": "connecting"}
    app = make_app(store, status=lambda: IngestStatus(mode="attach x", link=state["link"]))
    async with app.run_test(size=(120, 30)) as pilot:
        for link, shown in (("connecting", "○ connecting"), ("backfilling", "○ backfilling"),
                            ("disconnected", "○ disconnected"), ("live", "● live"), ("stopped", "✕ stopped")):
            state["link"] = link
            await settle(pilot)
            header = top_bar_text(app)
            assert shown in header, (link, header)
            assert ("● live" in header) == (link == "live"), (link, header)
