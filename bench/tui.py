"""TUI benchmark: a week of traffic (~1M spans) in the store, ingest running at ≥2,000 spans/s, and
the TUI's own queries timed: overview refresh (1h and 24h), trace list, opening a 500-span trace;
plus the TUI process's RSS and the time from launch to the first frame with data.

    python -m bench.tui                    # builds bench/results/week.db once (~2 min), then measures
    python -m bench.tui --rebuild          # rebuild the store
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
S = 1_000_000_000
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def build_week(db: Path, spans_target: int = 1_000_000, days: int = 7) -> dict:
    """~1M spans over `days` ending now, through the real normalizer and writer."""
    from llmobs_tui.scenarios import MS, SpanSpec, Trace, Traffic, to_otlp_request
    from receiver.normalize import IngestOptions, Normalizer
    from receiver.prices import PriceTable
    from store.connection import WriterLock, open_writer
    from store.writer import SpanWriter

    for suffix in ("", "-wal", "-shm", ".lock"):
        try:
            os.remove(f"{db}{suffix}")
        except FileNotFoundError:
            pass
    db.parent.mkdir(parents=True, exist_ok=True)
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    lock = WriterLock(db)
    lock.acquire()
    conn = open_writer(db)
    writer = SpanWriter(conn)
    traffic = Traffic(seed=11)
    now = time.time()
    start = now - days * 86400
    written = 0
    number = 0
    batch = []
    started = time.monotonic()
    # A steady stream of traces over the week: spans_target / ~6 spans per trace.
    approx_traces = spans_target // 6
    step = (now - 120 - start) / approx_traces
    t = start
    while written < spans_target:
        trace = traffic.next_trace()
        number += 1
        batch.append((trace, number, int(t * S)))
        t += step
        if len(batch) >= 100:
            rows, resources, scopes, _ = normalizer.decode_traces(to_otlp_request(batch), int(now * S))
            writer.write(rows, [], resources, scopes)
            written += len(rows)
            batch = []
            if number % 20000 < 100:
                print(f"  {written:,} spans, {time.monotonic() - started:.0f}s", flush=True)
    # One big trace: an agent with 500 spans (tool calls and LLM calls), ten minutes ago.
    spans = [SpanSpec("POST /research", None, 0, 0, {"app.llm.feature": "research"}, kind=2)]
    offset = 0
    for i in range(249):
        spans.append(SpanSpec(f"execute_tool step_{i}", 0, offset, 40 * MS, {"gen_ai.operation.name": "execute_tool",
                                                                            "gen_ai.tool.name": f"step_{i}"}))
        spans.append(SpanSpec("chat gpt-4o-mini", len(spans) - 1, offset + 5 * MS, 30 * MS, {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 900, "gen_ai.usage.output_tokens": 80}, kind=3))
        offset += 41 * MS
    spans[0].duration_ns = offset + MS
    big_number = 10**9
    rows, resources, scopes, _ = normalizer.decode_traces(
        to_otlp_request([(Trace("research", "research-agent", spans), big_number, int((now - 600) * S))]), int(now * S))
    writer.write(rows, [], resources, scopes)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    lock.release()
    from llmobs_tui.scenarios import trace_id_of

    big_trace = trace_id_of(big_number)
    info = {"spans": written + len(rows), "traces": number + 1, "big_trace": big_trace.hex(),
            "built_at": now, "build_seconds": round(time.monotonic() - started)}
    (db.parent / "week.json").write_text(json.dumps(info))
    return info


def ingest_load(address: str, rate: float, stop, counter) -> None:
    """A separate process exporting realistic LLM traces at `rate` spans/s with current timestamps."""
    import grpc

    from llmobs_tui.scenarios import Traffic, to_otlp_request

    traffic = Traffic(seed=5)
    channel = grpc.insecure_channel(address)
    export = channel.unary_unary(TRACE_METHOD)
    number = 2 * 10**9
    next_at = time.monotonic()
    while not stop.is_set():
        batch = []
        while sum(len(t.spans) for t, _, _ in batch) < 200:
            number += 1
            trace = traffic.next_trace()
            batch.append((trace, number, time.time_ns() - trace.duration_ns))
        body = to_otlp_request(batch).SerializeToString()
        n = sum(len(t.spans) for t, _, _ in batch)
        try:
            export(body, timeout=30)
            with counter.get_lock():
                counter.value += n
        except grpc.RpcError:
            pass
        next_at += n / rate
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


async def time_queries(db: Path, big_trace: bytes, rounds: int) -> dict:
    from llmobs_tui.filtering import Filter
    from llmobs_tui.reader import StoreReader

    reader = StoreReader(db)
    await reader.open()
    timings: dict[str, list[float]] = {"overview_1h": [], "overview_24h": [], "trace_list_1h": [],
                                       "trace_list_24h_by_cost": [], "open_500_span_trace": []}
    try:
        for _ in range(rounds):
            now = time.time()
            for name, call in (
                ("overview_1h", lambda: reader.overview(3600, now)),
                ("overview_24h", lambda: reader.overview(86400, now)),
                ("trace_list_1h", lambda: reader.traces(3600, now, Filter(), "start", True)),
                ("trace_list_24h_by_cost", lambda: reader.traces(86400, now, Filter(), "cost", True)),
            ):
                started = time.perf_counter()
                await call()
                timings[name].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            detail = await reader.trace(big_trace)
            # Opening a trace means its spans and the first span's details.
            await reader.span_detail(big_trace, detail.spans[1])
            timings["open_500_span_trace"].append((time.perf_counter() - started) * 1000)
            assert len(detail.spans) == 499 or len(detail.spans) >= 499, len(detail.spans)
            await asyncio.sleep(0.2)
    finally:
        await reader.close()
    return {name: {"p50_ms": round(statistics.median(v), 1), "p95_ms": round(sorted(v)[int(len(v) * 0.95) - 1], 1)}
            for name, v in timings.items()}


def time_alerts(db: Path, rounds: int) -> dict:
    """One evaluation of every alert rule (the demo's four SLOs, budgets, all built-in rules), as
    the TUI runs it every 10 s in a worker thread and `llmobs-tui check` runs it once."""
    from llmobs_tui.alerting.engine import AlertEngine
    from llmobs_tui.config import DEMO_CONFIG, load_config

    engine = AlertEngine(db, load_config(DEMO_CONFIG))
    timings = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            engine.evaluate(time.time())
            timings.append((time.perf_counter() - started) * 1000)
            time.sleep(0.2)
    finally:
        engine.close()
    return {"alert_evaluation": {"p50_ms": round(statistics.median(timings), 1), "max_ms": round(max(timings), 1)}}


PROBE = r"""
import sys, time, psutil
started = psutil.Process().create_time()
from llmobs_tui.app import LlmobsApp
from receiver.prices import PriceTable

class Probe(LlmobsApp):
    async def tick(self):
        await super().tick()
        if self.ticks == 1:
            print(f"FIRST_FRAME {time.time() - started:.3f}", flush=True)

async def tour(pilot):
    import asyncio
    for key in ("2", "3", "enter", "1", "2", "3") * 3:
        await pilot.press(key)
        await asyncio.sleep(1.0)
    pilot.app.exit()

Probe(sys.argv[1], prices=PriceTable.load()).run(headless=True, size=(160, 48), auto_pilot=tour)
print("DONE", flush=True)
"""


def probe_tui(db: Path) -> dict:
    """The real app (headless), touring every screen with the live loop on; RSS sampled."""
    proc = subprocess.Popen([sys.executable, "-c", PROBE, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    first_frame = None
    out_lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            out_lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    reader.join(5)
    for line in out_lines:
        if line.startswith("FIRST_FRAME"):
            first_frame = float(line.split()[1])
    if proc.returncode != 0:
        print(proc.stderr.read()[-3000:], file=sys.stderr)
    return {"tui_first_frame_s": first_frame, "tui_peak_rss_mb": round(peak / 2**20)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--rate", type=float, default=2000, help="ingest spans/s during the measurement")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--json", help="also write results here")
    args = parser.parse_args(argv)

    db = RESULTS / "week.db"
    info_file = RESULTS / "week.json"
    if args.rebuild or not db.exists() or not info_file.exists():
        print("building a week of traffic (once)…", flush=True)
        build_week(db)
    info = json.loads(info_file.read_text())
    age_h = (time.time() - info["built_at"]) / 3600
    print(f"store: {info['spans']:,} spans, {info['traces']:,} traces, {db.stat().st_size / 2**20:,.0f} MiB "
          f"(built {age_h:.1f} h ago)", flush=True)

    server = subprocess.Popen([sys.executable, "-m", "llmobs_tui", "serve", "--db", str(db), "--grpc-port", "0",
                               "--http-port", "0", "--retention", "30d", "--stats-every", "3600s"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = server.stdout.readline()
    address = re.search(r"OTLP/gRPC on (\S+?),", line).group(1)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    counter = ctx.Value("q", 0)
    load = ctx.Process(target=ingest_load, args=(address, args.rate, stop, counter))
    load.start()
    time.sleep(3)
    ingest_started, ingest_count = time.monotonic(), counter.value
    queries = asyncio.run(time_queries(db, bytes.fromhex(info["big_trace"]), args.rounds))
    queries |= time_alerts(db, rounds=10)
    tui = probe_tui(db)
    ingest_rate = (counter.value - ingest_count) / (time.monotonic() - ingest_started)
    stop.set()
    load.join(30)
    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=120)
    report = {
        "machine": f"{psutil.cpu_count()} cores",
        "store_spans": info["spans"],
        "ingest_spans_per_s_during_measurement": round(ingest_rate),
        **queries,
        **tui,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
