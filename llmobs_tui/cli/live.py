"""The commands that open the live TUI: `tui` (the default) and `demo` run the receiver, the store
and the UI in one process tree (or only watch a store another process writes); `attach` watches a
remote `serve --query-port` through a local cache store. Each decides who writes the store, then
hands over to `llmobs_tui.run.run_tui`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from llmobs_tui.cli.common import EXIT_USAGE, fail, locked_advice
from llmobs_tui.settings import Settings


def cmd_tui(settings: Settings) -> int:
    """The live monitor: receiver + store + TUI in one process tree, or read-only on a store that
    another process writes, or (demo) with a built-in traffic generator."""
    from llmobs_tui.run import run_tui
    from receiver.pipeline import PipelineFailed
    from store.connection import StoreError, StoreLocked, WriterLock

    if settings.store_url is not None:
        return _tui_on_clickhouse(settings)
    path = settings.db_path
    embedded = None
    read_only_reason = None
    if settings.read_only:
        read_only_reason = f"read-only {path}"
    else:
        probe = WriterLock(path)
        try:
            probe.acquire()  # makes the store's directory (0700) on a machine that never ran us
            probe.release()
            embedded = settings.backend_config()
        except StoreLocked as exc:
            if settings.demo:
                return fail(locked_advice(str(exc), "demo"))
            read_only_reason = "read-only: another llmobs-tui process writes this store"
            del exc
        except StoreError as exc:
            return fail(str(exc))
        except OSError as exc:
            return fail(f"cannot use {path}: {exc}")
    if embedded is None and not path.exists():
        return fail(f"no database at {path}")
    try:
        return asyncio.run(run_tui(path, backend_config=embedded, demo=settings.demo,
                                   read_only_reason=read_only_reason, rules=settings.rules,
                                   export_dir=settings.export_dir))
    except PipelineFailed as exc:
        return fail(str(exc))
    except StoreError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(str(exc))


def _tui_on_clickhouse(settings: Settings) -> int:
    """`llmobs-tui --store URL`: the TUI read-only on a ClickHouse store (serve replicas write it; nothing
    is received here). A store it cannot read is one line and exit 1 before any screen is drawn."""
    from llmobs_tui.clickhouse_reader import ClickHouseStoreReader
    from llmobs_tui.run import run_tui
    from store.connection import StoreError

    url = settings.store_url
    assert url is not None
    reader = ClickHouseStoreReader(url)
    try:
        reader.connect()
        return asyncio.run(run_tui(settings.db_path, backend_config=None, demo=False,
                                   read_only_reason=f"read-only {url.display()}", rules=settings.rules,
                                   export_dir=settings.export_dir, reader=reader, store_url=url))
    except StoreError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(str(exc))


def cmd_attach(settings: Settings) -> int:
    """The TUI on a remote `serve`: a child process pulls into a local cache store, the TUI reads it."""
    from llmobs_tui.attach import AttachFeed, AttachPlan
    from llmobs_tui.run import run_tui
    from store.connection import StoreError, WriterLock, open_writer

    target = settings.attach_target
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return fail(f"{target!r}: expected HOST:PORT of a `serve --query-port`", EXIT_USAGE)
    if settings.ca_file and not Path(settings.ca_file).is_file():
        return fail(f"--ca {settings.ca_file}: no such file", EXIT_USAGE)
    path = settings.db_path
    try:
        lock = WriterLock(path)
        lock.acquire()  # the cache store is ours alone; create it now so the TUI can open it at once
        open_writer(path).close()
        lock.release()
    except (StoreError, OSError) as exc:
        return fail(str(exc))
    feed = AttachFeed(AttachPlan(target, str(path), window_s=settings.window_s, token=settings.token,
                                 ca_file=settings.ca_file, prices_file=settings.prices_file))
    feed.start()
    try:
        return asyncio.run(run_tui(path, backend_config=None, demo=False,
                                   read_only_reason=f"attaching to {target}", rules=settings.rules,
                                   status=feed.status, export_dir=settings.export_dir))
    except StoreError as exc:
        return fail(str(exc))
    finally:
        feed.stop()
