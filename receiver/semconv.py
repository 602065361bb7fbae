"""Attribute keys of every GenAI instrumentation family, in one table.

The conventions keep moving (OTel GenAI left the core repo in 2026 and renamed keys again), so the
normalizer reads keys from these tuples instead of scattering literals. Each tuple is in priority
order: the first key present wins. Sources: ../shared/semconv/semconv-map.md §2–§4.
"""

from __future__ import annotations

# --- span kind (design §2 rule 1) -------------------------------------------------------------
LANGFUSE_TYPE = "langfuse.observation.type"
OPENINFERENCE_KIND = "openinference.span.kind"
OPERATION_NAME = "gen_ai.operation.name"
LLM_REQUEST_TYPE = "llm.request.type"
TRACELOOP_KIND = "traceloop.span.kind"
VERCEL_OPERATION = "ai.operationId"

KINDS = ("llm", "embedding", "tool", "retriever", "agent", "chain", "guardrail", "span")
BILLABLE_KINDS = frozenset({"llm", "embedding"})

LANGFUSE_TYPE_KIND = {
    "generation": "llm",
    "embedding": "embedding",
    "agent": "agent",
    "tool": "tool",
    "chain": "chain",
    "retriever": "retriever",
    "evaluator": "chain",
    "guardrail": "guardrail",
}
OPENINFERENCE_KIND_MAP = {
    "LLM": "llm",
    "EMBEDDING": "embedding",
    "TOOL": "tool",
    "RETRIEVER": "retriever",
    "RERANKER": "retriever",
    "AGENT": "agent",
    "CHAIN": "chain",
    "GUARDRAIL": "guardrail",
    "EVALUATOR": "chain",
    "PROMPT": "chain",
}
OPERATION_KIND = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "completion": "llm",
    "generate": "llm",
    "responses": "llm",
    "embeddings": "embedding",
    "embedding": "embedding",
    "retrieval": "retriever",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "invoke_workflow": "chain",
    "plan": "chain",
    # Memory operations and fetch_response carry no LLM cost.
    "search_memory": "span",
    "create_memory": "span",
    "update_memory": "span",
    "upsert_memory": "span",
    "delete_memory": "span",
    "create_memory_store": "span",
    "delete_memory_store": "span",
    "fetch_response": "span",
}
LLM_REQUEST_TYPE_KIND = {"chat": "llm", "completion": "llm", "embedding": "embedding", "rerank": "retriever"}
TRACELOOP_KIND_MAP = {"workflow": "chain", "task": "chain", "agent": "agent", "tool": "tool"}
TOOL_KEYS = ("gen_ai.tool.name", "gen_ai.tool.call.id")
AGENT_KEYS = ("gen_ai.agent.name", "agent_name")

# --- provider and model -----------------------------------------------------------------------
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "ai.model.provider")
REQUEST_MODEL_KEYS = (
    "gen_ai.request.model",
    "llm.request.model_name",
    "embedding.model_name",
    "langfuse.observation.model.name",
    "ai.model.id",
)
RESPONSE_MODEL_KEYS = ("gen_ai.response.model", "llm.response.model_name", "ai.response.model", "llm.model_name")
# OpenInference: `llm.model_name` is the response model when known; the model asked for is the
# "model" inside this JSON attribute. The request model falls back to `llm.model_name`.
OPENINFERENCE_INVOCATION = "llm.invocation_parameters"
OPENINFERENCE_MODEL = "llm.model_name"
SERVER_ADDRESS = "server.address"

# --- tokens (design §2 rule 2: input INCLUDES cache, output INCLUDES reasoning) -----------------
INPUT_TOKEN_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "ai.usage.inputTokens",
    "ai.usage.promptTokens",
)
OUTPUT_TOKEN_KEYS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "ai.usage.outputTokens",
    "ai.usage.completionTokens",
)
CACHE_READ_KEYS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
    "ai.usage.cachedInputTokens",
    "gen_ai.usage.details.cache_read_tokens",
)
CACHE_WRITE_KEYS = (
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
    "gen_ai.usage.details.cache_write_tokens",
)
REASONING_KEYS = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
    "ai.usage.reasoningTokens",
    "gen_ai.usage.details.reasoning_tokens",
)
LANGFUSE_USAGE = "langfuse.observation.usage_details"
# Langfuse usage_details buckets are exclusive; these names are summed into the canonical totals.
LANGFUSE_INPUT_BUCKETS = ("input",)
LANGFUSE_CACHE_READ_BUCKETS = ("input_cache_read", "input_cached_tokens", "cache_read_input_tokens")
LANGFUSE_CACHE_WRITE_BUCKETS = (
    "input_cache_creation",
    "input_cache_write",
    "cache_creation_input_tokens",
    "input_cache_creation_5m",
    "input_cache_creation_1h",
)
LANGFUSE_OUTPUT_BUCKETS = ("output",)
LANGFUSE_REASONING_BUCKETS = ("output_reasoning", "output_reasoning_tokens")

# --- latency ---------------------------------------------------------------------------------
TTFT_SECONDS_KEYS = ("gen_ai.response.time_to_first_chunk",)
TTFT_SERVER_SECONDS_KEYS = ("gen_ai.server.time_to_first_token",)  # openlit: the last resort
TTFT_MS_KEYS = ("ai.response.msToFirstChunk", "ai.stream.msToFirstChunk")
LANGFUSE_COMPLETION_START = "langfuse.observation.completion_start_time"
FIRST_TOKEN_EVENTS = ("First Token Stream Event",)
CHUNK_EVENTS = ("gen_ai.content.completion.chunk", "llm.content.completion.chunk")
STREAM_KEYS = ("gen_ai.request.stream", "gen_ai.is_streaming", "llm.is_streaming")

# --- finish reasons and errors -----------------------------------------------------------------
FINISH_REASON_KEYS = (
    "gen_ai.response.finish_reasons",
    "llm.finish_reason",
    "gen_ai.completion.0.finish_reason",
    "llm.response.finish_reason",
    "ai.response.finishReason",
)
FINISH_REASON_MAP = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "complete": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "tool_calls": "tool_call",
    "tool_call": "tool_call",
    "tool_use": "tool_call",
    "function_call": "tool_call",
    "content_filter": "content_filter",
    "content-filter": "content_filter",
    "refusal": "content_filter",
    "safety": "content_filter",
    "recitation": "content_filter",
    "blocklist": "content_filter",
    "prohibited_content": "content_filter",
    "spii": "content_filter",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "error": "error",
}
ERROR_TYPE = "error.type"
HTTP_STATUS_KEYS = ("http.response.status_code", "http.status_code", "error.status_code", "llm.error.status_code")
VALIDATION_ATTR = "app.llm.validation.error"
LANGFUSE_LEVEL = "langfuse.observation.level"
LANGFUSE_STATUS_MESSAGE = "langfuse.observation.status_message"
GUARDRAIL_PASSED_KEYS = ("guardrail.passed", "app.llm.guardrail.passed")

# --- dimensions (design §2 rule 7); overridable from the config file ---------------------------
DEFAULT_DIMENSION_KEYS: dict[str, tuple[str, ...]] = {
    "feature": (
        "app.llm.feature",
        "gen_ai.agent.name",
        "traceloop.workflow.name",
        "langfuse.trace.name",
    ),
    "tenant": (
        "app.llm.tenant.id",
        "tenant.id",
        "traceloop.association.properties.customer_id",
        "langfuse.trace.metadata.tenant",
        "langfuse.observation.metadata.tenant",
        "metadata.tenant",  # OpenInference: a key inside the `metadata` JSON attribute
    ),
    "prompt_id": (
        "app.llm.prompt.template.id",
        "gen_ai.prompt.name",
        "langfuse.observation.prompt.name",
        "traceloop.prompt.key",
        "llm.prompt_template.id",
    ),
    "prompt_version": (
        "app.llm.prompt.template.version",
        "app.llm.prompt.template.sha",
        "gen_ai.prompt.version",
        "langfuse.observation.prompt.version",
        "llm.prompt_template.version",
        "traceloop.prompt.version",
    ),
    "conversation": (
        "gen_ai.conversation.id",
        "session.id",
        "traceloop.association.properties.session_id",
        "langfuse.session.id",
        "ai.telemetry.metadata.sessionId",
    ),
    "user": (
        "user.id",
        "enduser.id",
        "traceloop.association.properties.user_id",
        "langfuse.user.id",
        "gen_ai.user",
        "llm.user",
        "ai.telemetry.metadata.userId",
    ),
}
# The root span's name is the last-resort feature of a trace (design §2 rule 7).
FEATURE_FALLS_BACK_TO_ROOT_NAME = True
OPENINFERENCE_METADATA = "metadata"

# --- content (design §2 rule 8): keys whose values are prompts, completions or tool payloads ---
CONTENT_KEYS = frozenset(
    {
        "gen_ai.system_instructions",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.retrieval.query.text",
        "gen_ai.retrieval.documents",
        "gen_ai.prompt",
        "gen_ai.completion",
        "input.value",
        "output.value",
        "llm.prompt_template.variables",
        "langfuse.observation.input",
        "langfuse.observation.output",
        "langfuse.trace.input",
        "langfuse.trace.output",
        "traceloop.entity.input",
        "traceloop.entity.output",
        "ai.prompt",
        "ai.prompt.messages",
        "ai.response.text",
        "ai.response.toolCalls",
        "ai.response.object",
        "ai.toolCall.args",
        "ai.toolCall.result",
    }
)
# Flattened, indexed content keys (OpenInference, OpenLLMetry ≤0.54, completions APIs).
CONTENT_PREFIXES = (
    "llm.input_messages.",
    "llm.output_messages.",
    "llm.prompts.",
    "llm.choices.",
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "gen_ai.prompt.variable.",
    "retrieval.documents.",
    "reranker.input_documents.",
    "reranker.output_documents.",
)
# Flattened keys that are structure, not content, and must stay readable with --no-content.
CONTENT_PREFIX_EXCEPTIONS = ("gen_ai.completion.0.finish_reason", "gen_ai.prompt.name", "gen_ai.prompt.version")
CONTENT_EVENTS = frozenset(
    {
        "gen_ai.content.prompt",
        "gen_ai.content.completion",
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.tool.message",
        "gen_ai.choice",
        "gen_ai.client.inference.operation.details",
    }
)

# --- log records joined to spans ---------------------------------------------------------------
EVENT_NAME_ATTR = "event.name"  # deprecated, older SDKs still send it
CHOICE_EVENT = "gen_ai.choice"
EVALUATION_EVENT = "gen_ai.evaluation.result"
DETAILS_EVENT = "gen_ai.client.inference.operation.details"


def all_known_keys() -> frozenset[str]:
    """Every span attribute key the normalizer reads (used to build its lookup table)."""
    keys: set[str] = {
        LANGFUSE_TYPE,
        OPENINFERENCE_KIND,
        OPERATION_NAME,
        LLM_REQUEST_TYPE,
        TRACELOOP_KIND,
        VERCEL_OPERATION,
        SERVER_ADDRESS,
        LANGFUSE_USAGE,
        LANGFUSE_COMPLETION_START,
        ERROR_TYPE,
        VALIDATION_ATTR,
        LANGFUSE_LEVEL,
        LANGFUSE_STATUS_MESSAGE,
        OPENINFERENCE_METADATA,
        OPENINFERENCE_INVOCATION,
        OPENINFERENCE_MODEL,
    }
    for group in (
        TOOL_KEYS,
        AGENT_KEYS,
        PROVIDER_KEYS,
        REQUEST_MODEL_KEYS,
        RESPONSE_MODEL_KEYS,
        INPUT_TOKEN_KEYS,
        OUTPUT_TOKEN_KEYS,
        CACHE_READ_KEYS,
        CACHE_WRITE_KEYS,
        REASONING_KEYS,
        TTFT_SECONDS_KEYS,
        TTFT_SERVER_SECONDS_KEYS,
        TTFT_MS_KEYS,
        STREAM_KEYS,
        FINISH_REASON_KEYS,
        HTTP_STATUS_KEYS,
        GUARDRAIL_PASSED_KEYS,
    ):
        keys.update(group)
    for group in DEFAULT_DIMENSION_KEYS.values():
        keys.update(group)
    return frozenset(keys)
