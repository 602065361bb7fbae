"""Running the TUI: with an embedded receiver and writer, read-only on another process's store, or
with the built-in demo feed. The backend lives outside the Textual app (see app.py)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from llmobs_tui.widgets.chrome import IngestStatus

if TYPE_CHECKING:
    from llmobs_tui.backend import Backend, BackendConfig
    from llmobs_tui.config import Config
    from llmobs_tui.demo import DemoFeed


class BackendStatus:
    """The status line's figures from the embedded pipeline."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._last: tuple[float, int] | None = None

    def __call__(self) -> IngestStatus:
        stats = self.backend.pipeline.stats
        now = time.monotonic()
        committed = stats.writer.get("spans", 0) + stats.writer.get("logs", 0)
        rate = None
        if self._last is not None and now > self._last[0]:
            rate = (committed - self._last[1]) / (now - self._last[0])
        if self._last is None or now - self._last[0] >= 1.0:
            self._last = (now, committed)
        address = " · ".join(a for a in (self.backend.grpc_address, self.backend.http_address) if a)
        return IngestStatus(address=address, spans_per_s=rate, queue=stats.inflight_requests,
                            rejected_spans=stats.rejected, rejected_requests=stats.invalid_requests,
                            store_bytes=stats.writer.get("db_bytes"),
                            error=stats.writer.get("last_error") or self.backend.pipeline.fatal_error)


async def run_tui(db_path: Path, *, backend_config: BackendConfig | None, demo: bool,
                  read_only_reason: str | None = None, rules: Config | None = None,
                  status: Callable[[], IngestStatus] | None = None, export_dir: Path | None = None,
                  reader: Any = None, store_url: Any = None) -> int:
    """The app on `db_path` until the user quits. With `backend_config` (already checked, see
    llmobs_tui.settings), a receiver and writer run beside it in this process and are drained after
    the app exits; `demo` also starts the demo feed sending to them. Without, the app only reads
    (`read_only_reason` says why on the status line; `status` feeds it, e.g. attach's). `reader` and
    `store_url`: a ClickHouse store (llmobs_tui/clickhouse_reader.py) that the screens and the alert
    rules read instead of db_path (`llmobs-tui --store`; serve replicas write it)."""
    from llmobs_tui.alerting.live import EngineAlerts
    from llmobs_tui.app import LlmobsApp
    from llmobs_tui.config import Config

    backend: Backend | None = None
    feed: DemoFeed | None = None
    if backend_config is not None:
        from llmobs_tui.backend import Backend

        backend = Backend(backend_config)
        await backend.start()
        status = BackendStatus(backend)
        if demo:
            from dataclasses import replace

            from llmobs_tui.demo import DemoFeed, DemoPlan

            plan = replace(DemoPlan(), backfill_after_s=_newest_trace_s(db_path))
            feed = DemoFeed(f"http://{backend.grpc_address}", plan)
            feed.start()
    # The store exists now (the backend created it, or another process writes it).
    alerts = EngineAlerts(db_path, rules if rules is not None else Config(), store_url=store_url)
    app = LlmobsApp(db_path, status=status, alerts=alerts, export_dir=export_dir,
                    sessions=rules.sessions if rules is not None else None, reader=reader)
    if read_only_reason and status is None:
        app.status = IngestStatus(mode=read_only_reason)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, app.exit)
    from llmobs_tui.logfile import logs_to_file

    try:
        # Library loggers (aiohttp, grpc, the OTel SDK, asyncio) must not paint over the screen.
        with logs_to_file():
            await app.run_async()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        alerts.close()
        # The terminal is back: what remains must not keep the user waiting (design §1: the backend
        # is stopped here, after the app, never inside a Textual worker).
        await shutdown(feed, backend)
    return 0


FEED_GRACE_S = 0.5  # how long the demo feed may take to flush before it is killed
SLOW_DRAIN_S = 1.0  # after this, say what the wait is for


async def shutdown(feed: DemoFeed | None, backend: Backend | None, *, out: TextIO | None = None) -> None:
    """Stop the demo feed, then drain the backend: every span the receiver acknowledged is committed
    before this returns.

    The feed is stopped on a thread, so that the receiver on this loop keeps answering the feed's
    exporter while it flushes (a blocking join here starved it into DEADLINE_EXCEEDED for 10 s). The
    demo's spans are made up: what it has not sent within FEED_GRACE_S was never acknowledged, and is
    dropped with the process."""
    import anyio

    if feed is not None:
        await anyio.to_thread.run_sync(feed.stop, FEED_GRACE_S)
    if backend is None:
        return

    async def say_if_slow() -> None:
        await anyio.sleep(SLOW_DRAIN_S)
        inflight = backend.pipeline.stats.inflight_requests
        print(f"finishing: committing {inflight} in-flight request{'s' if inflight != 1 else ''}…",
              file=out if out is not None else sys.stderr, flush=True)

    async with anyio.create_task_group() as group:
        group.start_soon(say_if_slow)
        try:
            await backend.aclose()
        finally:
            group.cancel_scope.cancel()


def _newest_trace_s(db_path: Path) -> float | None:
    from store.connection import open_reader
    from store.queries import newest_trace_start_ns

    db = open_reader(db_path)
    try:
        newest = newest_trace_start_ns(db)
    finally:
        db.close()
    return None if newest is None else newest / 1e9
