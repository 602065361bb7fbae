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
    whose size cannot change with its content (a one-line bar): no layout pass for the screen.

    With layout, the screen is laid out again only if the new content changes the widget's size. A
    widget whose width its container sets and whose text changes but not its number of lines (a
    summary's figures, every refresh) needs a repaint, not a layout of every widget of the screen and
    a paint of all of them: 28 ms of the UI thread per refresh of the Alerts screen."""
    if _unchanged(widget, "content", content):
        return
    if not layout or not _sized_by_its_container(widget):
        widget.update(content, layout=layout)
        return
    height = widget.styles.height
    if height is None or height.is_auto:  # unset: as tall as its content
        container, viewport, width = widget.container_size, widget.app.size, widget.content_size.width
        lines = widget.get_content_height(container, viewport, width)
        widget.update(content, layout=False)
        if widget.get_content_height(container, viewport, width) != lines:
            widget.refresh(layout=True)
    else:  # a height of its own: the content cannot move anything
        widget.update(content, layout=False)


def _sized_by_its_container(widget: Widget) -> bool:
    """Laid out already, and as wide as its container makes it whatever it holds (not width: auto; unset
    is the container's width)."""
    width = widget.styles.width
    return widget.is_mounted and widget.content_size.width > 0 and (width is None or not width.is_auto)


def set_border_title(widget: Widget, title: str | Text) -> None:
    if not _unchanged(widget, "border_title", title):
        widget.border_title = title


def set_border_subtitle(widget: Widget, subtitle: str) -> None:
    if not _unchanged(widget, "border_subtitle", subtitle):
        widget.border_subtitle = subtitle
