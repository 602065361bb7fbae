"""Faster equivalents of the plotext helpers that dominate a chart's build, for the inputs our charts
give them (finite numbers); anything else goes to plotext's own function.

A braille line chart of 168 points spent about a quarter of plotext's build in `get_line` (the pixels
between two points: it flattens and checks its four numbers through generic helpers, then makes two
lists through `linspace`) and about a third in `hd_group` (which braille cell each pixel falls in). What
was left after those went mostly to `get_lines` (the pixels of every segment, calling `get_line` once
per pair and copying the markers and colours per pixel), `get_matrix_data` (data to canvas coordinates,
through a lambda and plotext's own `round` per value), the matrix's `set_canvas` (the coloured text,
three two-element lists built and compared per cell, the string grown one piece at a time) and
`set_matrices` (the background colour decided per cell through a lambda).

Each is replaced where plotext looks it up at each call (`plotext._utility` for functions, the matrix
class for its methods) with code that computes the same values by the same arithmetic
(tests/test_plotext_speedups.py compares them on random and odd input and on whole charts). They are
installed only over the exact source they were written against: another plotext release keeps its own
functions (correct, only slower), and a test says so.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any

import plotext._matrix as _mx
import plotext._utility as _ut

_original: dict[str, Callable[..., Any]] = {}
_NUMBER = (int, float)
_NUMBER_TYPES = frozenset(_NUMBER)
# plotext's round(n, 8): the same two constants, computed by the same expressions.
_ROUND_SCALE = 10 ** 8
_ROUND_BACK = 10 ** (-8)


def _finite(values: list[Any]) -> bool:
    """Every value an int or a float (not a bool, a string, None) and finite (a sum that overflows
    answers False, which only sends finite numbers to plotext's own function)."""
    if not set(map(type, values)) <= _NUMBER_TYPES:
        return False
    try:
        return math.isfinite(sum(values))
    except OverflowError:  # an int too large for a float
        return False


def get_line(x: list[Any], y: list[Any]) -> Any:
    """plotext's get_line: the pixels from (x[0], y[0]) to (x[1], y[1]), at most one apart."""
    if len(x) != 2 or len(y) != 2:
        return _original["get_line"](x, y)
    x0, x1 = x
    y0, y1 = y
    # Inline: this runs for every pair of points. A sum that overflows only sends finite numbers to plotext.
    if not (type(x0) in _NUMBER and type(x1) in _NUMBER and type(y0) in _NUMBER and type(y1) in _NUMBER
            and math.isfinite(x0 + x1 + y0 + y1)):
        return _original["get_line"](x, y)
    a = int(max(abs(int(x1) - int(x0)), abs(int(y1) - int(y0))) + 1)
    # linspace(lower, upper, a) is lower + i * slope, slope 0 for a single point.
    slope_x = (x1 - x0) / (a - 1) if a > 1 else 0
    slope_y = (y1 - y0) / (a - 1) if a > 1 else 0
    return [[int(x0 + i * slope_x) for i in range(a)], [int(y0 + i * slope_y) for i in range(a)]]


def hd_group(x: list[Any], y: list[Any], xf: list[Any], yf: list[Any]) -> Any:
    """plotext's hd_group: the cells the pixels fall in, and each cell's dots (rows bottom-up, flattened)."""
    if not x or len(y) != len(x) or len(xf) != len(x) or len(yf) != len(x) or not _finite(x) or not _finite(y):
        return _original["hd_group"](x, y, xf, yf)
    cell_w, cell_h = xf[0], yf[0]
    if type(cell_w) is not int or type(cell_h) is not int or cell_w < 1 or cell_h < 1 or \
            xf.count(cell_w) != len(xf) or yf.count(cell_h) != len(yf):
        return _original["hd_group"](x, y, xf, yf)  # cells of mixed sizes: never drawn by our charts
    cells: dict[tuple[Any, Any], list[list[int]]] = {}
    for px, py in zip(x, y):
        key = (px // cell_w, py // cell_h)
        dots = cells.get(key)
        if dots is None:
            dots = cells[key] = [[0] * cell_w for _ in range(cell_h)]
        dots[math.floor(py % cell_h)][math.floor(px % cell_w)] = 1
    return ([key[0] for key in cells], [key[1] for key in cells],
            [tuple(chain.from_iterable(reversed(dots))) for dots in cells.values()])


def get_lines(x: list[Any], y: list[Any], *other: list[Any]) -> Any:
    """plotext's get_lines: the pixels of the segments between consecutive points, each segment without
    its last pixel (the next one starts there) and the last point added, and every list of `other`
    (markers, colours, styles) repeated along: a point's entry for each pixel of the segment it starts."""
    count = len(x)
    if (count < 2 or len(y) != count or not other or any(len(values) != count for values in other)
            or not _finite(x) or not _finite(y)):
        return _original["get_lines"](x, y, *other)
    xs: list[int] = []
    ys: list[int] = []
    repeats = []
    x0, y0 = x[0], y[0]
    for n in range(1, count):
        x1, y1 = x[n], y[n]
        # get_line's arithmetic (see above), keeping the pixels before the segment's last.
        a = int(max(abs(int(x1) - int(x0)), abs(int(y1) - int(y0))) + 1)
        if a > 1:
            slope_x = (x1 - x0) / (a - 1)
            slope_y = (y1 - y0) / (a - 1)
            xs += [int(x0 + i * slope_x) for i in range(a - 1)]
            ys += [int(y0 + i * slope_y) for i in range(a - 1)]
        repeats.append(a - 1)
        x0, y0 = x1, y1
    xs.append(x[-1])
    ys.append(y[-1])
    lines: list[list[Any]] = [xs, ys]
    for values in other:
        column: list[Any] = []
        for value, repeat in zip(values, repeats):
            column += [value] * repeat
        column.append(values[-1])
        lines.append(column)
    return lines


def get_matrix_data(data: Any, lim: Any, bins: Any) -> Any:
    """plotext's get_matrix_data: values to canvas coordinates, `floor(round(0.5 + (bins - 1) * (v - low) /
    (high - low), 8))` with plotext's own rounding (halves up), in the same operations."""
    if (type(data) not in (list, tuple) or type(bins) is not int or type(lim) not in (list, tuple)
            or len(lim) != 2 or not _finite(list(lim)) or lim[0] == lim[1] or not _finite(data)):
        return _original["get_matrix_data"](data, lim, bins)
    low, high = lim
    steps = bins - 1
    width = high - low
    floor, ceil = math.floor, math.ceil
    coordinates = []
    for value in data:
        n = (0.5 + steps * (value - low) / width) * _ROUND_SCALE
        f = floor(n)
        coordinates.append(floor((f if n - f < 0.5 else ceil(n)) * _ROUND_BACK))
    return coordinates


def set_matrices(self: Any) -> None:
    """matrix_class.set_matrices: blank markers, no colours, and the canvas colour inside the canvas
    area with the axes colour around it (decided per row and column, not per cell)."""
    cols = self.cols
    space, no_color = _ut.space, _ut.no_color
    self.marker = [[space] * cols for _ in self.Rows]
    self.fullground = [[no_color] * cols for _ in self.Rows]
    inside = [self.canvas_color if col in self.Cols_canvas else self.axes_color for col in self.Cols]
    outside = [self.axes_color for _ in self.Cols]
    self.background = [(inside if row in self.Rows_canvas else outside).copy() for row in self.Rows]
    self.style = [[no_color] * cols for _ in self.Rows]


def set_canvas(self: Any) -> str:
    """matrix_class.set_canvas: the rows top down, each run of cells of equal (foreground, style,
    background) as its colour codes, its characters and a reset."""
    cols = self.cols
    rows = self.Rows
    matrices = (self.marker, self.fullground, self.style, self.background)
    if self.Cols != range(cols) or any(len(matrix[row]) < cols for matrix in matrices for row in rows):
        return _original["set_canvas"](self)
    to_ansi, end = _ut.colors_to_ansi, _ut.ansi_end
    parts = []
    for row in rows[::-1]:
        colors = list(zip(self.fullground[row][:cols], self.style[row][:cols], self.background[row][:cols]))
        markers = self.marker[row]
        start = 0
        while start < cols:
            run = colors[start]
            stop = start + 1
            while stop < cols and colors[stop] == run:
                stop += 1
            parts.append(to_ansi(*run) + "".join(markers[start:stop]) + end)
            start = stop
        parts.append("\n")
    self.canvas = "".join(parts)
    return self.canvas


# Where plotext looks each up, and the sha256 of the source replaced (plotext 5.3.2), first 16 hex digits.
_REPLACED: dict[str, tuple[Any, Callable[..., Any], str]] = {
    "get_line": (_ut, get_line, "3ae785eef210342c"),
    "hd_group": (_ut, hd_group, "3101005f195f888a"),
    "get_lines": (_ut, get_lines, "2f9250a89063084c"),
    "get_matrix_data": (_ut, get_matrix_data, "a2c141ec0d0a50ca"),
    "set_matrices": (_mx.matrix_class, set_matrices, "91740679705309a8"),
    "set_canvas": (_mx.matrix_class, set_canvas, "7bc08db4cff63fd6"),
}
EXPECTED_SOURCE = {name: expected for name, (_, _, expected) in _REPLACED.items()}


def _fingerprint(function: Callable[..., Any]) -> str | None:
    try:
        return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


def install() -> bool:
    """Replace the helpers in plotext if all of them are the ones these were written against; whether
    they are (all or none: a release that changed one may have changed what the others are given)."""
    if _original:
        return True
    originals = {name: getattr(owner, name, None) for name, (owner, _, _) in _REPLACED.items()}
    if any(function is None or _fingerprint(function) != EXPECTED_SOURCE[name]
           for name, function in originals.items()):
        return False
    _original.update(originals)  # type: ignore[arg-type]
    for name, (owner, replacement, _) in _REPLACED.items():
        setattr(owner, name, replacement)
    return True


def installed() -> bool:
    return bool(_original) and all(getattr(owner, name) is replacement
                                   for name, (owner, replacement, _) in _REPLACED.items())


@contextmanager
def plotexts_own() -> Iterator[None]:
    """plotext's own helpers in place for the block, the replacements back after it: what tests and
    bench.charts compare the replacements with."""
    for name, (owner, _, _) in _REPLACED.items():
        setattr(owner, name, _original[name])
    try:
        yield
    finally:
        for name, (owner, replacement, _) in _REPLACED.items():
            setattr(owner, name, replacement)
