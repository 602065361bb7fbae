"""`serve --query-port N`: a backfill-then-follow stream of what the store holds, for `attach`.

One gRPC method, `/llmobs.v1.Query/Tail` (server streaming, raw bytes: no generated code to keep
in step). The request is JSON `{"after_span": id, "after_log": id, "since_ns": t}`; each response
frame is a 4-byte big-endian header length, a JSON header `{"kind": "traces" | "logs" |
"caught_up" | "idle", "cursor": [span id, log id]}` and, for data frames, a serialized OTLP export request.
Row ids grow in commit order, so a client that resumes from the cursor of the last frame it
committed gets every span once. The same token and TLS as the OTLP ports guard it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from typing import Any

import grpc

from receiver.auth import TokenCheck
from receiver.grpc_server import bind_port, token_interceptors
from receiver.tls import TlsFiles

log = logging.getLogger("llmobs.query")

TAIL_METHOD = "/llmobs.v1.Query/Tail"
POLL_S = 0.25
HEARTBEAT_S = 2.0


def encode_frame(kind: str, cursor: tuple[int, int], payload: bytes = b"") -> bytes:
    header = json.dumps({"kind": kind, "cursor": list(cursor)}).encode()
    return struct.pack(">I", len(header)) + header + payload


def decode_frame(frame: bytes) -> tuple[str, tuple[int, int], bytes]:
    (size,) = struct.unpack(">I", frame[:4])
    header = json.loads(frame[4:4 + size])
    return header["kind"], (int(header["cursor"][0]), int(header["cursor"][1])), frame[4 + size:]


class QueryServer:
    def __init__(self, db_path: str, host: str = "127.0.0.1", port: int = 0, *, auth: TokenCheck | None = None,
                 tls: TlsFiles | None = None, poll_s: float = POLL_S) -> None:
        self.db_path = db_path
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.auth = auth
        self.tls = tls
        self.poll_s = poll_s
        self.streams = 0  # open tails now
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        server = grpc.aio.server(interceptors=token_interceptors(self.auth),
                                 options=[("grpc.so_reuseport", 0), ("grpc.max_send_message_length", 64 << 20)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("llmobs.v1.Query", {
            "Tail": grpc.unary_stream_rpc_method_handler(self._tail)}),))
        port = bind_port(server, self.host, self.requested_port, self.tls, "queries", flag="--query-port")
        await server.start()
        self._server, self.port = server, port
        return port

    async def stop(self, grace: float = 2.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def _tail(self, request: bytes, context: grpc.aio.ServicerContext) -> Any:
        # The token was checked from the call's metadata, before this (TokenInterceptor).
        try:
            ask = json.loads(request or b"{}")
            cursor = (int(ask.get("after_span", 0)), int(ask.get("after_log", 0)))
            since_ns = int(ask.get("since_ns", 0))
        except (ValueError, TypeError, AttributeError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad tail request: {exc}")
        from store.connection import StoreError, open_reader
        from store.queries import tail_snapshot

        try:
            db = await asyncio.to_thread(open_reader, self.db_path)
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        self.streams += 1
        caught_up = False
        last_frame = 0.0
        try:
            while True:
                traces, logs, span_cursor, log_cursor = await asyncio.to_thread(
                    tail_snapshot, db, cursor[0], cursor[1], since_ns)
                # Spans first, then logs, each frame carrying the cursor to resume after it.
                if traces is not None:
                    cursor = (span_cursor, cursor[1])
                    yield encode_frame("traces", cursor, traces.SerializeToString())
                if logs is not None:
                    cursor = (cursor[0], log_cursor)
                    yield encode_frame("logs", cursor, logs.SerializeToString())
                if traces is None and logs is None:
                    now = asyncio.get_running_loop().time()
                    if not caught_up:
                        caught_up = True
                        yield encode_frame("caught_up", cursor)
                        last_frame = now
                    elif now - last_frame >= HEARTBEAT_S:
                        # Lets the client notice a dead connection, and stop promptly when asked.
                        yield encode_frame("idle", cursor)
                        last_frame = now
                    await asyncio.sleep(self.poll_s)
                else:
                    last_frame = asyncio.get_running_loop().time()
        finally:
            self.streams -= 1
            db.close()
