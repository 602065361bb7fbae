"""The span/log normalizer (receiver/normalize.py) against payloads shaped like real instrumentations.

Every request is a real protobuf OTLP message built by tests/otlp_factory.py and goes through the
public entry points (`Normalizer.decode_traces` / `decode_logs`, `otlp.parse_protobuf` / `parse_json`).
The attribute dicts follow ../shared/semconv/semconv-map.md §6; the rules are design.md §2.

The eleven bugs this suite found when it was written were fixed; their tests stay as regression tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import zstandard
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver import otlp
from receiver.normalize import (
    DEFAULT_MAX_ATTR_BYTES,
    MAX_ATTRIBUTES,
    MAX_EVENTS,
    IngestOptions,
    Normalizer,
    any_value,
    classify_api_error,
    classify_kind,
    normalize_finish_reason,
)
from receiver.prices import PriceTable
from store.models import (
    COL,
    FLAG_ATTRS_DROPPED,
    FLAG_CONTENT_DROPPED,
    FLAG_DURATION_INVALID,
    FLAG_REDACTED,
    FLAG_TIME_ADJUSTED,
    FLAG_TOKENS_INVALID,
    FLAG_TRUNCATED,
    FLAG_TTFT_INVALID,
    FLAG_UTF8_REPAIRED,
    LOG_COLUMNS,
)
from tests.otlp_factory import (
    MS,
    STATUS_ERROR,
    STATUS_OK,
    T0,
    log_record,
    logs_request,
    make_span,
    span_id_bytes,
    trace_id_bytes,
    trace_request,
)

RECEIVED = T0 + 1000 * 10**9  # the request arrives 1000 s after T0
SECOND = 1000 * MS
PRICES = PriceTable.load()
_DECOMPRESS = zstandard.ZstdDecompressor()
LOG_COL = {name: i for i, name in enumerate(LOG_COLUMNS)}


class Row:
    """A decoded span row with named access: `row.input_tokens` is `values[COL["input_tokens"]]`."""

    def __init__(self, values: Sequence[Any]) -> None:
        assert len(values) == len(COL)
        self.values = values

    def __getattr__(self, name: str) -> Any:
        return self.values[COL[name]]

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)

    @property
    def span(self) -> Span:
        """The span as stored: decompressed from the raw column."""
        return Span.FromString(_DECOMPRESS.decompress(self.raw))

    @property
    def stored_attrs(self) -> dict[str, Any]:
        return {kv.key: any_value(kv.value) for kv in self.span.attributes}


def normalizer(**options: Any) -> Normalizer:
    return Normalizer(PRICES, IngestOptions(**options))


def decode(spans: Sequence[Span], *, norm: Normalizer | None = None, utf8_repaired: bool = False,
           **request_kw: Any) -> tuple[list[Row], Any]:
    request = spans if isinstance(spans, ExportTraceServiceRequest) else trace_request(spans, **request_kw)
    rows, _resources, _scopes, rejections = (norm or normalizer()).decode_traces(
        request, received_ns=RECEIVED, utf8_repaired=utf8_repaired)
    return [Row(r) for r in rows], rejections


def one(attrs: Mapping[str, Any], name: str = "span", *, norm: Normalizer | None = None,
        resource_attrs: Mapping[str, Any] | None = None, **span_kw: Any) -> Row:
    """Decode a request holding one span (trace 1, span 2, root) and return its row."""
    rows, rejections = decode([make_span(1, 2, None, name, attrs, **span_kw)], norm=norm,
                              resource_attrs=resource_attrs)
    assert rejections.count == 0, rejections.reasons
    assert len(rows) == 1
    return rows[0]


def stored_log(values: Sequence[Any]) -> LogRecord:
    return LogRecord.FromString(_DECOMPRESS.decompress(values[LOG_COL["raw"]]))


def decode_logs(records: Sequence[LogRecord], norm: Normalizer | None = None):
    rows, resources, scopes, rejections = (norm or normalizer()).decode_logs(
        logs_request(records), received_ns=RECEIVED)
    return rows, resources, scopes, rejections


def log_field(values: Sequence[Any], name: str) -> Any:
    return values[LOG_COL[name]]


# =================================================================================================
# §6 samples: one Anthropic call (raw usage input 12, cache read 2048, cache write 300, output 85)
# =================================================================================================

SAMPLE_A = {  # OTel current (genai-main / python-genai)
    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.request.temperature": 0.2,
    "gen_ai.request.max_tokens": 1024, "server.address": "api.anthropic.com",
    "gen_ai.response.model": "claude-sonnet-4-5-20250929", "gen_ai.response.id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "gen_ai.response.finish_reasons": ["tool_use"], "gen_ai.usage.input_tokens": 2360,
    "gen_ai.usage.cache_read.input_tokens": 2048, "gen_ai.usage.cache_write.input_tokens": 300,
    "gen_ai.usage.output_tokens": 85, "gen_ai.conversation.id": "conv_42",
    "gen_ai.system_instructions": '[{"type":"text","content":"You are a weather bot."}]',
    "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"Weather in Paris?"}]}]',
    "gen_ai.output.messages": '[{"role":"assistant","parts":[{"type":"tool_call","id":"toolu_01A",'
                              '"name":"get_weather","arguments":{"location":"Paris"}}],"finish_reason":"tool_use"}]',
}
# (a') v1.40–v1.41: the cache-write count under its older name.
SAMPLE_A_V140 = {("gen_ai.usage.cache_creation.input_tokens" if k == "gen_ai.usage.cache_write.input_tokens" else k): v
                 for k, v in SAMPLE_A.items()}
SAMPLE_C = {  # OpenInference (openinference-instrumentation-anthropic), span "messages.create"
    "openinference.span.kind": "LLM", "llm.system": "anthropic", "llm.provider": "anthropic",
    "llm.model_name": "claude-sonnet-4-5-20250929",
    "llm.invocation_parameters": '{"model":"claude-sonnet-4-5","temperature":0.2,"max_tokens":1024}',
    "input.value": '{"messages":[{"role":"user","content":"Weather in Paris?"}],"system":"You are a weather bot."}',
    "input.mime_type": "application/json",
    "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "You are a weather bot.",
    "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": "Weather in Paris?",
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.tool_calls.0.tool_call.id": "toolu_01A",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"location": "Paris"}',
    "output.value": '{"id":"msg_01XF","content":[]}', "output.mime_type": "application/json",
    "llm.token_count.prompt": 2360, "llm.token_count.prompt_details.cache_read": 2048,
    "llm.token_count.prompt_details.cache_write": 300, "llm.token_count.completion": 85,
    "llm.token_count.total": 2445, "session.id": "conv_42", "user.id": "u_123",
    "metadata": '{"tenant":"acme"}', "tag.tags": ["prod"],
}
SAMPLE_D = {  # OpenLLMetry 0.62 (traceloop-sdk + anthropic), span "anthropic.chat"
    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 1024,
    "gen_ai.response.model": "claude-sonnet-4-5-20250929", "gen_ai.response.id": "msg_01XF",
    "gen_ai.response.finish_reasons": ["tool_call"], "gen_ai.usage.input_tokens": 2360,
    "gen_ai.usage.output_tokens": 85, "gen_ai.usage.total_tokens": 2445,
    "gen_ai.usage.cache_read.input_tokens": 2048, "gen_ai.usage.cache_creation.input_tokens": 300,
    "gen_ai.input.messages": '[{"role":"system","parts":[{"type":"text","content":"You are a weather bot."}]},'
                             '{"role":"user","parts":[{"type":"text","content":"Weather in Paris?"}]}]',
    "gen_ai.output.messages": '[{"role":"assistant","parts":[{"type":"tool_call","id":"toolu_01A",'
                              '"name":"get_weather","arguments":{"location":"Paris"}}]}]',
    "traceloop.workflow.name": "weather_agent", "traceloop.association.properties.session_id": "conv_42",
    "traceloop.association.properties.user_id": "u_123", "traceloop.association.properties.customer_id": "acme",
}
SAMPLE_E = {  # OpenLLMetry <=0.47, span "anthropic.chat"
    "llm.request.type": "chat", "gen_ai.system": "Anthropic", "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 1024,
    "gen_ai.response.model": "claude-sonnet-4-5-20250929", "gen_ai.response.id": "msg_01XF",
    "gen_ai.usage.prompt_tokens": 2360, "gen_ai.usage.completion_tokens": 85, "llm.usage.total_tokens": 2445,
    "gen_ai.usage.cache_read_input_tokens": 2048, "gen_ai.usage.cache_creation_input_tokens": 300,
    "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "You are a weather bot.",
    "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "Weather in Paris?",
    "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.finish_reason": "tool_use",
    "gen_ai.completion.0.tool_calls.0.id": "toolu_01A", "gen_ai.completion.0.tool_calls.0.name": "get_weather",
    "gen_ai.completion.0.tool_calls.0.arguments": '{"location": "Paris"}', "traceloop.workflow.name": "weather_agent",
}
SAMPLE_F = {  # Langfuse Python SDK v3/v4, start_observation(as_type="generation"); exclusive usage buckets
    "langfuse.observation.type": "generation", "langfuse.observation.model.name": "claude-sonnet-4-5-20250929",
    "langfuse.observation.model.parameters": '{"temperature": 0.2, "max_tokens": 1024}',
    "langfuse.observation.usage_details": '{"input": 12, "input_cache_read": 2048, "input_cache_creation": 300, "output": 85}',
    "langfuse.observation.cost_details": '{"total": 0.00211}',
    "langfuse.observation.input": '[{"role": "system", "content": "You are a weather bot."}]',
    "langfuse.observation.output": '{"role": "assistant", "content": "calling get_weather"}',
    "langfuse.observation.completion_start_time": "2025-12-29T09:20:00.812000+00:00",
    "langfuse.observation.level": "DEFAULT", "langfuse.observation.metadata.tenant": "acme",
    "langfuse.trace.name": "weather-agent", "langfuse.trace.tags": ["prod"], "user.id": "u_123",
    "session.id": "conv_42", "langfuse.environment": "production",
}
# The same call, as (b) ≤v1.26 / v1.30 would describe an OpenAI call (openai-v2 is OpenAI-only).
SAMPLE_B_V130 = {
    "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 1024, "server.address": "api.openai.com",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.response.id": "chatcmpl-ASv9hB9He94oQyZr1CDC8coqvmn5U",
    "gen_ai.response.finish_reasons": ["tool_calls"], "gen_ai.usage.input_tokens": 1530,
    "gen_ai.usage.output_tokens": 18, "gen_ai.openai.response.service_tier": "default",
}
SAMPLE_B_V126 = {("gen_ai.usage.prompt_tokens" if k == "gen_ai.usage.input_tokens" else
                  "gen_ai.usage.completion_tokens" if k == "gen_ai.usage.output_tokens" else k): v
                 for k, v in SAMPLE_B_V130.items()}

# claude-sonnet-4-5 in the shipped table: input 3.00, output 15.00, cache read 0.30, cache write 3.75
# USD per 1M tokens. uncached input = 2360 − 2048 − 300 = 12.
# cost = (12×3.00 + 2048×0.30 + 300×3.75 + 85×15.00) / 1e6 USD
#      = (36 + 614.4 + 1125 + 1275) / 1e6 USD = 0.0030504 USD = 3_050_400 nano-USD
SONNET_COST_NUSD = 3_050_400


def test_shipped_price_rows_used_by_these_tests():
    """The hand arithmetic below relies on these per-1M prices; if the table changes, fix the comments."""
    sonnet = PRICES.lookup("anthropic", "claude-sonnet-4-5-20250929")
    assert (sonnet.id, sonnet.input, sonnet.output, sonnet.cache_read, sonnet.cache_write) == (
        "anthropic/claude-sonnet-4-5", 3.0, 15.0, 0.3, 3.75)
    assert PriceTable.cost_nusd(sonnet, 2360, 85, 2048, 300, 0) == SONNET_COST_NUSD
    mini = PRICES.lookup("openai", "gpt-4o-mini-2024-07-18")
    assert (mini.id, mini.input, mini.output) == ("openai/gpt-4o-mini", 0.15, 0.6)
    gpt4o = PRICES.lookup("openai", "gpt-4o")
    assert (gpt4o.id, gpt4o.input, gpt4o.output, gpt4o.cache_read) == ("openai/gpt-4o", 2.5, 10.0, 1.25)
    dated = PRICES.lookup("openai", "gpt-4o-2024-05-13")
    assert (dated.id, dated.input, dated.output) == ("openai/gpt-4o-2024-05-13", 5.0, 15.0)
    o3 = PRICES.lookup("openai", "o3-mini")
    assert (o3.id, o3.input, o3.output, o3.reasoning) == ("openai/o3-mini", 1.1, 4.4, 4.4)
    flash = PRICES.lookup("google", "gemini-2.5-flash")
    assert (flash.id, flash.input, flash.output, flash.reasoning) == ("google/gemini-2.5-flash", 0.3, 2.5, 2.5)
    emb = PRICES.lookup("openai", "text-embedding-3-small")
    assert (emb.id, emb.input) == ("openai/text-embedding-3-small", 0.02)


# =================================================================================================
# 1. Kind detection (design §2 rule 1, semconv-map §3)
# =================================================================================================

KIND_CASES = [
    # langfuse.observation.type
    ({"langfuse.observation.type": "generation"}, "obs", "llm"),
    ({"langfuse.observation.type": "GENERATION"}, "obs", "llm"),
    ({"langfuse.observation.type": "embedding"}, "obs", "embedding"),
    ({"langfuse.observation.type": "agent"}, "obs", "agent"),
    ({"langfuse.observation.type": "tool"}, "obs", "tool"),
    ({"langfuse.observation.type": "chain"}, "obs", "chain"),
    ({"langfuse.observation.type": "retriever"}, "obs", "retriever"),
    ({"langfuse.observation.type": "evaluator"}, "obs", "chain"),
    ({"langfuse.observation.type": "guardrail"}, "obs", "guardrail"),
    ({"langfuse.observation.type": "span"}, "obs", "span"),
    # openinference.span.kind
    ({"openinference.span.kind": "LLM"}, "ChatCompletion", "llm"),
    ({"openinference.span.kind": "llm"}, "ChatCompletion", "llm"),
    ({"openinference.span.kind": "EMBEDDING"}, "CreateEmbeddings", "embedding"),
    ({"openinference.span.kind": "TOOL"}, "get_weather", "tool"),
    ({"openinference.span.kind": "RETRIEVER"}, "retrieve", "retriever"),
    ({"openinference.span.kind": "RERANKER"}, "rerank", "retriever"),
    ({"openinference.span.kind": "AGENT"}, "agent", "agent"),
    ({"openinference.span.kind": "CHAIN"}, "RunnableSequence", "chain"),
    ({"openinference.span.kind": "GUARDRAIL"}, "guard", "guardrail"),
    ({"openinference.span.kind": "EVALUATOR"}, "eval", "chain"),
    ({"openinference.span.kind": "PROMPT"}, "prompt", "chain"),
    ({"openinference.span.kind": "UNKNOWN"}, "x", "span"),
    # gen_ai.operation.name
    ({"gen_ai.operation.name": "chat"}, "chat gpt-4o", "llm"),
    ({"gen_ai.operation.name": "text_completion"}, "text_completion davinci-002", "llm"),
    ({"gen_ai.operation.name": "generate_content"}, "generate_content gemini-2.5-flash", "llm"),
    ({"gen_ai.operation.name": "completion"}, "legacy", "llm"),
    ({"gen_ai.operation.name": "embeddings"}, "embeddings text-embedding-3-small", "embedding"),
    ({"gen_ai.operation.name": "retrieval"}, "retrieval kb-1", "retriever"),
    ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"}, "execute_tool get_weather", "tool"),
    ({"gen_ai.operation.name": "invoke_agent"}, "invoke_agent", "agent"),
    ({"gen_ai.operation.name": "create_agent", "gen_ai.agent.name": "Math"}, "create_agent Math", "agent"),
    ({"gen_ai.operation.name": "invoke_workflow"}, "invoke_workflow w", "chain"),
    ({"gen_ai.operation.name": "plan"}, "plan", "chain"),
    ({"gen_ai.operation.name": "search_memory"}, "search_memory", "span"),
    ({"gen_ai.operation.name": "create_memory"}, "create_memory", "span"),
    ({"gen_ai.operation.name": "update_memory"}, "update_memory", "span"),
    ({"gen_ai.operation.name": "upsert_memory"}, "upsert_memory", "span"),
    ({"gen_ai.operation.name": "delete_memory"}, "delete_memory", "span"),
    ({"gen_ai.operation.name": "create_memory_store"}, "create_memory_store", "span"),
    ({"gen_ai.operation.name": "delete_memory_store"}, "delete_memory_store", "span"),
    ({"gen_ai.operation.name": "fetch_response"}, "fetch_response", "span"),
    # llm.request.type (OpenLLMetry <=0.47)
    ({"llm.request.type": "chat"}, "openai.chat", "llm"),
    ({"llm.request.type": "completion"}, "openai.completion", "llm"),
    ({"llm.request.type": "embedding"}, "openai.embeddings", "embedding"),
    ({"llm.request.type": "rerank"}, "cohere.rerank", "retriever"),
    # traceloop.span.kind
    ({"traceloop.span.kind": "workflow"}, "weather.workflow", "chain"),
    ({"traceloop.span.kind": "task"}, "fetch.task", "chain"),
    ({"traceloop.span.kind": "agent"}, "agent.agent", "agent"),
    ({"traceloop.span.kind": "tool"}, "get_weather.tool", "tool"),
    # Vercel AI SDK ai.operationId
    ({"ai.operationId": "ai.generateText.doGenerate"}, "ai.generateText.doGenerate", "llm"),
    ({"ai.operationId": "ai.streamText.doStream"}, "ai.streamText.doStream", "llm"),
    ({"ai.operationId": "ai.generateObject.doGenerate"}, "ai.generateObject.doGenerate", "llm"),
    ({"ai.operationId": "ai.embed.doEmbed"}, "ai.embed.doEmbed", "embedding"),
    ({"ai.operationId": "ai.embedMany.doEmbed"}, "ai.embedMany.doEmbed", "embedding"),
    ({"ai.operationId": "ai.toolCall"}, "ai.toolCall", "tool"),
    ({"ai.operationId": "ai.generateText"}, "ai.generateText", "chain"),
    ({"ai.operationId": "ai.streamText"}, "ai.streamText", "chain"),
    # tool keys (Pydantic-AI omits operation.name), agent keys
    ({"gen_ai.tool.name": "get_weather"}, "running tool", "tool"),
    ({"gen_ai.tool.call.id": "call_1"}, "running tool", "tool"),
    ({"gen_ai.agent.name": "weather", "gen_ai.usage.input_tokens": 10}, "agent run", "agent"),
    # model + usage fallback
    ({"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10}, "request", "llm"),
    ({"gen_ai.response.model": "gpt-4o", "gen_ai.usage.output_tokens": 3}, "request", "llm"),
    ({"llm.model_name": "gpt-4o", "llm.token_count.prompt": 10}, "request", "llm"),
    ({"langfuse.observation.model.name": "gpt-4o",
      "langfuse.observation.usage_details": '{"input": 1}'}, "request", "llm"),
    ({"gen_ai.request.model": "gpt-4o"}, "request", "span"),  # a model alone is not a call
    ({"gen_ai.usage.input_tokens": 10}, "request", "span"),  # usage alone neither
    # span-name fallback
    ({}, "chat gpt-4o", "llm"),
    ({}, "text_completion gpt-3.5-turbo-instruct", "llm"),
    ({}, "generate_content gemini-2.5-flash", "llm"),
    ({}, "embeddings text-embedding-3-small", "embedding"),
    ({}, "openai.chat", "llm"),
    ({}, "anthropic.chat", "llm"),
    ({}, "bedrock.completion", "llm"),
    ({}, "cohere.embeddings", "embedding"),
    ({}, "chat", "span"),  # the template needs a model after the operation
    ({}, "chatty gpt-4o", "span"),
    # plain HTTP span
    ({"http.request.method": "POST", "url.full": "https://api.openai.com/v1/chat/completions",
      "server.address": "api.openai.com", "http.response.status_code": 200}, "POST", "span"),
]


@pytest.mark.parametrize(("attrs", "name", "expected"), KIND_CASES,
                         ids=[f"{n}|{','.join(f'{k}={v}' for k, v in a.items())[:70]}" for a, n, _ in KIND_CASES])
def test_kind_detection(attrs, name, expected):
    assert one(attrs, name).kind == expected


PRECEDENCE_CASES = [
    # (higher-ranked signal, lower-ranked signal, name, expected)
    ({"langfuse.observation.type": "tool"}, {"openinference.span.kind": "LLM"}, "x", "tool"),
    ({"langfuse.observation.type": "agent"}, {"gen_ai.operation.name": "chat"}, "x", "agent"),
    ({"langfuse.observation.type": "span"}, {"openinference.span.kind": "LLM"}, "x", "llm"),  # unmapped: falls through
    ({"openinference.span.kind": "CHAIN"}, {"gen_ai.operation.name": "chat"}, "x", "chain"),
    ({"openinference.span.kind": "AGENT"}, {"llm.request.type": "chat"}, "x", "agent"),
    ({"gen_ai.operation.name": "embeddings"}, {"llm.request.type": "chat"}, "x", "embedding"),
    ({"gen_ai.operation.name": "invoke_agent"},
     {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 5}, "chat gpt-4o", "agent"),
    ({"gen_ai.operation.name": "search_memory"},
     {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 5}, "x", "span"),
    ({"gen_ai.operation.name": "execute_tool"}, {"traceloop.span.kind": "workflow"}, "x", "tool"),
    ({"gen_ai.operation.name": "no_such_op"}, {"traceloop.span.kind": "task"}, "x", "chain"),  # unknown op falls through
    ({"llm.request.type": "chat"}, {"traceloop.span.kind": "task"}, "x", "llm"),
    ({"traceloop.span.kind": "tool"}, {"ai.operationId": "ai.generateText.doGenerate"}, "x", "tool"),
    ({"ai.operationId": "ai.toolCall"},
     {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 5}, "x", "tool"),
    ({"ai.operationId": "ai.generateText"},
     {"gen_ai.request.model": "gpt-4o", "ai.usage.promptTokens": 5}, "x", "chain"),
    ({"gen_ai.tool.name": "search"}, {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 5}, "x", "tool"),
    ({"gen_ai.agent.name": "a"}, {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 5}, "x", "agent"),
]


@pytest.mark.parametrize(("high", "low", "name", "expected"), PRECEDENCE_CASES,
                         ids=[f"{next(iter(h), '-')}>{next(iter(lo), '-')}" for h, lo, _, _ in PRECEDENCE_CASES])
def test_kind_precedence_when_signals_disagree(high, low, name, expected):
    # Attribute order must not matter: the rule order decides.
    assert one({**high, **low}, name).kind == expected
    assert one({**low, **high}, name).kind == expected


# =================================================================================================
# 2. Tokens: one meaning everywhere (input ⊇ cache read + write, output ⊇ reasoning)
# =================================================================================================

SAME_CALL_SAMPLES = {
    "a_otel_current_cache_write": (SAMPLE_A, "chat claude-sonnet-4-5"),
    "a_v140_cache_creation": (SAMPLE_A_V140, "chat claude-sonnet-4-5"),
    "c_openinference": (SAMPLE_C, "messages.create"),
    "d_openllmetry_062": (SAMPLE_D, "anthropic.chat"),
    "e_openllmetry_047": (SAMPLE_E, "anthropic.chat"),
    "f_langfuse_usage_details": (SAMPLE_F, "generation"),
}


@pytest.mark.parametrize("sample", SAME_CALL_SAMPLES.keys())
def test_every_source_gives_the_same_tokens_and_cost(sample):
    attrs, name = SAME_CALL_SAMPLES[sample]
    r = one(attrs, name)
    assert r.kind == "llm"
    assert r.provider == "anthropic"
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens, r.reasoning_tokens) == (
        2360, 85, 2048, 300, None)
    assert r.price_id == "anthropic/claude-sonnet-4-5"
    assert r.cost_nusd == SONNET_COST_NUSD
    assert r.flags & FLAG_TOKENS_INVALID == 0
    assert r.billed == 0  # decided by the writer


@pytest.mark.parametrize(("sample", "request_model", "response_model", "finish"), [
    ("a_otel_current_cache_write", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "tool_call"),
    ("d_openllmetry_062", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "tool_call"),
    ("e_openllmetry_047", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "tool_call"),
    ("f_langfuse_usage_details", "claude-sonnet-4-5-20250929", None, None),
])
def test_samples_models_operation_and_finish_reason(sample, request_model, response_model, finish):
    attrs, name = SAME_CALL_SAMPLES[sample]
    r = one(attrs, name)
    assert (r.request_model, r.response_model) == (request_model, response_model)
    assert r.operation == "chat"
    assert r.finish_reason == finish
    assert r.status == 0 and r.own_error_class is None


def test_openinference_sample_model_and_operation():
    r = one(SAMPLE_C, "messages.create", kind=1)
    # OpenInference has one model key (llm.model_name); it must surface in one of the two columns.
    assert "claude-sonnet-4-5-20250929" in (r.request_model, r.response_model)
    assert (r.operation, r.otel_kind, r.finish_reason) == ("chat", 1, None)


@pytest.mark.parametrize("attrs", [SAMPLE_B_V130, SAMPLE_B_V126], ids=["v1.30_input_output", "v1.26_prompt_completion"])
def test_deprecated_otel_token_keys(attrs):
    r = one(attrs, "chat gpt-4o-mini")
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens) == (1530, 18, None, None)
    assert (r.provider, r.request_model, r.response_model) == ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert r.finish_reason == "tool_call"
    assert r.price_id == "openai/gpt-4o-mini"
    # gpt-4o-mini: 0.15 in / 0.60 out per 1M → (1530×0.15 + 18×0.60)/1e6 = (229.5 + 10.8)/1e6 USD = 240_300 nUSD
    assert r.cost_nusd == 240_300
    assert PriceTable.cost_nusd(PRICES.lookup("openai", "gpt-4o-mini"), 1530, 18, 0, 0, 0) == 240_300


def test_langfuse_openai_shaped_usage_is_inclusive():
    usage = {"prompt_tokens": 2360, "completion_tokens": 85, "total_tokens": 2445,
             "prompt_tokens_details": {"cached_tokens": 2048, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0}}
    r = one({"langfuse.observation.type": "generation", "langfuse.observation.model.name": "gpt-4o",
             "langfuse.observation.usage_details": json.dumps(usage)}, "OpenAI-generation")
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens, r.reasoning_tokens) == (
        2360, 85, 2048, None, 0)
    assert r.provider == "openai"
    # gpt-4o: 2.50 in, 1.25 cache read, 10.00 out per 1M; uncached = 2360 − 2048 = 312
    # (312×2.5 + 2048×1.25 + 85×10)/1e6 = (780 + 2560 + 850)/1e6 USD = 4_190_000 nUSD
    assert r.cost_nusd == 4_190_000
    assert PriceTable.cost_nusd(PRICES.lookup("openai", "gpt-4o"), 2360, 85, 2048, 0, 0) == 4_190_000


def test_langfuse_raw_anthropic_usage_and_double_encoded_usage():
    raw_anthropic = {"input_tokens": 12, "cache_read_input_tokens": 2048, "cache_creation_input_tokens": 300,
                     "output_tokens": 85}
    base = {"langfuse.observation.type": "generation", "langfuse.observation.model.name": "claude-sonnet-4-5"}
    r = one({**base, "langfuse.observation.usage_details": json.dumps(raw_anthropic)})
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens) == (2360, 85, 2048, 300)
    assert r.cost_nusd == SONNET_COST_NUSD
    # Langfuse sometimes JSON-encodes twice.
    twice = json.dumps(json.dumps({"input": 12, "input_cache_read": 2048, "input_cache_creation": 300, "output": 85}))
    r = one({**base, "langfuse.observation.usage_details": twice})
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens) == (2360, 85, 2048, 300)


def test_langfuse_exclusive_reasoning_and_cache_ttl_buckets_are_summed():
    usage = {"input": 100, "input_cache_read": 50, "input_cache_creation_5m": 20, "input_cache_creation_1h": 10,
             "output": 116, "output_reasoning_tokens": 384, "total": 680}
    r = one({"langfuse.observation.type": "generation", "langfuse.observation.model.name": "o3-mini",
             "langfuse.observation.usage_details": json.dumps(usage)})
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens, r.reasoning_tokens) == (
        180, 500, 50, 30, 384)


def test_raw_anthropic_input_is_detected_and_summed():
    # An emitter copying raw Anthropic usage: input (12) excludes the cache counts.
    r = one({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
             "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.usage.input_tokens": 12,
             "gen_ai.usage.cache_read.input_tokens": 2048, "gen_ai.usage.cache_creation.input_tokens": 300,
             "gen_ai.usage.output_tokens": 85})
    assert (r.input_tokens, r.cache_read_tokens, r.cache_write_tokens) == (2360, 2048, 300)
    assert r.cost_nusd == SONNET_COST_NUSD


def test_inclusive_input_equal_to_the_cache_counts_is_not_summed_again():
    # 2348 = 2048 + 300: every input token came from the cache; already inclusive.
    r = one({"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-sonnet-4-5",
             "gen_ai.usage.input_tokens": 2348, "gen_ai.usage.cache_read.input_tokens": 2048,
             "gen_ai.usage.cache_write.input_tokens": 300, "gen_ai.usage.output_tokens": 85})
    assert r.input_tokens == 2348


def test_reasoning_is_inside_output_for_o3_mini():
    r = one({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "o3-mini",
             "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 500,
             "gen_ai.usage.reasoning.output_tokens": 384})
    assert (r.input_tokens, r.output_tokens, r.reasoning_tokens) == (1000, 500, 384)
    assert r.price_id == "openai/o3-mini"
    # o3-mini: 1.10 in, 4.40 out, reasoning = out. (1000×1.1 + (500−384)×4.4 + 384×4.4)/1e6 = 3300/1e6 USD
    assert r.cost_nusd == 3_300_000
    assert PriceTable.cost_nusd(PRICES.lookup("openai", "o3-mini"), 1000, 500, 0, 0, 384) == 3_300_000


@pytest.mark.parametrize("reasoning_key", [
    "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens", "llm.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning", "gen_ai.usage.details.reasoning_tokens"])
def test_reasoning_keys_of_every_family(reasoning_key):
    r = one({"gen_ai.operation.name": "chat", "gen_ai.request.model": "o3-mini", "gen_ai.usage.input_tokens": 10,
             "gen_ai.usage.output_tokens": 500, reasoning_key: 384})
    assert (r.output_tokens, r.reasoning_tokens) == (500, 384)


def test_gemini_style_reasoning_larger_than_output_is_added():
    # Raw Gemini: candidates_token_count (85) excludes thoughts_token_count (200).
    r = one({"gen_ai.operation.name": "generate_content", "gen_ai.provider.name": "gcp.gemini",
             "gen_ai.request.model": "gemini-2.5-flash", "gen_ai.usage.input_tokens": 1000,
             "gen_ai.usage.output_tokens": 85, "gen_ai.usage.reasoning.output_tokens": 200})
    assert (r.output_tokens, r.reasoning_tokens) == (285, 200)
    assert (r.provider, r.price_id) == ("google", "google/gemini-2.5-flash")
    # gemini-2.5-flash: 0.30 in, 2.50 out (= reasoning). (1000×0.3 + 85×2.5 + 200×2.5)/1e6 = 1012.5/1e6 USD
    assert r.cost_nusd == 1_012_500


@pytest.mark.parametrize(("usage", "expected"), [
    # AI SDK 4: promptTokens / completionTokens
    ({"ai.usage.promptTokens": 2360, "ai.usage.completionTokens": 85}, (2360, 85, None, None)),
    # AI SDK 5: inputTokens / outputTokens, cachedInputTokens (a subset), reasoningTokens
    ({"ai.usage.inputTokens": 2360, "ai.usage.outputTokens": 85, "ai.usage.cachedInputTokens": 2048,
      "ai.usage.reasoningTokens": 40}, (2360, 85, 2048, 40)),
])
def test_vercel_ai_sdk_usage(usage, expected):
    r = one({"ai.operationId": "ai.generateText.doGenerate", "ai.model.id": "claude-sonnet-4-5",
             "ai.model.provider": "anthropic.messages", **usage}, "ai.generateText.doGenerate")
    assert r.kind == "llm"
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.reasoning_tokens) == expected
    assert r.price_id == "anthropic/claude-sonnet-4-5"


@pytest.mark.parametrize(("inp", "out"), [("2360", "85"), (2360.0, 85.0), (" 2360 ", "85.0")],
                         ids=["strings", "doubles", "padded-strings"])
def test_tokens_arriving_as_strings_or_doubles(inp, out):
    r = one({**SAMPLE_A, "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out,
             "gen_ai.usage.cache_read.input_tokens": "2048", "gen_ai.usage.cache_write.input_tokens": 300.0})
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens) == (2360, 85, 2048, 300)
    assert r.cost_nusd == SONNET_COST_NUSD


@pytest.mark.parametrize("bad", [
    {"gen_ai.usage.input_tokens": -5},
    {"gen_ai.usage.output_tokens": 10**9},
    {"gen_ai.usage.cache_read.input_tokens": -1},
    {"gen_ai.usage.reasoning.output_tokens": 10**9},
], ids=["negative-input", "1e9-output", "negative-cache", "1e9-reasoning"])
def test_absurd_token_counts_are_dropped_and_flagged(bad):
    r = one({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 100,
             "gen_ai.usage.output_tokens": 10, **bad})
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens, r.reasoning_tokens) == (
        None, None, None, None, None)
    assert r.has(FLAG_TOKENS_INVALID)
    assert r.cost_nusd is None  # unpriceable, never 0
    assert r.kind == "llm"


@pytest.mark.parametrize("attrs", [
    {"gen_ai.usage.input_tokens": "inf"},
    {"gen_ai.usage.output_tokens": "1e400"},
    {"llm.token_count.prompt": "9" * 400},
    {"gen_ai.usage.input_tokens": 100, "http.response.status_code": "inf"},
    {"langfuse.observation.usage_details": '{"input": "inf", "output": 5}'},
    # str.isdigit() is true for superscripts and circled digits, which int() refuses.
    {"gen_ai.usage.reasoning.output_tokens": "²"},
    {"gen_ai.usage.input_tokens": "①"},
], ids=["inf", "1e400", "400-digits", "http-status-inf", "langfuse-inf", "superscript", "circled"])
def test_absurd_numeric_strings_do_not_lose_the_span(attrs):
    rows, rejections = decode([make_span(1, 2, None, "chat gpt-4o", {**LLM, **attrs})])
    assert rejections.reasons == {}
    assert len(rows) == 1
    assert rows[0].kind == "llm"
    assert rows[0].input_tokens in (None, 100)


@pytest.mark.parametrize("seconds", [1e300, -1e300])
def test_absurd_ttft_seconds_do_not_lose_the_span(seconds):
    rows, rejections = decode([make_span(1, 2, None, "chat gpt-4o",
                                         {**LLM, "gen_ai.response.time_to_first_chunk": seconds})])
    assert rejections.reasons == {}
    assert (rows[0].ttft_ns, rows[0].has(FLAG_TTFT_INVALID)) == (None, True)


def test_output_is_never_derived_from_total_minus_input():
    r = one({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 100,
             "gen_ai.usage.total_tokens": 150, "llm.usage.total_tokens": 150, "llm.token_count.total": 150})
    assert (r.input_tokens, r.output_tokens) == (100, None)
    # input only: 100 × 2.50 / 1e6 USD = 250_000 nUSD
    assert r.cost_nusd == 250_000


def test_embedding_span_tokens_and_cost():
    r = one({"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
             "gen_ai.request.model": "text-embedding-3-small", "gen_ai.usage.input_tokens": 100},
            "embeddings text-embedding-3-small")
    assert (r.kind, r.operation, r.input_tokens, r.output_tokens) == ("embedding", "embeddings", 100, None)
    assert r.price_id == "openai/text-embedding-3-small"
    assert r.cost_nusd == 2_000  # 100 × 0.02 / 1e6 USD


# =================================================================================================
# 3. Billing fields on the decoder side
# =================================================================================================

AGG_USAGE = {"gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.provider.name": "anthropic",
             "gen_ai.usage.input_tokens": 5000, "gen_ai.usage.output_tokens": 300}


@pytest.mark.parametrize(("extra", "name", "kind"), [
    ({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather"}, "invoke_agent weather", "agent"),
    ({"gen_ai.operation.name": "invoke_workflow"}, "invoke_workflow w", "chain"),
    ({"openinference.span.kind": "AGENT"}, "agent", "agent"),
    ({"traceloop.span.kind": "workflow"}, "weather.workflow", "chain"),
])
def test_aggregating_spans_carry_tokens_but_are_never_priced(extra, name, kind):
    r = one({**extra, **AGG_USAGE}, name)
    assert r.kind == kind
    assert (r.input_tokens, r.output_tokens) == (5000, 300)
    assert r.cost_nusd is None
    assert r.price_id is None


def test_vercel_wrapper_span_is_a_chain_with_tokens_and_no_cost():
    r = one({"ai.operationId": "ai.generateText", "ai.model.id": "gpt-4o", "ai.model.provider": "openai.chat",
             "ai.usage.promptTokens": 10, "ai.usage.completionTokens": 5}, "ai.generateText")
    assert (r.kind, r.input_tokens, r.output_tokens, r.cost_nusd, r.price_id) == ("chain", 10, 5, None, None)


def test_tool_and_retriever_spans_are_never_priced():
    for attrs in ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t", **AGG_USAGE},
                  {"gen_ai.operation.name": "retrieval", **AGG_USAGE}):
        r = one(attrs)
        assert r.kind in ("tool", "retriever")
        assert (r.input_tokens, r.cost_nusd, r.price_id) == (None, None, None)


def test_unknown_model_is_unpriced_not_free():
    r = one({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "acme",
             "gen_ai.request.model": "acme-llm-7b-instruct", "gen_ai.usage.input_tokens": 100,
             "gen_ai.usage.output_tokens": 10})
    assert (r.input_tokens, r.output_tokens) == (100, 10)
    assert r.price_id is None
    assert r.cost_nusd is None
    assert r.provider == "acme"


def test_priced_model_without_usage_has_a_price_row_but_no_cost():
    r = one({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}, "chat gpt-4o")
    assert (r.price_id, r.cost_nusd, r.input_tokens) == ("openai/gpt-4o", None, None)


def test_dated_response_model_wins_for_pricing():
    usage = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 1000,
             "gen_ai.usage.output_tokens": 100}
    family = one({**usage, "gen_ai.request.model": "gpt-4o"})
    dated = one({**usage, "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-05-13"})
    # gpt-4o: (1000×2.5 + 100×10)/1e6 = 3500/1e6 USD; gpt-4o-2024-05-13: (1000×5 + 100×15)/1e6 = 6500/1e6 USD
    assert (family.price_id, family.cost_nusd) == ("openai/gpt-4o", 3_500_000)
    assert (dated.price_id, dated.cost_nusd) == ("openai/gpt-4o-2024-05-13", 6_500_000)
    assert (dated.request_model, dated.response_model) == ("gpt-4o", "gpt-4o-2024-05-13")
    assert PriceTable.cost_nusd(PRICES.lookup("openai", "gpt-4o-2024-05-13"), 1000, 100, 0, 0, 0) == 6_500_000


def test_unpriced_response_model_falls_back_to_the_request_model():
    r = one({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
             "gen_ai.response.model": "my-proxy-alias", "gen_ai.usage.input_tokens": 1000,
             "gen_ai.usage.output_tokens": 100})
    assert (r.price_id, r.cost_nusd) == ("openai/gpt-4o", 3_500_000)


@pytest.mark.parametrize(("attrs", "provider"), [
    ({"gen_ai.system": "Anthropic"}, "anthropic"),  # OpenLLMetry <=0.47 casing
    ({"gen_ai.system": "MistralAI"}, "mistral"),
    ({"gen_ai.system": "AWS"}, "aws.bedrock"),
    ({"gen_ai.system": "az.ai.openai"}, "azure"),
    ({"gen_ai.provider.name": "azure.ai.openai"}, "azure"),
    ({"gen_ai.provider.name": "gcp.vertex_ai"}, "google"),
    ({"gen_ai.system": "vertex_ai"}, "google"),
    ({"gen_ai.provider.name": "x_ai"}, "xai"),
    ({"llm.provider": "azure", "llm.system": "openai"}, "azure"),  # OI: host beats product
    ({"llm.system": "openai"}, "openai"),
    ({"gen_ai.provider.name": "openai", "gen_ai.system": "az.ai.openai"}, "openai"),  # current key wins
    ({"server.address": "myres.openai.azure.com"}, "azure"),
    ({"server.address": "api.anthropic.com"}, "anthropic"),
    ({"server.address": "bedrock-runtime.us-east-1.amazonaws.com"}, "aws.bedrock"),
    ({"server.address": "api.openai.com"}, "openai"),
])
def test_provider_is_canonicalized_or_inferred_from_the_server(attrs, provider):
    r = one({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", **attrs})
    assert r.provider == provider


@pytest.mark.parametrize(("model", "provider"), [
    ("claude-3-5-haiku-20241022", "anthropic"), ("gpt-4o-mini", "openai"), ("o3-mini", "openai"),
    ("gemini-2.5-flash", "google"), ("mistral-large-latest", "mistral"), ("deepseek-chat", "deepseek"),
    ("grok-4", "xai"), ("command-r-plus", "cohere"), ("anthropic.claude-sonnet-4-5-20250929-v1:0", "aws.bedrock"),
    ("amazon.nova-pro-v1:0", "aws.bedrock"),
])
def test_provider_inferred_from_the_model_name_when_no_provider_key(model, provider):
    r = one({"gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.usage.input_tokens": 1})
    assert r.provider == provider


def test_non_llm_span_without_model_has_no_provider():
    r = one({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t", "server.address": "api.openai.com"})
    assert r.provider is None


def test_google_text_embedding_004_is_inferred_as_google():
    r = one({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-004",
             "gen_ai.usage.input_tokens": 100})
    assert r.provider == "google"


def test_bedrock_mistral_model_id_is_inferred_as_bedrock():
    r = one({"gen_ai.operation.name": "chat", "gen_ai.request.model": "mistral.mistral-large-2402-v1:0",
             "gen_ai.usage.input_tokens": 100})
    assert r.provider == "aws.bedrock"


@pytest.mark.parametrize(("raw", "provider"), [("openai.chat", "openai"), ("anthropic.messages", "anthropic")])
def test_vercel_provider_ids_are_canonicalized(raw, provider):
    r = one({"ai.operationId": "ai.generateText.doGenerate", "gen_ai.system": raw, "ai.model.provider": raw,
             "gen_ai.request.model": "gpt-4o", "ai.usage.promptTokens": 10}, "ai.generateText.doGenerate")
    assert r.provider == provider


def test_provider_inference_falls_back_to_the_request_model():
    r = one({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
             "gen_ai.response.model": "my-proxy-alias", "gen_ai.usage.input_tokens": 1})
    assert r.provider == "openai"


# =================================================================================================
# 4. Time to first token
# =================================================================================================

LLM = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}


@pytest.mark.parametrize(("attrs", "events", "ttft_ns"), [
    ({"gen_ai.response.time_to_first_chunk": 0.25}, [], 250 * MS),
    ({}, [("First Token Stream Event", T0 + 300 * MS, {})], 300 * MS),
    ({}, [("gen_ai.content.completion.chunk", T0 + 400 * MS, {}),
          ("gen_ai.content.completion.chunk", T0 + 450 * MS, {})], 400 * MS),
    ({}, [("llm.content.completion.chunk", T0 + 420 * MS, {})], 420 * MS),
    ({"langfuse.observation.completion_start_time": "2025-12-29T09:20:00.812000+00:00"}, [], 812 * MS),
    ({"langfuse.observation.completion_start_time": "2025-12-29T09:20:00.5Z"}, [], 500 * MS),
    ({"gen_ai.server.time_to_first_token": 0.5}, [], 500 * MS),
    ({"ai.response.msToFirstChunk": 812.0}, [], 812 * MS),
    ({"ai.stream.msToFirstChunk": 640}, [], 640 * MS),
], ids=["time_to_first_chunk", "openinference_event", "openllmetry_chunk", "legacy_chunk", "langfuse_iso",
        "langfuse_iso_Z", "server_ttft", "vercel_ms", "vercel_stream_ms"])
def test_ttft_from_each_source(attrs, events, ttft_ns):
    r = one({**LLM, **attrs}, events=events)
    assert r.ttft_ns == ttft_ns
    assert r.streaming == 1
    assert r.flags & FLAG_TTFT_INVALID == 0
    assert r.duration_ns == SECOND


@pytest.mark.parametrize(("attrs", "events", "ttft_ns"), [
    ({"gen_ai.response.time_to_first_chunk": 0.1}, [("First Token Stream Event", T0 + 300 * MS, {})], 100 * MS),
    ({}, [("gen_ai.content.completion.chunk", T0 + 400 * MS, {}),
          ("First Token Stream Event", T0 + 300 * MS, {})], 300 * MS),
    ({"langfuse.observation.completion_start_time": "2025-12-29T09:20:00.812000+00:00"},
     [("gen_ai.content.completion.chunk", T0 + 400 * MS, {})], 400 * MS),
    ({"langfuse.observation.completion_start_time": "2025-12-29T09:20:00.812000+00:00",
      "ai.response.msToFirstChunk": 100}, [], 812 * MS),
], ids=["seconds>event", "event>chunk", "chunk>langfuse", "langfuse>vercel"])
def test_ttft_source_order(attrs, events, ttft_ns):
    assert one({**LLM, **attrs}, events=events).ttft_ns == ttft_ns


@pytest.mark.parametrize(("attrs", "events", "ttft_ns"), [
    ({}, [("First Token Stream Event", T0 + 300 * MS, {})], 300 * MS),
    ({"langfuse.observation.completion_start_time": "2025-12-29T09:20:00.812000+00:00"}, [], 812 * MS),
], ids=["event>server_ttft", "langfuse>server_ttft"])
def test_server_time_to_first_token_ranks_last(attrs, events, ttft_ns):
    r = one({**LLM, **attrs, "gen_ai.server.time_to_first_token": 0.5}, events=events)
    assert r.ttft_ns == ttft_ns


def test_ttft_from_double_quoted_langfuse_completion_start_time():
    r = one({**SAMPLE_F, "langfuse.observation.completion_start_time": '"2025-12-29T09:20:00.812000+00:00"'},
            "generation")
    assert r.ttft_ns == 812 * MS
    assert r.streaming == 1


def test_langfuse_completion_start_time_is_exact_to_the_nanosecond():
    r = one({**LLM, "langfuse.observation.completion_start_time": "2025-12-29T09:20:00.001000+00:00"})
    assert r.ttft_ns == 1 * MS


@pytest.mark.parametrize(("attrs", "events", "span_kw"), [
    ({"gen_ai.response.time_to_first_chunk": 1.5}, [], {}),  # longer than the 1 s span
    ({"gen_ai.response.time_to_first_chunk": -0.1}, [], {}),
    ({}, [("First Token Stream Event", T0 - 5, {})], {}),  # before the span started
    ({"ai.response.msToFirstChunk": 2000}, [], {}),
    ({"gen_ai.response.time_to_first_chunk": 0.2}, [], {"end_ns": T0 - 1}),  # no valid duration to compare to
], ids=["ttft>duration", "negative_seconds", "event_before_start", "vercel_ms>duration", "negative_duration"])
def test_impossible_ttft_is_dropped_and_flagged(attrs, events, span_kw):
    r = one({**LLM, **attrs}, events=events, **span_kw)
    assert r.ttft_ns is None
    assert r.has(FLAG_TTFT_INVALID)


def test_ttft_equal_to_duration_is_kept():
    r = one({**LLM, "gen_ai.response.time_to_first_chunk": 1.0})
    assert (r.ttft_ns, r.flags & FLAG_TTFT_INVALID) == (SECOND, 0)


@pytest.mark.parametrize(("attrs", "streaming"), [
    ({"gen_ai.request.stream": True}, 1),
    ({"gen_ai.is_streaming": True}, 1),
    ({"llm.is_streaming": "true"}, 1),
    ({"gen_ai.request.stream": False}, 0),
    ({}, 0),
])
def test_streaming_flag_without_ttft(attrs, streaming):
    r = one({**LLM, **attrs})
    assert (r.streaming, r.ttft_ns) == (streaming, None)


# =================================================================================================
# 5. Errors: api / validation / guardrail kept apart
# =================================================================================================

@pytest.mark.parametrize(("error_type", "subclass"), [
    ("RateLimitError", "rate_limit"),
    ("openai.RateLimitError", "rate_limit"),
    ("APITimeoutError", "timeout"),
    ("APIConnectionError", "network"),
    ("httpx.ConnectError", "network"),
    ("InternalServerError", "provider"),
    ("OverloadedError", "provider"),
    ("AuthenticationError", "client"),
    ("BadRequestError", "client"),
    ("NotFoundError", "client"),
    ("ThrottlingException", "rate_limit"),  # Bedrock
    ("ResourceExhausted", "rate_limit"),  # Gemini / gRPC
    ("DeadlineExceeded", "timeout"),
    ("ValidationException", "client"),  # AWS: a provider 400, not the app's validation
    ("_OTHER", "other"),
])
def test_api_error_subclass_from_error_type(error_type, subclass):
    r = one({**LLM, "error.type": error_type}, status_code=STATUS_ERROR, status_message="failed")
    assert (r.own_error_class, r.error_class, r.error_subclass, r.error_type) == ("api", "api", subclass, error_type)
    assert (r.status, r.validation_marker) == (STATUS_ERROR, 0)


def test_error_type_alone_marks_an_llm_span_failed():
    r = one({**LLM, "error.type": "RateLimitError"})  # status left UNSET by the instrumentation
    assert (r.own_error_class, r.error_subclass) == ("api", "rate_limit")


@pytest.mark.parametrize(("status_code", "subclass"), [
    (429, "rate_limit"), (503, "provider"), (529, "provider"), (500, "provider"), (404, "client"),
    (400, "client"), (401, "client"), (408, "timeout"), ("429", "rate_limit"),
])
def test_api_error_subclass_from_http_status(status_code, subclass):
    r = one({**LLM, "http.response.status_code": status_code}, status_code=STATUS_ERROR)
    assert (r.own_error_class, r.error_subclass, r.error_type) == ("api", subclass, None)


@pytest.mark.parametrize(("exc_type", "exc_message", "subclass"), [
    ("anthropic.RateLimitError", "Error code: 429 - {'type': 'error'}", "rate_limit"),
    ("openai.APIConnectionError", "Connection error.", "network"),
    ("anthropic.InternalServerError", "Error code: 529 - overloaded_error", "provider"),
    ("openai.APITimeoutError", "Request timed out.", "timeout"),
])
def test_api_error_from_exception_span_event(exc_type, exc_message, subclass):
    r = one({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o"}, "ChatCompletion",
            status_code=STATUS_ERROR, status_message=f"{exc_type.split('.')[-1]}: {exc_message}",
            events=[("exception", T0 + 500 * MS, {"exception.type": exc_type, "exception.message": exc_message,
                                                   "exception.stacktrace": "Traceback ..."})])
    assert (r.own_error_class, r.error_subclass, r.error_type) == ("api", subclass, exc_type)


def test_app_validation_attribute_on_llm_span():
    r = one({**LLM, "gen_ai.usage.input_tokens": 10, "app.llm.validation.error": "missing field 'city'"})
    assert (r.own_error_class, r.error_subclass, r.status) == ("validation", None, 0)
    assert r.input_tokens == 10


@pytest.mark.parametrize("error_type", [
    "ValidationError", "pydantic_core._pydantic_core.ValidationError", "OutputParserException",
    "langchain_core.exceptions.OutputParserException", "json.decoder.JSONDecodeError", "JSONDecodeError"])
@pytest.mark.parametrize("kind_attrs", [
    {"openinference.span.kind": "CHAIN"}, {"traceloop.span.kind": "task"}, {}], ids=["oi_chain", "task", "plain"])
def test_validation_failure_on_a_non_llm_span_is_a_marker_only(error_type, kind_attrs):
    r = one({**kind_attrs, "error.type": error_type}, "parse_output", status_code=STATUS_ERROR)
    assert r.validation_marker == 1
    assert r.own_error_class is None
    assert r.error_subclass is None


def test_validation_failure_from_exception_event_on_a_non_llm_span():
    r = one({"openinference.span.kind": "CHAIN"}, "parse", status_code=STATUS_ERROR,
            events=[("exception", T0 + 1, {"exception.type": "pydantic_core._pydantic_core.ValidationError",
                                            "exception.message": "1 validation error for Weather"})])
    assert (r.validation_marker, r.own_error_class) == (1, None)


def test_app_validation_attribute_on_a_non_llm_span_is_a_marker():
    r = one({"traceloop.span.kind": "task", "app.llm.validation.error": True}, "validate")
    assert (r.validation_marker, r.own_error_class) == (1, None)


@pytest.mark.parametrize("error_type", ["ValidationException", "RateLimitError", "KeyError"])
def test_other_failures_on_non_llm_spans_are_not_validation(error_type):
    r = one({"traceloop.span.kind": "task", "error.type": error_type}, "task", status_code=STATUS_ERROR)
    assert (r.validation_marker, r.own_error_class) == (0, None)


def test_aws_validation_exception_on_llm_span_is_api_client():
    r = one({"gen_ai.operation.name": "chat", "gen_ai.system": "aws.bedrock",
             "gen_ai.request.model": "anthropic.claude-sonnet-4-5-20250929-v1:0", "error.type": "ValidationException",
             "http.response.status_code": 400}, status_code=STATUS_ERROR,
            status_message="ValidationException: The provided model identifier is invalid.")
    assert (r.own_error_class, r.error_subclass, r.validation_marker) == ("api", "client", 0)


@pytest.mark.parametrize("finish", [["content_filter"], ["refusal"], ["SAFETY"], "guardrail_intervened",
                                    ["stop", "content_filter"], ["PROHIBITED_CONTENT"]])
def test_guardrail_from_finish_reason(finish):
    r = one({**LLM, "gen_ai.response.finish_reasons": finish})
    assert (r.finish_reason, r.own_error_class, r.error_subclass, r.status) == ("content_filter", "guardrail", None, 0)


@pytest.mark.parametrize(("key", "value"), [
    ("llm.finish_reason", "content_filter"), ("gen_ai.completion.0.finish_reason", "refusal"),
    ("ai.response.finishReason", "content-filter")])
def test_guardrail_finish_reason_from_other_families(key, value):
    r = one({**LLM, key: value})
    assert (r.finish_reason, r.own_error_class) == ("content_filter", "guardrail")


def test_bedrock_content_filtered_stop_reason_is_a_guardrail():
    r = one({**LLM, "gen_ai.response.finish_reasons": ["content_filtered"]})
    assert (r.finish_reason, r.own_error_class) == ("content_filter", "guardrail")


@pytest.mark.parametrize(("raw", "normalized"), [
    (["stop"], "stop"), (["end_turn"], "stop"), (["stop_sequence"], "stop"), (["STOP"], "stop"),
    (["length"], "length"), (["max_tokens"], "length"), (["MAX_TOKENS"], "length"),
    (["tool_calls"], "tool_call"), (["tool_use"], "tool_call"), (["function_call"], "tool_call"),
    (["error"], "error"), (["pause_turn"], "pause_turn"),
])
def test_normal_finish_reasons_are_normalized_and_not_errors(raw, normalized):
    r = one({**LLM, "gen_ai.response.finish_reasons": raw})
    assert (r.finish_reason, r.own_error_class) == (normalized, None)


def test_openinference_guardrail_span_with_status_error():
    failed = one({"openinference.span.kind": "GUARDRAIL"}, "pii_guard", status_code=STATUS_ERROR,
                 status_message="PII detected")
    assert (failed.kind, failed.own_error_class, failed.error_subclass) == ("guardrail", "guardrail", None)
    passed = one({"openinference.span.kind": "GUARDRAIL"}, "pii_guard", status_code=STATUS_OK)
    assert (passed.kind, passed.own_error_class) == ("guardrail", None)
    vetoed = one({"openinference.span.kind": "GUARDRAIL", "guardrail.passed": False}, "pii_guard")
    assert vetoed.own_error_class == "guardrail"


def test_langfuse_guardrail_observation_with_level_error():
    r = one({"langfuse.observation.type": "guardrail", "langfuse.observation.level": "ERROR",
             "langfuse.observation.status_message": "jailbreak attempt blocked"}, "guard")
    assert (r.kind, r.own_error_class, r.status, r.status_message) == (
        "guardrail", "guardrail", STATUS_ERROR, "jailbreak attempt blocked")
    ok = one({"langfuse.observation.type": "guardrail", "langfuse.observation.level": "DEFAULT"}, "guard")
    assert (ok.own_error_class, ok.status) == (None, 0)


def test_langfuse_level_error_on_a_generation_is_an_api_error():
    r = one({**SAMPLE_F, "langfuse.observation.level": "ERROR",
             "langfuse.observation.status_message": "Error code: 429 - rate_limit_error"}, "generation")
    assert (r.status, r.status_message) == (STATUS_ERROR, "Error code: 429 - rate_limit_error")
    assert (r.own_error_class, r.error_subclass) == ("api", "rate_limit")
    assert r.input_tokens == 2360  # a failed call keeps its usage


def test_plain_http_span_with_500_has_no_error_class():
    r = one({"http.request.method": "POST", "http.response.status_code": 500}, "POST", status_code=STATUS_ERROR)
    assert (r.kind, r.own_error_class, r.validation_marker, r.status) == ("span", None, 0, STATUS_ERROR)


@pytest.mark.parametrize(("texts", "http_status", "subclass"), [
    (("Error code: 429 - too many requests",), None, "rate_limit"),  # status read from the message
    (("502",), None, "provider"),
    (("APIStatusError", "Error code: 503 - upstream"), None, "provider"),
    (("processed 404 items",), None, "other"),  # digits without "error" are not a status
    (("something odd",), None, "other"),
    (("x",), 418, "client"),
    (("",), 599, "provider"),
    ((None, "Connection reset by peer"), None, "network"),
    (("google.api_core.exceptions.TooManyRequests",), None, "rate_limit"),
    (("BadRequestError", "Error code: 400 - context_length_exceeded"), None, "client"),
    (("TimeoutError",), 429, "rate_limit"),  # the status outranks the name
])
def test_classify_api_error_table(texts, http_status, subclass):
    assert classify_api_error(*texts, http_status=http_status) == subclass


@pytest.mark.parametrize(("raw", "normalized"), [
    (None, None), ([], None), (["", None], None), ("STOP", "stop"), ("  End_Turn ", "stop"),
    (["tool_calls", "content_filter"], "content_filter"), ([1, "length"], "length"), ("x" * 40, "x" * 32),
])
def test_normalize_finish_reason_table(raw, normalized):
    assert normalize_finish_reason(raw) == normalized


def test_classify_kind_is_a_pure_function_of_found_keys():
    assert classify_kind({"openinference.span.kind": "LLM", "gen_ai.operation.name": "embeddings"}, "x") == "llm"
    assert classify_kind({}, "chat gpt-4o") == "llm"
    assert classify_kind({}, "GET /health") == "span"


# =================================================================================================
# 6. Dimensions
# =================================================================================================

DIMS = ("own_feature", "own_tenant", "prompt_id", "prompt_version", "conversation_id", "user_id")


@pytest.mark.parametrize(("attrs", "expected"), [
    ({"app.llm.feature": "checkout", "app.llm.tenant.id": "acme", "app.llm.prompt.template.id": "p-1",
      "app.llm.prompt.template.version": "v3", "gen_ai.conversation.id": "conv_42", "user.id": "u_123"},
     ("checkout", "acme", "p-1", "v3", "conv_42", "u_123")),
    ({"gen_ai.agent.name": "Weather", "tenant.id": "acme", "gen_ai.prompt.name": "weather",
      "gen_ai.prompt.version": "7", "session.id": "s-9", "enduser.id": "e-1"},
     ("Weather", "acme", "weather", "7", "s-9", "e-1")),
    ({"app.llm.prompt.template.sha": "9f86d08"}, (None, None, None, "9f86d08", None, None)),
    ({"openinference.span.kind": "LLM", "metadata": '{"tenant": "acme", "other": 1}', "session.id": "conv_42",
      "user.id": "u_123", "llm.prompt_template.version": "v2"}, (None, "acme", None, "v2", "conv_42", "u_123")),
    ({"traceloop.workflow.name": "weather_agent", "traceloop.association.properties.customer_id": "acme",
      "traceloop.association.properties.session_id": "conv_42",
      "traceloop.association.properties.user_id": "u_123", "traceloop.prompt.key": "weather",
      "traceloop.prompt.version": 4}, ("weather_agent", "acme", "weather", "4", "conv_42", "u_123")),
    ({"langfuse.trace.name": "weather-agent", "langfuse.observation.metadata.tenant": "acme",
      "langfuse.observation.prompt.name": "weather", "langfuse.observation.prompt.version": 3,
      "langfuse.session.id": "conv_42", "langfuse.user.id": "u_123"},
     ("weather-agent", "acme", "weather", "3", "conv_42", "u_123")),
    ({"langfuse.trace.metadata.tenant": "globex"}, (None, "globex", None, None, None, None)),
    ({"ai.telemetry.metadata.sessionId": "conv_42", "ai.telemetry.metadata.userId": "u_123"},
     (None, None, None, None, "conv_42", "u_123")),
    ({"gen_ai.user": "u_openai"}, (None, None, None, None, None, "u_openai")),
    # priority inside a family list: the earlier key wins whatever the attribute order
    ({"traceloop.workflow.name": "wf", "app.llm.feature": "checkout", "session.id": "s",
      "gen_ai.conversation.id": "c", "metadata": '{"tenant": "meta"}', "tenant.id": "t"},
     ("checkout", "t", None, None, "c", None)),
    ({"langfuse.observation.metadata.tenant": "lf", "metadata": '{"tenant": "meta"}'},
     (None, "lf", None, None, None, None)),
], ids=["app", "otel", "sha", "openinference", "traceloop", "langfuse", "langfuse_trace_meta", "vercel",
        "gen_ai_user", "priority", "metadata_last"])
def test_dimensions_from_each_key_family(attrs, expected):
    r = one({**LLM, **attrs})
    assert tuple(getattr(r, d) for d in DIMS) == expected
    # The effective feature/tenant start as the span's own; the writer refines them.
    assert (r.feature, r.tenant) == expected[:2]


def test_dimensions_of_the_six_samples():
    assert tuple(getattr(one(SAMPLE_C, "messages.create"), d) for d in DIMS) == (
        None, "acme", None, None, "conv_42", "u_123")
    assert tuple(getattr(one(SAMPLE_D, "anthropic.chat"), d) for d in DIMS) == (
        "weather_agent", "acme", None, None, "conv_42", "u_123")
    assert tuple(getattr(one(SAMPLE_F, "generation"), d) for d in DIMS) == (
        "weather-agent", "acme", None, None, "conv_42", "u_123")
    assert tuple(getattr(one(SAMPLE_A, "chat claude-sonnet-4-5"), d) for d in DIMS) == (
        None, None, None, None, "conv_42", None)


def test_feature_and_tenant_from_resource_attributes():
    r = one(LLM, resource_attrs={"tenant.id": "acme", "app.llm.feature": "search"})
    assert (r.own_tenant, r.own_feature, r.service) == ("acme", "search", "svc")
    # The span's own value beats the resource's.
    r = one({**LLM, "app.llm.tenant.id": "globex"}, resource_attrs={"tenant.id": "acme"})
    assert r.own_tenant == "globex"
    # user / conversation are never taken from the resource
    r = one(LLM, resource_attrs={"user.id": "u_1", "session.id": "s_1"})
    assert (r.user_id, r.conversation_id) == (None, None)


def test_structured_values_are_not_dimensions():
    r = one({**LLM, "app.llm.feature": ["a", "b"], "user.id": {"id": 1}})
    assert (r.own_feature, r.user_id) == (None, None)


def test_custom_dimension_keys_replace_the_defaults():
    norm = normalizer(dimension_keys={"feature": ("acme.route",), "tenant": ("acme.org", "metadata.org"),
                                      "user": ("acme.uid",)})
    r = one({**LLM, "acme.route": "/checkout", "app.llm.feature": "ignored", "acme.uid": "u-7", "user.id": "nope",
             "gen_ai.conversation.id": "c-1", "metadata": '{"org": "o-1", "tenant": "t"}'}, norm=norm)
    assert (r.own_feature, r.own_tenant, r.user_id, r.conversation_id) == ("/checkout", "o-1", "u-7", None)
    r = one({**LLM, "acme.org": "o-2", "metadata": '{"org": "o-1"}'}, norm=norm)
    assert r.own_tenant == "o-2"  # the key listed first wins
    r = one(LLM, norm=norm, resource_attrs={"acme.org": "res-org", "tenant.id": "not-a-key-any-more"})
    assert r.own_tenant == "res-org"


# =================================================================================================
# 7. Content and redaction
# =================================================================================================

EMAIL, PHONE, CARD, KEY = "jane.doe@example.com", "+1 (415) 555-0134", "4111 1111 1111 1111", \
    "sk-proj-Abcdefghijklmnop1234567890"
PII = f"I am {EMAIL}, call me at {PHONE}, my card is {CARD} and my key is {KEY}."
PII_REDACTED = ("I am [REDACTED:email], call me at [REDACTED:phone], my card is [REDACTED:card] "
                "and my key is [REDACTED:secret].")


def assert_no_pii(text: str) -> None:
    for secret in (EMAIL, PHONE, CARD, KEY, "555-0134", "jane.doe", "Abcdefghijklmnop"):
        assert secret not in text


def pii_span_attrs() -> dict[str, Any]:
    return {
        **LLM, "gen_ai.usage.input_tokens": 42,
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": PII}]}]),
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": PII,
        "gen_ai.response.id": "chatcmpl-4111111111111111",  # not content: must stay as sent
    }


PII_EVENTS = [("gen_ai.content.prompt", T0 + 1, {"gen_ai.prompt": json.dumps([{"role": "user", "content": PII}])}),
              ("exception", T0 + 2, {"exception.type": "X", "exception.message": "not content"})]


def test_default_options_redact_content_in_the_stored_span():
    r = one(pii_span_attrs(), events=PII_EVENTS)
    stored = r.stored_attrs
    assert json.loads(stored["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": PII_REDACTED}]}]  # still valid JSON
    assert stored["llm.input_messages.0.message.content"] == PII_REDACTED
    prompt_event = r.span.events[0]
    assert prompt_event.name == "gen_ai.content.prompt"
    assert json.loads(any_value(prompt_event.attributes[0].value)) == [{"role": "user", "content": PII_REDACTED}]
    assert_no_pii(_DECOMPRESS.decompress(r.raw).decode("utf-8", "replace"))
    assert stored["gen_ai.response.id"] == "chatcmpl-4111111111111111"
    assert stored["gen_ai.usage.input_tokens"] == 42
    assert r.has(FLAG_REDACTED)
    assert r.flags & FLAG_CONTENT_DROPPED == 0


def test_structured_content_is_redacted_too():
    messages = [{"role": "user", "parts": [{"type": "text", "content": PII}]},
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "pay",
                                                 "arguments": {"card": CARD, "email": EMAIL}}]}]
    r = one({**LLM, "gen_ai.output.messages": messages,
             "gen_ai.tool.call.arguments": {"to": EMAIL, "cc": [EMAIL, "ok"]}})
    stored = r.stored_attrs
    assert stored["gen_ai.output.messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": PII_REDACTED}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "pay",
                                         "arguments": {"card": "[REDACTED:card]", "email": "[REDACTED:email]"}}]}]
    assert stored["gen_ai.tool.call.arguments"] == {"to": "[REDACTED:email]", "cc": ["[REDACTED:email]", "ok"]}
    assert r.has(FLAG_REDACTED)


def test_redaction_off_keeps_content_verbatim():
    r = one(pii_span_attrs(), events=PII_EVENTS, norm=normalizer(redact=False))
    assert r.stored_attrs["llm.input_messages.0.message.content"] == PII
    assert json.loads(r.stored_attrs["gen_ai.input.messages"])[0]["parts"][0]["content"] == PII
    assert PII in json.loads(any_value(r.span.events[0].attributes[0].value))[0]["content"]
    assert r.flags & (FLAG_REDACTED | FLAG_CONTENT_DROPPED) == 0


def test_span_without_content_is_not_flagged_redacted():
    assert one({**LLM, "gen_ai.usage.input_tokens": 1}).flags & FLAG_REDACTED == 0


CONTENT_ATTRS = {
    "gen_ai.system_instructions": "be nice", "gen_ai.input.messages": PII, "gen_ai.output.messages": "[]",
    "gen_ai.tool.call.arguments": "{}", "gen_ai.tool.call.result": "{}", "input.value": PII, "output.value": "x",
    "llm.input_messages.0.message.content": PII, "llm.output_messages.0.message.content": "x",
    "gen_ai.prompt.0.content": PII, "gen_ai.completion.0.content": "x", "langfuse.observation.input": PII,
    "langfuse.observation.output": "x", "traceloop.entity.input": PII, "ai.prompt.messages": PII,
    "ai.response.text": "x", "retrieval.documents.0.document.content": PII,
}
KEPT_ATTRS = {
    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 2360,
    "gen_ai.usage.output_tokens": 85, "gen_ai.usage.cache_read.input_tokens": 2048,
    "gen_ai.completion.0.finish_reason": "stop", "app.llm.tenant.id": "acme", "custom.unknown.key": "kept",
}


def test_keep_content_false_drops_every_content_attribute_and_event():
    events = [*PII_EVENTS, ("gen_ai.content.completion", T0 + 3, {"gen_ai.completion": "x"}),
              ("First Token Stream Event", T0 + 200 * MS, {})]
    r = one({**KEPT_ATTRS, **CONTENT_ATTRS}, events=events, norm=normalizer(keep_content=False))
    assert r.stored_attrs == KEPT_ATTRS
    assert [e.name for e in r.span.events] == ["exception", "First Token Stream Event"]
    assert r.has(FLAG_CONTENT_DROPPED)
    assert r.flags & FLAG_REDACTED == 0
    # The facts were read before the content went.
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.finish_reason) == (2360, 85, 2048, "stop")
    assert (r.response_model, r.own_tenant, r.ttft_ns) == ("gpt-4o-2024-08-06", "acme", 200 * MS)
    assert_no_pii(_DECOMPRESS.decompress(r.raw).decode("utf-8", "replace"))


def test_keep_content_false_keeps_prompt_name_and_version():
    r = one({**LLM, "gen_ai.prompt.name": "weather", "gen_ai.prompt.version": "7", "gen_ai.input.messages": "x"},
            norm=normalizer(keep_content=False))
    assert (r.prompt_id, r.prompt_version) == ("weather", "7")  # the row has them...
    assert {"gen_ai.prompt.name": "weather", "gen_ai.prompt.version": "7"}.items() <= r.stored_attrs.items()


def test_log_record_body_is_redacted_and_dropped():
    record = log_record(1, 2, "gen_ai.user.message", {"content": PII}, {"gen_ai.system": "openai"})
    rows, *_ = decode_logs([record])
    stored = stored_log(rows[0])
    assert any_value(stored.body) == {"content": PII_REDACTED}
    assert any_value(stored.attributes[0].value) == "openai"

    rows, *_ = decode_logs([log_record(1, 2, "gen_ai.user.message", {"content": PII})], normalizer(redact=False))
    assert any_value(stored_log(rows[0]).body) == {"content": PII}

    rows, *_ = decode_logs([log_record(1, 2, "gen_ai.user.message", {"content": PII},
                                       {"gen_ai.system": "openai", "gen_ai.input.messages": PII})],
                           normalizer(keep_content=False))
    stored = stored_log(rows[0])
    assert stored.body.WhichOneof("value") is None
    assert [kv.key for kv in stored.attributes] == ["gen_ai.system"]
    assert log_field(rows[0], "event_name") == "gen_ai.user.message"


# =================================================================================================
# 8. Bad input
# =================================================================================================

def test_huge_attribute_is_truncated_visibly_and_the_facts_survive():
    size = 10 * 1024 * 1024
    r = one({**LLM, "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 1000,
             "gen_ai.usage.output_tokens": 100, "gen_ai.input.messages": "A" * size})
    stored = r.stored_attrs["gen_ai.input.messages"]
    marker = f"…[truncated {size - DEFAULT_MAX_ATTR_BYTES} bytes]"
    assert stored == "A" * DEFAULT_MAX_ATTR_BYTES + marker
    assert r.has(FLAG_TRUNCATED)
    assert (r.input_tokens, r.output_tokens, r.cost_nusd) == (1000, 100, 3_500_000)
    assert len(r.span.SerializeToString()) < DEFAULT_MAX_ATTR_BYTES + 1024


def test_truncation_never_splits_a_utf8_character():
    # 3000 × "é" = 6000 bytes; limit 1001 keeps 500 whole characters (1000 bytes) and cuts 5000.
    r = one({**LLM, "app.note": "é" * 3000}, norm=normalizer(max_attr_bytes=1001))
    assert r.stored_attrs["app.note"] == "é" * 500 + "…[truncated 5000 bytes]"
    assert r.has(FLAG_TRUNCATED)


def test_small_span_is_not_truncated():
    assert one({**LLM, "app.note": "x" * 100}).flags & FLAG_TRUNCATED == 0


def test_thousands_of_attributes_are_capped():
    attrs = {**LLM, "gen_ai.usage.input_tokens": 100, **{f"junk.{i}": i for i in range(5000)}}
    r = one(attrs)
    span = r.span
    assert len(span.attributes) == MAX_ATTRIBUTES == 2048
    assert span.dropped_attributes_count == len(attrs) - MAX_ATTRIBUTES == 2955
    assert r.has(FLAG_ATTRS_DROPPED)
    assert (r.kind, r.input_tokens) == ("llm", 100)


def test_thousands_of_events_are_capped():
    events = [("gen_ai.content.completion.chunk", T0 + (i + 1) * 1000, {}) for i in range(MAX_EVENTS + 10)]
    r = one(LLM, events=events)
    assert len(r.span.events) == MAX_EVENTS
    assert r.span.dropped_events_count == 10
    assert r.has(FLAG_ATTRS_DROPPED)
    assert r.ttft_ns == 1000


def test_invalid_ids_are_rejected_with_counted_reasons_and_the_rest_kept():
    spans = [make_span(1, 1, None, "ok-root", LLM),
             make_span(0, 2, None, "zero-trace", LLM),
             make_span(1, 3, None, "short-trace", LLM),
             make_span(1, 0, None, "zero-span", LLM),
             make_span(1, 5, None, "long-span", LLM),
             make_span(1, 6, None, "short-parent", LLM),
             make_span(1, 7, None, "zero-parent", LLM),
             make_span(1, 8, 1, "ok-child", LLM)]
    spans[2].trace_id = b"\x01" * 15
    spans[4].span_id = b"\x01" * 9
    spans[5].parent_span_id = b"\x01\x02"
    spans[6].parent_span_id = b"\x00" * 8
    rows, rejections = decode(spans)
    assert [r.name for r in rows] == ["ok-root", "ok-child"]
    assert rows[1].parent_span_id == span_id_bytes(1)
    assert rows[0].parent_span_id is None
    assert (rows[0].trace_id, rows[0].span_id) == (trace_id_bytes(1), span_id_bytes(1))
    assert rejections.count == 6
    assert rejections.reasons == {"invalid trace_id": 2, "invalid span_id": 2, "invalid parent_span_id": 2}
    assert rejections.message() == "6 rejected: 2 invalid parent_span_id, 2 invalid span_id, 2 invalid trace_id"


def test_duplicate_span_in_one_request_is_rejected_once():
    spans = [make_span(1, 1, None, "first", LLM), make_span(1, 1, None, "second", LLM),
             make_span(2, 1, None, "same span id, other trace", LLM)]
    rows, rejections = decode(spans)
    assert [r.name for r in rows] == ["first", "same span id, other trace"]
    assert rejections.reasons == {"duplicate span in request": 1}


def test_negative_duration():
    r = one(LLM, start_ns=T0, end_ns=T0 - 5)
    assert r.duration_ns is None
    assert r.has(FLAG_DURATION_INVALID)
    assert (r.start_ns, r.end_ns) == (T0, T0 - 5)  # plausible times are kept as sent
    assert r.flags & FLAG_TIME_ADJUSTED == 0


# A fixed64 of ns ends in 2554 (2**64 − 1 ns), so "year 3000" cannot even be encoded; use 2500 and the maximum.
Y2500 = 16_725_225_600 * 10**9


@pytest.mark.parametrize(("start", "end", "duration"), [
    (Y2500, Y2500 + 2 * SECOND, 2 * SECOND),
    (2**64 - 1, 2**64 - 1, 0),
    (0, 0, 0),
    (RECEIVED + 2 * 3600 * SECOND, RECEIVED + 2 * 3600 * SECOND + SECOND, SECOND),  # 2 h ahead: beyond skew
], ids=["year2500", "max_uint64", "zero", "two_hours_ahead"])
def test_implausible_timestamps_move_to_the_received_time(start, end, duration):
    r = one(LLM, start_ns=start, end_ns=end)
    assert r.has(FLAG_TIME_ADJUSTED)
    assert (r.start_ns, r.end_ns, r.duration_ns) == (RECEIVED - duration, RECEIVED, duration)


def test_a_clock_a_little_fast_is_tolerated():
    start = RECEIVED + 30 * 60 * SECOND
    r = one(LLM, start_ns=start, end_ns=start + SECOND)
    assert r.flags & FLAG_TIME_ADJUSTED == 0
    assert (r.start_ns, r.duration_ns) == (start, SECOND)


@pytest.mark.parametrize(("start", "end"), [(T0, Y2500), (0, T0)], ids=["end_year2500", "start_zero"])
def test_time_adjusted_span_has_a_consistent_duration(start, end):
    r = one(LLM, start_ns=start, end_ns=end)
    assert r.has(FLAG_TIME_ADJUSTED)
    assert r.duration_ns is None or r.duration_ns == r.end_ns - r.start_ns


def _with_invalid_utf8() -> bytes:
    request = trace_request([
        make_span(1, 1, None, "dirty", {**LLM, "gen_ai.input.messages": "hello MARKER world",
                                        "gen_ai.usage.input_tokens": 7}),
        make_span(1, 2, None, "clean", {**LLM, "gen_ai.input.messages": "fine"}),
    ])
    data = bytearray(request.SerializeToString())
    at = data.index(b"MARKER")
    data[at:at + 2] = b"\xff\xfe"  # same length: the protobuf framing stays valid
    return bytes(data)


def test_invalid_utf8_is_repaired_and_only_the_dirty_span_is_flagged():
    data = _with_invalid_utf8()
    with pytest.raises(DecodeError):
        ExportTraceServiceRequest().ParseFromString(data)  # the strict parser refuses it
    for request, repaired in (otlp.parse_protobuf("traces", data),
                              otlp.decode_body("traces", data, json_body=False, gzipped=False)):
        assert repaired is True
        rows, rejections = decode(request, utf8_repaired=repaired)
        assert rejections.count == 0
        dirty, clean = rows
        assert dirty.name == "dirty" and clean.name == "clean"
        assert dirty.stored_attrs["gen_ai.input.messages"] == "hello \ufffd\ufffdRKER world"
        assert dirty.has(FLAG_UTF8_REPAIRED)
        assert clean.flags & FLAG_UTF8_REPAIRED == 0
        assert (dirty.kind, dirty.input_tokens) == ("llm", 7)


def test_clean_protobuf_is_not_marked_repaired():
    request, repaired = otlp.parse_protobuf("traces", trace_request([make_span(1, 1, None, "x", LLM)]).SerializeToString())
    assert repaired is False
    rows, _ = decode(request, utf8_repaired=repaired)
    assert rows[0].flags & FLAG_UTF8_REPAIRED == 0


OTLP_JSON = """{"resourceSpans": [{
  "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "weather"}},
                              {"key": "tenant.id", "value": {"stringValue": "acme"}}]},
  "scopeSpans": [{
    "scope": {"name": "opentelemetry.instrumentation.anthropic", "version": "0.62.1"},
    "spans": [{
      "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
      "parentSpanId": "eee19b7ec3c1b173", "name": "anthropic.chat", "kind": 3,
      "startTimeUnixNano": "1767000000000000000", "endTimeUnixNano": "1767000001000000000",
      "attributes": [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.provider.name", "value": {"stringValue": "anthropic"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "claude-sonnet-4-5"}},
        {"key": "gen_ai.request.temperature", "value": {"doubleValue": 0.2}},
        {"key": "gen_ai.request.stream", "value": {"boolValue": true}},
        {"key": "gen_ai.response.finish_reasons", "value": {"arrayValue": {"values": [{"stringValue": "tool_use"}]}}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "2360"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "85"}},
        {"key": "gen_ai.usage.cache_read.input_tokens", "value": {"intValue": "2048"}},
        {"key": "gen_ai.usage.cache_creation.input_tokens", "value": {"intValue": 300}},
        {"key": "gen_ai.input.messages", "value": {"stringValue": "mail me: jane.doe@example.com"}}
      ],
      "events": [{"timeUnixNano": "1767000000250000000", "name": "gen_ai.content.completion.chunk"}],
      "status": {"code": 1}
    }]
  }]
}]}"""


def test_otlp_json_with_hex_ids_and_string_int64_gives_the_same_rows_as_protobuf():
    span = make_span(0x5B8EFFF798038103D269B633813FC60C, 0xEEE19B7EC3C1B174, 0xEEE19B7EC3C1B173, "anthropic.chat", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.request.temperature": 0.2,
        "gen_ai.request.stream": True, "gen_ai.response.finish_reasons": ["tool_use"],
        "gen_ai.usage.input_tokens": 2360, "gen_ai.usage.output_tokens": 85,
        "gen_ai.usage.cache_read.input_tokens": 2048, "gen_ai.usage.cache_creation.input_tokens": 300,
        "gen_ai.input.messages": "mail me: jane.doe@example.com"},
        events=[("gen_ai.content.completion.chunk", T0 + 250 * MS, {})], status_code=STATUS_OK)
    proto_request = trace_request([span], service="weather", scope=("opentelemetry.instrumentation.anthropic", "0.62.1"),
                                  resource_attrs={"tenant.id": "acme"})
    json_request, repaired = otlp.parse_json("traces", OTLP_JSON.encode())
    assert repaired is False
    assert json_request == proto_request
    from_json, _ = decode(json_request)
    from_proto, _ = decode(proto_request)
    assert [r.values for r in from_json] == [r.values for r in from_proto]
    r = from_json[0]
    assert (r.trace_id.hex(), r.span_id.hex(), r.parent_span_id.hex()) == (
        "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173")
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens) == (2360, 85, 2048, 300)
    assert (r.cost_nusd, r.ttft_ns, r.streaming, r.finish_reason) == (SONNET_COST_NUSD, 250 * MS, 1, "tool_call")
    assert (r.service, r.own_tenant, r.status, r.start_ns) == ("weather", "acme", STATUS_OK, T0)
    assert r.stored_attrs["gen_ai.input.messages"] == "mail me: [REDACTED:email]"


def test_resources_and_scopes_are_returned_once_and_referenced_by_digest():
    request = trace_request([make_span(1, 1, None, "a", LLM), make_span(1, 2, 1, "b", LLM)], service="weather",
                            scope=("openinference.instrumentation.anthropic", "0.1.20"))
    rows, resources, scopes, _ = normalizer().decode_traces(request, received_ns=RECEIVED)
    assert len(resources) == 1 and len(scopes) == 1
    (res_digest, (service, _version, _blob)), = resources.items()
    (scope_digest, (scope_name, scope_version, _sblob)), = scopes.items()
    assert (service, scope_name, scope_version) == ("weather", "openinference.instrumentation.anthropic", "0.1.20")
    assert {(Row(r).resource_id, Row(r).scope_id) for r in rows} == {(res_digest, scope_digest)}


def test_unknown_attributes_are_kept_in_the_raw_span():
    attrs = {**LLM, "acme.experiment": "B", "gen_ai.usage.audio.input_tokens": 12, "tag.tags": ["prod", "eu"]}
    r = one(attrs, "chat gpt-4o", kind=1)
    assert r.stored_attrs == attrs
    assert (r.otel_kind, r.name) == (1, "chat gpt-4o")


# =================================================================================================
# 9. Logs
# =================================================================================================

def test_logs_keep_ids_event_names_and_the_choice_finish_reason():
    choice = {"index": 0, "finish_reason": "tool_calls",
              "message": {"role": "assistant", "tool_calls": [
                  {"id": "call_VSPy", "type": "function",
                   "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}}]}}
    records = [
        log_record(1, 2, "gen_ai.user.message", {"content": "Weather in Paris?"}, {"gen_ai.system": "openai"}),
        log_record(1, 2, "gen_ai.choice", choice, {"gen_ai.system": "openai"}, severity=9),
        log_record(1, 2, "", {"index": 0, "finish_reason": "SAFETY"}, {"event.name": "gen_ai.choice"}),  # old SDK
        log_record(None, None, "", "service started", time_ns=0),
    ]
    records[3].observed_time_unix_nano = T0 + 5
    rows, resources, _scopes, rejections = decode_logs(records)
    assert rejections.count == 0
    assert [log_field(r, "event_name") for r in rows] == [
        "gen_ai.user.message", "gen_ai.choice", "gen_ai.choice", None]
    assert [log_field(r, "finish_reason") for r in rows] == [None, "tool_call", "content_filter", None]
    assert [(log_field(r, "trace_id"), log_field(r, "span_id")) for r in rows[:3]] == [
        (trace_id_bytes(1), span_id_bytes(2))] * 3
    assert (log_field(rows[3], "trace_id"), log_field(rows[3], "span_id")) == (None, None)
    assert [log_field(r, "time_ns") for r in rows] == [T0, T0, T0, T0 + 5]
    assert log_field(rows[1], "severity") == 9
    (res_digest, (service, _version, _)), = resources.items()
    assert service == "svc"
    assert {log_field(r, "resource_id") for r in rows} == {res_digest}
    # The tool call in the choice body is stored intact (argument strings hold no PII).
    assert any_value(stored_log(rows[1]).body) == choice


def test_log_records_with_invalid_ids_are_rejected():
    records = [log_record(1, 2, "gen_ai.user.message", {"content": "a"}), log_record(0, 2, "x"), log_record(1, 0, "x")]
    records[1].trace_id = b"\x00" * 16
    records[2].span_id = b"\x01" * 4
    rows, _, _, rejections = decode_logs(records)
    assert len(rows) == 1
    assert rejections.reasons == {"invalid trace/span id on log record": 2}


def test_log_time_outside_the_plausible_window_uses_the_received_time():
    rows, *_ = decode_logs([log_record(1, 2, "x", time_ns=Y2500), log_record(1, 2, "y", time_ns=10**9)])
    assert [log_field(r, "time_ns") for r in rows] == [RECEIVED, RECEIVED]


def test_log_redaction_of_bodies_and_structured_attributes():
    details = log_record(1, 2, "gen_ai.client.inference.operation.details", None, {
        "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": PII}]}],
        "gen_ai.usage.input_tokens": 42})
    plain = log_record(1, 2, "", f"user said: {PII}")
    structured_app_log = log_record(1, 2, "app.audit", {"who": EMAIL})
    rows, *_ = decode_logs([details, plain, structured_app_log])
    stored = [stored_log(r) for r in rows]
    attrs = {kv.key: any_value(kv.value) for kv in stored[0].attributes}
    assert attrs == {"gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": PII_REDACTED}]}],
                     "gen_ai.usage.input_tokens": 42}
    assert any_value(stored[1].body) == f"user said: {PII_REDACTED}"
    # Structured bodies of any other event are redacted too: redaction covers every string.
    assert any_value(stored[2].body) == {"who": "[REDACTED:email]"}


@pytest.mark.parametrize(("body", "expected"), [
    ({"index": 0, "finish_reason": "end_turn", "message": {"content": "hi"}}, "stop"),
    ({"index": 0, "finish_reason": "length"}, "length"),
    ({"index": 0, "finish_reason": "content_filter"}, "content_filter"),
    ({"index": 0, "message": {"content": "no reason"}}, None),
])
def test_choice_log_finish_reason_normalized(body, expected):
    rows, *_ = decode_logs([log_record(1, 2, "gen_ai.choice", body)])
    assert log_field(rows[0], "finish_reason") == expected
