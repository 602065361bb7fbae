"""OTLP span/log → one normalized row per span (design §2), ready for the writer.

This is the per-span hot path (measured budget ≈ 30–50 µs per span), so it walks each span's
attributes once, reads values only for the keys it needs (an attribute value access through upb
costs ~1 µs, a key ~0.3 µs), redacts every string in place (after one RE2 scan of the serialized
span says something may match), and keeps the whole span as
compressed protobuf bytes instead of turning it into dicts. Everything cross-span (billing once,
inheriting the root's feature, validation errors on children) is the writer's job, because only the
writer sees spans from every request.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import zstandard

from receiver import semconv as sc
from receiver.content_tiers import ContentPolicy, ContentTiers
from receiver.nesting import MARKER_BYTES as NESTING_MARKER_BYTES
from receiver.prices import CANONICAL_PROVIDERS, PriceTable, canonical_provider
from receiver.redact import DEFAULT_REDACTOR, Redactor
from store import models as m
from store.otlp_values import any_value  # re-exported: receiver.normalize.any_value
from store.span_walk import COMPILED as COMPILED_WALK
from store.span_walk import CONTENT as _CONTENT
from store.span_walk import DROP as _DROP
from store.span_walk import KNOWN as _KNOWN
from store.span_walk import scalar_value, walk_attributes

# Limits that keep one absurd span from hurting the rest.
DEFAULT_MAX_ATTR_BYTES = 256 * 1024
MAX_ATTRIBUTES = 2048
MAX_EVENTS = 4096
MAX_TOKENS_PER_CALL = 50_000_000  # no model takes or emits more: larger counts are garbage
EARLIEST_PLAUSIBLE_NS = 946_684_800 * 10**9  # 2000-01-01
# Redaction and truncation walk nested values this deep: past anything that parses (the protobuf
# runtime stops at ~48 array levels, and receiver.nesting cuts a refused request's values at 16), so
# no string escapes them by being nested.
_VALUE_WALK_DEPTH = 64
FUTURE_SKEW_NS = 3600 * 10**9  # a clock an hour fast is plausible; the year 3000 is not

log = logging.getLogger("llmobs.normalize")

_ZERO_TRACE = b"\x00" * 16
_ZERO_SPAN = b"\x00" * 8
# Level -1: 8 µs per 2 KB span at 45 % of the size, against 14 µs at 40 % for level 1 (measured).
_COMPRESSOR = zstandard.ZstdCompressor(level=-1)

# Canonical fields filled in one pass over a span's attributes: each known key maps to the fields it
# can supply with its priority (its position in that field's key tuple); the best present wins.
(F_PROVIDER, F_REQUEST_MODEL, F_RESPONSE_MODEL, F_INPUT, F_OUTPUT, F_CACHE_READ, F_CACHE_WRITE,
 F_REASONING, F_TTFT_S, F_TTFT_MS, F_STREAM, F_FINISH, F_HTTP_STATUS, F_FEATURE, F_TENANT, F_PROMPT_ID,
 F_PROMPT_VERSION, F_CONVERSATION, F_USER, F_TTFT_SERVER, F_RESPONSE_ID, F_TOOL_NAME, F_VARIANT) = range(23)
_N_FIELDS = 23
_FIELD_KEYS = {
    F_RESPONSE_ID: sc.RESPONSE_ID_KEYS,
    F_TOOL_NAME: sc.TOOL_NAME_KEYS,
    F_PROVIDER: sc.PROVIDER_KEYS,
    F_REQUEST_MODEL: sc.REQUEST_MODEL_KEYS,
    F_RESPONSE_MODEL: sc.RESPONSE_MODEL_KEYS,
    F_INPUT: sc.INPUT_TOKEN_KEYS,
    F_OUTPUT: sc.OUTPUT_TOKEN_KEYS,
    F_CACHE_READ: sc.CACHE_READ_KEYS,
    F_CACHE_WRITE: sc.CACHE_WRITE_KEYS,
    F_REASONING: sc.REASONING_KEYS,
    F_TTFT_S: sc.TTFT_SECONDS_KEYS,
    F_TTFT_SERVER: sc.TTFT_SERVER_SECONDS_KEYS,
    F_TTFT_MS: sc.TTFT_MS_KEYS,
    F_STREAM: sc.STREAM_KEYS,
    F_FINISH: sc.FINISH_REASON_KEYS,
    F_HTTP_STATUS: sc.HTTP_STATUS_KEYS,
}
_DIMENSION_FIELDS = {"feature": F_FEATURE, "tenant": F_TENANT, "prompt_id": F_PROMPT_ID,
                     "prompt_version": F_PROMPT_VERSION, "conversation": F_CONVERSATION, "user": F_USER,
                     "variant": F_VARIANT}
_NO_PRIORITY = 1 << 30


# --- small value helpers ----------------------------------------------------------------------


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return int(value)
        return None
    if isinstance(value, str):
        text = value.strip()
        # ASCII only: str.isdigit() also accepts '²' and '①', which int() refuses (ValueError).
        if text.isascii() and (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            return None
        # "inf", "1e400": not a count. Never let it reach int() (OverflowError).
        return int(number) if math.isfinite(number) else None
    return None


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _first(found: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        value = found.get(key)
        if value is not None and value != "":
            return value
    return None


def _first_int(found: Mapping[str, Any], keys: Iterable[str]) -> int | None:
    for key in keys:
        value = found.get(key)
        if value is not None:
            parsed = _int(value)
            if parsed is not None:
                return parsed
    return None


def _text(value: Any, limit: int = 512) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    elif not isinstance(value, str):
        value = str(value)
    value = value.strip()
    if not value:
        return None
    return value[:limit]


def _ns(value: float) -> int:
    """Nanoseconds from a float; absurd values become -1, which the TTFT check rejects and flags."""
    return int(value) if math.isfinite(value) and abs(value) < 2**62 else -1


def _invocation_model(raw: Any) -> str | None:
    """The "model" of OpenInference's llm.invocation_parameters JSON (the model asked for)."""
    if not isinstance(raw, str) or '"model"' not in raw:
        return None
    params = _json_obj(raw)
    return _dim_text(params.get("model")) if isinstance(params, dict) else None


def _response_id_in_output(attributes: Any) -> str | None:
    """The provider's response id where an instrumentation records it only inside the response it
    keeps as JSON (OpenInference's `output.value` of an anthropic or openai call): it is what ties
    this span to the SDK's own span of the same call (store/writer.py, same_call_twins)."""
    for kv in attributes:
        if kv.key == "output.value":
            text = kv.value.string_value
            if not text.startswith("{") or len(text) > 4 << 20:
                return None
            try:
                found = json.loads(text).get("id")
            except (ValueError, AttributeError, RecursionError):
                return None
            return _text(found, 256) if isinstance(found, str) and found else None
    return None


def _dim_text(value: Any) -> str | None:
    """A scalar attribute as a short label (None for structured values)."""
    # None and str first, inline: ten of these per span, most of them None (no such attribute).
    if value is None:
        return None
    if type(value) is str:
        value = value.strip()
        return value[:256] if value else None
    if isinstance(value, (list, dict)):
        return None
    return _text(value, 256)


def _json_obj(value: Any) -> Any:
    """Parse a JSON attribute; Langfuse sometimes double-encodes."""
    for _ in range(2):
        if not isinstance(value, (str, bytes)):
            return value
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso_to_ns(value: Any) -> int | None:
    """An ISO-8601 instant (Langfuse may JSON-quote it once more) in integer nanoseconds."""
    if isinstance(value, str) and value.startswith('"'):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    delta = dt - _EPOCH  # integer arithmetic: a float timestamp would lose sub-microseconds
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


# --- classification rules ----------------------------------------------------------------------


# Attributes that name a span's kind, most specific first: (key, its values' kind, how values are cased).
_KIND_ATTRIBUTES: tuple[tuple[str, Mapping[str, str], Callable[[str], str]], ...] = (
    (sc.LANGFUSE_TYPE, sc.LANGFUSE_TYPE_KIND, str.lower),
    (sc.OPENINFERENCE_KIND, sc.OPENINFERENCE_KIND_MAP, str.upper),
    (sc.OPERATION_NAME, sc.OPERATION_KIND, str.lower),
    (sc.LLM_REQUEST_TYPE, sc.LLM_REQUEST_TYPE_KIND, str.lower),
    (sc.TRACELOOP_KIND, sc.TRACELOOP_KIND_MAP, str.lower),
)


def classify_kind(found: Mapping[str, Any], name: str) -> str:
    """Design §2 rule 1: decide the span kind from the most specific signal present."""
    for key, kinds, case in _KIND_ATTRIBUTES:
        value = found.get(key)
        if isinstance(value, str):
            kind = kinds.get(case(value))
            if kind:
                return kind
    value = found.get(sc.VERCEL_OPERATION)
    if isinstance(value, str):
        if value.endswith((".doGenerate", ".doStream")):
            return "llm"
        if value.endswith(".doEmbed"):
            return "embedding"
        kind = sc.VERCEL_OPERATION_KIND.get(value)
        if kind:
            return kind
        if value.startswith("ai.toolCall"):
            return "tool"
        if value.startswith("ai."):
            # ai.generateText / ai.streamText wrap the doGenerate calls and carry their summed usage.
            return "chain"
    value = found.get(sc.MCP_METHOD)
    if isinstance(value, str) and value:
        # An MCP request or notification: a tool call only when it is tools/call.
        return "tool" if value == sc.MCP_TOOLS_CALL else "span"
    if _first(found, sc.TOOL_KEYS) is not None:
        return "tool"
    if _first(found, sc.AGENT_KEYS) is not None:
        return "agent"
    has_model = _first(found, sc.REQUEST_MODEL_KEYS) is not None or _first(found, sc.RESPONSE_MODEL_KEYS) is not None
    if has_model:
        has_usage = any(
            found.get(k) is not None
            for k in (*sc.INPUT_TOKEN_KEYS, *sc.OUTPUT_TOKEN_KEYS, sc.LANGFUSE_USAGE)
        )
        if has_usage:
            return "llm"
    match = _NAME_KIND.match(name)
    if match:
        return "embedding" if "embed" in match.group(0).lower() else "llm"
    return "span"


_NAME_KIND = re.compile(
    r"^(?:(?:chat|text_completion|generate_content|embeddings) \S"
    r"|(?:openai|anthropic|bedrock|cohere|mistralai|groq|gemini|vertexai|ollama)\.(?:chat|completion|embeddings)$)"
)

_SERVER_PROVIDERS = (
    ("openai.azure.com", "azure"),
    ("api.openai.com", "openai"),
    ("api.anthropic.com", "anthropic"),
    ("generativelanguage.googleapis.com", "google"),
    ("aiplatform.googleapis.com", "google"),
    ("bedrock", "aws.bedrock"),
    ("api.mistral.ai", "mistral"),
    ("cohere", "cohere"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "xai"),
    ("api.groq.com", "groq"),
)
# First match wins: Bedrock ids ("mistral.mistral-large…") before vendor names, Google's
# text-embedding-00N before OpenAI's text-embedding- family.
_MODEL_PROVIDERS = (
    (("amazon.", "anthropic.", "us.", "eu.", "apac.", "global.", "meta.", "cohere.", "mistral.", "ai21."),
     "aws.bedrock"),
    (("gemini", "text-embedding-00", "text-multilingual-embedding", "gemma"), "google"),
    (("gpt-", "o1", "o3", "o4", "chatgpt", "text-embedding-", "davinci", "babbage"), "openai"),
    (("claude",), "anthropic"),
    (("mistral", "codestral", "ministral", "pixtral", "magistral", "devstral", "open-mistral"), "mistral"),
    (("command", "embed-english", "embed-multilingual", "embed-v", "rerank-"), "cohere"),
    (("deepseek",), "deepseek"),
    (("grok",), "xai"),
)


_VERCEL_PROVIDERS = {"amazon-bedrock": "aws.bedrock", "azure-openai": "azure", "azure": "azure",
                     "google-vertex": "google", "vertex": "google"}


def infer_provider(raw: Any, server: Any, *models: str | None) -> str | None:
    """The provider key if present; else guessed from the server address, then the model names."""
    if isinstance(raw, str) and raw:
        provider = canonical_provider(raw)
        if provider not in CANONICAL_PROVIDERS and provider is not None:
            # Vercel AI SDK ids: "openai.chat", "anthropic.messages", "amazon-bedrock".
            head = provider.split(".", 1)[0]
            mapped = _VERCEL_PROVIDERS.get(head) or canonical_provider(head)
            if mapped in CANONICAL_PROVIDERS:
                return mapped
        return provider
    if isinstance(server, str):
        server = server.lower()
        for needle, provider in _SERVER_PROVIDERS:
            if needle in server:
                return provider
    for model in models:
        if model:
            lowered = model.lower()
            for prefixes, provider in _MODEL_PROVIDERS:
                if lowered.startswith(prefixes):
                    return provider
    return None


def normalize_finish_reason(value: Any) -> str | None:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    normalized = []
    for item in values:
        if not isinstance(item, str) or not item:
            continue
        key = item.strip().lower()
        normalized.append(sc.FINISH_REASON_MAP.get(key, key[:32]))
    if not normalized:
        return None
    if "content_filter" in normalized:
        return "content_filter"
    return normalized[0]


# A type name as a status description starts it: "RateLimitError: …" (OTel SDKs),
# "OpenAIRateLimitError('…')" (LangChain's repr). "Error code: 429" and "Connection error." do not.
_STATUS_TYPE = re.compile(r"\s*((?:[A-Za-z_]\w*\.)*[A-Z]\w*)(?::\s|:$|\(|$)")
_TRACEBACK = "Traceback (most recent call last)"


def _status_type(status_message: str | None) -> str | None:
    """The exception type a status description names, if it starts with one."""
    if not status_message:
        return None
    match = _STATUS_TYPE.match(status_message)
    return match.group(1) if match else None


def _short_type(name: str) -> str:
    short = name.rsplit(".", 1)[-1]
    return short[3:] if short.startswith("AI_") else short


def _status_subclass(status: int) -> str:
    if status == 429:
        return "rate_limit"
    if status == 408:
        return "timeout"
    return "provider" if status >= 500 else "client"


def _message_status(texts: Iterable[str]) -> int | None:
    """The first HTTP status a message quotes as one (semconv: API_STATUS_NUMBER and its context)."""
    for text in texts:
        for match in sc.API_STATUS_NUMBER.finditer(text):
            start, end = match.span()
            if (sc.API_STATUS_BEFORE.search(text, max(0, start - 32), start)
                    or sc.API_STATUS_AFTER.match(text, end)
                    or (start <= 240 and sc.API_STATUS_LEADING.match(text, 0, start))):
                return int(match.group())
    return None


def _keyword_subclass(haystack: str, status: int | None) -> str | None:
    """Design §2 rule 6 sub-class from words and a quoted status, in semconv.API_ERROR_KEYWORDS order."""
    for subclass, words in sc.API_ERROR_KEYWORD_PATTERNS:
        if (subclass == "rate_limit" and status == 429) or (subclass == "timeout" and status == 408):
            return subclass
        if subclass == "provider" and status is not None and status >= 500:
            return subclass
        if subclass == "client" and status is not None and 400 <= status < 500:
            return subclass
        if words.search(haystack):
            return subclass
    return None


def classify_failure(types: Iterable[Any], messages: Iterable[Any], http_status: int | None = None
                     ) -> tuple[str | None, str | None]:
    """What a failed span's own failure is (design §2 rule 6), from the exception types it names
    (`error.type`, `exception.type` of its exception events, the type a status description starts
    with), the messages (`exception.message`, the status description) and an HTTP status attribute.

    Returns ("guardrail", None), ("api", sub-class or None), ("validation", None), or (None, None)
    when nothing is recognised. The tables and the order they are read in are in semconv ("error
    classes from exception types and messages"): API failures are recognised from types and quoted
    statuses before any validation heuristic, and validation only from the names and messages of a
    failed parse of model output, never from a package name."""
    names = [t.strip() for t in types if isinstance(t, str) and t.strip()]
    texts = []
    for message in messages:
        if isinstance(message, str) and message:
            cut = message.find(_TRACEBACK)
            texts.append(message[:cut] if cut >= 0 else message)
    shorts = [short for short in map(_short_type, names) if len(short) <= 128]  # longer: not a class name
    if any(sc.GUARDRAIL_ERROR_TYPES.fullmatch(short) for short in shorts):
        return "guardrail", None
    if http_status is not None and 400 <= http_status <= 599:
        return "api", _status_subclass(http_status)
    generic = False
    fallback = None
    for short in shorts:
        for pattern, subclass, decisive in sc.API_ERROR_TYPES:
            if pattern.fullmatch(short):
                if decisive:
                    return "api", subclass
                if not generic:
                    generic, fallback = True, subclass
                break
    if not generic and any(sc.VALIDATION_ERROR_TYPES.fullmatch(short) for short in shorts):
        return "validation", None
    status = _message_status([*names, *texts])
    haystack = " ".join(t[:512] for t in (*names, *texts)).lower().replace(" ", "")  # the words come early
    if status is not None or generic:
        return "api", _keyword_subclass(haystack, status) or fallback
    for text in texts:
        lowered = text.lower()
        if any(word in lowered for word in sc.VALIDATION_MESSAGE_WORDS) and sc.VALIDATION_MESSAGES.search(text):
            return "validation", None
    subclass = _keyword_subclass(haystack, None)
    if subclass is not None:
        return "api", subclass
    return None, None


_TYPE_LIKE = re.compile(r"[A-Za-z_][\w.]*")


def classify_api_error(*texts: Any, http_status: int | None = None) -> str:
    """The api error sub-class (design §2 rule 6) of a failed call: rate_limit, provider, client,
    timeout, network, or other. `texts` are exception type names and messages, in any order."""
    strings = [t for t in texts if isinstance(t, str)]
    types = [t.strip() for t in strings if _TYPE_LIKE.fullmatch(t.strip())]
    _, subclass = classify_failure(types, strings, http_status)
    return subclass or "other"


# --- refusals ------------------------------------------------------------------------------------

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})
# A refusal part or field in structured output: {"type": "refusal", …} (OTel messages) or OpenAI's
# message `"refusal": "…"` (a string; it is `null` on every ordinary answer).
_REFUSAL_PART = re.compile(r'"type"\s*:\s*"refusal"|"refusal"\s*:\s*"[^"]')
# Where the answer's text starts in structured output: the first "content"/"text" string value.
_TEXT_KEY = re.compile(r'"(?:content|text)"\s*:\s*"')
_TEXT_VALUE = re.compile(r'(?:[^"\\]|\\.){0,80}')


def _first_text_start(head: str) -> int:
    """Where the first `"content"` or `"text"` string value starts (just after its opening quote), or
    -1: the leftmost match of _TEXT_KEY, found by str.find, since a match can only start where one of
    the two keys does (a chat message's `"content"` comes early); a key not followed by a string value
    (`"content": [`) is passed over, as a regex search passes over it."""
    start = 0
    while True:
        content = head.find('"content"', start)
        text = head.find('"text"', start, content if content >= 0 else len(head))
        at = text if text >= 0 else content
        if at < 0:
            return -1
        match = _TEXT_KEY.match(head, at)
        if match is not None:
            return match.end()
        start = at + 1


def _refusal_text(text: str) -> bool:
    head = text[:4096]
    if "refusal" in head and _REFUSAL_PART.search(head):  # the substring test first: ~20× cheaper
        return True
    stripped = head.lstrip()
    if stripped[:1] in ("{", "["):
        at = _first_text_start(head)
        # Every phrase starts with "I": the value is read only when it does. Capturing its first 80
        # characters costs Python's regex ~4 µs, so on a 2 KB completion (bench.ingest's heavy
        # workload) the check went from 6.2 µs to 2.5 (it tested first that no `"I` or `"i`
        # occurs anywhere, which alone took 4.5 µs: two-character searches are slow in English text).
        if at < 0 or head[at:at + 1] not in ("I", "i"):
            return False
        stripped = _TEXT_VALUE.match(head, at).group(0)  # type: ignore[union-attr]  # it matches ""
    # Curly apostrophes, raw or as JSON escapes (json.dumps writes \u2019).
    lowered = stripped[:96].lower().replace("\\u2019", "'").replace("\\u2018", "'").translate(_APOSTROPHES)
    return lowered.startswith(sc.REFUSAL_PHRASES)


def _is_refusal_output_key(key: str) -> bool:
    return key in sc.REFUSAL_OUTPUT_KEYS or key.startswith(sc.REFUSAL_OUTPUT_PREFIXES)


def _refused(attributes: Any, content_indexes: list[int], content_events: list[Any]) -> bool:
    """Whether the span's output (its output content attributes, or gen_ai.choice events) is a refusal."""
    for index in content_indexes:
        kv = attributes[index]
        key = kv.key
        if not _is_refusal_output_key(key):
            continue
        text = kv.value.string_value
        if not text:
            continue
        if key.endswith(".refusal"):  # OpenLLMetry's flattened gen_ai.completion.N.refusal
            return True
        if _refusal_text(text):
            return True
    for event in content_events:
        if event.name not in ("gen_ai.choice", "gen_ai.content.completion"):
            continue
        for kv in event.attributes:
            text = kv.value.string_value
            if text and (kv.key.endswith("refusal") or _refusal_text(text)):
                return True
    return False


# --- the normalizer ----------------------------------------------------------------------------


@dataclass(slots=True)
class IngestOptions:
    redact: bool = True
    keep_content: bool = True
    max_attr_bytes: int = DEFAULT_MAX_ATTR_BYTES
    dimension_keys: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(sc.DEFAULT_DIMENSION_KEYS))
    # `[redaction]` in llmobs.toml: RE2 patterns redacted besides the built-in ones (when `redact`),
    # and attribute keys removed before storage ("key" exact, "prefix.*" / "prefix*" by prefix; always).
    redact_patterns: tuple[str, ...] = ()
    drop_keys: tuple[str, ...] = ()
    # `--content` (receiver/content_tiers.py); None: all content kept. `keep_content=False` wins (mode none).
    content: ContentPolicy | None = None


@dataclass(slots=True)
class Rejections:
    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, n: int = 1) -> None:
        self.count += n
        self.reasons[reason] = self.reasons.get(reason, 0) + n

    def message(self) -> str:
        if not self.count:
            return ""
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.reasons.items()))
        return f"{self.count} rejected: {parts}"


class Normalizer:
    """Turns decoded OTLP requests into rows. One per decoder process; not thread-safe."""

    def __init__(self, prices: PriceTable, options: IngestOptions | None = None) -> None:
        self.prices = prices
        self.options = options or IngestOptions()
        dims = self.options.dimension_keys
        known = set(sc.all_known_keys())
        for keys in dims.values():
            known.update(keys)
        self._known = frozenset(known)
        # key -> bits (_KNOWN: read its value, _CONTENT: prompt/completion text, _DROP: remove it). Keys
        # repeat across spans, so one
        # dict lookup per attribute replaces two set lookups and a prefix scan.
        self._key_class: dict[str, int] = {}
        self._slots: dict[str, tuple[tuple[int, int], ...]] = {}
        field_keys = dict(_FIELD_KEYS)
        for name, field_index in _DIMENSION_FIELDS.items():
            field_keys[field_index] = tuple(dims.get(name, ()))
        slots: dict[str, list[tuple[int, int]]] = {}
        for field_index, keys in field_keys.items():
            for priority, key in enumerate(keys):
                slots.setdefault(key, []).append((field_index, priority))
        self._slots = {key: tuple(value) for key, value in slots.items()}
        # OpenInference keeps dimensions inside its `metadata` JSON: `metadata.tenant` means that.
        self._metadata_dimensions = [
            (field_keys[field_index].index(key), field_index, key[len("metadata."):])
            for name, field_index in _DIMENSION_FIELDS.items() for key in field_keys[field_index]
            if key.startswith("metadata.")]
        self._resource_dims: dict[bytes, tuple[str | None, str | None, str | None]] = {}
        # Redaction covers every string (receiver.redact); None when it is turned off.
        self._redactor: Redactor | None = None
        if self.options.redact:
            patterns = tuple(self.options.redact_patterns)
            self._redactor = Redactor(patterns) if patterns else DEFAULT_REDACTOR
        drops = tuple(self.options.drop_keys)
        self._drop_exact = frozenset(k for k in drops if not k.endswith("*"))
        self._drop_prefixes = tuple(k.rstrip("*") for k in drops if k.endswith("*"))
        self._dropping = bool(drops)
        content = self.options.content
        if content is not None and content.mode == "none":
            self.options = replace(self.options, keep_content=False)
        # The tiered content policy's state (None: keep all content, or none with keep_content off).
        self.tiers: ContentTiers | None = (
            ContentTiers(content) if content is not None and content.mode == "tiered" and self.options.keep_content
            else None)

    # -- resources and scopes --

    def _kept(self, message: Any, gather: Callable[[Any, list, list], None]) -> tuple[bytes, bytes]:
        """(blob, digest) of a resource or scope as stored: without the `[redaction] drop_keys`
        attributes, redacted."""
        if self._dropping:
            self._drop_attrs(message.attributes)
        blob = message.SerializeToString(deterministic=True)
        redactor = self._redactor
        if redactor is not None and redactor.may_match(blob) and _redact_message(redactor, gather, message):
            blob = message.SerializeToString(deterministic=True)
        return blob, hashlib.blake2b(blob, digest_size=16).digest()

    def _resource(self, resource: Any, resources: dict
                  ) -> tuple[bytes, str | None, tuple[str | None, str | None, str | None]]:
        blob, digest = self._kept(resource, _gather_resource)
        found: dict[str, Any] = {}
        service = version = None
        for kv in resource.attributes:
            key = kv.key
            if key == "service.name":
                service = _text(any_value(kv.value), 256)
            elif key == "service.version":
                version = _dim_text(any_value(kv.value))
            elif key in self._known:
                found[key] = scalar_value(kv.value)
        if digest not in resources:
            # service.version travels with the resource (not per span): the writer's change tracker
            # notes a new version once per resource.
            resources[digest] = (service, version, blob)
        dims = self._resource_dims.get(digest)
        if dims is None:
            # Feature, tenant and variant may be set once for a whole service, on its resource.
            values: list[Any] = [None] * _N_FIELDS
            priorities = [_NO_PRIORITY] * _N_FIELDS
            for key, value in found.items():
                self._fill(key, value, values, priorities)
            dims = (_dim_text(values[F_FEATURE]), _dim_text(values[F_TENANT]), _dim_text(values[F_VARIANT]))
            if len(self._resource_dims) > 10_000:
                self._resource_dims.clear()
            self._resource_dims[digest] = dims
        return digest, service, dims

    def _dropped(self, key: str) -> bool:
        return key in self._drop_exact or bool(self._drop_prefixes and key.startswith(self._drop_prefixes))

    def _drop_attrs(self, attributes: Any) -> None:
        """Remove the attributes `[redaction] drop_keys` names, in place."""
        for index in range(len(attributes) - 1, -1, -1):
            if self._dropped(attributes[index].key):
                del attributes[index]

    def _fill(self, key: str, value: Any, values: list[Any], priorities: list[int]) -> None:
        slots = self._slots.get(key)
        if slots is None or value is None or value == "":
            return
        for field_index, priority in slots:
            if priority < priorities[field_index]:
                priorities[field_index] = priority
                values[field_index] = value

    def _scope(self, scope: Any, scopes: dict) -> bytes:
        blob, digest = self._kept(scope, _gather_scope)
        if digest not in scopes:
            scopes[digest] = (scope.name[:256], scope.version[:128], blob)
        return digest

    # -- traces --

    def decode_traces(self, request: Any, received_ns: int | None = None, *, utf8_repaired: int = 0,
                      span_bytes: Sequence[bytes] | None = None) -> tuple[list[list[Any]], dict, dict, Rejections]:
        """`span_bytes`: each span's own bytes in the body the request was parsed from, in the request's
        order (receiver.decoder_process.span_bytes_of), stored and walked instead of serializing the span
        again when nothing in it changes."""
        received_ns = received_ns or time.time_ns()
        position = -1
        rows: list[list[Any]] = []
        resources: dict = {}
        scopes: dict = {}
        rejections = Rejections()
        seen: set[tuple[bytes, bytes]] = set()
        for resource_spans in request.resource_spans:
            resource_digest, service, resource_dims = self._resource(resource_spans.resource, resources)
            for scope_spans in resource_spans.scope_spans:
                scope_digest = self._scope(scope_spans.scope, scopes)
                layer = sc.call_layer(scope_spans.scope.name)
                for span in scope_spans.spans:
                    position += 1
                    trace_id = span.trace_id
                    span_id = span.span_id
                    if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
                        rejections.add("invalid trace_id")
                        continue
                    if len(span_id) != 8 or span_id == _ZERO_SPAN:
                        rejections.add("invalid span_id")
                        continue
                    parent = span.parent_span_id
                    if parent and (len(parent) != 8 or parent == _ZERO_SPAN):
                        rejections.add("invalid parent_span_id")
                        continue
                    key = (trace_id, span_id)
                    if key in seen:
                        rejections.add("duplicate span in request")
                        continue
                    seen.add(key)
                    try:
                        rows.append(self._span_row(span, service, resource_digest, resource_dims,
                                                   scope_digest, received_ns, utf8_repaired, layer,
                                                   None if span_bytes is None else span_bytes[position]))
                    except Exception:  # one unreadable span must not lose the rest of the batch
                        log.exception("could not normalize span %s", span_id.hex())
                        rejections.add("unreadable span")
        return rows, resources, scopes, rejections

    def _span_row(self, span: Any, service: str | None, resource_digest: bytes,
                  resource_dims: tuple[str | None, str | None, str | None], scope_digest: bytes, received_ns: int,
                  utf8_repaired: int, layer: int = m.LAYER_INSTRUMENTATION, own_bytes: bytes | None = None
                  ) -> list[Any]:
        flags = 0
        values: list[Any] = [None] * _N_FIELDS
        priorities = [_NO_PRIORITY] * _N_FIELDS
        found: dict[str, Any] = {}
        content_indexes: list[int] = []
        drop_indexes: list[int] = []
        attributes = span.attributes
        if len(attributes) > MAX_ATTRIBUTES:
            dropped = len(attributes) - MAX_ATTRIBUTES
            del attributes[MAX_ATTRIBUTES:]
            span.dropped_attributes_count += dropped
            flags |= m.FLAG_ATTRS_DROPPED
        events = span.events
        if len(events) > MAX_EVENTS:
            dropped = len(events) - MAX_EVENTS
            del events[MAX_EVENTS:]
            span.dropped_events_count += dropped
            flags |= m.FLAG_ATTRS_DROPPED
        # The span as it will be stored unless something below changes it (then it is serialized
        # again): the compiled attribute walk reads these bytes. They are its bytes in the request when
        # nothing was cut above: the same message (the walk reads fields met twice, or out of the
        # canonical order, no differently from upb: it declines them, and upb's objects are read).
        blob: bytes | None = None
        if COMPILED_WALK:
            blob = own_bytes if own_bytes is not None and not flags else span.SerializeToString()
        walk_attributes(blob, attributes, self._key_class, self._classify_key, self._slots, values, priorities,
                        found, content_indexes, drop_indexes)
        if self._dropping:
            # `[redaction] drop_keys`: gone before anything reads or stores them.
            blob = None
            if drop_indexes:
                for index in reversed(drop_indexes):
                    del attributes[index]
                content_indexes = [i - bisect.bisect(drop_indexes, i) for i in content_indexes]
            for event in span.events:
                self._drop_attrs(event.attributes)
            for link in span.links:
                self._drop_attrs(link.attributes)

        # Events: time to first token, exceptions, and content carried on span events.
        first_token_ns = None
        chunk_ns = None
        exception_type = None
        exception_message = None
        content_events: list[Any] = []
        for event in events:
            ev_name = event.name
            if ev_name in sc.CONTENT_EVENTS:
                content_events.append(event)
            elif ev_name == "exception":
                for kv in event.attributes:
                    if kv.key == "exception.type":
                        exception_type = _text(any_value(kv.value), 256)
                    elif kv.key == "exception.message":
                        exception_message = _text(any_value(kv.value), 512)
            elif first_token_ns is None and ev_name in sc.FIRST_TOKEN_EVENTS:
                first_token_ns = event.time_unix_nano
            if chunk_ns is None and ev_name in sc.CHUNK_EVENTS:
                chunk_ns = event.time_unix_nano

        # A refusal is read from the output before content is dropped or redacted (only ~one output
        # attribute per call is looked at, and only its first kilobytes).
        name = span.name[:1024]
        kind = classify_kind(found, name)
        refused = (kind in sc.BILLABLE_KINDS and bool(content_indexes or content_events)
                   and _refused(attributes, content_indexes, content_events))

        start_ns: int = span.start_time_unix_nano
        end_ns: int = span.end_time_unix_nano

        # Latency (design §2 rule 5).
        duration_ns = end_ns - start_ns if end_ns >= start_ns else None
        if duration_ns is None:
            flags |= m.FLAG_DURATION_INVALID
        ttft_ns = self._ttft(values, found, start_ns, first_token_ns, chunk_ns)
        if ttft_ns is not None and (ttft_ns < 0 or duration_ns is None or ttft_ns > duration_ns):
            ttft_ns = None
            flags |= m.FLAG_TTFT_INVALID
        latest = received_ns + FUTURE_SKEW_NS
        if not (EARLIEST_PLAUSIBLE_NS <= start_ns <= latest) or end_ns > latest:
            # Keep the span, but at the time it was received: a year-3000 timestamp must not own
            # "today" in every dashboard, nor survive retention forever.
            plausible = duration_ns is not None and duration_ns < 86_400 * 10**9
            length = duration_ns if plausible and duration_ns is not None else 0
            end_ns = received_ns
            start_ns = received_ns - length
            flags |= m.FLAG_TIME_ADJUSTED
            if not plausible:
                # One end was absurd: the span's length is unknown, not centuries.
                duration_ns = None
                ttft_ns = None
                flags |= m.FLAG_DURATION_INVALID

        # Model, provider, operation.
        request_model = _dim_text(values[F_REQUEST_MODEL])
        response_model = _dim_text(values[F_RESPONSE_MODEL])
        if request_model is None and (sc.OPENINFERENCE_MODEL in found or sc.OPENINFERENCE_INVOCATION in found):
            # A failed call has no response model: the invocation parameters still name the model.
            request_model = _invocation_model(found.get(sc.OPENINFERENCE_INVOCATION)) or response_model
        provider = infer_provider(values[F_PROVIDER], found.get(sc.SERVER_ADDRESS),
                                  response_model, request_model) if (
            kind in sc.BILLABLE_KINDS or request_model or response_model) else None
        operation = _text(found.get(sc.OPERATION_NAME) or found.get(sc.LLM_REQUEST_TYPE), 64)
        if operation is None and kind in sc.BILLABLE_KINDS:
            operation = "embeddings" if kind == "embedding" else "chat"

        # Tokens and cost (design §2 rules 2 and 4).
        input_tokens = output_tokens = cache_read = cache_write = reasoning = None
        cost_nusd = None
        price_id = None
        price_tier = None
        if kind in sc.BILLABLE_KINDS or kind in ("agent", "chain"):
            input_tokens, output_tokens, cache_read, cache_write, reasoning, invalid = self._tokens(
                values, found, kind == "embedding")
            if invalid:
                flags |= m.FLAG_TOKENS_INVALID
        if kind in sc.BILLABLE_KINDS:
            row = None
            if response_model:
                row = self.prices.lookup(provider, response_model)
            if row is None and request_model:
                row = self.prices.lookup(provider, request_model)
            if row is not None:
                price_id = row.id
                price_tier = self.prices.tier(row, input_tokens)
                if input_tokens is not None or output_tokens is not None:
                    cost_nusd = self.prices.cost_nusd(
                        row, input_tokens or 0, output_tokens or 0, cache_read or 0, cache_write or 0, reasoning or 0
                    )
                elif ((span.status.code == 2 or found.get(sc.ERROR_TYPE) is not None)
                      and not flags & m.FLAG_TOKENS_INVALID):
                    # A failed request reports no usage and is not billed: $0, not "unknown".
                    cost_nusd = 0

        streaming = 1 if (ttft_ns is not None or _truthy(values[F_STREAM])) else 0
        finish_reason = normalize_finish_reason(values[F_FINISH])
        if kind in sc.BILLABLE_KINDS and (finish_reason == "content_filter" or refused):
            flags |= m.FLAG_REFUSAL

        # Errors (design §2 rule 6).
        status = span.status.code
        status_message = _text(span.status.message, 1024)
        error_type = _text(found.get(sc.ERROR_TYPE), 256)
        level = found.get(sc.LANGFUSE_LEVEL)
        if isinstance(level, str) and level.upper() == "ERROR":
            status = 2
            status_message = status_message or _text(found.get(sc.LANGFUSE_STATUS_MESSAGE), 1024)
        failed = status == 2 or error_type is not None
        http_status = _int(values[F_HTTP_STATUS])
        own_error_class = None
        error_subclass = None
        validation_marker = 0
        # The span's own failure, from its exception types and messages (API failures first).
        failure_class = failure_subclass = None
        if failed:
            failure_class, failure_subclass = classify_failure(
                (error_type, exception_type, _status_type(status_message)), (exception_message, status_message),
                http_status)
        if kind in sc.BILLABLE_KINDS:
            app_validation = found.get(sc.VALIDATION_ATTR)
            if failed:
                if failure_class in ("validation", "guardrail"):
                    own_error_class = failure_class
                else:
                    own_error_class = "api"
                    error_subclass = failure_subclass or "other"
            elif finish_reason == "content_filter":
                own_error_class = "guardrail"
            elif app_validation not in (None, False, "", "false", "False", 0):
                own_error_class = "validation"
        elif kind == "guardrail":
            passed = _first(found, sc.GUARDRAIL_PASSED_KEYS)
            if failed or passed is False or (isinstance(passed, str) and passed.lower() == "false"):
                own_error_class = "guardrail"
        else:
            app_validation = found.get(sc.VALIDATION_ATTR)
            # Only the app's failed parse of model output marks the call it judged (the writer finds
            # it); an API failure passing up through an agent or chain span marks nothing.
            if (failed and failure_class == "validation") or app_validation not in (
                    None, False, "", "false", "False", 0):
                validation_marker = 1
        if failed and error_type is None:
            error_type = exception_type

        # Dimensions (design §2 rule 7). Feature/tenant inheritance from the root is the writer's.
        own_feature = _dim_text(values[F_FEATURE])
        own_tenant = _dim_text(values[F_TENANT])
        if self._metadata_dimensions and sc.OPENINFERENCE_METADATA in found:
            self._metadata_into(found[sc.OPENINFERENCE_METADATA], values, priorities)
            own_feature = _dim_text(values[F_FEATURE])
            own_tenant = _dim_text(values[F_TENANT])
        if own_feature is None:
            own_feature = resource_dims[0]
        if own_tenant is None:
            own_tenant = resource_dims[1]
        own_variant = _dim_text(values[F_VARIANT]) or resource_dims[2]
        prompt_id = _dim_text(values[F_PROMPT_ID])
        prompt_version = _dim_text(values[F_PROMPT_VERSION])
        conversation_id = _dim_text(values[F_CONVERSATION])
        user_id = _dim_text(values[F_USER])

        # Content: drop it (--content none, or no tier of --content tiered keeps it) or redact it,
        # before anything is written. Decided here, once status, duration, cost and dimensions are known.
        if content_indexes or content_events:
            tier = 0
            if not self.options.keep_content:
                tier = m.TIER_NONE
            elif self.tiers is not None:
                tier = self.tiers.decide(  # positional: a keyword call costs a tenth of the decision
                    span.trace_id, span.span_id, kind in sc.BILLABLE_KINDS, own_error_class, failed,
                    validation_marker, duration_ns, cost_nusd, response_model or request_model,
                    operation or name[:128], own_feature, received_ns)
            flags |= tier << m.CONTENT_TIER_SHIFT
            if tier in m.DROPPED_TIERS:
                for index in reversed(content_indexes):
                    del attributes[index]
                kept = [e for e in events if e.name not in sc.CONTENT_EVENTS]
                if len(kept) != len(events):
                    del events[:]
                    events.extend(kept)
                flags |= m.FLAG_CONTENT_DROPPED
                blob = None
            elif self.options.redact:
                # The pass over every string of the span, below, redacts the content with the rest.
                flags |= m.FLAG_REDACTED

        # Keep the span itself, compactly; cut oversize values first.
        if blob is None:
            blob = span.SerializeToString()
        if len(blob) > self.options.max_attr_bytes and _truncate_span(span, self.options.max_attr_bytes):
            flags |= m.FLAG_TRUNCATED
            blob = span.SerializeToString()
        if utf8_repaired:  # otlp.decode_body's repairs: True / bit 1 UTF-8, bit 2 too-deep values cut
            if utf8_repaired & 1 and b"\xef\xbf\xbd" in blob:
                flags |= m.FLAG_UTF8_REPAIRED
            if utf8_repaired & 2 and NESTING_MARKER_BYTES in blob:
                flags |= m.FLAG_TRUNCATED

        # Redaction: one RE2 scan of the serialized span says whether any string in it (name, status,
        # attribute keys and values at any depth, events, links) may hold something to redact; only
        # then are its strings walked. The text columns copied from those strings follow.
        redactor = self._redactor if self._redactor is not None and self._redactor.may_match(blob) else None
        if redactor is not None and _redact_message(redactor, _gather_span, span):
            blob = span.SerializeToString()

        # A list, not a tuple: the writer fills in the id and the effective fields in place.
        record = [
            None,  # id: assigned by the writer
            span.trace_id,
            span.span_id,
            span.parent_span_id or None,
            name,
            kind,
            span.kind,
            start_ns,
            end_ns,
            duration_ns,
            status,
            status_message,
            service,
            resource_digest,  # the writer swaps digests for ids
            scope_digest,
            provider,
            operation,
            request_model,
            response_model,
            input_tokens,
            output_tokens,
            cache_read,
            cache_write,
            reasoning,
            ttft_ns,
            streaming,
            finish_reason,
            own_error_class,
            error_subclass,
            error_type,
            validation_marker,
            own_error_class,  # error_class: effective value, refined by the writer
            own_feature,
            own_tenant,
            own_feature,  # feature: effective value, refined by the writer
            own_tenant,
            prompt_id,
            prompt_version,
            conversation_id,
            user_id,
            cost_nusd,
            price_id,
            0,  # billed: decided by the writer once it sees the whole trace
            flags,
            _COMPRESSOR.compress(blob),
            _dim_text(values[F_RESPONSE_ID]) or (_response_id_in_output(span.attributes) if kind in sc.BILLABLE_KINDS
                                                 else None),
            layer,
            _tool_name(values[F_TOOL_NAME], name) if kind == "tool" else None,
            None,  # duplicate_of: decided by the writer, like billed
            price_tier,
            own_variant,
            own_variant,  # variant: effective value, refined by the writer (inherited like feature)
        ]
        if redactor is not None:  # name, status message, user id, dimensions…: every text column
            _redact_columns(redactor, record)
        return record

    def _classify_key(self, key: str) -> int:
        cls = _KNOWN if key in self._known else 0
        if key in sc.CONTENT_KEYS or (key.startswith(sc.CONTENT_PREFIXES)
                                      and not key.startswith(sc.CONTENT_PREFIX_EXCEPTIONS)):
            cls |= _CONTENT
        if self._dropping and self._dropped(key):
            cls = _DROP
        if len(self._key_class) > 100_000:
            # Indexed keys (llm.input_messages.N...) are unbounded; the cache must not be.
            self._key_class.clear()
        self._key_class[key] = cls
        return cls

    def _metadata_into(self, raw: Any, values: list[Any], priorities: list[int]) -> None:
        metadata = _json_obj(raw)
        if not isinstance(metadata, dict):
            return
        for priority, field_index, inner in self._metadata_dimensions:
            value = metadata.get(inner)
            if value is not None and priority < priorities[field_index] and _dim_text(value) is not None:
                priorities[field_index] = priority
                values[field_index] = value

    def _ttft(self, values: list[Any], found: Mapping[str, Any], start_ns: int, first_token_ns: int | None,
              chunk_ns: int | None) -> int | None:
        seconds = _float(values[F_TTFT_S])
        if seconds is not None:
            return _ns(seconds * 1e9)
        if first_token_ns:
            return first_token_ns - start_ns
        if chunk_ns:
            return chunk_ns - start_ns
        completion_start = found.get(sc.LANGFUSE_COMPLETION_START)
        if completion_start is not None:
            ns = _iso_to_ns(completion_start)
            if ns is not None:
                return ns - start_ns
        millis = _float(values[F_TTFT_MS])
        if millis is not None:
            return _ns(millis * 1e6)
        # openlit reports the server's TTFT: the last resort (design §2 rule 5).
        seconds = _float(values[F_TTFT_SERVER])
        if seconds is not None:
            return _ns(seconds * 1e9)
        return None

    @staticmethod
    def _tokens(values: list[Any], found: Mapping[str, Any], embedding: bool = False
                ) -> tuple[int | None, int | None, int | None, int | None, int | None, bool]:
        """Design §2 rule 2: input includes cache read+write, output includes reasoning. An
        embedding's tokens are all input: a total-only count on one is its input."""
        inp = _int(values[F_INPUT])
        out = _int(values[F_OUTPUT])
        cache_read = _int(values[F_CACHE_READ])
        cache_write = _int(values[F_CACHE_WRITE])
        reasoning = _int(values[F_REASONING])
        if inp is None and embedding:
            inp = _first_int(found, sc.TOTAL_TOKEN_KEYS)
        if inp is None and out is None and found.get(sc.LANGFUSE_USAGE) is not None:
            inp, out, cache_read, cache_write, reasoning = _langfuse_usage(found.get(sc.LANGFUSE_USAGE), embedding)
        elif inp is not None and (cache_read or 0) + (cache_write or 0) > inp:
            # An emitter reporting raw Anthropic usage (input excludes cache) gives itself away
            # when the cache counts exceed the input count: add them in rather than under-bill.
            inp += (cache_read or 0) + (cache_write or 0)
        if out is not None and reasoning is not None and reasoning > out:
            # Output excluding reasoning (raw Gemini): reasoning is billed as output, add it in.
            out += reasoning
        counts = (inp, out, cache_read, cache_write, reasoning)
        if any(v is not None and (v < 0 or v > MAX_TOKENS_PER_CALL) for v in counts):
            return None, None, None, None, None, True
        return inp, out, cache_read, cache_write, reasoning, False

    # -- logs --

    def decode_logs(self, request: Any, received_ns: int | None = None, *, utf8_repaired: int = 0
                    ) -> tuple[list[tuple], dict, dict, Rejections]:
        received_ns = received_ns or time.time_ns()
        rows: list[tuple] = []
        resources: dict = {}
        scopes: dict = {}
        rejections = Rejections()
        for resource_logs in request.resource_logs:
            resource_digest, _service, _found = self._resource(resource_logs.resource, resources)
            for scope_logs in resource_logs.scope_logs:
                scope_digest = self._scope(scope_logs.scope, scopes)
                for record in scope_logs.log_records:
                    row = self._log_row(record, resource_digest, scope_digest, received_ns)
                    if row is None:
                        rejections.add("invalid trace/span id on log record")
                        continue
                    rows.append(row)
        return rows, resources, scopes, rejections

    def _log_row(self, record: Any, resource_digest: bytes, scope_digest: bytes, received_ns: int) -> tuple | None:
        trace_id = record.trace_id or None
        span_id = record.span_id or None
        if trace_id is not None and (len(trace_id) != 16 or trace_id == _ZERO_TRACE):
            return None
        if span_id is not None and (len(span_id) != 8 or span_id == _ZERO_SPAN):
            return None
        event_name = record.event_name or None
        attrs = record.attributes
        if len(attrs) > MAX_ATTRIBUTES:
            del attrs[MAX_ATTRIBUTES:]
        if self._dropping:
            self._drop_attrs(attrs)
        if event_name is None:
            for kv in attrs:
                if kv.key == sc.EVENT_NAME_ATTR:
                    event_name = _text(any_value(kv.value), 256)
                    break
        finish_reason = None
        if event_name == sc.CHOICE_EVENT and record.body.WhichOneof("value") == "kvlist_value":
            for kv in record.body.kvlist_value.values:
                if kv.key == "finish_reason":
                    finish_reason = normalize_finish_reason(any_value(kv.value))
        eval_name = eval_score = None
        if event_name == sc.EVALUATION_EVENT:
            for kv in attrs:
                if kv.key == "gen_ai.evaluation.name":
                    eval_name = _text(any_value(kv.value), 128)
                elif kv.key == "gen_ai.evaluation.score.value":
                    eval_score = _float(any_value(kv.value))
        is_content = event_name in sc.CONTENT_EVENTS
        if is_content and (not self.options.keep_content or (
                self.tiers is not None and not self.tiers.keeps_log(trace_id, span_id))):
            record.ClearField("body")
            kept = [kv for kv in attrs if kv.key not in sc.CONTENT_KEYS]
            if len(kept) != len(attrs):
                del attrs[:]
                attrs.extend(kept)
        time_ns = record.time_unix_nano or record.observed_time_unix_nano or received_ns
        if not (EARLIEST_PLAUSIBLE_NS <= time_ns <= received_ns + FUTURE_SKEW_NS):
            time_ns = received_ns
        blob = record.SerializeToString()
        if len(blob) > self.options.max_attr_bytes:
            _truncate_log(record, self.options.max_attr_bytes)
            blob = record.SerializeToString()
        # Every string of the record (body at any depth, attributes, event name, severity text), as
        # for spans: one scan of the serialized record first, the walk only when it may match.
        redactor = self._redactor
        if redactor is not None and redactor.may_match(blob):
            if _redact_message(redactor, _gather_log, record):
                blob = record.SerializeToString()
            columns = [event_name, finish_reason, eval_name]
            _redact_columns(redactor, columns)
            event_name, finish_reason, eval_name = columns
        return (
            trace_id,
            span_id,
            time_ns,
            event_name,
            record.severity_number,
            resource_digest,
            scope_digest,
            finish_reason,
            eval_name,
            eval_score,
            _COMPRESSOR.compress(blob),
        )


def _tool_name(value: Any, span_name: str) -> str | None:
    """A tool span's tool: its tool-name key, else its span name without the `execute_tool ` /
    `tools/call ` template (Langfuse tool observations are named after the tool)."""
    tool = _dim_text(value)
    if tool is None:
        for prefix in sc.TOOL_SPAN_NAME_PREFIXES:
            if span_name.startswith(prefix):
                span_name = span_name[len(prefix):]
                break
        tool = _dim_text(span_name)
    return tool


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("true", "1", "yes")
    return bool(value)


def _langfuse_usage(raw: Any, embedding: bool = False
                    ) -> tuple[int | None, int | None, int | None, int | None, int | None]:
    usage = _json_obj(raw)
    if not isinstance(usage, dict):
        return None, None, None, None, None

    def total(names: tuple[str, ...]) -> int | None:
        values = [v for v in (_int(usage.get(n)) for n in names if usage.get(n) is not None) if v is not None]
        return sum(values) if values else None

    if "prompt_tokens" in usage or "completion_tokens" in usage:
        # The raw OpenAI usage dict (langfuse.openai): counts are inclusive already.
        details = usage.get("prompt_tokens_details") or {}
        out_details = usage.get("completion_tokens_details") or {}
        return (
            _int(usage.get("prompt_tokens")),
            _int(usage.get("completion_tokens")),
            _int(details.get("cached_tokens")) if isinstance(details, dict) else None,
            None,
            _int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else None,
        )
    if "input_tokens" in usage and "input" not in usage:
        # Raw Anthropic usage: input excludes the cache buckets.
        cache_read = _int(usage.get("cache_read_input_tokens"))
        cache_write = _int(usage.get("cache_creation_input_tokens"))
        inp = _int(usage.get("input_tokens"))
        if inp is not None:
            inp += (cache_read or 0) + (cache_write or 0)
        return inp, _int(usage.get("output_tokens")), cache_read, cache_write, None
    # Langfuse usage_details: exclusive buckets, summed into inclusive totals.
    cache_read = total(sc.LANGFUSE_CACHE_READ_BUCKETS)
    cache_write = total(sc.LANGFUSE_CACHE_WRITE_BUCKETS)
    reasoning = total(sc.LANGFUSE_REASONING_BUCKETS)
    inp = total(sc.LANGFUSE_INPUT_BUCKETS)
    out = total(sc.LANGFUSE_OUTPUT_BUCKETS)
    if inp is not None or cache_read is not None or cache_write is not None:
        inp = (inp or 0) + (cache_read or 0) + (cache_write or 0)
    if out is not None or reasoning is not None:
        out = (out or 0) + (reasoning or 0)
    if inp is None and out is None and embedding:
        # An embedding's total is its input (the first total bucket present; they are one count).
        inp = next((v for v in (_int(usage.get(n)) for n in sc.LANGFUSE_TOTAL_BUCKETS) if v is not None), None)
    return inp, out, cache_read, cache_write, reasoning


# Redaction walks gather every string of a message with where it lives ((message, field) pairs),
# ask the redactor once which of them may need it (one RE2 scan of them all), and rewrite only those.

def _gather_value(value: Any, refs: list, texts: list, depth: int) -> None:
    which = value.WhichOneof("value")
    if which == "string_value":
        text = value.string_value
        if text:
            refs.append((value, "string_value"))
            texts.append(text)
    elif which == "bytes_value":
        if value.bytes_value:
            refs.append((value, "bytes_value"))
            texts.append(value.bytes_value.decode("latin-1"))  # ASCII stays ASCII: an e-mail in bytes is found
    elif depth < _VALUE_WALK_DEPTH:
        if which == "array_value":
            for item in value.array_value.values:
                _gather_value(item, refs, texts, depth + 1)
        elif which == "kvlist_value":
            _gather_kvs(value.kvlist_value.values, refs, texts, depth + 1)


def _gather_kvs(kvs: Any, refs: list, texts: list, depth: int = 0) -> None:
    """Keys and values (at any depth) of repeated KeyValues."""
    for kv in kvs:
        refs.append((kv, "key"))
        texts.append(kv.key)
        _gather_value(kv.value, refs, texts, depth)


def _gather_fields(message: Any, names: tuple[str, ...], refs: list, texts: list) -> None:
    for name in names:
        text = getattr(message, name)
        if text:
            refs.append((message, name))
            texts.append(text)


def _gather_span(span: Any, refs: list, texts: list) -> None:
    """Every string a span carries: name, trace state, status message, attributes, event names and
    attributes, link trace states and attributes."""
    _gather_fields(span, ("name", "trace_state"), refs, texts)
    _gather_fields(span.status, ("message",), refs, texts)
    _gather_kvs(span.attributes, refs, texts)
    for event in span.events:
        _gather_fields(event, ("name",), refs, texts)
        _gather_kvs(event.attributes, refs, texts)
    for link in span.links:
        _gather_fields(link, ("trace_state",), refs, texts)
        _gather_kvs(link.attributes, refs, texts)


def _gather_resource(resource: Any, refs: list, texts: list) -> None:
    _gather_kvs(resource.attributes, refs, texts)


def _gather_scope(scope: Any, refs: list, texts: list) -> None:
    _gather_fields(scope, ("name", "version"), refs, texts)
    _gather_kvs(scope.attributes, refs, texts)


def _gather_log(record: Any, refs: list, texts: list) -> None:
    _gather_fields(record, ("event_name", "severity_text"), refs, texts)
    _gather_value(record.body, refs, texts, 0)
    _gather_kvs(record.attributes, refs, texts)


def _redact_message(redactor: Redactor, gather: Callable[[Any, list, list], None], message: Any) -> bool:
    """Redact every string `gather` finds in `message`, in place; True when one changed."""
    refs: list = []
    texts: list = []
    gather(message, refs, texts)
    changed = False
    for index in redactor.candidates(texts):
        text = texts[index]
        redacted = redactor.redact(text)
        if redacted is not text:
            holder, name = refs[index]
            setattr(holder, name, redacted.encode("latin-1", "replace") if name == "bytes_value" else redacted)
            changed = True
    return changed


def _redact_columns(redactor: Redactor, row: list) -> None:
    """The text columns of a row, copied from strings of a message that needed redaction."""
    indexes = [i for i, value in enumerate(row) if type(value) is str]
    texts = [row[i] for i in indexes]
    for index in redactor.candidates(texts):
        row[indexes[index]] = redactor.redact(texts[index])


def _truncate_value(value: Any, limit: int, depth: int = 0) -> bool:
    which = value.WhichOneof("value")
    if which == "string_value":
        text = value.string_value
        if len(text) > limit // 4 and len(text.encode("utf-8")) > limit:
            encoded = text.encode("utf-8")
            kept = encoded[:limit].decode("utf-8", errors="ignore")
            value.string_value = f"{kept}…[truncated {len(encoded) - len(kept.encode('utf-8'))} bytes]"
            return True
    elif which == "bytes_value":
        if len(value.bytes_value) > limit:
            cut = len(value.bytes_value) - limit
            value.bytes_value = value.bytes_value[:limit] + f"…[truncated {cut} bytes]".encode()
            return True
    elif depth < _VALUE_WALK_DEPTH and which == "array_value":
        return any([_truncate_value(v, limit, depth + 1) for v in value.array_value.values])
    elif depth < _VALUE_WALK_DEPTH and which == "kvlist_value":
        return any([_truncate_value(kv.value, limit, depth + 1) for kv in value.kvlist_value.values])
    return False


def _truncate_span(span: Any, limit: int) -> bool:
    changed = False
    for kv in span.attributes:
        changed |= _truncate_value(kv.value, limit)
    for event in span.events:
        for kv in event.attributes:
            changed |= _truncate_value(kv.value, limit)
    for link in span.links:
        for kv in link.attributes:
            changed |= _truncate_value(kv.value, limit)
    if len(span.name.encode("utf-8")) > limit:
        span.name = span.name[: limit // 4] + "…[truncated]"
        changed = True
    if len(span.status.message) > limit:
        span.status.message = span.status.message[: limit // 4] + "…[truncated]"
        changed = True
    return changed


def _truncate_log(record: Any, limit: int) -> bool:
    changed = _truncate_value(record.body, limit)
    for kv in record.attributes:
        changed |= _truncate_value(kv.value, limit)
    return changed
