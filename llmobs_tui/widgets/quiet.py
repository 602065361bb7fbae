"""Updates that cost nothing when nothing changed.

The live loop shows every screen's data again once a second, most often the same data. Textual does not
compare: `Static.update` re-renders the widget and lays out the whole screen again (layout=True by
default), and assigning `border_title` or `border_subtitle` re-renders the widget (a chart rebuilt its
plot every second for a subtitle that had not changed). On a quiet store that was most of the TUI's
idle CPU, and a key pressed during such a tick waited for it. These helpers remember what was last
given to a widget and leave it alone when it is given the same again.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

_SHOWN = "_llmobs_last_shown"


def _unchanged(widget: Widget, slot: str, value: Any) -> bool:
    shown = widget.__dict__.setdefault(_SHOWN, {})
    if slot in shown and _same(shown[slot], value):
        return True
    shown[slot] = value.copy() if isinstance(value, Text) else value  # the caller may change its Text later
    return False


def _same(a: Any, b: Any) -> bool:
    # Strings and rich Text compare by value; any other renderable (a Group, a Table) only by identity,
    # so it is always shown again. Text's own == looks at the plain text and the spans only, not at the
    # base style or the layout options, so they are compared here too.
    if type(a) is not type(b):
        return False
    if isinstance(a, str):
        return a == b
    if isinstance(a, Text):
        return (a.plain == b.plain and a.spans == b.spans and a.style == b.style and a.justify == b.justify
                and a.overflow == b.overflow and a.no_wrap == b.no_wrap and a.end == b.end)
    return a is b


def update_static(widget: Static, content: Any, *, layout: bool = True) -> None:
    """`widget.update(content)` unless it was last given equal content. `layout=False` for a widget
    whose size cannot change with its content (a one-line bar): no layout pass for the screen."""
    if not _unchanged(widget, "content", content):
        widget.update(content, layout=layout)


def set_border_title(widget: Widget, title: str | Text) -> None:
    if not _unchanged(widget, "border_title", title):
        widget.border_title = title


def set_border_subtitle(widget: Widget, subtitle: str) -> None:
    if not _unchanged(widget, "border_subtitle", subtitle):
        widget.border_subtitle = subtitle
