"""Prompts and completions in every shape become the same conversation (store/content.py).

The payloads follow ../shared/semconv/semconv-map.md §6 (the weather-bot call that ends in a
get_weather tool call) and §1.4 (log bodies).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.content import LogEvent, SpanEvent, messages_from_span, tool_io

SYSTEM = "You are a weather bot."
QUESTION = "Weather in Paris?"


def logical(messages) -> list[tuple]:
    """A conversation reduced to what a reader sees: role and parts."""
    out = []
    for m in messages:
        parts = []
        for p in m.parts:
            if p.type == "text":
                parts.append(("text", p.text))
            elif p.type == "tool_call":
                parts.append(("tool_call", p.name, json.dumps(p.arguments, sort_keys=True)))
            else:
                parts.append((p.type, p.text, p.name))
        out.append((m.role, tuple(parts)))
    return out


WEATHER = [("system", (("text", SYSTEM),)), ("user", (("text", QUESTION),)),
           ("assistant", (("tool_call", "get_weather", '{"location": "Paris"}'),))]

OTEL_CURRENT = {
    "gen_ai.system_instructions": json.dumps([{"type": "text", "content": SYSTEM}]),
    "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]),
    "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "tool_call", "id": "toolu_01A",
                                           "name": "get_weather", "arguments": {"location": "Paris"}}],
                                           "finish_reason": "tool_use"}]),
}
OPENINFERENCE = {
    "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": SYSTEM,
    "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": QUESTION,
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.tool_calls.0.tool_call.id": "toolu_01A",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"location": "Paris"}',
    "input.value": json.dumps({"messages": [{"role": "user", "content": "IGNORED"}]}),
    "input.mime_type": "application/json",
}
OPENLLMETRY_OLD = {
    "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": SYSTEM,
    "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": QUESTION,
    "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.finish_reason": "tool_use",
    "gen_ai.completion.0.tool_calls.0.id": "toolu_01A", "gen_ai.completion.0.tool_calls.0.name": "get_weather",
    "gen_ai.completion.0.tool_calls.0.arguments": '{"location": "Paris"}',
}
LANGFUSE = {
    # Langfuse sends any JSON, sometimes encoded twice.
    "langfuse.observation.input": json.dumps(json.dumps([{"role": "system", "content": SYSTEM},
                                                         {"role": "user", "content": QUESTION}])),
    "langfuse.observation.output": json.dumps({"role": "assistant", "tool_calls": [
        {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}]}),
}
VERCEL = {
    "ai.prompt.messages": json.dumps([{"role": "system", "content": SYSTEM},
                                      {"role": "user", "content": [{"type": "text", "text": QUESTION}]}]),
    "ai.response.toolCalls": json.dumps([{"toolCallId": "call_1", "toolName": "get_weather",
                                          "args": {"location": "Paris"}}]),
}


@pytest.mark.parametrize("attrs", [OTEL_CURRENT, OPENINFERENCE, OPENLLMETRY_OLD, LANGFUSE, VERCEL],
                         ids=["otel-attributes", "openinference", "openllmetry-flattened", "langfuse", "vercel"])
def test_attribute_shapes_give_the_same_conversation(attrs):
    assert logical(messages_from_span(attrs)) == WEATHER


def test_structured_attributes_are_read_like_json_strings():
    structured = {k: json.loads(v) for k, v in OTEL_CURRENT.items()}
    assert logical(messages_from_span(structured)) == WEATHER


def test_details_log_record():
    details = {k: json.loads(v) for k, v in OTEL_CURRENT.items()}
    logs = [LogEvent("gen_ai.client.inference.operation.details", 5, details, None)]
    messages = messages_from_span({}, (), logs)
    assert logical(messages) == WEATHER
    assert {m.source for m in messages} == {"otel.details_log"}


def test_per_message_log_records_v1_28():
    logs = [
        LogEvent("gen_ai.system.message", 1, {"gen_ai.system": "openai"}, {"content": SYSTEM}),
        LogEvent("", 2, {"event.name": "gen_ai.user.message"}, {"content": QUESTION}),  # the deprecated attribute
        LogEvent("gen_ai.choice", 3, {}, {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                 "tool_calls": [{"id": "call_VSPy", "type": "function",
                                 "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}}]}}),
    ]
    messages = messages_from_span({}, (), logs)
    assert logical(messages) == WEATHER
    assert messages[-1].finish_reason == "tool_calls"


def test_choice_with_tool_calls_at_body_level():
    logs = [LogEvent("gen_ai.choice", 3, {}, {"index": 0, "finish_reason": "tool_calls", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}}]})]
    assert logical(messages_from_span({}, (), logs)) == [WEATHER[2]]


def test_span_events_v1_27():
    events = [SpanEvent("gen_ai.content.prompt", 1, {"gen_ai.prompt": json.dumps(
                  [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}])}),
              SpanEvent("gen_ai.content.completion", 2, {"gen_ai.completion": json.dumps(
                  [{"role": "assistant", "tool_calls": [{"id": "x", "type": "function", "function": {
                      "name": "get_weather", "arguments": '{"location": "Paris"}'}}]}])})]
    assert logical(messages_from_span({}, events)) == WEATHER


def test_span_and_event_mode_is_shown_once():
    details = {k: json.loads(v) for k, v in OTEL_CURRENT.items()}
    logs = [LogEvent("gen_ai.client.inference.operation.details", 5, details, None)]
    messages = messages_from_span(OTEL_CURRENT, (), logs)
    assert logical(messages) == WEATHER
    assert {m.source for m in messages} == {"otel.attributes"}


def test_openinference_multimodal_and_input_value_fallback():
    attrs = {
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.contents.0.message_content.type": "text",
        "llm.input_messages.0.message.contents.0.message_content.text": "What is in this picture?",
        "llm.input_messages.0.message.contents.1.message_content.type": "image",
        "llm.input_messages.0.message.contents.1.message_content.image.image.url": "https://example.com/cat.png",
    }
    [message] = messages_from_span(attrs)
    assert [p.type for p in message.parts] == ["text", "other"]
    assert "https://example.com/cat.png" in message.parts[1].text
    fallback = messages_from_span({"input.value": json.dumps({"model": "gpt-4o", "messages": [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]}),
        "output.value": json.dumps({"choices": [{"message": {"role": "assistant", "content": "Sunny."},
                                                 "finish_reason": "stop"}]})})
    assert logical(fallback) == [WEATHER[0], WEATHER[1], ("assistant", (("text", "Sunny."),))]
    assert fallback[-1].finish_reason == "stop"


def test_indexes_sort_numerically():
    attrs = {}
    for i in range(12):
        attrs[f"gen_ai.prompt.{i}.role"] = "user"
        attrs[f"gen_ai.prompt.{i}.content"] = f"message {i}"
    assert [m.parts[0].text for m in messages_from_span(attrs)] == [f"message {i}" for i in range(12)]


def test_vendor_formats_inside_any_shape():
    anthropic = [{"role": "assistant", "content": [
        {"type": "thinking", "thinking": "The user wants weather."},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C"}]}]
    messages = messages_from_span({"langfuse.observation.output": json.dumps(anthropic)})
    assert [p.type for p in messages[0].parts] == ["reasoning", "text", "tool_call"]
    assert messages[0].parts[2].arguments == {"location": "Paris"}
    assert messages[1].parts[0].type == "tool_call_response" and messages[1].parts[0].response == "18°C"
    gemini = [{"role": "model", "parts": [{"text": "thinking…", "thought": True},
                                          {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}]},
              {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 18}}}]}]
    messages = messages_from_span({"langfuse.observation.input": json.dumps(gemini)})
    assert messages[0].role == "assistant"
    assert [p.type for p in messages[0].parts] == ["reasoning", "tool_call"]
    assert messages[1].parts[0].response == {"temp": 18}
    responses = {"output": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Need the weather."}]},
        {"type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": '{"location":"Paris"}'},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]}]}
    messages = messages_from_span({"output.value": json.dumps(responses)})
    assert [m.parts[0].type for m in messages] == ["reasoning", "tool_call", "text"]
    assert messages[1].parts[0].arguments == {"location": "Paris"}


def test_openai_tool_message_becomes_a_tool_response():
    messages = messages_from_span({"langfuse.observation.input": json.dumps([
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'}])})
    assert messages[0].parts[0].type == "tool_call_response"
    assert messages[0].parts[0].response == {"temp": 18} and messages[0].parts[0].id == "call_1"


def test_blobs_are_described_not_dumped():
    attrs = {"gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "iVBORw0KGgo" * 1000}]}])}
    [message] = messages_from_span(attrs)
    assert message.parts[0].type == "other"
    assert message.parts[0].text == "image (image/png)"


def test_tool_io():
    assert tool_io({"gen_ai.tool.call.arguments": '{"q": 1}', "gen_ai.tool.call.result": "[1, 2]"}) == ({"q": 1}, [1, 2])
    assert tool_io({"input.value": '{"city": "Paris"}', "output.value": "plain text"}) == ({"city": "Paris"}, "plain text")
    assert tool_io({"traceloop.entity.input": '{"inputs": {"x": 1}}'})[0] == {"inputs": {"x": 1}}
    assert tool_io({}) == (None, None)


def test_huge_indexes_allocate_nothing():
    assert messages_from_span({"llm.input_messages.99999999.message.role": "user"}) == []
    big = {f"gen_ai.prompt.{i * 1000}.content": "x" for i in range(3000)}
    assert len(messages_from_span(big)) <= 2000


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=15),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)
content_keys = st.sampled_from([
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions", "llm.input_messages.0.message.content",
    "llm.input_messages.3.message.tool_calls.1.tool_call.function.arguments", "gen_ai.prompt.2.content",
    "langfuse.observation.input", "langfuse.observation.output", "ai.prompt.messages", "ai.prompt", "input.value",
    "output.value", "traceloop.entity.input", "ai.response.toolCalls", "llm.output_messages.0.message.role"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(content_keys, st.one_of(json_like, json_like.map(json.dumps)), max_size=6),
       st.lists(st.tuples(st.sampled_from(["gen_ai.choice", "gen_ai.user.message", "gen_ai.content.prompt", "x"]),
                          json_like), max_size=3))
def test_hostile_content_never_raises(attrs, bodies):
    logs = [LogEvent(name, i, {}, body) for i, (name, body) in enumerate(bodies)]
    events = [SpanEvent(name, i, {"gen_ai.prompt": json.dumps(body)}) for i, (name, body) in enumerate(bodies)]
    for message in messages_from_span(attrs, events, logs):
        assert isinstance(message.role, str)
