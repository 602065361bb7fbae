"""llmobs_tui/widgets/plotext_speedups: the replacements compute what plotext's own helpers compute, on
random input and on whole charts, and they are in place on the plotext this project installs."""

from __future__ import annotations

import math

from hypothesis import example, given, settings
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
    assert set(ORIGINAL) == {"get_line", "hd_group", "get_lines", "get_matrix_data", "set_matrices", "set_canvas"}


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


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(coordinate, coordinate), min_size=0, max_size=40), st.integers(0, 3))
def test_get_lines_equals_plotexts(points, extra) -> None:
    x, y = [p[0] for p in points], [p[1] for p in points]
    other = [[f"{k}{i}" for i in range(len(x))] for k in range(extra)]
    got = outcome(speedups.get_lines, list(x), list(y), *[list(o) for o in other])
    assert got == outcome(ORIGINAL["get_lines"], list(x), list(y), *[list(o) for o in other])


@settings(max_examples=300, deadline=None)
@given(st.lists(odd, min_size=0, max_size=5), st.lists(odd, min_size=0, max_size=5),
       st.lists(st.lists(st.just("m"), min_size=0, max_size=5), min_size=0, max_size=2))
def test_get_lines_on_odd_input_does_what_plotext_does(x, y, other) -> None:
    got = outcome(speedups.get_lines, list(x), list(y), *[list(o) for o in other])
    expected = outcome(ORIGINAL["get_lines"], list(x), list(y), *[list(o) for o in other])
    assert repr(got) == repr(expected)


wide = st.one_of(st.integers(-10**12, 10**12), st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False))


@settings(max_examples=500, deadline=None)
@given(st.lists(wide, max_size=30), st.tuples(wide, wide), st.integers(-2, 400))
# plotext rounds a half up: these land on k - 5e-9 exactly, where halves up and down give different cells
@example([511.99999488, 255.99999744000002, 46.0], (0.0, 1024.0), 2)
@example([255.99999744000002, 248.60546875], (0.0, 1024.0), 3)
def test_get_matrix_data_equals_plotexts(data, lim, bins) -> None:
    got = outcome(speedups.get_matrix_data, list(data), list(lim), bins)
    assert got == outcome(ORIGINAL["get_matrix_data"], list(data), list(lim), bins)


@settings(max_examples=300, deadline=None)
@given(st.lists(odd, max_size=5), st.one_of(st.tuples(odd, odd), st.lists(odd, max_size=3)),
       st.one_of(st.integers(0, 50), st.floats(0, 50), st.none()))
def test_get_matrix_data_on_odd_input_does_what_plotext_does(data, lim, bins) -> None:
    got = outcome(speedups.get_matrix_data, list(data), list(lim), bins)
    expected = outcome(ORIGINAL["get_matrix_data"], list(data), list(lim), bins)
    assert repr(got) == repr(expected)


color = st.sampled_from(["default", "red", (10, 20, 30), (10, 20, 31), 12, "bold", "gray+"])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 9), st.integers(0, 12), st.data())
def test_the_matrix_draws_what_plotexts_draws(rows, cols, data) -> None:
    """set_matrices then cells set at random, then set_canvas: the same matrices and the same text."""
    col1, col2 = sorted(data.draw(st.tuples(st.integers(0, cols), st.integers(0, cols))))
    row1, row2 = sorted(data.draw(st.tuples(st.integers(0, rows), st.integers(0, rows))))
    background, axes = data.draw(color), data.draw(color)
    cells = data.draw(st.lists(st.tuples(st.integers(0, max(cols - 1, 0)), st.integers(0, max(rows - 1, 0)),
                                         st.sampled_from("x⣿ ·"), color, color, st.one_of(st.none(), color)),
                               max_size=40))

    def draw():
        matrix = speedups._mx.matrix_class()
        matrix.set_size(cols, rows)
        matrix.set_canvas_area(col1, col2, row1, row2)
        matrix.set_canvas_color(background)
        matrix.set_axes_color(axes)
        matrix.set_matrices()
        for col, row, marker, fullground, style, back in cells:
            matrix.insert_element(col, row, marker, fullground, style, back)
        return (matrix.marker, matrix.fullground, matrix.style, matrix.background), matrix.set_canvas(), matrix.canvas

    assert draw() == _with_plotexts_own(draw)


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


def _with_plotexts_own(build):
    """build() with every replaced helper put back to plotext's own."""
    with speedups.plotexts_own():
        return build()


def test_whole_charts_build_the_same() -> None:
    def build():
        return [build_chart_text(data, w, h) for data in _charts() for w, h in ((78, 12), (152, 30), (20, 4), (5, 3), (1, 1), (0, 0), (300, 60))]
    built = {"fast": build(), "plotext": _with_plotexts_own(build)}
    assert speedups.installed()
    assert built["fast"] == built["plotext"]
    assert any("⡀" <= ch <= "⣿" for text in built["fast"] for ch in text)  # braille was drawn
