"""Faster equivalents of two plotext helpers that dominate a chart's build, for the inputs our charts
give them (finite numbers); anything else goes to plotext's own function.

A braille line chart of 168 points spends about a quarter of plotext's build in `get_line` (the pixels
between two points: it flattens and checks its four numbers through generic helpers, then makes two
lists through `linspace`) and about a third in `hd_group` (which braille cell each pixel falls in). Both
are replaced in `plotext._utility`, where plotext looks them up at each call, with code that computes the
same values by the same arithmetic (tests/test_plotext_speedups.py compares them on random input and on
whole charts). They are installed only over the exact source they were written against: another plotext
release keeps its own functions (correct, only slower), and a test says so.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Callable
from typing import Any

import plotext._utility as _ut

# sha256 of the source of the functions replaced (plotext 5.3.2), first 16 hex digits.
EXPECTED_SOURCE = {"get_line": "3ae785eef210342c", "hd_group": "3101005f195f888a"}

_original: dict[str, Callable[..., Any]] = {}
_NUMBER = (int, float)


def _finite(values: list[Any]) -> bool:
    """Every value an int or a float (not a bool, a string, None) and finite."""
    return all(type(value) in _NUMBER and math.isfinite(value) for value in values)


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
            any(w != cell_w for w in xf) or any(h != cell_h for h in yf):
        return _original["hd_group"](x, y, xf, yf)  # cells of mixed sizes: never drawn by our charts
    cells: dict[tuple[Any, Any], list[list[int]]] = {}
    for px, py in zip(x, y):
        key = (px // cell_w, py // cell_h)
        dots = cells.get(key)
        if dots is None:
            dots = cells[key] = [[0] * cell_w for _ in range(cell_h)]
        dots[math.floor(py % cell_h)][math.floor(px % cell_w)] = 1
    return ([key[0] for key in cells], [key[1] for key in cells],
            [tuple(dot for row in reversed(dots) for dot in row) for dots in cells.values()])


def _fingerprint(function: Callable[..., Any]) -> str | None:
    try:
        return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


def install() -> bool:
    """Replace the helpers in plotext if its are the ones these were written against; whether they are."""
    if _original:
        return True
    originals = {name: getattr(_ut, name, None) for name in EXPECTED_SOURCE}
    if any(function is None or _fingerprint(function) != EXPECTED_SOURCE[name]
           for name, function in originals.items()):
        return False
    _original.update(originals)  # type: ignore[arg-type]
    _ut.get_line = get_line
    _ut.hd_group = hd_group
    return True


def installed() -> bool:
    return bool(_original) and _ut.get_line is get_line and _ut.hd_group is hd_group
