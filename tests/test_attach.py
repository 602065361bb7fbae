"""`serve --query-port` and `attach`: a real receiver with its query service and a real attach
process (its own cache store) over loopback. Backfill, then live; the connection cut mid-stream
and resumed exactly once; a wrong token refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from llmobs_tui.attach import AttachFeed, AttachPlan
from llmobs_tui.backend import Backend, BackendConfig
from receiver.pipeline import PipelineConfig
from receiver.query_server import QueryServer
from store.connection import StoreError, open_reader
from tests.otlp_factory import log_record, logs_request, make_span, trace_request
from tests.test_receiver import grpc_export

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
LOG_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def remote(path: Path, token: str | None = None) -> Backend:
    return Backend(BackendConfig(PipelineConfig(db_path=str(path), decoders=1, retention_s=None),
                                 grpc_port=0, http_port=None, query_port=0, token=token))


def batch(first: int, n: int) -> bytes:
    now = time.time_ns()
    spans = [make_span(t, 1, None, "chat gpt-4o-mini", {"gen_ai.operation.name": "chat",
                                                        "gen_ai.request.model": "gpt-4o-mini",
                                                        "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 5},
                       start_ns=now - 1_000_000_000)
             for t in range(first, first + n)]
    return trace_request(spans).SerializeToString()


def counts(path: Path) -> tuple[int, int, int]:
    """(span rows, distinct span ids, log rows) of a store; zeros before it exists."""
    try:
        db = open_reader(path)
    except StoreError:
        return 0, 0, 0
    try:
        rows, distinct = db.execute("SELECT count(*), count(DISTINCT trace_id || span_id) FROM spans").fetchone()
        logs = db.execute("SELECT count(*) FROM logs").fetchone()[0]
        return rows, distinct, logs
    finally:
        db.close()


async def until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def send_logs(backend: Backend, trace: int, n: int) -> None:
    import grpc

    records = [log_record(trace, 1, "gen_ai.choice", body={"index": i}, time_ns=time.time_ns()) for i in range(n)]
    async with grpc.aio.insecure_channel(backend.grpc_address) as channel:
        await channel.unary_unary(LOG_METHOD)(logs_request(records).SerializeToString(), timeout=30)


async def test_backfill_live_tail_and_an_exact_resume_after_a_cut(tmp_path):
    server = remote(tmp_path / "remote.db")
    await server.start()
    await grpc_export(server, batch(1, 50))  # history, before anyone attaches
    await send_logs(server, 1, 3)
    target = f"127.0.0.1:{server.query.port}"
    local = tmp_path / "cache.db"
    feed = AttachFeed(AttachPlan(target, str(local), window_s=3600, max_backoff_s=1.0))
    feed.start()
    try:
        await until(lambda: counts(local) == (50, 50, 3))
        await until(lambda: "live" in feed.state.read()[0])
        await grpc_export(server, batch(100, 20))  # live
        await until(lambda: counts(local)[0] == 70)
        # The port-forward dies mid-stream: the query service goes away while spans keep arriving.
        port = server.query.port
        await server.query.stop(grace=0)
        await until(lambda: "disconnected" in feed.state.read()[0], timeout=20)
        await grpc_export(server, batch(200, 30))
        await send_logs(server, 200, 2)
        server.query = QueryServer(server.config.pipeline.db_path, "127.0.0.1", port)
        await server.query.start()
        await until(lambda: counts(local) == (100, 100, 5))
        await asyncio.sleep(1.0)  # nothing more trickles in: every span exactly once
        assert counts(local) == (100, 100, 5)
        _text, spans, logs, reconnects, connected = feed.state.read()
        assert connected and reconnects >= 1 and (spans, logs) == (100, 5)
    finally:
        feed.stop()
        await server.aclose()
    # The cache store is a normal store: rollups and traces, as if ingested locally.
    db = open_reader(local)
    try:
        assert db.execute("SELECT count(*) FROM traces").fetchone()[0] == 100
        assert db.execute("SELECT sum(calls) FROM rollups WHERE res = 60 AND dims_id = 0").fetchone()[0] == 100
    finally:
        db.close()


async def test_a_wrong_token_is_refused_and_said(tmp_path):
    server = remote(tmp_path / "remote.db", token="right")
    await server.start()
    await grpc_export_with_token(server, batch(1, 5), "right")
    feed = AttachFeed(AttachPlan(f"127.0.0.1:{server.query.port}", str(tmp_path / "cache.db"), token="wrong"))
    feed.start()
    try:
        await until(lambda: "refused the token" in feed.state.read()[0])
        assert server.auth.refused >= 1
        assert counts(tmp_path / "cache.db")[0] == 0
    finally:
        feed.stop()
        await server.aclose()


async def grpc_export_with_token(backend: Backend, body: bytes, token: str) -> None:
    import grpc

    from tests.test_receiver import TRACE_METHOD

    async with grpc.aio.insecure_channel(backend.grpc_address) as channel:
        await channel.unary_unary(TRACE_METHOD)(body, metadata=(("authorization", f"Bearer {token}"),), timeout=30)


@pytest.mark.parametrize(("argv", "message"), [
    (["attach", "nohostport"], "expected HOST:PORT"),
    (["attach", "127.0.0.1:4319", "--ca", "/no/such.pem"], "--ca /no/such.pem: no such file"),
])
def test_attach_flags_are_checked_before_anything_starts(argv, message, capsys, tmp_path):
    from llmobs_tui.cli import main

    assert main([*argv, "--db", str(tmp_path / "c.db")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c.db").exists()


async def test_attach_over_tls_with_its_ca(tmp_path):
    import grpc

    from receiver.tls import TlsFiles
    from tests.test_receiver import TRACE_METHOD
    from tests.test_tls import self_signed

    cert, key = self_signed(tmp_path)
    server = Backend(BackendConfig(PipelineConfig(db_path=str(tmp_path / "remote.db"), decoders=1, retention_s=None),
                                   grpc_port=0, http_port=None, query_port=0, tls=TlsFiles.load(str(cert), str(key))))
    await server.start()
    credentials = grpc.ssl_channel_credentials(cert.read_bytes())
    async with grpc.aio.secure_channel(server.grpc_address, credentials) as channel:
        await channel.unary_unary(TRACE_METHOD)(batch(1, 10), timeout=30)
    target = f"127.0.0.1:{server.query.port}"
    trusting = AttachFeed(AttachPlan(target, str(tmp_path / "cache.db"), ca_file=str(cert)))
    plaintext = AttachFeed(AttachPlan(target, str(tmp_path / "plain.db"), max_backoff_s=1.0))
    trusting.start()
    plaintext.start()
    try:
        await until(lambda: counts(tmp_path / "cache.db") == (10, 10, 0))
        await until(lambda: plaintext.state.read()[3] >= 1)  # a plaintext client cannot get in
        assert counts(tmp_path / "plain.db")[0] == 0 and "disconnected" in plaintext.state.read()[0]
    finally:
        trusting.stop()
        plaintext.stop()
        await server.aclose()


class PortForward:
    """A TCP relay standing in for `kubectl port-forward`: it can die mid-stream and come back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, upstream_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def kill(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()  # the connection dies, as when the forward's pod goes away
        self._writers.clear()
        await self._server.wait_closed()


async def test_a_real_serve_through_a_dying_port_forward(tmp_path):
    import re
    import subprocess
    import sys

    serve = subprocess.Popen([sys.executable, "-m", "llmobs_tui", "serve", "--db", str(tmp_path / "remote.db"),
                              "--grpc-port", "0", "--http-port", "0", "--query-port", "0", "--token", "T0K"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = await asyncio.to_thread(serve.stdout.readline)
        grpc_port = int(re.search(r"OTLP/gRPC on 127\.0\.0\.1:(\d+)", line).group(1))
        query_port = int(re.search(r"queries \(attach\) on 127\.0\.0\.1:(\d+)", line).group(1))
        forward = PortForward(query_port)
        await forward.start()
        feed = AttachFeed(AttachPlan(f"127.0.0.1:{forward.port}", str(tmp_path / "cache.db"), token="T0K",
                                     max_backoff_s=1.0))
        feed.start()
        try:
            await export_with_token(grpc_port, batch(1, 40))
            await until(lambda: counts(tmp_path / "cache.db")[0] == 40)
            await forward.kill()
            await export_with_token(grpc_port, batch(100, 25))  # arrives while the laptop is cut off
            await until(lambda: "disconnected" in feed.state.read()[0], timeout=20)
            await forward.start()  # the user re-runs kubectl port-forward on the same local port
            await until(lambda: counts(tmp_path / "cache.db")[0] == 65)
            await asyncio.sleep(1.0)
            assert counts(tmp_path / "cache.db")[:2] == (65, 65)
            assert "live" in feed.state.read()[0]
        finally:
            feed.stop()
            await forward.kill()
    finally:
        serve.terminate()
        await asyncio.to_thread(serve.wait, 30)


async def export_with_token(port: int, body: bytes) -> None:
    import grpc

    from tests.test_receiver import TRACE_METHOD

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await channel.unary_unary(TRACE_METHOD)(body, metadata=(("authorization", "Bearer T0K"),), timeout=30)
