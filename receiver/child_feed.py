"""The queue in front of a child process's pipe, emptied by that child's sender thread.

The event loop must never block on a pipe (a busy decoder stops reading, and a send would wait): it
puts frames here and a thread sends them. FIFO; nothing is bounded here, because what goes in is
already bounded by the pipeline's limits on requests and bytes in flight. An item is one frame or a
tuple of frames that go out back to back (a request's header and its body), so that nothing else
is sent between them. (Batches used to pass
through the main process on their way to the writer, with a per-request queue here to keep one huge
request from holding everyone else's; they now go from decoder to writer directly, see
store/batch_inlet.py, and the writer reads its decoders' connections in turn.)
"""

from __future__ import annotations

import threading
from collections import deque

Item = bytes | tuple[bytes, ...]


class FeedClosed(Exception):
    """The child behind this feed is gone; the frame was not queued."""


class ChildFeed:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frames: deque[Item | None] = deque()
        self._closed = False

    def put(self, frame: Item | None) -> None:
        """Queue a frame (None: close the pipe after what is queued). Raises FeedClosed."""
        with self._cond:
            if self._closed:
                raise FeedClosed
            self._frames.append(frame)
            self._cond.notify()

    def get(self) -> Item | None:
        """The next frame to send (blocks); None means: close the pipe."""
        with self._cond:
            while not self._frames:
                if self._closed:
                    return None
                self._cond.wait()
            return self._frames.popleft()

    def close(self) -> None:
        """Drop what is queued (the child has exited)."""
        with self._cond:
            self._closed = True
            self._frames.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)
