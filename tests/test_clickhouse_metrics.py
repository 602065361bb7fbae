"""OTLP metrics on a ClickHouse store (issue 17): a real `serve --store clickhouse://…` (against the chdb HTTP
front in a process of its own) fed by the OTel SDK's metric exporters and by raw requests. Ground truth is the
replica's own SQLite store: the Metrics screen and its charts read from ClickHouse equal what StoreReader
reads there, and a request refused while ClickHouse is away, then retried, counts once on both."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.metrics.v1 import metrics_pb2

from llmobs_tui.clickhouse_reader import ClickHouseStoreReader
from llmobs_tui.reader import StoreReader
from store import metrics as sm
from store.clickhouse.client import ChdbClient, HttpClient
from store.clickhouse.url import PASSWORD_ENV, parse_store_url
from tests.clickhouse_fixtures import PASSWORD, USER
from tests.metrics_factory import add_gauge, metrics_request
from tests.test_clickhouse_sink import (
    _clickhouse_process,
    _export,
    _export_until_acked,
    _start_serve,
    clickhouse_metric_points,
    reconnected,
    sqlite_metric_points,
    stopped,
)
from tests.test_metrics_ingest import record_and_export

METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def _delta_counter(points: list[tuple[int, float]]) -> bytes:
    """A delta counter's points (a batch job's count, each since the one before), and a vLLM queue gauge."""
    request = metrics_request("batch-worker")
    metric = request.resource_metrics[0].scope_metrics[0].metrics.add()
    metric.name = "jobs.done"
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    for at_ns, value in points:
        point = metric.sum.data_points.add()
        point.start_time_unix_nano, point.time_unix_nano = at_ns - sm.NS, at_ns
        point.as_double = value
    add_gauge(request, "vllm:num_requests_waiting", "", [(points[-1][0] / sm.NS, {"model_name": "m"}, 3.0)])
    return request.SerializeToString()


async def _screen(reader: Any, now_s: float) -> tuple[list[Any], dict[str, Any], Any]:
    await reader.open()
    try:
        overview = await reader.metrics(3600, now_s)
        charts = {s.name: await reader.metric_chart(s.name, 3600, now_s) for s in overview.series}
        return ([dataclasses.replace(s, series_id=0) for s in overview.series], charts,
                await reader.serving_saturation(now_s))
    finally:
        await reader.close()


def test_serve_ships_metric_points_and_a_refused_retry_counts_once(tmp_path: Path) -> None:
    clickhouse, port = _clickhouse_process(tmp_path / "chdb")
    url = parse_store_url(f"clickhouse://{USER}@127.0.0.1:{port}/metrics", {PASSWORD_ENV: PASSWORD})
    proc, address = _start_serve(tmp_path, url.display())
    replica = next((tmp_path / "llmobs-tui").glob("clickhouse-*.db"))
    channel = grpc.insecure_channel(address)
    reader = HttpClient(url)
    try:
        # The SDK's exporters, delta and cumulative (a cumulative one sends its totals again: adds nothing).
        record_and_export(f"http://{address}", "grpc", "delta", "app-delta")
        record_and_export(f"http://{address}", "grpc", "cumulative", "app-cumulative")
        reader.use_database()
        # Acknowledged = in ClickHouse: the points are there the moment the ack came back.
        assert reader.query("SELECT sum(total) FROM metric_points WHERE res = 3600 AND name = 'app.requests'") == \
            [(16.0,)]
        now = time.time_ns()
        _export_until_acked(channel, METRICS_METHOD, _delta_counter([(now - 2 * sm.NS, 5.0)]))
        assert reader.query("SELECT sum(total) FROM metric_points WHERE res = 60 AND name = 'jobs.done'") == [(5.0,)]
        # ClickHouse goes away: the next request is refused retryably, its points kept in the outbox.
        clickhouse.kill()
        clickhouse.wait()
        body = _delta_counter([(now - sm.NS, 3.0), (now, 4.0)])  # two points: a retry of either adds nothing
        assert _export(channel, METRICS_METHOD, body) == grpc.StatusCode.UNAVAILABLE
        db = sqlite3.connect(replica)
        assert db.execute("SELECT count(*) FROM clickhouse_outbox").fetchone()[0] >= 1
        db.close()
        clickhouse, _ = _clickhouse_process(tmp_path / "chdb", port)
        _export_until_acked(channel, METRICS_METHOD, body)  # the exporter's retry: acknowledged, added once
        reader = reconnected(reader, url)
    finally:
        out = stopped(proc, channel)
    try:
        assert proc.returncode == 0, out
        assert "Traceback" not in out, out
        for total in (reader.query("SELECT sum(total) FROM metric_points WHERE res = 3600 AND name = 'jobs.done'"),
                      sqlite3.connect(replica).execute(
                          "SELECT sum(p.total) FROM metric_points p JOIN metric_series s ON s.id = p.series_id "
                          "WHERE p.res = 3600 AND s.name = 'jobs.done'").fetchall()):
            assert total == [(12.0,)]  # 5 + 3 + 4, the retried points once
        working = sqlite3.connect(replica)
        try:
            assert clickhouse_metric_points(reader) == sqlite_metric_points(working)
        finally:
            working.close()
        now_s = time.time()
        truth = asyncio.run(_screen(StoreReader(replica), now_s))
        got = asyncio.run(_screen(ClickHouseStoreReader(url), now_s))
        assert got == truth
        series, charts, saturation = truth
        assert {s.service for s in series} == {"app-delta", "app-cumulative", "batch-worker"}
        assert len(charts) >= 6 and saturation is not None and saturation.waiting == 3.0
    finally:
        reader.close()
        clickhouse.kill()
        clickhouse.wait()


def test_a_bucket_shipped_in_parts_folds_as_the_writer_merges_it(engine: ChdbClient) -> None:
    """Three transactions' contributions to one gauge bucket and one histogram bucket, inserted through the
    in-process client (what the bench and copy_store may use) and merged by ClickHouse: the sums add, the
    min and max hold, the newest sample wins whatever the insert order, the histograms add bucket by bucket."""
    from store.clickhouse.rows import METRIC_POINT_INSERT_COLUMNS, metric_point_row

    gauge = ("gpu.util", "1", "gauge", "node", '{"hw.id": "gpu0"}')
    at = int(time.time()) // 60 * 60  # a bucket the TTL keeps (one dated 1970 is dropped on insert)
    parts = [(2, 1.5, 0.5, 1.0, 0.5, 300), (1, 0.9, 0.9, 0.9, 0.9, 900), (3, 2.1, 0.6, 0.8, 0.7, 600)]
    for n, total, low, high, last, last_ns in parts:
        engine.insert("metric_points", [metric_point_row(60, at, *gauge, n, total, low, high, last, last_ns, {}),
                                        metric_point_row(60, at, "lat", "s", "histogram", "app", "{}", n, total, None,
                                                         None, None, last_ns, {100: n, 101 + n: 1})],
                      METRIC_POINT_INSERT_COLUMNS)
    folded = clickhouse_metric_points(engine)
    for _ in range(2):
        assert folded[(60, at, "gpu.util", sm.series_digest(*gauge))] == (6, pytest.approx(4.5), 0.5, 1.0, 900, 0.9, {})
        assert folded[(60, at, "lat", sm.series_digest("lat", "s", "histogram", "app", "{}"))] == \
            (6, pytest.approx(4.5), None, None, 900, None, {100: 6, 102: 1, 103: 1, 104: 1})
        engine.command("OPTIMIZE TABLE metric_points FINAL")  # merged by the engine: the same
        assert engine.query("SELECT count() FROM metric_points") == [(2,)]
        folded = clickhouse_metric_points(engine)
