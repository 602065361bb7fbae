"""Opening the SQLite store: pragmas, migrations, the single-writer lock, and clear errors.

One process writes (it holds `<db>.lock`); any number read through `mode=ro` connections, so a
reader cannot write even by mistake.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from pathlib import Path

from store.migrations import SchemaTooNew, migrate

# Connection pragmas for the writer, each with the reason it is there.
WRITER_PRAGMAS = (
    # WAL: readers never block the writer and see a consistent snapshot.
    "PRAGMA journal_mode = WAL",
    # NORMAL in WAL mode: a committed transaction survives a process crash (kill -9); only an OS
    # crash or power loss can roll back the last commits. perf-notes: FULL costs <5 % here if needed.
    "PRAGMA synchronous = NORMAL",
    "PRAGMA busy_timeout = 10000",
    # Checkpoints run on a background thread (store/checkpointer.py), not inside the writer's
    # COMMIT: perf-notes measured +63 % insert throughput from moving them off the commit path.
    "PRAGMA wal_autocheckpoint = 0",
    # After a checkpoint resets the WAL, truncate the file back to 64 MB instead of keeping its peak.
    "PRAGMA journal_size_limit = 67108864",
    "PRAGMA cache_size = -65536",
    "PRAGMA temp_store = MEMORY",
)
READER_PRAGMAS = (
    "PRAGMA busy_timeout = 10000",
    "PRAGMA cache_size = -32768",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA mmap_size = 268435456",
)


class StoreError(RuntimeError):
    """A store problem a user can act on; the message says what and how."""


class StoreLocked(StoreError):
    pass


def _describe_sqlite_error(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "file is not a database" in text or "malformed" in text:
        return (
            f"{path} is not a usable llmobs-tui database ({text}). It may be corrupt or another "
            f"kind of file: move it aside or pass a different --db."
        )
    if "locked" in text or "busy" in text:
        return f"{path} is locked by another process ({text}); close it or pass a different --db."
    if "unable to open" in text:
        return f"cannot open {path} ({text}): check that the directory exists and is writable."
    if "readonly" in text or "read-only" in text:
        return f"{path} is read-only ({text}); the writer needs write access."
    if "disk is full" in text or "database or disk is full" in text:
        return f"the disk holding {path} is full ({text}); free space or lower --max-db-size."
    return f"{path}: {text}"


class WriterLock:
    """An advisory lock next to the database so that two processes never both write it."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = ""
            try:
                owner = os.pread(fd, 64, 0).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                who = f" (pid {owner})" if owner else ""
                raise StoreLocked(
                    f"another llmobs-tui process{who} is writing {self.path.with_suffix('')}. "
                    f"Open it read-only with `llmobs-tui --db {self.path.with_suffix('')}`, "
                    f"or stop that process first."
                ) from exc
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


QUICK_CHECK_MAX_BYTES = 128 * 2**20


def open_writer(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open (creating if needed) the store for writing and migrate it. Caller holds the WriterLock."""
    db_path = Path(path)
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the directory for {db_path}: {exc}") from exc
    try:
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
        db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        # A fresh file: incremental auto-vacuum lets retention give space back to the OS. It must be
        # chosen before the first table exists.
        if db.execute("PRAGMA page_count").fetchone()[0] == 0:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        for pragma in WRITER_PRAGMAS:
            db.execute(pragma)
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{db_path}: could not switch to WAL mode (got {mode!r})")
        migrate(db)
        # A damaged file fails here, at start, with a clear message, rather than at the first write.
        # quick_check reads every page (15 s for a 1 GB store on this machine), so a big store gets
        # the schema read only; damage deeper in it surfaces as the writer's reported error.
        if db_path.stat().st_size <= QUICK_CHECK_MAX_BYTES:
            verdict = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {verdict}")
        else:
            db.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except SchemaTooNew as exc:
        raise StoreError(str(exc)) from exc
    except sqlite3.Error as exc:
        raise StoreError(_describe_sqlite_error(db_path, exc)) from exc
    return db


def open_reader(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection: writes are refused by the engine, not by convention."""
    db_path = Path(path)
    if not db_path.exists():
        raise StoreError(f"no database at {db_path}: start `llmobs-tui serve --db {db_path}` or pass another --db")
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        for pragma in READER_PRAGMAS:
            db.execute(pragma)
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreError(_describe_sqlite_error(db_path, exc)) from exc
    from store.migrations import MIGRATIONS

    if version == 0:
        raise StoreError(f"{db_path} is not an llmobs-tui database (no schema); pass another --db")
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{db_path} has schema version {version}, newer than this llmobs-tui knows ({len(MIGRATIONS)})"
        )
    if version < len(MIGRATIONS):
        raise StoreError(
            f"{db_path} has an older schema (version {version}); open it once with "
            f"`llmobs-tui serve --db {db_path}` to migrate it"
        )
    return db


def describe_error(path: str | os.PathLike[str], exc: sqlite3.Error) -> str:
    return _describe_sqlite_error(Path(path), exc)
