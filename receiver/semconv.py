"""Attribute keys of every GenAI instrumentation family, in one table.

The conventions keep moving (OTel GenAI left the core repo in 2026 and renamed keys again), so the
normalizer reads keys from these tuples instead of scattering literals. Each tuple is in priority
order: the first key present wins. Sources: ../shared/semconv/semconv-map.md §2–§4.
"""

from __future__ import annotations

import re

import re2

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
    # A rerank is a retrieval step, as OpenInference RERANKER and llm.request.type=rerank say
    # (OpenLLMetry's voyageai instrumentation sends gen_ai.operation.name=rerank).
    "rerank": "retriever",
    # openlit's non-chat model calls (semcov GEN_AI_OPERATION_TYPE_*): billed per image or second
    # more often than per token, so usually unpriced, but model calls all the same.
    "image": "llm",
    "audio": "llm",
    "speech_to_text": "llm",
    "text_to_speech": "llm",
}
# LiteLLM's OpenTelemetry callback sends its call type as llm.request.type, and as
# gen_ai.operation.name too (only "completion" becomes "chat"): "acompletion", "aembedding"…
# [BerriAI/litellm litellm/integrations/opentelemetry.py set_attributes; litellm/types/utils.py CallTypes]
LITELLM_CALL_TYPE_KIND = {
    "completion": "llm",
    "acompletion": "llm",
    "text_completion": "llm",
    "atext_completion": "llm",
    "responses": "llm",
    "aresponses": "llm",
    "anthropic_messages": "llm",
    "generate_content": "llm",
    "agenerate_content": "llm",
    "embedding": "embedding",
    "aembedding": "embedding",
    "image_generation": "llm",
    "aimage_generation": "llm",
    "image_edit": "llm",
    "aimage_edit": "llm",
    "transcription": "llm",
    "atranscription": "llm",
    "speech": "llm",
    "aspeech": "llm",
    "rerank": "retriever",
    "arerank": "retriever",
}
OPERATION_KIND.update({k: v for k, v in LITELLM_CALL_TYPE_KIND.items() if k not in OPERATION_KIND})
LLM_REQUEST_TYPE_KIND = {"chat": "llm", "completion": "llm", "embedding": "embedding", "rerank": "retriever",
                         **LITELLM_CALL_TYPE_KIND}
TRACELOOP_KIND_MAP = {"workflow": "chain", "task": "chain", "agent": "agent", "tool": "tool"}
# Vercel AI SDK ai.operationId values that are not decided by their suffix (.doGenerate, .doStream
# → llm, .doEmbed → embedding): the embed wrappers carry the same ai.usage.tokens as their doEmbed
# child (bill-once leaves the wrapper unbilled) [vercel/ai packages/ai/src/embed/embed.ts, embed-many.ts;
# rerank/rerank.ts: ai.rerank / ai.rerank.doRerank carry no usage].
VERCEL_OPERATION_KIND = {
    "ai.embed": "embedding",
    "ai.embedMany": "embedding",
    "ai.rerank": "retriever",
    "ai.rerank.doRerank": "retriever",
    "ai.toolCall": "tool",
}
# MCP (OTel semconv docs/gen-ai/mcp.md; contrib opentelemetry-instrumentation-mcp). Only a
# tools/call is a tool call; initialize, tools/list, resources/read, prompts/get… are protocol
# traffic, never counted as tool calls. The tool's name is gen_ai.tool.name in the semconv and
# mcp.tool.name in the contrib instrumentation built on the draft (semantic-conventions#2083).
MCP_METHOD = "mcp.method.name"
MCP_TOOLS_CALL = "tools/call"
MCP_TOOL_NAME = "mcp.tool.name"
MCP_SESSION = "mcp.session.id"  # kept on the span (raw attributes); not a dimension: a connection, not a conversation
TOOL_KEYS = ("gen_ai.tool.name", "gen_ai.tool.call.id", MCP_TOOL_NAME)
# The tool a span ran (function tools and MCP tools): OTel, MCP draft, OpenInference TOOL spans,
# Vercel ai.toolCall spans, OpenLLMetry tool spans (traceloop.span.kind=tool, also its MCP
# instrumentation). A tool span with none of these is named after the span (Langfuse tool
# observations): see TOOL_SPAN_NAME_PREFIXES.
TOOL_NAME_KEYS = ("gen_ai.tool.name", MCP_TOOL_NAME, "tool.name", "ai.toolCall.name", "traceloop.entity.name")
# Span-name templates of tool spans: `execute_tool {gen_ai.tool.name}`, `tools/call {tool}` (MCP).
TOOL_SPAN_NAME_PREFIXES = ("execute_tool ", "tools/call ")
# The provider's id of one response: two spans carrying the same one are the same call.
RESPONSE_ID_KEYS = ("gen_ai.response.id", "llm.response.id", "ai.response.id")

# Instrumentation scopes by layer (models.LAYER_*). A scope not listed is an instrumentation of an SDK.
NATIVE_SDK_SCOPES = ("com.anthropic.sdk",)
FRAMEWORK_SCOPE_PARTS = (
    "langchain", "langgraph", "llama_index", "llama-index", "llamaindex", "crewai", "haystack", "dspy",
    "pydantic_ai", "pydantic-ai", "autogen", "semantic_kernel", "semantic-kernel", "smolagents", "agno",
    "openai_agents", "openai-agents", "google_adk", "google.adk", "strands", "litellm", "instructor",
    "mastra", "beeai", "guardrails",
)
FRAMEWORK_SCOPES_EXACT = ("ai",)  # the Vercel AI SDK's wrapper spans (ai.generateText, ai.streamText)


def call_layer(scope_name: str) -> int:
    """models.LAYER_* for spans of this instrumentation scope."""
    name = scope_name.lower()
    if any(name.startswith(prefix) for prefix in NATIVE_SDK_SCOPES):
        return 0
    if name in FRAMEWORK_SCOPES_EXACT or any(part in name for part in FRAMEWORK_SCOPE_PARTS):
        return 2
    return 1
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
    "ai.usage.inputTokenDetails.cacheReadTokens",  # AI SDK 6
    "gen_ai.usage.details.cache_read_tokens",
)
CACHE_WRITE_KEYS = (
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
    "ai.usage.inputTokenDetails.cacheWriteTokens",  # AI SDK 6 (AI SDK ≤5 has no cache-write key)
    "gen_ai.usage.details.cache_write_tokens",
)
REASONING_KEYS = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
    "ai.usage.reasoningTokens",
    "ai.usage.outputTokenDetails.reasoningTokens",  # AI SDK 6
    "gen_ai.usage.details.reasoning_tokens",
    "gen_ai.usage.completion_tokens_details.reasoning_tokens",  # openlit
)
# Total-only counts. Never used to derive output (total − input); an embedding's tokens are all
# input, so on an embedding span a total stands for the input when no input key is present: the
# Vercel AI SDK's embed spans carry only ai.usage.tokens [vercel/ai packages/ai/src/embed/embed.ts].
TOTAL_TOKEN_KEYS = (
    "gen_ai.usage.total_tokens",  # OpenLLMetry ≥0.48, openlit, LiteLLM
    "llm.usage.total_tokens",  # OpenLLMetry ≤0.47
    "llm.token_count.total",  # OpenInference
    "ai.usage.tokens",  # Vercel AI SDK embed / embedMany (+ .doEmbed)
    "ai.usage.totalTokens",  # Vercel AI SDK 5/6
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
# A total alone is an embedding's input (never an LLM call's output).
LANGFUSE_TOTAL_BUCKETS = ("total", "total_tokens")

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

# --- error classes from exception types and messages (design §2 rule 6) ------------------------
# A failed span says what failed in `error.type`, in the `exception.type` / `exception.message` of
# its "exception" span events, and in its status description. The OTel Python SDK records the type
# as `module.QualName` (openai.RateLimitError, pydantic_ai.exceptions.ModelHTTPError,
# google.genai.errors.ClientError, langchain_openai.chat_models.base.OpenAIRateLimitError) and the
# status as "RateLimitError: <message>"; OTel util-genai puts the qualified type in `error.type`
# (google-genai: the HTTP status, "429") and the bare message in the status; LangChain tracers put
# repr(exception) followed by the traceback there; Langfuse has only a status message.
#
# normalize.classify_failure reads the tables below in this order; the first that matches decides:
#   1. GUARDRAIL_ERROR_TYPES            the provider's content filter, raised     → guardrail
#   2. an HTTP status attribute 4xx/5xx                                          → api
#   3. API_ERROR_TYPES                  an SDK's exception for a failed call      → api
#   4. VALIDATION_ERROR_TYPES           the app's failed parse of model OUTPUT    → validation
#   5. API_STATUS_NUMBER (+ context)    "status_code: 429", "Error code: 529"…    → api
#   6. VALIDATION_MESSAGES              "1 validation error for X"…               → validation
#   7. API_ERROR_KEYWORDS               "rate_limit_error", "Connection reset"…   → api
# so a validation error is only ever a failed parse or schema check of what a model returned, never
# a package name ("pydantic" is in pydantic-ai's 429 too). Nothing matched: a failed llm/embedding
# span is an api error of sub-class "other"; any other span gets no class.
#
# Type patterns full-match the last dotted component of a type name (a Vercel AI SDK "AI_" prefix
# removed), case-insensitively. Sources: each SDK's exception module (openai/_exceptions.py,
# anthropic/_exceptions.py, google/genai/errors.py, pydantic_ai/exceptions.py, litellm/exceptions.py,
# httpx/_exceptions.py, requests/exceptions.py, aiohttp/client_exceptions.py,
# google/api_core/exceptions.py, langchain_core/exceptions.py) and the messages they format.


def _full(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.IGNORECASE)


# Exceptions that are a provider's content filter refusing the request or the answer: pydantic-ai
# ContentFilterError, openai ContentFilterFinishReasonError (raised by .parse()), litellm
# ContentPolicyViolationError (Azure/OpenAI's filter answering 400). Counted as guardrail.
GUARDRAIL_ERROR_TYPES = _full(r"ContentFilter\w*", r"ContentPolicyViolation\w*")

# (type pattern, sub-class, decisive). decisive: the type alone says the sub-class. Otherwise the
# type only says "a failed API call" (pydantic-ai ModelHTTPError, google.genai ClientError, anthropic
# APIStatusError mid-stream…): the status or keywords in the message decide, and the sub-class given
# here (None: "other") is the last resort. First row that matches wins.
API_ERROR_TYPES: tuple[tuple[re.Pattern[str], str | None, bool], ...] = (
    # openai / anthropic / litellm RateLimitError, LangChain's OpenAIRateLimitError, pydantic-ai's
    # ModelRateLimitError, google.api_core TooManyRequests / ResourceExhausted, botocore
    # ThrottlingException, cohere TooManyRequestsError, anthropic RampLimitExceededError.
    (_full(r"\w*RateLimit\w*", r"\w*TooManyRequests\w*", r"ResourceExhausted\w*", r"\w*Throttl\w*",
           r"\w*QuotaExceeded\w*", r"RampLimit\w*"), "rate_limit", True),
    # openai / anthropic APITimeoutError, litellm.Timeout, httpx ReadTimeout / ConnectTimeout /
    # PoolTimeout / TimeoutException, requests ReadTimeout / Timeout, asyncio / builtin TimeoutError,
    # aiohttp ServerTimeoutError, urllib3 ReadTimeoutError, anthropic RequestTimeoutError (408) and
    # GatewayTimeoutError (504), google.api_core / anthropic DeadlineExceeded.
    (_full(r"\w*Time[-_]?out\w*", r"\w*TimedOut\w*", r"DeadlineExceeded\w*"), "timeout", True),
    # openai / anthropic / litellm APIConnectionError, httpx ConnectError / ReadError / WriteError /
    # RemoteProtocolError / ProxyError, requests ConnectionError / SSLError / ChunkedEncodingError,
    # aiohttp ClientConnectorError / ServerDisconnectedError / ClientOSError, urllib3
    # NewConnectionError / ProtocolError, builtin ConnectionResetError / BrokenPipeError, socket.gaierror.
    (_full(r"\w*Connect\w*Error", r"\w*Connect\w*Exception", r"ReadError", r"WriteError", r"\w*ProtocolError",
           r"NetworkError", r"ProxyError", r"SSLError", r"ChunkedEncodingError", r"ClientOSError",
           r"BrokenPipeError", r"gaierror", r"IncompleteRead"), "network", True),
    # openai / anthropic InternalServerError (5xx), anthropic OverloadedError (529) /
    # ServiceUnavailableError (503) / HTTPNotImplementedError, litellm ServiceUnavailableError,
    # google.genai ServerError, Bedrock ModelErrorException / ModelNotReadyException /
    # InternalServerException, APIResponseValidationError (the API's answer broke the SDK's schema:
    # the provider's fault, not the app's validation), google.genai UnknownApiResponseError.
    (_full(r"InternalServer\w*", r"\w*Overloaded\w*", r"ServiceUnavailable\w*", r"BadGateway\w*",
           r"HTTPNotImplemented\w*", r"ServerError", r"ModelError\w*", r"ModelNotReady\w*",
           r"APIResponseValidationError", r"UnknownApiResponseError"), "provider", True),
    # BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError, ConflictError,
    # UnprocessableEntityError (openai / anthropic / litellm), litellm ContextWindowExceededError /
    # BudgetExceededError, anthropic PaymentRequiredError / RequestTooLargeError, AWS
    # ValidationException / AccessDeniedException (a provider 400, not the app's validation),
    # google.api_core InvalidArgument / PermissionDenied / Unauthenticated.
    (_full(r"BadRequest\w*", r"InvalidRequest\w*", r"InvalidArgument\w*", r"Authentication\w*",
           r"Unauthenticated\w*", r"Unauthorized\w*", r"PermissionDenied\w*", r"Forbidden\w*",
           r"AccessDenied\w*", r"NotFound(?:Error|Exception)?", r"Conflict(?:Error|Exception)?",
           r"UnprocessableEntity\w*", r"ValidationException", r"ContextWindowExceeded\w*",
           r"ContextLength\w*", r"\w*TooLarge\w*", r"PaymentRequired\w*", r"\w*SpendLimit\w*",
           r"BudgetExceeded\w*", r"PreconditionFailed\w*", r"ClientClosedRequest\w*"), "client", True),
    # Failed calls whose type does not say how: google.genai ClientError ("429 RESOURCE_EXHAUSTED.
    # …"), botocore ClientError ("An error occurred (ThrottlingException) …"), urllib3 MaxRetryError.
    (_full(r"ClientError"), "client", False),
    (_full(r"MaxRetryError"), "network", False),
    # pydantic-ai ModelHTTPError ("status_code: 429, model_name: …") / ModelAPIError /
    # FallbackExceptionGroup, anthropic / openai APIStatusError ("Error code: 503 - …", or a streamed
    # {'type': 'overloaded_error'} with no status) and APIError, httpx HTTPStatusError ("Client error
    # '429 Too Many Requests' …"), requests HTTPError ("429 Client Error: …"), aiohttp
    # ClientResponseError ("429, message='Too Many Requests'"), LangChain's
    # ChatGoogleGenerativeAIError, google.api_core GoogleAPICallError, Vercel AI_APICallError /
    # AI_RetryError, tenacity RetryError, mistral SDKError ("API error occurred: Status 429").
    (_full(r"APIStatusError", r"APIError", r"APICallError", r"ModelHTTPError", r"ModelAPIError",
           r"HTTPStatusError", r"HTTPError", r"ClientResponseError", r"\w*GenerativeAIError",
           r"GoogleAPI(?:Call)?Error", r"OpenAIError", r"AnthropicError", r"RetryError",
           r"FallbackExceptionGroup", r"SDKError"), None, False),
)

# The app's failed parse or validation of a model's OUTPUT: pydantic / pydantic_core / jsonschema
# ValidationError, json / orjson JSONDecodeError, LangChain OutputParserException, litellm
# JSONSchemaValidationError (response_format checked against its schema), Vercel AI SDK
# AI_NoObjectGeneratedError / AI_TypeValidationError / AI_JSONParseError, instructor
# InstructorRetryException (its validation retries ran out), openai LengthFinishReasonError (.parse()
# could not parse an answer cut at max_tokens), and apps' own parse errors. Exact names, so
# openai's APIResponseValidationError (above: provider) and AWS ValidationException (client) stay api.
VALIDATION_ERROR_TYPES = _full(
    r"ValidationError", r"\w*JSONDecodeError", r"JSONParseError", r"\w*SchemaValidationError", r"SchemaError",
    r"OutputParser(?:Exception|Error)", r"Output(?:Parsing|Validation)Error", r"Pars(?:e|er|ing)Error",
    r"TypeValidationError", r"NoObjectGeneratedError", r"InvalidJSON\w*", r"InvalidOutput\w*",
    r"MalformedOutput\w*", r"StructuredOutput\w*Error", r"LengthFinishReasonError", r"InstructorRetryException",
)

# An HTTP status (4xx/5xx) quoted in a failure message: a free-standing 4xx/5xx number
# (API_STATUS_NUMBER) counts when the text just before it (API_STATUS_BEFORE, matched at the end of
# the 32 characters before the number) or just after it (API_STATUS_AFTER) says it is a status:
#   pydantic-ai "status_code: 429", openai / anthropic / litellm "Error code: 529 - …",
#   JSON bodies "code": 429 / 'code': 503, mistral "Status 429", "statusCode: 429";
#   "HTTP 503", "HTTP/1.1 429";
#   "429 Too Many Requests" (httpx), "429 Client Error" (requests), "503 UNAVAILABLE" /
#   "429 RESOURCE_EXHAUSTED" (google-genai, gRPC names), "429, message='Too Many Requests'" (aiohttp);
#   or the message starts with it, after an optional "SomeError: " / "SomeError('"
#   (openai-node "429 Rate limit reached…", anthropic-sdk-typescript "529 {…}", error.type "429").
# Anything else ("processed 404 items", "line 429" of a traceback, "port=443") is not a status.
API_STATUS_NUMBER = re.compile(r"(?<![\w.])[45]\d\d(?!\w|[.,]\d)")
API_STATUS_BEFORE = re.compile(
    r"(?:\b(?:status[ _-]?code|statuscode|status|error[ _-]?code|http[ _-]?status|code)[\"']?\s*[:=]?\s*[\"']?"
    r"|\bHTTP(?:/\d(?:\.\d)?)?(?:\s+error)?\s*[:#]?\s*)$",
    re.IGNORECASE,
)
API_STATUS_AFTER = re.compile(
    r"[\s,:-]+(?:too many|internal|bad |service|gateway|unauthori[sz]ed|forbidden|not[ _]found|request|conflict|"
    r"payload|unprocessable|overloaded|resource_exhausted|unavailable|invalid_argument|permission_denied|"
    r"deadline_exceeded|unauthenticated|failed_precondition|cancelled|client error|server error|message=)",
    re.IGNORECASE,
)
API_STATUS_LEADING = re.compile(r"\s*(?:[\w.]{1,200}(?:Error|Exception)\s*(?::\s*|\(\s*[\"']?))?$")

# Messages that only the app's failed parse of model output writes: pydantic-ai's
# UnexpectedModelBehavior("Exceeded maximum retries (1) for output validation"; "result validation"
# before 0.1), pydantic's "1 validation error for Weather", LangChain's "Invalid json output:" /
# "Failed to parse Weather from completion" / OUTPUT_PARSING_FAILURE, Vercel's "No object
# generated", json's "Expecting value: line 1 column 1 (char 0)", openai's "Could not parse response
# content as the length limit was reached". pydantic-ai's other UnexpectedModelBehavior messages
# ("Tool 'x' exceeded max retries count", "Received empty model response") are not validation.
VALIDATION_MESSAGES = re2.compile(  # RE2: linear time on any message
    r"(?i)exceeded maximum retries \(\d+\) for (?:output|result) validation"
    r"|\b\d+ validation errors? for \S"
    r"|invalid json output|failed to parse \S+ from completion|output_parsing_failure"
    r"|no object generated"
    r"|expecting (?:value|property name enclosed in double quotes|',' delimiter|':' delimiter): line \d+ column \d+"
    r"|could not parse response content as the length limit"
)
# Lower-case words one of VALIDATION_MESSAGES needs: a cheap check before the regex.
VALIDATION_MESSAGE_WORDS = ("validation", "json output", "parse", "parsing", "no object generated", "expecting")

# Words in a type or message (lower-cased, spaces removed) that name an api sub-class, in the order
# they are tried; an HTTP status quoted in the message ranks with them: 429 before timeout, 5xx
# after network, 4xx last (a "504 … DEADLINE_EXCEEDED" is a timeout; "Error code: 503 - upstream
# connect error" is network).
API_ERROR_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rate_limit", ("ratelimit", "rate_limit", "toomanyrequests", "throttl", "resourceexhausted",
                    "resource_exhausted", "quotaexceeded", "exceededyourcurrentquota", "insufficient_quota")),
    ("timeout", ("timeout", "timedout", "deadline")),
    ("network", ("connecterror", "connectionerror", "apiconnection", "connectionreset", "connectionrefused",
                 "connectionaborted", "econnreset", "econnrefused", "remoteprotocol", "readerror", "networkerror",
                 "nameorservicenotknown", "temporaryfailureinnameresolution", "sslerror", "serverdisconnected",
                 "socket", "dnserror")),
    ("provider", ("overloaded", "internalserver", "internal_server", "serviceunavailable", "service_unavailable",
                  "badgateway", "servererror", "server_error", "api_error", "apierror", "modelerror", "unavailable")),
    ("client", ("badrequest", "invalid_request", "invalidrequest", "authentication", "permission", "notfound",
                "not_found", "unprocessable", "conflict", "validationexception", "accessdenied", "clienterror",
                "invalid_argument", "unauthorized", "unauthenticated", "forbidden", "contextlength",
                "context_length", "invalid_api_key")),
)
# The same words, one RE2 alternation per sub-class: linear time on any message (plain `in` checks
# of ~80 words slow down to ~100 µs on a crafted kilobyte).
API_ERROR_KEYWORD_PATTERNS = tuple(
    (subclass, re2.compile("|".join(re.escape(word) for word in words))) for subclass, words in API_ERROR_KEYWORDS
)

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
    # The experiment arm a call ran in (A/B tests, feature flags): span attributes first, then the
    # resource's; inherited down the trace like feature. `[dimensions] variant = [...]` or
    # `serve --variant-key KEY` replace these.
    "variant": (
        "llmobs.variant",
        "app.experiment.variant",
        "experiment.variant",
        "feature_flag.result.variant",  # OTel feature-flag semconv (evaluation event/span attributes)
        "feature_flag.variant",  # its older name
    ),
}
# The root span's name is the last-resort feature of a trace (design §2 rule 7).
FEATURE_FALLS_BACK_TO_ROOT_NAME = True
OPENINFERENCE_METADATA = "metadata"

# --- refusals (rollups.refusals) ---------------------------------------------------------------
# Finish reasons normalize to content_filter for OpenAI's content_filter, Anthropic's refusal and
# Gemini's SAFETY (FINISH_REASON_MAP). Besides those, a call refused when its output holds a
# `refusal` part (OTel messages, OpenAI's `refusal` field set to a string) or its text begins with
# one of a few unambiguous phrases. Conservative: a false "refusal" would be a false alarm.
REFUSAL_OUTPUT_KEYS = ("gen_ai.output.messages", "gen_ai.completion", "output.value", "ai.response.text",
                       "langfuse.observation.output", "traceloop.entity.output")
REFUSAL_OUTPUT_PREFIXES = ("gen_ai.completion.", "llm.output_messages.", "llm.choices.")
REFUSAL_PHRASES = (
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i am sorry, but i cannot",
    "i'm sorry, i can't help",
    "i can't help with",
    "i cannot help with",
    "i can't assist with",
    "i cannot assist",
    "i'm unable to help with",
    "i won't be able to help with",
)

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
        MCP_METHOD,
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
        TOOL_NAME_KEYS,
        RESPONSE_ID_KEYS,
        AGENT_KEYS,
        PROVIDER_KEYS,
        REQUEST_MODEL_KEYS,
        RESPONSE_MODEL_KEYS,
        INPUT_TOKEN_KEYS,
        OUTPUT_TOKEN_KEYS,
        CACHE_READ_KEYS,
        CACHE_WRITE_KEYS,
        REASONING_KEYS,
        TOTAL_TOKEN_KEYS,
        TTFT_SECONDS_KEYS,
        TTFT_SERVER_SECONDS_KEYS,
        TTFT_MS_KEYS,
        STREAM_KEYS,
        FINISH_REASON_KEYS,
        HTTP_STATUS_KEYS,
        GUARDRAIL_PASSED_KEYS,
    ):
        keys.update(group)
    for dimension_keys in DEFAULT_DIMENSION_KEYS.values():
        keys.update(dimension_keys)
    return frozenset(keys)
