"""store/span_walk.py: the compiled attribute walk (store/_span_walk.c) gives what the Python
walk over upb's objects gives, for any span upb can serialize; input it does not expect falls back
to the Python walk with clean containers; no bytes crash it; and the decoder's rows are the same
with and without it."""

from __future__ import annotations

import math
import shlex
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver import normalize
from receiver import semconv as sc
from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store import content_index, span_walk
from store.content import CONTENT_EVENTS

INDEXED_KEYS = content_index._INDEXED_KEYS
compiled = pytest.mark.skipif(not span_walk.COMPILED, reason="store._span_walk is not built here")
PRICES = PriceTable.load()
NO_PRIORITY = 1 << 30


def _normalizer(**options: Any) -> Normalizer:
    return Normalizer(PRICES, IngestOptions(**options))


_PLAIN = _normalizer()
KEYS = sorted(_PLAIN._slots)[:60] + sorted(sc.CONTENT_KEYS)[:10] + sorted(INDEXED_KEYS) + [
    "retrieval.documents.0.document.content", "gen_ai.input.messages", "gen_ai.output.messages",
    "gen_ai.prompt.0.content", "llm.input_messages.3.message.content", "app.customer.ssn",
    "http.request.header.cookie", "", "ключ", "a\x00b", "service.name", "x" * 300]


def any_values(depth: int = 2) -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        st.builds(lambda s: AnyValue(string_value=s), st.text(max_size=40)),
        st.builds(lambda b: AnyValue(bool_value=b), st.booleans()),
        st.builds(lambda i: AnyValue(int_value=i), st.integers(-(2**63), 2**63 - 1)),
        st.builds(lambda d: AnyValue(double_value=d), st.floats(allow_nan=True, allow_infinity=True)),
        st.builds(lambda b: AnyValue(bytes_value=b), st.binary(max_size=16)),
        st.just(AnyValue()),
    )
    if depth == 0:
        return scalars

    def array(values: list[AnyValue]) -> AnyValue:
        v = AnyValue()
        v.array_value.values.extend(values)
        return v

    def kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
        v = AnyValue()
        v.kvlist_value.values.extend(KeyValue(key=k, value=x) for k, x in pairs)
        return v

    inner = any_values(depth - 1)
    return st.one_of(scalars, st.builds(array, st.lists(inner, max_size=3)),
                     st.builds(kvlist, st.lists(st.tuples(st.text(max_size=8), inner), max_size=3)))


def key_values() -> st.SearchStrategy[KeyValue]:
    key = st.one_of(st.sampled_from(KEYS), st.text(max_size=30))
    with_value = st.builds(lambda k, v: KeyValue(key=k, value=v), key, any_values())
    return st.one_of(with_value, st.builds(lambda k: KeyValue(key=k), key))  # no value at all


@st.composite
def spans(draw: st.DrawFn) -> Span:
    span = Span(trace_id=draw(st.binary(min_size=16, max_size=16)), span_id=draw(st.binary(min_size=8, max_size=8)),
                name=draw(st.text(max_size=20)), start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
                kind=draw(st.integers(0, 5)))
    span.attributes.extend(draw(st.lists(key_values(), max_size=30)))
    for _ in range(draw(st.integers(0, 2))):
        event = span.events.add(name=draw(st.one_of(st.text(max_size=10), st.sampled_from(sorted(CONTENT_EVENTS)))),
                                time_unix_nano=draw(st.integers(0, 2**64 - 1)))
        event.attributes.extend(draw(st.lists(key_values(), max_size=3)))
    if draw(st.booleans()):  # fixed32, varint and length-delimited fields around the attributes
        span.flags = draw(st.integers(0, 2**32 - 1))
        span.dropped_attributes_count = draw(st.integers(0, 2**32 - 1))
        span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8).attributes.extend(draw(st.lists(key_values(),
                                                                                                   max_size=2)))
    if draw(st.booleans()):
        span.status.code = 2
        span.status.message = draw(st.text(max_size=10))
    return span


def _comparable(value: Any) -> Any:
    """The value with its type, NaN equal to itself (True == 1 in Python, not here)."""
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    if isinstance(value, list):
        return ("list", [_comparable(v) for v in value])
    if isinstance(value, dict):
        return ("dict", {k: _comparable(v) for k, v in value.items()})
    return (type(value).__name__, value)


def _walked(normalizer: Normalizer, span: Span, compiled_walk: bool) -> tuple:
    values: list[Any] = [None] * normalize._N_FIELDS
    priorities = [NO_PRIORITY] * normalize._N_FIELDS
    found: dict[str, Any] = {}
    content: list[int] = []
    drop: list[int] = []
    if compiled_walk:  # called directly: upb's own bytes must never be refused (no fallback hides it)
        span_walk._compiled.walk_attributes(
            span.SerializeToString(), normalizer._key_class, normalizer._classify_key, normalizer._slots, values,
            priorities, found, lambda index: normalize.any_value(span.attributes[index].value), content, drop,
            span_walk.KNOWN, span_walk.CONTENT, span_walk.DROP)
    else:
        span_walk.walk_python(span.attributes, normalizer._key_class, normalizer._classify_key, normalizer._slots,
                              values, priorities, found, content, drop)
    return ([_comparable(v) for v in values], priorities, {k: _comparable(v) for k, v in found.items()},
            content, drop)


@compiled
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(span=spans(), dropping=st.booleans())
def test_the_compiled_walk_gives_what_the_python_walk_gives(span: Span, dropping: bool) -> None:
    options = {"drop_keys": ("app.customer.ssn", "http.request.header.*", "gen_ai.prompt.*")} if dropping else {}
    reference = _walked(_normalizer(**options), span, compiled_walk=False)
    assert _walked(_normalizer(**options), span, compiled_walk=True) == reference


def _kv_bytes(key: bytes, value: bytes | None) -> bytes:
    body = b"\x0a" + bytes([len(key)]) + key
    if value is not None:
        body += b"\x12" + bytes([len(value)]) + value
    return b"\x4a" + bytes([len(body)]) + body  # Span field 9 (attributes), length-delimited


# Bytes upb never writes for a span it parsed: each must send the walk back to upb's objects.
ODD_SPANS = {
    "key twice": b"\x4a\x0c\x0a\x04name\x0a\x04name",
    "two oneof members": _kv_bytes(b"gen_ai.request.model", b"\x0a\x01a\x18\x05"),
    "string as a varint": _kv_bytes(b"gen_ai.request.model", b"\x08\x05"),
    "a group": b"\x4b\x4c",
    "truncated length": b"\x4a\x7f\x0a",
    "varint past 64 bits": _kv_bytes(b"gen_ai.usage.input_tokens", b"\x18" + b"\xff" * 10 + b"\x01"),
    "key not UTF-8": _kv_bytes(b"\xff\xfe", b"\x0a\x01a"),
    "value not UTF-8": _kv_bytes(b"gen_ai.request.model", b"\x0a\x02\xc3\x28"),
    "tag field 0": b"\x02\x00",
}


@compiled
@pytest.mark.parametrize("odd", sorted(ODD_SPANS))
def test_bytes_upb_never_writes_are_refused_and_walked_in_python(odd: str) -> None:
    blob = ODD_SPANS[odd]
    with pytest.raises(span_walk._compiled.Unsupported):
        span_walk._compiled.walk_attributes(blob, {}, lambda key: 1, {}, [None], [NO_PRIORITY], {},
                                            lambda index: None, [], [], 1, 2, 4)
    # Through walk_attributes, the odd bytes after good attributes: what the C walk put in the
    # containers before it gave up is gone, and the result is the Python walk's over upb's objects.
    span = Span()
    span.attributes.add(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o"))
    span.attributes.add(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=7))
    span.attributes.add(key="gen_ai.prompt", value=AnyValue(string_value="hello"))
    values: list[Any] = [None] * normalize._N_FIELDS
    priorities = [NO_PRIORITY] * normalize._N_FIELDS
    found: dict[str, Any] = {}
    content: list[int] = []
    drop: list[int] = []
    stray = _kv_bytes(b"gen_ai.response.model", b"\x0a\x01z")  # in the bytes, not in upb's objects
    span_walk.walk_attributes(span.SerializeToString() + stray + blob, span.attributes, _PLAIN._key_class,
                              _PLAIN._classify_key, _PLAIN._slots, values, priorities, found, content, drop)
    assert (values, priorities, found, content, drop) == tuple(
        [v[1] for v in x] if i == 0 else ({k: v[1] for k, v in x.items()} if i == 2 else x)
        for i, x in enumerate(_walked(_PLAIN, span, compiled_walk=False)))


def _walks_or_refuses(blob: bytes) -> None:
    try:
        count = span_walk._compiled.walk_attributes(
            blob, {}, lambda key: 3, {"k": ((0, 1),)}, [None], [NO_PRIORITY], {}, lambda index: [index], [], [],
            1, 2, 4)
        assert count >= 0
    except span_walk._compiled.Unsupported:
        pass
    try:
        events = span_walk._compiled.content_events(blob, frozenset(["", "gen_ai.content.prompt"]),
                                                    lambda event, index: [event, index])
        assert all(isinstance(attributes, dict) for _name, _time, attributes in events)
    except span_walk._compiled.Unsupported:
        pass


@compiled
@settings(max_examples=500, deadline=None)
@given(blob=st.binary(max_size=300))
@example(blob=b"")
@example(blob=b"\x4a\x00")
@example(blob=b"\x4a\x04\x12\x02\x21\x00")
def test_no_bytes_crash_the_compiled_walk(blob: bytes) -> None:
    _walks_or_refuses(blob)


@compiled
def test_no_cut_or_changed_byte_of_a_real_span_crashes_the_compiled_walk() -> None:
    """Every prefix of real spans (an agent's LLM call, a heavy one with events), and each of their bytes
    set to 0x00, 0x7f, 0x80 and 0xff: the walk returns a count or refuses, never reads past the end."""
    from bench.ingest import Template, trace_prefix

    blobs = []
    for heavy in (False, True):
        request = ExportTraceServiceRequest.FromString(
            Template(1, 1, heavy).render(trace_prefix(1, 7, b"\x00\x00\x00\x01"), b"\xa0\x01", 10**18))
        found = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans
                 if len(span.attributes) > 10]
        blobs.append(found[0].SerializeToString())
    for blob in blobs:
        for cut in range(len(blob)):
            _walks_or_refuses(blob[:cut])
        for at in range(len(blob)):
            for byte in (0x00, 0x7F, 0x80, 0xFF):
                _walks_or_refuses(blob[:at] + bytes([byte]) + blob[at + 1:])


def _rows(requests: list[bytes], compiled_walk: bool, **options: Any) -> list:
    saved = normalize.COMPILED_WALK
    normalize.COMPILED_WALK = compiled_walk
    try:
        normalizer = _normalizer(**options)
        out = []
        for body in requests:
            rows, resources, scopes, rejections = normalizer.decode_traces(
                ExportTraceServiceRequest.FromString(body), 1_800_000_000 * 10**9)
            out.append(([[_comparable(v) for v in row] for row in rows], resources, scopes, rejections.reasons))
        return out
    finally:
        normalize.COMPILED_WALK = saved


OPTIONS = [{}, {"drop_keys": ("gen_ai.prompt.*", "app.customer.ssn")}, {"keep_content": False},
           {"max_attr_bytes": 300}]


@compiled
@pytest.mark.parametrize("options", OPTIONS)
def test_the_decoders_rows_are_the_same_with_and_without_the_compiled_walk(options: dict) -> None:
    from bench.ingest import Template, trace_prefix

    requests = [Template(seed, 8, heavy).render(trace_prefix(seed, 7, b"\x00\x00\x00\x01"), b"\xa0\x01",
                                                1_800_000_000 * 10**9 - 10**9)
                for seed in range(4) for heavy in (False, True)]
    compiled_rows = _rows(requests, True, **options)
    assert compiled_rows == _rows(requests, False, **options)
    assert sum(len(rows) for rows, *_ in compiled_rows) > 100


@compiled
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=st.lists(spans(), min_size=1, max_size=12), options=st.sampled_from(OPTIONS))
def test_drawn_spans_give_the_same_rows_with_and_without_the_compiled_walk(drawn: list[Span], options: dict) -> None:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n, span in enumerate(drawn):
        span.trace_id = bytes([n + 1]) * 16
        span.span_id = bytes([n + 1]) * 8
        scope.spans.append(span)
    body = request.SerializeToString()
    assert _rows([body], True, **options) == _rows([body], False, **options)


def _can_compile() -> bool:
    """What hatch_build.py needs: the interpreter's C compiler and its Python.h."""
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    return bool(compiler) and shutil.which(compiler[0]) is not None and (
        Path(sysconfig.get_paths()["include"]) / "Python.h").exists()


@pytest.mark.skipif(not _can_compile(), reason="no C compiler or no Python headers on this machine")
def test_the_compiled_walk_is_built_where_a_c_compiler_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """An install on a machine with a compiler must not fall back to Python unnoticed (hatch_build.py)."""
    import os

    if os.environ.get("LLMOBS_PURE_PYTHON"):
        pytest.skip("LLMOBS_PURE_PYTHON is set")
    assert span_walk.COMPILED
    monkeypatch.setenv("LLMOBS_PURE_PYTHON", "1")
    assert span_walk._load_compiled() is None


@compiled
def test_a_module_built_from_another_source_is_not_used(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An editable install keeps the module it built; once the C beside it changes, the Python walk runs."""
    monkeypatch.delenv("LLMOBS_PURE_PYTHON", raising=False)
    assert span_walk._load_compiled() is not None
    changed = tmp_path / "_span_walk.c"
    changed.write_bytes(span_walk._SOURCE.read_bytes() + b"\n/* changed */\n")
    monkeypatch.setattr(span_walk, "_SOURCE", changed)
    assert span_walk._load_compiled() is None
    monkeypatch.setattr(span_walk, "_SOURCE", tmp_path / "absent.c")  # a wheel without its source
    assert span_walk._load_compiled() is not None


def _searchable(span: Span, kind: str, compiled_walk: bool) -> str:
    import zstandard

    saved = span_walk.COMPILED
    span_walk.COMPILED = compiled_walk and saved
    try:
        return content_index.searchable_span_text(zstandard.ZstdCompressor().compress(span.SerializeToString()), kind)
    finally:
        span_walk.COMPILED = saved


@compiled
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(span=spans(), kind=st.sampled_from(["llm", "tool", "retrieval", "agent"]))
def test_the_indexer_reads_the_same_text_through_the_compiled_walk(span: Span, kind: str) -> None:
    data = span.SerializeToString()
    walked, parsed = content_index._walked_content(data), content_index._parsed_content(data)
    assert {k: _comparable(v) for k, v in walked[0].items()} == {k: _comparable(v) for k, v in parsed[0].items()}
    assert walked[1] == parsed[1]
    assert _searchable(span, kind, True) == _searchable(span, kind, False)


@compiled
def test_the_indexer_reads_bench_spans_the_same_through_the_compiled_walk() -> None:
    from bench.ingest import Template, trace_prefix

    texts = 0
    for heavy in (False, True):
        request = ExportTraceServiceRequest.FromString(
            Template(2, 4, heavy).render(trace_prefix(2, 7, b"\x00\x00\x00\x01"), b"\xa0\x01", 10**18))
        for span in (s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans):
            for kind in ("llm", "tool"):
                text = _searchable(span, kind, True)
                assert text == _searchable(span, kind, False)
                texts += bool(text)
    assert texts > 20


@compiled
def test_a_span_the_compiled_walk_refuses_is_indexed_through_upb() -> None:
    import zstandard

    span = Span(name="call")
    span.attributes.add(key="gen_ai.prompt", value=AnyValue(string_value="where is my refund"))
    odd = span.SerializeToString() + _kv_bytes(b"ai.response.text", b"\x0a\x01a\x18\x05")  # two oneof members
    raw = zstandard.ZstdCompressor().compress(odd)
    with pytest.raises(span_walk.Unsupported):
        content_index._walked_content(odd)
    # upb keeps the oneof's last member: the text is the one the pure path reads.
    assert content_index.searchable_span_text(raw, "llm") == content_index.span_text(
        "llm", *content_index._parsed_content(odd)) == "5"
    assert content_index.searchable_span_text(zstandard.ZstdCompressor().compress(b"\xff\xff"), "llm") == ""
