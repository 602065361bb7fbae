"""`--forward`: a second, real receiver gets every stored batch unchanged, over either protocol and
from either of ours; a dead or refusing upstream neither blocks nor loses local ingest."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from llmobs_tui.backend import Backend, BackendConfig
from receiver.forward import Endpoint, ForwardEndpointError
from receiver.otlp import message_to_otlp_json
from receiver.pipeline import PipelineConfig
from store.connection import open_reader
from tests.otlp_factory import T0, make_span, trace_request
from tests.test_receiver import grpc_export, sdk_export

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def make_backend(path: Path, forward: str | None = None) -> Backend:
    return Backend(BackendConfig(PipelineConfig(db_path=str(path), decoders=1, retention_s=None),
                                 grpc_port=0, http_port=0, forward=forward))


def trace_ids(path: Path) -> list[str]:
    db = open_reader(path)
    try:
        return sorted(r[0] for r in db.execute("SELECT DISTINCT lower(hex(trace_id)) FROM spans"))
    finally:
        db.close()


def llm_request(first_trace: int, n: int) -> bytes:
    spans = [make_span(t, 1, None, "chat gpt-4o-mini", {"gen_ai.operation.name": "chat",
                                                        "gen_ai.request.model": "gpt-4o-mini",
                                                        "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2},
                       start_ns=T0 + t)
             for t in range(first_trace, first_trace + n)]
    return trace_request(spans).SerializeToString()


async def until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_endpoints():
    assert Endpoint.parse("http://collector:4318") == Endpoint("http", "http://collector:4318")
    assert Endpoint.parse("https://x.example/v1/traces") == Endpoint("http", "https://x.example")
    assert Endpoint.parse("grpc://collector:4317") == Endpoint("grpc", "collector:4317")
    assert Endpoint.parse("localhost:4317") == Endpoint("grpc", "localhost:4317")
    for bad in ("collector", "grpc://c:notaport", "c:70000", ""):
        with pytest.raises(ForwardEndpointError, match="expected http://host:port"):
            Endpoint.parse(bad)


@pytest.mark.parametrize("upstream_protocol", ["grpc", "http"])
async def test_a_second_receiver_gets_every_batch(tmp_path, upstream_protocol):
    upstream = make_backend(tmp_path / "upstream.db")
    await upstream.start()
    target = f"grpc://{upstream.grpc_address}" if upstream_protocol == "grpc" else upstream.http_address
    front = make_backend(tmp_path / "front.db", forward=target)
    await front.start()
    try:
        # Over every way in: the SDK over gRPC and HTTP, raw gRPC, OTLP/JSON and gzip over HTTP.
        ids = await asyncio.to_thread(sdk_export, f"http://{front.grpc_address}", "grpc", 3)
        ids += await asyncio.to_thread(sdk_export, front.http_address, "http", 3)
        await grpc_export(front, llm_request(1000, 4))
        async with aiohttp.ClientSession() as session:
            as_json = json.dumps(message_to_otlp_json(trace_request([make_span(2000, 1, None, "json span", {})])))
            async with session.post(f"{front.http_address}/v1/traces", data=as_json,
                                    headers={"Content-Type": "application/json"}) as response:
                assert response.status == 200
            async with session.post(f"{front.http_address}/v1/traces", data=gzip.compress(llm_request(3000, 2)),
                                    headers={"Content-Type": "application/x-protobuf",
                                             "Content-Encoding": "gzip"}) as response:
                assert response.status == 200
        stored = front.pipeline.stats
        await until(lambda: front.forward.stats.forwarded == stored.requests - stored.invalid_requests)
    finally:
        await front.aclose()
        await upstream.aclose()
    stats = front.forward.stats
    assert stats.failed == 0 and stats.dropped == 0
    assert stats.forwarded == front.pipeline.stats.requests >= 9  # one export per SDK span, and our four
    local, remote = trace_ids(tmp_path / "front.db"), trace_ids(tmp_path / "upstream.db")
    assert local == remote
    assert set(ids) <= set(remote) and len(remote) == len(ids) + 4 + 1 + 2


async def test_a_dead_upstream_neither_blocks_nor_loses_local_ingest(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens here once the socket closes
    front = make_backend(tmp_path / "front.db", forward=f"http://127.0.0.1:{dead}")
    await front.start()
    front.forward.max_queue_bytes = 3 * len(llm_request(0, 20))  # room for three batches
    try:
        latencies = []
        for i in range(10):
            started = time.monotonic()
            await grpc_export(front, llm_request(i * 20 + 1, 20))  # trace id 0 is invalid
            latencies.append(time.monotonic() - started)
        await until(lambda: front.forward.stats.retries >= 1)
        stats = front.forward.stats
        assert max(latencies) < 2.0
        assert stats.forwarded == 0 and stats.dropped == 7 and stats.queued == 3
        assert "ClientConnectorError" in stats.last_error or "Connect" in stats.last_error
    finally:
        await front.aclose(grace=1.0)
    assert len(trace_ids(tmp_path / "front.db")) == 200  # every span stored locally
    assert front.forward.stats.dropped == 10  # the three still queued at shutdown count as not sent


async def test_an_upstream_that_refuses_is_counted_and_one_that_recovers_gets_the_backlog(tmp_path):
    answers = [400, 503, 503]  # a refusal, then two retryable failures, then success
    received: list[bytes] = []

    async def collector(request: web.Request) -> web.Response:
        body = await request.read()
        status = answers.pop(0) if answers else 200
        if status == 200:
            received.append(body)
        return web.Response(status=status, body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", collector)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    front = make_backend(tmp_path / "front.db", forward=f"http://127.0.0.1:{port}")
    await front.start()
    try:
        bodies = [llm_request(i * 10 + 1, 10) for i in range(3)]
        for body in bodies:
            await grpc_export(front, body)
        await until(lambda: front.forward.stats.forwarded == 2)
        stats = front.forward.stats
        assert stats.failed == 1 and stats.retries == 2 and stats.dropped == 0
        # Sent unchanged: the exact bytes the app exported.
        assert set(received) <= set(bodies) and len(set(received)) == 2
    finally:
        await front.aclose()
        await runner.cleanup()


def test_a_bad_forward_endpoint_is_refused_at_start(capsys):
    from llmobs_tui.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--forward", "collector"])
    assert exit_info.value.code == 2
    assert "--forward 'collector': expected http://host:port" in capsys.readouterr().err
