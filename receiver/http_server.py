"""OTLP/HTTP receiver on aiohttp: POST /v1/traces, /v1/logs, /v1/metrics.

Protobuf (`application/x-protobuf`) and JSON (`application/json`) bodies, optionally gzip. The body
is handed to the pipeline still compressed (aiohttp's auto-decompression is off), so decompression
happens in a decoder process under a size limit. Errors carry a google.rpc.Status in the request's
own encoding, as the OTLP/HTTP spec asks; overload answers 503 with Retry-After.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_urldispatcher import _default_expect_handler
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from receiver.auth import TokenCheck
from receiver.grpc_server import success_response
from receiver.listener import OtlpListener, bind_site
from receiver.pipeline import IngestPipeline, InvalidRequest, Overloaded, Unavailable
from receiver.prometheus import MetricsSource, metrics_response
from receiver.tls import TlsFiles

log = logging.getLogger("llmobs.http")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DEFAULT_MAX_BODY_BYTES = 64 << 20


def _response_json(signal: str, rejected: int, message: str) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    cls = {"traces": ExportTraceServiceResponse, "logs": ExportLogsServiceResponse,
           "metrics": ExportMetricsServiceResponse}[signal]
    msg = cls()
    msg.ParseFromString(success_response(signal, rejected, message))
    return json.dumps(json_format.MessageToDict(msg)).encode()


class ProtocolMistakes(logging.LoggerAdapter):
    """aiohttp's server logger for our HTTP port. A request aiohttp cannot parse is a client speaking
    another protocol to this port: counted as a rejected request (the status line and `serve`'s stats
    show it) and logged once, with the hint, instead of a traceback per connection."""

    def __init__(self, server: OtlpHttpServer) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self.server = server
        self.hinted: set[str] = set()

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, BaseException) and isinstance(exc, HttpProcessingError):
            self.server.rejected_requests += 1
            self.server.pipeline.stats.invalid_requests += 1
            kind, hint = self.server.mistake(exc)
            if kind not in self.hinted:
                self.hinted.add(kind)
                log.warning("%s (further ones are counted as rejected requests, not logged)", hint)
            return
        super().log(level, msg, *args, **kwargs)


class OtlpHttpServer(OtlpListener):
    def __init__(self, pipeline: IngestPipeline, host: str = "127.0.0.1", port: int = 4318,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, forward: Any = None,
                 auth: TokenCheck | None = None, tls: TlsFiles | None = None) -> None:
        super().__init__(pipeline, host, port, forward, auth, tls)
        self.max_body_bytes = max_body_bytes
        self._runner: web.AppRunner | None = None
        self.grpc_port: int | None = None  # named in the hint to a gRPC client on this port (Backend sets it)
        # Clients that failed the TLS handshake: a plaintext client, a scanner, one that does not trust
        # the certificate. Counted, not logged: one line per connection would drown a terminal.
        self.tls_handshakes_failed = 0
        self._metrics: MetricsSource | None = None

    async def start(self) -> int:
        app = web.Application(client_max_size=self.max_body_bytes)
        for signal in ("traces", "logs", "metrics"):
            app.router.add_post(f"/v1/{signal}", self._handler(signal), expect_handler=self._expect)
        app.router.add_get("/metrics", self._get_metrics)
        # No access log: one line per export request would drown a terminal. Requests that are not
        # HTTP/1.1 at all (a gRPC exporter's HTTP/2 preface, a TLS handshake) never reach a handler:
        # aiohttp answers 400 and logs them through `logger`, which counts them (ProtocolMistakes).
        runner = web.AppRunner(app, auto_decompress=False, access_log=None, handle_signals=False,
                               logger=ProtocolMistakes(self))
        ssl_context = self.tls.server_context(self._handshake_failed) if self.tls is not None else None
        self.port = await bind_site(runner, self.host, self.requested_port, ssl_context, "OTLP/HTTP", "--http-port")
        self._runner = runner
        return self.port

    def mistake(self, exc: HttpProcessingError) -> tuple[str, str]:
        """What a request aiohttp could not parse probably was, and what to do about it."""
        where = f"{self.host}:{self.port or self.requested_port}"
        text = str(exc.message or exc)
        if "PRI" in text or "HTTP/2" in text:
            use = f"port {self.grpc_port}" if self.grpc_port else "the OTLP/gRPC port (--grpc-port)"
            return "grpc", (f"a gRPC (HTTP/2) client connected to {where}: this is the OTLP/HTTP port; "
                            f"gRPC exporters use {use}")
        if "HTTPS" in text or "\\x16\\x03" in text:
            return "tls", (f"a TLS client connected to {where}, which is plaintext: use http://, not https:// "
                           f"(or start with --tls-cert/--tls-key)")
        return "bad", f"a request to {where} is not HTTP/1.1 and was refused (400: {text.splitlines()[0][:80]})"

    def _handshake_failed(self, _exc: Exception) -> None:
        self.tls_handshakes_failed += 1

    def _refusal(self, request: web.Request) -> web.Response | None:
        """401 unless the request carries the token; looks at the headers only, never the body."""
        if self.auth is None or not self.auth.enabled:
            return None
        authorization = request.headers.get("Authorization")
        if self.auth.allows(authorization):
            return None
        content_type = PROTOBUF if request.content_type == PROTOBUF else JSON
        return self._error(401, code_pb2.UNAUTHENTICATED, TokenCheck.reason(authorization), content_type)

    async def _expect(self, request: web.Request) -> web.Response | None:
        """`Expect: 100-continue` (curl, for bodies over 1 MB): a sender without the token gets its 401
        instead of the go-ahead, and so never sends the body; the connection is not kept alive."""
        refused = self._refusal(request)
        if refused is not None:
            refused.force_close()
            return refused
        await _default_expect_handler(request)  # sends "100 Continue"
        return None

    @property
    def metrics(self) -> MetricsSource:
        """GET /metrics: the store's totals for Prometheus, behind the same token as /v1/*."""
        if self._metrics is None:
            self._metrics = MetricsSource(self.pipeline.config.db_path)
        return self._metrics

    async def _get_metrics(self, request: web.Request) -> web.Response:
        refused = self._refusal(request)
        return refused if refused is not None else await metrics_response(self.metrics)

    def _handler(self, signal: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def export(request: web.Request) -> web.Response:
            content_type = request.content_type
            # Before the body is read: a sender without the token gets its 401 at once. (aiohttp then
            # reads and drops what the client still sends, for up to 10 s, so that the client sees
            # the 401 rather than a reset connection; none of it is kept.)
            refused = self._refusal(request)
            if refused is not None:
                return refused
            if content_type not in (PROTOBUF, JSON):
                self.rejected_requests += 1
                return self._error(415, code_pb2.INVALID_ARGUMENT,
                                   f"unsupported Content-Type {content_type!r}: use {PROTOBUF} or {JSON}", JSON)
            encoding = request.headers.get("Content-Encoding", "identity").lower()
            if encoding not in ("gzip", "identity", ""):
                self.rejected_requests += 1
                return self._error(415, code_pb2.INVALID_ARGUMENT,
                                   f"unsupported Content-Encoding {encoding!r}: use gzip or none", content_type)
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                self.rejected_requests += 1
                return self._error(413, code_pb2.INVALID_ARGUMENT,
                                   f"body larger than {self.max_body_bytes >> 20} MiB", content_type)
            try:
                outcome = await self.pipeline.submit(signal, body, json_body=content_type == JSON,
                                                     gzipped=encoding == "gzip")
            except InvalidRequest as exc:
                self.rejected_requests += 1
                return self._error(400, code_pb2.INVALID_ARGUMENT, str(exc), content_type)
            except Overloaded as exc:
                return self._error(503, code_pb2.RESOURCE_EXHAUSTED, str(exc), content_type,
                                   retry_after=max(1, round(exc.retry_after_s)))
            except Unavailable as exc:
                return self._error(503, code_pb2.UNAVAILABLE, str(exc), content_type, retry_after=1)
            if self.forward is not None:
                self.forward.offer(signal, body, json_body=content_type == JSON, gzipped=encoding == "gzip")
            if content_type == JSON:
                return web.Response(body=_response_json(signal, outcome.rejected, outcome.message),
                                    content_type=JSON)
            return web.Response(body=success_response(signal, outcome.rejected, outcome.message),
                                content_type=PROTOBUF)

        return export

    @staticmethod
    def _error(http_status: int, code: int, message: str, content_type: str,
               retry_after: int | None = None) -> web.Response:
        status = status_pb2.Status(code=code, message=message)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if http_status == 401:
            headers["WWW-Authenticate"] = "Bearer"  # RFC 7235: a 401 names the scheme it wants
        if content_type == PROTOBUF:
            return web.Response(status=http_status, body=status.SerializeToString(), content_type=PROTOBUF,
                                headers=headers)
        return web.Response(status=http_status, body=json.dumps(json_format.MessageToDict(status)).encode(),
                            content_type=JSON, headers=headers)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
