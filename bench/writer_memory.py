"""What the writer holds in memory as traffic goes on: the real Normalizer and SpanWriter in this process, fed
simulated minutes of agent traffic spread over many dimension sets, with tracemalloc counting the Python
memory the writer keeps between batches (its trace cache, rollup and tool-rollup accumulators, ...).

    python -m bench.writer_memory                           # 120 simulated minutes, 100 dimension sets
    python -m bench.writer_memory --minutes 240 --dims 200 --json out.json

bench.ingest's 30-minute runs measure RSS, which also holds what the allocator keeps; this one says what
is still referenced, minute by minute, and how many rollup accumulators are cached. The store is a fresh
file in a temporary directory. Time is simulated (span times advance a minute per batch group), so two
hours take a minute or two.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

from tests.otlp_factory import T0, make_span, trace_request

MS = 1_000_000


def minute_of_traffic(minute: int, dims: int, calls: int) -> list:
    spans = []
    for n in range(calls):
        trace = minute * 100_000 + n + 1
        start = T0 + minute * 60_000 * MS + n * (60_000 // calls) * MS
        d = n % dims
        spans.append(make_span(trace, 1, None, "POST /ask", {"app.llm.feature": f"feature-{d % 10}",
                                                             "app.llm.tenant.id": f"tenant-{d // 10}"},
                               start_ns=start, end_ns=start + 900 * MS))
        spans.append(make_span(trace, 2, 1, "chat gpt-4o", {
            "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100 + n % 900, "gen_ai.usage.output_tokens": 10 + n % 300},
            start_ns=start + 10 * MS, end_ns=start + (200 + n % 700) * MS))
        spans.append(make_span(trace, 3, 1, "execute_tool lookup", {"gen_ai.operation.name": "execute_tool",
                                                                    "gen_ai.tool.name": f"tool-{n % 20}"},
                               start_ns=start + 300 * MS, end_ns=start + (320 + n % 50) * MS))
    return spans


def main(argv: list[str] | None = None) -> int:
    from receiver.normalize import IngestOptions, Normalizer
    from receiver.prices import PriceTable
    from store.connection import scratch_writer
    from store.writer import SpanWriter

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=120)
    parser.add_argument("--dims", type=int, default=100, help="dimension sets (feature × tenant)")
    parser.add_argument("--calls", type=int, default=600, help="LLM calls per simulated minute")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    samples = []
    with scratch_writer("llmobs-writer-memory-") as db:
        try:
            writer = SpanWriter(db)
            tracemalloc.start()
            started = time.process_time()
            for minute in range(args.minutes):
                rows, resources, scopes, _ = normalizer.decode_traces(
                    trace_request(minute_of_traffic(minute, args.dims, args.calls)), T0 + minute * 60 * 10**9)
                writer.write(rows, [], resources, scopes)
                if minute % 10 == 9:
                    current, _peak = tracemalloc.get_traced_memory()
                    samples.append({"minute": minute + 1, "traced_mb": round(current / 2**20, 1),
                                    "rollup_entries": len(writer._rollups),
                                    "tool_rollup_entries": len(writer._tool_rollups)})
                    print(f"minute {minute + 1:4d}: {current / 2**20:7.1f} MB traced, "
                          f"{len(writer._rollups):5d} rollup + {len(writer._tool_rollups):5d} tool-rollup "
                          "accumulators cached", flush=True)
            cpu = time.process_time() - started
        finally:
            tracemalloc.stop()
    result = {"minutes": args.minutes, "dims": args.dims, "calls_per_minute": args.calls, "samples": samples,
              "cpu_s": round(cpu, 1), "at": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
