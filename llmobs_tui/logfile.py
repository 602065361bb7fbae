"""Where library output goes while the TUI owns the terminal.

A Textual screen is painted over by anything else that writes to the terminal: aiohttp's
"Error handling request" tracebacks, the OpenTelemetry SDK's exporter warnings, asyncio's "Task
exception was never retrieved". While the TUI runs, every logger (ours and the libraries') writes to
one private, size-bounded log file instead; `log_path()` is what the help screen shows.

gRPC's C core writes to file descriptor 2 itself, below Python logging; `GRPC_VERBOSITY=ERROR`
(llmobs_tui/__init__.py) keeps it to real errors, and the one that used to show (a busy port) is
caught before the TUI takes the screen (receiver/grpc_server.py `check_port_free`).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from store.process_logs import FORMAT, LOG_FILE_ENV

MAX_BYTES = 2 << 20  # per file; with BACKUPS, at most ~6 MB of log on disk
BACKUPS = 2


def log_path() -> Path:
    """The TUI's log file, in the data directory (beside the default store)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("llmobs-tui", appauthor=False)) / "llmobs-tui.log"


class _PrivateRotatingHandler(logging.handlers.RotatingFileHandler):
    """Log lines can quote a request (a prompt, a token): the file is 0600, as the store is."""

    def _open(self):  # type: ignore[no-untyped-def]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        from store.connection import make_private

        make_private(fd)
        return os.fdopen(fd, self.mode.replace("w", "a") if "w" in self.mode else self.mode,
                         encoding=self.encoding, errors=self.errors)


@contextmanager
def logs_to_file(path: Path | None = None, level: int = logging.INFO) -> Iterator[Path | None]:
    """While the block runs, the root logger writes only to the log file (ours and every library's
    logger propagate there); Python warnings are logged too. Afterwards the terminal handlers come
    back. Yields the path, or None when the file cannot be opened (then logs are dropped rather than
    painted over the screen: a read-only home must not stop the TUI)."""
    from store.connection import make_private_dirs

    path = Path(path) if path is not None else log_path()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    handler: logging.Handler
    try:
        make_private_dirs(path.parent)
        handler = _PrivateRotatingHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
        opened: Path | None = path
    except OSError:
        handler, opened = logging.NullHandler(), None
    root.handlers = [handler]
    root.setLevel(min(level, saved_level) if saved_level else level)
    logging.captureWarnings(True)
    # The ingest pipeline's children are spawned: they learn where to log from the environment.
    saved_env = os.environ.get(LOG_FILE_ENV)
    os.environ[LOG_FILE_ENV] = str(opened) if opened is not None else os.devnull
    try:
        yield opened
    finally:
        if saved_env is None:
            os.environ.pop(LOG_FILE_ENV, None)
        else:
            os.environ[LOG_FILE_ENV] = saved_env
        logging.captureWarnings(False)
        root.handlers = saved_handlers
        root.setLevel(saved_level)
        handler.close()


def child_logs_to_file(path: Path | None = None) -> None:
    """In a child process of the TUI (the demo feed, the attach puller), which shares the terminal:
    its loggers write to the same log file for the rest of its life (never to the screen)."""
    from store.connection import make_private_dirs

    path = Path(path) if path is not None else log_path()
    handler: logging.Handler
    try:
        make_private_dirs(path.parent)
        handler = _PrivateRotatingHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
    except OSError:
        handler = logging.NullHandler()
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
