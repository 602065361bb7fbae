"""The ingest pipeline as seen from the process that owns the sockets (and, in the TUI, the screen).

    servers ──submit(bytes)──▶ IngestPipeline ──▶ decoder processes (decode + normalize + price)
                                     ▲                    │ tagged, pickled batch, over the writer's
                                     │                    ▼ Unix socket (store/batch_inlet.py)
                              ack after COMMIT ◀── writer process (one connection, group commit)

The main process never decodes or writes: it forwards request bytes to a decoder and resolves one
future per export request when the writer has committed it, which is when the exporter gets its
answer. Batches do not pass through it. A full
pipeline answers at once with `Overloaded` (OTLP's retryable RESOURCE_EXHAUSTED / 503) instead of
queueing without bound. A crashed child fails the requests it held (retryable) and is restarted.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import pickle
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from receiver import content_tiers, protocol, semconv
from receiver.allocator import tune_malloc
from receiver.child_feed import ChildFeed, FeedClosed, Item
from receiver.child_process import ChildProcess

log = logging.getLogger("llmobs.pipeline")


# Writer counters that add up across writer processes (a crashed writer's are carried over).
_CARRIED_COUNTERS = ("spans", "logs", "duplicates", "conflicting_duplicates", "updated", "commits",
                     "failed_commits", "commit_seconds", "evicted_traces", "wal_truncations", "room_made")


class Overloaded(Exception):
    """The pipeline is full; the client should retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(Exception):
    """The request could not be stored now (a child crashed, the disk is full); retryable."""


class InvalidRequest(Exception):
    """The body is not valid OTLP; not retryable."""


class PipelineFailed(RuntimeError):
    """The pipeline cannot run at all (the store cannot be opened): the message says why."""


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    accepted: int
    rejected: int
    message: str


@dataclass(slots=True)
class PipelineConfig:
    db_path: str
    decoders: int = 0  # 0: one per core
    prices_file: str | None = None
    redact: bool = True
    keep_content: bool = True
    max_attr_bytes: int = 256 * 1024
    dimension_keys: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(semconv.DEFAULT_DIMENSION_KEYS))
    redact_patterns: tuple[str, ...] = ()  # llmobs.toml [redaction] patterns, besides the built-in ones
    drop_keys: tuple[str, ...] = ()  # llmobs.toml [redaction] drop_keys: attributes never stored
    retention_s: float | None = 7 * 86400
    max_db_bytes: int | None = None
    max_inflight_bytes: int = 256 << 20
    max_inflight_requests: int = 512
    max_body_bytes: int = 128 << 20
    max_batch_rows: int = 8192
    content_index: bool = True  # index stored content for `text:` search (store/content_index.py)
    # Where the writer listens for the decoders' batches, and the key they prove themselves with
    # (store/batch_inlet.py); set by IngestPipeline.start.
    batch_socket: dict[str, Any] = field(default_factory=dict)
    # `--content` and [content] (receiver/content_tiers.py); None: all content (or none without keep_content).
    content: content_tiers.ContentPolicy | None = None
    # With a tiered policy and on_burn: called in a thread every burn_interval_s, it returns the
    # (feature, model) scopes whose SLO is burning (llmobs_tui/alerting/notify.py BurnWatch). Stays in
    # this process: never in the children's options.
    burn_source: Callable[[], frozenset[tuple[str | None, str | None]]] | None = None
    burn_interval_s: float = 30.0
    # `serve --store clickhouse://…`: {"url": ClickHouseUrl}; the writer ships its outbox there and acks
    # only what ClickHouse confirmed (store/clickhouse/sink.py).
    clickhouse: dict[str, Any] | None = None

    def decoder_options(self) -> dict[str, Any]:
        return {
            **self.batch_socket,
            "prices_file": self.prices_file,
            "redact": self.redact,
            "keep_content": self.keep_content,
            "max_attr_bytes": self.max_attr_bytes,
            "dimension_keys": self.dimension_keys,
            "redact_patterns": tuple(self.redact_patterns),
            "drop_keys": tuple(self.drop_keys),
            "max_body_bytes": self.max_body_bytes,
            "content": self.content,
        }

    def writer_options(self) -> dict[str, Any]:
        return {
            "db_path": self.db_path,
            **self.batch_socket,
            "retention_s": self.retention_s,
            "max_db_bytes": self.max_db_bytes,
            "max_batch_rows": self.max_batch_rows,
            "content_index": self.content_index,
            "price_rows": self._price_rows(),
            "clickhouse": self.clickhouse,
        }

    def _price_rows(self) -> list[Any] | None:
        """The rows the decoders price with, for the writer to record (store.pricing): the read side
        shows the row that priced a span without loading a price table. A file the decoders cannot
        read is reported by them; the writer then keeps the rows it has."""
        from receiver.prices import PriceFileError, PriceTable

        try:
            return PriceTable.load(self.prices_file).records()
        except PriceFileError:
            return None


def batch_socket_address() -> tuple[str, str | None]:
    """Where the writer listens for the decoders' batches, and the directory to remove at the end.
    On Linux an abstract socket: it has no file, so no temp-directory cleaner can delete it from
    under a serve that runs for weeks (the decoders connect anew after a restart). Elsewhere a
    socket in a private directory; its path must fit in 107 bytes, which a long $TMPDIR (macOS's
    is ~50 characters) can break: then /tmp."""
    if sys.platform.startswith("linux"):
        return "\0llmobs-writer-" + secrets.token_hex(8), None
    directory = tempfile.mkdtemp(prefix="llmobs-")
    if len(directory) > 80 and os.path.isdir("/tmp"):
        os.rmdir(directory)
        directory = tempfile.mkdtemp(prefix="llmobs-", dir="/tmp")
    return os.path.join(directory, "writer.sock"), directory


@dataclass(slots=True)
class PipelineStats:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    invalid_requests: int = 0
    overloaded: int = 0
    failed: int = 0
    inflight_requests: int = 0
    inflight_bytes: int = 0
    writer: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[ExportOutcome]
    size: int
    decoder: int
    signal: str
    committed: int = 0  # items of a sliced request committed so far (acks of its non-final slices)


class _Child:
    """A child process with a pipe each way, a sender thread and a reader thread."""

    def __init__(self, name: str, target: Callable[..., None], options: dict[str, Any],
                 on_message: Callable[[bytes], None], on_exit: Callable[[], None]) -> None:
        self.process = ChildProcess(name, target, options)
        self.to_child = self.process.to_child
        self.from_child = self.process.from_child
        self.name = name
        self.inflight_bytes = 0
        self.feed = ChildFeed()
        self._on_message = on_message
        self._on_exit = on_exit
        self._sender = threading.Thread(target=self._send_loop, name=f"{name}-send", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-read", daemon=True)
        self._sender.start()
        self._reader.start()
        self.alive = True

    def send(self, frame: Item) -> None:
        """Queue a frame, or frames to send back to back, for the child (never blocks). Raises
        FeedClosed when the child is gone."""
        self.feed.put(frame)

    def _send_loop(self) -> None:
        # Sends can block while the child is busy; they must never block the event loop.
        while True:
            frame = self.feed.get()
            if frame is None:
                try:
                    self.to_child.close()
                except OSError:
                    pass
                return
            try:
                if isinstance(frame, tuple):
                    for part in frame:
                        self.to_child.send_bytes(part)
                else:
                    self.to_child.send_bytes(frame)
            except (BrokenPipeError, OSError):
                self.feed.close()
                return

    def _read_loop(self) -> None:
        while True:
            try:
                data = self.from_child.recv_bytes()
            except (EOFError, OSError):
                break
            self._on_message(data)
        self.alive = False
        self.feed.close()
        self._on_exit()

    def close_input(self) -> None:
        try:
            self.feed.put(None)
        except FeedClosed:
            pass

    def join(self, timeout: float) -> None:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1)
        # Its last messages (the writer's final counters, sent as it stops) are handed to the event
        # loop by the reader thread: once that thread has seen EOF they are queued ahead of whatever
        # the caller does next. Without this, `serve`'s last line could read the counters from
        # before them ("0 spans committed" after a run shorter than one stats period).
        self._reader.join(timeout=5)


class IngestPipeline:
    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.stats = PipelineStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._decoders: list[_Child | None] = []
        self._writer: _Child | None = None
        self._writer_ready: asyncio.Future[dict[str, Any]] | None = None
        self._closing = False
        self._fatal: str | None = None
        self._stats_listeners: list[Callable[[PipelineStats], None]] = []
        self._writer_ever_ready = False  # a writer that dies before its first "ready" could not open the store
        self._writer_last: dict[str, Any] = {}
        self._writer_carried: dict[str, int] = {}
        self._socket_dir: str | None = None
        # Monotonic times of recent restarts, per child: one crash-looping decoder must not use up
        # the writer's budget (or the other way round).
        self._restarts: dict[str, list[float]] = {}
        # Set when the pipeline has given up (a child keeps dying): `serve` exits non-zero on it so
        # that a supervisor restarts the whole process instead of it answering UNAVAILABLE forever.
        self.failed = asyncio.Event()
        # The SLO scopes burning now, as last told to the decoders (content tiers' on_burn).
        self.burning: frozenset[tuple[str | None, str | None]] = frozenset()
        self._burn_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        tune_malloc()  # before the children are spawned: they inherit it
        address, self._socket_dir = batch_socket_address()
        self.config.batch_socket = {"batch_address": address, "batch_authkey": os.urandom(32)}
        n = self.config.decoders or max(1, os.cpu_count() or 1)
        self._writer_ready = self._loop.create_future()
        self._start_writer()
        try:
            await asyncio.wait_for(asyncio.shield(self._writer_ready), timeout=60)
        except TimeoutError as exc:
            await self.aclose()
            raise PipelineFailed("the writer process did not start within 60 s") from exc
        except PipelineFailed:
            await self.aclose()
            raise
        for i in range(n):
            self._decoders.append(self._start_decoder(i))
        content = self.config.content
        if (self.config.burn_source is not None and content is not None and content.mode == "tiered"
                and content.on_burn):
            self._burn_task = self._loop.create_task(self._watch_burn(self.config.burn_source), name="burning SLOs")

    def _start_writer(self) -> None:
        from store import writer_process

        self._writer = _Child("llmobs-writer", writer_process.run, self.config.writer_options(),
                              self._threadsafe(self._on_writer_message), self._threadsafe(self._on_writer_exit))

    def _start_decoder(self, index: int) -> _Child:
        from receiver import decoder_process

        child = _Child(f"llmobs-decoder-{index}", decoder_process.run, self.config.decoder_options(),
                       self._threadsafe(self._on_decoder_reply),
                       self._threadsafe(functools.partial(self._on_decoder_exit, index)))
        if self.burning:  # a restarted decoder learns what its predecessor was told
            child.send(content_tiers.encode_burning(self.burning))
        return child

    def set_burning(self, scopes: frozenset[tuple[str | None, str | None]]) -> None:
        """Tell every decoder which (feature, model) scopes are burning: their content is kept whole."""
        if scopes == self.burning:
            return
        self.burning = scopes
        frame = content_tiers.encode_burning(scopes)
        for decoder in self._decoders:
            if decoder is not None and decoder.alive:
                try:
                    decoder.send(frame)
                except FeedClosed:
                    pass

    async def _watch_burn(self, source: Callable[[], frozenset[tuple[str | None, str | None]]]) -> None:
        """Ask `source` (in a thread: it reads the store) every burn_interval_s; a failure is logged once
        and the last answer stands."""
        failing = None
        while not self._closing:
            try:
                scopes = await asyncio.to_thread(source)
            except Exception as exc:  # a locked or young store must not stop ingest
                if repr(exc) != failing:
                    log.warning("could not evaluate the SLOs for content tiers: %r", exc)
                failing = repr(exc)
            else:
                failing = None
                if scopes != self.burning:
                    log.info("content kept whole for burning SLO scopes: %s", sorted(scopes, key=str) or "none")
                self.set_burning(scopes)
            await asyncio.sleep(self.config.burn_interval_s)

    def _threadsafe(self, fn: Callable[..., None]) -> Callable[..., None]:
        loop = self._loop
        assert loop is not None

        def call(*args: Any) -> None:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:
                pass  # the loop is closed: we are shutting down

        return call

    async def aclose(self, timeout: float = 30.0) -> None:
        """Stop: wait for in-flight requests to be committed, then let the children drain and exit."""
        self._closing = True
        if self._burn_task is not None:
            self._burn_task.cancel()
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for decoder in self._decoders:
            if decoder is not None:
                decoder.close_input()
        if self._writer is not None:
            try:
                self._writer.send(protocol.TAG_STOP)
            except FeedClosed:
                pass  # the writer is already gone
            self._writer.close_input()
        remaining = max(1.0, deadline - time.monotonic())
        await asyncio.to_thread(self._join_all, remaining)
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(Unavailable("llmobs-tui is shutting down"))
        self._pending.clear()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _join_all(self, timeout: float) -> None:
        for decoder in self._decoders:
            if decoder is not None:
                decoder.join(timeout)
        if self._writer is not None:
            self._writer.join(timeout)

    @property
    def fatal_error(self) -> str | None:
        return self._fatal

    def add_stats_listener(self, listener: Callable[[PipelineStats], None]) -> None:
        self._stats_listeners.append(listener)

    # -- requests ------------------------------------------------------------------------------

    async def submit(self, signal: str, body: bytes, *, json_body: bool = False,
                     gzipped: bool = False) -> ExportOutcome:
        """Store one export request; returns once its spans are committed."""
        if self._fatal is not None:
            raise Unavailable(self._fatal)
        if self._closing:
            raise Unavailable("llmobs-tui is shutting down")
        self.stats.requests += 1
        size = len(body)
        if (self.stats.inflight_bytes + size > self.config.max_inflight_bytes and self._pending) or \
                len(self._pending) >= self.config.max_inflight_requests:
            self.stats.overloaded += 1
            raise Overloaded(
                f"ingest queue full ({len(self._pending)} requests, {self.stats.inflight_bytes >> 20} MiB in flight)",
                retry_after_s=1.0,
            )
        index = self._pick_decoder()
        if index is None:
            raise Unavailable("no decoder process is running")
        assert self._loop is not None
        req_id = next(self._ids)
        future: asyncio.Future[ExportOutcome] = self._loop.create_future()
        self._pending[req_id] = _Pending(future, size, index, signal)
        self.stats.inflight_bytes += size
        self.stats.inflight_requests = len(self._pending)
        decoder = self._decoders[index]
        assert decoder is not None
        decoder.inflight_bytes += size
        try:
            decoder.send(protocol.encode_request(req_id, signal, json_body=json_body, gzipped=gzipped,
                                                 received_ns=time.time_ns(), body=body))
        except FeedClosed:
            self._resolve(req_id, error=Unavailable("a decoder process exited"))
        try:
            return await future
        finally:
            done = self._pending.pop(req_id, None)
            if done is not None:
                self._release(done)

    def _release(self, pending: _Pending) -> None:
        self.stats.inflight_bytes -= pending.size
        self.stats.inflight_requests = len(self._pending)
        decoder = self._decoders[pending.decoder] if pending.decoder < len(self._decoders) else None
        if decoder is not None:
            decoder.inflight_bytes -= pending.size

    def _pick_decoder(self) -> int | None:
        best = None
        for i, decoder in enumerate(self._decoders):
            if decoder is not None and decoder.alive and (best is None or decoder.inflight_bytes < best[1]):
                best = (i, decoder.inflight_bytes)
        return None if best is None else best[0]

    def _resolve(self, req_id: int, outcome: ExportOutcome | None = None, error: BaseException | None = None) -> None:
        pending = self._pending.get(req_id)
        if pending is None or pending.future.done():
            return
        if error is not None:
            pending.future.set_exception(error)
        else:
            assert outcome is not None
            self.stats.accepted += outcome.accepted
            self.stats.rejected += outcome.rejected
            pending.future.set_result(outcome)

    # -- messages from children ----------------------------------------------------------------

    def _on_decoder_reply(self, data: bytes) -> None:
        """What a decoder tells this process (its batches go to the writer): a request it refused,
        one with nothing to store, or one whose batch no writer took."""
        tag = data[:1]
        payload = pickle.loads(memoryview(data)[1:])
        if tag == protocol.TAG_INVALID:
            req_id, message = payload
            self.stats.invalid_requests += 1
            self._resolve(req_id, error=InvalidRequest(message))
        elif tag == protocol.TAG_UNDELIVERED:
            req_id, message = payload
            self._resolve(req_id, error=Unavailable(message))
        elif tag == protocol.TAG_DONE:
            req_id, accepted, rejected, message = payload
            self._resolve(req_id, ExportOutcome(accepted, rejected, message))

    def _on_writer_message(self, data: bytes) -> None:
        kind, *rest = pickle.loads(data)
        if kind == "ack":
            for req_id, accepted, rejected, message, final in rest[0]:
                if final:
                    pending = self._pending.get(req_id)
                    earlier = pending.committed if pending is not None else 0
                    self._resolve(req_id, ExportOutcome(accepted + earlier, rejected, message))
                else:
                    pending = self._pending.get(req_id)
                    if pending is not None:
                        pending.committed += accepted
        elif kind == "nack":
            req_ids, message = rest
            self.stats.failed += len(req_ids)
            for req_id in req_ids:
                self._resolve(req_id, error=Unavailable(message))
        elif kind == "stats":
            # Counters restart with each writer process; carry the earlier ones' so that serve's
            # totals (committed, duplicates, evicted) stay right across a writer crash.
            current = rest[0]
            self._writer_last = current
            self.stats.writer = {**current, **{k: current.get(k, 0) + v for k, v in self._writer_carried.items()}}
            for listener in self._stats_listeners:
                listener(self.stats)
        elif kind == "ready":
            self._writer_ever_ready = True
            if self._writer_ready is not None and not self._writer_ready.done():
                self._writer_ready.set_result(rest[0])
        elif kind == "fatal":
            self._give_up(rest[0])

    def _may_restart(self, child: str) -> bool:
        """At most 5 restarts a minute for each child: one that keeps dying must not spin."""
        now = time.monotonic()
        recent = [t for t in self._restarts.get(child, ()) if now - t < 60] + [now]
        self._restarts[child] = recent
        return len(recent) <= 5

    def _give_up(self, reason: str) -> None:
        self._fatal = reason
        if self._writer_ready is not None and not self._writer_ready.done():
            # start() raises it, and its caller prints it: logging it too said it twice.
            self._writer_ready.set_exception(PipelineFailed(reason))
        else:
            log.error(reason)
        self.failed.set()

    def _on_writer_exit(self) -> None:
        # Whatever was handed to the writer and not acknowledged is lost to this process: fail it
        # (the exporter retries; duplicates are ignored by span id).
        for req_id in list(self._pending):
            self._resolve(req_id, error=Unavailable("the writer process exited"))
        if self._closing or self._fatal is not None:
            return
        writer = self._writer
        if writer is not None:
            writer.process.join(0.5)  # reap it, for its exit code (it is gone: its pipe closed)
        code = writer.process.exitcode if writer is not None else None
        for key in _CARRIED_COUNTERS:
            self._writer_carried[key] = self._writer_carried.get(key, 0) + self._writer_last.get(key, 0)
        self._writer_last = {}
        if not self._writer_ever_ready:
            self._give_up(f"the writer process failed to start (exit code {code})")
            return
        if not self._may_restart("writer"):
            self._give_up(f"the writer process keeps exiting (last exit code {code}); giving up")
            return
        log.error("the writer process exited unexpectedly (exit code %s); restarting it", code)
        self.stats.restarts += 1
        self._start_writer()

    def _on_decoder_exit(self, index: int) -> None:
        for req_id, pending in list(self._pending.items()):
            if pending.decoder == index:
                self._resolve(req_id, error=Unavailable("a decoder process exited"))
        if self._closing:
            return
        if not self._may_restart(f"decoder-{index}"):
            log.error("decoder %d keeps exiting; not restarting it", index)
            self._decoders[index] = None
            if not any(d is not None and d.alive for d in self._decoders):
                self._give_up("every decoder process keeps exiting; giving up")
            return
        log.error("decoder %d exited unexpectedly; restarting it", index)
        self.stats.restarts += 1
        self._decoders[index] = self._start_decoder(index)
