"""One pass over a span's attributes, shared by the decoder (receiver/normalize.py) and the search
indexer (store/content_index.py): each key's class (read its value, prompt or completion text, or a
key `[redaction] drop_keys` removes), the values of the keys read, and the canonical fields those
values fill by priority (the decoder's slots; the indexer has none).

Two implementations give the same result. `store._span_walk` (C, built at install time when a C
compiler is there: hatch_build.py) reads the span's serialized bytes, which the decoder makes anyway
to store the span and the indexer reads back from the store; without it, or for bytes it does not
expect, the loop below reads upb's objects. That loop was the decoder's hottest Python (issue 15):
through upb's wrappers every attribute builds a KeyValue and an AnyValue object and asks the oneof
which field is set. `LLMOBS_PURE_PYTHON=1` turns the compiled walk off (tests run both).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from store import compiled
from store.otlp_values import any_value

KNOWN = 1  # read the value
CONTENT = 2  # prompt/completion text: kept, dropped or redacted as a whole
DROP = 4  # `[redaction] drop_keys`: never read, never stored (exclusive of the others)

_SOURCE = Path(__file__).with_name("_span_walk.c")


def _load_compiled() -> Any:
    # A module built from another source (an editable install whose C changed since) is not used.
    return compiled.load("_span_walk", _SOURCE)


_compiled = _load_compiled()
COMPILED = _compiled is not None


class Unsupported(ValueError):
    """Bytes the compiled walk does not read (never upb's own serialization): use upb's objects."""


_UNSUPPORTED: tuple[type[Exception], ...] = (Unsupported, _compiled.Unsupported) if _compiled else (Unsupported,)


def scalar_value(v: Any) -> Any:
    """any_value() with the common scalar cases first: it runs for every attribute we read."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "bool_value":
        return v.bool_value
    if which is None:
        return None
    return any_value(v)


def walk_python(attributes: Sequence[Any], key_class: Mapping[str, int], classify: Callable[[str], int],
                slots: Mapping[str, tuple[tuple[int, int], ...]], values: list[Any], priorities: list[int],
                found: dict[str, Any], content_indexes: list[int], drop_indexes: list[int]) -> None:
    """The walk over upb's attribute objects (the reference the compiled walk is tested against)."""
    for index, kv in enumerate(attributes):
        key = kv.key
        cls = key_class.get(key)
        if cls is None:
            cls = classify(key)
        if cls:
            if cls == DROP:
                drop_indexes.append(index)
                continue
            if cls & KNOWN:
                value = scalar_value(kv.value)
                found[key] = value
                slot = slots.get(key)
                if slot is not None and value is not None and value != "":
                    for field_index, priority in slot:
                        if priority < priorities[field_index]:
                            priorities[field_index] = priority
                            values[field_index] = value
            if cls & CONTENT:
                content_indexes.append(index)


def walk_attributes(span_bytes: bytes | None, attributes: Sequence[Any], key_class: Mapping[str, int],
         classify: Callable[[str], int], slots: Mapping[str, tuple[tuple[int, int], ...]], values: list[Any],
         priorities: list[int], found: dict[str, Any], content_indexes: list[int], drop_indexes: list[int]) -> None:
    """Fill `values`, `priorities`, `found`, `content_indexes` and `drop_indexes` from the span's
    attributes. `span_bytes` is the span serialized as it is now (None: use the Python walk);
    `values` and `priorities` come in as `[None] * n` and `[no priority] * n`."""
    if span_bytes is not None and _compiled is not None:
        no_priority = priorities[0] if priorities else 0
        try:
            _compiled.walk_attributes(span_bytes, key_class, classify, slots, values, priorities, found,
                                      lambda index: any_value(attributes[index].value), content_indexes,
                                      drop_indexes, KNOWN, CONTENT, DROP)
            return
        except _UNSUPPORTED:
            # Not upb's canonical form (never seen): start again on upb's objects.
            values[:] = [None] * len(values)
            priorities[:] = [no_priority] * len(priorities)
            found.clear()
            del content_indexes[:], drop_indexes[:]
    walk_python(attributes, key_class, classify, slots, values, priorities, found, content_indexes, drop_indexes)


def walk_values(span_bytes: bytes, key_class: Mapping[str, int], classify: Callable[[str], int],
                found: dict[str, Any], complex_value: Callable[[int], Any]) -> None:
    """The compiled walk without slots: `found` gets the value of every key whose class has KNOWN
    (`complex_value(index)` gives a kvlist, bytes, or an array holding more than scalars). Raises
    Unsupported, with `found` partly filled, for bytes it does not read or when the walk is not compiled."""
    if _compiled is None:
        raise Unsupported("the compiled walk is not built")
    try:
        _compiled.walk_attributes(span_bytes, key_class, classify, _NO_SLOTS, [], [], found, complex_value, [], [],
                                  KNOWN, CONTENT, DROP)
    except _compiled.Unsupported as error:
        raise Unsupported(str(error)) from None


def span_ranges(request_bytes: bytes) -> list[tuple[int, int]] | None:
    """(start, end) of each span's bytes in a serialized ExportTraceServiceRequest, in the order upb
    lists the spans it parsed from them; None without the compiled walk, or for bytes it does not read.
    A span's own bytes are what the decoder stores and walks when it changes nothing in the span:
    serializing it again cost upb ~5 µs a span (issue 15)."""
    if _compiled is None:
        return None
    try:
        return _compiled.span_ranges(request_bytes)
    except _compiled.Unsupported:
        return None


def content_events(span_bytes: bytes, names: frozenset[str] | set[str],
                   complex_value: Callable[[int, int], Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(name, time_unix_nano, attributes) of the span's events named in `names`, in order: every
    attribute, as any_value gives it (`complex_value(event_index, attribute_index)` gives a kvlist,
    bytes, or an array holding more than scalars; the index counts every event). Raises Unsupported
    like walk_values."""
    if _compiled is None:
        raise Unsupported("the compiled walk is not built")
    try:
        return list(_compiled.content_events(span_bytes, names, complex_value))
    except _compiled.Unsupported as error:
        raise Unsupported(str(error)) from None


_NO_SLOTS: dict[str, tuple[tuple[int, int], ...]] = {}
