"""Where the decoders' batches reach the writer: a Unix socket the writer process listens on.

Decoders used to hand their batches to the main process, which relayed the bytes to the writer.
That relay cost the main process 6-11 µs of CPU per span and held every batch in flight in its
memory (up to 170 MB under load), in the process that also answers the exporters and, in the TUI,
draws the screen. Now each decoder connects here and sends its batches itself; the main process only
sees the acknowledgements. The socket's address is fixed for the life of the pipeline (on Linux an
abstract socket, elsewhere a path; see receiver/pipeline.batch_socket_address), so a writer that is
restarted after a crash listens where the decoders already look, and they reconnect.

Backpressure is the socket's: a decoder whose batch the writer has not read yet blocks in its send,
stops taking requests, and the main process's limits on requests in flight answer the exporters.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import Any

log = logging.getLogger("llmobs.writer")


class BatchInlet:
    """The listening socket and the decoders' connections to it; `connections` is read by the writer's
    loop only, new connections are handed over through `take_new()` when `wake` is readable."""

    def __init__(self, address: str, authkey: bytes) -> None:
        if not address.startswith("\0"):  # a path (an abstract socket has no file)
            try:
                os.unlink(address)  # left by a writer that was killed: the path is the pipeline's, not ours
            except FileNotFoundError:
                pass
        # A socket of our own rather than multiprocessing's Listener: closing must wake the accept
        # thread (shutdown), or the address stays bound until the process exits.
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.bind(address)
            self._socket.listen(64)
        except OSError:
            self._socket.close()
            raise
        self._authkey = authkey
        self.connections: list[Connection] = []
        self._new: list[Connection] = []
        self._lock = threading.Lock()
        # A pipe the writer's loop waits on with everything else, so that a new decoder's first batch
        # is not left waiting for the loop's next timeout.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="llmobs-writer-accept", daemon=True)
        self._thread.start()

    @property
    def wake(self) -> int:
        return self._wake_r

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._socket.accept()
            except OSError:  # shut down (the writer stops)
                return
            connection = Connection(client.detach())
            try:  # what multiprocessing's Listener does: each side proves it holds the key
                deliver_challenge(connection, self._authkey)
                answer_challenge(connection, self._authkey)
            except (AuthenticationError, EOFError, OSError) as exc:  # not one of our decoders
                log.warning("refused a connection to the writer's socket: %s", exc)
                connection.close()
                continue
            with self._lock:
                self._new.append(connection)
            try:
                os.write(self._wake_w, b"\0")
            except OSError:
                return

    def take_new(self) -> None:
        """Adopt the connections accepted since the last call (after `wake` was readable)."""
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        with self._lock:
            self.connections.extend(self._new)
            self._new.clear()

    def drop(self, connection: Connection) -> None:
        """A decoder that went away (EOF): a restarted one connects anew."""
        if connection in self.connections:
            self.connections.remove(connection)
        connection.close()

    def close(self) -> None:
        self._closed = True
        try:
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes the accept thread, which then returns
        except OSError:
            pass
        self._socket.close()
        self._thread.join(timeout=1)
        with self._lock:
            for connection in self.connections + self._new:
                connection.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


def waitables(inbox: Any, inlet: BatchInlet | None) -> list[Any]:
    """What the writer's loop waits on: the main process's pipe, and the decoders' when there is an inlet."""
    if inlet is None:
        return [inbox]
    return [inbox, inlet.wake, *inlet.connections]
