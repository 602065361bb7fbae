"""Turning OTLP request bodies (protobuf or JSON, maybe gzip) into protobuf messages.

Pure functions of bytes; no server or store imports. Every failure raises `OtlpDecodeError` with a
reason a user can act on, which the servers return as gRPC INVALID_ARGUMENT / HTTP 400.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from receiver import nesting
from store.otlp_values import message_to_otlp_json  # noqa: F401  (re-exported)

SIGNAL_REQUESTS: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "logs": ExportLogsServiceRequest,
    "metrics": ExportMetricsServiceRequest,
}
# A decompressed body larger than this is refused (a gzip bomb cannot exhaust memory).
DEFAULT_MAX_BODY_BYTES = 128 << 20
# The second value parse_protobuf / parse_json / decode_body return: False when the body parsed as
# it was, else a bitmask of these. Invalid UTF-8 alone gives True (== REPAIRED_UTF8), as before.
REPAIRED_UTF8 = 1  # invalid UTF-8 replaced with U+FFFD
REPAIRED_NESTING = 2  # values nested too deep to parse replaced with nesting.MARKER


class OtlpDecodeError(ValueError):
    """The request body is not valid OTLP; the message says why."""


def gunzip(data: bytes, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
    decompressor = zlib.decompressobj(wbits=31)  # gzip container
    try:
        out = decompressor.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise OtlpDecodeError(f"body is not valid gzip: {exc}") from exc
    if len(out) > max_bytes or decompressor.unconsumed_tail:
        raise OtlpDecodeError(f"decompressed body exceeds the {max_bytes >> 20} MiB limit")
    if not decompressor.eof:
        raise OtlpDecodeError("gzip body is truncated")
    return out


def parse_protobuf(signal: str, data: bytes) -> tuple[Message, int]:
    """Parse a protobuf request. Returns (message, repairs): False, or REPAIRED_* bits."""
    cls = SIGNAL_REQUESTS[signal]
    msg = cls()
    try:
        msg.ParseFromString(data)
        return msg, False
    except DecodeError as exc:
        error = exc
    clipped = False
    if _too_deep(error):
        # One attribute nested past the runtime's depth limit would otherwise lose the whole batch:
        # cut the too-deep values at the wire level (receiver.nesting) and parse again.
        data = _clip_protobuf(cls, data, error)
        clipped = True
        msg = cls()
        try:
            msg.ParseFromString(data)
            return msg, REPAIRED_NESTING
        except DecodeError as exc:
            error = exc
    if "UTF-8" not in str(error):
        raise OtlpDecodeError(f"malformed protobuf {cls.DESCRIPTOR.name}: {error}") from error
    # One bad string would otherwise lose the whole batch: re-read it with strings as bytes,
    # replace invalid sequences with U+FFFD, and parse again.
    msg, clipped = _parse_with_utf8_repair(signal, data, clipped)
    return msg, (REPAIRED_UTF8 | REPAIRED_NESTING) if clipped else True


def _too_deep(error: DecodeError) -> bool:
    """The parse failed on the nesting limit (upb: "Exceeded upb_DecodeOptions_MaxDepth"; the pure
    Python runtime: "too many levels of nesting")."""
    text = str(error)
    return "MaxDepth" in text or "levels of nesting" in text


def _clip_protobuf(cls: type[Message], data: bytes, error: DecodeError) -> bytes:
    try:
        clipped, cut = nesting.clip_protobuf(cls.DESCRIPTOR, data)
    except nesting.WireError as exc:
        raise OtlpDecodeError(f"malformed protobuf {cls.DESCRIPTOR.name}: {exc}") from exc
    if not cut:  # too deep somewhere other than an attribute value: nothing we can cut
        raise OtlpDecodeError(f"malformed protobuf {cls.DESCRIPTOR.name}: nested too deeply ({error})") from error
    return clipped


def parse_json(signal: str, data: bytes) -> tuple[Message, int]:
    """Parse an OTLP/JSON request (hex trace/span ids, int64 as strings). Returns (message, repairs):
    False, or REPAIRED_* bits."""
    repaired = False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        repaired = True
    clipped = False
    try:
        obj = json.loads(text)
    except RecursionError:
        # Nested deeper than json.loads can follow: prune far below anything OTLP nests, then the
        # too-deep values are cut below like any other.
        text, pruned = nesting.prune_json_text(text)
        if not pruned:
            raise OtlpDecodeError("malformed JSON: nested too deeply") from None
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise OtlpDecodeError(f"malformed JSON: {exc}") from exc
        clipped = True
    except json.JSONDecodeError as exc:
        raise OtlpDecodeError(f"malformed JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise OtlpDecodeError("JSON body must be an object")
    try:
        _hex_ids_to_base64(obj, signal)
        if clipped:
            nesting.clip_json(obj)
        msg = SIGNAL_REQUESTS[signal]()
        try:
            json_format.ParseDict(obj, msg, ignore_unknown_fields=True, max_recursion_depth=64)
        except json_format.ParseError as exc:
            if clipped or "too deep" not in str(exc) or not nesting.clip_json(obj):
                raise
            # An attribute nested past the limit: cut it (and any other too-deep value), parse again.
            clipped = True
            msg = SIGNAL_REQUESTS[signal]()
            json_format.ParseDict(obj, msg, ignore_unknown_fields=True, max_recursion_depth=64)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise OtlpDecodeError(f"invalid OTLP/JSON {signal} request: {exc}") from exc
    if clipped:
        return msg, REPAIRED_NESTING | (REPAIRED_UTF8 if repaired else 0)
    return msg, repaired


_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids_to_base64(obj: Any, signal: str, depth: int = 0) -> None:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping expects base64 for bytes fields."""
    if depth > 12:
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in _ID_FIELDS and isinstance(value, str):
                if value == "":
                    continue
                try:
                    raw = bytes.fromhex(value)
                except ValueError as exc:
                    raise OtlpDecodeError(f"{key} {value[:40]!r} is not hex") from exc
                obj[key] = base64.b64encode(raw).decode("ascii")
            elif key in ("attributes", "body", "value", "values", "kvlistValue", "arrayValue"):
                # Attribute values never hold ids: don't rewrite user data that happens to be named spanId.
                continue
            elif isinstance(value, (dict, list)):
                _hex_ids_to_base64(value, signal, depth + 1)
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)):
                _hex_ids_to_base64(item, signal, depth + 1)


def to_any_value(value: Any) -> Any:
    """A Python value as an OTLP AnyValue (list/tuple → array, mapping → kvlist); the inverse of
    receiver.normalize.any_value."""
    from collections.abc import Mapping

    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    out = AnyValue()
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, (list, tuple)):
        out.array_value.values.extend(to_any_value(v) for v in value)
    elif isinstance(value, Mapping):
        out.kvlist_value.values.extend(KeyValue(key=k, value=to_any_value(v)) for k, v in value.items())
    elif value is not None:
        raise TypeError(f"cannot encode {type(value).__name__} as an OTLP AnyValue")
    return out


# --- invalid UTF-8 repair ------------------------------------------------------------------------

_LENIENT: dict[str, type[Message]] = {}
_STRING_FIELDS: dict[str, frozenset[str]] = {}  # lenient message full name -> fields that were strings


def _lenient_class(signal: str) -> type[Message]:
    """A copy of the OTLP schema whose string fields are bytes: parses whatever the bytes are."""
    if not _LENIENT:
        pool = descriptor_pool.DescriptorPool()
        seen: set[str] = set()
        roots = [cls.DESCRIPTOR.file for cls in SIGNAL_REQUESTS.values()]

        def add(file_desc: Any) -> None:
            if file_desc.name in seen:
                return
            for dep in file_desc.dependencies:
                add(dep)
            seen.add(file_desc.name)
            proto = descriptor_pb2.FileDescriptorProto()
            file_desc.CopyToProto(proto)
            proto.name = "lenient/" + proto.name
            proto.package = "lenient." + proto.package
            proto.dependency[:] = ["lenient/" + d for d in proto.dependency]
            proto.ClearField("options")
            proto.ClearField("service")  # services are not needed to parse messages
            for message_type in proto.message_type:
                _make_lenient(message_type, proto.package)
            pool.Add(proto)

        for root in roots:
            add(root)
        for sig, cls in SIGNAL_REQUESTS.items():
            desc = pool.FindMessageTypeByName("lenient." + cls.DESCRIPTOR.full_name)
            _LENIENT[sig] = message_factory.GetMessageClass(desc)
    return _LENIENT[signal]


def _make_lenient(message_type: descriptor_pb2.DescriptorProto, package: str) -> None:
    full_name = f"{package}.{message_type.name}"
    strings = set()
    for field in message_type.field:
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            strings.add(field.name)
        if field.type_name.startswith(".opentelemetry."):
            field.type_name = ".lenient" + field.type_name
        field.ClearField("options")
    message_type.ClearField("options")
    _STRING_FIELDS[full_name] = frozenset(strings)
    for nested in message_type.nested_type:
        _make_lenient(nested, full_name)


def _repair(msg: Message, depth: int = 0) -> None:
    # Bounded past the runtime's own limit (100 messages): a bad string at any depth that parsed is
    # repaired, else the strict re-parse below would refuse the whole request.
    if depth > 128:
        return
    strings = _STRING_FIELDS.get(msg.DESCRIPTOR.full_name, frozenset())
    for field, value in msg.ListFields():
        if field.name in strings:
            if field.is_repeated:
                fixed = [v.decode("utf-8", errors="replace").encode("utf-8") for v in value]
                del value[:]
                value.extend(fixed)
            else:
                setattr(msg, field.name, value.decode("utf-8", errors="replace").encode("utf-8"))
        elif field.message_type is not None:
            if field.is_repeated:
                if field.message_type.GetOptions().map_entry:
                    continue
                for item in value:
                    _repair(item, depth + 1)
            else:
                _repair(value, depth + 1)


def _parse_with_utf8_repair(signal: str, data: bytes, clipped: bool) -> tuple[Message, bool]:
    """The request with invalid UTF-8 replaced; and whether too-deep values had to be cut."""
    lenient = _lenient_class(signal)()
    try:
        lenient.ParseFromString(data)
    except DecodeError as exc:
        if clipped or not _too_deep(exc):
            raise OtlpDecodeError(f"malformed protobuf {signal} request: {exc}") from exc
        # The strict parser stopped at the bad string before reaching the deep value.
        data = _clip_protobuf(SIGNAL_REQUESTS[signal], data, exc)
        clipped = True
        lenient = _lenient_class(signal)()
        try:
            lenient.ParseFromString(data)
        except DecodeError as exc2:
            raise OtlpDecodeError(f"malformed protobuf {signal} request: {exc2}") from exc2
    _repair(lenient)
    strict = SIGNAL_REQUESTS[signal]()
    try:
        strict.ParseFromString(lenient.SerializeToString())
    except DecodeError as exc:  # pragma: no cover - the repair makes every string valid
        raise OtlpDecodeError(f"malformed protobuf {signal} request: {exc}") from exc
    return strict, clipped


def decode_body(signal: str, data: bytes, *, json_body: bool, gzipped: bool,
                max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> tuple[Message, int]:
    """Decode one request body into its protobuf message. Returns (message, repairs): False when
    the body parsed as it was, True when invalid UTF-8 was replaced, else a bitmask of REPAIRED_*
    (REPAIRED_NESTING: values nested deeper than nesting.MAX_VALUE_NESTING were cut). The normalizer
    takes it as `utf8_repaired` and flags the spans it touched."""
    message, repairs, _ = decode_body_and_bytes(signal, data, json_body=json_body, gzipped=gzipped,
                                                max_bytes=max_bytes)
    return message, repairs


def decode_body_and_bytes(signal: str, data: bytes, *, json_body: bool, gzipped: bool,
                          max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> tuple[Message, int, bytes | None]:
    """decode_body, and the protobuf bytes the message was parsed from when it was parsed from them as
    they are (None for JSON, or after a repair): the decoder stores each unchanged span's own bytes."""
    if signal not in SIGNAL_REQUESTS:
        raise OtlpDecodeError(f"unknown signal {signal!r}")
    if gzipped:
        data = gunzip(data, max_bytes)
    elif len(data) > max_bytes:
        raise OtlpDecodeError(f"body exceeds the {max_bytes >> 20} MiB limit")
    if json_body:
        return (*parse_json(signal, data), None)
    message, repairs = parse_protobuf(signal, data)
    return message, repairs, None if repairs else data
