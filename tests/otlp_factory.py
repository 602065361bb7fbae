"""Deterministic builders of real OTLP protobuf requests, shared by every test layer.

Everything here produces the protobuf messages an OpenTelemetry SDK or collector really sends
(`ExportTraceServiceRequest`, `ExportLogsServiceRequest`), so a test exercises the same decode path as
production. Ids are small integers turned into fixed-width big-endian bytes (trace id 16 bytes, span
id 8 bytes); times default to T0, a fixed instant, so stored rows and snapshots are reproducible.

    span = make_span(1, 2, None, "chat gpt-4o", {"gen_ai.operation.name": "chat"})
    request = trace_request([span], service="checkout", resource_attrs={"tenant.id": "acme"})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver.otlp import to_any_value

T0 = 1_767_000_000 * 10**9  # 2025-12-29T09:20:00Z, in ns since the epoch
MS = 1_000_000  # one millisecond in ns

# Span.Kind and Status.StatusCode values, so callers need not import the protobuf enums.
SPAN_KIND_INTERNAL, SPAN_KIND_SERVER, SPAN_KIND_CLIENT = 1, 2, 3
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2


def trace_id_bytes(trace_id: int) -> bytes:
    """A trace id as the 16 big-endian bytes OTLP carries (0 gives the invalid all-zero id)."""
    return trace_id.to_bytes(16, "big")


def span_id_bytes(span_id: int) -> bytes:
    """A span id as the 8 big-endian bytes OTLP carries (0 gives the invalid all-zero id)."""
    return span_id.to_bytes(8, "big")


def any_value(value: Any) -> AnyValue:
    """A Python value as an OTLP AnyValue (list → array, dict → kvlist)."""
    return to_any_value(value)


def kv(key: str, value: Any) -> KeyValue:
    """One attribute: `key` with `value` converted by any_value()."""
    return KeyValue(key=key, value=any_value(value))


def make_span(trace_id: int, span_id: int, parent_id: int | None, name: str, attrs: Mapping[str, Any],
              start_ns: int = T0, end_ns: int | None = None, status_code: int = 0, status_message: str = "",
              events: Iterable[tuple[str, int, Mapping[str, Any]]] = (), kind: int = SPAN_KIND_CLIENT) -> Span:
    """A span with the given attributes (insertion order kept).

    `end_ns` defaults to 1 s after `start_ns`; `events` are (name, time_ns, attributes);
    `status_code` is 0 unset, 1 ok, 2 error; `kind` is the OTLP Span.Kind (default CLIENT)."""
    span = Span(
        trace_id=trace_id_bytes(trace_id),
        span_id=span_id_bytes(span_id),
        name=name,
        kind=kind,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=end_ns if end_ns is not None else start_ns + 1000 * MS,
    )
    if parent_id is not None:
        span.parent_span_id = span_id_bytes(parent_id)
    span.attributes.extend(kv(k, v) for k, v in attrs.items())
    for event_name, time_ns, event_attrs in events:
        event = span.events.add(name=event_name, time_unix_nano=time_ns)
        event.attributes.extend(kv(k, v) for k, v in event_attrs.items())
    if status_code:
        span.status.code = status_code
        span.status.message = status_message
    return span


def trace_request(spans: Sequence[Span], service: str = "svc", scope: tuple[str, str] = ("scope.name", "1.0"),
                  resource_attrs: Mapping[str, Any] | None = None) -> ExportTraceServiceRequest:
    """One ResourceSpans (service.name + `resource_attrs`) holding one ScopeSpans with `spans`."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(kv("service.name", service))
    for key, value in (resource_attrs or {}).items():
        resource_spans.resource.attributes.append(kv(key, value))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name, scope_spans.scope.version = scope
    scope_spans.spans.extend(spans)
    return request


def log_record(trace_id: int | None = None, span_id: int | None = None, event_name: str = "",
               body: Any = None, attrs: Mapping[str, Any] | None = None, time_ns: int = T0,
               severity: int = 9) -> LogRecord:
    """A log record; ids (when given) join it to a span, `body` goes through any_value().

    `event_name` fills LogRecord.event_name; older SDKs put it in an `event.name` attribute instead,
    which callers can pass in `attrs`. severity 9 is INFO."""
    record = LogRecord(time_unix_nano=time_ns, severity_number=severity, event_name=event_name)
    if trace_id is not None:
        record.trace_id = trace_id_bytes(trace_id)
    if span_id is not None:
        record.span_id = span_id_bytes(span_id)
    if body is not None:
        record.body.CopyFrom(any_value(body))
    record.attributes.extend(kv(k, v) for k, v in (attrs or {}).items())
    return record


def logs_request(records: Sequence[LogRecord], service: str = "svc",
                 scope: tuple[str, str] = ("scope.name", "1.0"),
                 resource_attrs: Mapping[str, Any] | None = None) -> ExportLogsServiceRequest:
    """One ResourceLogs (service.name + `resource_attrs`) holding one ScopeLogs with `records`."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.append(kv("service.name", service))
    for key, value in (resource_attrs or {}).items():
        resource_logs.resource.attributes.append(kv(key, value))
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name, scope_logs.scope.version = scope
    scope_logs.log_records.extend(records)
    return request
