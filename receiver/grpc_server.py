"""OTLP/gRPC receiver: TraceService, LogsService and MetricsService on one grpc.aio server.

Requests are taken as raw bytes (no deserializer): the decoder processes parse them, so the process
that owns the socket spends ~10 µs per span instead of ~50. Answers follow the OTLP spec: partial
success with a rejected count; INVALID_ARGUMENT for a malformed body (not retryable);
RESOURCE_EXHAUSTED with RetryInfo when full and UNAVAILABLE when the store cannot take it now
(both retryable).
"""

from __future__ import annotations

import errno
import logging
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from receiver.auth import TokenCheck
from receiver.listener import OtlpListener
from receiver.pipeline import IngestPipeline, InvalidRequest, Overloaded, Unavailable
from receiver.tls import TlsFiles

log = logging.getLogger("llmobs.grpc")

SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
}
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20  # gRPC's default 4 MB caps a batch near 780 LLM spans


def success_response(signal: str, rejected: int, message: str) -> bytes:
    if signal == "traces":
        response: Any = ExportTraceServiceResponse()
        if rejected:
            response.partial_success.rejected_spans = rejected
    elif signal == "logs":
        response = ExportLogsServiceResponse()
        if rejected:
            response.partial_success.rejected_log_records = rejected
    else:
        response = ExportMetricsServiceResponse()
        if rejected:
            response.partial_success.rejected_data_points = rejected
    if rejected or message:
        response.partial_success.error_message = message
    return response.SerializeToString()


def retry_info(retry_after_s: float) -> error_details_pb2.RetryInfo:
    return error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
        seconds=int(retry_after_s), nanos=int((retry_after_s % 1) * 1e9)))


def retry_status(code: int, message: str, retry_after_s: float) -> bytes:
    """A google.rpc.Status carrying RetryInfo: OTLP clients retry RESOURCE_EXHAUSTED only with it."""
    status = status_pb2.Status(code=code, message=message)
    status.details.add().Pack(retry_info(retry_after_s))
    return status.SerializeToString()


class PortInUse(OSError):
    """A listening port another process holds; the message names the flag that changes it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.EADDRINUSE


def port_in_use_message(what: str, host: str, port: int, flag: str | None) -> str:
    hint = (f": pass {flag} with another port, or {flag} 0 to pick a free one" if flag
            else ": choose another port")
    return f"cannot listen for {what} on {format_address(host, port)}: the port is in use (another collector?){hint}"


def check_port_free(host: str, port: int, what: str, flag: str | None = None) -> None:
    """Raise PortInUse if `host:port` is taken, before grpc tries: grpc's C core would print its own
    `add_port.cc` line to the terminal and then fail with a message that names no flag."""
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return  # grpc reports an unresolvable host itself
    for family, kind, proto, _name, address in infos[:1]:
        probe = socket.socket(family, kind, proto)
        try:
            # As grpc binds: SO_REUSEADDR (a port in TIME_WAIT is free), no SO_REUSEPORT.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(port_in_use_message(what, host, port, flag)) from None
        finally:
            probe.close()


def bind_port(server: grpc.aio.Server, host: str, port: int, tls: TlsFiles | None, what: str,
              flag: str | None = None) -> int:
    """Add a (TLS when configured) listening port; a busy or unusable address is a clear OSError."""
    check_port_free(host, port, what, flag)
    address = format_address(host, port)
    try:
        if tls is not None:
            bound = server.add_secure_port(address, grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)]))
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen for {what} on {address}: {exc}") from exc
    if bound == 0:
        raise OSError(f"cannot listen for {what} on {address}: address in use or not available")
    return bound


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a call without the token (UNAUTHENTICATED, counted) from its metadata alone.

    grpc.aio reads a unary request message in full before it calls the method's handler; interceptors
    run before that, on the call's headers. A refused call gets a request-streaming handler that
    aborts without ever asking for a message, so its body is not assembled in this process, nor
    handed to the decoders. What grpc still does below Python: the HTTP/2 transport accepts DATA
    frames up to the stream's flow-control window until the client sees the status and stops, and
    discards them.
    """

    def __init__(self, auth: TokenCheck) -> None:
        self.auth = auth

    async def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        if not self.auth.enabled:
            return await continuation(handler_call_details)
        authorization = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                authorization = value if isinstance(value, str) else None
        if self.auth.allows(authorization):
            return await continuation(handler_call_details)
        return refusal(TokenCheck.reason(authorization))


def refusal(reason: str) -> grpc.RpcMethodHandler:
    async def refuse(_requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    # Request streaming: grpc hands over a lazy iterator instead of reading the message first.
    return grpc.stream_stream_rpc_method_handler(refuse)


def token_interceptors(auth: TokenCheck | None) -> tuple[grpc.aio.ServerInterceptor, ...]:
    return (TokenInterceptor(auth),) if auth is not None and auth.enabled else ()


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class OtlpGrpcServer(OtlpListener):
    def __init__(self, pipeline: IngestPipeline, host: str = "127.0.0.1", port: int = 4317,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, forward: Any = None,
                 auth: TokenCheck | None = None, tls: TlsFiles | None = None) -> None:
        super().__init__(pipeline, host, port, forward, auth, tls)
        self.max_message_bytes = max_message_bytes
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        server = grpc.aio.server(interceptors=token_interceptors(self.auth), options=[
            # A busy port must fail loudly instead of being silently shared with another process.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", 4 << 20),
        ])
        handlers = []
        for signal, service in SERVICES.items():
            handlers.append(grpc.method_handlers_generic_handler(service, {
                "Export": grpc.unary_unary_rpc_method_handler(self._handler(signal)),
            }))
        server.add_generic_rpc_handlers(tuple(handlers))
        port = bind_port(server, self.host, self.requested_port, self.tls, "OTLP/gRPC", flag="--grpc-port")
        await server.start()
        self._server = server
        self.port = port
        return port

    def _handler(self, signal: str) -> Any:
        async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            # The token was checked before the request was read (TokenInterceptor).
            try:
                outcome = await self.pipeline.submit(signal, request)
            except InvalidRequest as exc:
                self.rejected_requests += 1
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except Overloaded as exc:
                # Go clients (the Collector) read RetryInfo from the status details; the Python SDK
                # reads it from its own trailer. Send both.
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    str(exc),
                    trailing_metadata=(
                        ("grpc-status-details-bin",
                         retry_status(code_pb2.RESOURCE_EXHAUSTED, str(exc), exc.retry_after_s)),
                        ("google.rpc.retryinfo-bin", retry_info(exc.retry_after_s).SerializeToString()),
                    ),
                )
            except Unavailable as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            if self.forward is not None:
                # Only batches stored here: one refused with a retryable error comes back, and is
                # forwarded then, once.
                self.forward.offer(signal, request)
            return success_response(signal, outcome.rejected, outcome.message)

        return export

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting; requests already in flight get `grace` seconds to be committed."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
