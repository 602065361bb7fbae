"""Error classes from exception types and messages (design §2 rule 6, issue 10).

A failed call is classed from what its span says about the failure, in the shapes each SDK and
framework really emits: `error.type`, "exception" span events (`exception.type` as the OTel SDK
records it, `module.QualName`; `exception.message`; `exception.stacktrace`) and the status
description. The shapes below were captured from the real libraries (openai 2.x / anthropic /
google-genai / langchain-openai / pydantic-ai raising through the OTel SDK, OpenInference, OpenLLMetry
and the OTel GenAI instrumentations) or copied from their source where noted.

API failures (rate_limit, provider incl. 529, client, timeout, network) are recognised before any
validation heuristic; a validation error is only an app's failed parse of model output, never the
word "pydantic" in `pydantic_ai.exceptions.ModelHTTPError`. Cross-span effects go through the real
Normalizer and SpanWriter in every arrival order and are read back from the rollups `report` uses.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Mapping
from typing import Any

import pytest

from receiver.normalize import Normalizer
from store.models import COL
from store.writer import SpanWriter
from tests.otlp_factory import MS, STATUS_ERROR, T0, make_span, trace_request
from tests.test_writer import rollup_totals

TRACE = 0xE44
RECEIVED = T0 + 10**12
STACK = 'Traceback (most recent call last):\n  File "/app/main.py", line 42, in handler\n    ...\n'

OTEL_OPENAI = ("opentelemetry.instrumentation.genai.openai", "1.3b0")
OI_OPENAI = ("openinference.instrumentation.openai", "0.1.66")
OI_ANTHROPIC = ("openinference.instrumentation.anthropic", "3.1.0")
OPENLLMETRY_ANTHROPIC = ("opentelemetry.instrumentation.anthropic", "0.62.4")
ANTHROPIC_NATIVE = ("com.anthropic.sdk.python", "2.14.0")
OTEL_GOOGLE_GENAI = ("opentelemetry.instrumentation.google_genai", "1.3b0")
OI_GOOGLE_GENAI = ("openinference.instrumentation.google_genai", "0.1.5")
OI_LANGCHAIN = ("openinference.instrumentation.langchain", "0.1.80")
LANGFUSE = ("langfuse-sdk", "3.3.0")
PYDANTIC_AI = ("pydantic-ai", "1.0.10")
LITELLM = ("litellm", "1.77.0")
APP = ("app", "1.0")

# Attributes of the failed call's span, per instrumentation (no usage: a failed call reports none).
OTEL_CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
             "server.address": "api.openai.com"}
OI_LLM = {"openinference.span.kind": "LLM", "llm.provider": "openai", "llm.system": "openai"}
OI_ANTHROPIC_LLM = {"openinference.span.kind": "LLM", "llm.provider": "anthropic", "llm.system": "anthropic",
                    "llm.model_name": "claude-sonnet-4-5"}
OPENLLMETRY_CHAT = {"gen_ai.provider.name": "anthropic", "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.request.max_tokens": 1024}
NATIVE_CHAT = {"server.address": "api.anthropic.com", "gen_ai.provider.name": "anthropic",
               "gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-sonnet-4-5",
               "http.request.method": "POST", "url.path": "/v1/messages"}
GENAI_CHAT = {"gen_ai.operation.name": "generate_content", "gen_ai.provider.name": "gcp.gemini",
              "gen_ai.request.model": "gemini-2.5-flash", "server.address": "generativelanguage.googleapis.com"}
OI_GEMINI = {"openinference.span.kind": "LLM", "llm.provider": "google", "llm.system": "vertexai",
             "llm.model_name": "gemini-2.5-flash"}
OI_CHAT_OPENAI = {"openinference.span.kind": "LLM", "llm.provider": "openai", "llm.system": "openai",
                  "llm.model_name": "gpt-4o"}
LANGFUSE_GENERATION = {"langfuse.observation.type": "generation", "langfuse.observation.model.name": "gpt-4o",
                       "langfuse.observation.level": "ERROR"}
PYDANTIC_AI_CHAT = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
                    "server.address": "api.openai.com",
                    "model_request_parameters": '{"function_tools": [], "output_tools": [], "allow_text_output": true}'}
LITELLM_CALL = {"gen_ai.request.model": "gpt-4o", "llm.request.type": "completion", "gen_ai.system": "openai"}


def exception(exc_type: str, message: str) -> tuple[str, int, dict[str, Any]]:
    """An "exception" span event as the OTel SDK's record_exception() writes it."""
    return ("exception", T0 + 400 * MS, {"exception.type": exc_type, "exception.message": message,
                                         "exception.stacktrace": STACK + f"{exc_type}: {message}\n",
                                         "exception.escaped": "False"})


def failure(attrs: Mapping[str, Any], status: str | None = "", events: tuple = ()) -> dict[str, Any]:
    """A failure as attributes, a status description (None: status left unset) and span events."""
    return {"attrs": dict(attrs), "status": status, "events": list(events)}


def raised(exc_type: str, message: str) -> dict[str, Any]:
    """The failure of a span the OTel SDK ended with an exception: event + "ShortName: message"."""
    return {"attrs": {}, "status": f"{exc_type.rsplit('.', 1)[-1]}: {message}",
            "events": [exception(exc_type, message)]}


def decode_one(attrs: Mapping[str, Any], fail: Mapping[str, Any], scope: tuple[str, str], normalizer: Normalizer,
               name: str = "call") -> dict[str, Any]:
    span = make_span(TRACE, 2, 1, name, {**attrs, **fail["attrs"]}, start_ns=T0, end_ns=T0 + 600 * MS,
                     status_code=STATUS_ERROR if fail["status"] is not None else 0, status_message=fail["status"] or "",
                     events=fail["events"])
    rows, _, _, rejections = normalizer.decode_traces(trace_request([span], scope=scope), received_ns=RECEIVED)
    assert rejections.count == 0
    (row,) = rows
    return {name: row[COL[name]] for name in ("kind", "own_error_class", "error_subclass", "validation_marker",
                                              "status", "error_type")}


# (case id, scope, attributes of the call span, failure, expected (class, sub-class) on the call span)
API_FAILURES: dict[str, list[tuple[str, tuple[str, str], dict, dict, tuple[str, str | None]]]] = {
    "openai": [
        # OTel GenAI instrumentation (util-genai): qualified type in error.type, bare message in the status.
        ("otel_rate_limit", OTEL_OPENAI, OTEL_CHAT,
         failure({"error.type": "openai.RateLimitError"}, "Error code: 429 - Rate limit reached for gpt-4o in "
                 "organization org-x on tokens per min (TPM): Limit 30000, Used 30000, Requested 10."),
         ("api", "rate_limit")),
        ("otel_connection", OTEL_OPENAI, OTEL_CHAT,
         failure({"error.type": "openai.APIConnectionError"}, "Connection error."), ("api", "network")),
        # OpenInference: exception event + "ShortName: message".
        ("oi_internal_server_error", OI_OPENAI, OI_LLM,
         raised("openai.InternalServerError", "Error code: 503 - upstream overloaded"), ("api", "provider")),
        ("oi_timeout", OI_OPENAI, OI_LLM, raised("openai.APITimeoutError", "Request timed out."), ("api", "timeout")),
        # The API's answer broke the SDK's response schema: the provider's fault, not the app's validation.
        ("oi_response_validation", OI_OPENAI, OI_LLM,
         raised("openai.APIResponseValidationError", "Data returned by API invalid for expected schema."),
         ("api", "provider")),
    ],
    "anthropic": [
        ("openllmetry_rate_limit", OPENLLMETRY_ANTHROPIC, OPENLLMETRY_CHAT,
         failure({"error.type": "RateLimitError"}, "Error code: 429 - {'type': 'error', 'error': {'type': "
                 "'rate_limit_error', 'message': 'This request would exceed the rate limit for your organization of "
                 "50 input tokens per minute.'}}",
                 [exception("anthropic.RateLimitError", "Error code: 429 - {'type': 'error', 'error': {'type': "
                            "'rate_limit_error', 'message': 'This request would exceed the rate limit'}}")]),
         ("api", "rate_limit")),
        ("oi_overloaded_529", OI_ANTHROPIC, OI_ANTHROPIC_LLM,
         raised("anthropic.OverloadedError", "Error code: 529 - {'type': 'error', 'error': {'type': "
                "'overloaded_error', 'message': 'Overloaded'}}"), ("api", "provider")),
        # Overloaded mid-stream: an APIStatusError with no status code, only the error body.
        ("oi_streamed_overloaded", OI_ANTHROPIC, OI_ANTHROPIC_LLM,
         raised("anthropic.APIStatusError", "{'type': 'error', 'error': {'details': None, 'type': "
                "'overloaded_error', 'message': 'Overloaded'}}"), ("api", "provider")),
        ("native_529", ANTHROPIC_NATIVE, NATIVE_CHAT,
         failure({"http.response.status_code": 529, "error.type": "overloaded_error"}), ("api", "provider")),
        ("oi_response_validation", OI_ANTHROPIC, OI_ANTHROPIC_LLM,
         raised("anthropic.APIResponseValidationError", "Data returned by API invalid for expected schema."),
         ("api", "provider")),
    ],
    "google_genai": [
        # OTel google-genai instrumentation: error.type is the HTTP status, the status is str(exception).
        ("otel_429", OTEL_GOOGLE_GENAI, GENAI_CHAT,
         failure({"error.type": "429"}, "429 RESOURCE_EXHAUSTED. {'error': {'code': 429, 'message': 'You exceeded "
                 "your current quota, please check your plan and billing details.', 'status': 'RESOURCE_EXHAUSTED'}}"),
         ("api", "rate_limit")),
        ("otel_503", OTEL_GOOGLE_GENAI, GENAI_CHAT,
         failure({"error.type": "503"}, "503 UNAVAILABLE. {'error': {'code': 503, 'message': 'The model is "
                 "overloaded. Please try again later.', 'status': 'UNAVAILABLE'}}"), ("api", "provider")),
        ("oi_client_error_429", OI_GOOGLE_GENAI, OI_GEMINI,
         raised("google.genai.errors.ClientError", "429 RESOURCE_EXHAUSTED. {'error': {'code': 429, 'message': "
                "'Resource has been exhausted (e.g. check quota).', 'status': 'RESOURCE_EXHAUSTED'}}"),
         ("api", "rate_limit")),
        ("oi_client_error_400", OI_GOOGLE_GENAI, OI_GEMINI,
         raised("google.genai.errors.ClientError", "400 INVALID_ARGUMENT. {'error': {'code': 400, 'message': "
                "'Request contains an invalid argument.', 'status': 'INVALID_ARGUMENT'}}"), ("api", "client")),
        # google/genai/_api_client.py: the API answered something that is not JSON.
        ("oi_unknown_api_response", OI_GOOGLE_GENAI, OI_GEMINI,
         raised("google.genai.errors.UnknownApiResponseError",
                "Failed to parse response as JSON. Raw response: <html><body>upstream reset</body></html>"),
         ("api", "provider")),
    ],
    "langchain": [
        # langchain-openai wraps the SDK's error; OpenInference's LangChain tracer puts repr + traceback
        # in the status (a traceback full of site-packages paths, pydantic among them).
        ("oi_wrapped_rate_limit", OI_LANGCHAIN, OI_CHAT_OPENAI,
         failure({}, "OpenAIRateLimitError('Error code: 429 - Rate limit reached for gpt-4o')Traceback (most recent "
                 "call last):\n\n\n  File \"/venv/lib/python3.11/site-packages/pydantic/main.py\", line 503, in "
                 "_generate\n    raw_response = self.client.with_raw_response.create(**payload)\n",
                 [exception("langchain_openai.chat_models.base.OpenAIRateLimitError",
                            "Error code: 429 - Rate limit reached for gpt-4o")]),
         ("api", "rate_limit")),
        ("oi_google_wrapped", OI_LANGCHAIN, OI_GEMINI,
         raised("langchain_google_genai.chat_models.ChatGoogleGenerativeAIError",
                "Error calling model 'gemini-2.5-flash' (RESOURCE_EXHAUSTED): 429 RESOURCE_EXHAUSTED. {'error': "
                "{'code': 429, 'message': 'You exceeded your current quota.', 'status': 'RESOURCE_EXHAUSTED'}}"),
         ("api", "rate_limit")),
        # Langfuse's LangChain CallbackHandler: level ERROR and str(error) only. A 400 about a JSON
        # schema is the provider refusing the request, not the app failing to parse an answer.
        ("langfuse_400_invalid_json_schema", LANGFUSE, LANGFUSE_GENERATION,
         failure({"langfuse.observation.status_message": "Error code: 400 - {'error': {'message': \"Invalid schema "
                  "for response_format 'Weather': In context=(), 'additionalProperties' is required to be supplied "
                  "and to be false.\", 'type': 'invalid_request_error', 'param': 'response_format', 'code': "
                  "'invalid_json_schema'}}"}, None), ("api", "client")),
    ],
    "pydantic_ai": [
        # The issue's call: no error.type, no HTTP status, the 429 only in the message.
        ("rate_limit_error", PYDANTIC_AI, PYDANTIC_AI_CHAT,
         raised("pydantic_ai.exceptions.ModelRateLimitError",
                "status_code: 429, model_name: gpt-4o, body: {'error': {'message': 'Rate limit reached for gpt-4o', "
                "'type': 'requests', 'code': 'rate_limit_exceeded'}}"), ("api", "rate_limit")),
        ("http_error_429", PYDANTIC_AI, PYDANTIC_AI_CHAT,
         raised("pydantic_ai.exceptions.ModelHTTPError",
                "status_code: 429, model_name: gpt-4o, body: {'error': {'message': 'Rate limit reached for gpt-4o'}}"),
         ("api", "rate_limit")),
        ("http_error_529", PYDANTIC_AI, {**PYDANTIC_AI_CHAT, "gen_ai.system": "anthropic",
                                         "gen_ai.request.model": "claude-sonnet-4-5"},
         raised("pydantic_ai.exceptions.ModelHTTPError",
                "status_code: 529, model_name: claude-sonnet-4-5, body: {'type': 'error', 'error': {'type': "
                "'overloaded_error', 'message': 'Overloaded'}}"), ("api", "provider")),
        ("http_error_401", PYDANTIC_AI, PYDANTIC_AI_CHAT,
         raised("pydantic_ai.exceptions.ModelHTTPError",
                "status_code: 401, model_name: gpt-4o, body: {'error': {'message': 'Incorrect API key provided', "
                "'code': 'invalid_api_key'}}"), ("api", "client")),
    ],
    "litellm": [
        # litellm's OTel callback: a "litellm_request" span, status ERROR, record_exception().
        ("rate_limit", LITELLM, LITELLM_CALL,
         failure({}, "", [exception("litellm.exceptions.RateLimitError",
                                    "litellm.RateLimitError: RateLimitError: OpenAIException - Error code: 429 - "
                                    "{'error': {'message': 'Rate limit reached for gpt-4o', 'code': "
                                    "'rate_limit_exceeded'}}")]), ("api", "rate_limit")),
        ("timeout", LITELLM, LITELLM_CALL,
         failure({}, "", [exception("litellm.exceptions.Timeout",
                                    "litellm.Timeout: Connection timed out after 600.0 seconds.")]),
         ("api", "timeout")),
        ("overloaded", LITELLM, LITELLM_CALL,
         failure({}, "", [exception("litellm.exceptions.InternalServerError",
                                    "litellm.InternalServerError: AnthropicException - Overloaded. Handle with "
                                    "`litellm.InternalServerError`.")]), ("api", "provider")),
        ("connection", LITELLM, LITELLM_CALL,
         failure({}, "", [exception("litellm.exceptions.APIConnectionError",
                                    "litellm.APIConnectionError: OllamaException - [Errno 111] Connection refused")]),
         ("api", "network")),
        # Azure/OpenAI's content filter answering 400: the provider's guardrail.
        ("content_policy", LITELLM, LITELLM_CALL,
         failure({}, "", [exception("litellm.exceptions.ContentPolicyViolationError",
                                    "litellm.ContentPolicyViolationError: ContentPolicyViolationError: AzureException "
                                    "- The response was filtered due to the prompt triggering Azure OpenAI's content "
                                    "management policy.")]), ("guardrail", None)),
    ],
    "http_clients": [
        ("httpx_connect", OI_OPENAI, OI_LLM, raised("httpx.ConnectError", "[Errno 111] Connection refused"),
         ("api", "network")),
        ("httpx_read_timeout", OI_OPENAI, OI_LLM, raised("httpx.ReadTimeout", "timed out"), ("api", "timeout")),
        ("httpx_status_429", OI_OPENAI, OI_LLM,
         raised("httpx.HTTPStatusError", "Client error '429 Too Many Requests' for url "
                "'https://api.example.com/v1/chat/completions'"), ("api", "rate_limit")),
        ("asyncio_timeout", OI_OPENAI, OI_LLM, raised("TimeoutError", ""), ("api", "timeout")),
        ("requests_connection", OI_OPENAI, OI_LLM,
         raised("requests.exceptions.ConnectionError", "HTTPSConnectionPool(host='api.example.com', port=443): Max "
                "retries exceeded with url: /v1/chat/completions (Caused by NewConnectionError('Failed to establish "
                "a new connection: [Errno 111] Connection refused'))"), ("api", "network")),
        ("requests_read_timeout", OI_OPENAI, OI_LLM,
         raised("requests.exceptions.ReadTimeout", "HTTPSConnectionPool(host='api.example.com', port=443): Read "
                "timed out. (read timeout=60)"), ("api", "timeout")),
        ("requests_http_503", OI_OPENAI, OI_LLM,
         raised("requests.exceptions.HTTPError", "503 Server Error: Service Unavailable for url: "
                "https://api.example.com/v1/chat/completions"), ("api", "provider")),
        ("aiohttp_disconnected", OI_OPENAI, OI_LLM,
         raised("aiohttp.client_exceptions.ServerDisconnectedError", "Server disconnected"), ("api", "network")),
    ],
}


@pytest.mark.parametrize("family", list(API_FAILURES))
def test_each_sdk_failure_is_classed_from_its_exception_types_and_messages(family, normalizer):
    """Every shape of the family: the call span gets its class and sub-class; the same failure on
    the agent or chain span above the call is passed up, not judged: no class, no validation marker."""
    wrong = []
    for case, scope, attrs, fail, expected in API_FAILURES[family]:
        row = decode_one(attrs, fail, scope, normalizer)
        assert row["kind"] == "llm", (case, row)
        if (row["own_error_class"], row["error_subclass"]) != expected or row["validation_marker"] != 0:
            wrong.append((case, row["own_error_class"], row["error_subclass"], row["validation_marker"], expected))
        for above in ({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"},
                      {"openinference.span.kind": "CHAIN"}):
            up = decode_one(above, fail, scope, normalizer, name="agent run")
            if (up["own_error_class"], up["validation_marker"]) != (None, 0):
                wrong.append((case, "above", up["kind"], up["own_error_class"], up["validation_marker"]))
    assert wrong == []


# The app's failed parse of model OUTPUT, on the step that parsed it (a chain/tool/plain span).
VALIDATION_FAILURES = [
    ("pydantic", raised("pydantic_core._pydantic_core.ValidationError",
                        "1 validation error for Weather\ntemperature\n  Input should be a valid number, unable to "
                        "parse string as a number [type=float_parsing, input_value='hot', input_type=str]")),
    ("json", raised("json.decoder.JSONDecodeError", "Expecting value: line 1 column 1 (char 0)")),
    ("langchain_output_parser", raised("langchain_core.exceptions.OutputParserException",
                                       "Invalid json output: Sure! The weather in Paris is hot.\nFor "
                                       "troubleshooting, visit: https://docs.langchain.com/oss/python/langchain/"
                                       "errors/OUTPUT_PARSING_FAILURE ")),
    # pydantic-ai gave up on the model's output after its retries: the app's output type rejected it.
    ("pydantic_ai_output_retries", raised("pydantic_ai.exceptions.UnexpectedModelBehavior",
                                          "Exceeded maximum retries (1) for output validation")),
    ("vercel_no_object", failure({}, "No object generated: response did not match schema.",
                                 [exception("AI_NoObjectGeneratedError",
                                            "No object generated: response did not match schema.")])),
    ("litellm_json_schema", raised("litellm.exceptions.JSONSchemaValidationError",
                                   "litellm.JSONSchemaValidationError: model=gpt-4o, returned an invalid response="
                                   "{\"city\": 1}, for schema={...}.\nAccess raw response with `e.raw_response`")),
]

# Failures of a step that are neither: a pydantic-ai tool that kept failing, a KeyError.
NEITHER = [
    ("pydantic_ai_tool_retries", raised("pydantic_ai.exceptions.UnexpectedModelBehavior",
                                        "Tool 'calc_volume' exceeded max retries count of 1")),
    ("key_error", raised("KeyError", "'city'")),
]


def test_only_a_failed_parse_of_output_marks_a_validation_step(normalizer):
    wrong = []
    for case, fail in VALIDATION_FAILURES:
        row = decode_one({"openinference.span.kind": "CHAIN"}, fail, OI_LANGCHAIN, normalizer, name="parse_output")
        if (row["own_error_class"], row["validation_marker"]) != (None, 1):
            wrong.append((case, "step", row["own_error_class"], row["validation_marker"]))
    for case, fail in NEITHER:
        row = decode_one({"openinference.span.kind": "CHAIN"}, fail, PYDANTIC_AI, normalizer, name="agent run")
        if (row["own_error_class"], row["validation_marker"]) != (None, 0):
            wrong.append((case, "step", row["own_error_class"], row["validation_marker"]))
    # The pydantic-ai 429, passed up through the agent run and the "running tools" step: not validation.
    rate_limited = raised("pydantic_ai.exceptions.ModelHTTPError",
                          "status_code: 429, model_name: gpt-4o, body: {'error': {'message': 'Rate limit'}}")
    for name, attrs in (("invoke_agent support", {"gen_ai.agent.name": "support", "agent_name": "support",
                                                  "model_name": "gpt-4o", "logfire.msg": "support run"}),
                        ("running tools", {"tools": ["get_weather"], "logfire.msg": "running 1 tool"})):
        row = decode_one(attrs, rate_limited, PYDANTIC_AI, normalizer, name=name)
        if row["validation_marker"] != 0:
            wrong.append(("pydantic_ai_429_passed_up", name, row["kind"], row["validation_marker"]))
    assert wrong == []


# --- through the writer: the class lands on the span that failed, in every arrival order ----------------


def write(db: sqlite3.Connection, normalizer: Normalizer, batches) -> None:
    writer = SpanWriter(db)
    for batch in batches:
        rows, resources, scopes = [], {}, {}
        for scope in dict.fromkeys(scope for _, scope in batch):
            request = trace_request([span for span, s in batch if s == scope], scope=scope)
            r, res, sc, _ = normalizer.decode_traces(request, received_ns=RECEIVED)
            rows += r
            resources.update(res)
            scopes.update(sc)
        writer.write(rows, [], resources, scopes)


def span_classes(db: sqlite3.Connection) -> dict[int, tuple[str | None, str | None]]:
    return {int.from_bytes(sid, "big"): (error_class, subclass)
            for sid, error_class, subclass in db.execute("SELECT span_id, error_class, error_subclass FROM spans")}


def app_root():
    return make_span(TRACE, 1, None, "POST /ask", {"app.llm.feature": "ask"}, start_ns=T0, end_ns=T0 + 2000 * MS,
                     kind=2), APP


def openai_call(span_id: int, parent: int, start: int, end: int):
    """A successful call, as the OTel GenAI instrumentation reports it (1000 in, 100 out)."""
    return make_span(TRACE, span_id, parent, "chat gpt-4o", {
        **OTEL_CHAT, "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100}, start_ns=T0 + start * MS, end_ns=T0 + end * MS), OTEL_OPENAI


def pydantic_ai_call(span_id: int, parent: int, start: int, end: int, *, rate_limited: bool):
    """pydantic-ai's InstrumentedModel span: on a 429 the OTel SDK records the exception and the status."""
    attrs = dict(PYDANTIC_AI_CHAT)
    if rate_limited:
        fail = raised("pydantic_ai.exceptions.ModelRateLimitError",
                      "status_code: 429, model_name: gpt-4o, body: {'error': {'message': 'Rate limit reached for "
                      "gpt-4o', 'type': 'requests', 'code': 'rate_limit_exceeded'}}")
        return make_span(TRACE, span_id, parent, "chat gpt-4o", attrs, start_ns=T0 + start * MS,
                         end_ns=T0 + end * MS, status_code=STATUS_ERROR, status_message=fail["status"],
                         events=fail["events"]), PYDANTIC_AI
    attrs.update({"gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 1000,
                  "gen_ai.usage.output_tokens": 100})
    return make_span(TRACE, span_id, parent, "chat gpt-4o", attrs, start_ns=T0 + start * MS,
                     end_ns=T0 + end * MS), PYDANTIC_AI


def pydantic_ai_agent(span_id: int, parent: int, start: int, end: int):
    """The agent run above the failed call: the same exception escaped through it."""
    fail = raised("pydantic_ai.exceptions.ModelRateLimitError",
                  "status_code: 429, model_name: gpt-4o, body: {'error': {'message': 'Rate limit reached for gpt-4o'}}")
    return make_span(TRACE, span_id, parent, "invoke_agent support", {
        "model_name": "gpt-4o", "agent_name": "support", "gen_ai.agent.name": "support",
        "gen_ai.operation.name": "invoke_agent", "logfire.msg": "support run"},
        start_ns=T0 + start * MS, end_ns=T0 + end * MS, status_code=STATUS_ERROR, status_message=fail["status"],
        events=fail["events"]), PYDANTIC_AI


def parse_step(span_id: int, parent: int, start: int, end: int):
    """The app validating the call's answer with pydantic, in a span of its own, and failing."""
    fail = VALIDATION_FAILURES[0][1]
    return make_span(TRACE, span_id, parent, "parse_output", {"app.llm.output.schema": "Weather"},
                     start_ns=T0 + start * MS, end_ns=T0 + end * MS, status_code=STATUS_ERROR,
                     status_message=fail["status"], events=fail["events"]), APP


@pytest.fixture
def store(writer_db):
    """A real store file, opened for writing (tests/conftest.py)."""
    return writer_db


ISSUE_TRACE = [app_root(), openai_call(2, 1, 10, 200), pydantic_ai_agent(3, 1, 300, 900),
               pydantic_ai_call(4, 3, 310, 350, rate_limited=True)]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(ISSUE_TRACE)))))
def test_pydantic_ai_429_is_one_rate_limit_not_validation_nor_a_latency_sample(order, store, normalizer):
    """The issue's trace: a classifier call, then an agent run whose call got a 429
    (ModelRateLimitError, no error.type, no HTTP status). One api/rate_limit error on the failed
    call; the agent above is not a validation failure, and neither is the sibling call before it."""
    write(store, normalizer, [[ISSUE_TRACE[i]] for i in order])
    classes = span_classes(store)
    assert classes[4] == ("api", "rate_limit")
    assert classes[3] == (None, None), "the agent run only passed the 429 up"
    assert classes[2] == (None, None), "the sibling call before the agent answered fine"
    totals = rollup_totals(store)[()]
    assert totals["calls"] == 2
    assert totals["errors"] == {"api": 1, "validation": 0, "guardrail": 0}
    assert totals["api_by_class"]["rate_limit"] == 1
    assert totals["latency_count"] == 1, "the 40 ms 429 is not a latency sample"
    assert store.execute("SELECT errors_api, errors_validation FROM traces").fetchone() == (1, 0)


RETRY_TRACE = [app_root(), pydantic_ai_call(2, 1, 10, 50, rate_limited=True),
               pydantic_ai_call(3, 1, 100, 900, rate_limited=False), parse_step(4, 1, 905, 910)]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(RETRY_TRACE)))))
def test_a_429_and_a_real_validation_failure_in_one_trace_keep_their_classes(order, store, normalizer):
    """A 429, the app's retry that succeeds, then the app's pydantic parse of that answer fails:
    one api/rate_limit error on the first call and one validation error on the second."""
    write(store, normalizer, [[RETRY_TRACE[i]] for i in order])
    classes = span_classes(store)
    assert classes[2] == ("api", "rate_limit")
    assert classes[3] == ("validation", None), "the call whose answer failed to parse"
    totals = rollup_totals(store)[()]
    assert totals["calls"] == 2
    assert totals["errors"] == {"api": 1, "validation": 1, "guardrail": 0}
    assert totals["api_by_class"]["rate_limit"] == 1
    assert totals["latency_count"] == 1
    assert store.execute("SELECT errors_api, errors_validation FROM traces").fetchone() == (1, 1)


def langchain_sequence(span_id: int, parent: int | None, start: int, end: int, *, failed: bool):
    """LangChain's RunnableSequence (OpenInference): a parser failure inside re-raises through it."""
    fail = raised("langchain_core.exceptions.OutputParserException",
                  "Invalid json output: The answer is 42")
    return make_span(TRACE, span_id, parent, "RunnableSequence", {"openinference.span.kind": "CHAIN"},
                     start_ns=T0 + start * MS, end_ns=T0 + end * MS,
                     status_code=STATUS_ERROR if failed else 0, status_message=fail["status"] if failed else "",
                     events=fail["events"] if failed else ()), LANGCHAIN_SCOPE


def langchain_parser(span_id: int, parent: int, start: int, end: int):
    fail = raised("langchain_core.exceptions.OutputParserException", "Invalid json output: The answer is 42")
    return make_span(TRACE, span_id, parent, "JsonOutputParser", {"openinference.span.kind": "CHAIN"},
                     start_ns=T0 + start * MS, end_ns=T0 + end * MS, status_code=STATUS_ERROR,
                     status_message=fail["status"], events=fail["events"]), LANGCHAIN_SCOPE


LANGCHAIN_SCOPE = ("openinference.instrumentation.langchain", "0.1.80")
PASSED_UP_TRACE = [langchain_sequence(1, None, 0, 1000, failed=True), openai_call(2, 1, 10, 800),
                   langchain_parser(3, 1, 810, 820)]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(PASSED_UP_TRACE)))))
def test_a_parse_failure_re_raised_by_its_chain_is_one_validation_error(order, store, normalizer):
    """The parser span fails, and the RunnableSequence above it fails with the same exception: one
    validation error, on the call whose answer failed to parse (before: two)."""
    write(store, normalizer, [[PASSED_UP_TRACE[i]] for i in order])
    assert span_classes(store)[2] == ("validation", None)
    totals = rollup_totals(store)[()]
    assert totals["errors"] == {"api": 0, "validation": 1, "guardrail": 0}
    assert store.execute("SELECT errors_validation FROM traces").fetchone() == (1,)


def pydantic_ai_output_validation_agent(span_id: int, parent: int, start: int, end: int):
    """An agent run whose output type rejected the model's answers until the retries ran out."""
    fail = raised("pydantic_ai.exceptions.UnexpectedModelBehavior",
                  "Exceeded maximum retries (1) for output validation")
    return make_span(TRACE, span_id, parent, "invoke_agent support", {
        "gen_ai.agent.name": "support", "gen_ai.operation.name": "invoke_agent"},
        start_ns=T0 + start * MS, end_ns=T0 + end * MS, status_code=STATUS_ERROR, status_message=fail["status"],
        events=fail["events"]), PYDANTIC_AI


AGENT_VALIDATION_TRACE = [app_root(), openai_call(2, 1, 10, 200), pydantic_ai_output_validation_agent(3, 1, 300, 900),
                          pydantic_ai_call(4, 3, 310, 500, rate_limited=False),
                          pydantic_ai_call(5, 3, 520, 880, rate_limited=False)]


@pytest.mark.parametrize("order", [(0, 1, 2, 3, 4), (4, 3, 2, 1, 0), (2, 0, 4, 1, 3), (3, 4, 1, 0, 2)])
def test_an_agent_run_that_failed_output_validation_blames_its_own_last_call(order, store, normalizer):
    """Before: the agent span's marker looked at its parent and earlier siblings, and blamed the
    classifier call that ran before the agent. The call whose answer failed is the agent's last."""
    write(store, normalizer, [[AGENT_VALIDATION_TRACE[i]] for i in order])
    classes = span_classes(store)
    assert classes[5] == ("validation", None)
    assert classes[2] == (None, None) and classes[4] == (None, None)
    assert rollup_totals(store)[()]["errors"] == {"api": 0, "validation": 1, "guardrail": 0}
