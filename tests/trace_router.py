"""A stand-in for the OpenTelemetry Collector's `loadbalancing` exporter with `routing_key: traceID`, for
the tests that run several `serve` replicas: an OTLP/gRPC server that splits every export request by
trace id and sends each part to the replica its trace id hashes to, so that a trace's spans and log
records always meet in one replica (billing-once and root inheritance need them together).

As the Collector does, a request is answered only after every part was: the first failure is returned
(UNAVAILABLE stays UNAVAILABLE, so the SDK retries the whole request; the replicas drop the spans they
already stored as duplicates). `route` can be replaced to move a trace to another replica on purpose (a
changed replica set: what the Collector's ring does to about 1/N of the traces).
Log records without a trace id go to the first replica; metrics are split by service (deploy/k8s's
`loadbalancing/metrics`, `routing_key: service`): each service's streams always reach one replica.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from receiver.grpc_server import SERVICES


def by_trace_id(trace_id: bytes, replicas: int) -> int:
    """The replica of a trace: a stable hash of its id (the Collector hashes onto a ring; any stable
    function of the trace id gives the property the store needs)."""
    return zlib.crc32(trace_id) % replicas


def _split(request: Any, groups_field: str, scopes_field: str, items_field: str,
           replica_of: Callable[[Any], int]) -> dict[int, bytes]:
    """A request's items (spans or log records) regrouped per replica, each keeping its resource and scope."""
    parts: dict[int, Any] = {}
    for group in getattr(request, groups_field):
        for scope_group in getattr(group, scopes_field):
            by_replica: dict[int, list[Any]] = {}
            for item in getattr(scope_group, items_field):
                by_replica.setdefault(replica_of(item), []).append(item)
            for replica, items in by_replica.items():
                part = parts.setdefault(replica, type(request)())
                out_group = getattr(part, groups_field).add(resource=group.resource, schema_url=group.schema_url)
                out_scope = getattr(out_group, scopes_field).add(scope=scope_group.scope,
                                                                  schema_url=scope_group.schema_url)
                getattr(out_scope, items_field).extend(items)
    return {replica: part.SerializeToString() for replica, part in parts.items()}


def split_traces(body: bytes, replicas: int, route: Callable[[bytes, int], int]) -> dict[int, bytes]:
    """The request's spans regrouped per replica, by trace id."""
    return _split(ExportTraceServiceRequest.FromString(body), "resource_spans", "scope_spans", "spans",
                  lambda span: route(span.trace_id, replicas))


def by_service(service: str, replicas: int) -> int:
    return zlib.crc32(service.encode()) % replicas


def split_metrics(body: bytes, replicas: int) -> dict[int, bytes]:
    """The request's resources (each with all of its metrics) regrouped per replica, by service.name."""
    request = ExportMetricsServiceRequest.FromString(body)
    parts: dict[int, ExportMetricsServiceRequest] = {}
    for group in request.resource_metrics:
        service = next((kv.value.string_value for kv in group.resource.attributes if kv.key == "service.name"), "")
        parts.setdefault(by_service(service, replicas), ExportMetricsServiceRequest()).resource_metrics.append(group)
    return {replica: part.SerializeToString() for replica, part in parts.items()}


def split_logs(body: bytes, replicas: int, route: Callable[[bytes, int], int]) -> dict[int, bytes]:
    """The request's log records regrouped per replica: by trace id, the first replica when they have none."""
    return _split(ExportLogsServiceRequest.FromString(body), "resource_logs", "scope_logs", "log_records",
                  lambda record: route(record.trace_id, replicas) if record.trace_id else 0)


class TraceRouter:
    """`TraceRouter(["127.0.0.1:5001", "127.0.0.1:5002"]).start()` → the port to export to."""

    def __init__(self, replicas: Sequence[str], route: Callable[[bytes, int], int] = by_trace_id,
                 timeout_s: float = 30.0) -> None:
        self.replicas = list(replicas)
        self.route = route
        self.timeout_s = timeout_s
        self.channels = [grpc.insecure_channel(address) for address in self.replicas]
        self.sent = [0] * len(self.replicas)  # parts each replica acknowledged
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                   options=[("grpc.max_receive_message_length", 64 << 20)])
        handlers = []
        for signal, service in SERVICES.items():
            handlers.append(grpc.method_handlers_generic_handler(service, {
                "Export": grpc.unary_unary_rpc_method_handler(self._handler(signal, service)),
            }))
        self._server.add_generic_rpc_handlers(tuple(handlers))
        self.port = 0

    def start(self) -> int:
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self.port

    def stop(self) -> None:
        self._server.stop(grace=None)
        for channel in self.channels:
            channel.close()

    def _handler(self, signal: str, service: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        method = f"/{service}/Export"

        def export(body: bytes, context: grpc.ServicerContext) -> bytes:
            if signal == "traces":
                parts = split_traces(body, len(self.replicas), self.route)
            elif signal == "logs":
                parts = split_logs(body, len(self.replicas), self.route)
            else:
                parts = split_metrics(body, len(self.replicas))
            answer = b""  # an empty Export*ServiceResponse: no partial success to report
            for replica, part in sorted(parts.items()):
                call = self.channels[replica].unary_unary(method)
                try:
                    call(part, timeout=self.timeout_s)
                except grpc.RpcError as exc:
                    context.abort(exc.code(), f"replica {self.replicas[replica]}: {exc.details()}")
                self.sent[replica] += 1
            return answer

        return export
