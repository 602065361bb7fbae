"""The TUI freezes what start-up built out of garbage collection once its first screen is painted
(llmobs_tui/gc_policy.py), and gives the collector back its defaults when it ends."""

from __future__ import annotations

import gc

import pytest

from llmobs_tui.gc_policy import YOUNG_THRESHOLD
from tests.tui_fixtures import build_store
from tests.tui_scenarios import make_app, settle


@pytest.mark.anyio
async def test_start_up_is_frozen_after_the_first_paint_and_released_at_exit(tmp_path) -> None:
    store = build_store(tmp_path / "store.db")
    default_young = gc.get_threshold()[0]
    assert gc.get_freeze_count() == 0
    app = make_app(store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert gc.get_freeze_count() > 10_000, "Textual, the screens and the modules are frozen"
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        await pilot.press("3")
        await settle(pilot)
    assert gc.get_freeze_count() == 0, "released when the app ends: another app's cycles stay collectable"
    assert gc.get_threshold()[0] == default_young
