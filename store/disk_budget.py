"""How `--max-db-size` bounds the disk the store uses: data, WAL and a reserve, all inside the limit.

A limit on the database file alone does not bound the disk: the WAL grows beside it (a reader that
holds a snapshot keeps a checkpoint from finishing), and once the disk is full, eviction itself cannot
run, because a DELETE is written to the WAL first. So the limit is split three ways:

    limit = data (live pages of the database)  +  WAL cap  +  reserve

- **WAL cap**: once a commit leaves the WAL past half the cap, the writer checkpoints and truncates
  it, waiting for readers (the TUI's read transactions last milliseconds) instead of giving up as
  the background checkpointer does. A group commit writes at most about a quarter of the cap, so
  the other half is room for the next one. Measured: 15 MB limit on a 30 MB tmpfs at full ingest,
  files peaked at 14.2 MB (before: the WAL alone reached 18.5 MB and filled the disk).
- **Reserve**: a file of real (allocated) blocks next to the database. When a write fails because the
  disk is full anyway (other files filled it, or the limit was set above the free space), the writer
  deletes the reserve, evicts the oldest traces, checkpoints, and takes the reserve back, so ingest
  recovers by itself.
- **Data**: what retention keeps the live pages under.
- **Room for the next write**: the WAL is truncated, and the oldest traces evicted, before the next
  write could take either past its share, judged by the largest of the recent writes (RecentWrites),
  not by an assumed size. Eviction goes in chunks of about a quarter of the WAL cap: a delete writes to
  the WAL about what it frees. Before, the data share was only restored after a commit had crossed it,
  and an eviction started from a half-full WAL wrote its whole 5 % into it: the files peaked above
  the limit for the 30 ms an eviction lasts (measured in-process before every statement: 8.01-8.68 MB
  on an 8 MB limit).

Without a limit there is no eviction by size and no reserve, but the WAL is still capped.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from collections import deque
from dataclasses import dataclass

from store.connection import make_private

log = logging.getLogger("llmobs.disk")

MiB = 1 << 20
DEFAULT_WAL_CAP = 256 * MiB  # truncated past half: above journal_size_limit (64 MB)
DEFAULT_BATCH_BYTES = 32 * MiB
# Below this the three parts do not fit sensibly (and a store with one trace is already ~100 KB).
MIN_LIMIT = 4 * MiB


@dataclass(frozen=True, slots=True)
class DiskBudget:
    limit: int | None
    wal_cap: int
    reserve: int
    batch_bytes: int

    @classmethod
    def for_limit(cls, limit: int | None) -> DiskBudget:
        if not limit:
            return cls(None, DEFAULT_WAL_CAP, 0, DEFAULT_BATCH_BYTES)
        limit = max(limit, MIN_LIMIT)
        wal_cap = min(64 * MiB, max(MiB, limit // 8))
        reserve = min(32 * MiB, max(MiB, limit // 16))
        batch_bytes = min(DEFAULT_BATCH_BYTES, max(MiB // 4, wal_cap // 4))
        return cls(limit, wal_cap, reserve, batch_bytes)

    @property
    def data_bytes(self) -> int | None:
        """What retention keeps the database's live pages under."""
        if self.limit is None:
            return None
        return self.limit - self.wal_cap - self.reserve


class RecentWrites:
    """The largest of the last writes' sizes (bytes a write added to a file): the room the next write
    is given. Never below `floor`, the size assumed before any write was seen."""

    KEEP = 32

    def __init__(self, floor: int) -> None:
        self.floor = floor
        self._sizes: deque[int] = deque(maxlen=self.KEEP)

    def note(self, size: int) -> None:
        if size > 0:
            self._sizes.append(size)

    @property
    def largest(self) -> int:
        return max(self.floor, max(self._sizes, default=0))


def wal_bytes(db_path: str | os.PathLike[str]) -> int:
    try:
        return os.path.getsize(f"{os.fspath(db_path)}-wal")
    except OSError:
        return 0


def truncate_wal(db: sqlite3.Connection) -> bool:
    """Checkpoint everything and truncate the WAL to zero; waits for readers (busy_timeout).
    Returns True when the WAL was emptied."""
    try:
        busy, _log_frames, _done = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as exc:
        log.warning("WAL checkpoint failed: %s", exc)
        return False
    return busy == 0


class Reserve:
    """A file of allocated blocks that is given up when the disk is full, so eviction can run."""

    def __init__(self, db_path: str | os.PathLike[str], size: int) -> None:
        self.path = f"{os.fspath(db_path)}.reserve"
        self.size = size

    def hold(self) -> bool:
        """Make sure the reserve exists at full size; False when the disk has no room for it yet."""
        if self.size <= 0:
            return True
        try:
            if os.path.getsize(self.path) >= self.size:
                return True
        except OSError:
            pass
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("cannot create the disk reserve %s: %s", self.path, exc)
            return False
        try:
            make_private(fd)
            # Real blocks, not a sparse file: a sparse reserve would free nothing when removed.
            os.posix_fallocate(fd, 0, self.size)
            return True
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EOPNOTSUPP, errno.EINVAL):
                log.warning("cannot allocate the disk reserve %s: %s", self.path, exc)
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return self._fill(fd)
            os.ftruncate(fd, 0)
            return False
        finally:
            os.close(fd)

    def _fill(self, fd: int) -> bool:
        """File systems without fallocate: write the blocks."""
        chunk = b"\0" * MiB
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            left = self.size
            while left > 0:
                left -= os.write(fd, chunk[:left])
            return True
        except OSError:
            os.ftruncate(fd, 0)
            return False

    def give_up(self) -> int:
        """Delete the reserve; returns the bytes it freed."""
        try:
            size = os.path.getsize(self.path)
            os.unlink(self.path)
            return size
        except OSError:
            return 0


def store_files_bytes(db_path: str | os.PathLike[str]) -> int:
    """Disk used by the store's files: database, WAL, shared memory index and reserve."""
    total = 0
    base = os.fspath(db_path)
    for suffix in ("", "-wal", "-shm", ".reserve"):
        try:
            total += os.path.getsize(base + suffix)
        except OSError:
            pass
    return total
