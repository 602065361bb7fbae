"""What the OTLP/gRPC and OTLP/HTTP servers share: where they listen, what they hand batches to, and
the count of requests they refused."""

from __future__ import annotations

import errno
import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

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


async def bind_site(runner: web.AppRunner, host: str, port: int, ssl_context: ssl.SSLContext | None, what: str,
                    flag: str) -> int:
    """Start an aiohttp runner's one TCP site (OTLP/HTTP, metrics) and return its bound port; a busy
    port is PortInUse with the flag that moves it, any other failure an OSError saying what failed."""
    from aiohttp import web

    from receiver.grpc_server import PortInUse, port_in_use_message

    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=False, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(port_in_use_message(what, host, port, flag)) from None
        raise OSError(f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}") from exc
    addresses = runner.addresses  # the one site's bound (host, port, ...)
    return addresses[0][1] if addresses else port
