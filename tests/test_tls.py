"""TLS on both OTLP ports with a self-signed certificate made here: the real SDK exporters connect
when they trust it, a plaintext client cannot, failed handshakes are counted rather than logged one
line each, and bad certificate flags fail at start."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import grpc
import pytest

from llmobs_tui.backend import Backend, BackendConfig
from llmobs_tui.cli import main
from llmobs_tui.cli.serve import StatsPrinter
from receiver.pipeline import PipelineConfig
from receiver.tls import TlsError, TlsFiles
from store.connection import open_reader
from tests.test_receiver import TRACE_METHOD

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
async def secure(tmp_path: Path):
    cert, key = self_signed(tmp_path)
    backend = Backend(BackendConfig(PipelineConfig(db_path=str(tmp_path / "tls.db"), decoders=1, retention_s=None),
                                    grpc_port=0, http_port=0, tls=TlsFiles.load(str(cert), str(key))))
    await backend.start()
    try:
        yield backend, cert
    finally:
        await backend.aclose()


def export_with_sdk(protocol: str, endpoint: str, cert: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=False,
                                    credentials=grpc.ssl_channel_credentials(cert.read_bytes()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces", certificate_file=str(cert))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span(f"chat over {protocol}") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
    provider.shutdown()


async def test_sdk_exporters_over_tls_on_both_ports(secure, monkeypatch):
    # requests lets these override the exporter's own CA file: a machine that sets them (this one
    # does) would otherwise verify our certificate against the system roots.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    backend, cert = secure
    assert backend.http_address.startswith("https://") and "(TLS)" in backend.describe()
    await asyncio.to_thread(export_with_sdk, "grpc", f"https://{backend.grpc_address}", cert)
    await asyncio.to_thread(export_with_sdk, "http", backend.http_address, cert)
    db = open_reader(backend.config.pipeline.db_path)
    try:
        assert sorted(r[0] for r in db.execute("SELECT name FROM spans")) == ["chat over grpc", "chat over http"]
    finally:
        db.close()


async def test_plaintext_and_untrusting_clients_cannot_talk_to_a_tls_port(secure):
    backend, _cert = secure
    async with grpc.aio.insecure_channel(backend.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await channel.unary_unary(TRACE_METHOD)(b"", timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            # The default context trusts the system roots only: a self-signed certificate is refused.
            await session.post(backend.http_address + "/v1/traces", data=b"", ssl=ssl.create_default_context())
        with pytest.raises(aiohttp.ClientError):
            await session.post(backend.http_address.replace("https", "http") + "/v1/traces", data=b"")


def test_bad_certificate_flags_fail_at_start(tmp_path, capsys):
    cert, key = self_signed(tmp_path)
    with pytest.raises(TlsError, match="go together"):
        TlsFiles.load(str(cert), None)
    with pytest.raises(TlsError, match="cannot read"):
        TlsFiles.load(str(tmp_path / "missing.pem"), str(key))
    (tmp_path / "other").mkdir()
    other_cert, _ = self_signed(tmp_path / "other")
    with pytest.raises(TlsError, match="not a usable certificate and matching private key"):
        TlsFiles.load(str(other_cert), str(key))
    code = main(["serve", "--db", str(tmp_path / "s.db"), "--grpc-port", "0", "--http-port", "0",
                 "--tls-cert", str(cert)])
    assert code == 2 and "--tls-cert and --tls-key go together" in capsys.readouterr().err


GARBAGE = b"GET /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n"  # plaintext HTTP to a TLS port


def send_garbage(port: int, connections: int) -> None:
    """Open `connections` plaintext connections to a TLS port, each sending garbage, and wait for the
    server to end each one."""
    for _ in range(connections):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(GARBAGE)
            try:
                while sock.recv(4096):  # a TLS alert, then EOF
                    pass
            except ConnectionResetError:
                pass


def refuse_the_certificate(port: int) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        # The system roots only: a self-signed certificate fails verification, and OpenSSL says so.
        with ssl.create_default_context().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                                      server_hostname="localhost"):
            pass


async def test_failed_handshakes_on_the_http_port_are_counted(secure):
    backend, cert = secure
    await asyncio.to_thread(send_garbage, backend.http.port, 5)
    deadline = time.monotonic() + 10
    while backend.http.tls_handshakes_failed < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert backend.http.tls_handshakes_failed == 5
    # A client that trusts the certificate completes its handshake: not counted.
    async with aiohttp.ClientSession() as session:
        async with session.get(backend.http_address + "/v1/traces",
                               ssl=ssl.create_default_context(cafile=str(cert))) as response:
            assert response.status == 405
    # One that does not trust it ends the handshake with an alert ("unknown CA"): counted.
    await asyncio.to_thread(refuse_the_certificate, backend.http.port)
    deadline = time.monotonic() + 10
    while backend.http.tls_handshakes_failed < 6 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert backend.http.tls_handshakes_failed == 6
    assert "6 TLS handshakes failed (HTTP)" in StatsPrinter(backend).line()


def test_serve_counts_failed_handshakes_instead_of_logging_each(tmp_path):
    cert, key = self_signed(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}  # grpc's own defaults
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        serve = subprocess.Popen([sys.executable, "-m", "llmobs_tui", "serve", "--db", str(tmp_path / "s.db"),
                                  "--grpc-port", "0", "--http-port", "0", "--tls-cert", str(cert),
                                  "--tls-key", str(key), "--stats-every", "0.5s"],
                                 stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    try:
        line = serve.stdout.readline()
        grpc_port = re.search(r"OTLP/gRPC \(TLS\) on 127\.0\.0\.1:(\d+)", line)
        http_port = re.search(r"OTLP/HTTP on https://127\.0\.0\.1:(\d+)", line)
        assert grpc_port and http_port, line + stderr_path.read_text()
        connections = 6
        send_garbage(int(grpc_port.group(1)), connections)
        send_garbage(int(http_port.group(1)), connections)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = serve.stdout.readline()
            if f"{connections} TLS handshakes failed (HTTP)" in line or not line:
                break
        assert f"{connections} TLS handshakes failed (HTTP)" in line, line
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.communicate()
    assert serve.returncode == 0
    stderr_text = stderr_path.read_text()
    # Not one line per connection: grpc's C core would print "Handshake failed with error …" for each.
    assert sum("andshake" in line for line in stderr_text.splitlines()) < connections, stderr_text
