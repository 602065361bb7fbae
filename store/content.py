"""Prompts and completions, whatever shape they arrived in, as one list of messages for display.

Five shapes (semconv-map §4): JSON-string span attributes (OTel ≥1.37), structured attributes on a
`gen_ai.client.inference.operation.details` log record, per-message log records (OTel 1.28–1.36),
span events with `gen_ai.prompt` / `gen_ai.completion` (≤1.27), and flattened indexed attributes
(OpenInference, OpenLLMetry ≤0.54); plus Langfuse and Vercel AI SDK attributes. Inside any of them
the messages may be OTel parts, OpenAI chat or Responses items, Anthropic blocks or Gemini parts:
one coercion function handles them all.

When a conversation is present in several shapes (SPAN_AND_EVENT mode, OpenInference's flattened
messages plus input.value), one source is chosen per side (input, output) by priority, so nothing is
shown twice. This is read-time code over untrusted data: it never raises, bounds its recursion, and
never trusts an index to size a list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 12
MAX_MESSAGES = 2000
MAX_PARTS = 500


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LogEvent:
    event_name: str
    time_ns: int
    attributes: Mapping[str, Any]
    body: Any


@dataclass(frozen=True, slots=True)
class Part:
    type: str  # "text" | "tool_call" | "tool_call_response" | "reasoning" | "other"
    text: str | None = None
    name: str | None = None
    id: str | None = None
    arguments: Any = None
    response: Any = None
    raw: Any = None


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    parts: tuple[Part, ...]
    direction: str  # "input" | "output"
    source: str
    finish_reason: str | None = None
    name: str | None = None


# --- small helpers ----------------------------------------------------------------------------------


def _json(value: Any) -> Any:
    """Parse JSON strings (twice for Langfuse's double encoding); other values pass through."""
    for _ in range(2):
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if not isinstance(value, str):
            return value
        stripped = value.strip()
        if not stripped or stripped[0] not in '[{"':
            return value
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):
            return value
    return value


def _maybe_json(value: Any) -> Any:
    """Tool arguments/results: a JSON string becomes its object, anything else is kept as is."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "["):
            try:
                return json.loads(stripped)
            except (ValueError, RecursionError):
                return value
    return value


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (int, float, bool)):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return str(value)


def _role(value: Any, default: str) -> str:
    role = _str(value) or default
    role = role.strip().lower() or default
    return {"model": "assistant", "human": "user", "ai": "assistant", "function": "tool"}.get(role, role)


# --- one coercion for every vendor's message format ----------------------------------------------------


def _parts(content: Any, depth: int = 0) -> list[Part]:
    """Message content in any format → parts."""
    if depth > MAX_DEPTH or content is None:
        return []
    if isinstance(content, (str, int, float, bool)):
        text = _str(content)
        return [Part("text", text=text)] if text else []
    if isinstance(content, Mapping):
        return _part(content, depth)
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts: list[Part] = []
        for item in list(content)[:MAX_PARTS]:
            parts.extend(_parts(item, depth + 1))
        return parts
    return [Part("other", text=f"<{type(content).__name__}>", raw=content)]


def _part(item: Mapping[str, Any], depth: int) -> list[Part]:
    kind = _str(item.get("type")) or ""
    # OTel parts
    if kind == "text" or kind in ("input_text", "output_text", "refusal"):
        text = item.get("content", item.get("text", item.get("refusal")))
        return [Part("text", text=_str(text))] if text is not None else []
    if kind in ("tool_call", "server_tool_call", "tool-call", "function_call", "tool_use"):
        args = item.get("arguments", item.get("args", item.get("input", item.get("server_tool_call"))))
        return [Part("tool_call", name=_str(item.get("name", item.get("toolName"))),
                     id=_str(item.get("id", item.get("call_id", item.get("toolCallId")))), arguments=_maybe_json(args))]
    if kind in ("tool_call_response", "server_tool_call_response", "tool-result", "function_call_output",
                "tool_result"):
        response = item.get("response", item.get("result", item.get("output", item.get("content",
                            item.get("server_tool_call_response")))))
        if kind == "tool_result" and isinstance(response, list):
            response = "\n".join(p.text or "" for p in _parts(response, depth + 1)) or response
        return [Part("tool_call_response", id=_str(item.get("id", item.get("call_id", item.get("toolCallId",
                     item.get("tool_use_id"))))), name=_str(item.get("toolName", item.get("name"))),
                     response=_maybe_json(response))]
    if kind in ("reasoning", "thinking", "redacted_thinking"):
        text = item.get("content", item.get("text", item.get("thinking")))
        if text is None and isinstance(item.get("summary"), list):
            text = "\n".join(_str(s.get("text")) or "" for s in item["summary"] if isinstance(s, Mapping))
        if kind == "redacted_thinking":
            text = "[redacted thinking]"
        return [Part("reasoning", text=_str(text))]
    if kind in ("blob", "file", "uri", "image", "image_url", "input_audio", "input_image", "document"):
        mime = _str(item.get("mime_type", item.get("media_type")))
        modality = _str(item.get("modality")) or kind
        where = _str(item.get("uri")) or _str(item.get("file_id"))
        if isinstance(item.get("image_url"), Mapping):
            where = _str(item["image_url"].get("url"))
        if where and where.startswith("data:"):
            where = where[:40] + "…"
        description = modality + (f" ({mime})" if mime else "") + (f" {where}" if where else "")
        return [Part("other", text=description, raw={k: v for k, v in item.items() if k not in ("content", "data")})]
    # Gemini parts
    if "functionCall" in item and isinstance(item["functionCall"], Mapping):
        call = item["functionCall"]
        return [Part("tool_call", name=_str(call.get("name")), id=_str(call.get("id")), arguments=call.get("args"))]
    if "functionResponse" in item and isinstance(item["functionResponse"], Mapping):
        response = item["functionResponse"]
        return [Part("tool_call_response", name=_str(response.get("name")), id=_str(response.get("id")),
                     response=response.get("response"))]
    if "text" in item and not kind:
        part_type = "reasoning" if item.get("thought") is True else "text"
        return [Part(part_type, text=_str(item.get("text")))]
    # A whole message where a part was expected (nested shapes): flatten its content.
    if "content" in item and not kind:
        return _parts(item.get("content"), depth + 1)
    return [Part("other", text=f"<{kind or 'part'}>", raw=item)]


def _tool_calls(calls: Any) -> list[Part]:
    parts = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        if not isinstance(function, Mapping):
            function = call
        parts.append(Part("tool_call", name=_str(function.get("name")), id=_str(call.get("id")),
                          arguments=_maybe_json(function.get("arguments", function.get("args")))))
    return parts


def _as_tool_response(role: str, tool_call_id: str | None, parts: list[Part]) -> list[Part]:
    """A tool message's text, in every format, is the result of the call it names."""
    if role == "tool" and tool_call_id and parts and all(p.type == "text" for p in parts):
        return [Part("tool_call_response", id=tool_call_id,
                     response=_maybe_json("\n".join(p.text or "" for p in parts)))]
    return parts


def coerce_message(item: Any, direction: str, source: str, default_role: str) -> list[Message]:
    """One message in any vendor format (OTel, OpenAI chat/Responses, Anthropic, Gemini, Vercel)."""
    if isinstance(item, (str, int, float)):
        return [Message(default_role, (Part("text", text=_str(item)),), direction, source)]
    if not isinstance(item, Mapping):
        return []
    kind = _str(item.get("type"))
    if kind in ("function_call", "function_call_output", "reasoning") and "role" not in item:
        # OpenAI Responses items that are not messages.
        role = {"function_call": "assistant", "function_call_output": "tool", "reasoning": "assistant"}[kind]
        return [Message(role, tuple(_part(item, 0)), direction, source)]
    role = _role(item.get("role"), default_role)
    if "parts" in item:
        parts = _parts(item.get("parts"))
    else:
        parts = _parts(item.get("content"))
    parts.extend(_tool_calls(item.get("tool_calls")))
    if isinstance(item.get("function_call"), Mapping):
        parts.extend(_tool_calls([{"function": item["function_call"]}]))
    parts = _as_tool_response(role, _str(item.get("tool_call_id", item.get("id") if role == "tool" else None)), parts)
    finish = _str(item.get("finish_reason"))
    return [Message(role, tuple(parts[:MAX_PARTS]), direction, source, finish, _str(item.get("name")))]


def _messages(value: Any, direction: str, source: str, default_role: str) -> list[Message]:
    """A list of messages, a dict wrapping them (`messages`, `choices`, Anthropic response), or one."""
    value = _json(value)
    if value is None or value == "":
        return []
    if isinstance(value, Mapping):
        if isinstance(value.get("messages"), list):
            out = []
            if value.get("system") is not None:
                out.extend(coerce_message({"role": "system", "content": value["system"]}, direction, source, "system"))
            out.extend(_messages(value["messages"], direction, source, default_role))
            return out
        if isinstance(value.get("choices"), list):
            out = []
            for choice in value["choices"][:MAX_MESSAGES]:
                if isinstance(choice, Mapping):
                    message = choice.get("message", choice.get("delta", {"content": choice.get("text")}))
                    for m in coerce_message(message, direction, source, "assistant"):
                        out.append(_with_finish(m, _str(choice.get("finish_reason"))))
            return out
        if isinstance(value.get("output"), list) and "role" not in value:  # OpenAI Responses response
            return [m for item in value["output"][:MAX_MESSAGES]
                    for m in coerce_message(item, direction, source, "assistant")]
        if value.get("type") == "message" and "content" in value:  # Anthropic response
            return [_with_finish(m, _str(value.get("stop_reason"))) for m in
                    coerce_message({"role": value.get("role", "assistant"), "content": value["content"]}, direction,
                                   source, "assistant")]
        if "candidates" in value and isinstance(value["candidates"], list):  # Gemini response
            out = []
            for candidate in value["candidates"][:MAX_MESSAGES]:
                if isinstance(candidate, Mapping):
                    for m in coerce_message(candidate.get("content", {}), direction, source, "assistant"):
                        out.append(_with_finish(m, _str(candidate.get("finishReason"))))
            return out
        return coerce_message(value, direction, source, default_role)
    if isinstance(value, list):
        out = []
        for item in value[:MAX_MESSAGES]:
            out.extend(coerce_message(item, direction, source, default_role))
        return out
    return coerce_message(_str(value), direction, source, default_role)


def _with_finish(message: Message, finish: str | None) -> Message:
    if finish and not message.finish_reason:
        return Message(message.role, message.parts, message.direction, message.source, finish, message.name)
    return message


# --- the shapes ---------------------------------------------------------------------------------------------


def _otel_attributes(attrs: Mapping[str, Any], source: str) -> tuple[list[Message], list[Message], list[Message]]:
    system = []
    if attrs.get("gen_ai.system_instructions") is not None:
        instructions = _json(attrs["gen_ai.system_instructions"])
        parts = _parts(instructions)
        if parts:
            system = [Message("system", tuple(parts), "input", source)]
    inputs = _messages(attrs.get("gen_ai.input.messages"), "input", source, "user")
    outputs = _messages(attrs.get("gen_ai.output.messages"), "output", source, "assistant")
    return system, inputs, outputs


_FLAT = re.compile(r"^(?P<prefix>llm\.input_messages|llm\.output_messages|gen_ai\.prompt|gen_ai\.completion|"
                   r"llm\.prompts|llm\.choices)\.(?P<index>\d{1,6})\.(?P<rest>.+)$")


_FLAT_PREFIXES = ("llm.input_messages.", "llm.output_messages.", "gen_ai.prompt.", "gen_ai.completion.",
                  "llm.prompts.", "llm.choices.")


def _flattened(attrs: Mapping[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """Group `prefix.N.rest` keys into {prefix: {N: {rest: value}}} without trusting N to size anything."""
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    for key, value in attrs.items():
        # The prefix test first: one C call, where the regex costs a Python-level match per attribute.
        if not isinstance(key, str) or not key.startswith(_FLAT_PREFIXES):
            continue
        match = _FLAT.match(key)
        if match is None:
            continue
        by_index = groups.setdefault(match.group("prefix"), {})
        if len(by_index) >= MAX_MESSAGES and int(match.group("index")) not in by_index:
            continue
        by_index.setdefault(int(match.group("index")), {})[match.group("rest")] = value
    return groups


def _indexed(fields: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """`prefix.K.rest` inside one message's fields → ordered list of {rest: value}."""
    out: dict[int, dict[str, Any]] = {}
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d{{1,5}})\.(.+)$")
    for key, value in fields.items():
        match = pattern.match(key)
        if match and (len(out) < MAX_PARTS or int(match.group(1)) in out):
            out.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return [out[i] for i in sorted(out)]


def _openinference_message(fields: Mapping[str, Any], direction: str) -> list[Message]:
    role = _role(fields.get("message.role"), "user" if direction == "input" else "assistant")
    parts: list[Part] = []
    if fields.get("message.content") is not None:
        parts.extend(_parts(_json(fields["message.content"])))
    for content in _indexed(fields, "message.contents"):
        kind = _str(content.get("message_content.type")) or "text"
        if kind == "text":
            parts.append(Part("text", text=_str(content.get("message_content.text"))))
        elif kind == "image":
            url = _str(content.get("message_content.image.image.url")) or ""
            parts.append(Part("other", text="image " + (url[:40] + "…" if url.startswith("data:") else url)))
        else:
            parts.append(Part("other", text=f"<{kind}>", raw=dict(content)))
    for call in _indexed(fields, "message.tool_calls"):
        parts.append(Part("tool_call", name=_str(call.get("tool_call.function.name")),
                          id=_str(call.get("tool_call.id")),
                          arguments=_maybe_json(call.get("tool_call.function.arguments"))))
    parts = _as_tool_response(role, _str(fields.get("message.tool_call_id")), parts)
    return [Message(role, tuple(parts), direction, "openinference", name=_str(fields.get("message.name")))]


def _openllmetry_message(fields: Mapping[str, Any], direction: str) -> list[Message]:
    role = _role(fields.get("role"), "user" if direction == "input" else "assistant")
    parts = _parts(_json(fields.get("content"))) if fields.get("content") is not None else []
    for call in _indexed(fields, "tool_calls"):
        parts.append(Part("tool_call", name=_str(call.get("name")), id=_str(call.get("id")),
                          arguments=_maybe_json(call.get("arguments"))))
    parts = _as_tool_response(role, _str(fields.get("tool_call_id")), parts)
    return [Message(role, tuple(parts), direction, "openllmetry.flattened", _str(fields.get("finish_reason")))]


# What the shapes above read, for a reader that wants to convert no more than that: the span attribute
# keys (exactly, or by prefix) that _candidates and tool_io look at, and the span events _candidates
# reads (every attribute of those). The search indexer reads stored spans back with these alone
# (store/content_index.py), where converting every attribute was a third of its extraction cost. A
# shape that reads a new key must add it here: tests/test_search_index_extraction.py compares the
# text indexed from these keys with the text from all of them, over every shape the tests know.
CONTENT_KEYS = frozenset({
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
    "ai.prompt.messages", "ai.prompt", "ai.response.text", "ai.response.toolCalls",
    "langfuse.observation.input", "langfuse.observation.output", "input.value", "output.value",
    "traceloop.entity.input", "traceloop.entity.output",
    "gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "ai.toolCall.args", "ai.toolCall.result",
})
CONTENT_KEY_PREFIXES = _FLAT_PREFIXES


def _event_name(log: LogEvent) -> str:
    return log.event_name or _str(log.attributes.get("event.name")) or ""


_MESSAGE_EVENTS = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                   "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}


# Span events _candidates reads; any other event (an exception, an app's own) carries no messages.
CONTENT_EVENTS = frozenset({*_MESSAGE_EVENTS, "gen_ai.choice", "gen_ai.content.prompt", "gen_ai.content.completion"})


def _message_event(name: str, body: Any, source: str) -> list[Message]:
    body = _json(body)
    if name == "gen_ai.choice":
        if not isinstance(body, Mapping):
            return coerce_message(body, "output", source, "assistant")
        message = body.get("message")
        merged = dict(message) if isinstance(message, Mapping) else {}
        if "tool_calls" in body and "tool_calls" not in merged:
            merged["tool_calls"] = body["tool_calls"]
        if "content" in body and "content" not in merged:
            merged["content"] = body["content"]
        return [_with_finish(m, _str(body.get("finish_reason"))) for m in
                coerce_message(merged, "output", source, "assistant")]
    role = _MESSAGE_EVENTS[name]
    if isinstance(body, Mapping):
        item = dict(body)
        item.setdefault("role", role)
        if role == "tool" and "id" in item and "tool_call_id" not in item:
            item["tool_call_id"] = item["id"]
        return coerce_message(item, "input", source, role)
    return coerce_message({"role": role, "content": body}, "input", source, role)


def _event_body(attributes: Mapping[str, Any]) -> Any:
    """Span events that carry a log body: in a `body`/`event.body` attribute, or as the attributes."""
    for key in ("body", "event.body"):
        if key in attributes:
            return _json(attributes[key])
    return {k: _json(v) if k in ("tool_calls", "message") else v for k, v in attributes.items()
            if not k.startswith(("gen_ai.system", "gen_ai.provider", "event.name"))}


# --- putting it together ---------------------------------------------------------------------------------------


def _candidates(attrs: Mapping[str, Any], events: Sequence[SpanEvent], logs: Sequence[LogEvent]
                ) -> list[tuple[str, list[Message], list[Message], list[Message]]]:
    """(source, system, input, output) per shape present, highest priority first."""
    out: list[tuple[str, list[Message], list[Message], list[Message]]] = []
    if any(k in attrs for k in ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions")):
        out.append(("otel.attributes", *_otel_attributes(attrs, "otel.attributes")))
    details = [log for log in logs if _event_name(log) == "gen_ai.client.inference.operation.details"]
    if details:
        system, inputs, outputs = [], [], []
        for log in details:
            log_system, log_inputs, log_outputs = _otel_attributes(log.attributes, "otel.details_log")
            system += log_system
            inputs += log_inputs
            outputs += log_outputs
        out.append(("otel.details_log", system, inputs, outputs))
    message_logs = [log for log in logs if _event_name(log) in _MESSAGE_EVENTS or _event_name(log) == "gen_ai.choice"]
    if message_logs:
        inputs, outputs = [], []
        for log in sorted(message_logs, key=lambda log: log.time_ns):
            for m in _message_event(_event_name(log), log.body, "otel.message_logs"):
                (outputs if m.direction == "output" else inputs).append(m)
        out.append(("otel.message_logs", [], inputs, outputs))
    event_messages = [e for e in events if e.name in _MESSAGE_EVENTS or e.name == "gen_ai.choice"]
    prompt_events = [e for e in events if e.name in ("gen_ai.content.prompt", "gen_ai.content.completion")]
    if event_messages or prompt_events:
        inputs, outputs = [], []
        for event in sorted(event_messages, key=lambda e: e.time_ns):
            for m in _message_event(event.name, _event_body(event.attributes), "otel.span_events"):
                (outputs if m.direction == "output" else inputs).append(m)
        for event in prompt_events:
            if event.name == "gen_ai.content.prompt":
                inputs += _messages(event.attributes.get("gen_ai.prompt"), "input", "otel.span_events", "user")
            else:
                outputs += _messages(event.attributes.get("gen_ai.completion"), "output", "otel.span_events",
                                     "assistant")
        out.append(("otel.span_events", [], inputs, outputs))
    flat = _flattened(attrs)
    if "llm.input_messages" in flat or "llm.output_messages" in flat or "llm.prompts" in flat or "llm.choices" in flat:
        inputs = [m for i in sorted(flat.get("llm.input_messages", {}))
                  for m in _openinference_message(flat["llm.input_messages"][i], "input")]
        outputs = [m for i in sorted(flat.get("llm.output_messages", {}))
                   for m in _openinference_message(flat["llm.output_messages"][i], "output")]
        for i in sorted(flat.get("llm.prompts", {})):
            inputs += coerce_message(_str(flat["llm.prompts"][i].get("prompt.text")) or "", "input", "openinference",
                                     "user")
        for i in sorted(flat.get("llm.choices", {})):
            outputs += coerce_message(_str(flat["llm.choices"][i].get("completion.text")) or "", "output",
                                      "openinference", "assistant")
        out.append(("openinference", [], inputs, outputs))
    if "gen_ai.prompt" in flat or "gen_ai.completion" in flat:
        inputs = [m for i in sorted(flat.get("gen_ai.prompt", {}))
                  for m in _openllmetry_message(flat["gen_ai.prompt"][i], "input")]
        outputs = [m for i in sorted(flat.get("gen_ai.completion", {}))
                   for m in _openllmetry_message(flat["gen_ai.completion"][i], "output")]
        out.append(("openllmetry.flattened", [], inputs, outputs))
    if any(k in attrs for k in ("ai.prompt.messages", "ai.prompt", "ai.response.text", "ai.response.toolCalls")):
        inputs = []
        if attrs.get("ai.prompt.messages") is not None:
            inputs = _messages(attrs["ai.prompt.messages"], "input", "vercel", "user")
        elif attrs.get("ai.prompt") is not None:
            prompt = _json(attrs["ai.prompt"])
            if isinstance(prompt, Mapping):
                if prompt.get("system") is not None:
                    inputs += coerce_message({"role": "system", "content": prompt["system"]}, "input", "vercel",
                                             "system")
                if prompt.get("messages") is not None:
                    inputs += _messages(prompt["messages"], "input", "vercel", "user")
                elif prompt.get("prompt") is not None:
                    inputs += coerce_message(prompt["prompt"], "input", "vercel", "user")
            else:
                inputs += coerce_message(prompt, "input", "vercel", "user")
        parts = []
        if attrs.get("ai.response.text") is not None:
            parts.append(Part("text", text=_str(attrs["ai.response.text"])))
        if attrs.get("ai.response.toolCalls") is not None:
            for call in _json(attrs["ai.response.toolCalls"]) or []:
                if isinstance(call, Mapping):
                    parts.extend(_part({"type": "tool-call", **call}, 0))
        outputs = [Message("assistant", tuple(parts), "output", "vercel")] if parts else []
        out.append(("vercel", [], inputs, outputs))
    if "langfuse.observation.input" in attrs or "langfuse.observation.output" in attrs:
        out.append(("langfuse", [],
                    _messages(attrs.get("langfuse.observation.input"), "input", "langfuse", "user"),
                    _messages(attrs.get("langfuse.observation.output"), "output", "langfuse", "assistant")))
    if "input.value" in attrs or "output.value" in attrs:
        out.append(("openinference", [],
                    _messages(attrs.get("input.value"), "input", "openinference", "user"),
                    _messages(attrs.get("output.value"), "output", "openinference", "assistant")))
    if "traceloop.entity.input" in attrs or "traceloop.entity.output" in attrs:
        out.append(("traceloop.entity", [],
                    _messages(_unwrap_traceloop(attrs.get("traceloop.entity.input")), "input", "traceloop.entity",
                              "user"),
                    _messages(_unwrap_traceloop(attrs.get("traceloop.entity.output")), "output", "traceloop.entity",
                              "assistant")))
    return out


def _unwrap_traceloop(value: Any) -> Any:
    value = _json(value)
    if isinstance(value, Mapping) and set(value) <= {"inputs", "outputs", "args", "kwargs", "tags", "metadata"}:
        for key in ("inputs", "outputs", "kwargs", "args"):
            if value.get(key):
                return value[key]
    return value


def messages_from_span(attrs: Mapping[str, Any], events: Sequence[SpanEvent] = (),
                       logs: Sequence[LogEvent] = ()) -> list[Message]:
    """System instructions, then input messages, then output messages: one source per side."""
    try:
        candidates = _candidates(attrs, events, logs)
    except Exception:  # hostile data must degrade to "nothing to show", never to an error
        return []
    system: list[Message] = []
    inputs: list[Message] = []
    outputs: list[Message] = []
    for _source, cand_system, cand_inputs, cand_outputs in candidates:
        if not inputs and cand_inputs:
            inputs = cand_inputs
        if not outputs and cand_outputs:
            outputs = cand_outputs
        if not system and cand_system:
            system = cand_system
    if system and any(m.role == "system" for m in inputs):
        system = []
    # A system message the source put among the inputs goes first; the rest keep their order.
    return [*system, *inputs, *outputs][:MAX_MESSAGES]


# Where each instrumentation family puts a tool call's (arguments, result), in the order tool_io tries them.
TOOL_IO_KEYS = (("gen_ai.tool.call.arguments", "gen_ai.tool.call.result"),
                ("input.value", "output.value"),
                ("traceloop.entity.input", "traceloop.entity.output"),
                ("langfuse.observation.input", "langfuse.observation.output"),
                ("ai.toolCall.args", "ai.toolCall.result"))


def tool_io(attrs: Mapping[str, Any], events: Sequence[SpanEvent] = (), logs: Sequence[LogEvent] = ()
            ) -> tuple[Any, Any]:
    """The arguments and result of a tool span, parsed from JSON when they are JSON."""
    for arg_key, result_key in TOOL_IO_KEYS:
        if arg_key in attrs or result_key in attrs:
            arguments = attrs.get(arg_key)
            result = attrs.get(result_key)
            return (_json(arguments) if arguments is not None else None,
                    _json(result) if result is not None else None)
    return None, None
