"""Ingest benchmark: a separate load process sends realistic LLM traces over OTLP/gRPC on loopback
to a real `llmobs-tui serve`; reports sustained committed spans/s, export latency, CPU, peak RSS and
database bytes per span.

    python -m bench.ingest                 # 30 s at full speed, 8 requests in flight
    python -m bench.ingest --seconds 60 --inflight 4 --decoders 2

"Committed" is exact: the server answers an export only after its COMMIT, and the load is a closed
loop, so every counted span was durable when counted.

The workload (per trace, 8 spans, like perf-notes'): an HTTP root, an agent, five LLM calls
(planner, two tool-driven calls, composer, one embedding) and a tool span; LLM spans carry ≈25
attributes with ≈2 KB of prompt/completion JSON. Requests hold 512 spans. The load process builds a
handful of requests once and rewrites only their trace/span ids before each send, so it costs the
2-core machine almost nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_TRACE = 8


# --- the workload --------------------------------------------------------------------------------


def _content(rng, n_chars: int) -> str:
    words = ("the", "order", "customer", "refund", "policy", "shipping", "invoice", "please", "summarise",
             "account", "status", "tracking", "number", "delivery", "weather", "forecast", "agent", "tool")
    text = " ".join(rng.choice(words) for _ in range(n_chars // 6))
    return text[:n_chars]


def build_request(seed: int, traces: int):
    """One ExportTraceServiceRequest of `traces` agentic traces with placeholder ids."""
    import random

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    from receiver.otlp import to_any_value

    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (("service.name", "support-bot"), ("service.version", "1.4.2"), ("deployment.environment", "prod"),
                 ("telemetry.sdk.name", "opentelemetry"), ("telemetry.sdk.language", "python")):
        rs.resource.attributes.add(key=k, value=AnyValue(string_value=v))
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai_v2"
    ss.scope.version = "2.1b0"

    def kvs(span, attrs):
        for key, value in attrs.items():
            span.attributes.append(KeyValue(key=key, value=to_any_value(value)))

    t0 = 1_700_000_000 * 10**9  # rewritten per send
    for t in range(traces):
        feature = rng.choice(["checkout", "support", "search", "onboarding"])
        tenant = rng.choice(["acme", "globex", "initech", "umbrella", "hooli"])
        layout = [  # (span index, parent index, name, kind)
            (0, None, "POST /chat", "root"), (1, 0, "invoke_agent support", "agent"),
            (2, 1, "chat gpt-4o", "llm"), (3, 1, "execute_tool search_orders", "tool"),
            (4, 3, "chat gpt-4o-mini", "llm"), (5, 3, "embeddings text-embedding-3-small", "embedding"),
            (6, 1, "chat claude-sonnet-4-5", "llm"), (7, 1, "chat o4-mini", "llm"),
        ]
        for index, parent, name, kind in layout:
            span = ss.spans.add()
            span.trace_id = bytes([0xEE]) * 8 + t.to_bytes(4, "big") + b"\xee\xee\xee\xee"
            span.span_id = bytes([0xDD, 0xDD]) + t.to_bytes(4, "big") + bytes([index, 0xDD])
            if parent is not None:
                span.parent_span_id = bytes([0xDD, 0xDD]) + t.to_bytes(4, "big") + bytes([parent, 0xDD])
            span.name = name
            span.kind = 2 if kind == "root" else (3 if kind in ("llm", "embedding") else 1)
            start = t0 + index * 50_000_000
            span.start_time_unix_nano = start
            span.end_time_unix_nano = start + rng.randint(300, 4000) * 1_000_000
            common = {"app.llm.feature": feature, "app.llm.tenant.id": tenant, "user.id": f"u{rng.randint(1, 9999)}",
                      "session.id": f"s{rng.randint(1, 999)}"}
            if kind == "root":
                kvs(span, {"http.request.method": "POST", "http.route": "/chat", "http.response.status_code": 200,
                           "url.scheme": "https", "server.address": "api.example.com", **common})
            elif kind == "agent":
                kvs(span, {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support",
                           "gen_ai.agent.id": "agt_1", "gen_ai.provider.name": "openai", **common})
            elif kind == "tool":
                kvs(span, {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_orders",
                           "gen_ai.tool.call.id": f"call_{t}", "gen_ai.tool.type": "function",
                           "gen_ai.tool.call.arguments": json.dumps({"q": _content(rng, 60)}),
                           "gen_ai.tool.call.result": json.dumps({"orders": [_content(rng, 120)]})})
            else:
                model = name.split(" ", 1)[1]
                provider = "anthropic" if model.startswith("claude") else "openai"
                prompt = json.dumps([
                    {"role": "system", "parts": [{"type": "text", "content": _content(rng, 300)}]},
                    {"role": "user", "parts": [{"type": "text", "content": _content(rng, 1100)}]}])
                completion = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": _content(rng, 500)}],
                                          "finish_reason": "stop"}])
                inp = rng.randint(800, 6000)
                attrs = {
                    "gen_ai.operation.name": "embeddings" if kind == "embedding" else "chat",
                    "gen_ai.provider.name": provider, "gen_ai.request.model": model,
                    "gen_ai.response.model": model, "gen_ai.response.id": f"resp_{t}_{index}",
                    "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 1024, "gen_ai.request.top_p": 1.0,
                    "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": rng.randint(20, 600),
                    "gen_ai.usage.cache_read.input_tokens": rng.choice([0, 0, inp // 2]),
                    "gen_ai.response.finish_reasons": ["stop"], "server.address": f"api.{provider}.com",
                    "server.port": 443, "gen_ai.request.stream": True,
                    "gen_ai.response.time_to_first_chunk": rng.uniform(0.15, 0.9),
                    "gen_ai.conversation.id": f"conv_{rng.randint(1, 500)}",
                    "app.llm.prompt.template.id": "support-v", "app.llm.prompt.template.version": "7",
                    "gen_ai.input.messages": prompt, "gen_ai.output.messages": completion, **common,
                }
                if model == "o4-mini":
                    attrs["gen_ai.usage.reasoning.output_tokens"] = 128
                kvs(span, attrs)
    return req


class Template:
    """A serialized request whose ids and times are rewritten in place before each send."""

    def __init__(self, seed: int, traces: int) -> None:
        self.data = bytearray(build_request(seed, traces).SerializeToString())
        self.trace_offsets = [m.start() for m in re.finditer(re.escape(b"\xee" * 8), self.data)]
        self.span_offsets = [m.start() for m in re.finditer(re.escape(b"\xdd\xdd"), self.data)]
        self.spans = traces * SPANS_PER_TRACE

    def render(self, counter: int) -> bytes:
        # Real trace ids are random: a multiplicative hash keeps index inserts as scattered as theirs.
        prefix = (counter * 0x9E3779B97F4A7C15 % 2**64).to_bytes(8, "big")
        data = self.data
        for offset in self.trace_offsets:
            data[offset:offset + 8] = prefix
        marker = (counter & 0xFFFF).to_bytes(2, "big")
        for offset in self.span_offsets:
            data[offset:offset + 2] = marker
        return bytes(data)


# --- the load process ------------------------------------------------------------------------------


def load_process(address: str, seconds: float, inflight: int, result_queue, ready, go) -> None:
    import grpc

    templates = [Template(seed, 64) for seed in range(4)]  # 64 traces × 8 spans = 512 spans per request
    lock = threading.Lock()
    counter = [os.getpid() << 20]
    latencies: list[float] = []
    spans = [0]
    errors = [0]

    def worker() -> None:
        channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
        export = channel.unary_unary(TRACE_METHOD)
        deadline = end_at[0]
        i = 0
        while time.monotonic() < deadline:
            with lock:
                counter[0] += 1
                n = counter[0]
            template = templates[i % len(templates)]
            i += 1
            body = template.render(n)
            started = time.perf_counter()
            try:
                export(body, timeout=60)
            except grpc.RpcError:
                with lock:
                    errors[0] += 1
                time.sleep(0.05)
                continue
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                spans[0] += template.spans
        channel.close()

    ready.set()
    go.wait()
    end_at = [time.monotonic() + seconds]
    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result_queue.put({"spans": spans[0], "elapsed": time.monotonic() - started, "latencies": latencies,
                      "errors": errors[0], "cpu": sum(psutil.Process().cpu_times()[:2])})


# --- the run -----------------------------------------------------------------------------------------


def tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _holds(proc: psutil.Process, db: Path) -> bool:
    try:
        return any(f.path == str(db) for f in proc.open_files())
    except psutil.Error:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--inflight", type=int, default=8, help="concurrent export requests")
    parser.add_argument("--decoders", type=int, default=0, help="decoder processes (default: one per core)")
    parser.add_argument("--db", help="store file (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="llmobs-bench-"))
    db = Path(args.db) if args.db else workdir / "bench.db"
    cmd = [sys.executable, "-m", "llmobs_tui", "serve", "--db", str(db), "--grpc-port", "0", "--http-port", "0",
           "--decoders", str(args.decoders), "--stats-every", "3600s"]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = server.stdout.readline()
    match = re.search(r"OTLP/gRPC on (\S+?),", line)
    if not match:
        print(line + server.stdout.read(), file=sys.stderr)
        return 1
    address = match.group(1)
    server_proc = psutil.Process(server.pid)
    time.sleep(1.0)  # let the children finish importing

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    ready, go = ctx.Event(), ctx.Event()
    load = ctx.Process(target=load_process, args=(address, args.seconds, args.inflight, results, ready, go))
    load.start()
    ready.wait(60)

    procs = tree(server_proc)
    cpu_before = tree_cpu(procs)
    per_process_before = {p.pid: tree_cpu([p]) for p in procs}
    peak_rss = 0
    sampling = True

    def sample() -> None:
        nonlocal peak_rss
        while sampling:
            rss = 0
            for p in tree(server_proc):
                try:
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            peak_rss = max(peak_rss, rss)
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wall_start = time.monotonic()
    go.set()
    outcome = results.get(timeout=args.seconds + 120)
    wall = time.monotonic() - wall_start
    cpu_after = tree_cpu(tree(server_proc))
    roles = {}
    for p in tree(server_proc):
        role = "main" if p.pid == server.pid else ("writer" if _holds(p, db) else "decoder")
        roles[role] = roles.get(role, 0.0) + (tree_cpu([p]) - per_process_before.get(p.pid, 0.0)) / wall
    sampling = False
    load.join(30)

    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=120)
    db_bytes = sum(os.path.getsize(f"{db}{s}") for s in ("", "-wal") if os.path.exists(f"{db}{s}"))
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        stored = conn.execute("SELECT count(*) FROM spans").fetchone()[0]

    lat = sorted(outcome["latencies"])
    spans_per_s = outcome["spans"] / outcome["elapsed"]
    report = {
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, Python {platform.python_version()}",
        "seconds": round(outcome["elapsed"], 1),
        "inflight": args.inflight,
        "decoders": args.decoders or psutil.cpu_count(),
        "spans_acknowledged": outcome["spans"],
        "spans_stored": stored,
        "spans_per_s": round(spans_per_s),
        "export_p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "export_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1) if lat else None,
        "rejected_requests": outcome["errors"],
        "server_cpu_cores": round((cpu_after - cpu_before) / wall, 2),
        "server_cpu_by_process": {k: round(v, 2) for k, v in sorted(roles.items())},
        "load_cpu_cores": round(outcome["cpu"] / wall, 2),
        "server_peak_rss_mb": round(peak_rss / 2**20),
        "db_bytes_per_span": round(db_bytes / max(1, stored)),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if stored < outcome["spans"]:
        print(f"ERROR: {outcome['spans'] - stored} acknowledged spans are missing", file=sys.stderr)
        return 1
    if not args.keep and not args.db:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
