"""What the OTLP/gRPC and OTLP/HTTP servers share: where they listen, what they hand batches to, and
the count of requests they refused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from receiver.auth import TokenCheck
    from receiver.pipeline import IngestPipeline
    from receiver.tls import TlsFiles


class OtlpListener:
    def __init__(self, pipeline: IngestPipeline, host: str, port: int, forward: Any,
                 auth: TokenCheck | None, tls: TlsFiles | None) -> None:
        self.pipeline = pipeline
        self.auth = auth
        self.tls = tls
        self.forward = forward  # a receiver.forward.Forwarder, or None
        self.host = host
        self.requested_port = port
        self.port: int | None = None  # the bound port, once started (differs from requested_port for 0)
        self.rejected_requests = 0
