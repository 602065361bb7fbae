"""The alert banner and the Alerts screen, with the real rule engine on the fixture store (an hour
of demo traffic ending in a 429 storm on checkout and a support prompt version that costs more)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmobs_tui.alerting.live import EngineAlerts
from llmobs_tui.app import LlmobsApp
from llmobs_tui.config import DEMO_CONFIG, Config, SloSpec, load_config
from llmobs_tui.widgets.chrome import AlertBanner
from llmobs_tui.widgets.keyed_table import KeyedTable
from store.connection import open_reader
from tests.tui_fixtures import FROZEN_NOW, build_store, use_utc
from tests.tui_scenarios import settle

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    use_utc()
    # The hour of the incidents alone: the fixture's healthy past would dilute the SLO figures here.
    return build_store(tmp_path_factory.mktemp("alerts") / "alerts.db", history=False)


def make_app(store: Path, config: Config | None = None) -> LlmobsApp:
    alerts = EngineAlerts(store, config or load_config(DEMO_CONFIG))
    return LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None, alerts=alerts)


def banner_text(app: LlmobsApp) -> str:
    banner = app.screen.query_one(AlertBanner)
    return str(banner.content) if banner.display and banner.has_class("-firing") else ""


async def test_banner_on_every_screen_most_severe_first(store):
    app = make_app(store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        firing = [a for a in app.alerts.snapshot(FROZEN_NOW) if a.firing]
        assert {a.key for a in firing} >= {"slo:checkout availability", "errors:rate_limit",
                                            "prompt:support:support-answer@v8"}
        for key in ("1", "2", "3", "5"):
            await pilot.press(key)
            await settle(pilot)
            text = banner_text(app)
            assert text.startswith(" ▲ PAGE "), (key, text)
            assert f"+{len(firing) - 1} more" in text


async def test_alerts_screen_lists_alerts_and_the_slo_table(store):
    app = make_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("5")
        await settle(pilot)
        slos = app.screen.query_one("#slos", KeyedTable)
        assert slos.keys() == ["checkout availability", "support TTFT", "search latency", "structured output"]
        row = slos.get_row("checkout availability")
        # The storm: far below a 98% objective, the budget overspent, burning ≥ 6× over 1 h.
        assert float(str(row[2]).rstrip("%")) < 90 and str(row[3]).startswith("-")
        assert float(str(row[4])) >= 6
        alerts = app.screen.query_one("#alerts", KeyedTable)
        keys = alerts.keys()
        assert keys[0] in ("slo:checkout availability", "errors:rate_limit")  # pages first
        assert keys[-1] == "prompt:support:support-answer@v8"  # the ticket last


async def test_acknowledge_moves_the_banner_on_and_enter_opens_the_example_trace(store):
    app = make_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("5")
        await settle(pilot)
        table = app.screen.query_one("#alerts", KeyedTable)
        first = table.cursor_key
        before = banner_text(app)
        await pilot.press("a")
        await settle(pilot)
        acked = app.alerts.get(first)
        assert acked.acknowledged and acked.firing
        assert "ACKED" in str(table.get_row(first)[0])
        after = banner_text(app)
        assert after and after != before and acked.title not in after
        # Acknowledgement survives the next evaluation.
        app.alerts.refresh_soon()
        await settle(pilot)
        assert app.alerts.get(first).acknowledged
        # Enter: the alert's example trace, a trace of the storm on checkout.
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.NAME == "trace"
        db = open_reader(store)
        try:
            feature, errors = db.execute("SELECT feature, errors_api FROM traces WHERE trace_id = ?",
                                         (app.screen.trace_id,)).fetchone()
        finally:
            db.close()
        assert feature == "checkout" and errors > 0


async def test_no_banner_when_nothing_fires(store):
    # A lenient objective and thresholds no traffic reaches: the rules run, nothing fires.
    config = Config(slos=[SloSpec("loose", "availability", 0.5)])
    config.alerts.error_spike = {name: 0.99 for name in config.alerts.error_spike}
    config.alerts.prompt_regression_factor = 10
    app = make_app(store, config)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("5")
        await settle(pilot)
        assert banner_text(app) == ""
        assert app.alerts.snapshot(FROZEN_NOW) == []
        assert "Nothing firing" in str(app.screen.query_one("#alerts-note").content)
        assert app.screen.query_one("#slos", KeyedTable).keys() == ["loose"]
