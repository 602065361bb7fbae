"""serve's two per-span stages alone, in this process: the decoder's `Normalizer.decode_traces` and the
writer's `SpanWriter.write`, CPU µs per span each, on bench.ingest's request templates.

    python -m bench.components                       # agent workload, 40,960 spans
    python -m bench.components --workload heavy --spans 81920 --repeat 3 --json out.json
    python -m bench.components --walk both           # the decoder's compiled attribute walk against Python's

bench.ingest measures serve's whole process tree, where the stages share two cores with the load and
each other; this one times each stage with time.process_time, so a change to one can be compared on a
busy machine (the figures are a little lower than bench.ingest's per-process ones: no pipes, no
checkpointer, no other process in the caches). Every request is rendered with unique trace and span ids,
as the load process does; writes go to a fresh store in a temporary directory, in batches of 8 requests
(4,096 spans, about one group commit under load), and the search index is left out (bench.search_index).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.host_speed import reference_ms
from bench.ingest import Template, trace_prefix

T_NOW = 1_800_000_000 * 10**9
REQUESTS_PER_COMMIT = 8


def rendered_requests(spans: int, heavy: bool) -> list[bytes]:
    templates = [Template(seed, 64, heavy) for seed in range(4)]
    count = max(1, spans // templates[0].spans)
    return [templates[n % 4].render(trace_prefix(n, 0x5EED, b"\xbe\x7c\x00\x01"), b"\xa0\x01", T_NOW)
            for n in range(count)]


def measure_once(requests: list[bytes], work: Path, per_commit: int = REQUESTS_PER_COMMIT,
                 compiled_walk: bool = True, own_bytes: bool = True) -> dict[str, float]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from receiver import normalize
    from receiver.decoder_process import span_bytes_of
    from receiver.normalize import IngestOptions, Normalizer
    from receiver.prices import PriceTable
    from store.connection import WriterLock, open_writer
    from store.span_walk import COMPILED
    from store.writer import SpanWriter

    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    normalize.COMPILED_WALK = compiled_walk and COMPILED  # store/span_walk.py
    decoded = []
    gc.collect()
    started = time.process_time()
    for body in requests:
        request = ExportTraceServiceRequest.FromString(body)
        # As the decoder does: each unchanged span stored (and walked) as its own bytes in the body.
        span_bytes = span_bytes_of(body, request) if own_bytes else None
        decoded.append(normalizer.decode_traces(request, T_NOW, span_bytes=span_bytes))
    decode_s = time.process_time() - started
    spans = sum(len(rows) for rows, *_ in decoded)

    path = work / "components.db"
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    try:
        writer = SpanWriter(db, clock=lambda: T_NOW)
        gc.collect()
        started = time.process_time()
        for i in range(0, len(decoded), per_commit):
            rows: list = []
            resources: dict = {}
            scopes: dict = {}
            for batch_rows, batch_resources, batch_scopes, _rejected in decoded[i:i + per_commit]:
                rows.extend(batch_rows)
                resources.update(batch_resources)
                scopes.update(batch_scopes)
            writer.write(rows, [], resources, scopes)
        write_s = time.process_time() - started
        stored = db.execute("SELECT count(*) FROM spans").fetchone()[0]
    finally:
        db.close()
        lock.release()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    if stored != spans:
        raise SystemExit(f"stored {stored} of {spans} decoded spans")
    return {"decode_us_per_span": decode_s / spans * 1e6, "write_us_per_span": write_s / spans * 1e6,
            "spans": spans}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=("agent", "heavy"), default="agent")
    parser.add_argument("--spans", type=int, default=40_960)
    parser.add_argument("--repeat", type=int, default=3, help="runs; each figure is reported per run and as the median")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--walk", choices=("compiled", "python", "both"), default="compiled",
                        help="the decoder's attribute walk (store/span_walk.py): compiled when built (default), "
                             "Python's, or both alternated run by run")
    parser.add_argument("--per-commit", type=int, default=REQUESTS_PER_COMMIT,
                        help=f"requests written per transaction (default {REQUESTS_PER_COMMIT}; under load serve's "
                             "group commit takes what is waiting, often 1–4)")
    parser.add_argument("--span-bytes", choices=("own", "serialized", "both"), default="own",
                        help="what the decoder stores and walks for an unchanged span: its own bytes in the "
                             "request (default, as serve does), upb's serialization of it, or both alternated")
    args = parser.parse_args(argv)
    requests = rendered_requests(args.spans, args.workload == "heavy")
    walks = [(walk, own) for walk in {"compiled": [True], "python": [False], "both": [True, False]}[args.walk]
             for own in {"own": [True], "serialized": [False], "both": [True, False]}[args.span_bytes]]
    runs: dict[tuple[bool, bool], list[dict[str, float]]] = {walk: [] for walk in walks}
    host_before = reference_ms()  # bench/host_speed.py: the shared host's speed around the runs
    with tempfile.TemporaryDirectory(prefix="llmobs-components-") as tmp:
        for _ in range(args.repeat):
            for walk in walks:
                runs[walk].append(measure_once(requests, Path(tmp), args.per_commit, *walk))
    host = {"before": host_before, "after": reference_ms()}
    results = []
    for (walk, own), walk_runs in runs.items():
        from store.span_walk import COMPILED

        name = "compiled" if walk and COMPILED else "python"
        span_bytes = "own" if own else "serialized"
        result = {
            "workload": args.workload, "walk": name, "span_bytes": span_bytes, "spans": walk_runs[0]["spans"],
            "runs": walk_runs,
            "decode_us_per_span_median": statistics.median(r["decode_us_per_span"] for r in walk_runs),
            "write_us_per_span_median": statistics.median(r["write_us_per_span"] for r in walk_runs),
            "at": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "host_reference_ms": host,
        }
        results.append(result)
        print(f"{args.workload} ({name} walk, {span_bytes} span bytes): {result['spans']:,} spans; decode "
              + " · ".join(f"{r['decode_us_per_span']:.1f}" for r in walk_runs) + " µs/span; write "
              + " · ".join(f"{r['write_us_per_span']:.1f}" for r in walk_runs) + " µs/span (CPU); host reference "
              f"{host['before']} → {host['after']} ms")
    if args.json:
        args.json.write_text(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
