"""Every screen uses the space it has (issue 14): at 160×48 with data, no screen leaves more than a
fifth of its rows empty.

Read from the committed SVG snapshots, which tests/test_snapshots.py holds equal to what the app
draws: a row is empty when it shows nothing but spaces and the glyphs of borders and rules."""

from __future__ import annotations

import html
import re
from collections import defaultdict
from pathlib import Path

import pytest

from tests.tui_scenarios import SCENARIOS

SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "test_snapshots"
_TEXT = re.compile(r'<text class="([^"]*)"[^>]*y="([\d.]+)"[^>]*>(.*?)</text>')
_BLANK = " \xa0│┃╭╮╰╯─━╸╺▏▕|"
ROWS = 48


def text_rows(svg: str) -> list[str]:
    """The terminal's rows as text (the window title left out)."""
    rows: dict[float, list[str]] = defaultdict(list)
    for css_class, y, text in _TEXT.findall(svg):
        if not css_class.endswith("-title"):
            rows[float(y)].append(html.unescape(text))
    return ["".join(parts) for _, parts in sorted(rows.items())]


def empty_rows(svg: str, height: int = ROWS) -> int:
    filled = sum(1 for row in text_rows(svg) if row.strip(_BLANK))
    return height - filled


def test_the_measure_counts_blank_and_border_only_rows():
    svg = ('<text class="t-title" x="1" y="1">A</text>'
           '<text class="t-r1" x="0" y="10">│ data │</text>'
           '<text class="t-r1" x="0" y="20">│      │</text>'
           '<text class="t-r1" x="0" y="30">╰──────╯</text>')
    assert text_rows(svg) == ["│ data │", "│      │", "╰──────╯"]
    assert empty_rows(svg, height=4) == 3


# Their length follows the data, not the terminal: help lists the keys; the trace diff of two
# 10-span traces ends 12 rows short of 160×48 (a diff of larger traces fills it and scrolls).
CONTENT_SIZED = ("help", "trace-diff")


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n not in CONTENT_SIZED])
def test_screen_leaves_at_most_a_fifth_of_its_rows_empty(name):
    svg = (SNAPSHOTS / f"test_screen[{name}-160x48].svg").read_text(encoding="utf-8")
    empty = empty_rows(svg)
    assert empty <= ROWS // 5, f"{name} at 160×48 leaves {empty} of {ROWS} rows empty"
