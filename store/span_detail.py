"""One span's details for display, decoded from what the store keeps: the stored OTLP span
(attributes, events, links), its resource and scope, its correlated log records, the conversation
(store/content.py), the price row that priced it (store/pricing.py) and its decode figures
(store/latency.py). Pure decoding, no I/O: the caller runs the queries (store.dashboards
span_raw_query, span_logs_query, resource_query, span_price_query)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from store.content import LogEvent, Message, SpanEvent, messages_from_span, tool_io
from store.dashboards import SpanRow
from store.latency import DecodeFigures, decode_figures
from store.otlp_values import any_value
from store.pricing import CostBreakdown, PriceRecord, breakdown, record_from_row
from store.queries import decompress


@dataclass(slots=True)
class Attribute:
    key: str
    value: Any


@dataclass(slots=True)
class SpanDetail:
    span: SpanRow
    attributes: list[Attribute]
    resource: list[Attribute]
    scope: tuple[str | None, str | None]
    events: list[tuple[str, int, dict[str, Any]]]
    logs: list[tuple[str, int, dict[str, Any], Any]]  # (event name, time, attributes, body)
    links: list[tuple[str, str]]
    messages: list[Message] = field(default_factory=list)
    tool_io: tuple[Any, Any] = (None, None)
    dropped_attributes: int = 0
    # The stored price row named by span.price_id (None: unpriced, or the row is not recorded in
    # this store) and the tier that priced the span (None: priced before tiers were stored).
    price: PriceRecord | None = None
    price_tier: int | None = None
    # How the stored cost comes out of that row (None without a recorded row or without usage).
    cost: CostBreakdown | None = None
    decode: DecodeFigures | None = None  # TPOT and decode rate (None without a TTFT)


def decode_price(span: SpanRow, price_row: tuple | None) -> tuple[PriceRecord | None, int | None,
                                                                 CostBreakdown | None]:
    """The span's price row, tier and cost breakdown from span_price_query's row
    (price_tier, then the PRICE_ROW_COLUMNS of the joined row, all NULL when it is not recorded)."""
    if price_row is None:
        return None, None, None
    tier, *columns = price_row
    if span.price_id is None or columns[0] is None:
        return None, tier, None
    record = record_from_row(tuple(columns))
    cost = None
    if span.input_tokens is not None or span.output_tokens is not None:
        cost = breakdown(record, tier, span.input_tokens, span.output_tokens, span.cache_read_tokens,
                         span.cache_write_tokens, span.reasoning_tokens, span.cost_nusd)
    return record, tier, cost


def decode_span_detail(span: SpanRow, raw_row: tuple | None, log_rows: list[tuple],
                       resource_blob: bytes | None, price_row: tuple | None = None) -> SpanDetail:
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    attributes: list[Attribute] = []
    events: list[tuple[str, int, dict[str, Any]]] = []
    links: list[tuple[str, str]] = []
    dropped = 0
    scope: tuple[str | None, str | None] = (None, None)
    if raw_row is not None:
        raw, _resource_id, _scope_id, scope_name, scope_version = raw_row
        scope = (scope_name, scope_version)
        proto = Span.FromString(decompress(raw))
        attributes = [Attribute(kv.key, any_value(kv.value)) for kv in proto.attributes]
        attributes.sort(key=lambda a: a.key)
        events = [(e.name, e.time_unix_nano, {kv.key: any_value(kv.value) for kv in e.attributes})
                  for e in proto.events]
        links = [(link.trace_id.hex(), link.span_id.hex()) for link in proto.links]
        dropped = proto.dropped_attributes_count
    resource: list[Attribute] = []
    if resource_blob:
        resource = sorted((Attribute(kv.key, any_value(kv.value))
                           for kv in Resource.FromString(resource_blob).attributes), key=lambda a: a.key)
    logs = []
    for time_ns, event_name, _severity, raw in log_rows:
        record = LogRecord.FromString(decompress(raw))
        attrs = {kv.key: any_value(kv.value) for kv in record.attributes}
        logs.append((event_name or attrs.get("event.name") or "log", time_ns, attrs, any_value(record.body)))
    attr_map = {a.key: a.value for a in attributes}
    span_events = [SpanEvent(name, t, attrs) for name, t, attrs in events]
    log_events = [LogEvent(name, t, attrs, body) for name, t, attrs, body in logs]
    messages = messages_from_span(attr_map, span_events, log_events)
    io = tool_io(attr_map, span_events, log_events) if span.kind == "tool" else (None, None)
    price, tier, cost = decode_price(span, price_row)
    return SpanDetail(span, attributes, resource, scope, events, logs, links, messages, io, dropped,
                      price, tier, cost, decode_figures(span.duration_ns, span.ttft_ns, span.output_tokens))
