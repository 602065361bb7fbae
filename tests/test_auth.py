"""Bearer tokens: a bind beyond loopback needs one; with one, senders without it or with a wrong one
are refused (UNAUTHENTICATED / 401) and counted, over both protocols, and the right one gets in."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import grpc
import pytest

from llmobs_tui.backend import Backend, BackendConfig
from llmobs_tui.cli import main
from receiver.auth import InsecureBind, check_bind, is_loopback
from receiver.pipeline import PipelineConfig
from store.connection import open_reader
from tests.otlp_factory import make_span, trace_request
from tests.test_receiver import TRACE_METHOD

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"


def test_loopback_or_not():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.5", "example.com"):
        assert not is_loopback(host), host


def test_a_bind_beyond_loopback_needs_a_token():
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(InsecureBind, match="--token"):
        check_bind("0.0.0.0", None)


def test_serve_refuses_to_start_and_says_why(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LLMOBS_TOKEN", raising=False)
    code = main(["serve", "--host", "0.0.0.0", "--db", str(tmp_path / "s.db"), "--grpc-port", "0", "--http-port", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 would accept telemetry from other machines" in err and "LLMOBS_TOKEN" in err
    assert not (tmp_path / "s.db").exists()


def request_body(trace: int) -> bytes:
    return trace_request([make_span(trace, 1, None, "chat gpt-4o-mini", {"gen_ai.operation.name": "chat"})]
                         ).SerializeToString()


@pytest.fixture
async def guarded(tmp_path: Path):
    # All interfaces, as in a cluster: allowed only because a token guards it.
    backend = Backend(BackendConfig(PipelineConfig(db_path=str(tmp_path / "g.db"), decoders=1, retention_s=None),
                                    host="0.0.0.0", grpc_port=0, http_port=0, token=TOKEN))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.aclose()


async def test_grpc_senders_need_the_token(guarded):
    address = f"127.0.0.1:{guarded.grpc.port}"
    async with grpc.aio.insecure_channel(address) as channel:
        export = channel.unary_unary(TRACE_METHOD)
        for metadata, expected in ((None, "missing Authorization"), ((("authorization", "Bearer nope"),), "wrong token")):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await export(request_body(1), metadata=metadata, timeout=10)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED and expected in error.value.details()
        await export(request_body(2), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
    assert guarded.auth.refused == 2
    db = open_reader(guarded.config.pipeline.db_path)
    try:
        assert db.execute("SELECT trace_id FROM spans").fetchall() == [((2).to_bytes(16, "big"),)]
    finally:
        db.close()


async def test_http_senders_need_the_token_and_the_sdk_sends_it(guarded, monkeypatch):
    url = f"http://127.0.0.1:{guarded.http.port}/v1/traces"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=request_body(3), headers={"Content-Type": "application/x-protobuf"}) as response:
            assert response.status == 401
        async with session.post(url, data=b"{}", headers={"Content-Type": "application/json",
                                                          "Authorization": "Bearer nope"}) as response:
            assert response.status == 401 and "wrong token" in await response.text()
    assert guarded.auth.refused == 2

    def sdk_with_headers() -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        # What a user sets: OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer …".
        exporter = OTLPSpanExporter(endpoint=url, headers={"Authorization": f"Bearer {TOKEN}"})
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span("chat gpt-4o-mini") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
        provider.shutdown()

    await asyncio.to_thread(sdk_with_headers)
    db = open_reader(guarded.config.pipeline.db_path)
    try:
        assert db.execute("SELECT count(*) FROM spans").fetchone()[0] == 1
    finally:
        db.close()
    assert guarded.auth.refused == 2
