"""Bearer tokens: a bind beyond loopback needs one (not blank, not short); with one, senders without
it or with a wrong one are refused (UNAUTHENTICATED / 401) and counted, over both protocols, before
their body is read, and the right one gets in, whatever the case of `Bearer` and the spacing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import grpc
import pytest

from llmobs_tui.backend import Backend, BackendConfig
from llmobs_tui.cli import main
from receiver.auth import MIN_TOKEN_CHARS, InsecureBind, TokenCheck, check_bind, is_loopback
from receiver.pipeline import PipelineConfig
from store.connection import open_reader
from tests.otlp_factory import make_span, trace_request
from tests.test_receiver import TRACE_METHOD

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
TOKEN = "s3cret-token-for-tests"  # at least MIN_TOKEN_CHARS: the fixture binds 0.0.0.0
# Not an address of this machine (TEST-NET-3, RFC 5737): were a refusal to fail, binding it fails too,
# so no test ever listens beyond loopback by mistake.
ELSEWHERE = "203.0.113.7"


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


def test_the_bearer_scheme_is_case_insensitive_and_spacing_is_tolerated():
    check = TokenCheck(TOKEN)
    for good in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"BeArEr {TOKEN}", f"Bearer    {TOKEN}",
                 f"  Bearer {TOKEN}  ", f"\tBearer\t\t{TOKEN}\t", f" bearer \t {TOKEN} "):
        assert check.allows(good), repr(good)
    assert check.refused == 0
    bad = (None, "", "   ", "Bearer", "Bearer   ", f"Basic {TOKEN}", "Basic x", f"Bearer{TOKEN}",
           f"Token {TOKEN}", "Bearer nope", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN.upper()}",
           f"Bearer {TOKEN} {TOKEN}", "Bearer \udcff")
    for value in bad:
        assert not check.allows(value), repr(value)
    assert check.refused == len(bad)
    assert "missing Authorization" in TokenCheck.reason(None) and "missing" in TokenCheck.reason("  ")
    assert "not a bearer token" in TokenCheck.reason("Basic x") and "not a bearer token" in TokenCheck.reason("Bearer")
    assert TokenCheck.reason("bearer nope") == "wrong token"
    # The token is stored without the whitespace around it (a stray newline in a secret file).
    assert TokenCheck(f"  {TOKEN}\n").allows(f"Bearer {TOKEN}")
    # Blank is no token, as an empty LLMOBS_TOKEN is (which only loopback allows).
    assert not TokenCheck("   ").enabled and not TokenCheck("").enabled and TokenCheck("x").enabled


def test_a_blank_or_short_token_does_not_guard_a_bind_beyond_loopback():
    with pytest.raises(InsecureBind, match=r"token is blank \(only whitespace\)"):
        check_bind("0.0.0.0", " \t ")
    short = "x" * (MIN_TOKEN_CHARS - 1)
    with pytest.raises(InsecureBind, match=f"only {MIN_TOKEN_CHARS - 1} characters: use at least {MIN_TOKEN_CHARS}"):
        check_bind("::", short)
    with pytest.raises(InsecureBind, match="only 4 characters"):
        check_bind("0.0.0.0", "  abcd  ")  # counted without the spaces
    check_bind("0.0.0.0", "x" * MIN_TOKEN_CHARS)
    check_bind("0.0.0.0", f"  {'x' * MIN_TOKEN_CHARS}  ")
    # Loopback: any token, as before (a blank one guards nothing: this machine only, as with none).
    for token in ("   ", "T0K", short, None):
        check_bind("127.0.0.1", token)
        check_bind("localhost", token)


def serve_refusal(tmp_path: Path, *argv: str, env_token: str | None = None) -> tuple[int, str, float]:
    """A real `llmobs-tui serve` asked to listen beyond loopback: its exit code, stderr and run time."""
    env = {k: v for k, v in os.environ.items() if k != "LLMOBS_TOKEN"}
    if env_token is not None:
        env["LLMOBS_TOKEN"] = env_token
    executable = Path(sys.executable).with_name("llmobs-tui")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "llmobs_tui"]
    started = time.monotonic()
    # A serve that got past the check would run until killed: the timeout turns that into a failure.
    result = subprocess.run([*command, "serve", "--host", ELSEWHERE, "--db", str(tmp_path / "s.db"),
                             "--grpc-port", "0", "--http-port", "0", *argv],
                            capture_output=True, text=True, timeout=60, env=env)
    return result.returncode, result.stderr, time.monotonic() - started


@pytest.mark.parametrize("argv, env_token, expected", [
    (["--token", "   "], None, "token is blank (only whitespace)"),
    ([], " \t ", "token is blank (only whitespace)"),
    (["--token", "short-secret"], None, f"token is only 12 characters: use at least {MIN_TOKEN_CHARS}"),
    ([], "short-secret", f"token is only 12 characters: use at least {MIN_TOKEN_CHARS}"),
    ([], None, "no token is set"),
], ids=["blank flag", "blank LLMOBS_TOKEN", "short flag", "short LLMOBS_TOKEN", "none"])
def test_serve_refuses_a_blank_or_short_token_beyond_loopback(tmp_path, argv, env_token, expected):
    code, err, elapsed = serve_refusal(tmp_path, *argv, env_token=env_token)
    assert code == 2, err
    assert f"--host {ELSEWHERE} would accept telemetry from other machines" in err and expected in err
    assert "LLMOBS_TOKEN" in err and "process list" in err
    # Refused before anything started: no store created, no decoder processes to wait for.
    assert not (tmp_path / "s.db").exists()
    assert elapsed < 30


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


def test_a_blank_token_on_loopback_is_no_token(tmp_path):
    for token in ("   ", "\t\n"):
        backend = Backend(BackendConfig(PipelineConfig(db_path=str(tmp_path / "b.db"), decoders=1, retention_s=None),
                                        host="127.0.0.1", grpc_port=0, http_port=0, token=token))
        assert not backend.auth.enabled and backend.auth.allows(None)


class SubmitSpy:
    """Stands in front of pipeline.submit: the decode path. Counts what reaches it."""

    def __init__(self, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = backend.pipeline.submit

        async def submit(*args, **kwargs):
            self.calls += 1
            return await real(*args, **kwargs)

        monkeypatch.setattr(backend.pipeline, "submit", submit)


BIG = 8 << 20


async def test_grpc_refuses_an_unauthenticated_call_before_reading_its_body(guarded, monkeypatch):
    spy = SubmitSpy(guarded, monkeypatch)
    address = f"127.0.0.1:{guarded.grpc.port}"
    async with grpc.aio.insecure_channel(address) as channel:
        export = channel.unary_unary(TRACE_METHOD)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await export(b"\x0a" + b"\xff" * (BIG - 1), metadata=(("authorization", "Bearer nope"),), timeout=30)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED and "wrong token" in error.value.details()

        # A sender that opened the call and has not sent its message yet: grpc would wait for the
        # whole message before a unary handler runs; the refusal comes from the headers alone.
        call = channel.stream_unary(TRACE_METHOD)(timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED, error.value.code()
        assert "missing Authorization" in error.value.details()

        # The same channel, with the token: in, whatever the case of the scheme.
        await export(request_body(5), metadata=(("authorization", f"bearer  {TOKEN}"),), timeout=10)
    assert spy.calls == 1
    assert guarded.auth.refused == 2


async def test_http_refuses_an_unauthenticated_body_before_reading_it(guarded, monkeypatch):
    from aiohttp import web

    spy = SubmitSpy(guarded, monkeypatch)
    reads = []
    real_read = web.BaseRequest.read

    async def read(self):
        reads.append(self.path)
        return await real_read(self)

    monkeypatch.setattr(web.BaseRequest, "read", read)
    url = f"http://127.0.0.1:{guarded.http.port}/v1/traces"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=b"\0" * BIG, headers={"Content-Type": "application/x-protobuf",
                                                               "Authorization": "Bearer nope"}) as response:
            assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
        assert reads == [] and spy.calls == 0
        async with session.post(url, data=request_body(6), headers={"Content-Type": "application/x-protobuf",
                                                                   "Authorization": f"BEARER\t{TOKEN}"}) as response:
            assert response.status == 200
    assert reads == ["/v1/traces"] and spy.calls == 1
    assert guarded.auth.refused == 1


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head, await asyncio.wait_for(reader.readexactly(length), 10)


async def expect_continue(port: int, authorization: str | None, body: bytes) -> tuple[list[bytes], bytes]:
    """Send headers with `Expect: 100-continue`, no body yet, and `body` only if the server says 100
    Continue, as curl does: the status lines received, and the final answer's body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     + (f"Authorization: {authorization}\r\n".encode() if authorization else b"")
                     + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
        await writer.drain()
        head, answer = await read_response(reader)
        statuses = [head.split(b"\r\n", 1)[0]]
        if head.startswith(b"HTTP/1.1 100"):
            writer.write(body)
            await writer.drain()
            head, answer = await read_response(reader)
            statuses.append(head.split(b"\r\n", 1)[0])
        return statuses, answer
    finally:
        writer.close()


async def test_http_answers_expect_continue_with_401_when_the_token_is_missing(guarded, monkeypatch):
    spy = SubmitSpy(guarded, monkeypatch)
    # Without the token: the 401 comes instead of the go-ahead, and the body is never sent.
    statuses, answer = await expect_continue(guarded.http.port, None, b"\0" * BIG)
    assert statuses == [b"HTTP/1.1 401 Unauthorized"]
    assert b"missing Authorization" in answer and spy.calls == 0
    # With it: 100 Continue, then the body, stored.
    statuses, _answer = await expect_continue(guarded.http.port, f"Bearer {TOKEN}", request_body(7))
    assert statuses == [b"HTTP/1.1 100 Continue", b"HTTP/1.1 200 OK"]
    assert spy.calls == 1 and guarded.auth.refused == 1
