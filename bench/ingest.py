"""Ingest benchmark: a separate load process sends realistic LLM traces over OTLP/gRPC on loopback
to a real `llmobs-tui serve`; reports sustained committed spans/s, export latency, CPU, peak RSS and
database bytes per span.

    python -m bench.ingest                 # 30 s at full speed, 8 requests in flight
    python -m bench.ingest --seconds 60 --inflight 4 --decoders 2

"Committed" is exact: the server answers an export only after its COMMIT, and the load is a closed
loop, so every counted span was durable when counted. After the run every acknowledged span is looked
up in the store by its ids ("acknowledged N, stored N, missing 0"); a difference is attributed from
serve's own counters (duplicates it dropped, spans evicted after commit) and only an unexplained one
fails the run (exit 1).

The workload (per trace, 8 spans, like perf-notes'): an HTTP root, an agent, five LLM calls
(planner, two tool-driven calls, composer, one embedding) and a tool span; LLM spans carry ≈25
attributes with ≈2 KB of prompt/completion JSON. Requests hold 512 spans. The load process builds a
handful of requests once and, before each send, copies one and rewrites only its trace/span ids and
timestamps, so it costs the 2-core machine almost nothing.

Ids: every request gets a fresh number from one counter; a trace id is
scramble(number) ^ run key (8 bytes, scattered like real random ids) + run tag (4 bytes) + trace
index (4 bytes), the run key and tag random per run, so no two requests of a run and no two runs (on
the same `--db`) share a trace id. Timestamps: each request's traces end at the moment it is sent
(the template's relative offsets are kept), so the default 7-day retention never touches them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import secrets
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench import TRACE_METHOD, Serve, attribute, tree, tree_cpu
from bench.host_speed import one_sample_ms, reference_ms

SPANS_PER_TRACE = 8
T0 = 1_700_000_000 * 10**9  # the templates' placeholder time base, replaced before each send


# --- the workload --------------------------------------------------------------------------------


def _content(rng, n_chars: int) -> str:
    words = ("the", "order", "customer", "refund", "policy", "shipping", "invoice", "please", "summarise",
             "account", "status", "tracking", "number", "delivery", "weather", "forecast", "agent", "tool")
    text = " ".join(rng.choice(words) for _ in range(n_chars // 6))
    return text[:n_chars]


def _llm_attributes(rng, model: str, t: int, index: int, operation: str) -> dict:
    """The ≈20 attributes of an instrumented LLM call (both workloads)."""
    provider = "anthropic" if model.startswith("claude") else "openai"
    inp = rng.randint(800, 6000)
    attributes = {
        "gen_ai.operation.name": operation, "gen_ai.provider.name": provider, "gen_ai.request.model": model,
        "gen_ai.response.model": model, "gen_ai.response.id": f"resp_{t}_{index}",
        "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 1024, "gen_ai.request.top_p": 1.0,
        "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": rng.randint(20, 600),
        "gen_ai.usage.cache_read.input_tokens": rng.choice([0, 0, inp // 2]),
        "gen_ai.response.finish_reasons": ["stop"], "server.address": f"api.{provider}.com",
        "server.port": 443, "gen_ai.request.stream": True,
        "gen_ai.response.time_to_first_chunk": rng.uniform(0.15, 0.9),
        "gen_ai.conversation.id": f"conv_{rng.randint(1, 500)}",
        "app.llm.prompt.template.id": "support-v", "app.llm.prompt.template.version": "7",
    }
    if model == "o4-mini":
        attributes["gen_ai.usage.reasoning.output_tokens"] = 128
    return attributes


def build_request(seed: int, traces: int, heavy: bool = False):
    """One ExportTraceServiceRequest of `traces` agentic traces with placeholder ids and times; with
    `heavy`, every span an LLM call whose ≈4 KB of prompt and completion ride in span events."""
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

    t0 = T0
    for t in range(traces):
        feature = rng.choice(["checkout", "support", "search", "onboarding"])
        tenant = rng.choice(["acme", "globex", "initech", "umbrella", "hooli"])
        layout = [  # (span index, parent index, name, kind)
            (0, None, "POST /chat", "root"), (1, 0, "invoke_agent support", "agent"),
            (2, 1, "chat gpt-4o", "llm"), (3, 1, "execute_tool search_orders", "tool"),
            (4, 3, "chat gpt-4o-mini", "llm"), (5, 3, "embeddings text-embedding-3-small", "embedding"),
            (6, 1, "chat claude-sonnet-4-5", "llm"), (7, 1, "chat o4-mini", "llm"),
        ]
        if heavy:  # perf-notes' workload: LLM spans only, content in events (a chain of 8 calls)
            models = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "o4-mini")
            layout = [(i, None if i == 0 else i - 1, f"chat {models[i % 4]}", "llm_events") for i in range(8)]
        for index, parent, name, kind in layout:
            span = ss.spans.add()
            span.trace_id = b"\xee" * 12 + t.to_bytes(4, "big")
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
            elif kind == "llm_events":
                model = name.split(" ", 1)[1]
                kvs(span, {**_llm_attributes(rng, model, t, index, "chat"), **common})
                for event_name, key, text in (
                        ("gen_ai.content.prompt", "gen_ai.prompt", json.dumps(
                            [{"role": "system", "content": _content(rng, 600)},
                             {"role": "user", "content": _content(rng, 1400)}])),
                        ("gen_ai.content.completion", "gen_ai.completion", json.dumps(
                            [{"role": "assistant", "content": _content(rng, 2000)}]))):
                    event = span.events.add()
                    event.time_unix_nano = start + 1_000_000
                    event.name = event_name
                    event.attributes.append(KeyValue(key=key, value=to_any_value(text)))
            else:
                model = name.split(" ", 1)[1]
                prompt = json.dumps([
                    {"role": "system", "parts": [{"type": "text", "content": _content(rng, 300)}]},
                    {"role": "user", "parts": [{"type": "text", "content": _content(rng, 1100)}]}])
                completion = json.dumps([{"role": "assistant",
                                           "parts": [{"type": "text", "content": _content(rng, 500)}],
                                           "finish_reason": "stop"}])
                attrs = {**_llm_attributes(rng, model, t, index, "embeddings" if kind == "embedding" else "chat"),
                         "gen_ai.input.messages": prompt, "gen_ai.output.messages": completion, **common}
                kvs(span, attrs)
    return req


class Template:
    """A serialized request; render() returns a fresh copy with its ids and times rewritten.

    The template itself is never modified after construction, so the load threads can share it.
    """

    def __init__(self, seed: int, traces: int, heavy: bool = False) -> None:
        request = build_request(seed, traces, heavy)
        data = request.SerializeToString()
        self.data = data
        self.spans = traces * SPANS_PER_TRACE
        # Offsets of the fields to rewrite, found by their wire tags (Span: trace_id = field 1,
        # span_id 2, parent_span_id 4, start/end time 7/8 fixed64) and checked to be exactly the
        # expected number, so a stray byte pattern inside an attribute can never be rewritten.
        self.trace_offsets = [m.start() + 2 for m in re.finditer(re.escape(b"\x0a\x10" + b"\xee" * 12), data)]
        self.span_offsets = [m.start() + 2 for m in re.finditer(rb"[\x12\x22]\x08\xdd\xdd", data)]
        self.time_offsets: list[tuple[int, int]] = []
        for m in re.finditer(rb"\x39(.{8})\x41(.{8})", data, re.DOTALL):
            start, end = struct.unpack("<Q", m.group(1))[0], struct.unpack("<Q", m.group(2))[0]
            if T0 <= start <= end < T0 + 3600 * 10**9:
                self.time_offsets += [(m.start() + 1, start - T0), (m.start() + 10, end - T0)]
        assert len(self.trace_offsets) == self.spans, len(self.trace_offsets)
        assert len(self.span_offsets) == self.spans + traces * (SPANS_PER_TRACE - 1), len(self.span_offsets)
        # Span events (heavy workload): time_unix_nano (fixed64, field 1) right before the name.
        for m in re.finditer(rb"\x09(.{8})\x12[\x15\x19]gen_ai\.content\.", data, re.DOTALL):
            self.time_offsets.append((m.start() + 1, struct.unpack("<Q", m.group(1))[0] - T0))
        events = 2 * self.spans if heavy else 0
        assert len(self.time_offsets) == 2 * self.spans + events, len(self.time_offsets)
        # Each request's traces end when it is sent.
        self.duration_ns = max(delta for _, delta in self.time_offsets)

    def render(self, prefix: bytes, marker: bytes, now_ns: int) -> bytes:
        """A new body: trace ids start with the 12-byte `prefix`, span ids with the 2-byte `marker`,
        times are now. Touches only a local copy (the template is shared by all load threads)."""
        data = bytearray(self.data)
        for offset in self.trace_offsets:
            data[offset:offset + 12] = prefix
        for offset in self.span_offsets:
            data[offset:offset + 2] = marker
        base = now_ns - self.duration_ns
        pack = struct.Struct("<Q").pack_into
        for offset, delta in self.time_offsets:
            pack(data, offset, base + delta)
        return bytes(data)


def trace_prefix(number: int, run_key: int, run_tag: bytes) -> bytes:
    """The first 12 bytes of every trace id in request `number` of the run (the last 4: trace index).
    Real trace ids are random: a multiplicative hash keeps index inserts as scattered as theirs; it is
    a bijection of `number`, so requests of one run never share ids, and the random run key and tag
    keep runs apart."""
    return ((number * 0x9E3779B97F4A7C15 % 2**64) ^ run_key).to_bytes(8, "big") + run_tag


# --- the load process ------------------------------------------------------------------------------


def load_process(address: str, seconds: float, inflight: int, run_key: int, run_tag: bytes, result_queue, ready,
                 go, heavy: bool = False, rate: float | None = None) -> None:
    """Sends for `seconds`: at full speed with `inflight` requests in flight, or, with `rate`, request
    n at its due time (n × spans per request / rate after the start) so that a long run can hold a
    steady load below capacity."""
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    templates = [Template(seed, 64, heavy) for seed in range(4)]  # 64 traces × 8 spans = 512 spans per request
    lock = threading.Lock()
    counter = [0]
    latencies: list[float] = []
    acked: list[tuple[int, int, int]] = []  # (request number, template spans, spans the server rejected)
    failed: list[tuple[int, int, str]] = []  # (request number, template spans, status): answered with an error

    def worker(first: int) -> None:
        channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
        export = channel.unary_unary(TRACE_METHOD)
        deadline = end_at[0]
        i = first
        while time.monotonic() < deadline:
            with lock:
                counter[0] += 1
                n = counter[0]
            template = templates[i % len(templates)]
            i += 1
            if rate:
                due = begun + (n - 1) * template.spans / rate
                if due > deadline:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
            body = template.render(trace_prefix(n, run_key, run_tag), (n & 0xFFFF).to_bytes(2, "big"),
                                   time.time_ns())
            started = time.perf_counter()
            try:
                answer = export(body, timeout=60)
            except grpc.RpcError as exc:
                with lock:
                    failed.append((n, template.spans, exc.code().name))
                time.sleep(0.05)
                continue
            elapsed = time.perf_counter() - started
            rejected = ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans
            with lock:
                latencies.append(elapsed)
                acked.append((n, template.spans, rejected))
        channel.close()

    ready.set()
    go.wait()
    end_at = [time.monotonic() + seconds]
    started = begun = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result_queue.put({"spans": sum(s - r for _, s, r in acked), "elapsed": time.monotonic() - started,
                      "latencies": latencies, "acked": acked, "failed": failed,
                      "cpu": sum(psutil.Process().cpu_times()[:2])})


# --- the run -----------------------------------------------------------------------------------------


def _pss(pid: int) -> int:
    """Proportional set size in bytes (Linux); 0 where the kernel does not say."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _holds(proc: psutil.Process, db: Path) -> bool:
    try:
        return any(f.path == str(db) for f in proc.open_files())
    except psutil.Error:
        return False


def check_store(db: Path, run_key: int, run_tag: bytes, acked: list[tuple[int, int, int]],
                failed: list[tuple[int, int, str]]) -> dict:
    """Look every request of this run up in the store by its ids: one index range per request (its
    trace ids share a 12-byte prefix), counted exactly, since (trace_id, span_id) is unique there."""
    import sqlite3

    def stored(conn: sqlite3.Connection, number: int) -> int:
        prefix = trace_prefix(number, run_key, run_tag)
        return conn.execute("SELECT count(*) FROM spans WHERE trace_id BETWEEN ? AND ?",
                            (prefix + b"\x00" * 4, prefix + b"\xff" * 4)).fetchone()[0]

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        found_acked = 0
        short_requests = 0
        for number, spans, rejected in acked:
            n = stored(conn, number)
            # A request's spans are all stored or the request was not acknowledged; the server may
            # reject single spans (partial success), which then were not acknowledged either.
            found_acked += min(n, spans - rejected)
            short_requests += n < spans - rejected
        found_failed = sum(stored(conn, number) for number, _, _ in failed)
        total = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
    acknowledged = sum(s - r for _, s, r in acked)
    return {"acknowledged": acknowledged, "stored": found_acked, "missing": acknowledged - found_acked,
            "short_requests": short_requests, "failed_requests": len(failed),
            "failed_spans": sum(s for _, s, _ in failed), "failed_but_stored": found_failed,
            "failed_codes": sorted({code for *_, code in failed}),
            "run_stored": found_acked + found_failed, "store_total": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workload", choices=("agent", "heavy"), default="agent",
                        help="agent: 8-span agent traces, ≈2 KB content in attributes (default); heavy: "
                             "LLM spans only, ≈25 attributes and ≈4 KB of prompt/completion in span events")
    parser.add_argument("--inflight", type=int, default=8, help="concurrent export requests")
    parser.add_argument("--rate", type=float, help="spans/s to send (default: as fast as serve answers); for long "
                                                   "runs of memory over time below capacity")
    parser.add_argument("--decoders", type=int, default=0, help="decoder processes (default: one per core)")
    parser.add_argument("--db", help="store file (default: a temporary directory); may already hold data")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--no-search-index", action="store_true",
                        help="run serve without the content indexer (store/content_index.py)")
    parser.add_argument("--compare-index", action="store_true",
                        help="run twice, indexer off then on, and compare ingest (same machine, same run)")
    args = parser.parse_args(argv)
    if args.compare_index:
        return compare_index(args)
    return run(args)[0]


def compare_index(args: argparse.Namespace) -> int:
    """Ingest with the content indexer off, then on, each on a fresh store: the indexer works off the
    ack path, so its cost shows as lower spans/s only where it takes the writer's time or CPU."""
    reports = {}
    for label, off in (("index_off", True), ("index_on", False)):
        run_args = argparse.Namespace(**{**vars(args), "no_search_index": off, "db": None, "json": None})
        code, report = run(run_args)
        if code:
            return code
        reports[label] = report
    off, on = reports["index_off"], reports["index_on"]
    summary = {
        "spans_per_s_index_off": off["spans_per_s"],
        "spans_per_s_index_on": on["spans_per_s"],
        "ingest_change_pct": round((on["spans_per_s"] / off["spans_per_s"] - 1) * 100, 1),
        "server_cpu_us_per_span_index_off": off["server_cpu_us_per_span"],
        "server_cpu_us_per_span_index_on": on["server_cpu_us_per_span"],
        "export_p99_ms_index_off": off["export_p99_ms"],
        "export_p99_ms_index_on": on["export_p99_ms"],
        "db_bytes_per_span_index_off": off["db_bytes_per_span"],
        "db_bytes_per_span_index_on": on["db_bytes_per_span"],
        **{k: v for k, v in on.items() if k.startswith("index_")},
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, **reports}, indent=2) + "\n")
    return 0


def run(args: argparse.Namespace) -> tuple[int, dict]:
    workdir = None if args.db else Path(tempfile.mkdtemp(prefix="llmobs-bench-"))
    db = Path(args.db) if args.db else workdir / "bench.db"
    run_key, run_tag = secrets.randbits(64), secrets.token_bytes(4)
    server = Serve(db, "--decoders", str(args.decoders), *(["--no-search-index"] if args.no_search_index else []))
    if server.address is None:
        server.stop(10)
        print(server.output(), file=sys.stderr)
        return 1, {}
    address = server.address
    server_proc = psutil.Process(server.pid)
    time.sleep(1.0)  # let the children finish importing
    host_before = reference_ms()  # serve idle: bench/host_speed.py

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    ready, go = ctx.Event(), ctx.Event()
    load = ctx.Process(target=load_process,
                       args=(address, args.seconds, args.inflight, run_key, run_tag, results, ready, go,
                             args.workload == "heavy", args.rate))
    load.start()
    ready.wait(60)

    procs = tree(server_proc)
    cpu_before = tree_cpu(procs)
    per_process_before = {p.pid: tree_cpu([p]) for p in procs}
    peak_rss = 0
    peak_rss_by_role: dict[str, int] = {}
    rss_over_time: list[tuple[float, int]] = []  # (seconds into the run, MB of the whole tree)
    # PSS next to RSS: each process's RSS counts the shared pages of Python, its libraries and the
    # store's mapped file again; PSS splits them between the processes, so the tree's sum is its footprint.
    peak_pss = 0
    host_during: list[float] = []  # bench/host_speed.py's reference, sampled while the load runs
    sampling = True

    def sample() -> None:
        nonlocal peak_rss, peak_pss
        next_mark = 0.0
        next_host_sample = 0.0
        while sampling:
            rss = pss = 0
            by_role: dict[str, int] = {}
            for p in tree(server_proc):
                try:
                    size = p.memory_info().rss
                    role = "main" if p.pid == server.pid else ("writer" if _holds(p, db) else "decoders")
                except psutil.NoSuchProcess:
                    continue
                rss += size
                pss += _pss(p.pid)
                by_role[role] = by_role.get(role, 0) + size
            peak_rss = max(peak_rss, rss)
            peak_pss = max(peak_pss, pss)
            elapsed = time.monotonic() - wall_start if go.is_set() else 0.0
            if go.is_set() and elapsed >= next_mark:  # ten samples over the run: is memory flat?
                rss_over_time.append((round(elapsed), round(rss / 2**20)))
                next_mark += args.seconds / 10
            for role, size in by_role.items():
                peak_rss_by_role[role] = max(peak_rss_by_role.get(role, 0), size)
            if go.is_set() and time.monotonic() >= next_host_sample:
                host_during.append(one_sample_ms())
                next_host_sample = time.monotonic() + 3.0
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wall_start = time.monotonic()
    go.set()
    outcome = results.get(timeout=args.seconds + 120)
    wall = time.monotonic() - wall_start
    cpu_after = tree_cpu(tree(server_proc))
    roles: dict[str, float] = {}  # CPU-seconds per process role during the run
    for p in tree(server_proc):
        role = "main" if p.pid == server.pid else ("writer" if _holds(p, db) else "decoder")
        roles[role] = roles.get(role, 0.0) + tree_cpu([p]) - per_process_before.get(p.pid, 0.0)
    sampling = False
    load.join(30)
    index = {} if args.no_search_index else index_catch_up(db, server_proc)

    time.sleep(1.2)  # the writer reports its counters every second: let one report follow the last commit
    counters = server.stop()
    host_after = reference_ms()
    db_bytes = sum(os.path.getsize(f"{db}{s}") for s in ("", "-wal") if os.path.exists(f"{db}{s}"))
    check = check_store(db, run_key, run_tag, outcome["acked"], outcome["failed"])

    lat = sorted(outcome["latencies"])
    acknowledged = outcome["spans"]
    spans_per_s = acknowledged / outcome["elapsed"]
    server_cpu = cpu_after - cpu_before

    def us_per_span(cpu_seconds: float) -> float | None:
        return round(cpu_seconds / acknowledged * 1e6, 1) if acknowledged else None

    deleted_after_commit = None if counters.committed is None else counters.committed - check["run_stored"]
    report = {
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, Python {platform.python_version()}",
        # The shared host's speed around the run (lower is faster): CPU figures compare at similar values.
        "host_reference_ms": {"before": host_before,
                              "during": round(statistics.median(host_during), 1) if host_during else None,
                              "after": host_after},
        "run": (run_key.to_bytes(8, "big") + run_tag).hex(),
        "workload": args.workload,
        "seconds": round(outcome["elapsed"], 1),
        "inflight": args.inflight,
        "decoders": args.decoders or psutil.cpu_count(),
        "spans_acknowledged": acknowledged,
        "spans_stored": check["stored"],
        "spans_missing": check["missing"],
        "spans_per_s": round(spans_per_s),
        "export_p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "export_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1) if lat else None,
        "rejected_requests": len(outcome["failed"]),
        "server_cpu_cores": round(server_cpu / wall, 2),
        "server_cpu_us_per_span": us_per_span(server_cpu),
        "server_cpu_by_process": {k: round(v / wall, 2) for k, v in sorted(roles.items())},
        "server_cpu_us_per_span_by_process": {k: us_per_span(v) for k, v in sorted(roles.items())},
        "load_cpu_cores": round(outcome["cpu"] / wall, 2),
        "load_cpu_us_per_span": us_per_span(outcome["cpu"]),
        # The indexer works after the ack (store/content_index.py): what is left when the load stops
        # is indexed afterwards, and its CPU belongs to the same spans.
        "server_cpu_us_per_span_with_index": us_per_span(server_cpu + index.get("index_catch_up_cpu_s", 0.0)),
        "server_peak_rss_mb": round(peak_rss / 2**20),
        "server_peak_pss_mb": round(peak_pss / 2**20) if peak_pss else None,
        "server_peak_rss_mb_by_process": {k: round(v / 2**20) for k, v in sorted(peak_rss_by_role.items())},
        "server_rss_mb_over_time": [f"{t}s: {mb}" for t, mb in rss_over_time],
        "db_bytes_per_span": round(db_bytes / max(1, check["store_total"])),
        "serve_accepted": counters.accepted,
        "serve_committed": counters.committed,
        "serve_duplicates": counters.duplicates,
        "deleted_after_commit": deleted_after_commit,
        **index,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")

    print(f"acknowledged {acknowledged:,}, stored {check['stored']:,}, missing {check['missing']:,} "
          f"(every acknowledged span looked up by its ids; store holds {check['store_total']:,} spans)")
    print(f"{spans_per_s:,.0f} spans/s at {server_cpu / max(1, acknowledged) * 1e6:,.1f} µs of server CPU per span "
          f"({server_cpu / wall:.2f} cores); {report['server_cpu_us_per_span_with_index']} µs with the search "
          f"index's catch-up after the load; peak RSS {report['server_peak_rss_mb']} MB "
          f"(PSS {report['server_peak_pss_mb']} MB); host reference {host_before} ms before, "
          f"{report['host_reference_ms']['during']} during, {host_after} after "
          f"(bench.host_speed)")
    if check["failed_requests"]:
        print(f"{check['failed_requests']} requests ({check['failed_spans']:,} spans) were answered with an error "
              f"({', '.join(check['failed_codes'])}) and not counted; {check['failed_but_stored']:,} of their "
              f"spans were stored anyway (committed before the client gave up)")
    lines, unexplained = attribute(check["missing"], counters, deleted_after_commit)
    for line in lines:
        print(line)
    if unexplained:
        print(f"ERROR: {unexplained:,} acknowledged spans are missing from the store and serve's counters do "
              f"not explain them ({check['short_requests']} requests short); store kept at {db}", file=sys.stderr)
        return 1, report
    if workdir is not None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0, report


def index_catch_up(db: Path, server_proc: psutil.Process, timeout_s: float = 600) -> dict:
    """The content index's lag when the load stops, and the time and writer CPU it takes to catch up
    (the writer does nothing else then: its CPU per span indexed is the indexer's cost)."""
    from store.connection import open_reader
    from store.content_index import index_lag

    writer = next((p for p in tree(server_proc) if _holds(p, db)), None)
    reader = open_reader(db)
    try:
        lag_at_end = index_lag(reader)[0]
        cpu_before = tree_cpu([writer]) if writer else 0.0
        started = time.monotonic()
        lag = lag_at_end
        while lag and time.monotonic() - started < timeout_s:
            time.sleep(0.1)
            lag = index_lag(reader)[0]
        catch_up_s = time.monotonic() - started
        cpu = (tree_cpu([writer]) if writer else 0.0) - cpu_before
        indexed = reader.execute("SELECT count(*) FROM content_index").fetchone()[0]
    finally:
        reader.close()
    return {
        "index_lag_spans_at_end": lag_at_end,
        "index_catch_up_s": round(catch_up_s, 1) if lag_at_end else 0.0,
        "index_lag_spans_after_catch_up": lag,
        "index_cpu_us_per_span": round(cpu / (lag_at_end - lag) * 1e6, 1) if lag_at_end > lag else None,
        "index_catch_up_cpu_s": round(cpu, 2),
        "index_rows": indexed,
    }


if __name__ == "__main__":
    sys.exit(main())
