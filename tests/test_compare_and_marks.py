"""Compare with the past (`v`: deltas coloured by what is bad for each signal, faint overlays) and
change markers (`[` `]`: planted rows of `changes` drawn on every Overview chart, the selected one
described), on a real store written by the real Normalizer + SpanWriter."""

from __future__ import annotations

import sqlite3

import pytest

from llmobs_tui.compare import delta_text, next_mode
from llmobs_tui.widgets.change_line import ChangeLine
from llmobs_tui.widgets.chart import TimeChart
from llmobs_tui.widgets.stat_card import StatCard
from tests.tui_fixtures import FROZEN_NOW, build_store, use_utc
from tests.tui_scenarios import make_app, settle

NS = 1_000_000_000
PLANTED = [  # (seconds before now, kind, scope, before, after)
    (2400, "prompt_version", "support", None, "v1"),  # a baseline: not drawn
    (1500, "prompt_version", "support", "v1", "v2"),
    (600, "served_model", "gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"),
    (7200, "service_version", "api", "1.0", "1.1"),  # before the 1 h window: not drawn
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    use_utc()
    path = build_store(tmp_path_factory.mktemp("marks") / "store.db", minutes=30, traces_per_minute=6)
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO changes (time_ns, kind, scope, before, after, trace_id) VALUES (?, ?, ?, ?, ?, NULL)",
                   [(int((FROZEN_NOW - ago) * NS), kind, scope, before, after)
                    for ago, kind, scope, before, after in PLANTED])
    db.commit()
    db.close()
    return path


def drawn_changes(path) -> list[tuple[float, str]]:
    """Ground truth: the window's changes that have a before, or are a change by themselves."""
    db = sqlite3.connect(path)
    try:
        return [(t / NS, after) for t, after in db.execute(
            "SELECT time_ns, after FROM changes WHERE time_ns BETWEEN ? AND ? "
            "AND (before IS NOT NULL OR kind IN ('error_class', 'prices')) ORDER BY time_ns, id",
            (int((FROZEN_NOW - 3600) * NS), int(FROZEN_NOW * NS)))]
    finally:
        db.close()


@pytest.mark.parametrize(("signal", "now", "past", "text", "style"), [
    ("latency", 1.1, 1.0, "▲10%", "red"),
    ("latency", 0.5, 1.0, "▼50%", "green"),
    ("cache_hit", 0.2, 0.4, "▼50%", "red"),
    ("decode", 120, 100, "▲20%", "green"),
    ("calls", 300, 100, "▲200%", "dim"),
    ("cost", 1.01, 1.0, "▲1.0%", "dim"),  # under 2 %: noise
    ("cost", 50, 2, "▲25×", "red"),
    ("errors", 5, 0, "new", "red"),
    ("latency", None, 1.0, "–", "dim"),
])
def test_delta_text(signal, now, past, text, style):
    delta = delta_text(signal, now, past)
    assert delta.plain == text and str(delta.style) == style


def test_compare_modes_cycle():
    assert [next_mode(m) for m in ("off", "previous", "week")] == ["previous", "week", "off"]


@pytest.mark.anyio
async def test_marks_deltas_and_overlays_on_the_overview(store):
    truth = drawn_changes(store)
    planted_drawn = [(FROZEN_NOW - 1500, "v2"), (FROZEN_NOW - 600, "gpt-4o-2024-11-20")]
    assert all(p in truth for p in planted_drawn)
    assert not any(after in ("v1", "1.1") for _, after in truth)
    app = make_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        charts = {c.id: c for c in app.screen.query(TimeChart)}
        assert set(charts) == {"chart-latency", "chart-calls", "chart-cost", "chart-tokens"}
        for chart in charts.values():
            assert [(m.time_s) for m in chart.data.marks] == [t for t, _ in truth]
            assert chart.data.selected_mark is None
            assert not any(line.past for line in chart.data.lines)
        # No comparison: no deltas on the cards.
        assert all(f.delta is None for card in app.screen.query(StatCard) for f in card._figures)

        await pilot.press("v")
        await settle(pilot)
        assert app.compare_mode == "previous" and app.compare_shift_s() == 3600
        charts = {c.id: c for c in app.screen.query(TimeChart)}
        assert all(any(line.past for line in c.data.lines) for c in charts.values())
        latency = app.screen.query_one("#card-latency", StatCard)._figures[0]
        assert latency.delta is not None and latency.delta.plain  # ▲/▼ or new or –

        await pilot.press("left_square_bracket")  # from no selection: the newest change
        await settle(pilot)
        assert app.selected_change == len(truth) - 1
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert app.selected_change == len(truth) - 2
        selected_time, selected_after = truth[app.selected_change]
        marks, selected = app.chart_marks()
        assert marks[selected].time_s == selected_time
        for chart in app.screen.query(TimeChart):
            assert chart.data.selected_mark == selected
        line = str(app.screen.query_one(ChangeLine).render())
        assert selected_after in line and f"change {selected + 1}/{len(truth)}" in line
        app.save_screenshot("overview-marks.svg", str(store.parent))
