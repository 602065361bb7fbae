"""TLS on both OTLP ports with a self-signed certificate made here: the real SDK exporters connect
when they trust it, a plaintext client cannot, and bad certificate flags fail at start."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
import grpc
import pytest

from llmobs_tui.backend import Backend, BackendConfig
from llmobs_tui.cli import main
from receiver.pipeline import PipelineConfig
from receiver.tls import TlsError, TlsFiles
from store.connection import open_reader
from tests.test_receiver import TRACE_METHOD

pytestmark = pytest.mark.anyio


def self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
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
                                    grpc_port=0, http_port=0, tls_cert=str(cert), tls_key=str(key)))
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
