"""Search inside one trace (`/` on the Trace screen): which spans mention a text, and where.

A span matches when the text occurs, as plain text in any case, in its name, an attribute's key or
value, an event or log record, or its content (prompts, completions, tool arguments and results).
Pure and Textual-free: the screen reads the spans' details (StoreReader.span_details) and hands
them here. Plain text, never a regular expression: a typed `(` or `[` is a character to find, not
a pattern that fails to compile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from store.content import Message, Part
from store.content_index import text_of
from store.dashboards import SpanRow
from store.span_detail import SpanDetail

# Content is decoded for at most this many spans of a trace (the first by start time); names are
# matched in all of them. Decoding costs ~0.2 ms a span, so this bounds a search's wait near 0.5 s.
MAX_CONTENT_SPANS = 2000
# One field's text is searched up to this many characters: a 10 MB tool result must not make
# every keystroke of a search slow.
MAX_FIELD_CHARS = 200_000


@dataclass(frozen=True, slots=True)
class SpanText:
    """The searchable text of one span beyond its name: (where, text folded for matching) pairs,
    content first, so that a match is reported where a person would look for it."""

    fields: tuple[tuple[str, str], ...]


def _fold(text: str) -> str:
    return text[:MAX_FIELD_CHARS].casefold()


def value_text(value: Any) -> str:
    """An attribute or payload value as the text a search looks at: what the full-text index reads."""
    return text_of(value)


def part_text(part: Part) -> str:
    """One message part as text: its words, or a tool call's name and arguments, or a tool result."""
    if part.type == "tool_call":
        return f"{part.name or ''} {value_text(part.arguments)}".strip()
    if part.type == "tool_call_response":
        return value_text(part.response)
    if part.text is not None:
        return part.text
    return value_text(part.raw)


def message_text(message: Message) -> str:
    """A message's parts as lines of text (what a prompt diff compares and a search looks in)."""
    return "\n".join(text for text in (part_text(part) for part in message.parts) if text)


def span_text(detail: SpanDetail) -> SpanText:
    fields: list[tuple[str, str]] = []
    for message in detail.messages:
        fields.append((f"{message.role} message", _fold(message_text(message))))
    arguments, result = detail.tool_io
    if arguments is not None:
        fields.append(("tool arguments", _fold(value_text(arguments))))
    if result is not None:
        fields.append(("tool result", _fold(value_text(result))))
    for attribute in detail.attributes:
        fields.append((f"attribute {attribute.key}", _fold(f"{attribute.key}\n{value_text(attribute.value)}")))
    for name, _time_ns, attrs in detail.events:
        fields.append((f"event {name}", _fold(_mapping_text(name, attrs))))
    for name, _time_ns, attrs, body in detail.logs:
        fields.append((f"log {name}", _fold(_mapping_text(name, attrs) + "\n" + value_text(body))))
    return SpanText(tuple(fields))


def _mapping_text(name: str, attrs: Mapping[str, Any]) -> str:
    return "\n".join([name, *(f"{key}\n{value_text(value)}" for key, value in attrs.items())])


def span_texts(details: Iterable[SpanDetail]) -> dict[bytes, SpanText]:
    return {detail.span.span_id: span_text(detail) for detail in details}


def find_matches(query: str, spans: Sequence[SpanRow], texts: Mapping[bytes, SpanText]) -> dict[bytes, str]:
    """The spans that mention `query` (case-insensitive plain text), each with where it was found
    first: "name", "user message", "attribute gen_ai.request.model", "tool result", …"""
    needle = query.strip().casefold()
    if not needle:
        return {}
    found: dict[bytes, str] = {}
    for span in spans:
        if needle in span.name.casefold():
            found[span.span_id] = "name"
            continue
        text = texts.get(span.span_id)
        if text is None:
            continue
        for where, haystack in text.fields:
            if needle in haystack:
                found[span.span_id] = where
                break
    return found
