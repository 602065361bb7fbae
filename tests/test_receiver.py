"""The OTLP receivers, for real: servers on port 0, the OTel SDK's own exporters, a real store file.

Every export that succeeded must already be committed: the test reads the rows through a fresh
read-only connection right after the exporter returns.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from llmobs_tui.backend import Backend, BackendConfig
from receiver.otlp import message_to_otlp_json
from receiver.pipeline import PipelineConfig
from store.connection import open_reader
from tests.otlp_factory import make_span, trace_request

pytestmark = pytest.mark.anyio
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"



def rows(backend: Backend, sql: str, params: tuple = ()) -> list[tuple]:
    db = open_reader(backend.config.pipeline.db_path)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


async def grpc_export(backend: Backend, body: bytes, compression: grpc.Compression | None = None) -> bytes:
    async with grpc.aio.insecure_channel(backend.grpc_address) as channel:
        return await channel.unary_unary(TRACE_METHOD)(body, timeout=30, compression=compression)


def sdk_export(endpoint: str, protocol: str, n_traces: int = 5, compression: Any = None) -> list[str]:
    """Export LLM traces through the real SDK; returns the trace ids. Runs in a thread."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, compression=compression)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces", compression=compression)
    provider = TracerProvider(resource=Resource.create({"service.name": f"app-{protocol}"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2", "2.1b0")
    ids = []
    for _ in range(n_traces):
        with tracer.start_as_current_span("POST /ask") as root:
            ids.append(format(root.get_span_context().trace_id, "032x"))
            with tracer.start_as_current_span("chat gpt-4o-mini") as span:
                span.set_attributes({
                    "gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                    "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 1200,
                    "gen_ai.usage.output_tokens": 80, "app.llm.feature": "ask"})
    provider.shutdown()
    return ids


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_sdk_exporter_round_trip_is_committed_when_acknowledged(backend, protocol):
    endpoint = f"http://{backend.grpc_address}" if protocol == "grpc" else backend.http_address
    ids = await asyncio.to_thread(sdk_export, endpoint, protocol)
    stored = rows(backend, "SELECT lower(hex(trace_id)), kind, request_model, input_tokens, cost_nusd, service "
                           "FROM spans WHERE kind = 'llm'")
    assert sorted(r[0] for r in stored) == sorted(ids)
    # gpt-4o-mini: 1200 × $0.15/1M + 80 × $0.60/1M = $0.000228
    assert {r[1:] for r in stored} == {("llm", "gpt-4o-mini", 1200, 228_000, f"app-{protocol}")}
    scopes = rows(backend, "SELECT name, version FROM scopes")
    assert scopes == [("opentelemetry.instrumentation.openai_v2", "2.1b0")]


async def test_gzip_over_both_protocols(backend):
    from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression as GrpcCompression
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression

    await asyncio.to_thread(sdk_export, f"http://{backend.grpc_address}", "grpc", 2, GrpcCompression.Gzip)
    await asyncio.to_thread(sdk_export, backend.http_address, "http", 3, HttpCompression.Gzip)
    assert rows(backend, "SELECT count(*) FROM spans WHERE kind = 'llm'") == [(5,)]


async def test_otlp_json_body_with_hex_ids(backend):
    request = trace_request([make_span(0x1234, 7, None, "chat gpt-4o", {
        "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2})])
    body = message_to_otlp_json(request)
    span_json = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span_json["traceId"] == f"{0x1234:032x}" and isinstance(span_json["startTimeUnixNano"], str)
    async with aiohttp.ClientSession() as session:
        async with session.post(backend.http_address + "/v1/traces", json=body) as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            assert await response.json() == {}
    assert rows(backend, "SELECT lower(hex(trace_id)), input_tokens FROM spans") == [(f"{0x1234:032x}", 10)]


async def test_malformed_protobuf_is_invalid_argument_with_a_reason(backend):
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await grpc_export(backend, b"\x0a\xff\xff\xff\x0f garbage")
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed protobuf" in excinfo.value.details()
    async with aiohttp.ClientSession() as session:
        async with session.post(backend.http_address + "/v1/traces", data=b"\x0a\xff\xff\xff\x0f garbage",
                                headers={"Content-Type": "application/x-protobuf"}) as response:
            assert response.status == 400
            status = status_pb2.Status.FromString(await response.read())
            assert "malformed protobuf" in status.message
        async with session.post(backend.http_address + "/v1/traces", data=b"{not json",
                                headers={"Content-Type": "application/json"}) as response:
            assert response.status == 400
            assert "malformed JSON" in (await response.json())["message"]
        async with session.post(backend.http_address + "/v1/traces", data=b"{}",
                                headers={"Content-Type": "text/plain"}) as response:
            assert response.status == 415
        async with session.post(backend.http_address + "/v1/traces", data=b"not gzip at all",
                                headers={"Content-Type": "application/x-protobuf",
                                         "Content-Encoding": "gzip"}) as response:
            assert response.status == 400
            assert "gzip" in status_pb2.Status.FromString(await response.read()).message
    # The receiver is still fine.
    await grpc_export(backend, trace_request([make_span(1, 1, None, "ok", {})]).SerializeToString())


async def test_a_gzip_bomb_is_refused(backend):
    bomb = gzip.compress(b"\0" * (200 << 20))  # 200 MiB of zeros in ~200 KB
    async with aiohttp.ClientSession() as session:
        async with session.post(backend.http_address + "/v1/traces", data=bomb,
                                headers={"Content-Type": "application/x-protobuf",
                                         "Content-Encoding": "gzip"}) as response:
            assert response.status == 400
            assert "limit" in status_pb2.Status.FromString(await response.read()).message


async def test_partial_success_reports_rejected_spans_and_keeps_the_rest(backend):
    good = make_span(0x77, 1, None, "good", {})
    bad = make_span(0x77, 2, None, "bad", {})
    bad.trace_id = b"\x00" * 16
    short = make_span(0x77, 3, None, "short id", {})
    short.span_id = b"\x01\x02"
    response = ExportTraceServiceResponse.FromString(
        await grpc_export(backend, trace_request([good, bad, short]).SerializeToString()))
    assert response.partial_success.rejected_spans == 2
    assert "invalid trace_id" in response.partial_success.error_message
    assert "invalid span_id" in response.partial_success.error_message
    assert rows(backend, "SELECT name FROM spans") == [("good",)]


async def test_invalid_utf8_survives_the_wire(backend):
    body = trace_request([make_span(0x99, 1, None, "name-XYZ", {"gen_ai.request.model": "model-ABC"})]).SerializeToString()
    body = body.replace(b"name-XYZ", b"name-\xff\xfe\xfd").replace(b"model-ABC", b"model-\xc3\x28C")
    await grpc_export(backend, body)
    (name, model, flags), = rows(backend, "SELECT name, request_model, flags FROM spans")
    assert name == "name-\ufffd\ufffd\ufffd" and model.startswith("model-\ufffd")
    from store.models import FLAG_UTF8_REPAIRED

    assert flags & FLAG_UTF8_REPAIRED


async def test_logs_are_stored_and_joined_by_span(backend):
    from tests.otlp_factory import log_record, logs_request

    body = logs_request([log_record(trace_id=0x55, span_id=3, event_name="gen_ai.user.message",
                                    body={"content": "hello"})]).SerializeToString()
    async with grpc.aio.insecure_channel(backend.grpc_address) as channel:
        raw = await channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")(body, timeout=30)
    assert ExportLogsServiceResponse.FromString(raw).partial_success.rejected_log_records == 0
    assert rows(backend, "SELECT lower(hex(trace_id)), lower(hex(span_id)), event_name FROM logs") == \
        [(f"{0x55:032x}", f"{3:016x}", "gen_ai.user.message")]


async def test_metrics_are_accepted(backend):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    def export() -> None:
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=backend.http_address + "/v1/metrics"),
                                               export_interval_millis=10**9)
        provider = MeterProvider(metric_readers=[reader])
        provider.get_meter("m").create_counter("gen_ai.client.token.usage").add(5)
        assert reader.force_flush()
        provider.shutdown()

    await asyncio.to_thread(export)
    assert backend.pipeline.stats.invalid_requests == 0


async def test_a_full_pipeline_answers_retryable_overload(tmp_path):
    b = Backend(BackendConfig(PipelineConfig(db_path=str(tmp_path / "full.db"), decoders=1, retention_s=None,
                                             max_inflight_requests=2), grpc_port=0, http_port=0))
    await b.start()
    try:
        def big(n: int) -> bytes:
            return trace_request([make_span(0x100000 * (n + 1) + i, 1, None, "x", {"payload": "y" * 50_000})
                                  for i in range(50)]).SerializeToString()

        results = await asyncio.gather(*(grpc_export(b, big(n)) for n in range(12)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert errors, "12 concurrent requests against a limit of 2 must overflow"
        assert {e.code() for e in errors} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        trailers = dict(errors[0].trailing_metadata())
        from google.rpc import error_details_pb2

        retry = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert retry.retry_delay.seconds >= 1
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        assert status.details[0].Is(error_details_pb2.RetryInfo.DESCRIPTOR)
        accepted = len(results) - len(errors)
        assert rows_count(b) == accepted * 50, "everything acknowledged is committed, nothing else"

        async with aiohttp.ClientSession() as session:
            posts = [session.post(b.http_address + "/v1/traces", data=big(100 + n),
                                  headers={"Content-Type": "application/x-protobuf"}) for n in range(12)]
            responses = await asyncio.gather(*posts)
            codes = sorted(r.status for r in responses)
            assert 503 in codes and 200 in codes
            assert all(r.headers.get("Retry-After") == "1" for r in responses if r.status == 503)
    finally:
        await b.aclose()


def rows_count(backend: Backend) -> int:
    return rows(backend, "SELECT count(*) FROM spans")[0][0]


async def test_a_busy_port_is_a_clear_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        b = Backend(BackendConfig(PipelineConfig(db_path=str(tmp_path / "busy.db"), decoders=1, retention_s=None),
                                  grpc_port=0, http_port=port))
        with pytest.raises(OSError, match=f"cannot listen for OTLP/HTTP on 127.0.0.1:{port}"):
            await b.start()
        b = Backend(BackendConfig(PipelineConfig(db_path=str(tmp_path / "busy2.db"), decoders=1, retention_s=None),
                                  grpc_port=port, http_port=0))
        with pytest.raises(OSError, match=f"cannot listen for OTLP/gRPC on 127.0.0.1:{port}"):
            await b.start()


async def test_receivers_listen_on_loopback_by_default(backend):
    assert backend.grpc_address.startswith("127.0.0.1:")
    assert backend.http_address.startswith("http://127.0.0.1:")


async def test_the_env_endpoint_users_already_have_works(backend, monkeypatch):
    """OTEL_EXPORTER_OTLP_ENDPOINT pointing at the HTTP port, exactly as users set it."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", backend.http_address)

    def export() -> None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
        with provider.get_tracer("t").start_as_current_span("env-configured"):
            pass
        provider.shutdown()

    await asyncio.to_thread(export)
    assert rows(backend, "SELECT name FROM spans") == [("env-configured",)]


async def test_a_huge_attribute_is_truncated_visibly(backend):
    span = make_span(0x4242, 1, None, "big", {"gen_ai.request.model": "gpt-4o", "blob": "z" * (3 << 20)})
    await grpc_export(backend, trace_request([span]).SerializeToString())
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from store.models import FLAG_TRUNCATED
    from store.queries import decompress

    (raw, flags, model), = rows(backend, "SELECT raw, flags, request_model FROM spans")
    assert flags & FLAG_TRUNCATED and model == "gpt-4o"
    stored = {kv.key: kv.value.string_value for kv in Span.FromString(decompress(raw)).attributes}
    assert stored["blob"].endswith("bytes]") and "…[truncated" in stored["blob"]
    assert len(stored["blob"]) < 300 * 1024


async def test_concurrent_exporters_all_land(backend):
    threads = [threading.Thread(target=sdk_export, args=(f"http://{backend.grpc_address}", "grpc", 10))
               for _ in range(4)]
    await asyncio.to_thread(lambda: ([t.start() for t in threads], [t.join() for t in threads]))
    assert rows_count(backend) == 4 * 10 * 2
    (traces,), = rows(backend, "SELECT count(*) FROM traces")
    assert traces == 40


async def test_stats_report_commits(backend):
    await grpc_export(backend, trace_request([make_span(0x31, 1, None, "s", {})]).SerializeToString())
    for _ in range(100):
        if backend.pipeline.stats.writer.get("spans"):
            break
        await asyncio.sleep(0.05)
    assert backend.pipeline.stats.writer["spans"] == 1
    assert backend.pipeline.stats.accepted == 1


def test_json_bodies_keep_attribute_values_named_like_ids():
    """Only real id fields are hex-decoded: an attribute called spanId keeps its string value."""
    from receiver.otlp import parse_json

    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "s",
        "attributes": [{"key": "spanId", "value": {"stringValue": "not-hex!"}}]}]}]}]}
    request, _ = parse_json("traces", json.dumps(body).encode())
    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.attributes[0].value.string_value == "not-hex!"
