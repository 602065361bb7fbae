"""TUI benchmark: a week of traffic (~1M spans) in the store, ingest running at ≥2,000 spans/s, and
the TUI's own queries timed: overview refresh (1h and 24h), trace list, opening a 500-span trace, the
critical path of a 2,000-span trace, the Sessions screen over 100k conversations (a store of its own,
bench/results/sessions.db, with the writer's CPU per span with and without conversation ids);
plus the TUI process's RSS and the time from launch to the first frame with data.

    python -m bench.tui                    # builds bench/results/week.db once (~2 min), then measures
    python -m bench.tui --rebuild          # rebuild the store
    python -m bench.tui --db /tmp/small.db --store-spans 20000 --rounds 5   # a quick run
    python -m bench.tui --sessions-only    # only the Sessions screen over 100k conversations (~1.5 min)
    python -m bench.tui --db bench/results/week3m.db --store-spans 3000000 --views-only --rounds 20
                                           # alert rules and 24 h views at 3M spans, no ingest load (~1 min;
                                           # builds the store once, ~30 min)

The ingest load's trace ids start from a random number each run, so a rerun on the same store adds
its spans (instead of sending ids the store already holds, which it drops as duplicates). The output
says how many spans the store held before and after, and checks that every span the load had
acknowledged is in the store; a difference is attributed from serve's own counters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import psutil

from bench import TRACE_METHOD, Serve, attribute, tree, tree_cpu

RESULTS = Path(__file__).resolve().parent / "results"
# The measurements' "now". Live (with the ingest load) it is the wall clock; `--views-only` on a store built
# earlier moves it to the store's newest span, so that a 24 h view covers a day of traffic, not its tail.
_clock_offset_s = 0.0


def clock() -> float:
    return time.time() + _clock_offset_s


def at_store_end(db: Path) -> float:
    """Move clock() to one second after the store's newest span starts; the offset, in seconds."""
    global _clock_offset_s
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        newest_ns = conn.execute("SELECT max(start_ns) FROM spans").fetchone()[0]
    finally:
        conn.close()
    _clock_offset_s = min(0.0, newest_ns / 1e9 + 1 - time.time()) if newest_ns else 0.0
    return _clock_offset_s
S = 1_000_000_000


def info_path(db: Path) -> Path:
    """What build_week knows about a store, next to it: week.db → week.json."""
    return db.with_suffix(".json")


def count_spans(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM spans").fetchone()[0]


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
                # The writer's connection leaves checkpoints to serve's checkpointer thread (autocheckpoint
                # off): without one here the WAL of a 3M-span build grew to 41 GB.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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
    plant_search_phrase(normalizer, writer, now)
    index_content(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    lock.release()
    from llmobs_tui.scenarios import trace_id_of

    big_trace = trace_id_of(big_number)
    info = {"spans": written + len(rows), "traces": number + 1, "big_trace": big_trace.hex(),
            "built_at": now, "build_seconds": round(time.monotonic() - started)}
    info_path(db).write_text(json.dumps(info))
    return info


SEARCH_PHRASE = "lighthouse refund clause"  # planted once in the week; `policy` is in every system prompt
COMMON_WORD = "policy"


def plant_search_phrase(normalizer, writer, now: float) -> None:
    """One trace, two days ago, whose prompt holds SEARCH_PHRASE (nothing else in the week does)."""
    from llmobs_tui.scenarios import MS, SpanSpec, Trace, to_otlp_request

    question = f"What does the {SEARCH_PHRASE} say?"
    prompt = json.dumps([{"role": "user", "parts": [{"type": "text", "content": question}]}])
    spans = [SpanSpec("POST /support", None, 0, 900 * MS, {"app.llm.feature": "support"}, kind=2),
             SpanSpec("chat gpt-4o", 0, 10 * MS, 800 * MS, {
                 "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
                 "gen_ai.usage.input_tokens": 50, "gen_ai.usage.output_tokens": 10, "gen_ai.input.messages": prompt},
                 kind=3)]
    request = to_otlp_request([(Trace("support", "support-bot", spans), 10**9 + 1, int((now - 2 * 86400) * S))])
    rows, resources, scopes, _ = normalizer.decode_traces(request, int(now * S))
    writer.write(rows, [], resources, scopes)


def index_store(db: Path) -> None:
    """A store built before the content index (or by another version): index it before measuring, so
    that serve's indexer does not compete with the measured queries."""
    from store.connection import WriterLock, open_writer

    lock = WriterLock(db)
    lock.acquire()
    conn = open_writer(db)
    try:
        index_content(conn)
    finally:
        conn.close()
        lock.release()


def index_content(conn) -> None:
    """Index the store's content as serve's writer would after its acks (store/content_index.py)."""
    from store.content_index import ContentIndexer, index_lag

    started = time.monotonic()
    indexer = ContentIndexer(conn, chunk=512)
    while indexer.run(deadline_s=10.0):
        print(f"  indexing content: {index_lag(conn)[0]:,} spans to go, {time.monotonic() - started:.0f}s", flush=True)


async def time_text_search(db: Path, rounds: int, window_s: float = 7 * 86400) -> dict:
    """`text:` on the Traces screen over the week: the list (LIMIT 500) and its snippets, for the planted
    phrase (one trace) and a word in every LLM span (the list fills from the newest traces)."""
    from llmobs_tui.filtering import parse
    from llmobs_tui.reader import StoreReader

    reader = StoreReader(db)
    await reader.open()
    timings: dict[str, list[float]] = {"text_search_planted_phrase": [], "text_search_common_word": []}
    try:
        for _ in range(rounds):
            for name, text in (("text_search_planted_phrase", f'text:"{SEARCH_PHRASE}"'),
                               ("text_search_common_word", f"text:{COMMON_WORD}")):
                flt = parse(text)
                started = time.perf_counter()
                rows = await reader.traces(window_s, clock(), flt, "start", True)
                result = await reader.text_matches([r.trace_id for r in rows], flt.text_search or "")
                timings[name].append((time.perf_counter() - started) * 1000)
                assert len(result.matches) == len(rows) and rows, (name, len(rows), len(result.matches))
    finally:
        await reader.close()
    return {name: {"p50_ms": round(statistics.median(v), 1), "p95_ms": round(sorted(v)[int(len(v) * 0.95) - 1], 1)}
            for name, v in timings.items()}


SESSIONS_CONVERSATIONS = 100_000
SESSIONS_TURNS = 2  # traces per conversation


def build_sessions(db: Path, conversations: int = SESSIONS_CONVERSATIONS, days: int = 7) -> dict:
    """`conversations` conversations over `days`, SESSIONS_TURNS turns each (a server span carrying the
    conversation and its user, over one chat call), through the real normalizer and writer. Writes
    every batch twice over — once with the ids, once (into a scratch store) without — and reports the
    writer's CPU µs per span both ways, and the CPU spent in the conversations' refresh itself (the
    A/B difference drowns in noise on a shared machine; the refresh's own time does not)."""
    from receiver.normalize import IngestOptions, Normalizer
    from receiver.prices import PriceTable
    from store import sessions
    from store.connection import WriterLock, open_writer
    from store.writer import SpanWriter
    from tests.otlp_factory import make_span, trace_request

    refresh_cpu = [0.0]
    real_refresh, real_lookup = sessions.refresh, sessions.stored_conversations

    def timed(function):
        def run(*args):
            started = time.process_time()
            try:
                return function(*args)
            finally:
                refresh_cpu[0] += time.process_time() - started
        return run

    scratch = db.with_name(db.stem + "-no-ids.db")
    for path in (db, scratch):
        for suffix in ("", "-wal", "-shm", ".lock"):
            try:
                os.remove(f"{path}{suffix}")
            except FileNotFoundError:
                pass
    db.parent.mkdir(parents=True, exist_ok=True)
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    stores = []
    for path in (db, scratch):
        lock = WriterLock(path)
        lock.acquire()
        conn = open_writer(path)
        stores.append((lock, conn, SpanWriter(conn)))
    now = time.time()
    start = now - days * 86400
    step = (days * 86400 - 600) / conversations
    cpu = [0.0, 0.0]
    spans_written = 0
    started = time.monotonic()
    trace = 0
    for first in range(0, conversations, 500):
        batches: list[list] = [[], []]
        for c in range(first, min(conversations, first + 500)):
            at = int((start + c * step) * S)
            for turn in range(SESSIONS_TURNS):
                trace += 1
                t = at + turn * 30 * S
                for with_ids, batch in ((True, batches[0]), (False, batches[1])):
                    ids = ({"session.id": f"conversation-{c:06d}", "user.id": f"user-{c % 20_000:05d}"}
                           if with_ids else {})
                    batch.append(make_span(trace, 1, None, "POST /chat", ids, t, t + 2 * S, kind=2))
                    batch.append(make_span(trace, 2, 1, "chat gpt-4o", {
                        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000 * (turn + 1) + c % 500,
                        "gen_ai.usage.output_tokens": 100 + c % 50}, t + 10 * 10**6, t + 1900 * 10**6))
        for i, batch in enumerate(batches):
            rows, resources, scopes, _ = normalizer.decode_traces(trace_request(batch, service="chat"), int(now * S))
            if i == 0:  # the refresh of the store with ids, timed where the writer calls it
                sessions.refresh, sessions.stored_conversations = timed(real_refresh), timed(real_lookup)
            cpu_started = time.process_time()
            stores[i][2].write(rows, [], resources, scopes)
            cpu[i] += time.process_time() - cpu_started
            sessions.refresh, sessions.stored_conversations = real_refresh, real_lookup
        spans_written += len(batches[0])
        if first % 20_000 == 0:
            print(f"  {first:,} conversations, {time.monotonic() - started:.0f}s", flush=True)
    for lock, conn, _ in stores:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        lock.release()
    for suffix in ("", "-wal", "-shm", ".lock"):
        try:
            os.remove(f"{scratch}{suffix}")
        except FileNotFoundError:
            pass
    info = {"conversations": conversations, "spans": spans_written, "built_at": now,
            "writer_cpu_us_per_span_with_conversation_ids": round(cpu[0] / spans_written * 1e6, 1),
            "writer_cpu_us_per_span_without": round(cpu[1] / spans_written * 1e6, 1),
            "writer_cpu_us_per_span_in_conversation_refresh": round(refresh_cpu[0] / spans_written * 1e6, 1)}
    info_path(db).write_text(json.dumps(info))
    return info


async def time_sessions(db: Path, rounds: int, window_s: float = 7 * 86400) -> dict:
    """The Sessions screen over the store's conversations (its refresh: one query), per sort, by user,
    filtered, and opening one conversation. Wall and CPU ms of the TUI process."""
    from llmobs_tui.filtering import Filter, parse
    from llmobs_tui.reader import StoreReader

    reader = StoreReader(db)
    await reader.open()
    cases = {
        "sessions_by_last": ("conversation", "last", Filter(), None),
        "sessions_by_cost": ("conversation", "cost", Filter(), None),
        "sessions_by_tokens": ("conversation", "tokens", Filter(), None),
        "sessions_users_by_cost": ("user", "cost", Filter(), None),
        "sessions_of_one_user": ("conversation", "last", Filter(), "user-00042"),
        "sessions_filtered_cost_over": ("conversation", "last", parse("cost>$0.005"), None),
        "sessions_users_filtered_cost_over": ("user", "cost", parse("cost>$0.005"), None),
    }
    wall: dict[str, list[float]] = {name: [] for name in [*cases, "open_conversation"]}
    cpu: dict[str, list[float]] = {name: [] for name in wall}
    try:
        for _ in range(rounds):
            now = clock()
            first = None
            for name, (by, sort, flt, user) in cases.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                rows = await reader.sessions(window_s, now, flt, by, sort, True, user=user)
                wall[name].append((time.perf_counter() - started) * 1000)
                cpu[name].append((time.process_time() - cpu_started) * 1000)
                assert rows, name
                first = first or rows[0]  # by last seen: a conversation to open
            started, cpu_started = time.perf_counter(), time.process_time()
            await reader.conversation(first.conversation_id)
            wall["open_conversation"].append((time.perf_counter() - started) * 1000)
            cpu["open_conversation"].append((time.process_time() - cpu_started) * 1000)
    finally:
        await reader.close()
    return {name: {"p50_ms": round(statistics.median(v), 1), "p95_ms": round(sorted(v)[int(len(v) * 0.95) - 1], 1),
                   "p95_cpu_ms": round(sorted(cpu[name])[int(len(v) * 0.95) - 1], 1)} for name, v in wall.items()}


def sessions_timings(db: Path, rounds: int, rebuild: bool = False) -> dict:
    """Build (once) the 100k-conversation store next to `db`, then time the Sessions screen on it."""
    info_file = info_path(db)
    if rebuild or not db.exists() or not info_file.exists():
        print(f"building {SESSIONS_CONVERSATIONS:,} conversations (once)…", flush=True)
        build_sessions(db)
    info = json.loads(info_file.read_text())
    return {"sessions_store": {k: info[k] for k in info if k != "built_at"},
            **asyncio.run(time_sessions(db, rounds))}


def ingest_load(address: str, rate: float, first_number: int, stop, counter, result_queue) -> None:
    """A separate process exporting realistic LLM traces at `rate` spans/s with current timestamps.
    Trace numbers (hence ids) start at `first_number`, random per run. Puts the acknowledged requests
    (first trace number, traces, spans, spans rejected) and the failed ones on `result_queue`."""
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    from llmobs_tui.scenarios import Traffic, to_otlp_request

    traffic = Traffic(seed=5)
    channel = grpc.insecure_channel(address)
    export = channel.unary_unary(TRACE_METHOD)
    number = first_number - 1
    acked: list[tuple[int, int, int, int]] = []
    failed: list[tuple[int, int, int, str]] = []
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
            answer = export(body, timeout=30)
            rejected = ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans
            acked.append((batch[0][1], len(batch), n, rejected))
            with counter.get_lock():
                counter.value += n - rejected
        except grpc.RpcError as exc:
            failed.append((batch[0][1], len(batch), n, exc.code().name))
        next_at += n / rate
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    channel.close()
    result_queue.put({"acked": acked, "failed": failed})


def check_store(db: Path, acked: list[tuple[int, int, int, int]], failed: list[tuple[int, int, int, str]]) -> dict:
    """Every trace the load sent, looked up by id (the store's (trace_id, span_id) is unique, so a
    count per request is exact)."""
    from llmobs_tui.scenarios import trace_id_of

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        def stored(first: int, traces: int) -> int:
            ids = [trace_id_of(k) for k in range(first, first + traces)]
            return conn.execute(f"SELECT count(*) FROM spans WHERE trace_id IN ({', '.join('?' * len(ids))})",
                                ids).fetchone()[0]

        found = sum(min(stored(first, traces), spans - rejected) for first, traces, spans, rejected in acked)
        found_failed = sum(stored(first, traces) for first, traces, _, _ in failed)
    acknowledged = sum(spans - rejected for _, _, spans, rejected in acked)
    return {"acknowledged": acknowledged, "stored": found, "missing": acknowledged - found,
            "failed_requests": len(failed), "failed_but_stored": found_failed, "run_stored": found + found_failed,
            "failed_codes": sorted({code for *_, code in failed})}


async def time_queries(db: Path, big_trace: bytes, rounds: int) -> dict:
    from llmobs_tui.filtering import Filter
    from llmobs_tui.reader import StoreReader

    reader = StoreReader(db)
    await reader.open()
    timings: dict[str, list[float]] = {"overview_1h": [], "overview_24h": [], "trace_list_1h": [],
                                       "trace_list_24h_by_cost": [], "open_500_span_trace": []}
    cpu: dict[str, list[float]] = {name: [] for name in timings}
    try:
        for _ in range(rounds):
            now = clock()
            for name, call in (
                ("overview_1h", partial(reader.overview, 3600, now)),
                ("overview_24h", partial(reader.overview, 86400, now)),
                ("trace_list_1h", partial(reader.traces, 3600, now, Filter(), "start", True)),
                ("trace_list_24h_by_cost", partial(reader.traces, 86400, now, Filter(), "cost", True)),
            ):
                started, cpu_started = time.perf_counter(), time.process_time()
                await call()
                timings[name].append((time.perf_counter() - started) * 1000)
                cpu[name].append((time.process_time() - cpu_started) * 1000)
            started, cpu_started = time.perf_counter(), time.process_time()
            detail = await reader.trace(big_trace)
            # Opening a trace means its spans and the first span's details.
            await reader.span_detail(big_trace, detail.spans[1])
            timings["open_500_span_trace"].append((time.perf_counter() - started) * 1000)
            cpu["open_500_span_trace"].append((time.process_time() - cpu_started) * 1000)
            assert len(detail.spans) == 499 or len(detail.spans) >= 499, len(detail.spans)
            await asyncio.sleep(0.2)
    finally:
        await reader.close()
    return {name: _percentiles(v, cpu[name]) for name, v in timings.items()}


async def time_overview_charts(db: Path, rounds: int = 30, window_s: float = 3600) -> dict:
    """One Overview chart refresh, as the TUI does it: the read (cards + four charts + the past period
    + change markers, from the rollups) and the parse, then plotext building the four charts at
    160x48's chart size (76x21 each). Wall and CPU ms per refresh; p50/p95 over `rounds`."""
    from llmobs_tui.reader import StoreReader
    from llmobs_tui.screens.overview import overview_chart_data
    from llmobs_tui.widgets.chart import Mark, build_chart_text
    from store.charts import compare_shift_s

    reader = StoreReader(db)
    await reader.open()
    wall: dict[str, list[float]] = {"charts_read": [], "charts_build": [], "charts_refresh": []}
    cpu: list[float] = []
    try:
        for _ in range(rounds):
            now = clock()
            started, cpu_started = time.perf_counter(), time.process_time()
            charts = await reader.charts(window_s, now, compare_shift_s("previous", window_s))
            changes = await reader.changes(now - window_s, now)
            read = time.perf_counter()
            for data in overview_chart_data(charts, [], 2000.0).values():
                data.marks = [Mark(c.time_s, c.describe()) for c in changes]
                build_chart_text(data, 76, 21)
            done = time.perf_counter()
            cpu.append((time.process_time() - cpu_started) * 1000)
            wall["charts_read"].append((read - started) * 1000)
            wall["charts_build"].append((done - read) * 1000)
            wall["charts_refresh"].append((done - started) * 1000)
            await asyncio.sleep(0.1)
    finally:
        await reader.close()
    result = {f"overview_{name}_{int(window_s)}s": {"p50_ms": round(statistics.median(v), 1),
                                                   "p95_ms": round(sorted(v)[max(0, int(len(v) * 0.95) - 1)], 1)}
              for name, v in wall.items()}
    result[f"overview_charts_refresh_{int(window_s)}s"]["cpu_p50_ms"] = round(statistics.median(cpu), 1)
    result[f"overview_charts_refresh_{int(window_s)}s"]["cpu_p95_ms"] = round(
        sorted(cpu)[max(0, int(len(cpu) * 0.95) - 1)], 1)
    return result


async def time_drift_panel(db: Path, rounds: int = 30, window_s: float = 3600) -> dict:
    """The Alerts screen's drift panel, as the TUI refreshes it: the read (the window's and the prior
    week's rollup totals with their token histograms, the rate series, the scored logs) and the parse
    (histogram decode, PSI), then the two text histograms and the two charts built at 160x48's size;
    and the drift rule alone (per feature, in the engine's worker thread; it runs once a minute at most).
    The week's evaluation means are read once and then reused, as the Alerts screen does for 5 minutes
    (drift_eval_baseline: that one read). p50/p95 ms over `rounds`."""
    from llmobs_tui.alerting.drift import evaluate_drift
    from llmobs_tui.config import AlertSettings
    from llmobs_tui.reader import StoreReader
    from llmobs_tui.widgets.chart import build_chart_text
    from llmobs_tui.widgets.drift_panel import evals_chart, histogram_text, rates_chart
    from store.connection import open_reader

    reader = StoreReader(db)
    await reader.open()
    wall: dict[str, list[float]] = {"drift_read": [], "drift_refresh": [], "drift_rule": [],
                                    "drift_eval_baseline": []}
    settings = AlertSettings()
    sync_db = open_reader(db)
    try:
        started = time.perf_counter()
        kept = (await reader.drift(window_s, clock(), settings.drift_min_calls)).eval_baseline
        wall["drift_eval_baseline"].append((time.perf_counter() - started) * 1000)
        for _ in range(rounds):
            now = clock()
            started = time.perf_counter()
            data = await reader.drift(window_s, now, settings.drift_min_calls, kept)
            read = time.perf_counter()
            for signal, result in data.distributions.items():
                histogram_text(signal, result, settings.drift_psi, 76, 11)
            build_chart_text(rates_chart(data, [], None), 78, 16)
            build_chart_text(evals_chart(data, [], None), 78, 16)
            done = time.perf_counter()
            evaluate_drift(sync_db, settings, now)
            wall["drift_read"].append((read - started) * 1000)
            wall["drift_refresh"].append((done - started) * 1000)
            wall["drift_rule"].append((time.perf_counter() - done) * 1000)
            await asyncio.sleep(0.05)
    finally:
        await reader.close()
        sync_db.close()
    return {f"{name}_{int(window_s)}s": {"p50_ms": round(statistics.median(v), 1),
                                         "p95_ms": round(sorted(v)[max(0, int(len(v) * 0.95) - 1)], 1)}
            for name, v in wall.items()}


async def time_trends(db: Path, rounds: int = 30) -> dict:
    """One Trends refresh with 10 series, as the TUI does it: the read (one query on the rollups, plus
    the variants' figures when split by variant) and the parse, then plotext building the chart at
    160x48's size (152x30). p95 latency by model over 1h and 24h, by tool over 24h (the week has
    hundreds of tools: the top 10 drawn), cost by feature over 24h, p95 by variant over 24h (with the
    two-variant comparison's read). Wall and CPU ms per refresh; p50/p95 over `rounds`."""
    from llmobs_tui.reader import StoreReader
    from llmobs_tui.widgets.chart import build_chart_text
    from llmobs_tui.widgets.trends_chart import trends_chart_data

    cases = (("latency_p95", "model", 3600), ("latency_p95", "model", 86400), ("latency_p95", "tool", 86400),
             ("cost", "feature", 86400), ("latency_p95", "variant", 86400))
    reader = StoreReader(db)
    await reader.open()
    wall: dict[str, list[float]] = {f"trends_{m}_by_{by}_{w}s": [] for m, by, w in cases}
    cpu: dict[str, list[float]] = {name: [] for name in wall}
    series: dict[str, int] = {}
    try:
        for _ in range(rounds):
            for (metric, by, window_s), name in zip(cases, wall):
                now = clock()
                started, cpu_started = time.perf_counter(), time.process_time()
                trends = await reader.trends(metric, by, window_s, now, top_n=10)
                build_chart_text(trends_chart_data(trends), 152, 30)
                wall[name].append((time.perf_counter() - started) * 1000)
                cpu[name].append((time.process_time() - cpu_started) * 1000)
                series[name] = len(trends.series)
            await asyncio.sleep(0.1)
    finally:
        await reader.close()
    return {name: {"series": series[name], "p50_ms": round(statistics.median(v), 1),
                   "p95_ms": round(sorted(v)[max(0, int(len(v) * 0.95) - 1)], 1),
                   "p95_cpu_ms": round(sorted(cpu[name])[max(0, int(len(v) * 0.95) - 1)], 1)}
            for name, v in wall.items()}


async def time_why_slow(db: Path, rounds: int) -> dict:
    """`w` ("why slow?") as the TUI runs it: a call's cohort (gpt-4o on support: the rollups'
    histograms plus its spans' tokens, the span read bounded by store/cohort.py) over 1h, 24h and 7d,
    and a trace's cohort over 24h (the newest trace, of a common root: its cohort and five typical traces)."""
    from llmobs_tui.filtering import Filter
    from llmobs_tui.reader import StoreReader

    reader = StoreReader(db)
    await reader.open()
    timings: dict[str, list[float]] = {"why_slow_call_1h": [], "why_slow_call_24h": [], "why_slow_call_7d": [],
                                       "why_slow_trace_24h": []}
    try:
        newest = (await reader.traces(86400, clock(), Filter(), "start", True, limit=1))[0].trace_id
        for _ in range(rounds):
            now = clock()
            for name, call in (
                ("why_slow_call_1h", partial(reader.call_cohort, "gpt-4o", "support", 3600, now)),
                ("why_slow_call_24h", partial(reader.call_cohort, "gpt-4o", "support", 86400, now)),
                ("why_slow_call_7d", partial(reader.call_cohort, "gpt-4o", "support", 7 * 86400, now)),
                ("why_slow_trace_24h", partial(reader.trace_cohort, newest, 86400, now)),
            ):
                started = time.perf_counter()
                await call()
                timings[name].append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.1)
    finally:
        await reader.close()
    return {name: {"p50_ms": round(statistics.median(v), 1), "p95_ms": round(sorted(v)[int(len(v) * 0.95) - 1], 1)}
            for name, v in timings.items()}


def time_critical_path(rounds: int) -> dict:
    """The critical path and self times of a 2,000-span trace (an agent loop: 200 steps of an LLM
    call, a tool with parallel retrievers and a nested call), as the Trace screen computes it on open.
    CPU time per analysis, so a noisy machine does not inflate it."""
    import random
    from dataclasses import dataclass

    from llmobs_tui.critical_path import analyse

    @dataclass
    class Span:
        span_id: int
        parent_span_id: int | None
        start_ns: int
        end_ns: int

    rng = random.Random(1)
    spans, t = [Span(0, None, 0, 0)], 0
    while len(spans) < 2000:
        step = Span(len(spans), 0, t, 0)
        spans.append(step)
        llm = Span(len(spans), step.span_id, t, t + rng.randint(200, 2000) * 10**6)
        spans.append(llm)
        tool = Span(len(spans), step.span_id, llm.end_ns, llm.end_ns + rng.randint(50, 900) * 10**6)
        spans.append(tool)
        for _ in range(6):
            start = tool.start_ns + rng.randint(0, 40) * 10**6
            spans.append(Span(len(spans), tool.span_id, start, min(tool.end_ns, start + rng.randint(10, 800) * 10**6)))
        step.end_ns = t = tool.end_ns + rng.randint(1, 30) * 10**6
    spans[0].end_ns = t
    cpu = []
    for _ in range(rounds):
        started = time.process_time()
        path = analyse(spans)
        cpu.append((time.process_time() - started) * 1000)
    assert sum(path.contribution_ns.values()) == path.duration_ns
    return {"critical_path_2000_spans": {"spans": len(spans), "p50_cpu_ms": round(statistics.median(cpu), 2),
                                         "max_cpu_ms": round(max(cpu), 2)}}


def time_alerts(db: Path, rounds: int) -> dict:
    """One evaluation of every alert rule (the demo's four SLOs, budgets, all built-in rules), as
    the TUI runs it every 10 s in a worker thread and `llmobs-tui check` runs it once. The drift rule
    reads the store once a minute (DriftRule): the first evaluation includes it (`alert_evaluation_first`),
    the others reuse its answer. Per rule: wall and CPU ms of the evaluating thread, p50 over the rounds;
    a rule pays for the shared rollup pieces it is the first to read (engine.last_timings_ms)."""
    from llmobs_tui.alerting.engine import AlertEngine
    from llmobs_tui.config import DEMO_CONFIG, load_config

    engine = AlertEngine(db, load_config(DEMO_CONFIG))
    wall, cpu = [], []
    rules: dict[str, list[tuple[float, float]]] = {}
    try:
        for _ in range(rounds):
            started, cpu_started = time.perf_counter(), time.thread_time()
            engine.evaluate(clock())
            wall.append((time.perf_counter() - started) * 1000)
            cpu.append((time.thread_time() - cpu_started) * 1000)
            for name, timing in engine.last_timings_ms.items():
                rules.setdefault(name, []).append(timing)
            time.sleep(0.2)
    finally:
        engine.close()
    return {"alert_evaluation_first": {"wall_ms": round(wall[0], 1), "cpu_ms": round(cpu[0], 1)},
            "alert_evaluation": {"p50_ms": round(statistics.median(wall), 1), "max_ms": round(max(wall), 1),
                                 "cpu_p50_ms": round(statistics.median(cpu), 1), "cpu_max_ms": round(max(cpu), 1)},
            "alert_rules": {name: {"p50_ms": round(statistics.median(w for w, _ in v), 1),
                                   "cpu_p50_ms": round(statistics.median(c for _, c in v), 1),
                                   "first_ms": round(v[0][0], 1), "first_cpu_ms": round(v[0][1], 1)}
                            for name, v in rules.items()}}


async def time_breakdown(db: Path, rounds: int = 20, window_s: float = 86400) -> dict:
    """The Breakdown screen's read over `window_s`, by model and by feature (its rollup groups), by
    model with the comparison on (`v`: the previous period's groups too, a second read), and by tool
    (the calls the writer keeps, store/tool_rollups.py: calls, errors, exact p50/p95). Wall and CPU
    ms per refresh."""
    from llmobs_tui.reader import StoreReader

    cases = {f"breakdown_model_{int(window_s)}s": ("model", False),
             f"breakdown_feature_{int(window_s)}s": ("feature", False),
             f"breakdown_model_compared_{int(window_s)}s": ("model", True),
             f"breakdown_tool_{int(window_s)}s": ("tool", False)}
    reader = StoreReader(db)
    await reader.open()
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for _ in range(rounds):
            for name, (by, compared) in cases.items():
                now = clock()
                started, cpu_started = time.perf_counter(), time.process_time()
                if by == "tool":
                    await reader.tool_calls(window_s, now)
                else:
                    await reader.breakdown(window_s, now, by)
                if compared:
                    await reader.breakdown(window_s, now - window_s, by)
                wall[name].append((time.perf_counter() - started) * 1000)
                cpu[name].append((time.process_time() - cpu_started) * 1000)
            await asyncio.sleep(0.1)
    finally:
        await reader.close()
    return {name: _percentiles(v, cpu[name]) for name, v in wall.items()}


def _percentiles(wall: list[float], cpu: list[float]) -> dict:
    """p50/p95 of wall ms and CPU ms (process CPU: the reader's thread and the caller's)."""
    def p95(v: list[float]) -> float:
        return round(sorted(v)[max(0, int(len(v) * 0.95) - 1)], 1)

    return {"p50_ms": round(statistics.median(wall), 1), "p95_ms": p95(wall),
            "cpu_p50_ms": round(statistics.median(cpu), 1), "cpu_p95_ms": p95(cpu)}


async def time_views(db: Path, big_trace: bytes, rounds: int) -> dict:
    """The alert rules and every 24 h view (Overview cards and charts, Breakdown, the trace list by
    cost, Trends), without an ingest load: `--views-only`, e.g. on the 3M-span store."""
    result = time_alerts(db, rounds=10)
    result |= await time_queries(db, big_trace, rounds)
    result |= await time_overview_charts(db, rounds, window_s=86400)
    result |= await time_breakdown(db, rounds)
    result |= await time_trends(db, rounds)
    return result


VIEWS_24H = ("overview_24h", "overview_charts_read_86400s", "overview_charts_refresh_86400s",
             "breakdown_model_86400s", "breakdown_feature_86400s", "breakdown_model_compared_86400s",
             "breakdown_tool_86400s",
             "trace_list_24h_by_cost", "trends_latency_p95_by_model_86400s", "trends_latency_p95_by_tool_86400s",
             "trends_cost_by_feature_86400s", "trends_latency_p95_by_variant_86400s")


def print_summary(results: dict) -> None:
    """The issue's targets in a few lines: every 24 h view ≤ 50 ms p95, every alert rule once ≤ 300 ms."""
    evaluation, first = results.get("alert_evaluation"), results.get("alert_evaluation_first")
    if evaluation and first:
        print(f"alert rules, one evaluation: p50 {evaluation['p50_ms']} ms (CPU {evaluation['cpu_p50_ms']}), "
              f"max {evaluation['max_ms']} ms (CPU {evaluation['cpu_max_ms']}); "
              f"first (drift rule due) {first['wall_ms']} ms (CPU {first['cpu_ms']})")
        for name, t in results.get("alert_rules", {}).items():
            print(f"  {name:18} p50 {t['p50_ms']:7.1f} ms  CPU {t['cpu_p50_ms']:7.1f} ms   "
                  f"first {t['first_ms']:7.1f} ms  CPU {t['first_cpu_ms']:7.1f} ms")
    print("24 h views (p50 / p95 wall ms, CPU ms):")
    for name in VIEWS_24H:
        t = results.get(name)
        if t:
            cpu = t.get("cpu_p95_ms", t.get("p95_cpu_ms", t.get("cpu_p50_ms")))
            print(f"  {name:40} {t['p50_ms']:7.1f} / {t['p95_ms']:7.1f}   CPU {'–' if cpu is None else cpu}")


PROBE = r"""
import sys, time, psutil
started = psutil.Process().create_time()
from llmobs_tui.app import LlmobsApp

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

Probe(sys.argv[1]).run(headless=True, size=(160, 48), auto_pilot=tour)
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
    parser.add_argument("--db", type=Path, default=RESULTS / "week.db",
                        help="the store (default: bench/results/week.db; built if missing)")
    parser.add_argument("--store-spans", type=int, default=1_000_000,
                        help="spans in the week of traffic when the store is built (default 1,000,000)")
    parser.add_argument("--rate", type=float, default=2000, help="ingest spans/s during the measurement")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--json", help="also write results here")
    parser.add_argument("--text-search-only", action="store_true",
                        help="time only the `text:` search (no ingest load), e.g. on a smaller --db")
    parser.add_argument("--sessions-db", type=Path, default=RESULTS / "sessions.db",
                        help="the 100k-conversation store for the Sessions timing (built if missing)")
    parser.add_argument("--views-only", action="store_true",
                        help="time only the alert rules and the 24 h views (no ingest load), e.g. on the 3M store: "
                             "--db bench/results/week3m.db --store-spans 3000000 (built if missing, ~30 min)")
    parser.add_argument("--sessions-only", action="store_true",
                        help="time only the Sessions screen (and the writer's cost of keeping it), no ingest load")
    args = parser.parse_args(argv)

    if args.sessions_only:
        print(json.dumps(sessions_timings(args.sessions_db, args.rounds, args.rebuild), indent=2))
        return 0
    db = args.db
    info_file = info_path(db)
    if args.rebuild or not db.exists() or not info_file.exists():
        print("building a week of traffic (once)…", flush=True)
        build_week(db, args.store_spans)
    info = json.loads(info_file.read_text())
    age_h = (time.time() - info["built_at"]) / 3600
    index_store(db)
    spans_before = count_spans(db)
    if args.text_search_only:
        print(json.dumps({"store_spans": spans_before, **asyncio.run(time_text_search(db, args.rounds))}, indent=2))
        return 0
    if args.views_only:
        offset_h = -at_store_end(db) / 3600
        views = {"store_spans": spans_before, "hours_before_now": round(offset_h, 2),
                 **asyncio.run(time_views(db, bytes.fromhex(info["big_trace"]), args.rounds))}
        print(json.dumps(views, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(views, indent=2) + "\n")
        print_summary(views)
        return 0
    print(f"store: {spans_before:,} spans now ({info['spans']:,} spans, {info['traces']:,} traces when built "
          f"{age_h:.1f} h ago), {db.stat().st_size / 2**20:,.0f} MiB", flush=True)

    # The Sessions screen reads a store of its own (100k conversations, built once): timed before the
    # ingest load starts, so that building it never competes with the load being measured.
    sessions = sessions_timings(args.sessions_db, rounds=20)
    # Random per run, far above the numbers build_week used (1…, 10⁹): a rerun sends new trace ids.
    first_number = (1 << 62) + secrets.randbits(61)
    server = Serve(db, "--retention", "30d")
    if server.address is None:
        server.stop(10)
        print(server.output(), file=sys.stderr)
        return 1
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    counter = ctx.Value("q", 0)
    results = ctx.Queue()
    load = ctx.Process(target=ingest_load, args=(server.address, args.rate, first_number, stop, counter, results))
    load.start()
    time.sleep(3)
    server_tree = psutil.Process(server.pid)
    ingest_started, ingest_count, cpu_started = time.monotonic(), counter.value, tree_cpu(tree(server_tree))
    queries = asyncio.run(time_queries(db, bytes.fromhex(info["big_trace"]), args.rounds))
    queries |= time_alerts(db, rounds=10)
    queries |= asyncio.run(time_text_search(db, rounds=20))
    queries |= time_critical_path(rounds=20)
    queries |= asyncio.run(time_why_slow(db, rounds=10))
    queries |= asyncio.run(time_overview_charts(db, rounds=30))
    queries |= asyncio.run(time_overview_charts(db, rounds=30, window_s=86400))
    queries |= asyncio.run(time_breakdown(db, rounds=20))
    queries |= asyncio.run(time_trends(db, rounds=30))
    queries |= asyncio.run(time_drift_panel(db, rounds=30))
    queries |= asyncio.run(time_drift_panel(db, rounds=10, window_s=86400))
    queries |= sessions
    tui = probe_tui(db)
    ingested = counter.value - ingest_count
    ingest_seconds = time.monotonic() - ingest_started
    server_cpu = tree_cpu(tree(server_tree)) - cpu_started
    stop.set()
    outcome = results.get(timeout=60)
    load.join(30)
    time.sleep(1.2)  # the writer reports its counters every second: let one report follow the last commit
    counters = server.stop()
    spans_after = count_spans(db)
    check = check_store(db, outcome["acked"], outcome["failed"])
    # Spans of any age the store deleted while serve ran (retention 30d; the week store ages).
    deleted = None if counters.committed is None else spans_before + counters.committed - spans_after
    report = {
        "machine": f"{psutil.cpu_count()} cores",
        "store_spans_before": spans_before,
        "store_spans_after": spans_after,
        "ingest_spans_acknowledged": check["acknowledged"],
        "ingest_spans_stored": check["stored"],
        "ingest_spans_missing": check["missing"],
        "ingest_spans_per_s_during_measurement": round(ingested / ingest_seconds),
        "server_cpu_us_per_ingested_span": round(server_cpu / ingested * 1e6, 1) if ingested else None,
        **queries,
        **tui,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"store held {spans_before:,} spans before this run and {spans_after:,} after "
          f"({spans_after - spans_before:+,})")
    print(f"acknowledged {check['acknowledged']:,}, stored {check['stored']:,}, missing {check['missing']:,} "
          f"(every acknowledged span of this run looked up by its trace ids)")
    if check["failed_requests"]:
        print(f"{check['failed_requests']} requests were answered with an error ({', '.join(check['failed_codes'])}) "
              f"and not counted; "
              f"{check['failed_but_stored']:,} of their spans were stored anyway")
    # Deletes hit the oldest traces, not necessarily this run's: only this run's own shortfall counts.
    own_deleted = None if counters.committed is None else max(0, counters.committed - check["run_stored"])
    lines, unexplained = attribute(check["missing"], counters, own_deleted)
    for line in lines:
        print(line)
    if deleted:
        print(f"retention/size eviction removed {deleted:,} spans in all while serve ran "
              f"(retention {counters.retention})")
    if unexplained:
        print(f"ERROR: {unexplained:,} acknowledged spans are missing and serve's counters do not explain them",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
