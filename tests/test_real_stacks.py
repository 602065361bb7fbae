"""Real LLM stacks end to end: real SDKs and frameworks, real instrumentations, stand-in providers.

Each stack runs in its own subprocess (global tracer providers and monkey-patching instrumentors must
not leak between stacks) against a local stand-in for the provider's HTTP API that reports KNOWN usage,
exports through the real OTel SDK OTLP exporter to a real `llmobs-tui serve` with its own store, and is
read back with `llmobs-tui report --format json` after `serve` shut down. Expected costs are worked out
by hand below from the shipped price table (receiver/prices.toml, USD per 1M tokens), never by calling
the pricing code under test.

Stacks: the anthropic SDK's own spans (scope com.anthropic.sdk.python, on by default since anthropic
1.14.0), alone and beside OpenLLMetry's and OpenInference's anthropic instrumentations; LangChain over
the openai SDK with OpenInference on both; pydantic-ai over the openai SDK (its own OTel GenAI spans
plus OpenInference on the SDK); google-genai with the OTel contrib and with the OpenInference
instrumentation; the Vercel AI SDK in Node (tests/node). The Python apps handle each call in a server
span of their own, as a web app does; the "_bare" variants have none, as a script does, so that two
instrumentations' spans of one call can land in two traces. Each app plants an e-mail address in a
prompt: it must not reach the store file.

Run one stack's app by hand:  python -m tests.test_real_stacks APP OTLP_ENDPOINT BASE_URL DUMP_FILE
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NODE_APP_DIR = Path(__file__).resolve().parent / "node"
EMAIL = "jane.doe.refunds@example.com"
FORCE_429 = "[force-429]"

# --- prices, per 1M tokens, copied by hand from receiver/prices.toml ------------------------------
# anthropic/claude-sonnet-4-5: input 3.0, output 15.0, cache_read 0.3, cache_write 3.75
# anthropic/claude-haiku-4-5:  input 1.0, output 5.0,  cache_read 0.1, cache_write 1.25
# openai/gpt-4o:               input 2.5, output 10.0, cache_read 1.25
# openai/gpt-4o-mini:          input 0.15, output 0.6, cache_read 0.075
# openai/text-embedding-3-small: input 0.02
# google/gemini-2.5-flash:     input 0.3, output 2.5, cache_read 0.03 (reasoning priced as output)
#
# The stand-ins' usage (tests/stand_in_*.py), per call:
# Anthropic: input_tokens 1000 (uncached) + cache_read 200 + cache_creation 34 = 1234 input; output 56
SONNET_CALL_USD = (1000 * 3.0 + 200 * 0.3 + 34 * 3.75 + 56 * 15.0) / 1e6  # = 0.0040275
HAIKU_CALL_USD = (1000 * 1.0 + 200 * 0.1 + 34 * 1.25 + 56 * 5.0) / 1e6  # = 0.0013425
# OpenAI gpt-4o: prompt 1200 incl. 400 cached; completion 150
GPT4O_CALL_USD = ((1200 - 400) * 2.5 + 400 * 1.25 + 150 * 10.0) / 1e6  # = 0.004
# OpenAI gpt-4o-mini: prompt 800, none cached; completion 60
GPT4O_MINI_CALL_USD = (800 * 0.15 + 60 * 0.6) / 1e6  # = 0.000156
# OpenAI text-embedding-3-small: 42 input tokens
EMBEDDING_CALL_USD = 42 * 0.02 / 1e6  # = 0.00000084
# Gemini: promptTokenCount 1234 incl. 200 cached; candidates 56 + thoughts 44 = 100 output incl. 44 reasoning
GEMINI_CALL_USD = ((1234 - 200) * 0.3 + 200 * 0.03 + (56 + 44) * 2.5) / 1e6  # = 0.0005662

ANTHROPIC_TOKENS = {"input": 1234, "output": 56, "cache_read": 200, "cache_write": 34, "reasoning": 0}
GPT4O_TOKENS = {"input": 1200, "output": 150, "cache_read": 400, "cache_write": 0, "reasoning": 0}
GPT4O_MINI_TOKENS = {"input": 800, "output": 60, "cache_read": 0, "cache_write": 0, "reasoning": 0}
GEMINI_TOKENS = {"input": 1234, "output": 100, "cache_read": 200, "cache_write": 0, "reasoning": 44}


def times(n: int, tokens: dict[str, int]) -> dict[str, int]:
    return {k: n * v for k, v in tokens.items()}


# ==================================================================================================
# The applications. Each runs in a subprocess: `python -m tests.test_real_stacks APP ...`.
# ==================================================================================================


class _Dump:
    """A span exporter that keeps what the app emitted, for the report printed when a test fails."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        for s in spans:
            self.spans.append({
                "name": s.name,
                "scope": s.instrumentation_scope.name if s.instrumentation_scope else None,
                "trace_id": f"{s.context.trace_id:032x}",
                "span_id": f"{s.context.span_id:016x}",
                "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
                "kind": s.kind.name,
                "status": s.status.status_code.name,
                "attributes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in (s.attributes or {}).items()},
                "events": [{"name": e.name, "attributes": {k: (list(v) if isinstance(v, tuple) else v)
                                                           for k, v in (e.attributes or {}).items()}} for e in s.events],
            })
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _setup_otel(endpoint: str, service: str) -> tuple[Any, Any, _Dump]:
    """The OTel SDK as an application sets it up: global tracer and logger providers, OTLP exporters
    (gRPC for grpc://HOST:PORT, else OTLP/HTTP protobuf)."""
    from opentelemetry import _logs, trace
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if endpoint.startswith("grpc://"):
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        target = "http://" + endpoint.removeprefix("grpc://")
        span_exporter, log_exporter = OTLPSpanExporter(endpoint=target, insecure=True), OTLPLogExporter(endpoint=target, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter, log_exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")
    resource = Resource.create({"service.name": service})
    dump = _Dump()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    tracer_provider.add_span_processor(SimpleSpanProcessor(dump))  # type: ignore[arg-type]
    trace.set_tracer_provider(tracer_provider)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    _logs.set_logger_provider(logger_provider)
    return tracer_provider, logger_provider, dump


# A web app handles each request in a server span, so every provider call below has an ancestor span
# of the app's; a script or a batch job has none, and each instrumentation's span may start a trace
# of its own. APP_SPANS is False for the "_bare" variants.
APP_SPANS = True


def handling(request: str) -> Any:
    """The app's span for one request (POST /refund ...), current while the request is handled."""
    import contextlib

    from opentelemetry import trace

    if not APP_SPANS:
        return contextlib.nullcontext()
    return trace.get_tracer("refund-web-app").start_as_current_span(request, kind=trace.SpanKind.SERVER)


def _anthropic_calls(base_url: str) -> None:
    """Sonnet: one call (e-mail in the prompt) and one 429. Haiku: create(stream=True) and the
    messages.stream() helper, each read to the end. Each in a request of its own."""
    import anthropic

    client = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0)
    with handling("POST /refund"):
        client.messages.create(model="claude-sonnet-4-5", max_tokens=512,
                               messages=[{"role": "user", "content": f"Refund order 1182 and mail {EMAIL}"}])
    with handling("POST /refund/eta"):
        for _event in client.messages.create(model="claude-haiku-4-5", max_tokens=512, stream=True,
                                             messages=[{"role": "user", "content": "When does it arrive?"}]):
            pass
    with handling("POST /refund/invoice"):
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=512,
                                    messages=[{"role": "user", "content": "And the invoice?"}]) as stream:
            for _text in stream.text_stream:
                pass
    with handling("POST /refund"):
        try:
            client.messages.create(model="claude-sonnet-4-5", max_tokens=512,
                                   messages=[{"role": "user", "content": f"again {FORCE_429}"}])
        except anthropic.RateLimitError:
            pass
        else:
            raise AssertionError("the stand-in should have answered 429")


def app_anthropic_native(base_url: str) -> None:
    # The SDK's own spans record content only when asked; an app that wants prompts on them sets this.
    os.environ["ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE"] = "content"
    _anthropic_calls(base_url)


def app_anthropic_openllmetry(base_url: str) -> None:
    """OpenLLMetry's instrumentation beside the SDK's own spans (on by default: two spans per call)."""
    os.environ["TRACELOOP_TRACE_CONTENT"] = "true"
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

    AnthropicInstrumentor().instrument()
    _anthropic_calls(base_url)


def app_anthropic_openinference(base_url: str) -> None:
    """OpenInference's instrumentation beside the SDK's own spans."""
    from openinference.instrumentation.anthropic import AnthropicInstrumentor

    AnthropicInstrumentor().instrument()
    _anthropic_calls(base_url)


def app_langchain_openai(base_url: str) -> None:
    """LangChain's ChatOpenAI over the openai SDK, OpenInference on both: a chain invoke (gpt-4o, the
    e-mail in the prompt), a streamed call (gpt-4o-mini) and a 429 (gpt-4o)."""
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI
    from openinference.instrumentation.langchain import LangChainInstrumentor
    from openinference.instrumentation.openai import OpenAIInstrumentor

    LangChainInstrumentor().instrument()
    OpenAIInstrumentor().instrument()
    import openai

    llm = ChatOpenAI(model="gpt-4o", base_url=base_url, api_key="sk-test", max_retries=0)
    chain = ChatPromptTemplate.from_messages([("system", "You answer refund questions."), ("user", "{question}")]) | llm
    with handling("POST /refund"):
        chain.invoke({"question": f"Refund order 1182 and mail {EMAIL}"})
    streaming = ChatOpenAI(model="gpt-4o-mini", base_url=base_url, api_key="sk-test", max_retries=0, stream_usage=True)
    with handling("POST /refund/eta"):
        for _chunk in streaming.stream("When does it arrive?"):
            pass
    with handling("POST /refund"):
        try:
            llm.invoke(f"again {FORCE_429}")
        except openai.RateLimitError:
            pass
        else:
            raise AssertionError("the stand-in should have answered 429")


def app_pydantic_ai(base_url: str) -> None:
    """A pydantic-ai agent over the openai SDK: its own OTel GenAI spans (Agent.instrument_all, through
    the global tracer provider), OpenInference on the SDK below it. One call, then one that the
    provider rejects with 429."""
    from openai import AsyncOpenAI
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from pydantic_ai import Agent
    from pydantic_ai.exceptions import ModelAPIError
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    OpenAIInstrumentor().instrument()
    Agent.instrument_all(InstrumentationSettings(include_content=True))
    client = AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(openai_client=client))
    agent = Agent(model, name="refund-agent", instructions="You answer refund questions.")
    with handling("POST /refund"):
        agent.run_sync(f"Refund order 1182 and mail {EMAIL}")
    with handling("POST /refund"):
        try:
            agent.run_sync(f"again {FORCE_429}")
        except ModelAPIError as exc:
            print(f"pydantic-ai raised {[c.__name__ for c in type(exc).__mro__[:4]]}: {exc}", file=sys.stderr)
        else:
            raise AssertionError("the stand-in should have answered 429")


def _google_calls(base_url: str) -> None:
    """A call (e-mail in the prompt), a stream read to the end, and a 429 (RESOURCE_EXHAUSTED)."""
    from google import genai
    from google.genai import errors, types

    client = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=base_url))
    with handling("POST /refund"):
        client.models.generate_content(model="gemini-2.5-flash", contents=f"Refund order 1182 and mail {EMAIL}")
    with handling("POST /refund/eta"):
        for _chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="When does it arrive?"):
            pass
    with handling("POST /refund"):
        try:
            client.models.generate_content(model="gemini-2.5-flash", contents=f"again {FORCE_429}")
        except errors.ClientError:
            pass
        else:
            raise AssertionError("the stand-in should have answered 429")


def app_google_genai(base_url: str) -> None:
    """google-genai with the OTel contrib instrumentation (content as span attributes)."""
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_AND_EVENT"
    from opentelemetry.instrumentation.google_genai import GoogleGenAiSdkInstrumentor

    GoogleGenAiSdkInstrumentor().instrument()
    _google_calls(base_url)


def app_google_genai_openinference(base_url: str) -> None:
    from openinference.instrumentation.google_genai import GoogleGenAIInstrumentor

    GoogleGenAIInstrumentor().instrument()
    _google_calls(base_url)


APPS: dict[str, Callable[[str], None]] = {
    "anthropic_native": app_anthropic_native,
    "anthropic_openllmetry": app_anthropic_openllmetry,
    "anthropic_openinference": app_anthropic_openinference,
    "langchain_openai": app_langchain_openai,
    "pydantic_ai": app_pydantic_ai,
    "google_genai": app_google_genai,
    "google_genai_openinference": app_google_genai_openinference,
}


def main(argv: list[str]) -> int:
    global APP_SPANS
    app, endpoint, base_url, dump_file = argv
    tracer_provider, logger_provider, dump = _setup_otel(endpoint, f"{app.replace('_', '-')}-app")
    if app.endswith("_bare"):
        APP_SPANS, app = False, app.removesuffix("_bare")
    try:
        APPS[app](base_url)
    finally:
        tracer_provider.shutdown()  # flushes every span to serve and waits for the acknowledgement
        logger_provider.shutdown()
        Path(dump_file).write_text(json.dumps(dump.spans, indent=1, default=str))
    return 0


# ==================================================================================================
# The harness: serve, the app, report.
# ==================================================================================================


@dataclass
class StackRun:
    name: str
    db: Path
    report: dict[str, Any]
    spans: list[dict[str, Any]]
    app_output: str
    serve_output: str = ""
    provider_requests: list[tuple[str, dict]] = field(default_factory=list)

    def group(self, model_prefix: str) -> dict[str, Any]:
        """The report group of a model: the request model or a dated response model."""
        dated = re.compile(rf"{re.escape(model_prefix)}(-\d{{4}}-\d{{2}}-\d{{2}}|-\d{{8}})?")
        found = [g for g in self.report["groups"] if dated.fullmatch(g["key"].get("model") or "")]
        assert len(found) == 1, f"expected one report group for {model_prefix!r}, got {len(found)}\n{self.explain()}"
        return found[0]

    def explain(self) -> str:
        """The report and the span tree the app emitted: printed when an assertion fails."""
        by_id = {s["span_id"]: s for s in self.spans}
        children: dict[str | None, list[dict]] = {}
        for s in self.spans:
            parent = s["parent_id"] if s["parent_id"] in by_id else None
            children.setdefault(parent, []).append(s)
        interesting = re.compile(r"usage|token|model|span\.kind|operation|error|request\.type|ai\.operationId|status_code")
        lines: list[str] = []

        def walk(span: dict, depth: int) -> None:
            attrs = {k: v for k, v in span["attributes"].items() if interesting.search(k) and not isinstance(v, (list, dict))
                     and len(str(v)) < 80}
            lines.append(f"{'  ' * depth}- {span['name']} [{span['scope']}] trace {span['trace_id'][:8]} {span['kind']} "
                         f"{span['status']} {attrs}")
            for child in children.get(span["span_id"], []):
                walk(child, depth + 1)

        for root in children.get(None, []):
            walk(root, 0)
        return (f"\n--- {self.name}: report --format json --by model ---\n{json.dumps(self.report['groups'], indent=1)}"
                f"\n--- spans the app emitted ---\n" + "\n".join(lines) + f"\n--- app output ---\n{self.app_output[-3000:]}"
                f"\n--- serve output ---\n{self.serve_output[-3000:]}")


def _start_serve(db: Path) -> tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "llmobs_tui", "serve", "--db", str(db), "--grpc-port", "0",
                             "--http-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    grpc = re.search(r"OTLP/gRPC on (\S+?),", line)
    http = re.search(r"OTLP/HTTP on (\S+?);", line)
    if not (grpc and http):
        proc.kill()
        raise AssertionError(f"serve did not start: {line}{proc.stdout.read()}")  # type: ignore[union-attr]
    return proc, grpc.group(1), http.group(1)


def _stop_serve(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"serve did not stop on SIGTERM: {out}") from None
    assert proc.returncode == 0, f"serve exited {proc.returncode}: {out}"
    return out


def _report(db: Path) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "llmobs_tui", "report", "--db", str(db), "--by", "model",
                             "--format", "json"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_stack(tmp: Path, name: str, stand_in: Any, app_command: Callable[[str, str, Path], list[str]],
              protocol: str, cwd: Path = ROOT) -> StackRun:
    """serve → the app (a subprocess) against the stand-in → serve stops → report."""
    db = tmp / f"{name}.db"
    dump = tmp / f"{name}.spans.json"
    proc, grpc_address, http_address = _start_serve(db)
    endpoint = f"grpc://{grpc_address}" if protocol == "grpc" else http_address
    try:
        with stand_in as provider_api:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            for key in [k for k in env if k.startswith(("OTEL_", "ANTHROPIC_", "TRACELOOP_"))]:
                del env[key]
            env["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
            app = subprocess.run(app_command(endpoint, provider_api.base_url, dump), capture_output=True, text=True,
                                 timeout=120, cwd=cwd, env=env)
            requests = list(provider_api.requests)
    finally:
        serve_output = _stop_serve(proc)
    output = app.stdout + app.stderr
    assert app.returncode == 0, f"the {name} app failed:\n{output}\nserve:\n{serve_output}"
    spans = json.loads(dump.read_text()) if dump.exists() else []
    run = StackRun(name, db, _report(db), spans, output, serve_output, requests)
    committed = re.search(r"(\d+) spans committed", serve_output)
    assert committed and int(committed.group(1)) >= len(spans), (
        f"premise: serve committed every span the app sent ({len(spans)})\n{run.explain()}")
    return run


def python_app(app: str) -> Callable[[str, str, Path], list[str]]:
    return lambda endpoint, base_url, dump: [sys.executable, "-m", "tests.test_real_stacks", app, endpoint, base_url, str(dump)]


# --- what the store holds ---------------------------------------------------------------------------


def stored_text(db: Path) -> str:
    """Everything the store file holds, as text: the file's bytes (and its WAL, if any) plus every
    zstd blob (spans.raw, logs.raw) decompressed, and the resource and scope blobs."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    parts = [p.read_bytes().decode("latin-1") for p in (db, Path(f"{db}-wal")) if p.exists()]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for table in ("spans", "logs"):
            for (raw,) in conn.execute(f"SELECT raw FROM {table} WHERE raw IS NOT NULL"):
                parts.append(decompressor.decompress(raw, max_output_size=64 << 20).decode("latin-1"))
        for table in ("resources", "scopes"):
            for (blob,) in conn.execute(f"SELECT blob FROM {table}"):
                parts.append(bytes(blob).decode("latin-1"))
    finally:
        conn.close()
    return "\n".join(parts)


def where_stored(db: Path, needle: str) -> list[str]:
    """Which stored spans/log records still hold `needle`, and under which attribute keys."""
    import zstandard
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    decompressor = zstandard.ZstdDecompressor()
    found: list[str] = []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for (name, raw) in conn.execute("SELECT name, raw FROM spans WHERE raw IS NOT NULL"):
            span = Span.FromString(decompressor.decompress(raw, max_output_size=64 << 20))
            keys = [a.key for a in span.attributes if needle in str(a.value)]
            keys += [f"event {e.name}" for e in span.events if needle in str(e)]
            if keys:
                found.append(f"span {name!r}: {keys}")
        for (event_name, raw) in conn.execute("SELECT event_name, raw FROM logs WHERE raw IS NOT NULL"):
            record = LogRecord.FromString(decompressor.decompress(raw, max_output_size=64 << 20))
            if needle in str(record):
                found.append(f"log {event_name!r}")
    finally:
        conn.close()
    return found


def assert_no_email_stored(run: StackRun) -> None:
    emitted = [s["name"] for s in run.spans if EMAIL in json.dumps(s["attributes"])]
    assert emitted, f"premise: the app's spans carry the e-mail somewhere\n{run.explain()}"
    assert EMAIL not in stored_text(run.db), (
        f"{run.name}: the e-mail planted in the prompt reached the store: {where_stored(run.db, EMAIL)}")


def assert_usd(actual: float, expected: float, run: StackRun, what: str) -> None:
    assert actual == pytest.approx(expected, rel=0, abs=1e-8), (
        f"{what}: cost ${actual:.9f}, expected ${expected:.9f} (x{actual / expected if expected else 0:.3f})\n{run.explain()}")


def assert_billed(run: StackRun, model: str, *, calls: int | None, tokens: dict[str, int], usd: float) -> None:
    """The model's report group: provider calls (each once, failed ones included; None: not checked),
    tokens and cost."""
    g = run.group(model)
    got = {"calls": g["calls"], "tokens": g["tokens"], "unpriced": g["unpriced_calls"]}
    want = {"calls": calls, "tokens": tokens, "unpriced": 0}
    if calls is None:
        del got["calls"], want["calls"]
    assert got == want, f"{run.name} {model}: got {got}\nexpected {want}\n{run.explain()}"
    assert_usd(g["cost_usd"], usd, run, f"{run.name} {model}")


def assert_one_rate_limit_error(run: StackRun) -> None:
    """Over the whole report (every group, the model-less ones too): the one 429 is one api
    rate_limit error, and nothing is a validation or guardrail error."""
    errors = {"api": 0, "rate_limit": 0, "validation": 0, "guardrail": 0}
    for g in run.report["groups"]:
        errors["api"] += g["errors"]["api"]
        errors["rate_limit"] += g["errors"]["api_by_class"]["rate_limit"]
        errors["validation"] += g["errors"]["validation"]
        errors["guardrail"] += g["errors"]["guardrail"]
    want = {"api": 1, "rate_limit": 1, "validation": 0, "guardrail": 0}
    assert errors == want, f"{run.name}: errors {errors}, expected {want}\n{run.explain()}"


# ==================================================================================================
# The tests.
# ==================================================================================================


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """Each stack runs once, on first use, and its result is shared by the tests that check it."""
    runs: dict[str, StackRun | BaseException] = {}

    def get(name: str) -> StackRun:
        if name not in runs:
            try:
                runs[name] = _RUNNERS[name](tmp_path_factory.mktemp(name))
            except (Exception, pytest.skip.Exception) as exc:  # a stack that failed to run fails each of its tests once
                runs[name] = exc
        result = runs[name]
        if isinstance(result, BaseException):
            raise result
        return result

    return get


def _python_stack(stand_in: str, app: str, protocol: str) -> Callable[[Path], StackRun]:
    def run(tmp: Path) -> StackRun:
        import importlib

        module, cls = stand_in.rsplit(".", 1)
        return run_stack(tmp, app, getattr(importlib.import_module(module), cls)(), python_app(app), protocol)
    return run


def _node_modules() -> Path:
    """tests/node/node_modules, installed from the lock file once (again when the lock file changes)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the Vercel AI SDK stack (Node >= 20.6)")
    lock = NODE_APP_DIR / "package-lock.json"
    stamp = NODE_APP_DIR / "node_modules" / ".installed-from-lock"
    if not stamp.exists() or stamp.read_text() != lock.read_text():
        result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_APP_DIR,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        stamp.write_text(lock.read_text())
    return NODE_APP_DIR / "node_modules"


def _vercel(tmp: Path) -> StackRun:
    from tests.stand_in_openai import StandInOpenAI

    _node_modules()
    command = lambda endpoint, base_url, dump: ["node", "vercel_app.mjs", endpoint, base_url, EMAIL, str(dump)]  # noqa: E731
    return run_stack(tmp, "vercel_ai", StandInOpenAI(), command, "http", cwd=NODE_APP_DIR)


ANTHROPIC = "tests.stand_in_anthropic.StandInAnthropic"
OPENAI = "tests.stand_in_openai.StandInOpenAI"
GOOGLE = "tests.stand_in_google.StandInGoogle"
_RUNNERS: dict[str, Callable[[Path], StackRun]] = {
    "anthropic_native": _python_stack(ANTHROPIC, "anthropic_native", "grpc"),
    "anthropic_openllmetry": _python_stack(ANTHROPIC, "anthropic_openllmetry", "grpc"),
    "anthropic_openllmetry_bare": _python_stack(ANTHROPIC, "anthropic_openllmetry_bare", "http"),
    "anthropic_openinference": _python_stack(ANTHROPIC, "anthropic_openinference", "http"),
    "anthropic_openinference_bare": _python_stack(ANTHROPIC, "anthropic_openinference_bare", "grpc"),
    "langchain_openai": _python_stack(OPENAI, "langchain_openai", "grpc"),
    "pydantic_ai": _python_stack(OPENAI, "pydantic_ai", "http"),
    "google_genai": _python_stack(GOOGLE, "google_genai", "http"),
    "google_genai_openinference": _python_stack(GOOGLE, "google_genai_openinference", "grpc"),
    "vercel_ai": _vercel,
}

# What each stack's whole report must add up to: provider calls (failed ones included) and cost.
# The _bare apps' two spans of one call are roots of two traces, linked only by the provider's response
# id, which both carry for a successful call (OpenLLMetry: gen_ai.response.id on both; OpenInference:
# the SDK span's gen_ai.response.id, the "id" in its own output.value JSON); a failed call has none, so
# only the cost is checked there, not the count of calls or errors.
TOTALS: dict[str, tuple[int | None, float]] = {
    **{name: (4, SONNET_CALL_USD + 2 * HAIKU_CALL_USD) for name in _RUNNERS if name.startswith("anthropic")},
    "anthropic_openllmetry_bare": (None, SONNET_CALL_USD + 2 * HAIKU_CALL_USD),
    "anthropic_openinference_bare": (None, SONNET_CALL_USD + 2 * HAIKU_CALL_USD),
    "langchain_openai": (3, GPT4O_CALL_USD + GPT4O_MINI_CALL_USD),
    "pydantic_ai": (2, GPT4O_CALL_USD),
    "google_genai": (3, 2 * GEMINI_CALL_USD),
    "google_genai_openinference": (3, 2 * GEMINI_CALL_USD),
    "vercel_ai": (3, GPT4O_CALL_USD + GPT4O_MINI_CALL_USD + EMBEDDING_CALL_USD),
}


@pytest.mark.parametrize("stack", list(_RUNNERS))
def test_the_whole_report_adds_up_to_the_provider_calls(stacks, stack):
    """Calls and cost over every group, model-less ones included (an agent or chain span billed for
    its aggregated usage, or a second span of one call, shows here whatever its model key)."""
    run = stacks(stack)
    calls, usd = TOTALS[stack]
    made = len(run.provider_requests)
    assert made == (calls or made), "premise: the stand-in saw every call once (no retries)"
    got_calls = sum(g["calls"] for g in run.report["groups"])
    if calls is not None:
        assert got_calls == calls, f"{stack}: {got_calls} calls in the report, {calls} provider calls made\n{run.explain()}"
    assert_usd(sum(g["cost_usd"] for g in run.report["groups"]), usd, run, f"{stack} whole report")


# --- the anthropic SDK ------------------------------------------------------------------------------

ANTHROPIC_STACKS = ["anthropic_native", "anthropic_openllmetry", "anthropic_openllmetry_bare", "anthropic_openinference",
                    "anthropic_openinference_bare"]


def test_anthropic_sdk_emits_its_own_genai_spans(stacks):
    """Premise of the anthropic tests: anthropic >= 1.14 traces every Messages call itself (scope
    com.anthropic.sdk.python, span `anthropic.messages.create`, OTel GenAI keys), on by default."""
    run = stacks("anthropic_native")
    native = [s for s in run.spans if s["scope"] == "com.anthropic.sdk.python"]
    assert len(native) == 4, run.explain()
    ok = [s for s in native if s["status"] == "OK"]
    assert len(ok) == 3
    for s in ok:
        assert s["name"] == "anthropic.messages.create"
        assert s["attributes"]["gen_ai.provider.name"] == "anthropic"
        assert s["attributes"]["gen_ai.usage.input_tokens"] == 1234  # the SDK sums cache reads and writes in
        assert s["attributes"]["gen_ai.usage.output_tokens"] == 56
        assert s["attributes"]["gen_ai.response.id"].startswith("msg_standin_")
    (failed,) = [s for s in native if s["status"] == "ERROR"]
    assert failed["attributes"]["error.type"] == "rate_limit_error"
    assert failed["attributes"]["http.response.status_code"] == 429


def _calls(stack: str, n: int) -> int | None:
    return None if stack.endswith("_bare") else n  # see TOTALS


@pytest.mark.parametrize("stack", ANTHROPIC_STACKS)
def test_anthropic_call_is_billed_once(stacks, stack):
    """One call, one bill, whether the SDK's own span is alone or beside an instrumentation's span of the
    same call: its child (OpenInference), its sibling under the app's request span (OpenLLMetry), or the
    root of another trace (the _bare app has no span of its own; OpenLLMetry never makes its span
    current, so the SDK's span starts a trace of its own)."""
    run = stacks(stack)
    if stack != "anthropic_native":
        scopes = {s["scope"] for s in run.spans}
        assert "com.anthropic.sdk.python" in scopes and len(scopes - {"refund-web-app"}) == 2, (
            f"premise: two spans per call\n{run.explain()}")
    # Sonnet: one call and the 429 (free)
    assert_billed(run, "claude-sonnet-4-5", calls=_calls(stack, 2), tokens=ANTHROPIC_TOKENS, usd=SONNET_CALL_USD)


@pytest.mark.parametrize("stack", ANTHROPIC_STACKS)
def test_anthropic_streamed_calls_are_billed_once(stacks, stack):
    """Haiku: create(stream=True) and the messages.stream() helper, each once. OpenLLMetry's span of a
    stream says 57 output tokens (message_start's 1 plus message_delta's 56); the provider said 56, as
    the SDK's own span does. OpenInference wraps messages.stream() in a span that is not current either."""
    run = stacks(stack)
    assert_billed(run, "claude-haiku-4-5", calls=2, tokens=times(2, ANTHROPIC_TOKENS), usd=2 * HAIKU_CALL_USD)
    assert run.group("claude-haiku-4-5")["ttft_ms"]["p50"] is not None, run.explain()


@pytest.mark.parametrize("stack", [s for s in ANTHROPIC_STACKS if not s.endswith("_bare")])
def test_anthropic_rate_limit_is_one_api_error(stacks, stack):
    assert_one_rate_limit_error(stacks(stack))


@pytest.mark.parametrize("stack", ["anthropic_native", "anthropic_openllmetry", "anthropic_openinference"])
def test_anthropic_prompt_email_is_redacted(stacks, stack):
    assert_no_email_stored(stacks(stack))


# --- LangChain over the openai SDK ------------------------------------------------------------------

def test_langchain_over_openai_is_billed_once(stacks):
    """OpenInference's ChatOpenAI span (under RunnableSequence) and its openai SDK span (ChatCompletion)
    are one call: one bill. The SDK span is never the ChatOpenAI span's child (the LangChain tracer does
    not make its spans current): under the app's request span they are cousins. (Without a request span
    they are roots of two traces, and only a non-streamed success links them, by the response id deep
    in LangChain's output.value: not asserted.)"""
    run = stacks("langchain_openai")
    assert_billed(run, "gpt-4o", calls=2, tokens=GPT4O_TOKENS, usd=GPT4O_CALL_USD)


def test_langchain_over_openai_streamed_is_billed_once(stacks):
    run = stacks("langchain_openai")
    assert_billed(run, "gpt-4o-mini", calls=1, tokens=GPT4O_MINI_TOKENS, usd=GPT4O_MINI_CALL_USD)


def test_langchain_rate_limit_is_one_api_error(stacks):
    assert_one_rate_limit_error(stacks("langchain_openai"))


def test_langchain_prompt_email_is_redacted(stacks):
    assert_no_email_stored(stacks("langchain_openai"))


# --- pydantic-ai over the openai SDK ----------------------------------------------------------------


def test_pydantic_ai_call_is_billed_once(stacks):
    """The agent span (invoke_agent) carries the run's aggregated usage, the chat span the call's, the
    SDK span below it the same call's again: one bill."""
    run = stacks("pydantic_ai")
    assert_billed(run, "gpt-4o", calls=2, tokens=GPT4O_TOKENS, usd=GPT4O_CALL_USD)


def test_pydantic_ai_rate_limit_is_an_api_error(stacks):
    """pydantic-ai raises ModelRateLimitError (a ModelHTTPError) for the 429 and marks its chat and
    agent spans ERROR: one api rate_limit error, no validation failure."""
    assert_one_rate_limit_error(stacks("pydantic_ai"))


def test_pydantic_ai_prompt_email_is_redacted(stacks):
    """pydantic-ai puts the conversation in `pydantic_ai.all_messages` (agent span) and
    `gen_ai.input.messages` (chat span)."""
    assert_no_email_stored(stacks("pydantic_ai"))


# --- google-genai -----------------------------------------------------------------------------------

GOOGLE_STACKS = ["google_genai", "google_genai_openinference"]


@pytest.mark.parametrize("stack", GOOGLE_STACKS)
def test_google_genai_is_billed_to_the_cent(stacks, stack):
    """A call and a stream with cached and thought tokens (billed as output), and the 429."""
    run = stacks(stack)
    assert_billed(run, "gemini-2.5-flash", calls=3, tokens=times(2, GEMINI_TOKENS), usd=2 * GEMINI_CALL_USD)


@pytest.mark.parametrize("stack", GOOGLE_STACKS)
def test_google_genai_rate_limit_is_one_api_error(stacks, stack):
    assert_one_rate_limit_error(stacks(stack))


@pytest.mark.parametrize("stack", GOOGLE_STACKS)
def test_google_genai_prompt_email_is_redacted(stacks, stack):
    assert_no_email_stored(stacks(stack))


# --- the Vercel AI SDK in Node ----------------------------------------------------------------------


def test_vercel_ai_generate_and_stream_are_billed_once(stacks):
    """ai.generateText wraps ai.generateText.doGenerate, ai.streamText ai.streamText.doStream, both
    carrying the usage: one bill each."""
    run = stacks("vercel_ai")
    assert_billed(run, "gpt-4o-mini", calls=1, tokens=GPT4O_MINI_TOKENS, usd=GPT4O_MINI_CALL_USD)
    assert_billed(run, "gpt-4o", calls=1, tokens=GPT4O_TOKENS, usd=GPT4O_CALL_USD)


def test_vercel_ai_embedding_is_billed(stacks):
    """ai.embed / ai.embed.doEmbed carry only `ai.usage.tokens`: 42 input tokens, priced."""
    run = stacks("vercel_ai")
    assert_billed(run, "text-embedding-3-small", calls=1,
                  tokens={"input": 42, "output": 0, "cache_read": 0, "cache_write": 0, "reasoning": 0},
                  usd=EMBEDDING_CALL_USD)


def test_vercel_ai_prompt_and_embedding_email_is_redacted(stacks):
    """The prompt (ai.prompt, ai.prompt.messages) and the embedded value (ai.value) both carry it."""
    assert_no_email_stored(stacks("vercel_ai"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
