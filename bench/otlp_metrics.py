"""OTLP metrics: what a data point costs to ingest, and what the Metrics screen and the Overview's
serving saturation cost to read (`python -m bench.otlp_metrics`).

Ingest: an SDK-shaped request (gauges, cumulative counters, explicit and exponential histograms over
`--series` series) decoded by receiver.metrics_normalize and committed by store.metrics.MetricWriter,
in process: CPU µs per point for each half. Read: a store holding `--days` of those series at one
point per series per `--interval` seconds, then StoreReader.metrics + metric_chart (the Metrics
screen's load) and serving_saturation (the Overview's extra read) for each window, median and p95 of
`--reads` loads, wall and CPU (the process's: aiosqlite runs the SQL on a thread of it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

NS = 1_000_000_000


def build_request(series: int, at_ns: int, start_ns: int, step: int) -> ExportMetricsServiceRequest:
    """`series` series in four shapes: vLLM-style gauges, cumulative token counters, an explicit
    duration histogram and an exponential token histogram, each with a model attribute."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value={"string_value": "bench"}))
    scope = rm.scope_metrics.add()
    per_kind = max(1, series // 4)
    gauge = scope.metrics.add(name="vllm:num_requests_waiting").gauge
    counter = scope.metrics.add(name="gen_ai.client.inference.usage.input_tokens", unit="{token}").sum
    counter.is_monotonic = True
    counter.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    hist_metric = scope.metrics.add(name="gen_ai.client.operation.duration", unit="s")
    hist_metric.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    exp_metric = scope.metrics.add(name="gen_ai.client.token.usage", unit="{token}")
    exp_metric.exponential_histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    for i in range(per_kind):
        model = KeyValue(key="gen_ai.request.model", value={"string_value": f"model-{i}"})
        p = gauge.data_points.add(time_unix_nano=at_ns, as_double=float(step % 17))
        p.attributes.append(model)
        p = counter.data_points.add(time_unix_nano=at_ns, start_time_unix_nano=start_ns, as_double=1000.0 * step)
        p.attributes.append(model)
        h = hist_metric.histogram.data_points.add(time_unix_nano=at_ns, start_time_unix_nano=at_ns - 60 * NS,
                                                  count=10, sum=12.5)
        h.explicit_bounds.extend([0.1, 0.5, 1, 2, 5, 10])
        h.bucket_counts.extend([1, 2, 3, 2, 1, 1, 0])
        h.attributes.append(model)
        e = exp_metric.exponential_histogram.data_points.add(time_unix_nano=at_ns, start_time_unix_nano=start_ns,
                                                             count=20 * step, sum=5000.0 * step, scale=3)
        e.positive.offset = 40
        e.positive.bucket_counts.extend([2 * step] * 10)
        e.attributes.append(model)
    return request


def bench_ingest(series: int, rounds: int, clickhouse: bool = False) -> dict[str, float]:
    """`clickhouse`: as a replica of a ClickHouse store (`serve --store`) writes: the writer records each
    transaction's buckets in its outbox, and the shipper sends them to ClickHouse (chdb in this process)
    before the next request; `ship` is the shipper's CPU per point, the engine's insert included."""
    from receiver.metrics_normalize import decode_metrics
    from store.connection import open_writer
    from store.metrics import MetricWriter

    with tempfile.TemporaryDirectory() as tmp:
        db = open_writer(Path(tmp) / "ingest.db")
        shipper = None
        if clickhouse:
            from store.clickhouse import schema
            from store.clickhouse.client import ChdbClient
            from store.clickhouse.outbox import OutboxRecorder
            from store.clickhouse.sink import Shipper

            engine = ChdbClient(str(Path(tmp) / "chdb"), "bench")
            engine.command("CREATE DATABASE IF NOT EXISTS bench")
            engine.use_database()
            schema.migrate(engine)
            writer = MetricWriter(db, outbox=OutboxRecorder())
            shipper = Shipper(db, lambda: engine)
        else:
            writer = MetricWriter(db)
        start = time.time_ns() - 3600 * NS
        decode_cpu = write_cpu = ship_cpu = 0.0
        points = 0
        for step in range(1, rounds + 1):
            request = build_request(series, start + step * 10 * NS, start, step)
            body = request.SerializeToString()
            c0 = time.process_time()
            parsed = ExportMetricsServiceRequest.FromString(body)
            rows, _ = decode_metrics(parsed, time.time_ns())
            c1 = time.process_time()
            writer.write([rows])
            c2 = time.process_time()
            if shipper is not None:
                assert shipper.ship(), shipper.stats.last_error
            decode_cpu += c1 - c0
            write_cpu += c2 - c1
            ship_cpu += time.process_time() - c2
            points += len(rows)
        if shipper is not None:
            folded = engine.query("SELECT count() FROM (SELECT 1 FROM metric_points GROUP BY res, bucket, series)")
            assert folded[0][0] == db.execute("SELECT count(*) FROM metric_points").fetchone()[0], folded
        db.close()
    return {"points": points, "decode_cpu_us_per_point": decode_cpu / points * 1e6,
            "write_cpu_us_per_point": write_cpu / points * 1e6, "ship_cpu_us_per_point": ship_cpu / points * 1e6}


def build_store(path: Path, series: int, days: float, interval_s: int) -> tuple[float, float]:
    """A store with `days` of the series; returns (now_s, CPU seconds it took)."""
    from receiver.metrics_normalize import decode_metrics
    from store.connection import open_writer
    from store.metrics import MetricWriter

    db = open_writer(path)
    writer = MetricWriter(db)
    now = time.time()
    first_ns = int((now - days * 86400) * NS)
    steps = int(days * 86400 // interval_s)
    started = time.process_time()
    batch: list = []
    for step in range(1, steps + 1):
        at_ns = first_ns + step * interval_s * NS
        rows, _ = decode_metrics(build_request(series, at_ns, first_ns, step), at_ns)
        batch.append(rows)
        if len(batch) == 30:  # a group commit of 30 exports, as the writer does under load
            writer.write(batch)
            batch = []
    if batch:
        writer.write(batch)
    from store.metrics import retire

    db.execute("BEGIN IMMEDIATE")
    retire(db, int(now * NS), None)  # what the writer's retention does every minute: 10 s buckets past 2 h go
    db.execute("COMMIT")
    db.execute("VACUUM")
    db.close()
    return now, time.process_time() - started


async def bench_reads(path: Path, now_s: float, reads: int) -> dict[str, dict[str, float]]:
    from llmobs_tui.reader import StoreReader

    reader = StoreReader(path)
    await reader.open()
    out: dict[str, dict[str, float]] = {}
    try:
        for label, window in (("1h", 3600), ("24h", 86400), ("7d", 7 * 86400)):
            for what in ("metrics screen", "overview saturation"):
                walls, cpus = [], []
                for _ in range(reads):
                    w0, c0 = time.perf_counter(), time.process_time()
                    if what == "metrics screen":
                        overview = await reader.metrics(window, now_s)
                        await reader.metric_chart("gen_ai.client.token.usage", window, now_s)
                        assert overview.series
                    else:
                        await reader.serving_saturation(now_s)
                    walls.append((time.perf_counter() - w0) * 1000)
                    cpus.append((time.process_time() - c0) * 1000)
                walls.sort()
                cpus.sort()
                out[f"{what} {label}"] = {"wall_ms_p50": statistics.median(walls),
                                          "wall_ms_p95": walls[int(len(walls) * 0.95) - 1],
                                          "cpu_ms_p50": statistics.median(cpus),
                                          "cpu_ms_p95": cpus[int(len(cpus) * 0.95) - 1]}
    finally:
        await reader.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=40, help="series (in four kinds); default 40")
    parser.add_argument("--days", type=float, default=7.0, help="history in the read store; default 7")
    parser.add_argument("--interval", type=int, default=60, help="seconds between exports; default 60")
    parser.add_argument("--reads", type=int, default=20, help="loads per figure; default 20")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--clickhouse", action="store_true",
                        help="also ingest as a ClickHouse store's replica does (outbox and shipper, chdb in process)")
    args = parser.parse_args()
    ingest = bench_ingest(args.series * 25, 40)
    print(f"ingest: {ingest['points']:,} points; decode {ingest['decode_cpu_us_per_point']:.1f} µs CPU/point, "
          f"write {ingest['write_cpu_us_per_point']:.1f} µs CPU/point")
    if args.clickhouse:
        to_clickhouse = bench_ingest(args.series * 25, 40, clickhouse=True)
        print(f"ingest, a ClickHouse store's replica: decode {to_clickhouse['decode_cpu_us_per_point']:.1f}, write "
              f"(with the outbox) {to_clickhouse['write_cpu_us_per_point']:.1f}, ship "
              f"{to_clickhouse['ship_cpu_us_per_point']:.1f} µs CPU/point")
        ingest["clickhouse"] = to_clickhouse
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metrics.db"
        now_s, build_cpu = build_store(path, args.series, args.days, args.interval)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir() if p.name.startswith("metrics.db"))
        print(f"store: {args.series} series × {args.days:g} days every {args.interval}s: {size / 2**20:.1f} MiB, "
              f"built in {build_cpu:.1f} s CPU")
        reads = asyncio.run(bench_reads(path, now_s, args.reads))
    for name, figures in reads.items():
        print(f"{name:28s} wall p50 {figures['wall_ms_p50']:6.1f} ms  p95 {figures['wall_ms_p95']:6.1f} ms   "
              f"CPU p50 {figures['cpu_ms_p50']:6.1f} ms  p95 {figures['cpu_ms_p95']:6.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "ingest": ingest,
                                         "store_bytes": size, "reads": reads}, indent=2))


if __name__ == "__main__":
    main()
