"""Where serve's child processes (decoders, the writer) log.

They are separate interpreters, so they inherit none of the parent's logging set-up: by default a warning of
theirs ("disk full", "commit failed") goes to stderr. Under `serve` that is right. Under the TUI,
whose screen a stray line paints over, the parent names its log file in LOG_FILE_ENV (an
environment variable: what a spawned child does inherit; see llmobs_tui/logfile.py) and each child
appends there instead. Lives in store/ because both the writer (store/) and the decoders
(receiver/) call it, and store/ must not import from receiver/.
"""

from __future__ import annotations

import logging
import os

LOG_FILE_ENV = "LLMOBS_LOG_FILE"  # a path, or os.devnull when the parent could not open its file
FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


def follow_parent_log() -> None:
    """In a child: log where the parent said (LOG_FILE_ENV), else leave logging as it is (stderr)."""
    path = os.environ.get(LOG_FILE_ENV)
    if not path:
        return
    handler: logging.Handler
    try:
        # Appending to the file the parent created private (0600) and rotates; a child that still
        # holds a rotated-away file writes on into it, which loses nothing.
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
    except OSError:
        handler = logging.NullHandler()  # never the terminal: the TUI owns it
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
