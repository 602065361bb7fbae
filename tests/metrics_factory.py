"""OTLP metrics requests for tests, and the model-server and app metrics the fixture store carries
(tests/tui_fixtures.build_store), written through the real decoder and metric writer."""

from __future__ import annotations

import math
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

NS = 1_000_000_000


def with_attributes(point, attrs: dict[str, str]) -> None:
    for key, value in attrs.items():
        point.attributes.append(KeyValue(key=key, value={"string_value": value}))


def metrics_request(service: str) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value={"string_value": service}))
    rm.scope_metrics.add()
    return request


def add_gauge(request, name: str, unit: str, points: list[tuple[float, dict[str, str], float]]) -> None:
    metric = request.resource_metrics[0].scope_metrics[0].metrics.add()
    metric.name, metric.unit = name, unit
    for at_s, attrs, value in points:
        point = metric.gauge.data_points.add()
        point.time_unix_nano = int(at_s * NS)
        point.as_double = value
        with_attributes(point, attrs)


def add_histogram(request, name: str, unit: str, at_s: float, attrs: dict[str, str], bounds: list[float],
                  counts: list[int], total: float) -> None:
    metric = request.resource_metrics[0].scope_metrics[0].metrics.add()
    metric.name, metric.unit = name, unit
    metric.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    point = metric.histogram.data_points.add()
    point.time_unix_nano = int(at_s * NS)
    point.start_time_unix_nano = int((at_s - 10) * NS)
    point.count, point.sum = sum(counts), total
    point.explicit_bounds.extend(bounds)
    point.bucket_counts.extend(counts)
    with_attributes(point, attrs)


def serving_requests(now_s: float, minutes: int = 60) -> list[ExportMetricsServiceRequest]:
    """A vLLM server's queue and KV cache and two GPUs, a point a minute, and an app's GenAI client
    metrics every five minutes: deterministic curves (a queue that builds up towards the end)."""
    server, app = metrics_request("vllm"), metrics_request("support-bot")
    model = {"model_name": "llama-3.1-70b"}
    minutes_ago = range(minutes - 1, -1, -1)
    add_gauge(server, "vllm:num_requests_waiting", "",
              [(now_s - m * 60, model, float(max(0, 12 - m // 4))) for m in minutes_ago])
    add_gauge(server, "vllm:num_requests_running", "",
              [(now_s - m * 60, model, 20.0 + 8 * math.sin(m / 6)) for m in minutes_ago])
    add_gauge(server, "vllm:kv_cache_usage_perc", "",
              [(now_s - m * 60, model, min(0.97, 0.45 + (minutes - m) / (2.2 * minutes))) for m in minutes_ago])
    for gpu, base in (("gpu0", 0.82), ("gpu1", 0.64)):
        add_gauge(server, "hw.gpu.utilization", "1",
                  [(now_s - m * 60, {"hw.id": gpu}, base + 0.1 * math.cos(m / 5)) for m in minutes_ago])
    for m in range(minutes - 5, -1, -5):
        at = now_s - m * 60
        for name, tokens in (("gpt-4o", 1200.0), ("gpt-4o-mini", 800.0)):
            add_histogram(app, "gen_ai.client.token.usage", "{token}", at,
                          {"gen_ai.request.model": name, "gen_ai.token.type": "input"},
                          [100, 1000, 10000], [0, 1, 1, 0], tokens)
        # Latency that drifts with the queue: slower calls as the server's KV cache fills.
        slow = (minutes - m) // 10
        counts = [4 - min(3, slow // 2), 3, 2 + slow // 2, slow, slow // 3]
        for name, scale in (("gpt-4o", 1.0), ("gpt-4o-mini", 0.5), ("claude-sonnet-4-5", 1.4)):
            bounds = [0.5 * scale, 1 * scale, 2 * scale, 4 * scale]
            add_histogram(app, "gen_ai.client.operation.duration", "s", at, {"gen_ai.request.model": name},
                          bounds, counts, scale * (0.3 * counts[0] + 0.8 * counts[1] + 1.5 * counts[2]
                                                   + 3.0 * counts[3] + 6.0 * counts[4]))
        add_histogram(server, "gen_ai.server.time_to_first_token", "s", at, {"gen_ai.request.model": "llama-3.1-70b"},
                      [0.05, 0.1, 0.25, 0.5, 1], [2, 5, 4 + slow, slow, slow // 2, 0], 0.2 * (11 + 2 * slow))
    return [server, app]


def write_metrics(path: Path | str, requests: list[ExportMetricsServiceRequest], now_s: float) -> None:
    """Decode and commit `requests` into the store at `path` as serve's decoder and writer would."""
    from receiver.metrics_normalize import decode_metrics
    from store.connection import open_writer
    from store.metrics import MetricWriter

    db = open_writer(path)
    try:
        writer = MetricWriter(db)
        for request in requests:
            rows, rejected = decode_metrics(request, int(now_s * NS))
            assert rejected.count == 0, rejected.message()
            assert writer.write([rows]) == [(len(rows), 0)]
    finally:
        db.close()
