"""Random and mutated OTLP bytes never crash the receiver.

Two levels: many examples straight into the decoder and normalizer (fast, finds the bugs), and
fewer over both real protocols against a running server, which must answer every one of them with
success or a client error and still be healthy afterwards.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.normalize import IngestOptions, Normalizer
from receiver.otlp import OtlpDecodeError, decode_body, message_to_otlp_json
from receiver.prices import PriceTable
from tests.otlp_factory import T0, kv, log_record, logs_request, make_span, trace_request

NORMALIZER = Normalizer(PriceTable.load(), IngestOptions(max_attr_bytes=4096))


def _seed_traces() -> bytes:
    spans = [
        make_span(1, 1, None, "root", {"app.llm.feature": "f", "tenant.id": "t"}),
        make_span(1, 2, 1, "chat gpt-4o", {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 7,
            "gen_ai.usage.cache_read.input_tokens": 50, "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi a@b.co"}]}]),
            "llm.input_messages.0.message.content": "x", "langfuse.observation.usage_details": '{"input": 3}',
            "structured": {"a": [1, 2.5, True, b"\x00"]}},
            events=[("gen_ai.content.prompt", T0 + 5, {"gen_ai.prompt": "[]"}), ("exception", T0 + 6, {"exception.type": "E"})]),
    ]
    return trace_request(spans).SerializeToString()


SEED_TRACES = _seed_traces()
SEED_LOGS = logs_request([log_record(trace_id=1, span_id=2, event_name="gen_ai.choice",
                                     body={"finish_reason": "stop", "message": {"content": "ok"}})]).SerializeToString()
SEED_JSON = json.dumps(message_to_otlp_json(__import__(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2", fromlist=["x"]
).ExportTraceServiceRequest.FromString(SEED_TRACES))).encode()


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:i + draw(st.integers(1, 64))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            j = draw(st.integers(i, min(len(data), i + 200)))
            data[i:i] = data[i:j]
    return bytes(data)


def _decode_and_normalize(signal: str, body: bytes, json_body: bool = False) -> None:
    try:
        message, repaired = decode_body(signal, body, json_body=json_body, gzipped=False)
    except OtlpDecodeError:
        return
    if signal == "traces":
        NORMALIZER.decode_traces(message, T0, utf8_repaired=repaired)
    elif signal == "logs":
        NORMALIZER.decode_logs(message, T0, utf8_repaired=repaired)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=2048), mutated(SEED_TRACES)))
def test_decoder_survives_random_and_mutated_trace_bytes(body):
    _decode_and_normalize("traces", body)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=1024), mutated(SEED_LOGS)))
def test_decoder_survives_random_and_mutated_log_bytes(body):
    _decode_and_normalize("logs", body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(mutated(SEED_JSON), json_values.map(lambda v: json.dumps(v).encode()),
                 st.builds(lambda v: json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [v]}]}]}).encode(),
                           json_values)))
def test_decoder_survives_random_and_mutated_json(body):
    _decode_and_normalize("traces", body, json_body=True)


attribute_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**63 - 1) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=60), attribute_values, max_size=20))
def test_normalizer_survives_any_attribute_values_on_known_keys(attrs):
    """Known GenAI keys with wrong types (a list of tokens, a dict as a model name…)."""
    from receiver import semconv

    keys = sorted(semconv.all_known_keys() | semconv.CONTENT_KEYS)
    hostile = {keys[hash(k) % len(keys)]: v for k, v in attrs.items()}
    span = make_span(9, 9, None, "chat x", {k: _as_attr(v) for k, v in hostile.items()})
    rows, *_ = NORMALIZER.decode_traces(trace_request([span]), T0)
    assert len(rows) == 1


def _as_attr(value):
    if isinstance(value, float) and value != value:
        return "nan"
    return value if value is not None else ""


# --- over the wire ----------------------------------------------------------------------------------

pytestmark_anyio = pytest.mark.anyio


@pytest.fixture(scope="module")
def live_backend(tmp_path_factory):
    """One real backend for the whole module, run on its own event loop thread."""
    import threading

    from llmobs_tui.backend import Backend, BackendConfig
    from receiver.pipeline import PipelineConfig

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    backend = Backend(BackendConfig(PipelineConfig(db_path=str(tmp_path_factory.mktemp("fuzz") / "f.db"),
                                                   decoders=1, retention_s=None), grpc_port=0, http_port=0))
    asyncio.run_coroutine_threadsafe(backend.start(), loop).result(60)
    yield backend
    asyncio.run_coroutine_threadsafe(backend.aclose(), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=512), mutated(SEED_TRACES)))
def test_grpc_answers_every_mutation_with_success_or_invalid_argument(live_backend, body):
    channel = grpc.insecure_channel(live_backend.grpc_address)
    try:
        channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")(body, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
    finally:
        channel.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(mutated(SEED_TRACES), mutated(SEED_JSON)), as_json=st.booleans())
def test_http_answers_every_mutation_with_200_or_400(live_backend, body, as_json):
    async def post() -> int:
        async with aiohttp.ClientSession() as session:
            async with session.post(live_backend.http_address + "/v1/traces", data=body, headers={
                    "Content-Type": "application/json" if as_json else "application/x-protobuf"}) as response:
                await response.read()
                return response.status

    assert asyncio.run(post()) in (200, 400)


def test_the_fuzzed_server_is_still_healthy(live_backend):
    """Runs after the fuzzing above (file order): no child crashed, valid requests still work."""
    channel = grpc.insecure_channel(live_backend.grpc_address)
    channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")(SEED_TRACES, timeout=30)
    channel.close()
    assert live_backend.pipeline.stats.restarts == 0


def test_kv_helper_round_trips_every_value_type():
    for value in ("s", True, 3, 2.5, b"\x01", [1, "a"], {"k": [True]}):
        from receiver.normalize import any_value

        assert any_value(kv("k", value).value) == value
