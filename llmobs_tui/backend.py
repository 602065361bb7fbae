"""Receiver + store as one object with start()/aclose(): what `serve` runs, and what the TUI embeds.

Imports no Textual. The TUI awaits `start()` before mounting and `aclose()` after unmounting, never
from inside a Textual worker: Textual cancels workers before unmount, which would cut the drain
short and lose acknowledged spans (style §0.6).

Shutdown order matters for durability: stop the servers first (no new requests; those in flight
get their grace period to be committed and answered), then drain the pipeline, then the writer
commits and closes the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from receiver.auth import TokenCheck
from receiver.forward import Forwarder
from receiver.grpc_server import OtlpGrpcServer, format_address
from receiver.http_server import OtlpHttpServer
from receiver.pipeline import IngestPipeline, PipelineConfig
from receiver.query_server import QueryServer
from receiver.tls import TlsFiles

log = logging.getLogger("llmobs.backend")


@dataclass(slots=True)
class BackendConfig:
    """What to listen on and how. The values are taken as checked: `llmobs_tui.settings.Settings`
    refuses an unguarded non-loopback bind and loads the TLS pair before it builds one of these."""

    pipeline: PipelineConfig
    host: str = "127.0.0.1"
    grpc_port: int | None = 4317  # None: no gRPC listener
    http_port: int | None = 4318  # None: no HTTP listener
    forward: str | None = None  # an upstream OTLP endpoint that gets a copy of every stored batch
    token: str | None = None  # required from senders (Authorization: Bearer …); needed off loopback
    tls: TlsFiles | None = None  # the loaded certificate chain and key (None: plain text)
    query_port: int | None = None  # the backfill/tail service for `attach` (None: off)


class Backend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.pipeline = IngestPipeline(config.pipeline)
        self.grpc: OtlpGrpcServer | None = None
        self.http: OtlpHttpServer | None = None
        self.query: QueryServer | None = None
        self.forward = Forwarder(config.forward) if config.forward else None
        self.auth = TokenCheck(config.token)
        self.tls = config.tls
        self.started = False

    async def start(self) -> None:
        await self.pipeline.start()
        try:
            if self.forward is not None:
                await self.forward.start()
            if self.config.grpc_port is not None:
                self.grpc = OtlpGrpcServer(self.pipeline, self.config.host, self.config.grpc_port, forward=self.forward,
                                           auth=self.auth, tls=self.tls)
                await self.grpc.start()
            if self.config.http_port is not None:
                self.http = OtlpHttpServer(self.pipeline, self.config.host, self.config.http_port,
                                           max_body_bytes=self.config.pipeline.max_body_bytes, forward=self.forward,
                                           auth=self.auth, tls=self.tls)
                self.http.grpc_port = self.grpc.port if self.grpc is not None else None
                await self.http.start()
            if self.config.query_port is not None:
                self.query = QueryServer(self.config.pipeline.db_path, self.config.host, self.config.query_port,
                                         auth=self.auth, tls=self.tls)
                await self.query.start()
        except BaseException:
            await self.aclose()
            raise
        self.started = True

    @property
    def grpc_address(self) -> str | None:
        return format_address(self.config.host, self.grpc.port) if self.grpc and self.grpc.port else None

    @property
    def http_address(self) -> str | None:
        if not (self.http and self.http.port):
            return None
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{format_address(self.config.host, self.http.port)}"

    def describe(self) -> str:
        parts = []
        if self.grpc_address:
            parts.append(f"OTLP/gRPC{' (TLS)' if self.tls is not None else ''} on {self.grpc_address}")
        if self.http_address:
            parts.append(f"OTLP/HTTP on {self.http_address}")
        if self.query is not None and self.query.port:
            parts.append(f"queries (attach) on {format_address(self.config.host, self.query.port)}")
        if self.forward is not None:
            parts.append(f"forwarding to {self.forward.endpoint.describe()}")
        return ", ".join(parts)

    async def aclose(self, grace: float = 10.0) -> None:
        if self.query is not None:
            await self.query.stop()
        if self.grpc is not None:
            await self.grpc.stop(grace)
        if self.http is not None:
            await self.http.stop()
        await self.pipeline.aclose(timeout=grace + 20.0)
        if self.forward is not None:
            await self.forward.aclose()
        self.started = False
