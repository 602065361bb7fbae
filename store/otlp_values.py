"""OTLP values as Python values, and stored OTLP as OTLP/JSON: the decoding of what the store keeps
in its blobs (spans, log records, resources are stored as OTLP protobuf), shared by the receiver
(which reads attributes while normalizing) and the read side (which shows them, and exports a trace
as OTLP/JSON). Needs only protobuf messages, no grpc."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message


def any_value(v: Any) -> Any:
    """An OTLP AnyValue as a Python value (structured values become list/dict)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def message_to_otlp_json(msg: Message) -> dict[str, Any]:
    """The OTLP/JSON form of a request: lowerCamelCase, enums as integers, ids as hex."""
    obj = json_format.MessageToDict(msg, use_integers_for_enums=True, preserving_proto_field_name=False)
    _base64_ids_to_hex(obj)
    return obj


def _base64_ids_to_hex(obj: Any) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                try:
                    obj[key] = base64.b64decode(value).hex()
                except (binascii.Error, ValueError):
                    pass
            elif key in ("attributes", "body"):
                continue
            elif isinstance(value, (dict, list)):
                _base64_ids_to_hex(value)
    elif isinstance(obj, list):
        for item in obj:
            _base64_ids_to_hex(item)
