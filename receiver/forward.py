"""`--forward ENDPOINT`: every batch stored here is also sent upstream (the user's Collector,
Jaeger, Tempo), so llmobs-tui can sit inline in front of them.

The upstream must never slow or endanger local ingest: batches go into a bounded queue (by bytes)
that senders drain in the background. A slow or dead upstream fills the queue; past its bound new
batches are dropped and counted, never waited for. Retryable failures (connection refused, 429,
502/503/504, gRPC UNAVAILABLE / RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED) are retried with
exponential backoff; a permanent refusal (400, INVALID_ARGUMENT) is counted and the batch dropped.

Bodies go upstream as they came (same bytes, same Content-Type and Content-Encoding) when the
protocols match. A gRPC upstream needs protobuf, so an OTLP/JSON or gzip body received over HTTP is
converted first, once, in the sender task.

Endpoints: `http://host:4318` or `https://…` (OTLP/HTTP; `/v1/traces` etc. are appended), and
`grpc://host:4317` or a bare `host:4317` (OTLP/gRPC, plaintext).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from dataclasses import dataclass

import aiohttp
import grpc

from receiver import otlp
from receiver.grpc_server import SERVICES

log = logging.getLogger("llmobs.forward")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
RETRYABLE_HTTP = {408, 429, 502, 503, 504}
RETRYABLE_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED,
                  grpc.StatusCode.ABORTED}


class ForwardEndpointError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Endpoint:
    protocol: str  # "http" | "grpc"
    target: str  # base URL for http, host:port for grpc

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        value = text.strip()
        if value.startswith(("http://", "https://")):
            base = value.rstrip("/")
            for signal in ("traces", "logs", "metrics"):
                # A full signal URL (…/v1/traces) is a common paste: keep the base.
                if base.endswith(f"/v1/{signal}"):
                    base = base[: -len(f"/v1/{signal}")]
            return cls("http", base)
        if value.startswith("grpc://"):
            value = value[len("grpc://"):]
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ForwardEndpointError(
                f"--forward {text!r}: expected http://host:port, https://host:port or grpc://host:port")
        return cls("grpc", value)

    def describe(self) -> str:
        return f"{self.target} (OTLP/gRPC)" if self.protocol == "grpc" else f"{self.target} (OTLP/HTTP)"


@dataclass(slots=True)
class _Batch:
    signal: str
    body: bytes
    json_body: bool
    gzipped: bool
    attempts: int = 0


@dataclass(slots=True)
class ForwardStats:
    forwarded: int = 0  # batches the upstream accepted
    failed: int = 0  # refused permanently by the upstream (not retryable)
    dropped: int = 0  # not sent: the queue was full, or still queued at shutdown
    retries: int = 0
    queued: int = 0
    queued_bytes: int = 0
    last_error: str | None = None


class Forwarder:
    def __init__(self, endpoint: str, *, max_queue_bytes: int = 64 << 20, senders: int = 2,
                 timeout_s: float = 10.0, max_backoff_s: float = 30.0) -> None:
        self.endpoint = Endpoint.parse(endpoint)
        self.max_queue_bytes = max_queue_bytes
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.stats = ForwardStats()
        self._queue: collections.deque[_Batch] = collections.deque()
        self._ready = asyncio.Event()
        self._senders = senders
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._channel: grpc.aio.Channel | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.endpoint.protocol == "http":
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                                  auto_decompress=False)
        else:
            self._channel = grpc.aio.insecure_channel(self.endpoint.target, options=[
                ("grpc.max_send_message_length", 64 << 20)])
        self._tasks = [asyncio.create_task(self._sender(), name=f"forward-{i}") for i in range(self._senders)]

    async def aclose(self, flush_s: float = 5.0) -> None:
        """Give what is queued `flush_s` to go out, then stop; what is left is counted as dropped."""
        deadline = time.monotonic() + flush_s
        while self._queue and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._closing = True
        self._ready.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.stats.dropped += len(self._queue)
        self._queue.clear()
        self.stats.queued, self.stats.queued_bytes = 0, 0
        if self._session is not None:
            await self._session.close()
        if self._channel is not None:
            await self._channel.close()

    # -- the ingest side: never waits ----------------------------------------------------------------

    def offer(self, signal: str, body: bytes, *, json_body: bool = False, gzipped: bool = False) -> bool:
        """Queue a batch for the upstream; False (and counted) when the queue is full."""
        if self._closing or self.stats.queued_bytes + len(body) > self.max_queue_bytes:
            self.stats.dropped += 1
            return False
        self._push(_Batch(signal, body, json_body, gzipped))
        self._ready.set()
        return True

    # The byte count is kept as batches come and go: offer() runs on every export request.
    def _push(self, batch: _Batch, front: bool = False) -> None:
        (self._queue.appendleft if front else self._queue.append)(batch)
        self.stats.queued = len(self._queue)
        self.stats.queued_bytes += len(batch.body)

    def _pop(self) -> _Batch:
        batch = self._queue.popleft()
        self.stats.queued = len(self._queue)
        self.stats.queued_bytes -= len(batch.body)
        return batch

    # -- the upstream side -------------------------------------------------------------------------

    async def _sender(self) -> None:
        while not self._closing:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            batch = self._pop()
            try:
                outcome = await self._send(batch)
            except asyncio.CancelledError:
                self._push(batch, front=True)  # counted as dropped by aclose()
                raise
            if outcome == "ok":
                self.stats.forwarded += 1
            elif outcome == "failed":
                self.stats.failed += 1
            else:  # retry: back at the head, after a pause that grows with each attempt
                batch.attempts += 1
                self.stats.retries += 1
                self._push(batch, front=True)
                pause = min(self.max_backoff_s, 0.25 * 2 ** min(batch.attempts, 8)) * random.uniform(0.8, 1.2)
                await asyncio.sleep(pause)

    async def _send(self, batch: _Batch) -> str:
        """'ok', 'failed' (permanent) or 'retry'."""
        try:
            if self.endpoint.protocol == "http":
                return await self._send_http(batch)
            return await self._send_grpc(batch)
        except otlp.OtlpDecodeError as exc:
            self.stats.last_error = f"cannot convert a batch for gRPC: {exc}"
            return "failed"

    async def _send_http(self, batch: _Batch) -> str:
        assert self._session is not None
        headers = {"Content-Type": JSON if batch.json_body else PROTOBUF}
        if batch.gzipped:
            headers["Content-Encoding"] = "gzip"
        url = f"{self.endpoint.target}/v1/{batch.signal}"
        try:
            async with self._session.post(url, data=batch.body, headers=headers) as response:
                await response.read()
                if response.status < 300:
                    return "ok"
                self.stats.last_error = f"{url}: HTTP {response.status}"
                return "retry" if response.status in RETRYABLE_HTTP else "failed"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.stats.last_error = f"{url}: {exc.__class__.__name__}: {exc}"
            return "retry"

    async def _send_grpc(self, batch: _Batch) -> str:
        assert self._channel is not None
        body = batch.body
        if batch.gzipped:
            body = otlp.gunzip(body)
        if batch.json_body:
            message, _ = otlp.parse_json(batch.signal, body)
            body = message.SerializeToString()
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            f"/{SERVICES[batch.signal]}/Export", request_serializer=None, response_deserializer=None)
        try:
            await call(body, timeout=self.timeout_s)
            return "ok"
        except grpc.aio.AioRpcError as exc:
            self.stats.last_error = f"{self.endpoint.target}: {exc.code().name}: {exc.details()}"
            return "retry" if exc.code() in RETRYABLE_GRPC else "failed"
