"""`llmobs-tui serve`: the receiver and store with no UI (a sidecar, a cluster, CI). It prints one
line when listening, a stats line every `--stats-every`, and a last line that accounts for every
span accepted; it exits non-zero when the pipeline gives up, so a supervisor restarts it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from llmobs_tui.cli.common import EXIT_OK, fail, locked_advice
from llmobs_tui.config import format_duration
from llmobs_tui.settings import Settings

if TYPE_CHECKING:
    from llmobs_tui.backend import Backend
    from receiver.prometheus import MetricsServer


def say(line: str) -> None:
    """Print a line of serve's output. When whoever read it has gone (a pipe closed: `serve | head`,
    a supervisor that exited), the output is dropped from then on instead of raising: a failed
    print in the stop path used to skip the shutdown, and the process then hung at exit, joining
    children that were never told to stop (they ignore SIGTERM), until a kill -9."""
    try:
        print(line, flush=True)
    except (BrokenPipeError, ValueError, OSError):
        try:  # so that the interpreter's own flush at exit does not fail on the closed pipe either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass


def cmd_serve(settings: Settings) -> int:
    from llmobs_tui.backend import Backend
    from receiver.pipeline import PipelineFailed

    backend = Backend(settings.backend_config())
    config = backend.config.pipeline

    async def run() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        from llmobs_tui.alerting.notify import serve_alerts
        from llmobs_tui.config import ConfigError

        try:  # [[notify]]: the alert rules evaluated here, and each fire and resolve delivered
            alerting = serve_alerts(settings.rules, config.db_path, say)
        except ConfigError as exc:
            return fail(str(exc))
        try:
            await backend.start()
            metrics = await start_metrics_port(backend, settings.metrics_port)
        except PipelineFailed as exc:
            return fail(locked_advice(str(exc), "serve"))
        except OSError as exc:
            return fail(str(exc))
        failure = None
        try:
            say(f"llmobs-tui serve: {backend.describe()}"
                + (f", Prometheus metrics on {metrics.url}" if metrics else "")
                + f"; store {describe_store(config.db_path, config.clickhouse)}; "
                + describe_retention(config.retention_s, config.clickhouse)
                + (f", max {config.max_db_bytes / 1e9:g} GB" if config.max_db_bytes else "")
                + (", PII redacted" if config.redact else "")
                + (", no content stored" if not config.keep_content else "")
                + (f", {config.content.describe()}" if config.content and config.content.mode == "tiered" else "")
                + ". Ctrl-C to stop.")
            stats = StatsPrinter(backend)
            stats_task = asyncio.create_task(stats.run(settings.stats_every_s, stop))
            if alerting is not None:
                alerting.start(stop)
            gave_up = asyncio.create_task(backend.pipeline.failed.wait())
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({gave_up, stopped}, return_when=asyncio.FIRST_COMPLETED)
            failure = backend.pipeline.fatal_error if gave_up.done() else None
            gave_up.cancel()
            stopped.cancel()
            if failure is not None:
                # Answering UNAVAILABLE forever behind a healthy-looking stats line helps nobody: exit
                # non-zero so that systemd, Kubernetes or a shell loop restarts the whole process.
                say(f"llmobs-tui serve: giving up: {failure}; stopping so a supervisor can restart it")
            else:
                say("llmobs-tui serve: stopping: finishing in-flight requests and committing…")
            stats_task.cancel()
        finally:
            # Whatever happened above, the children are told to stop and what they hold is committed.
            if metrics is not None:
                await metrics.stop()
            if alerting is not None:
                stop.set()  # the evaluation in progress ends; queued messages get a moment
                await alerting.aclose()
            await backend.aclose()
        writer = backend.pipeline.stats.writer
        say(serve_summary(backend.pipeline.stats.accepted, writer))
        if failure is not None:
            return fail(failure)
        return EXIT_OK

    return asyncio.run(run())


def describe_store(db_path: str, clickhouse: dict[str, Any] | None) -> str:
    if clickhouse is None:
        return db_path
    # Acks wait for ClickHouse; the SQLite file is this replica's working store (and its outbox).
    return f"{clickhouse['url'].display()} (working store {db_path})"


def describe_retention(retention_s: float | None, clickhouse: dict[str, Any] | None) -> str:
    if clickhouse is None:
        return f"retention {format_duration(retention_s or 0)}"
    return (f"retention {clickhouse['retention_days']}d in ClickHouse (whole days), "
            f"{format_duration(retention_s or 0)} in the working store")


async def start_metrics_port(backend: Backend, port: int | None) -> MetricsServer | None:
    """`--metrics-port`: GET /metrics on a port of its own, beside the one on the OTLP/HTTP port (both
    share one reader, so their counters agree). A port that cannot be had stops serve at start, as a
    busy OTLP port does."""
    if port is None:
        return None
    from receiver.prometheus import MetricsServer, MetricsSource

    source = backend.http.metrics if backend.http is not None else MetricsSource(backend.config.pipeline.db_path)
    server = MetricsServer(source, backend.config.host, port, auth=backend.auth, tls=backend.tls)
    try:
        await server.start()
    except BaseException:
        await backend.aclose()
        raise
    return server


def serve_summary(accepted: int, writer: dict[str, Any]) -> str:
    """serve's last line. The gap between accepted and committed is duplicates (an exporter's retry
    of a batch already stored: kept once, by design), so it says so instead of reading like loss.
    bench/__init__.py parses "N … accepted this run, M spans committed"."""
    duplicates = writer.get("duplicates", 0)
    logs = writer.get("logs", 0)
    return (f"llmobs-tui serve: stopped; {accepted} spans, log records and metric points accepted this run, "
            f"{writer.get('spans', 0)} spans committed"
            + (f", {logs} log records committed" if logs else "")
            + (f", {duplicates} duplicate span{'s' if duplicates != 1 else ''} already stored (a retry sends "
               f"a batch again; kept once, none lost)" if duplicates else ", no duplicates")
            + ".")


class StatsPrinter:
    """One line a minute: spans/s, queue, rejected, db size."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._last_spans = 0
        self._last_time = time.monotonic()

    def line(self) -> str:
        stats = self.backend.pipeline.stats
        writer = stats.writer
        now = time.monotonic()
        spans = writer.get("spans", 0) + writer.get("logs", 0)
        rate = (spans - self._last_spans) / max(1e-6, now - self._last_time)
        self._last_spans, self._last_time = spans, now
        rejected_requests = stats.invalid_requests
        parts = [
            time.strftime("%H:%M:%S"),
            f"{rate:,.1f} spans/s",
            f"queue {stats.inflight_requests} req ({stats.inflight_bytes / 2**20:.1f} MiB)",
            f"rejected {stats.rejected} spans, {rejected_requests} requests, {stats.overloaded} overloaded"
            + (f", {self.backend.auth.refused} unauthenticated" if self.backend.auth.enabled else "")
            + (f", {self.backend.http.tls_handshakes_failed} TLS handshakes failed (HTTP)"
               if self.backend.tls is not None and self.backend.http is not None else ""),
            f"db {writer.get('db_bytes', 0) / 2**20:,.1f} MiB",
            f"{writer.get('duplicates', 0)} duplicate spans ({writer.get('conflicting_duplicates', 0)} with other "
            f"content, kept first)",
        ]
        forward = self.backend.forward
        if forward is not None:
            f = forward.stats
            parts.append(f"forwarded {f.forwarded} batches, {f.queued} queued, {f.dropped} dropped, {f.failed} refused")
            if f.queued and f.last_error:
                parts.append(f"upstream: {f.last_error}")
        if writer.get("clickhouse_down"):
            parts.append(f"ClickHouse unreachable: {writer.get('clickhouse_backlog', 0)} batches kept in the "
                         f"outbox, requests refused (retryable)")
        dropped, given_up = writer.get("clickhouse_rechecks_dropped", 0), writer.get("clickhouse_rechecks_given_up", 0)
        if dropped or given_up:
            # Calls whose twin in another replica's trace may stay billed twice (store/clickhouse/twin_calls.py).
            parts.append(f"twin rechecks: {writer.get('clickhouse_rechecks_waiting', 0):,} waiting, {dropped:,} "
                         f"skipped (queue full), {given_up:,} given up (lookup refused)")
        if rewritten := writer.get("clickhouse_traces_rewritten", 0):
            # Spans of one trace another replica was given in the same moment (store/clickhouse/trace_sync.py): the
            # router split traces, as when the replica set changes; often, it does not route by trace id.
            parts.append(f"{rewritten:,} traces also written by another replica at once, decided again whole")
        if writer.get("last_error"):
            parts.append(f"last error: {writer['last_error']}")
        return " | ".join(parts)

    async def run(self, every: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except TimeoutError:
                say(self.line())
