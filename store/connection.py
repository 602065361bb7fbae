"""Opening the SQLite store: pragmas, migrations, the single-writer lock, and clear errors.

One process writes (it holds `<db>.lock`); any number read through `mode=ro` connections, so a
reader cannot write even by mistake.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
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
    # 16 MiB of page cache: the writer's B-tree inserts touch the interior pages and the right edge of
    # each index, which fit; leaves of the random (trace id) indexes miss whatever the size. Measured
    # writing 100,000 heavy spans into a 2.4M-span store: 88-91 µs per span at 16, 32 and 64 MiB alike,
    # and the writer's RSS 126 MB at 16 against 171-176 MB at 64.
    "PRAGMA cache_size = -16384",
    "PRAGMA temp_store = MEMORY",
    # A deleted row's bytes are overwritten, not left in a free page: `forget` erases what it deletes
    # whatever SQLite build this is (off by default in SQLite's own; on in Debian's, where every
    # figure in bench/ and the README was measured, so nothing measured changes).
    "PRAGMA secure_delete = ON",
)
READER_PRAGMAS = (
    "PRAGMA busy_timeout = 10000",
    "PRAGMA cache_size = -32768",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA mmap_size = 268435456",
)



def _bind_common_values_without_protocol_lookups() -> None:
    """sqlite3 binds int, float and str directly, but sends every other value (None, bytes, bool)
    through its adaptation protocol first: an adapter lookup, then `__adapt__` on its PrepareProtocol
    type, whose failure formats an AttributeError message, then `__conform__` on the value. A span row
    binds about 17 None and 4 bytes values, and that lookup was 40 % of the spans INSERT's CPU (issue 15;
    py-spy --native: pysqlite_microprotocols_adapt). An adapter in the registry is found first and
    ends it, so each of these types gets one that hands back what it is given, in C: the values bound
    are the same (None is NULL, bytes a BLOB, a bool its int). Registered once per process, for every
    connection (sqlite3's registry is process-wide); no base type (int, float, str, bytearray) is
    given one, which would send every value through the protocol."""
    nothing: dict[None, None] = {}
    sqlite3.register_adapter(type(None), nothing.get)  # {}.get(None) is None
    sqlite3.register_adapter(bytes, bytes)  # bytes(b) is b itself
    sqlite3.register_adapter(bool, int)


_bind_common_values_without_protocol_lookups()

# What callers outside store/ name instead of importing sqlite3 (issue 12: store/ owns the schema).
Connection = sqlite3.Connection
DatabaseError = sqlite3.Error


class StoreError(RuntimeError):
    """A store problem a user can act on; the message says what and how."""


class StoreLocked(StoreError):
    pass


class NotInThisStore(StoreError):
    """A view whose data this kind of store does not hold (yet): the message names the view, in one line.
    A screen showing several views may show the others without it."""


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
    """The single-writer rule, enforced on the database file itself, whatever path reaches it.

    The lock is an `flock` on the database's inode: a symlink, a hard link or a relative path to the
    same file all meet the same lock, so a second writer cannot start through another name (it
    would otherwise keep its own -wal/-shm and lose what it acknowledged). flock and SQLite's own
    POSIX byte-range locks are independent on Linux, so holding it costs SQLite nothing. The
    holder's pid goes to `<real path>.lock` (also flocked, as older versions did) for messages;
    through another name the pid is found in /proc/locks.

    POSIX rule to respect: closing any descriptor of the database drops every SQLite lock this
    process holds on it, so `release()` only after this process's connections to the file are closed.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        real = Path(os.path.realpath(self.db_path))
        self.path = real.with_name(real.name + ".lock")
        self._fds: list[int] = []

    def acquire(self) -> None:
        make_private_dirs(self.db_path.parent)
        try:
            db_fd = _open_private(self.db_path)
        except OSError as exc:
            raise StoreError(f"cannot open {self.db_path}: {exc.strerror or exc}") from exc
        if not _try_flock(db_fd):
            holder = _flock_holder(db_fd)
            os.close(db_fd)
            raise self._locked(holder)
        try:
            pid_fd = _open_private(self.path)
        except OSError as exc:
            os.close(db_fd)
            raise StoreError(f"cannot open {self.path}: {exc.strerror or exc}") from exc
        if not _try_flock(pid_fd):
            holder = _read_pid(pid_fd)
            os.close(pid_fd)
            os.close(db_fd)
            raise self._locked(holder)
        os.ftruncate(pid_fd, 0)
        os.pwrite(pid_fd, str(os.getpid()).encode(), 0)
        self._fds = [db_fd, pid_fd]

    def _locked(self, holder: str) -> StoreLocked:
        who = f" (pid {holder})" if holder else ""
        return StoreLocked(
            f"another llmobs-tui process{who} is writing {self.db_path}. "
            f"Open it read-only with `llmobs-tui --db {self.db_path}`, or stop that process first.")

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in reversed(fds):
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def make_private_dirs(directory: Path) -> None:
    """Create `directory` and any missing parents as 0700: stored prompts are nobody else's to read.
    Directories that already exist are left as they are (it may be /tmp or a shared volume)."""
    missing = []
    current = Path(directory)
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot create the directory {path}: {exc.strerror or exc}") from exc
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask; make it exact


def _open_private(path: Path) -> int:
    """Open (creating if needed) a store file readable and writable by its owner only."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    make_private(fd)
    return fd


def make_private(target: int | str | os.PathLike[str]) -> None:
    """Drop group/other permission bits from a store file we own (older versions made them 0644)."""
    try:
        mode = os.stat(target).st_mode
        if mode & 0o077:
            if isinstance(target, int):
                os.fchmod(target, mode & 0o700)
            else:
                os.chmod(target, mode & 0o700)
    except (FileNotFoundError, PermissionError):
        pass  # not ours to change (or gone): SQLite reports what matters when it opens the file


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        os.close(fd)
        raise StoreError(f"cannot lock the store: {exc.strerror or exc}") from exc


def _flock_holder(fd: int) -> str:
    """The pid holding an flock on the file behind `fd`, from /proc/locks ('' if unknown)."""
    st = os.fstat(fd)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == ident and fields[4].isdigit():
                    return fields[4]
    except OSError:
        pass
    return ""


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return ""


QUICK_CHECK_MAX_BYTES = 128 * 2**20


@contextmanager
def scratch_writer(prefix: str) -> Iterator[sqlite3.Connection]:
    """A writable store in a temporary directory, its writer lock held, for the block; deleted after it."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        path = Path(tmp) / "scratch.db"
        lock = WriterLock(path)
        lock.acquire()
        db = open_writer(path)
        try:
            yield db
        finally:
            db.close()
            lock.release()


def open_writer(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open (creating if needed) the store for writing and migrate it. Caller holds the WriterLock."""
    db_path = Path(path)
    make_private_dirs(db_path.parent)
    try:
        # Created here as 0600, so SQLite (which gives -wal and -shm the database's mode) never
        # makes a world-readable file of stored prompts. Only when missing: closing a descriptor of
        # a file drops this process's SQLite locks on it.
        if not db_path.exists():
            os.close(_open_private(db_path))
        make_private(db_path)
    except OSError as exc:
        raise StoreError(f"cannot open {db_path}: {exc.strerror or exc}") from exc
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
        for suffix in ("-wal", "-shm"):
            make_private(f"{db_path}{suffix}")
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


@contextmanager
def immediate_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction around the block (the stores' connections commit each statement by themselves
    otherwise): committed when it ends, rolled back when it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        raise
    db.execute("COMMIT")


@contextmanager
def read_snapshot(db: sqlite3.Connection) -> Iterator[None]:
    """Every query inside reads one consistent state of the store (a deferred read transaction)."""
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("COMMIT")
