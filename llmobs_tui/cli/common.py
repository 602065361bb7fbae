"""What every command shares: the exit codes and the one-line failure message, so that each error a
user can cause ends the same way (`llmobs-tui: what and how to fix it`, non-zero exit)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from store.connection import Connection

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
        "forget": "stop `serve` first (or the TUI that writes it), forget, then start it again",
    }.get(command, "stop that process first, or pass another --db")
    return f"{match.group(1)}: {advice}."


class CannotWrite(Exception):
    """The store cannot be opened for writing; the message is the line to print."""


@contextmanager
def rewriting_store(path: Path, command: str) -> Iterator[Connection]:
    """The store opened as its one writer, for a command that rewrites it (reprice, forget): the
    writer lock held throughout, so that `serve` cannot start writing under it, nor it under serve."""
    from store.connection import StoreError, StoreLocked, WriterLock, open_writer

    if not path.exists():
        raise CannotWrite(f"no database at {path}")
    lock = WriterLock(path)
    try:
        lock.acquire()
    except StoreError as exc:
        raise CannotWrite(locked_advice(str(exc), command) if isinstance(exc, StoreLocked) else str(exc)) from exc
    try:
        try:
            db = open_writer(path)
        except StoreError as exc:
            raise CannotWrite(str(exc)) from exc
        try:
            yield db
        finally:
            db.close()
    finally:
        lock.release()
