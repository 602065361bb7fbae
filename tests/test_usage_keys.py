"""Token usage of every instrumentation family × operation, read as design §2 rule 2 says.

Payload-level: each test builds the OTLP request an instrumentation really sends (keys and shapes
from the source named in each case) and runs it through `Normalizer.decode_traces`; the Vercel
embed trace also goes through the real writer, so "billed once, priced" is checked where it is
decided. Rules: input INCLUDES cache, an embedding's tokens are input tokens, output is never
total − input, and a total-only count on an embedding is its input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import pytest

from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store.connection import WriterLock, open_reader, open_writer
from store.models import COL
from store.queries import report
from store.writer import SpanWriter
from tests.otlp_factory import T0, make_span, trace_request

PRICES = PriceTable.load()
RECEIVED = T0 + 1000 * 10**9
EMBED_PRICE_PER_TOKEN_NUSD = 20  # openai/text-embedding-3-small: $0.02 per 1M tokens


class Row:
    def __init__(self, values) -> None:
        self.values = values

    def __getattr__(self, name: str) -> Any:
        return self.values[COL[name]]


def decode(spans, scope=("scope.name", "1.0")) -> list[Row]:
    rows, _, _, rejections = Normalizer(PRICES, IngestOptions()).decode_traces(
        trace_request(spans, scope=scope), received_ns=RECEIVED)
    assert rejections.count == 0, rejections.reasons
    return [Row(r) for r in rows]


def one(attrs: Mapping[str, Any], name: str = "span", scope=("scope.name", "1.0")) -> Row:
    (row,) = decode([make_span(1, 2, None, name, attrs)], scope)
    return row


def sonnet_cost(inp: int, out: int, cache_read: int, cache_write: int) -> int:
    return PriceTable.cost_nusd(PRICES.lookup("anthropic", "claude-sonnet-4-5"), inp, out, cache_read, cache_write, 0)


# =================================================================================================
# Vercel AI SDK: embed / embedMany carry only ai.usage.tokens
# [vercel/ai packages/ai/src/embed/embed.ts: 'ai.usage.tokens' on ai.embed and ai.embed.doEmbed]
# =================================================================================================

VERCEL_EMBED_BASE = {"ai.model.id": "text-embedding-3-small", "ai.model.provider": "openai.embedding",
                     "ai.settings.maxRetries": 2, "ai.telemetry.functionId": "index-docs"}


@pytest.mark.parametrize("operation", ["ai.embed.doEmbed", "ai.embedMany.doEmbed"])
def test_vercel_do_embed_total_only_usage_is_input_and_priced(operation):
    r = one({**VERCEL_EMBED_BASE, "operation.name": f"{operation} index-docs", "ai.operationId": operation,
             "ai.values": ['"sunny day at the beach"'], "ai.usage.tokens": 1000}, operation, scope=("ai", ""))
    assert (r.kind, r.operation) == ("embedding", "embeddings")
    assert (r.input_tokens, r.output_tokens) == (1000, None)
    assert (r.provider, r.price_id) == ("openai", "openai/text-embedding-3-small")
    assert r.cost_nusd == 1000 * EMBED_PRICE_PER_TOKEN_NUSD


@pytest.mark.parametrize("operation", ["ai.embed", "ai.embedMany"])
def test_vercel_embed_wrappers_are_embeddings_with_their_usage(operation):
    r = one({**VERCEL_EMBED_BASE, "operation.name": operation, "ai.operationId": operation,
             "ai.usage.tokens": 1000}, operation, scope=("ai", ""))
    assert (r.kind, r.input_tokens, r.output_tokens) == ("embedding", 1000, None)


def test_vercel_embed_trace_is_billed_once_at_the_provider_call_and_priced(tmp_path):
    """ai.embed wraps ai.embed.doEmbed, both with ai.usage.tokens: one call, priced, in the report."""
    now_ns = time.time_ns()
    t = now_ns - 60 * 10**9
    spans = [
        make_span(7, 1, None, "ai.embed", {**VERCEL_EMBED_BASE, "ai.operationId": "ai.embed",
                                           "ai.usage.tokens": 1500}, start_ns=t, end_ns=t + 300 * 10**6),
        make_span(7, 2, 1, "ai.embed.doEmbed", {**VERCEL_EMBED_BASE, "ai.operationId": "ai.embed.doEmbed",
                                                "ai.usage.tokens": 1500},
                  start_ns=t + 10**6, end_ns=t + 290 * 10**6),
    ]
    path = tmp_path / "embed.db"
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    rows, resources, scopes, _ = Normalizer(PRICES, IngestOptions()).decode_traces(
        trace_request(spans, scope=("ai", "6.0.0")), received_ns=now_ns)
    SpanWriter(db).write(rows, [], resources, scopes)
    db.close()
    lock.release()
    reader = open_reader(path)
    try:
        billed = dict(reader.execute("SELECT name, billed FROM spans").fetchall())
        result = report(reader, 3600, ["model"], now_s=now_ns / 1e9)
    finally:
        reader.close()
    assert billed == {"ai.embed": 0, "ai.embed.doEmbed": 1}
    (group,) = result["groups"]
    assert group["key"] == {"model": "text-embedding-3-small"}
    assert (group["calls"], group["unpriced_calls"]) == (1, 0)
    assert (group["tokens"]["input"], group["tokens"]["output"]) == (1500, 0)
    assert group["cost_usd"] == 1500 * EMBED_PRICE_PER_TOKEN_NUSD / 1e9


def test_vercel_embed_without_usage_from_the_provider_is_unknown_not_zero():
    # embed.ts: `usage ?? { tokens: NaN }`, exported as a double NaN: unknown, neither 0 nor garbage.
    for operation in ("ai.embed", "ai.embed.doEmbed"):
        r = one({**VERCEL_EMBED_BASE, "ai.operationId": operation, "ai.usage.tokens": float("nan")},
                operation, scope=("ai", ""))
        assert (r.kind, r.input_tokens, r.cost_nusd) == ("embedding", None, None)
        assert r.price_id == "openai/text-embedding-3-small"


# =================================================================================================
# A total-only count on an embedding is its input, in every family; on an LLM call it is never
# split into input/output.
# =================================================================================================

EMBEDDING_TOTAL_ONLY = [
    # OTel semconv embeddings span with an OpenLLMetry-style total key only
    ({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3-small",
      "gen_ai.usage.total_tokens": 1000}, "embeddings text-embedding-3-small"),
    # OpenLLMetry ≤0.47 [semconv_ai LLM_USAGE_TOTAL_TOKENS = "llm.usage.total_tokens"]
    ({"llm.request.type": "embedding", "gen_ai.request.model": "text-embedding-3-small",
      "llm.usage.total_tokens": 1000}, "openai.embeddings"),
    # OpenInference EMBEDDING span [openinference semconv LLM_TOKEN_COUNT_TOTAL]
    ({"openinference.span.kind": "EMBEDDING", "embedding.model_name": "text-embedding-3-small",
      "llm.token_count.total": 1000}, "CreateEmbeddings"),
    # LiteLLM's OTel callback on an async embedding [litellm/integrations/opentelemetry.py]
    ({"gen_ai.operation.name": "aembedding", "llm.request.type": "aembedding",
      "gen_ai.request.model": "text-embedding-3-small", "gen_ai.usage.total_tokens": 1000,
      "gen_ai.usage.output_tokens": "", "gen_ai.usage.input_tokens": ""}, "litellm_request"),
    # Vercel AI SDK 5/6 total
    ({"ai.operationId": "ai.embedMany.doEmbed", "ai.model.id": "text-embedding-3-small",
      "ai.usage.totalTokens": 1000}, "ai.embedMany.doEmbed"),
    # Langfuse embedding observation whose usage_details has only a total
    ({"langfuse.observation.type": "embedding", "langfuse.observation.model.name": "text-embedding-3-small",
      "langfuse.observation.usage_details": json.dumps({"total": 1000})}, "embed"),
]


@pytest.mark.parametrize(("attrs", "name"), EMBEDDING_TOTAL_ONLY,
                         ids=["otel", "openllmetry-old", "openinference", "litellm", "vercel-totalTokens",
                              "langfuse-total"])
def test_total_only_usage_on_an_embedding_is_its_input(attrs, name):
    r = one(attrs, name)
    assert r.kind == "embedding"
    assert (r.input_tokens, r.output_tokens) == (1000, None)
    assert r.cost_nusd == 1000 * EMBED_PRICE_PER_TOKEN_NUSD


@pytest.mark.parametrize("total_key", ["gen_ai.usage.total_tokens", "llm.usage.total_tokens",
                                       "llm.token_count.total", "ai.usage.tokens", "ai.usage.totalTokens"])
def test_a_total_is_input_on_an_embedding_but_never_split_on_an_llm_call(total_key):
    embedding = one({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3-small",
                     total_key: 700}, "embeddings text-embedding-3-small")
    assert (embedding.input_tokens, embedding.output_tokens) == (700, None)
    llm = one({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", total_key: 700}, "chat gpt-4o")
    assert (llm.kind, llm.input_tokens, llm.output_tokens, llm.cost_nusd) == ("llm", None, None, None)


def test_an_input_key_wins_over_a_total_and_langfuse_totals_follow_the_same_rule():
    # Langfuse: a total alone on an embedding observation is its input…
    r = one({"langfuse.observation.type": "embedding", "langfuse.observation.model.name": "text-embedding-3-small",
             "langfuse.observation.usage_details": json.dumps({"total_tokens": 1000})}, "embed")
    assert (r.input_tokens, r.output_tokens) == (1000, None)
    # …an input bucket wins over it…
    r = one({"langfuse.observation.type": "embedding", "langfuse.observation.model.name": "text-embedding-3-small",
             "langfuse.observation.usage_details": json.dumps({"input": 900, "total": 1000})}, "embed")
    assert (r.input_tokens, r.output_tokens) == (900, None)
    # …and on a generation a total alone stays unknown.
    r = one({"langfuse.observation.type": "generation", "langfuse.observation.model.name": "gpt-4o",
             "langfuse.observation.usage_details": json.dumps({"total": 1000})}, "gen")
    assert (r.kind, r.input_tokens, r.output_tokens) == ("llm", None, None)
    # OpenInference's OpenAI embeddings send prompt and total both [_get_attributes_from_embedding_usage]
    r = one({"openinference.span.kind": "EMBEDDING", "embedding.model_name": "text-embedding-3-small",
             "llm.token_count.prompt": 900, "llm.token_count.total": 1000, "llm.usage.total_tokens": 1100},
            "CreateEmbeddings")
    assert (r.input_tokens, r.output_tokens) == (900, None)


# =================================================================================================
# Vercel AI SDK 6 usage details [vercel/ai generate-text: ai.usage.inputTokenDetails.*,
# ai.usage.outputTokenDetails.*; inputTokens is the total, cache included]
# =================================================================================================

def test_vercel_ai_sdk_6_stream_usage_with_cache_write_is_priced_in_full():
    r = one({"ai.operationId": "ai.streamText.doStream", "ai.model.id": "claude-sonnet-4-5",
             "ai.model.provider": "anthropic.messages", "gen_ai.system": "anthropic.messages",
             "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.response.model": "claude-sonnet-4-5-20250929",
             "ai.usage.inputTokens": 2360, "ai.usage.inputTokenDetails.noCacheTokens": 12,
             "ai.usage.inputTokenDetails.cacheReadTokens": 2048, "ai.usage.inputTokenDetails.cacheWriteTokens": 300,
             "ai.usage.outputTokens": 85, "ai.usage.outputTokenDetails.textTokens": 85,
             "ai.usage.totalTokens": 2445, "ai.usage.cachedInputTokens": 2048,
             "gen_ai.usage.input_tokens": 2360, "gen_ai.usage.output_tokens": 85,
             "ai.response.msToFirstChunk": 412.5}, "ai.streamText.doStream", scope=("ai", "6.0.0"))
    assert r.kind == "llm"
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens) == (2360, 85, 2048, 300)
    assert r.cost_nusd == sonnet_cost(2360, 85, 2048, 300)


@pytest.mark.parametrize(("key", "column"), [
    ("ai.usage.inputTokenDetails.cacheReadTokens", "cache_read_tokens"),
    ("ai.usage.inputTokenDetails.cacheWriteTokens", "cache_write_tokens"),
    ("ai.usage.outputTokenDetails.reasoningTokens", "reasoning_tokens"),
])
def test_vercel_ai_sdk_6_detail_keys(key, column):
    r = one({"ai.operationId": "ai.generateText.doGenerate", "ai.model.id": "claude-sonnet-4-5",
             "ai.usage.inputTokens": 5000, "ai.usage.outputTokens": 900, key: 40}, "ai.generateText.doGenerate")
    assert getattr(r, column) == 40
    assert (r.input_tokens, r.output_tokens) == (5000, 900)  # details are subsets: nothing added


def test_openlit_completion_details_reasoning_key():
    # openlit semcov GEN_AI_USAGE_COMPLETION_TOKENS_DETAILS_REASONING
    r = one({"gen_ai.operation.name": "chat", "gen_ai.request.model": "o3-mini", "gen_ai.usage.input_tokens": 100,
             "gen_ai.usage.output_tokens": 500, "gen_ai.usage.completion_tokens_details.reasoning_tokens": 400,
             "gen_ai.usage.total_tokens": 600}, "chat o3-mini")
    assert (r.input_tokens, r.output_tokens, r.reasoning_tokens) == (100, 500, 400)


# =================================================================================================
# Operations beyond chat: LiteLLM call types, openlit image/audio, rerank
# =================================================================================================

def test_litellm_async_embedding_is_an_embedding():
    # gen_ai.operation.name is LiteLLM's call type ("chat" only for "completion"); unset usage
    # values are sent as "" by its safe_set_attribute.
    r = one({"gen_ai.operation.name": "aembedding", "llm.request.type": "aembedding", "gen_ai.system": "openai",
             "gen_ai.request.model": "text-embedding-3-small", "gen_ai.response.model": "text-embedding-3-small",
             "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.total_tokens": 1000, "gen_ai.usage.output_tokens": "",
             "llm.is_streaming": "False"}, "litellm_request", scope=("litellm", ""))
    assert (r.kind, r.operation, r.input_tokens, r.output_tokens) == ("embedding", "aembedding", 1000, None)
    assert r.cost_nusd == 1000 * EMBED_PRICE_PER_TOKEN_NUSD


def test_litellm_failed_async_completion_is_still_an_llm_call():
    r = one({"gen_ai.operation.name": "acompletion", "llm.request.type": "acompletion", "gen_ai.system": "openai",
             "gen_ai.request.model": "gpt-4o", "error.type": "RateLimitError"}, "litellm_request",
            scope=("litellm", ""))
    assert (r.kind, r.error_class, r.cost_nusd) == ("llm", "api", 0)


@pytest.mark.parametrize(("operation", "model"), [
    ("image", "gpt-image-1"), ("audio", "tts-1"), ("text_to_speech", "gpt-4o-mini-tts"),
    ("speech_to_text", "whisper-1")])
def test_openlit_image_and_audio_calls_are_model_calls_shown_unpriced(operation, model):
    # openlit sets its own gen_ai.usage.cost and no tokens: a call, unpriced here, never $0.
    r = one({"gen_ai.operation.name": operation, "gen_ai.system": "openai", "gen_ai.request.model": model,
             "gen_ai.usage.cost": 0.04}, f"{operation} {model}", scope=("openlit.otel.tracing", ""))
    assert (r.kind, r.operation, r.input_tokens, r.price_id, r.cost_nusd) == ("llm", operation, None, None, None)


@pytest.mark.parametrize(("attrs", "name"), [
    # OpenLLMetry voyageai: gen_ai.operation.name=rerank, usage as input tokens
    ({"gen_ai.operation.name": "rerank", "gen_ai.provider.name": "voyageai", "gen_ai.request.model": "rerank-2",
      "gen_ai.usage.input_tokens": 340}, "voyageai.rerank"),
    # LiteLLM arerank
    ({"gen_ai.operation.name": "arerank", "llm.request.type": "arerank", "gen_ai.request.model": "rerank-v3.5",
      "gen_ai.usage.total_tokens": ""}, "litellm_request"),
    # Vercel AI SDK 6 rerank spans (no usage)
    ({"ai.operationId": "ai.rerank", "ai.model.id": "rerank-v3.5", "ai.model.provider": "cohere.reranking"},
     "ai.rerank"),
    ({"ai.operationId": "ai.rerank.doRerank", "ai.model.id": "rerank-v3.5"}, "ai.rerank.doRerank"),
], ids=["openllmetry-voyage", "litellm-arerank", "vercel-rerank", "vercel-doRerank"])
def test_rerank_calls_are_retrievers_in_every_family(attrs, name):
    r = one(attrs, name)
    assert r.kind == "retriever"
    assert (r.cost_nusd, r.price_id) == (None, None)
