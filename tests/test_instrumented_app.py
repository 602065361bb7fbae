"""An app instrumented with a stock OTel GenAI library, end to end through `serve` and `report`.

The real openai SDK calls a local stand-in for the API; a real instrumentation (OpenInference, and
the OTel contrib library) turns the calls into spans; the real OTel SDK exports them over gRPC or
HTTP to a real `llmobs-tui serve`; `llmobs-tui report` must show the provider's usage and the
exact cost.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from receiver.prices import PriceTable
from tests.stand_in_openai import EMBEDDING_TOKENS, USAGE, StandInOpenAI

pytestmark = pytest.mark.slow

PRICES = PriceTable.load()


def expected_cost_nusd(provider: str, model: str, inp: int, out: int, cache_read: int, reasoning: int) -> int:
    row = PRICES.lookup(provider, model)
    assert row is not None, model
    return PRICES.cost_nusd(row, inp, out, cache_read, 0, reasoning)


def start_serve(db: Path) -> tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "llmobs_tui", "serve", "--db", str(db), "--grpc-port", "0",
                             "--http-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    grpc_address = re.search(r"OTLP/gRPC on (\S+?),", line).group(1)
    http_address = re.search(r"OTLP/HTTP on (\S+?);", line).group(1)
    return proc, grpc_address, http_address


def report(db: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "llmobs_tui", "report", "--db", str(db), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_app_calls(base_url: str) -> None:
    """What an application does: chat, streamed chat, a reasoning model, embeddings, an unknown
    model, and one call the provider rejects with 429."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Where is my parcel?"}])
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "When?"}],
                                            stream=True, stream_options={"include_usage": True})
    for _chunk in stream:
        pass
    client.chat.completions.create(model="o3-mini", messages=[{"role": "user", "content": "Plan the refund."}])
    client.embeddings.create(model="text-embedding-3-small", input="return policy")
    client.chat.completions.create(model="local-llama", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "again"}],
                                       user="force-429")


def export_through(instrumentation: str, protocol: str, endpoint: str, base_url: str) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    provider = TracerProvider(resource=Resource.create({"service.name": "refund-bot"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if instrumentation == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
    else:
        # The OTel contrib library's successor (opentelemetry-python-genai): the latest conventions.
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        run_app_calls(base_url)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()  # flushes every span to serve


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_openinference_instrumented_app_is_reported_to_the_cent(tmp_path, protocol):
    db = tmp_path / "app.db"
    proc, grpc_address, http_address = start_serve(db)
    try:
        with StandInOpenAI() as provider_api:
            export_through("openinference", protocol, grpc_address if protocol == "grpc" else http_address,
                           provider_api.base_url)
            assert len(provider_api.requests) == 8
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    groups = {g["key"]["model"]: g for g in json.loads(report(db, "--by", "model", "--format", "json"))["groups"]}

    # gpt-4o: three calls with the provider's usage, plus the 429, which is an api error and free.
    model, prompt, cached, completion, reasoning = USAGE["gpt-4o"]
    gpt = groups["gpt-4o"]
    assert gpt["calls"] == 4
    assert gpt["errors"]["api"] == 1 and gpt["errors"]["api_by_class"]["rate_limit"] == 1
    assert gpt["tokens"] == {"input": 3 * prompt, "output": 3 * completion, "cache_read": 3 * cached,
                             "cache_write": 0, "reasoning": 0}
    expected = 3 * expected_cost_nusd("openai", model, prompt, completion, cached, 0)
    assert gpt["cost_usd"] == expected / 1e9  # exact: (800×2.5 + 400×1.25 + 150×10)/1M × 3
    assert round(gpt["cost_usd"], 2) == round(3 * (800 * 2.5 + 400 * 1.25 + 150 * 10) / 1e6, 2)
    assert gpt["unpriced_calls"] == 0

    model, prompt, cached, completion, reasoning = USAGE["o3-mini"]
    o3 = groups["o3-mini"]
    assert o3["tokens"]["reasoning"] == reasoning and o3["tokens"]["output"] == completion
    assert o3["cost_usd"] == expected_cost_nusd("openai", model, prompt, completion, 0, reasoning) / 1e9

    mini = groups["gpt-4o-mini"]
    model, prompt, cached, completion, _ = USAGE["gpt-4o-mini"]
    assert mini["tokens"]["input"] == prompt and mini["tokens"]["output"] == completion
    assert mini["cost_usd"] == expected_cost_nusd("openai", model, prompt, completion, 0, 0) / 1e9
    assert mini["ttft_ms"]["p50"] is not None, "the streamed call has a time to first token"

    embedding = groups["text-embedding-3-small"]
    assert embedding["tokens"]["input"] == EMBEDDING_TOKENS
    assert embedding["cost_usd"] == expected_cost_nusd("openai", "text-embedding-3-small", EMBEDDING_TOKENS, 0, 0, 0) / 1e9

    llama = groups["local-llama"]
    assert llama["unpriced_calls"] == 1 and llama["cost_usd"] == 0, "unknown models are unpriced, never $0 billed"
    markdown = report(db, "--by", "model")
    assert "| gpt-4o |" in markdown and "1 unpriced" in markdown


def test_otel_genai_instrumented_app_is_reported_to_the_cent(tmp_path):
    """The official OTel instrumentation (opentelemetry-instrumentation-genai-openai) reports
    current GenAI semconv keys, cached tokens and time to first chunk included."""
    db = tmp_path / "otel.db"
    proc, grpc_address, _ = start_serve(db)
    try:
        with StandInOpenAI() as provider_api:
            export_through("otel-genai", "grpc", grpc_address, provider_api.base_url)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    groups = {g["key"]["model"]: g for g in json.loads(report(db, "--by", "model", "--format", "json"))["groups"]}
    model, prompt, cached, completion, _ = USAGE["gpt-4o"]
    gpt = groups["gpt-4o"]
    assert gpt["calls"] == 4 and gpt["errors"]["api_by_class"]["rate_limit"] == 1
    assert gpt["tokens"]["input"] == 3 * prompt and gpt["tokens"]["output"] == 3 * completion
    assert gpt["tokens"]["cache_read"] == 3 * cached
    assert gpt["cost_usd"] == 3 * expected_cost_nusd("openai", model, prompt, completion, cached, 0) / 1e9
    o3_model, o3_prompt, _, o3_completion, o3_reasoning = USAGE["o3-mini"]
    o3 = groups["o3-mini"]
    reported_reasoning = o3["tokens"]["reasoning"]
    assert reported_reasoning in (0, o3_reasoning)  # whatever it reports, priced accordingly
    assert o3["cost_usd"] == expected_cost_nusd("openai", o3_model, o3_prompt, o3_completion, 0, reported_reasoning) / 1e9
    assert groups["gpt-4o-mini"]["ttft_ms"]["p50"] is not None
    assert groups["text-embedding-3-small"]["tokens"]["input"] == EMBEDDING_TOKENS
    assert groups["local-llama"]["unpriced_calls"] == 1
