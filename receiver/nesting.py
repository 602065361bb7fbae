"""Cutting attribute values nested too deep to parse, so that one of them cannot refuse a whole batch.

Why: OTLP's AnyValue is recursive (an array or key/value list of AnyValues), and both parsers have a
depth limit. The protobuf runtime (upb) refuses a message nested more than 100 levels: an attribute
32 kvlist levels (or 48 array levels) deep in one span crosses it, and the whole request would get
INVALID_ARGUMENT / HTTP 400, which exporters do not retry, losing every good span with it. The JSON
side has the same kind of limit (json_format.ParseDict at 64 messages, json.loads at the
interpreter's recursion limit).

So when, and only when, the normal parse of a request fails for depth, receiver.otlp calls in here.
Protobuf bodies are rewritten at the wire level, guided by the message descriptors, so one walk
serves traces, logs and metrics and every place an AnyValue can be (resource, scope, span, event,
link, log record, data point and exemplar attributes, log bodies): every AnyValue that would be the
17th nested array/kvlist becomes a string value `MARKER`; all other bytes, unknown fields included,
are copied verbatim, and the request is parsed again. JSON bodies get the same cut on the parsed dict
(`clip_json`), and a text too deep for json.loads is first pruned far below anything OTLP nests
(`prune_json_text`).

The limit, 16 array/kvlist levels: the deepest AnyValue in OTLP sits 9 messages down (an exemplar's
filtered attribute in a histogram data point); each kvlist level adds 3 messages (AnyValue,
KeyValueList, KeyValue), so 16 levels end at 57, under both parsers' limits (64 and 100) wherever the
value is. Real instrumentation nests a handful (a message list: array → kvlist → array of parts →
kvlist). A request the parser accepts is not touched, even with values deeper than 16 (protobuf
takes up to 31 kvlist levels in a span); in a request that had to be rewritten, every value deeper
than 16 is cut, so the result does not depend on where the value sat.

Bounded work on hostile input: the protobuf walk recurses only inside the limit (about 60 Python
frames at most) and skips the content of a value it cuts without reading it; the JSON walks are
iterative. A body nested 10,000 deep costs one linear pass and no deep recursion. Malformed wire
data raises `WireError` with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

from google.protobuf.descriptor import Descriptor, FieldDescriptor

if TYPE_CHECKING:
    from google._upb._message import Descriptor as UpbDescriptor

    # protobuf's C runtime (upb) has a Descriptor class of its own, with the same fields.
    MessageDescriptor: TypeAlias = Descriptor | UpbDescriptor

MAX_VALUE_NESTING = 16
MARKER = f"[truncated: nested deeper than {MAX_VALUE_NESTING} levels]"
MARKER_BYTES = MARKER.encode("utf-8")
# When json.loads cannot follow a text, containers deeper than this are pruned from it: OTLP itself
# needs about 80 (15 to reach an exemplar's attribute value, 4 per kvlist level), so whatever is
# deeper sits inside a value that clip_json cuts anyway, or in a field the parser ignores.
MAX_JSON_DEPTH = 128

_ANY_VALUE = "opentelemetry.proto.common.v1.AnyValue"
_CONTAINER_KEYS = ("arrayValue", "kvlistValue", "array_value", "kvlist_value")


class WireError(ValueError):
    """The protobuf bytes are malformed; the message says where."""


# --- protobuf -------------------------------------------------------------------------------------

# message full name -> {field number: (message descriptor, enters a container)} for the message
# fields that can lead to an AnyValue; other fields are copied without being looked at.
_PLANS: dict[str, dict[int, tuple[MessageDescriptor, bool]]] = {}


def _plan(desc: MessageDescriptor) -> dict[int, tuple[MessageDescriptor, bool]]:
    plan = _PLANS.get(desc.full_name)
    if plan is None:
        _build_plans(desc)
        plan = _PLANS[desc.full_name]
    return plan


def _message_fields(desc: MessageDescriptor) -> Iterator[tuple[int, MessageDescriptor]]:
    """(field number, message type) of each message-typed field of `desc`."""
    for f in desc.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type is not None:
            yield f.number, f.message_type


def _build_plans(root: MessageDescriptor) -> None:
    """Plans for every message type reachable from `root` (iterative: the schema has cycles)."""
    types: dict[str, MessageDescriptor] = {}
    todo = [root]
    while todo:
        desc = todo.pop()
        if desc.full_name in types:
            continue
        types[desc.full_name] = desc
        todo.extend(message for _, message in _message_fields(desc))
    reaches = {name for name in types if name == _ANY_VALUE}
    changed = True
    while changed:
        changed = False
        for name, desc in types.items():
            if name not in reaches and any(message.full_name in reaches for _, message in _message_fields(desc)):
                reaches.add(name)
                changed = True
    for name, desc in types.items():
        _PLANS[name] = {
            number: (message, name == _ANY_VALUE)  # AnyValue's message fields: array, kvlist
            for number, message in _message_fields(desc)
            if message.full_name in reaches
        }


def clip_protobuf(desc: MessageDescriptor, data: bytes, max_nesting: int = MAX_VALUE_NESTING) -> tuple[bytes, int]:
    """`data` (a serialized `desc` message) with every AnyValue nested deeper than `max_nesting`
    array/kvlist levels replaced by MARKER. Returns (bytes, number of values cut); the bytes are
    `data` itself when nothing was cut. Raises WireError on malformed framing."""
    cut = [0]
    out = _walk(data, 0, len(data), desc, 0, max_nesting, cut)
    return (data if out is None else out), cut[0]


def _walk(buf: bytes, start: int, end: int, desc: MessageDescriptor, nesting: int, max_nesting: int,
          cut: list[int]) -> bytes | None:
    """The message in buf[start:end] rewritten, or None when nothing in it changed. Recurses only
    while nesting <= max_nesting, and the schema above AnyValue is shallow: the depth is bounded."""
    plan = _plan(desc)
    pieces: list[bytes] | None = None
    copied = start  # buf[copied:...] is not yet in pieces
    pos = start
    while pos < end:
        field_start = pos
        tag, pos = _varint(buf, pos, end)
        tag_end = pos
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise WireError(f"field number 0 at offset {field_start}")
        if wire_type != 2:
            pos = _skip(buf, pos, end, wire_type, number)
            continue
        length, pos = _varint(buf, pos, end)
        stop = pos + length
        if stop > end:
            raise WireError(f"field {number} at offset {field_start} runs past the end of its message")
        target = plan.get(number)
        if target is not None:
            sub_desc, container = target
            # A value to cut under nesting n needs max - n more container levels of at least 4 bytes
            # each (two tag+length pairs) plus 2 for the container field itself: anything shorter is
            # copied without a look (most scalar attributes).
            if length < 4 * (max_nesting - nesting - container) + 2:
                pos = stop
                continue
            if container and nesting >= max_nesting:
                new: bytes | None = _MARKER_FIELD  # replaces the whole field: the value becomes a string
                cut[0] += 1
            else:
                inner = _walk(buf, pos, stop, sub_desc, nesting + container, max_nesting, cut)
                new = None if inner is None else buf[field_start:tag_end] + _encode_varint(len(inner)) + inner
            if new is not None:
                if pieces is None:
                    pieces = []
                pieces.append(buf[copied:field_start])
                pieces.append(new)
                copied = stop
        pos = stop
    if pos != end:  # pragma: no cover - _skip and _varint never step past `end`
        raise WireError(f"message ends at offset {pos}, not {end}")
    if pieces is None:
        return None
    pieces.append(buf[copied:end])
    return b"".join(pieces)


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError(f"truncated varint at offset {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError(f"varint longer than 10 bytes at offset {pos}")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# What replaces the field holding a cut value: field 1 of AnyValue (string_value), length-delimited.
_MARKER_FIELD = bytes([1 << 3 | 2]) + _encode_varint(len(MARKER_BYTES)) + MARKER_BYTES


def _skip(buf: bytes, pos: int, end: int, wire_type: int, number: int) -> int:
    """Position after a field's value (its tag already read). Groups are skipped iteratively."""
    if wire_type == 0:
        return _varint(buf, pos, end)[1]
    if wire_type == 1 or wire_type == 5:
        pos += 8 if wire_type == 1 else 4
        if pos > end:
            raise WireError(f"fixed-width field {number} runs past the end of its message")
        return pos
    if wire_type == 2:
        length, pos = _varint(buf, pos, end)
        if pos + length > end:
            raise WireError(f"field {number} runs past the end of its message")
        return pos + length
    if wire_type == 3:
        open_groups = [number]
        while open_groups:
            tag, pos = _varint(buf, pos, end)
            inner_number, inner_type = tag >> 3, tag & 7
            if inner_type == 3:
                open_groups.append(inner_number)
            elif inner_type == 4:
                if open_groups.pop() != inner_number:
                    raise WireError(f"group {number} closed by a mismatched end tag")
            else:
                pos = _skip(buf, pos, end, inner_type, inner_number)
        return pos
    if wire_type == 4:
        raise WireError(f"unexpected end-group tag for field {number}")
    raise WireError(f"invalid wire type {wire_type} for field {number}")


# --- JSON -------------------------------------------------------------------------------------------


def clip_json(obj: Any, max_nesting: int = MAX_VALUE_NESTING) -> int:
    """Cut, in place, every OTLP/JSON AnyValue nested deeper than `max_nesting` array/kvlist levels
    (it becomes {"stringValue": MARKER}). Returns the number cut. Iterative."""
    cut = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        node, nesting = stack.pop()
        if isinstance(node, dict):
            if any(isinstance(node.get(key), dict) for key in _CONTAINER_KEYS):
                if nesting >= max_nesting:
                    node.clear()
                    node["stringValue"] = MARKER
                    cut += 1
                    continue
                nesting += 1
            stack.extend((value, nesting) for value in node.values() if isinstance(value, (dict, list)))
        elif isinstance(node, list):
            stack.extend((value, nesting) for value in node if isinstance(value, (dict, list)))
    return cut


# A JSON string (escapes included) or one bracket; everything else is skipped by finditer.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def prune_json_text(text: str, max_depth: int = MAX_JSON_DEPTH) -> tuple[str, int]:
    """`text` with every JSON object or array deeper than `max_depth` replaced by null, so that
    json.loads can parse it. Returns (text, number pruned); iterative, one pass. Unbalanced brackets
    are left for json.loads to report."""
    depth = 0
    pieces: list[str] = []
    copied = 0
    cut_start = -1
    pruned = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token == "[" or token == "{":
            depth += 1
            if depth == max_depth + 1:
                cut_start = match.start()
        elif token == "]" or token == "}":
            if depth == max_depth + 1 and cut_start >= 0:
                pieces.append(text[copied:cut_start])
                pieces.append("null")
                copied = match.end()
                cut_start = -1
                pruned += 1
            depth -= 1
    if not pruned:
        return text, 0
    pieces.append(text[copied:])
    return "".join(pieces), pruned
