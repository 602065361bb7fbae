"""What the search index holds for a span does not depend on how fast it was read (issue 15).

store/content_index.py reads a stored span back converting only the attributes and events that
store.content reads (CONTENT_KEYS, CONTENT_EVENTS), and takes a short way through the two commonest
message shapes. Ground truth here is the text the general way gives: every attribute and event of
the stored protobuf converted, messages_from_span over all of them (the indexer before issue 15).
Spans go through the real Normalizer (redaction on) and SpanWriter, and are read back from the store.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.ingest import build_request
from receiver.normalize import Normalizer
from store import content_index
from store.content import SpanEvent, messages_from_span, tool_io
from store.otlp_values import any_value
from store.queries import decompress
from store.writer import SpanWriter
from tests.otlp_factory import T0, make_span, trace_request
from tests.test_conversation import LANGFUSE, OPENINFERENCE, OPENLLMETRY_OLD, OTEL_CURRENT, VERCEL


def reference_span_text(kind: str, attributes: dict, events: list[SpanEvent]) -> str:
    """The searchable text by the general way alone: no key filter, no short way."""
    pieces = list(content_index._message_pieces(messages_from_span(attributes, events)))
    if kind == "tool":
        pieces.extend(tool_io(attributes, events))
    for key in ("gen_ai.retrieval.query.text", "retrieval.query"):
        if key in attributes:
            pieces.append(attributes[key])
    pieces.extend(value for key, value in attributes.items()
                  if key.startswith("retrieval.documents.") and key.endswith(".document.content"))
    return content_index._join(pieces)


def reference_from_raw(raw: bytes, kind: str) -> str:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    proto = Span.FromString(decompress(raw))
    attributes = {kv.key: any_value(kv.value) for kv in proto.attributes}
    events = [SpanEvent(e.name, e.time_unix_nano, {kv.key: any_value(kv.value) for kv in e.attributes})
              for e in proto.events]
    return reference_span_text(kind, attributes, events)


def parts(*texts: str) -> list[dict]:
    return [{"type": "text", "content": text} for text in texts]


PLAIN_OTEL = {
    "gen_ai.input.messages": json.dumps([{"role": "system", "parts": parts("Be brief.")},
                                         {"role": "user", "parts": parts("Where is order 7781?", "¿Dónde está?")}]),
    "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": parts("In transit: 返金ポリシー"),
                                           "finish_reason": "stop"}]),
}
PROMPT_EVENTS = [("gen_ai.content.prompt", T0, {"gen_ai.prompt": json.dumps(
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Refund policy?"}])}),
                 ("gen_ai.content.completion", T0, {"gen_ai.completion": json.dumps(
                     [{"role": "assistant", "content": "Thirty days."}])})]
COMMON = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
          "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5, "user.id": "u1"}
# (kind of span, attributes, events): every shape the content tests know, the short way's shapes, and
# the near misses that must leave it.
SPANS: list[tuple[dict, list]] = [
    ({**COMMON, **PLAIN_OTEL}, []),
    (COMMON, PROMPT_EVENTS),
    ({**COMMON, **PLAIN_OTEL}, PROMPT_EVENTS),  # SPAN_AND_EVENT mode: the attributes win
    ({**COMMON, **OTEL_CURRENT}, []), ({**COMMON, **OPENINFERENCE}, []), ({**COMMON, **OPENLLMETRY_OLD}, []),
    ({**COMMON, **LANGFUSE}, []), ({**COMMON, **VERCEL}, []),
    ({**COMMON, "gen_ai.input.messages": PLAIN_OTEL["gen_ai.input.messages"]}, []),  # no output side
    ({**COMMON, **PLAIN_OTEL, "gen_ai.system_instructions": json.dumps(parts("Answer in French."))}, []),
    ({**COMMON, **PLAIN_OTEL, "gen_ai.prompt.0.content": "flattened too"}, []),
    ({**COMMON, "gen_ai.input.messages": json.dumps([{"role": "tool", "tool_call_id": "c1", "content": '{"a": 1}'}]),
      "gen_ai.output.messages": PLAIN_OTEL["gen_ai.output.messages"]}, []),
    (COMMON, [*PROMPT_EVENTS, ("gen_ai.user.message", T0, {"content": "an event message"}),
              ("exception", T0, {"exception.message": "boom"})]),
    (COMMON, [("gen_ai.choice", T0, {"index": 0, "message": json.dumps({"content": "chosen"})})]),
    ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup",
      "gen_ai.tool.call.arguments": json.dumps({"order": "ORD-1"}), "gen_ai.tool.call.result": "parcel lost"}, []),
    ({"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.query.text": "warranty terms",
      "retrieval.documents.0.document.content": "Warranty: two years.", "retrieval.documents.0.document.id": "d0"},
     []),
    ({**COMMON, "input.value": "raw input text", "output.value": json.dumps({"answer": "raw output"})}, []),
    ({"http.route": "/chat"}, [("exception", T0, {"exception.message": "no content here"})]),
]


@pytest.fixture
def stored(writer_db: sqlite3.Connection, normalizer: Normalizer) -> list[tuple[str, bytes]]:
    """SPANS and the bench's agent and heavy templates, stored: (kind, raw) per span."""
    writer = SpanWriter(writer_db, clock=lambda: T0)
    spans = [make_span(1 + n, 1, None, "chat", attrs, events=events) for n, (attrs, events) in enumerate(SPANS)]
    rows, resources, scopes, rejections = normalizer.decode_traces(trace_request(spans))
    assert rejections.count == 0, rejections.message()
    writer.write(rows, [], resources, scopes)
    for heavy in (False, True):
        request = build_request(seed=1, traces=2, heavy=heavy)
        for span in request.resource_spans[0].scope_spans[0].spans:
            span.trace_id = bytes([0xAB, heavy]) + span.trace_id[2:]
            span.start_time_unix_nano, span.end_time_unix_nano = T0, T0 + 10**9
            for event in span.events:
                event.time_unix_nano = T0
        rows, resources, scopes, rejections = normalizer.decode_traces(request)
        assert rejections.count == 0, rejections.message()
        writer.write(rows, [], resources, scopes)
    return writer_db.execute("SELECT kind, raw FROM spans ORDER BY id").fetchall()


def test_a_stored_span_gives_the_text_every_attribute_would(stored):
    assert len(stored) == len(SPANS) + 32
    texts = [(content_index.searchable_span_text(raw, kind), reference_from_raw(raw, kind)) for kind, raw in stored]
    for n, (fast, reference) in enumerate(texts):
        assert fast == reference, n
    assert sum(1 for _fast, reference in texts if reference) >= len(SPANS) + 20, "most spans have text to compare"


def test_the_common_shapes_take_the_short_way_and_the_near_misses_do_not(stored):
    """The short way is really taken for the bench's shapes (or the comparison above proves nothing
    about it), and left for each near miss."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    def short_way(kind: str, raw: bytes) -> bool:
        proto = Span.FromString(decompress(raw))
        attributes = {kv.key: any_value(kv.value) for kv in proto.attributes if kv.key in content_index._INDEXED_KEYS
                      or kv.key.startswith(content_index._INDEXED_PREFIXES)}
        events = [SpanEvent(e.name, 0, {kv.key: any_value(kv.value) for kv in e.attributes}) for e in proto.events
                  if e.name in content_index.CONTENT_EVENTS]
        return content_index._fast_message_pieces(attributes, events) is not None

    taken = [short_way(kind, raw) for kind, raw in stored]
    assert taken[:2] == [True, True]
    assert not any(taken[2:14]), [n for n, t in enumerate(taken[:14]) if t]
    bench_llm_spans = [t for (kind, _raw), t in zip(stored[len(SPANS):], taken[len(SPANS):], strict=True)
                       if kind == "llm"]
    assert len(bench_llm_spans) == 24 and all(bench_llm_spans)


# -- the short way against the general one, on made-up messages ------------------------------------------

texts = st.sampled_from(["", "  ", "hello", "Hello world", "返金ポリシー", "a\ue000b", '{"k": 1}', "x" * 2100])
part = st.fixed_dictionaries({"type": st.sampled_from(["text", "text", "text", "reasoning", "tool_call"]),
                              "content": texts | st.integers()},
                             optional={"text": texts, "id": st.just("p1")})
# Mostly plain messages (the short way's), each perhaps with one key that makes it something else.
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "function", "model", ""]) | st.none()},
    optional={"finish_reason": st.just("stop"), "name": st.just("bob")},
).flatmap(lambda base: st.one_of(
    st.builds(lambda content: {**base, "content": content}, texts | st.none() | st.lists(part, max_size=2)),
    st.builds(lambda ps: {**base, "parts": ps}, st.lists(part, max_size=3)),
)).flatmap(lambda plain: st.one_of(
    st.just(plain), st.just(plain), st.just(plain),
    st.sampled_from([("tool_call_id", "c1"), ("id", "m1"), ("type", "message"), ("type", "function_call"),
                     ("tool_calls", [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]),
                     ("function_call", {"name": "f", "arguments": "{}"}), ("content", "also content")])
    .map(lambda extra: {**plain, extra[0]: extra[1]}),
))
messages = st.lists(message, max_size=4)
encoded = st.one_of(messages.map(json.dumps), messages.map(json.dumps), messages,
                    messages.map(lambda m: json.dumps(json.dumps(m))),
                    st.sampled_from(["not json", "[1, 2]", '{"messages": []}', "", "[]", b"[]"]))


@settings(max_examples=250, deadline=None)
@given(encoded, encoded, st.sampled_from(["llm", "tool"]))
def test_the_short_way_gives_the_general_ways_text_for_message_attributes(inputs, outputs, kind):
    attributes = {"gen_ai.input.messages": inputs, "gen_ai.output.messages": outputs}
    assert content_index.span_text(kind, attributes, []) == reference_span_text(kind, attributes, [])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["gen_ai.content.prompt", "gen_ai.content.completion"]), encoded),
                max_size=4))
def test_the_short_way_gives_the_general_ways_text_for_prompt_events(bodies):
    events = [SpanEvent(name, n, {"gen_ai.prompt" if name == "gen_ai.content.prompt" else "gen_ai.completion": body})
              for n, (name, body) in enumerate(bodies)]
    assert content_index.span_text("llm", {}, events) == reference_span_text("llm", {}, events)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
                                        "input.value", "gen_ai.prompt.0.content"]), encoded, max_size=3),
       st.lists(st.tuples(st.sampled_from(["gen_ai.content.prompt", "gen_ai.content.completion", "gen_ai.user.message"]),
                          encoded), max_size=3),
       st.sampled_from(["llm", "tool"]))
def test_the_short_way_gives_the_general_ways_text_when_sources_mix(attributes, event_bodies, kind):
    events = [SpanEvent(name, n, {"gen_ai.prompt" if name == "gen_ai.content.prompt" else "gen_ai.completion": body})
              for n, (name, body) in enumerate(event_bodies)]
    assert content_index.span_text(kind, attributes, events) == reference_span_text(kind, attributes, events)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                       "parts": st.lists(st.fixed_dictionaries({"type": st.just("text"),
                                                                                "content": texts}), max_size=3)}),
                min_size=1, max_size=3),
       st.lists(st.fixed_dictionaries({"role": st.just("assistant"), "content": texts}), min_size=1, max_size=2))
def test_plain_messages_take_the_short_way_with_the_same_text(inputs, outputs):
    attributes = {"gen_ai.input.messages": json.dumps(inputs), "gen_ai.output.messages": json.dumps(outputs)}
    assert content_index._fast_message_pieces(attributes, []) is not None
    assert content_index.span_text("llm", attributes, []) == reference_span_text("llm", attributes, [])


@pytest.mark.parametrize("where", ["attributes", "events"])
def test_messages_past_the_cap_are_not_indexed_either_way(where):
    """messages_from_span keeps MAX_MESSAGES messages, empty ones included: a word after them is not
    indexed, whichever way the span is read."""
    from store.content import MAX_MESSAGES

    inputs = [{"role": "user", "content": ""}] * (MAX_MESSAGES - 1) + [{"role": "user", "content": "kept"}]
    outputs = [{"role": "assistant", "content": "dropped"}]
    if where == "attributes":
        attributes, events = {"gen_ai.input.messages": json.dumps(inputs),
                              "gen_ai.output.messages": json.dumps(outputs)}, []
    else:
        attributes, events = {}, [SpanEvent("gen_ai.content.prompt", 1, {"gen_ai.prompt": json.dumps(inputs)}),
                                  SpanEvent("gen_ai.content.completion", 2, {"gen_ai.completion": json.dumps(outputs)})]
    assert reference_span_text("llm", attributes, events) == "kept"
    assert content_index.span_text("llm", attributes, events) == "kept"
