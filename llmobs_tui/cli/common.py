"""What every command shares: the exit codes and the one-line failure message, so that each error a
user can cause ends the same way (`llmobs-tui: what and how to fix it`, non-zero exit)."""

from __future__ import annotations

import re
import sys

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
# `check` gives 1 and 2 their alerting meaning (ticket, page); it cannot evaluate → this instead.
EXIT_CHECK_FAILED = 3


def fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"llmobs-tui: {message}", file=sys.stderr)
    return code


def locked_advice(message: str, command: str) -> str:
    """The store's "another process is writing" message, with the advice that fits `command`."""
    match = re.match(r"(another llmobs-tui process.*? is writing .*?)\. Open it read-only", message, re.S)
    if not match:
        return message
    advice = {
        "serve": "stop that process first, or give this one another --db",
        "demo": "stop it first, or give the demo another --db",
        "reprice": "stop `serve` first (or the TUI that writes it): reprice rewrites the store",
    }.get(command, "stop that process first, or pass another --db")
    return f"{match.group(1)}: {advice}."
