"""The queue in front of a child process's pipe: FIFO for control frames, fair between requests.

A huge export request is normalized in slices (receiver/decoder_process.py), and its decoder can
produce slices faster than the writer commits them. In one FIFO, every other exporter's small request
would wait behind all of them (a 1M-span request held everyone for ~20 s), and the waiting slices
would pile up in memory. So frames are queued per request and handed out round-robin: a small
request waits for at most one slice of each big one. And `put` blocks once a request has
`max_queued` slices waiting, which stops the decoder's reader thread, then the decoder itself:
backpressure down to the process doing the work, with memory bounded by slices, not requests.

Frames without a request (control: stop, close) keep FIFO order after everything already queued.
Thread-safe; the consumer is the child's sender thread.
"""

from __future__ import annotations

import threading
from collections import deque


class FeedClosed(Exception):
    """The child behind this feed is gone; the frame was not queued."""


class WriterFeed:
    def __init__(self, max_queued: int = 4) -> None:
        self.max_queued = max_queued
        self._cond = threading.Condition()
        self._by_request: dict[int, deque[bytes]] = {}
        self._turns: deque[int] = deque()  # requests with frames waiting, in round-robin order
        self._control: deque[bytes | None] = deque()
        self._closed = False

    def put(self, frame: bytes | None, request: int | None = None) -> None:
        """Queue a frame; a request's frame may wait here for room. Raises FeedClosed."""
        with self._cond:
            if request is None:
                if self._closed:
                    raise FeedClosed
                self._control.append(frame)
                self._cond.notify_all()
                return
            while not self._closed and len(self._by_request.get(request, ())) >= self.max_queued:
                self._cond.wait()
            if self._closed:
                raise FeedClosed
            queue = self._by_request.get(request)
            if queue is None:
                queue = self._by_request[request] = deque()
                self._turns.append(request)
            assert frame is not None
            queue.append(frame)
            self._cond.notify_all()

    def get(self) -> bytes | None:
        """The next frame to send (blocks); None means: close the pipe."""
        with self._cond:
            while True:
                if self._turns:
                    request = self._turns.popleft()
                    queue = self._by_request[request]
                    frame = queue.popleft()
                    if queue:
                        self._turns.append(request)
                    else:
                        del self._by_request[request]
                    self._cond.notify_all()
                    return frame
                if self._control:
                    return self._control.popleft()
                if self._closed:
                    return None
                self._cond.wait()

    def close(self) -> None:
        """Drop what is queued and release every waiting `put` (the child has exited)."""
        with self._cond:
            self._closed = True
            self._by_request.clear()
            self._turns.clear()
            self._control.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._by_request.values()) + len(self._control)
