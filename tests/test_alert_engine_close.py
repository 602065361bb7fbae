"""Closing the alert engine while its worker thread evaluates: the TUI quits whenever the user does,
and closing the SQLite connection under a running read crashed the process (SIGSEGV)."""

from __future__ import annotations

import threading

import pytest

from llmobs_tui.alerting.engine import AlertEngine, EngineClosed
from llmobs_tui.alerting.live import EngineAlerts
from llmobs_tui.config import Config
from tests.tui_fixtures import FROZEN_NOW, build_store


def test_close_waits_for_the_evaluation_in_progress_then_refuses_new_ones(tmp_path, monkeypatch) -> None:
    store = build_store(tmp_path / "store.db")
    engine = AlertEngine(store, Config())
    reading, release = threading.Event(), threading.Event()
    used_after_close: list[bool] = []
    evaluate_cache = AlertEngine.evaluate_cache

    def slow_rule(self, now_s):
        reading.set()
        release.wait(10)
        # Still inside the evaluation: its connection must be open (it was closed under it before).
        used_after_close.append(self.db.execute("SELECT count(*) FROM spans").fetchone()[0] > 0)
        return evaluate_cache(self, now_s)

    monkeypatch.setattr(AlertEngine, "evaluate_cache", slow_rule)
    evaluation = threading.Thread(target=engine.update, args=(FROZEN_NOW,))
    evaluation.start()
    assert reading.wait(10)
    closer = threading.Thread(target=engine.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive(), "close() waits while an evaluation reads"
    release.set()
    evaluation.join(10)
    closer.join(10)
    assert used_after_close == [True]
    with pytest.raises(EngineClosed):
        engine.update(FROZEN_NOW)


def test_the_tui_source_reports_an_evaluation_after_close_instead_of_reopening(tmp_path) -> None:
    alerts = EngineAlerts(build_store(tmp_path / "store.db"), Config())
    alerts.evaluate_now(FROZEN_NOW)
    assert alerts.error is None
    alerts.close()
    alerts.evaluate_now(FROZEN_NOW + 30)
    assert alerts.error is not None and "closed" in alerts.error
    assert alerts.engine._db is None, "no connection opened after close"
