"""The decoder stores and walks each unchanged span's own bytes from the request body instead of serializing
the span again (receiver/decoder_process.span_bytes_of, store/_span_walk.c span_ranges, the normalizer's
`span_bytes`). What it writes must be what it wrote before, span for span, whatever the request holds:
spans it cuts, redacts or drops content from, bytes in another field order than upb's or with a field met
twice, and requests cut into slices."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver import decoder_process, protocol
from receiver.decoder_process import handle, span_bytes_of
from receiver.normalize import MAX_ATTRIBUTES, IngestOptions, Normalizer
from receiver.otlp import decode_body_and_bytes
from receiver.prices import PriceTable
from store.models import COL
from store.queries import decompress
from store.span_walk import COMPILED
from store.writer_process import decode_batch
from tests.otlp_factory import T0, make_span, trace_request

pytestmark = pytest.mark.skipif(not COMPILED, reason="the compiled walk is not built here")
RECEIVED = T0 + 10**9
RAW = COL["raw"]


def _chat(trace: int, span: int, **extra: object) -> Span:
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o",
                  "gen_ai.usage.input_tokens": 100 + span, "gen_ai.usage.output_tokens": 7,
                  "gen_ai.response.finish_reasons": ["stop"], "gen_ai.output.messages": json.dumps(
                      [{"role": "assistant", "parts": [{"type": "text", "content": f"answer {span}"}]}]), **extra}
    return make_span(trace, span, 1, "chat gpt-4o", attributes, events=[
        ("gen_ai.content.prompt", T0 + 5, {"gen_ai.prompt": "hello"}), ("exception", T0 + 6, {"exception.type": "X"})])


def _shapes() -> list[Span]:
    return [
        make_span(1, 1, None, "agent", {"gen_ai.operation.name": "invoke_agent", "user.id": "u1"}),
        _chat(1, 2),
        _chat(1, 3, **{"user.email": "bob@example.com"}),  # redacted: serialized again
        _chat(1, 4, **{f"extra.{i}": i for i in range(MAX_ATTRIBUTES + 5)}),  # cut to MAX_ATTRIBUTES
        _chat(1, 5, **{"big": "x" * 300_000}),  # past max_attr_bytes: truncated
        _chat(1, 6, **{"gen_ai.tool.definitions": {"name": "search", "params": [1, 2.5, "three"]}}),
        make_span(2, 1, None, "execute_tool search", {"gen_ai.operation.name": "execute_tool",
                                                      "gen_ai.tool.call.arguments": '{"q": "refund"}'}),
    ]


def _rows(request: ExportTraceServiceRequest, options: IngestOptions, span_bytes: Sequence[bytes] | None) -> list:
    normalizer = Normalizer(PriceTable.load(), options)
    rows, resources, scopes, rejections = normalizer.decode_traces(request, RECEIVED, span_bytes=span_bytes)
    return [rows, resources, scopes, rejections.count]


@pytest.mark.parametrize("options", [IngestOptions(), IngestOptions(keep_content=False),
                                     IngestOptions(drop_keys=("user.id",)), IngestOptions(redact=False)],
                         ids=["default", "content none", "drop keys", "no redaction"])
def test_rows_are_the_same_with_the_spans_own_bytes(options: IngestOptions) -> None:
    body = trace_request(_shapes()).SerializeToString()
    parsed = ExportTraceServiceRequest.FromString(body)
    own = span_bytes_of(body, parsed)
    assert own is not None and len(own) == len(_shapes())
    assert _rows(parsed, options, own) == _rows(ExportTraceServiceRequest.FromString(body), options, None)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    tag, length = number << 3 | 2, len(payload)
    out = bytearray()
    for value in (tag, length):
        while value > 0x7F:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload


def _unusual(span: Span) -> bytes:
    """The span's fields in reverse order of upb's, and its name sent twice (the last one counts)."""
    parts = []
    for descriptor, value in reversed(span.ListFields()):
        single = Span()
        field = getattr(single, descriptor.name)
        if hasattr(value, "extend"):  # a repeated field
            field.extend(value)
        elif descriptor.message_type is not None:
            field.CopyFrom(value)
        else:
            setattr(single, descriptor.name, value)
        parts.append(single.SerializeToString())
    return _field(5, b"first name") + b"".join(parts)


def _request_of(spans_bytes: list[list[bytes]]) -> bytes:
    """An ExportTraceServiceRequest with one ResourceSpans (service svc) per list of span bytes."""
    resource = trace_request([]).resource_spans[0].resource.SerializeToString()
    return b"".join(_field(1, _field(1, resource) + _field(2, b"".join(_field(2, s) for s in spans)))
                    for spans in spans_bytes)


def test_bytes_in_another_order_are_stored_as_sent_and_read_as_upb_reads_them() -> None:
    spans = [_unusual(span) for span in _shapes()]
    body = _request_of([spans[:3], spans[3:]])
    parsed = ExportTraceServiceRequest.FromString(body)
    assert next(s.name for r in parsed.resource_spans for sc in r.scope_spans for s in sc.spans) == "agent"
    own = span_bytes_of(body, parsed)
    assert own is not None and list(own) == spans and list(own[2:4]) == spans[2:4]
    with_own, without = _rows(parsed, IngestOptions(), own), _rows(ExportTraceServiceRequest.FromString(body),
                                                                     IngestOptions(), None)
    for mine, theirs in zip(with_own[0], without[0], strict=True):
        assert mine[:RAW] + mine[RAW + 1:] == theirs[:RAW] + theirs[RAW + 1:]
        assert Span.FromString(decompress(mine[RAW])) == Span.FromString(decompress(theirs[RAW]))
    stored = [decompress(row[RAW]) for row in with_own[0]]
    assert stored[0] == spans[0] and stored[1] == spans[1]  # unchanged spans: their own bytes
    assert stored[2] != spans[2] and stored[3] != spans[3]  # redacted, cut: serialized again


def test_a_request_in_slices_stores_each_span_with_its_own_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoder_process, "CHUNK_ITEMS", 4)
    spans = [_unusual(make_span(3 + n // 5, 1 + n % 5, None, f"step {n}", {"n": n})) for n in range(23)]
    body = _request_of([spans[:9], spans[9:]])
    for gzipped in (False, True):
        header, _ = protocol.encode_request(1, "traces", json_body=False, gzipped=gzipped, received_ns=RECEIVED,
                                            body=body)
        frames = list(handle(Normalizer(PriceTable.load(), IngestOptions()), header,
                             gzip.compress(body) if gzipped else body, 64 << 20))
        assert len(frames) == 6
        stored = [decompress(row[RAW]) for frame in frames for row in decode_batch(frame)[1]]
        assert stored == spans


def test_the_bytes_come_only_from_a_body_parsed_as_it_is() -> None:
    body = trace_request(_shapes()[:2]).SerializeToString()
    assert decode_body_and_bytes("traces", body, json_body=False, gzipped=False)[2] == body
    assert decode_body_and_bytes("traces", gzip.compress(body), json_body=False, gzipped=True)[2] == body
    as_json = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "0" * 31 + "1", "spanId": "0" * 15 + "1", "name": "x"}]}]}]}).encode()
    assert decode_body_and_bytes("traces", as_json, json_body=True, gzipped=False)[2] is None
    broken = body.replace(b"agent", b"ag\xffnt")  # invalid UTF-8: repaired, then parsed from other bytes
    _message, repaired, parsed_from = decode_body_and_bytes("traces", broken, json_body=False, gzipped=False)
    assert repaired and parsed_from is None
    # Spans the ranges do not account for (not a request the walk reads): no bytes, serialized as before.
    parsed = ExportTraceServiceRequest.FromString(body)
    assert span_bytes_of(body + b"\x0f", parsed) is None
    assert span_bytes_of(body[: len(body) // 2], parsed) is None
    # Bytes of another request, whose spans do not line up with these: none either.
    assert span_bytes_of(trace_request(_shapes()[:3]).SerializeToString(), parsed) is None
