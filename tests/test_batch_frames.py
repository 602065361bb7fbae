"""The decoder → writer batch frame (receiver/protocol.encode_batch, store/writer_process.decode_batch):
marshal when every value is a built-in type, pickle otherwise, and the writer reads back exactly what the
decoder built, types included, for spans, log records and metric points."""

from __future__ import annotations

import dataclasses
import enum
import time

from receiver import protocol
from receiver.decoder_process import handle
from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store.writer_process import decode_batch
from tests.metrics_factory import serving_requests
from tests.otlp_factory import log_record, logs_request, make_span, trace_request

S = 10**9


def _typed(value: object) -> object:
    """The value with the exact type of every element spelled out (1 == True == 1.0 in Python)."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(v) for v in value])
    if isinstance(value, dict):
        return ("dict", sorted((repr(_typed(k)), _typed(v)) for k, v in value.items()))
    return (type(value).__name__, value)


def _frames(signal: str, body: bytes) -> list[bytes]:
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    header, _ = protocol.encode_request(7, signal, json_body=False, gzipped=False, received_ns=time.time_ns(),
                                        body=body)
    frames = list(handle(normalizer, header, body, 64 << 20))
    assert frames and all(frame[:1] == protocol.TAG_BATCH for frame in frames)
    return frames


def _expected(signal: str, request: object) -> tuple:
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    if signal == "traces":
        spans, resources, scopes, _ = normalizer.decode_traces(request, time.time_ns())
        return spans, [], resources, scopes
    logs, resources, scopes, _ = normalizer.decode_logs(request, time.time_ns())
    return [], logs, resources, scopes


def test_spans_and_log_records_reach_the_writer_as_the_decoder_built_them() -> None:
    now = time.time_ns()
    spans = [
        make_span(1, 1, None, "agent", {"gen_ai.operation.name": "invoke_agent", "user.id": "u1"}, start_ns=now),
        make_span(1, 2, 1, "chat gpt-4o", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30, "gen_ai.request.temperature": 0.2,
            "gen_ai.request.stream": True, "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "héllo"}]}]'},
            start_ns=now + S, status_code=2, status_message="boom",
            events=[("exception", now + 2 * S, {"exception.type": "RateLimitError"})]),
    ]
    logs = [log_record(1, 2, "gen_ai.choice", {"finish_reason": "stop", "message": {"content": "hi"}}, time_ns=now),
            log_record(None, None, "", "an app's line", time_ns=now)]
    for signal, request in (("traces", trace_request(spans)), ("logs", logs_request(logs))):
        (frame,) = _frames(signal, request.SerializeToString())
        assert frame[9:10] == protocol.FORMAT_MARSHAL  # the fast path is the one taken
        batch = decode_batch(frame)
        assert batch[0] == 7 and batch[7] is True
        got, want = batch[1:5], _expected(signal, request)
        # Rows equal, value by value and type by type (the writer fills lists in place: lists stay lists).
        assert [_typed(part) for part in got[:2]] == [_typed(part) for part in want[:2]]
        assert _typed(got[2]) == _typed(want[2]) and _typed(got[3]) == _typed(want[3])
        assert got[0] or got[1]


def test_metric_points_reach_the_writer_as_the_decoder_built_them() -> None:
    request = serving_requests(time.time(), minutes=2)[0]
    (frame,) = _frames("metrics", request.SerializeToString())
    assert frame[9:10] == protocol.FORMAT_MARSHAL
    batch = decode_batch(frame)
    from receiver.metrics_normalize import decode_metrics

    rows, _ = decode_metrics(request, 0)
    assert len(batch) == 9 and len(batch[8]) == len(rows) > 0
    assert [_typed(row[:3]) for row in batch[8]] == [_typed(row[:3]) for row in rows]


class Level(enum.IntEnum):
    HIGH = 3


class Label(str):
    pass


@dataclasses.dataclass(frozen=True)
class Point:
    x: int


def test_a_payload_marshal_refuses_goes_by_pickle_with_its_types() -> None:
    for odd in (Level.HIGH, Label("x"), {1, 2, frozenset({3})}, Point(1)):
        payload = (9, [[None, 1, 2.5, "s", b"b", odd]], [], {}, {}, 0, "", True)
        frame = protocol.encode_batch(payload)
        assert frame[9:10] == (protocol.FORMAT_MARSHAL if type(odd) is set else protocol.FORMAT_PICKLE)
        assert protocol.batch_request_id(frame) == 9
        batch = decode_batch(frame)
        assert batch == payload and type(batch[1][0][5]) is type(odd)
