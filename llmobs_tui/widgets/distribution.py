"""A distribution as a small histogram on a log axis with one value marked: a call's latency among
its cohort's ("why slow?"), a trace's duration among its kind's.

A log axis because latencies spread over orders of magnitude: on a linear one the body of the
cohort is a single column beside one slow outlier. Glyphs as well as colour (the mark is ▲ and its
column is drawn in ▓, not only in another colour), so it reads under NO_COLOR."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from rich.console import Group, RenderableType
from rich.text import Text

EIGHTHS = " ▁▂▃▄▅▆▇█"
STYLE_BAR = "#60a5fa"
STYLE_MARK = "bold #fbbf24"


def bins_of(points: Sequence[tuple[float, int]], mark: float | None, columns: int) -> tuple[list[int], float, float]:
    """(count per column, low, high): the points' counts in `columns` equal steps of log(value)
    from the smallest to the largest value (the mark included, so it is always on the axis)."""
    values = [v for v, c in points if c > 0 and v > 0] + ([mark] if mark is not None and mark > 0 else [])
    counts = [0] * columns
    if not values:
        return counts, 0.0, 0.0
    low, high = min(values), max(values)
    for value, count in points:
        if count > 0 and value > 0:
            counts[column_of(value, low, high, columns)] += count
    return counts, low, high


def column_of(value: float, low: float, high: float, columns: int) -> int:
    if high <= low or value <= low:
        return 0
    share = math.log(value / low) / math.log(high / low)
    return max(0, min(columns - 1, int(share * columns)))


def distribution(points: Sequence[tuple[float, int]], mark: float | None, label: Callable[[float], str],
                 mark_text: str, width: int = 60, height: int = 4, resolution: float | None = None) -> RenderableType:
    """The histogram of `points` ((value, how many), e.g. histogram buckets) in `width` cells and
    `height` rows, the bin holding `mark` drawn apart with a ▲ under it and `mark_text`; `label`
    writes a value on the axis (the low end, the middle, the high end). `resolution`: the relative
    width of the points' own buckets (0.04 for store.histogram's), so that no bin is narrower than
    a bucket (bins narrower than the data's buckets draw a comb of empty columns)."""
    width = max(10, width)
    values = [v for v, c in points if c > 0 and v > 0] + ([mark] if mark is not None and mark > 0 else [])
    # About 2√n bins (a rule of thumb for a histogram's shape to show over its noise), at most a
    # bin per two cells.
    members = sum(c for v, c in points if c > 0 and v > 0)
    bins = max(1, min(width // 2, max(8, round(2 * math.sqrt(members)))))
    if resolution and values and max(values) > min(values):
        bins = min(bins, max(1, math.ceil(math.log(max(values) / min(values)) / math.log(1 + resolution)) + 1))
    cell = max(1, width // max(1, bins))
    counts, low, high = bins_of(points, mark, bins)
    if not any(counts):
        return Text("no values to draw", style="dim")
    width = bins * cell
    marked = column_of(mark, low, high, bins) if mark is not None and mark > 0 else None
    top = max(counts)
    rows: list[Text] = []
    for level in range(height, 0, -1):  # the top row first
        line = Text()
        for i, count in enumerate(counts):
            eighths = round(count * height * 8 / top)
            filled = max(0, min(8, eighths - (level - 1) * 8))
            if count and level == 1 and filled == 0:
                filled = 1  # a column with members shows at least a sliver
            glyph = EIGHTHS[filled]
            if i == marked:
                line.append(("▓" if filled == 8 else glyph) * cell, style=STYLE_MARK)
            else:
                line.append(glyph * cell, style=STYLE_BAR)
        rows.append(line)
    axis = Text("└" + "─" * (width - 2) + "┘", style="dim")
    ends = Text(label(low), style="dim")
    middle = label(math.sqrt(low * high)) if high > low else ""
    right = label(high)
    gap = width - len(ends) - len(middle) - len(right)
    if middle and gap >= 2:
        ends.append(" " * (gap // 2) + middle + " " * (gap - gap // 2), style="dim")
    else:
        ends.append(" " * max(1, width - len(ends) - len(right)))
    ends.append(right, style="dim")
    rows += [axis, ends]
    if marked is not None:
        at = marked * cell + cell // 2
        pointer = Text(" " * at + "▲ ", style=STYLE_MARK)
        if at + 2 + len(mark_text) > width and at >= len(mark_text) + 1:
            pointer = Text(" " * (at - len(mark_text) - 1) + mark_text + " ▲", style=STYLE_MARK)
        else:
            pointer.append(mark_text, style=STYLE_MARK)
        rows.append(pointer)
    return Group(*rows)
