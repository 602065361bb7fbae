"""One line saying what changed at the selected change marker (`[` `]` move between the marks).

Answers the runbook's first question, "did anything change?", under the charts that draw the
marks. The change's text (prompt versions, model names, service versions) is untrusted: Text only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.widgets.quiet import update_static
from store.changes import Change


def change_line_text(changes: Sequence[Change], selected: int | None, width: int = 160) -> Text:
    if not changes:
        return Text("no changes in this window (new prompt version, served model, service version, prices, "
                    "error class)", style="dim")
    text = Text()
    if selected is None or not 0 <= selected < len(changes):
        text.append(f"{fmt.plural(len(changes), 'change')} in this window", style="bold yellow")
        text.append(" · [ ] step through them · newest: ", style="dim")
        change = changes[-1]
    else:
        change = changes[selected]
        text.append(f"change {selected + 1}/{len(changes)} ", style="bold orange1")
    text.append(time.strftime("%H:%M:%S ", time.localtime(change.time_s)), style="dim")
    text.append(fmt.clean(change.describe(), limit=max(20, width - text.cell_len - 1)))
    text.truncate(max(10, width), overflow="ellipsis")
    return text


class ChangeLine(Static):
    DEFAULT_CSS = "ChangeLine { height: 1; padding: 0 1; }"

    def show(self, changes: Sequence[Change], selected: int | None) -> None:
        # A store without the change log (ClickHouse: the writers' log is not shipped) must not say "no changes".
        unavailable = getattr(getattr(self.app, "reader", None), "changes_unavailable", None)
        if unavailable:
            update_static(self, Text(unavailable, style="dim"), layout=False)
            return
        width = max(20, self.size.width - 2) if self.size.width else 160
        update_static(self, change_line_text(changes, selected, width), layout=False)  # one line, always
