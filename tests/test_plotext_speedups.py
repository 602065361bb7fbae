"""llmobs_tui/widgets/plotext_speedups: the replacements compute what plotext's own helpers compute, on
random input and on whole charts, and they are in place on the plotext this project installs."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

import llmobs_tui.widgets.chart  # noqa: F401  (installs the speedups, as the app does)
from llmobs_tui.widgets import plotext_speedups as speedups
from llmobs_tui.widgets.chart import ChartData, Line, Mark, Threshold, build_chart_text

ORIGINAL = speedups._original

coordinate = st.one_of(st.integers(-500, 500), st.floats(-500, 500, allow_nan=False, allow_infinity=False))
odd = st.one_of(coordinate, st.just(float("nan")), st.just(float("inf")), st.none(), st.booleans(), st.just("x"))


def outcome(function, *args):
    try:
        return "value", function(*args)
    except Exception as exc:  # the originals raise on some input: so must the replacement
        return "raises", type(exc)


def test_the_replacements_are_installed_on_this_plotext() -> None:
    assert speedups.installed(), "plotext changed: its helpers no longer match the replaced source (see module)"
    assert set(ORIGINAL) == {"get_line", "hd_group"}


@settings(max_examples=500, deadline=None)
@given(st.lists(coordinate, min_size=2, max_size=2), st.lists(coordinate, min_size=2, max_size=2))
def test_get_line_equals_plotexts(x, y) -> None:
    assert outcome(speedups.get_line, list(x), list(y)) == outcome(ORIGINAL["get_line"], list(x), list(y))


@settings(max_examples=300, deadline=None)
@given(st.lists(odd, min_size=0, max_size=3), st.lists(odd, min_size=0, max_size=3))
def test_get_line_on_odd_input_does_what_plotext_does(x, y) -> None:
    got, expected = outcome(speedups.get_line, list(x), list(y)), outcome(ORIGINAL["get_line"], list(x), list(y))
    assert repr(got) == repr(expected)  # repr: nan != nan


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(coordinate, coordinate), min_size=1, max_size=60),
       st.sampled_from([(2, 4), (2, 2), (1, 1), (2, 3)]))
def test_hd_group_equals_plotexts(points, cell) -> None:
    x, y = [p[0] for p in points], [p[1] for p in points]
    xf, yf = [cell[0]] * len(x), [cell[1]] * len(x)
    # outcome: a coordinate a hair below zero makes both raise (-1e-220 % 4 == 4.0, a fifth row)
    assert outcome(speedups.hd_group, x, y, xf, yf) == outcome(ORIGINAL["hd_group"], x, y, xf, yf)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(odd, odd, st.sampled_from([1, 2, 3]), st.sampled_from([1, 2, 4])), min_size=0, max_size=8))
def test_hd_group_on_odd_input_does_what_plotext_does(rows) -> None:
    x, y, xf, yf = ([r[i] for r in rows] for i in range(4))
    got = outcome(speedups.hd_group, list(x), list(y), list(xf), list(yf))
    expected = outcome(ORIGINAL["hd_group"], list(x), list(y), list(xf), list(yf))
    assert repr(got) == repr(expected)


def _charts() -> list[ChartData]:
    t0 = 1_800_000_000.0
    times = [t0 + 3600 * i for i in range(168)]
    wave = [100 + 60 * math.sin(i / 5) for i in range(168)]
    gaps = [None if i % 11 == 0 else v * 0.7 for i, v in enumerate(wave)]
    return [
        ChartData(times=times, lines=[Line("p50", wave), Line("p95", [v * 1.8 for v in wave]),
                                      Line("last week", gaps, past=True)],
                  thresholds=[Threshold(150, "slo")], marks=[Mark(t0 + 3600 * 40, "v2")], selected_mark=0),
        ChartData(times=times, lines=[Line("a", wave), Line("b", gaps)], stacked=True),
        ChartData(times=times[:2], lines=[Line("two points", [1.0, 1.0])]),
    ]


def test_whole_charts_build_the_same() -> None:
    built = {}
    for mode in ("fast", "plotext"):
        if mode == "plotext":
            speedups._ut.get_line, speedups._ut.hd_group = ORIGINAL["get_line"], ORIGINAL["hd_group"]
        try:
            built[mode] = [build_chart_text(data, w, h) for data in _charts() for w, h in ((78, 12), (152, 30))]
        finally:
            speedups._ut.get_line, speedups._ut.hd_group = speedups.get_line, speedups.hd_group
    assert built["fast"] == built["plotext"]
    assert any("⡀" <= ch <= "⣿" for text in built["fast"] for ch in text)  # braille was drawn
