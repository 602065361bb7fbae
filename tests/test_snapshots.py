"""SVG snapshots of every screen from the deterministic store, frozen clock, UTC, at 80×24 and
160×48. Review changed pictures in snapshot_report.html before `--snapshot-update`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tui_fixtures import build_store, use_utc
from tests.tui_scenarios import SCENARIOS, SIZES, make_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def snapshot_store(tmp_path_factory) -> Path:
    use_utc()
    return build_store(tmp_path_factory.mktemp("snap") / "snap.db")


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_screen(snap_compare, snapshot_store, name, size):
    assert snap_compare(make_app(snapshot_store), terminal_size=size, run_before=SCENARIOS[name])
