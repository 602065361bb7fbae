"""Attribute values nested too deep to parse (issue 9, item 7): one such value must not refuse the batch.

The protobuf runtime refuses a message nested more than 100 levels, so an attribute 32 kvlist levels
(or 48 array levels) deep in one span used to turn the whole request into INVALID_ARGUMENT, good
spans included. Now the too-deep values are cut to a string marker at 16 levels (receiver.nesting)
and everything else arrives intact, for traces, logs and metrics, protobuf and JSON.

Deep bodies are built at the wire level here: the runtime cannot serialize what it cannot parse.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import aiohttp
import grpc
import pytest
import zstandard
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Exemplar,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver import nesting
from receiver.nesting import MARKER, MAX_VALUE_NESTING
from receiver.normalize import IngestOptions, Normalizer
from receiver.otlp import REPAIRED_NESTING, REPAIRED_UTF8, OtlpDecodeError, decode_body, message_to_otlp_json
from receiver.prices import PriceTable
from store.models import COL, FLAG_TRUNCATED, FLAG_UTF8_REPAIRED, LOG_COLUMNS
from tests.otlp_factory import T0, kv, log_record, logs_request, make_span, trace_request

_DECOMPRESS = zstandard.ZstdDecompressor()
PLACEHOLDER = "@@DEEP@@"


# --- building deep bodies at the wire level -----------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def ld(number: int, payload: bytes) -> bytes:
    """One length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def deep_value(levels: int, kind: str = "kvlist", leaf: str = "leaf") -> bytes:
    """A serialized AnyValue holding `leaf` inside `levels` nested kvlists (or arrays). Iterative."""
    value = AnyValue(string_value=leaf).SerializeToString()
    key = KeyValue(key="k").SerializeToString()
    for _ in range(levels):
        if kind == "kvlist":  # AnyValue.kvlist_value(6) → KeyValueList.values(1) → KeyValue.value(2)
            value = ld(6, ld(1, key + ld(2, value)))
        else:  # AnyValue.array_value(5) → ArrayValue.values(1)
            value = ld(5, ld(1, value))
    return value


def raw_kv(key: str, value: bytes) -> bytes:
    """A serialized KeyValue whose value is the serialized AnyValue `value`."""
    return KeyValue(key=key).SerializeToString() + ld(2, value)


Path_ = Sequence[tuple[str, int | None]]


def splice(msg: Message, path: Path_, field: str, raw: bytes) -> bytes:
    """`msg` serialized with `raw` appended as one more `field` of the submessage at `path` ((field
    name, index or None) steps), every enclosing message re-encoded around it, order kept."""
    number = msg.DESCRIPTOR.fields_by_name[(path[0][0] if path else field)].number
    if not path:
        return msg.SerializeToString() + ld(number, raw)
    name, index = path[0]
    head = type(msg)()
    head.CopyFrom(msg)
    if index is None:
        inner = splice(getattr(msg, name), path[1:], field, raw)
        head.ClearField(name)
        return head.SerializeToString() + ld(number, inner)
    items = getattr(msg, name)
    inner = splice(items[index], path[1:], field, raw)
    del getattr(head, name)[index:]
    tail = type(msg)()  # the elements after `index`: a second serialized part merges into the first
    getattr(tail, name).extend(items[index + 1:])
    return head.SerializeToString() + ld(number, inner) + tail.SerializeToString()


def navigate(msg: Message, path: Path_) -> Message:
    for name, index in path:
        msg = getattr(msg, name) if index is None else getattr(msg, name)[index]
    return msg


def depth_and_leaf(value: AnyValue) -> tuple[int, Any]:
    """How many arrays/kvlists wrap the first leaf of `value`, and the leaf."""
    depth = 0
    while True:
        which = value.WhichOneof("value")
        if which == "array_value" and value.array_value.values:
            value = value.array_value.values[0]
        elif which == "kvlist_value" and value.kvlist_value.values:
            value = value.kvlist_value.values[0].value
        elif which in ("array_value", "kvlist_value"):  # empty
            return depth + 1, None
        else:
            return depth, getattr(value, which) if which else None
        depth += 1


def attr(attributes: Any, key: str) -> AnyValue:
    (value,) = [item.value for item in attributes if item.key == key]
    return value


def decode(signal: str, body: bytes, json_body: bool = False) -> tuple[Message, Any]:
    return decode_body(signal, body, json_body=json_body, gzipped=False)


# --- one request per signal: a good item and a bad one with a deep value at `location` ---------------

SPAN = [("resource_spans", 0), ("scope_spans", 0), ("spans", 1)]
LOG = [("resource_logs", 0), ("scope_logs", 0), ("log_records", 1)]
METRICS = [("resource_metrics", 0), ("scope_metrics", 0), ("metrics", 0)]
# location -> (signal, path to the message that gets the value, its field)
LOCATIONS: dict[str, tuple[str, Path_, str]] = {
    "span attribute": ("traces", SPAN, "attributes"),
    "event attribute": ("traces", [*SPAN, ("events", 0)], "attributes"),
    "link attribute": ("traces", [*SPAN, ("links", 0)], "attributes"),
    "resource attribute": ("traces", [("resource_spans", 0), ("resource", None)], "attributes"),
    "scope attribute": ("traces", [("resource_spans", 0), ("scope_spans", 0), ("scope", None)], "attributes"),
    "log body": ("logs", LOG, "body"),
    "log attribute": ("logs", LOG, "attributes"),
    "gauge point attribute": ("metrics", [*METRICS, ("gauge", None), ("data_points", 0)], "attributes"),
    "exemplar attribute": ("metrics", [("resource_metrics", 0), ("scope_metrics", 0), ("metrics", 1),
                                       ("histogram", None), ("data_points", 0), ("exemplars", 0)],
                           "filtered_attributes"),
}


def base_request(signal: str) -> Message:
    """Two items, the second ("bad") about to receive a deep value; every message on a path exists."""
    if signal == "traces":
        good = make_span(0xD1, 1, None, "good", {"gen_ai.request.model": "gpt-4o", "nested": [1, {"a": "b"}]})
        bad = make_span(0xD1, 2, None, "bad", {"before": "kept"},
                        events=[("evt", T0, {"before": "kept"})])
        bad.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8).attributes.append(kv("before", "kept"))
        return trace_request([good, bad], resource_attrs={"before": "kept"})
    if signal == "logs":
        return logs_request([log_record(0xD1, 1, body={"content": "good"}, attrs={"a": 1}),
                             log_record(0xD1, 2, attrs={"before": "kept"})])
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    scope.metrics.append(Metric(name="gauge", gauge=Gauge(data_points=[
        NumberDataPoint(as_int=1, attributes=[kv("before", "kept")])])))
    scope.metrics.append(Metric(name="histogram", histogram=Histogram(data_points=[HistogramDataPoint(
        count=1, attributes=[kv("before", "kept")],
        exemplars=[Exemplar(as_double=1.0, filtered_attributes=[kv("before", "kept")])])])))
    return request


def deep_body(location: str, value: bytes) -> tuple[str, Message, bytes]:
    """(signal, the request without the deep value, the request with it, serialized)."""
    signal, path, field = LOCATIONS[location]
    request = base_request(signal)
    raw = value if field == "body" else raw_kv("deep", value)
    return signal, request, splice(request, path, field, raw)


def deep_of(location: str, decoded: Message) -> AnyValue:
    _signal, path, field = LOCATIONS[location]
    where = navigate(decoded, path)
    return where.body if field == "body" else attr(getattr(where, field), "deep")


# --- the runtime's limit, as found ---------------------------------------------------------------------


def test_the_runtime_refuses_32_kvlist_or_48_array_levels_in_a_span():
    """What the fallback exists for: upb's limit is 100 messages, and a span attribute's value starts
    6 messages down; a kvlist level costs 3 messages, an array level 2."""
    for levels, kind, ok in ((31, "kvlist", True), (32, "kvlist", False), (47, "array", True), (48, "array", False)):
        _signal, _request, body = deep_body("span attribute", deep_value(levels, kind))
        if ok:
            ExportTraceServiceRequest.FromString(body)
        else:
            with pytest.raises(DecodeError, match="MaxDepth"):
                ExportTraceServiceRequest.FromString(body)


# --- protobuf ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels,kind", [(34, "kvlist"), (50, "array"), (1000, "kvlist")])
@pytest.mark.parametrize("location", list(LOCATIONS))
def test_a_too_deep_value_is_cut_and_everything_else_arrives(location, levels, kind):
    signal, request, body = deep_body(location, deep_value(levels, kind))
    decoded, repairs = decode(signal, body)
    assert repairs == REPAIRED_NESTING
    assert depth_and_leaf(deep_of(location, decoded)) == (MAX_VALUE_NESTING, MARKER)
    # Everything but the deep value is as sent: drop it and compare with the request built without it.
    _signal, path, field = LOCATIONS[location]
    where = navigate(decoded, path)
    if field == "body":
        where.ClearField("body")
    else:
        del getattr(where, field)[-1]
    assert decoded == request


def test_depth_at_the_limit_is_kept_and_one_more_is_cut():
    """In a request that needs the fallback, a value exactly 16 levels deep is intact; 17 is cut at 16."""
    request = base_request("traces")
    # The 16- and 17-level values are shallow enough for the runtime: built with the API.
    span = Span()
    span.CopyFrom(request.resource_spans[0].scope_spans[0].spans[1])
    for levels, key in ((16, "at_limit"), (17, "over"), (16, "at_limit_array")):
        kind = "array" if key.endswith("array") else "kvlist"
        span.attributes.add(key=key).value.ParseFromString(deep_value(levels, kind))
    request.resource_spans[0].scope_spans[0].spans[1].CopyFrom(span)
    body = splice(request, SPAN, "attributes", raw_kv("deep", deep_value(40)))
    decoded, repairs = decode("traces", body)
    assert repairs == REPAIRED_NESTING
    attributes = decoded.resource_spans[0].scope_spans[0].spans[1].attributes
    assert depth_and_leaf(attr(attributes, "at_limit")) == (16, "leaf")
    assert depth_and_leaf(attr(attributes, "at_limit_array")) == (16, "leaf")
    assert depth_and_leaf(attr(attributes, "over")) == (16, MARKER)
    assert depth_and_leaf(attr(attributes, "deep")) == (16, MARKER)


def test_the_most_compact_too_deep_value_is_still_found():
    """The rewrite skips messages too short to hold a too-deep value: the shortest possible one (17
    arrays, the innermost empty, 4 bytes a level) must still be cut."""
    compact = ld(5, b"")  # AnyValue{array_value{}}: the 17th container
    for _ in range(MAX_VALUE_NESTING):
        compact = ld(5, ld(1, compact))
    assert len(compact) == 4 * MAX_VALUE_NESTING + 2
    request = base_request("traces")
    navigate(request, SPAN).attributes.add(key="compact").value.ParseFromString(compact)
    body = splice(request, SPAN, "attributes", raw_kv("deep", deep_value(40)))
    decoded, repairs = decode("traces", body)
    assert repairs == REPAIRED_NESTING
    attributes = decoded.resource_spans[0].scope_spans[0].spans[1].attributes
    assert depth_and_leaf(attr(attributes, "compact")) == (MAX_VALUE_NESTING, MARKER)
    assert depth_and_leaf(attr(attributes, "deep")) == (MAX_VALUE_NESTING, MARKER)


def test_a_request_the_runtime_accepts_is_not_touched(monkeypatch):
    """The fast path: no rewrite, even for values deeper than the fallback's limit."""
    monkeypatch.setattr(nesting, "clip_protobuf", lambda *a, **k: pytest.fail("fallback on the fast path"))
    _signal, _request, body = deep_body("span attribute", deep_value(31))
    decoded, repairs = decode("traces", body)
    assert repairs is False
    assert depth_and_leaf(deep_of("span attribute", decoded)) == (31, "leaf")


@pytest.mark.parametrize("kind", ["kvlist", "array"])
@pytest.mark.parametrize("location", ["span attribute", "log body", "gauge point attribute"])
def test_ten_thousand_levels_are_cut_without_recursing(location, kind):
    signal, _request, body = deep_body(location, deep_value(10_000, kind))
    decoded, repairs = decode(signal, body)
    assert repairs == REPAIRED_NESTING
    assert depth_and_leaf(deep_of(location, decoded)) == (MAX_VALUE_NESTING, MARKER)


def test_malformed_bytes_found_by_the_fallback_are_a_clear_error():
    _signal, _request, body = deep_body("span attribute", deep_value(40))
    # Wire type 7 does not exist; the runtime stops at the deep value first, the rewrite finds this.
    with pytest.raises(OtlpDecodeError, match="malformed protobuf ExportTraceServiceRequest: invalid wire type 7"):
        decode("traces", body + b"\x0f")
    # A length running past the end of the body.
    with pytest.raises(OtlpDecodeError, match="runs past the end"):
        decode("traces", body + ld(1, b"x" * 10)[:-3])
    # A truncated varint at the very end.
    with pytest.raises(OtlpDecodeError, match="truncated varint"):
        decode("traces", body + b"\x08\xff")
    # Cut in the middle: every enclosing length is now wrong.
    with pytest.raises(OtlpDecodeError, match="malformed protobuf"):
        decode("traces", body[: len(body) // 2])


def test_mutated_deep_bodies_decode_or_fail_cleanly():
    """Random damage to a deep body: the rewrite returns or raises WireError, decode_body returns or
    raises OtlpDecodeError; nothing else (no IndexError, no RecursionError)."""
    rng = random.Random(7)
    _signal, _request, body = deep_body("span attribute", deep_value(40))
    outcomes = set()
    for _ in range(400):
        data = bytearray(body)
        i = rng.randrange(len(data))
        op = rng.randrange(3)
        if op == 0:
            data[i] = rng.randrange(256)
        elif op == 1:
            del data[i:i + rng.randint(1, 8)]
        else:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        try:
            nesting.clip_protobuf(ExportTraceServiceRequest.DESCRIPTOR, bytes(data))
        except nesting.WireError:
            pass
        try:
            decode("traces", bytes(data))
            outcomes.add("decoded")
        except OtlpDecodeError:
            outcomes.add("refused")
    assert outcomes == {"decoded", "refused"}


def test_a_malformed_body_without_deep_values_keeps_its_error(monkeypatch):
    monkeypatch.setattr(nesting, "clip_protobuf", lambda *a, **k: pytest.fail("fallback on a non-depth error"))
    with pytest.raises(OtlpDecodeError, match="malformed protobuf ExportTraceServiceRequest"):
        decode("traces", b"\x0a\x05abc")


def test_unknown_fields_and_untouched_bytes_are_copied_verbatim():
    unknown = varint(999 << 3 | 0) + varint(12345) + ld(998, b"opaque")
    good = make_span(0xD1, 1, None, "good", {"a": [1, 2]})
    bad = make_span(0xD1, 2, None, "bad", {})
    request = trace_request([good, bad])
    body = splice(request, SPAN, "attributes", raw_kv("deep", deep_value(40)) + unknown)
    clipped, cut = nesting.clip_protobuf(ExportTraceServiceRequest.DESCRIPTOR, body)
    assert cut == 1
    assert good.SerializeToString() in clipped and unknown in clipped
    assert nesting.clip_protobuf(ExportTraceServiceRequest.DESCRIPTOR, clipped) == (clipped, 0)
    decoded, _ = decode("traces", body)
    assert unknown in decoded.SerializeToString()


@pytest.mark.parametrize("bad_first", [True, False])
def test_invalid_utf8_and_a_deep_value_in_one_request(bad_first):
    """Either error can be the one the runtime meets first; both are repaired."""
    dirty = make_span(0xD1, 3, None, "name-XYZ", {})
    bad = make_span(0xD1, 2, None, "bad", {})
    request = trace_request([dirty, bad] if bad_first else [bad, dirty])
    index = 1 if bad_first else 0
    body = splice(request, [("resource_spans", 0), ("scope_spans", 0), ("spans", index)], "attributes",
                  raw_kv("deep", deep_value(40)))
    body = body.replace(b"name-XYZ", b"name-\xff\xfe\xfd")
    decoded, repairs = decode("traces", body)
    assert repairs == REPAIRED_UTF8 | REPAIRED_NESTING
    spans = {span.name: span for span in decoded.resource_spans[0].scope_spans[0].spans}
    assert set(spans) == {"name-\ufffd\ufffd\ufffd", "bad"}
    assert depth_and_leaf(attr(spans["bad"].attributes, "deep")) == (16, MARKER)


def test_invalid_utf8_deep_inside_a_value_is_repaired_not_refused():
    """The repair walk used to stop at 64 messages: a bad string 40 arrays down refused the request."""
    value = "XXBADXX"
    for _ in range(40):
        value = [value]
    body = trace_request([make_span(0xD1, 1, None, "s", {"deep": value}), make_span(0xD1, 2, None, "good", {})]
                         ).SerializeToString().replace(b"XXBADXX", b"XX\xff\xfeDXX")
    decoded, repairs = decode("traces", body)
    assert repairs is True
    assert depth_and_leaf(attr(decoded.resource_spans[0].scope_spans[0].spans[0].attributes, "deep")) == \
        (40, "XX\ufffd\ufffdDXX")


# --- JSON --------------------------------------------------------------------------------------------


def deep_json(levels: int, kind: str = "kvlist", leaf: str = "leaf") -> str:
    if kind == "kvlist":
        opening, closing = '{"kvlistValue": {"values": [{"key": "k", "value": ', "}]}}"
    else:
        opening, closing = '{"arrayValue": {"values": [', "]}}"
    return opening * levels + json.dumps({"stringValue": leaf}) + closing * levels


def json_body(location: str, value_json: str) -> tuple[str, bytes]:
    """The location's request in OTLP/JSON with `value_json` as the deep value."""
    signal, path, field = LOCATIONS[location]
    request = base_request(signal)
    where = navigate(request, path)
    if field == "body":
        where.body.string_value = PLACEHOLDER
    else:
        getattr(where, field).add(key="deep").value.string_value = PLACEHOLDER
    text = json.dumps(message_to_otlp_json(request))
    placeholder = json.dumps({"stringValue": PLACEHOLDER})
    assert text.count(placeholder) == 1
    return signal, text.replace(placeholder, value_json).encode()


@pytest.mark.parametrize("levels,kind", [(20, "kvlist"), (32, "kvlist"), (48, "array"), (240, "kvlist")])
@pytest.mark.parametrize("location", ["span attribute", "event attribute", "log body", "log attribute",
                                      "gauge point attribute", "exemplar attribute"])
def test_json_too_deep_value_is_cut(location, levels, kind):
    signal, body = json_body(location, deep_json(levels, kind))
    decoded, repairs = decode(signal, body, json_body=True)
    assert repairs == REPAIRED_NESTING
    assert depth_and_leaf(deep_of(location, decoded)) == (MAX_VALUE_NESTING, MARKER)
    _signal, path, field = LOCATIONS[location]
    before = navigate(decoded, path)
    if field != "body":
        assert attr(getattr(before, field), "before").string_value == "kept"
    if signal == "traces":
        good = decoded.resource_spans[0].scope_spans[0].spans[0]
        assert good.name == "good" and good.trace_id == (0xD1).to_bytes(16, "big")
        assert [kv.key for kv in good.attributes] == ["gen_ai.request.model", "nested"]


def test_json_at_the_limit_is_kept():
    signal, body = json_body("span attribute", deep_json(16))
    decoded, repairs = decode(signal, body, json_body=True)
    assert repairs is False
    assert depth_and_leaf(deep_of("span attribute", decoded)) == (16, "leaf")


@pytest.mark.parametrize("kind", ["kvlist", "array"])
def test_json_a_hundred_thousand_levels_deep_value_is_cut(kind):
    """Past what json.loads can follow: pruned as text, then cut like any other."""
    signal, body = json_body("span attribute", deep_json(100_000, kind))
    decoded, repairs = decode(signal, body, json_body=True)
    assert repairs == REPAIRED_NESTING
    assert depth_and_leaf(deep_of("span attribute", decoded)) == (MAX_VALUE_NESTING, MARKER)
    assert [span.name for span in decoded.resource_spans[0].scope_spans[0].spans] == ["good", "bad"]


@pytest.mark.parametrize("text,reason", [
    ("[" * 100_000 + "]" * 100_000, "JSON body must be an object"),
    ("[" * 100_000, "malformed JSON"),
    ('{"resourceSpans": ' + "[" * 100_000 + "]" * 100_000 + "}", "invalid OTLP/JSON traces request"),
    ('{"a": "' + "[" * 100_000 + '"}', None),  # brackets inside a string are not nesting
], ids=["arrays", "unbalanced", "in a known field", "in a string"])
def test_json_a_hundred_thousand_levels_deep_body_is_a_clear_result(text, reason):
    if reason is None:
        decoded, repairs = decode("traces", text.encode(), json_body=True)
        assert repairs is False and decoded == ExportTraceServiceRequest()
    else:
        with pytest.raises(OtlpDecodeError, match=reason):
            decode("traces", text.encode(), json_body=True)


def test_prune_json_text_keeps_strings_and_shallow_structure():
    text = '{"a": "[{\\"", "b": ' + "[" * 5 + "1" + "]" * 5 + "}"
    assert nesting.prune_json_text(text, max_depth=10) == (text, 0)
    pruned, n = nesting.prune_json_text(text, max_depth=3)
    assert n == 1 and json.loads(pruned) == {"a": '[{"', "b": [[None]]}


# --- through the normalizer: the cut span is flagged ---------------------------------------------------


def test_the_cut_span_is_flagged_truncated_and_its_neighbour_is_not():
    _signal, _request, body = deep_body("span attribute", deep_value(40))
    decoded, repairs = decode("traces", body)
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    rows, _resources, _scopes, rejections = normalizer.decode_traces(decoded, T0 + 10**9, utf8_repaired=repairs)
    assert rejections.count == 0
    by_name = {row[COL["name"]]: row for row in rows}
    assert set(by_name) == {"good", "bad"}
    assert by_name["bad"][COL["flags"]] & FLAG_TRUNCATED
    assert not by_name["bad"][COL["flags"]] & FLAG_UTF8_REPAIRED
    assert not by_name["good"][COL["flags"]] & FLAG_TRUNCATED
    stored = Span.FromString(_DECOMPRESS.decompress(by_name["bad"][COL["raw"]]))
    assert depth_and_leaf(attr(stored.attributes, "deep")) == (16, MARKER)
    assert attr(stored.attributes, "before").string_value == "kept"


def test_the_cut_log_record_is_stored_with_the_marker():
    _signal, _request, body = deep_body("log body", deep_value(60, "array"))
    decoded, repairs = decode("logs", body)
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    rows, _resources, _scopes, rejections = normalizer.decode_logs(decoded, T0 + 10**9, utf8_repaired=repairs)
    assert rejections.count == 0 and len(rows) == 2
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    raw = LOG_COLUMNS.index("raw")
    bodies = [LogRecord.FromString(_DECOMPRESS.decompress(row[raw])).body for row in rows]
    assert depth_and_leaf(bodies[0]) == (1, "good")
    assert depth_and_leaf(bodies[1]) == (16, MARKER)


def test_redaction_reaches_every_depth_that_parses():
    """Redaction used to stop at 32 levels: an e-mail 40 arrays down in a content attribute was kept."""
    value = "write to bob@example.com"
    for _ in range(40):
        value = [value]
    request = trace_request([make_span(0xD1, 1, None, "chat", {"gen_ai.operation.name": "chat",
                                                              "gen_ai.input.messages": value})])
    decoded, _repairs = decode("traces", request.SerializeToString())
    rows, *_ = Normalizer(PriceTable.load(), IngestOptions()).decode_traces(decoded, T0 + 10**9)
    raw = _DECOMPRESS.decompress(rows[0][COL["raw"]])
    assert b"bob@example.com" not in raw
    depth, leaf = depth_and_leaf(attr(Span.FromString(raw).attributes, "gen_ai.input.messages"))
    assert depth == 40 and leaf.startswith("write to ") and "bob@example.com" not in leaf


# --- end to end: a real receiver, a real store ---------------------------------------------------------

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"



def e2e_body(trace: int, as_json: bool) -> bytes:
    """A good span and a span with one attribute 32 kvlist levels deep (the issue's example)."""
    good = make_span(trace, 1, None, "good", {"gen_ai.request.model": "gpt-4o"})
    bad = make_span(trace, 2, None, "deep", {"before": "kept"})
    request = trace_request([good, bad])
    if as_json:
        request.resource_spans[0].scope_spans[0].spans[1].attributes.add(key="deep").value.string_value = PLACEHOLDER
        text = json.dumps(message_to_otlp_json(request))
        return text.replace(json.dumps({"stringValue": PLACEHOLDER}), deep_json(32)).encode()
    return splice(request, SPAN, "attributes", raw_kv("deep", deep_value(32)))


@pytest.mark.anyio
async def test_end_to_end_a_deep_attribute_does_not_refuse_the_batch(backend):
    from store.connection import open_reader

    # gRPC, protobuf
    async with grpc.aio.insecure_channel(backend.grpc_address) as channel:
        raw = await channel.unary_unary(TRACE_METHOD)(e2e_body(0xE1, False), timeout=30)
    assert ExportTraceServiceResponse.FromString(raw).partial_success.rejected_spans == 0
    # OTLP/HTTP, protobuf and JSON
    async with aiohttp.ClientSession() as session:
        for trace, as_json in ((0xE2, False), (0xE3, True)):
            content_type = "application/json" if as_json else "application/x-protobuf"
            async with session.post(backend.http_address + "/v1/traces", data=e2e_body(trace, as_json),
                                    headers={"Content-Type": content_type}) as response:
                assert response.status == 200, (await response.read())[:300]
    # Acknowledged means committed: read the store file now.
    db = open_reader(backend.config.pipeline.db_path)
    try:
        stored = db.execute("SELECT trace_id, name, flags, raw FROM spans").fetchall()
    finally:
        db.close()
    assert sorted((int.from_bytes(t, "big"), name) for t, name, _f, _r in stored) == \
        [(trace, name) for trace in (0xE1, 0xE2, 0xE3) for name in ("deep", "good")]
    for _trace, name, flags, blob in stored:
        span = Span.FromString(_DECOMPRESS.decompress(blob))
        if name == "deep":
            assert flags & FLAG_TRUNCATED
            assert depth_and_leaf(attr(span.attributes, "deep")) == (MAX_VALUE_NESTING, MARKER)
            assert attr(span.attributes, "before").string_value == "kept"
        else:
            assert not flags & FLAG_TRUNCATED
            assert attr(span.attributes, "gen_ai.request.model").string_value == "gpt-4o"
    assert backend.pipeline.stats.invalid_requests == 0


@pytest.mark.anyio
async def test_end_to_end_deep_logs_and_metrics_are_accepted(backend):
    from store.connection import open_reader

    _signal, _request, logs_body = deep_body("log attribute", deep_value(48, "array"))
    _signal, _request, metrics_body = deep_body("exemplar attribute", deep_value(32))
    async with aiohttp.ClientSession() as session:
        for signal, body in (("logs", logs_body), ("metrics", metrics_body)):
            async with session.post(f"{backend.http_address}/v1/{signal}", data=body,
                                    headers={"Content-Type": "application/x-protobuf"}) as response:
                assert response.status == 200, (await response.read())[:300]
    db = open_reader(backend.config.pipeline.db_path)
    try:
        (count,), = db.execute("SELECT count(*) FROM logs").fetchall()
    finally:
        db.close()
    assert count == 2
    assert backend.pipeline.stats.invalid_requests == 0


def test_json_and_protobuf_cut_the_same_way():
    """The same deep request over both encodings decodes to the same message."""
    _signal, _request, body = deep_body("span attribute", deep_value(40))
    from_protobuf, _ = decode("traces", body)
    signal, text = json_body("span attribute", deep_json(40))
    from_json, _ = decode(signal, text, json_body=True)
    assert depth_and_leaf(deep_of("span attribute", from_protobuf)) == \
        depth_and_leaf(deep_of("span attribute", from_json))
    assert attr(from_protobuf.resource_spans[0].scope_spans[0].spans[1].attributes, "deep") == \
        attr(from_json.resource_spans[0].scope_spans[0].spans[1].attributes, "deep")
