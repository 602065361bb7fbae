"""Runaway-agents rule: CPU and wall time per evaluation, cold (every tool span of the window
digested) and warm (only new ones), on a store you name or on a planted one.

    python -m bench.runaway --db bench/results/week3m.db        # now = the store's newest span + 1 s
    python -m bench.runaway --plant 200                          # 200 running agents, 30 steps each

Reports the engine's rule (its own thread's CPU) and the Overview's read of the same (through the
TUI's StoreReader; process CPU, which includes aiosqlite's thread). The machine is shared: read the
CPU figures, the wall figures only beside them."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

NS = 1_000_000_000


def plant(path: Path, agents: int, steps: int = 30, now_s: float = 1_795_000_000.0) -> float:
    """`agents` running agents (no root yet), each `steps` LLM + tool calls over the last 10 minutes;
    one in five loops (the same tool and arguments every step), the others vary their arguments.
    Written through the real Normalizer and SpanWriter. Returns the store's "now"."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from receiver.normalize import IngestOptions, Normalizer
    from receiver.otlp import to_any_value
    from receiver.prices import PriceTable
    from store.connection import WriterLock, open_writer
    from store.writer import SpanWriter

    def span(trace: int, sid: int, name: str, attrs: dict, start_s: float) -> Span:
        s = Span(trace_id=trace.to_bytes(16, "big"), span_id=sid.to_bytes(8, "big"),
                 parent_span_id=(1).to_bytes(8, "big"), name=name, kind=3,
                 start_time_unix_nano=int(start_s * NS), end_time_unix_nano=int((start_s + 0.5) * NS))
        for key, value in attrs.items():
            s.attributes.add(key=key, value=to_any_value(value))
        return s

    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    try:
        writer = SpanWriter(db, clock=lambda: int(now_s * NS))
        for trace in range(1, agents + 1):
            request = ExportTraceServiceRequest()
            rs = request.resource_spans.add()
            rs.resource.attributes.add(key="service.name", value=to_any_value("agents"))
            scope = rs.scope_spans.add()
            start = now_s - 700 + trace % 60
            for step in range(steps):
                at = start + step * 20
                scope.spans.append(span(trace, 2 + 2 * step, "chat gpt-4o", {
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 2000,
                    "gen_ai.usage.output_tokens": 200, "gen_ai.conversation.id": f"c{trace}"}, at))
                arguments = '{"order": 42, "q": "status"}' if trace % 5 == 0 else f'{{"order": {step}, "q": "x"}}'
                scope.spans.append(span(trace, 3 + 2 * step, "execute_tool search_orders", {
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_orders",
                    "gen_ai.tool.call.arguments": arguments, "gen_ai.conversation.id": f"c{trace}"}, at + 1))
            rows, resources, scopes, _rejected = normalizer.decode_traces(request, int(now_s * NS))
            writer.write(rows, [], resources, scopes)
    finally:
        db.close()
        lock.release()
    return now_s


def _engine_runs(db_path: Path, now_s: float, warm: int) -> list[dict]:
    from llmobs_tui.alerting.engine import AlertEngine
    from llmobs_tui.config import Config
    from store.connection import read_snapshot

    engine = AlertEngine(db_path, Config())
    runs = []
    try:
        for index in range(1 + warm):
            with read_snapshot(engine.db):
                wall, cpu = time.perf_counter(), time.thread_time()
                findings = engine.evaluate_runaway(now_s + index)
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            report = engine.runaway_report
            runs.append({"cpu_ms": cpu * 1000, "wall_ms": wall * 1000, "tool_spans": report.tool_spans,
                         "candidates": report.candidates, "digested": report.digested, "looping": len(report.looping),
                         "over_ceiling": len(report.over_ceiling), "findings": len(findings)})
    finally:
        engine.close()
    return runs


async def _reader_runs(db_path: Path, now_s: float, warm: int) -> list[dict]:
    from llmobs_tui.alerting.runaway import RunawayDetector
    from llmobs_tui.config import AlertSettings
    from llmobs_tui.reader import StoreReader

    reader = StoreReader(db_path)
    await reader.open()
    detector = RunawayDetector()
    runs = []
    try:
        for index in range(1 + warm):
            wall, cpu = time.perf_counter(), time.process_time()
            report = await reader.runaway(detector, AlertSettings(), now_s + index)
            runs.append({"cpu_ms": (time.process_time() - cpu) * 1000, "wall_ms": (time.perf_counter() - wall) * 1000,
                         "tool_spans": report.tool_spans, "candidates": report.candidates,
                         "digested": report.digested})
    finally:
        await reader.close()
    return runs


def _summary(label: str, runs: list[dict]) -> dict:
    cold, warm = runs[0], runs[1:]
    result = {"cold": cold, "warm_cpu_ms_median": statistics.median(r["cpu_ms"] for r in warm),
              "warm_wall_ms_median": statistics.median(r["wall_ms"] for r in warm), "warm_runs": len(warm)}
    print(f"{label}: cold {cold['cpu_ms']:.1f} ms CPU ({cold['wall_ms']:.1f} ms wall), {cold['tool_spans']} tool spans "
          f"({cold['candidates']} candidates) digested {cold['digested']}; "
          f"warm median {result['warm_cpu_ms_median']:.1f} ms CPU "
          f"({result['warm_wall_ms_median']:.1f} ms wall) over {len(warm)} runs"
          + (f"; {cold['looping']} looping, {cold['over_ceiling']} over ceiling" if "looping" in cold else ""))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", type=Path, help="an existing store (migrated to the current schema)")
    source.add_argument("--plant", type=int, metavar="AGENTS", help="plant this many running agents in a temp store")
    parser.add_argument("--warm", type=int, default=10, help="warm evaluations after the cold one (default 10)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.db is not None:
            from store.connection import open_reader

            db_path = args.db
            db = open_reader(db_path)
            try:
                now_s = db.execute("SELECT max(start_ns) FROM spans").fetchone()[0] / NS + 1
            finally:
                db.close()
        else:
            db_path = Path(tmp) / "planted.db"
            started = time.perf_counter()
            now_s = plant(db_path, args.plant)
            print(f"planted {args.plant} running agents in {time.perf_counter() - started:.1f} s")
        figures = {"store": str(db_path), "engine": _summary("engine rule", _engine_runs(db_path, now_s, args.warm)),
                   "overview": _summary("overview read", asyncio.run(_reader_runs(db_path, now_s, args.warm)))}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
