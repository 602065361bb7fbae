"""OTLP metrics through the real receiver into the store (store/metrics.py): the OTel SDK's metric
exporters over gRPC and HTTP with delta and cumulative temporality, resets, the cardinality caps
against an attacker, and malformed requests. Every figure is checked against what was recorded,
read back with SQL from the store file."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from llmobs_tui.backend import Backend
from store import metrics as sm
from tests.test_receiver import rows

pytestmark = pytest.mark.anyio


def totals(backend: Backend, name: str) -> dict[str, tuple]:
    """Per series (its kept attributes as JSON): observations/samples, total, min, max over the hour buckets."""
    found = rows(backend, "SELECT s.attrs_json, sum(p.n), sum(p.total), min(p.min), max(p.max) FROM metric_series s "
                          "JOIN metric_points p ON p.series_id = s.id WHERE s.name = ? AND p.res = 3600 "
                          "GROUP BY s.id", (name,))
    return {attrs: tuple(rest) for attrs, *rest in found}


def last_value(backend: Backend, name: str) -> float:
    return rows(backend, "SELECT p.last FROM metric_series s JOIN metric_points p ON p.series_id = s.id "
                         "WHERE s.name = ? AND p.res = 10 ORDER BY p.last_ns DESC LIMIT 1", (name,))[0][0]


def make_provider(endpoint: str, protocol: str, temporality: str, service: str) -> Any:
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableGauge, UpDownCounter
    from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource

    chosen = AggregationTemporality.DELTA if temporality == "delta" else AggregationTemporality.CUMULATIVE
    preferred = {Counter: chosen, UpDownCounter: chosen, Histogram: chosen, ObservableGauge: chosen}
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        exporter: Any = OTLPMetricExporter(endpoint=endpoint, insecure=True, preferred_temporality=preferred)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter
        exporter = HttpExporter(endpoint=endpoint + "/v1/metrics", preferred_temporality=preferred)
    # A very long interval: exports happen at force_flush(), when the test says.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    views = [View(instrument_name="gen_ai.client.token.usage", aggregation=ExponentialBucketHistogramAggregation())]
    return MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": service}), views=views)


def record_and_export(endpoint: str, protocol: str, temporality: str, service: str) -> None:
    provider = make_provider(endpoint, protocol, temporality, service)
    meter = provider.get_meter("test.app")
    requests = meter.create_counter("app.requests")
    queue = meter.create_up_down_counter("app.queue")
    kv = meter.create_gauge("hw.gpu.utilization", unit="1")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    model = {"gen_ai.request.model": "m1"}
    # user.id is dropped from the series (cardinality): two users' streams, one series.
    requests.add(3, {**model, "user.id": "u1"})
    queue.add(5, model)
    queue.add(-2, model)
    kv.set(0.25, {"hw.id": "gpu0"})
    for v in (0.1, 0.2, 0.4, 1.5):
        duration.record(v, model)
    for v in (10, 100, 1000):
        tokens.record(v, {**model, "gen_ai.token.type": "input"})
    assert provider.force_flush()
    requests.add(4, {**model, "user.id": "u2"})
    requests.add(1, {**model, "user.id": "u1"})
    queue.add(1, model)
    kv.set(0.75, {"hw.id": "gpu0"})
    duration.record(3.0, model)
    assert provider.force_flush()
    # Nothing new: a cumulative exporter sends the same totals again, which must add nothing.
    assert provider.force_flush()
    provider.shutdown()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("temporality", ["delta", "cumulative"])
async def test_sdk_metrics_are_stored_exactly(backend, protocol, temporality):
    endpoint = f"http://{backend.grpc_address}" if protocol == "grpc" else backend.http_address
    await asyncio.to_thread(record_and_export, endpoint, protocol, temporality, f"app-{protocol}")

    model = json.dumps({"gen_ai.request.model": "m1"})
    assert rows(backend, "SELECT DISTINCT service FROM metric_series") == [(f"app-{protocol}",)]
    requests = totals(backend, "app.requests")
    assert list(requests) == [model]  # user.id dropped: one series
    assert requests[model][1] == pytest.approx(8.0)  # 3 + 4 + 1
    assert rows(backend, "SELECT kind FROM metric_series WHERE name = 'app.requests'") == [("counter",)]

    assert last_value(backend, "app.queue") == pytest.approx(4.0)  # 5 - 2 + 1
    assert rows(backend, "SELECT kind FROM metric_series WHERE name = 'app.queue'") == [("gauge",)]

    kv = totals(backend, "hw.gpu.utilization")
    assert last_value(backend, "hw.gpu.utilization") == pytest.approx(0.75)
    _n, _total, low, high = kv[json.dumps({"hw.id": "gpu0"})]
    assert (low, high) == (pytest.approx(0.25), pytest.approx(0.75))

    n, total, _low, _high = totals(backend, "gen_ai.client.operation.duration")[model]
    assert (n, total) == (5, pytest.approx(5.2))
    tokens_key = json.dumps({"gen_ai.request.model": "m1", "gen_ai.token.type": "input"}, sort_keys=True)
    n, total, low, high = totals(backend, "gen_ai.client.token.usage")[tokens_key]
    assert (n, total) == (3, pytest.approx(1110.0))
    assert rows(backend, "SELECT unit, kind FROM metric_series WHERE name = 'gen_ai.client.token.usage'") == [
        ("{token}", "histogram")]
    # Quantiles from the store's log buckets: the exporter's buckets are within a few % of the values.
    overview = _overview(backend)
    durations = next(s for s in overview.series if s.name == "gen_ai.client.operation.duration")
    assert durations.n == 5
    token_usage = next(s for s in overview.series if s.name == "gen_ai.client.token.usage")
    assert token_usage.quantile(0.5) == pytest.approx(100, rel=0.1)  # an exponential histogram: fine buckets
    assert token_usage.quantile(1.0) == pytest.approx(1000, rel=0.1)


def _overview(backend: Backend) -> sm.MetricsOverview:
    import time

    queries = sm.overview_queries(3600, time.time())
    return sm.parse_overview({key: rows(backend, sql, params) for key, (sql, params) in queries.items()}, 3600)


async def test_a_restarted_exporter_is_a_reset_not_a_negative_delta(backend):
    endpoint = f"http://{backend.grpc_address}"

    def run(amount: int) -> None:
        provider = make_provider(endpoint, "grpc", "cumulative", "app")
        counter = provider.get_meter("m").create_counter("app.requests")
        counter.add(amount)
        assert provider.force_flush()
        provider.shutdown()

    await asyncio.to_thread(run, 7)
    await asyncio.to_thread(run, 2)  # a new process: a new start time, its cumulative sum below the last
    assert totals(backend, "app.requests")["{}"][1] == pytest.approx(9.0)
    assert rows(backend, "SELECT count(*) FROM metric_points WHERE total < 0") == [(0,)]


def _gauge_request(name: str, points: list[tuple[dict[str, str], float]], *, cumulative_sum: bool = False,
                   start_ns: int = 1, time_ns: int | None = None) -> bytes:
    import time

    now = time_ns or time.time_ns()
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value={"string_value": "attacker"}))
    metric = rm.scope_metrics.add().metrics.add()
    metric.name = name
    data = metric.sum if cumulative_sum else metric.gauge
    if cumulative_sum:
        metric.sum.is_monotonic = True
        metric.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    for attrs, value in points:
        point = data.data_points.add()
        point.time_unix_nano = now
        point.start_time_unix_nano = start_ns
        point.as_double = value
        for key, text in attrs.items():
            point.attributes.append(KeyValue(key=key, value={"string_value": text}))
    return request.SerializeToString()


async def _post(backend: Backend, body: bytes) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(backend.http_address + "/v1/metrics", data=body,
                                headers={"Content-Type": "application/x-protobuf"}) as response:
            return response.status, await response.read()


async def test_the_series_cap_holds_against_100k_distinct_attribute_values(backend):
    status, body = await _post(backend, _gauge_request(
        "attack.gauge", [({"customer": f"c{i}"}, float(i)) for i in range(100_000)]))
    assert status == 200
    answer = ExportMetricsServiceResponse.FromString(body)
    dropped = 100_000 - sm.MAX_SERIES_PER_METRIC
    assert answer.partial_success.rejected_data_points == dropped
    assert "series limit" in answer.partial_success.error_message
    assert rows(backend, "SELECT count(*) FROM metric_series WHERE name = 'attack.gauge'") == [
        (sm.MAX_SERIES_PER_METRIC,)]
    assert rows(backend, "SELECT value FROM meta WHERE key = ?", (sm.DROPPED_KEY,)) == [(str(dropped),)]

    # A dropped attribute (an id) folds every stream into one series, and the streams kept for cumulative
    # deltas are capped per series: past the cap a stream's points are dropped, not summed wrongly.
    n_users = sm.MAX_STREAMS_PER_SERIES + 500
    status, body = await _post(backend, _gauge_request(
        "attack.counter", [({"user.id": f"u{i}"}, 2.0) for i in range(n_users)], cumulative_sum=True))
    assert status == 200
    assert ExportMetricsServiceResponse.FromString(body).partial_success.rejected_data_points == 500
    assert rows(backend, "SELECT count(*) FROM metric_series WHERE name = 'attack.counter'") == [(1,)]
    assert totals(backend, "attack.counter")["{}"][1] == pytest.approx(2.0 * sm.MAX_STREAMS_PER_SERIES)
    # Another metric still gets its series: the per-name cap is per name.
    status, body = await _post(backend, _gauge_request("other.gauge", [({"customer": "a"}, 1.0)]))
    assert status == 200 and not ExportMetricsServiceResponse.FromString(body).partial_success.rejected_data_points


async def test_malformed_and_huge_requests_are_refused_and_lose_nothing_accepted(backend):
    status, _ = await _post(backend, _gauge_request("kept.gauge", [({}, 42.0)]))
    assert status == 200
    status, body = await _post(backend, b"\x0a\xff\xff\xff\xff\x0fnot protobuf")
    assert status == 400
    assert body  # a Status message saying why
    # NaN and infinite values are rejected one by one; the request's good points are kept.
    status, body = await _post(backend, _gauge_request("kept.gauge", [({"a": "1"}, float("nan")),
                                                                      ({"a": "2"}, float("inf")), ({"a": "3"}, 1.0)]))
    assert status == 200
    answer = ExportMetricsServiceResponse.FromString(body)
    assert answer.partial_success.rejected_data_points == 2
    assert "finite" in answer.partial_success.error_message
    # Larger than the body limit: refused before decoding.
    limit = backend.http.max_body_bytes
    status, _ = await _post(backend, b"\x00" * (limit + 1))
    assert status == 413
    kept = rows(backend, "SELECT s.attrs_json, p.total FROM metric_series s JOIN metric_points p "
                         "ON p.series_id = s.id WHERE s.name = 'kept.gauge' AND p.res = 3600 ORDER BY s.attrs_json")
    assert kept == [("{\"a\": \"3\"}", 1.0), ("{}", 42.0)]


async def test_a_retried_cumulative_export_adds_nothing(backend):
    body = _gauge_request("app.tokens", [({}, 100.0)], cumulative_sum=True, start_ns=5, time_ns=10**18 * 2)
    for _ in range(3):  # the exporter retried twice (its acks were lost)
        assert (await _post(backend, body))[0] == 200
    assert rows(backend, "SELECT sum(total) FROM metric_points WHERE res = 3600") == [(100.0,)]


async def test_retention_drops_old_points_streams_and_idle_series(tmp_path):
    import time

    from store.connection import open_writer
    from store.metrics import MetricWriter, retire

    db = open_writer(tmp_path / "m.db")
    try:
        now = time.time_ns()
        old = now - 3 * 86400 * sm.NS
        writer = MetricWriter(db)
        row = ("old.counter", "", "counter", "svc", "{}", b"s" * 16, sm.CUMULATIVE, old - sm.NS, old, 5.0, 0,
               None, None, None)
        new = ("new.gauge", "", "gauge", "svc", "{}", b"t" * 16, sm.LEVEL, now, now, 1.0, 0, None, None, None)
        assert writer.write([[row, new]]) == [(2, 0)]
        db.execute("BEGIN IMMEDIATE")
        retire(db, now, 86400)
        db.execute("COMMIT")
        assert db.execute("SELECT name FROM metric_series").fetchall() == [("new.gauge",)]
        assert db.execute("SELECT count(*) FROM metric_streams").fetchone() == (0,)
        assert {r[0] for r in db.execute("SELECT res FROM metric_points")} == {10, 60, 3600}
        # The writer had the old series cached: a new point puts it back, with its id.
        again = (*row[:8], now, 9.0, *row[10:])
        assert writer.write([[again]]) == [(1, 0)]
        assert db.execute("SELECT count(*) FROM metric_series WHERE name = 'old.counter'").fetchone() == (1,)
    finally:
        db.close()


async def test_a_retried_request_of_delta_points_counts_once(tmp_path):
    """An exporter sends a request again when its ack was lost, or when it was refused after its points were
    committed (a ClickHouse store that did not confirm the batch): a delta counter's, histogram's and
    up-down counter's points then add nothing, even several points of a stream; a newer point still adds."""
    import time

    from store.connection import open_writer
    from store.metrics import MetricWriter

    db = open_writer(tmp_path / "m.db")
    try:
        now = time.time_ns()

        def point(name: str, kind: str, stream: bytes, at: int, value: float, hist: Any = None) -> tuple:
            count = 2 if kind == "histogram" else 0
            return (name, "", kind, "svc", "{}", stream, sm.DELTA, at - 10 * sm.NS, at, value, count, None, None, hist)

        def request(at: int) -> list[tuple]:
            return [point("jobs", "counter", b"a" * 16, at, 5.0),
                    point("latency", "histogram", b"b" * 16, at, 3.0, {100: 2}),
                    point("queue", "gauge", b"c" * 16, at, 2.0)]

        writer = MetricWriter(db)
        first = [*request(now - 20 * sm.NS), *request(now - 10 * sm.NS)]  # two points of each stream
        assert writer.write([first]) == [(6, 0)]
        assert writer.write([first]) == [(6, 0)]  # the retry: stored (acknowledged), counted once
        assert writer.write([request(now - 10 * sm.NS)]) == [(3, 0)]
        assert writer.stats.duplicates == 9

        def figures() -> dict[str, tuple]:
            return {name: (n, total) for name, n, total in db.execute(
                "SELECT s.name, sum(p.n), sum(p.total) FROM metric_series s JOIN metric_points p "
                "ON p.series_id = s.id WHERE p.res = 3600 GROUP BY s.name")}

        # The up-down counter's level: 2 + 2 (each point's level is a sample of it: n 2, total 2 + 4).
        assert figures() == {"jobs": (2, 10.0), "latency": (4, 6.0), "queue": (2, 6.0)}
        assert writer.write([request(now)]) == [(3, 0)]  # a newer point adds
        assert figures() == {"jobs": (3, 15.0), "latency": (6, 9.0), "queue": (3, 12.0)}
    finally:
        db.close()


async def test_delta_streams_kept_for_retries_take_no_cumulative_streams_room(tmp_path):
    """A delta counter with a stream per user (its series drops user.id, its streams do not) fills the retry
    guards' caps; past them its points still count (only unguarded), and a cumulative stream still finds
    room; the caps' counts survive the writer's reload of them from the store."""
    import time

    from store.connection import open_writer
    from store.metrics import MetricWriter

    db = open_writer(tmp_path / "m.db")
    try:
        now = time.time_ns()
        writer = MetricWriter(db, max_streams=3, max_streams_per_series=3)
        users = [("jobs", "", "counter", "svc", "{}", bytes([n]) * 16, sm.DELTA, now - sm.NS, now, 1.0, 0, None, None,
                  None) for n in range(5)]
        assert writer.write([users]) == [(5, 0)]
        assert writer.write([users]) == [(5, 0)]  # the retry: the three guarded streams add nothing
        for stream in (b"c" * 16, b"d" * 16):
            cumulative = ("tokens", "", "counter", "svc", "{}", stream, sm.CUMULATIVE, now - 60 * sm.NS, now, 9.0, 0,
                          None, None, None)
            assert writer.write([[cumulative]]) == [(1, 0)]
            writer._counts_loaded_at = float("-inf")  # as a minute later: the caps' counts read from the store
        totals = dict(db.execute("SELECT s.name, sum(p.total) FROM metric_series s JOIN metric_points p "
                                 "ON p.series_id = s.id WHERE p.res = 3600 GROUP BY s.name"))
        assert totals == {"jobs": 7.0, "tokens": 18.0}  # 5 + the 2 unguarded streams again
        assert db.execute("SELECT count(*) FROM metric_streams WHERE count = ?", (sm.RETRY_GUARD,)).fetchone() == (3,)
    finally:
        db.close()


async def test_a_model_servers_and_an_apps_metrics_sent_to_serve_show_on_screen_8(backend):
    """Done when: a model server's metrics (vLLM's, as a collector forwards them) and an app's GenAI
    metrics (the OTel SDK) sent to the receiver show on screen 8 and on the Overview's saturation."""
    import time

    from llmobs_tui.app import LlmobsApp
    from llmobs_tui.widgets.keyed_table import KeyedTable

    await asyncio.to_thread(record_and_export, backend.http_address, "http", "delta", "chat-app")
    now = time.time_ns()
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value={"string_value": "vllm"}))
    scope = rm.scope_metrics.add()
    for name, value in (("vllm:num_requests_waiting", 7.0), ("vllm:num_requests_running", 30.0),
                        ("vllm:kv_cache_usage_perc", 0.93)):
        point = scope.metrics.add(name=name).gauge.data_points.add(time_unix_nano=now, as_double=value)
        point.attributes.append(KeyValue(key="model_name", value={"string_value": "llama-3-8b"}))
    assert (await _post(backend, request.SerializeToString()))[0] == 200

    app = LlmobsApp(backend.config.pipeline.db_path, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await app.tick()
        saturation = " ".join(str(f.value) for f in app.screen.query_one("#card-saturation")._figures)
        assert "7 waiting · 30 running" in saturation and "93.0%" in saturation, saturation
        await pilot.press("8")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await app.tick()
        screen = app.screen
        keys = screen.query_one("#metrics-list", KeyedTable).keys()  # the table's row keys, not a dict's
        names = {screen.metric_name(k) for k in keys}
        assert {"vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "gen_ai.client.operation.duration",
                "gen_ai.client.token.usage", "hw.gpu.utilization", "app.requests"} <= names
