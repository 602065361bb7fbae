"""Serve's child processes (the writer, the decoders): started as plain `python -c` subprocesses with a
pipe each way, not through multiprocessing's spawn.

Why not multiprocessing: its spawn start method also starts a "resource tracker" process, which serve
never needs (it shares no semaphores or shared memory with its children; batches and replies are pipe
frames) and which costs a whole interpreter, 12 MB of RSS, for as long as serve runs. A subprocess
gets what spawn gave the children that matters to them: the environment (malloc settings, the TUI's
log file), stdin from /dev/null, no file descriptors but its two pipe ends, and the parent's package
root on sys.path (never the working directory, where a user's own `store/` package would shadow ours).

The parent's side is `ChildProcess`; the child's entry is `main()`. The first frame on the child's
inbox is pickled (target "module:function", options); then the target runs as
`target(inbox, outbox, options)` with multiprocessing `Connection`s on the pipes, as it did before.
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# The directory holding the receiver/ and store/ packages, as this (the parent's) interpreter found them.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# -P: no working directory on sys.path (Python 3.11+). The package root goes first only when the
# interpreter would not find it anyway (a source checkout run in place): put first always, an installed
# root (site-packages) would come before the standard library.
_BOOTSTRAP = ("import sys; sys.argv[1] in sys.path or sys.path.insert(0, sys.argv[1]); "
              "from receiver.child_process import main; main()")


class ChildProcess:
    """A started child: `to_child` and `from_child` are the parent's ends of its pipes."""

    def __init__(self, name: str, target: Callable[[Connection, Connection, dict[str, Any]], None],
                 options: dict[str, Any]) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            # argv: the package root, then the name (so that `ps` tells the children apart), then the fds.
            self._popen = subprocess.Popen(
                [sys.executable, "-P", "-c", _BOOTSTRAP, _PACKAGE_ROOT, name, str(to_child_r), str(from_child_w)],
                stdin=subprocess.DEVNULL, pass_fds=(to_child_r, from_child_w), close_fds=True,
            )
        except BaseException:
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            raise
        # The child holds its own ends now; closing ours makes EOF propagate when a side dies.
        os.close(to_child_r)
        os.close(from_child_w)
        self.name = name
        self.to_child = Connection(to_child_w, readable=False)
        self.from_child = Connection(from_child_r, writable=False)
        # Queued in the pipe ahead of anything the caller sends; a child that died at start makes the
        # caller's reader see EOF, as it would for a crash later.
        try:
            self.to_child.send_bytes(pickle.dumps((f"{target.__module__}:{target.__qualname__}", options)))
        except OSError:
            pass

    @property
    def exitcode(self) -> int | None:
        """Its exit code once it has exited and been reaped (negative: the signal that ended it)."""
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        """Wait for it to exit, at most `timeout` seconds."""
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()


def main() -> None:
    """The child's side: argv is (package root, name, inbox fd, outbox fd); the first inbox frame
    names the target and carries its options."""
    inbox = Connection(int(sys.argv[3]), writable=False)
    outbox = Connection(int(sys.argv[4]), readable=False)
    try:
        target_name, options = pickle.loads(inbox.recv_bytes())
    except (EOFError, OSError):
        return  # the parent went away before it said what to run
    module_name, _, function_name = target_name.partition(":")
    target = getattr(importlib.import_module(module_name), function_name)
    target(inbox, outbox, options)
