"""ClickHouse store benchmark on chdb (the ClickHouse engine in-process): span inserts, then the two
query shapes the `spans` layout is chosen for, per candidate layout.

    python -m bench.clickhouse_insert                       # 20,000 spans inserted, 1M-row query tables
    python -m bench.clickhouse_insert --rows 50000 --fill 1000000 --layouts by_trace,by_hour
    python -m bench.clickhouse_insert --batch 4096 --fill 0      # inserts only, larger batches

1. Insert: `--rows` realistic span rows (the real schema's 53 columns; LLM spans carry ≈6 KB of
   prompt/completion text that ZSTD packs to ≈2 KB, as the OTLP content does) through ChdbClient.insert
   in batches of 512, as the writer sink will send them. Rows are built before the clock starts; CPU is
   the process's (chdb's threads included, its background merges too), so it is the whole cost of storing.
2. Queries: for each layout, a table of `--fill` spans (8 per trace, spread evenly over 7 days, ≈2 KB
   of compressed content each) filled by INSERT … SELECT inside the engine, then:
   - trace lookup: every span of one trace by id, FINAL, content included (the trace view);
   - 1 h and 24 h range scans: per service and kind, spans, tokens and cost in the window, FINAL
     (the Overview's question asked of raw spans, which the rollups answer at scale; the scan is the
     fallback for ad-hoc filters).
   Each is run `--repeat` times on different traces/windows; the median wall and CPU ms are reported.

Everything lives in a temporary directory, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from store.clickhouse import schema
from store.clickhouse.client import ChdbClient

NS = 1_000_000_000
DAY_NS = 86400 * NS
BATCH = 512
_WORDS = (
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as", "with",
    "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what",
    "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do",
    "how", "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some",
    "her", "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see",
    "number", "no", "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil",
    "its", "now", "find", "long", "down", "day", "did", "get", "come", "made", "may", "part",
)


# Prompts and completions: common words, plus names, ids and numbers from a long tail (a vocabulary of
# 5,000 made-up words), so ZSTD packs them about as well as it packs real conversations (≈4:1).
_VOCABULARY = [
    "".join(random.Random(n).choices("abcdefghijklmnopqrstuvwxyz", k=3 + n % 7)) for n in range(5000)
]


def _text(rng: random.Random, words: int, tail: float = 0.0) -> str:
    common = int(words * (1 - tail))
    return " ".join(rng.choices(_WORDS, k=common) + rng.choices(_VOCABULARY, k=words - common))


def _span_rows(count: int, rng: random.Random, now_ns: int) -> tuple[list[str], list[tuple[Any, ...]]]:
    """`count` spans, 8 per trace: an HTTP root, an agent, five LLM calls and a tool, as bench/ingest.py."""
    system_prompt = _text(random.Random(1), 400)  # the same in every call: ClickHouse compresses it away
    columns = [
        "trace_id", "span_id", "parent_span_id", "name", "kind", "otel_kind", "start_ns", "end_ns", "duration_ns",
        "status", "status_message", "service", "resource_digest", "scope_digest", "provider", "operation",
        "request_model", "response_model", "input_tokens", "output_tokens", "cache_read_tokens",
        "cache_write_tokens", "reasoning_tokens", "ttft_ns", "streaming", "finish_reason", "own_error_class",
        "error_subclass", "error_type", "validation_marker", "error_class", "own_feature", "own_tenant", "feature",
        "tenant", "prompt_id", "prompt_version", "conversation_id", "user_id", "cost_nusd", "price_id", "billed",
        "flags", "raw", "response_id", "call_layer", "tool_name", "duplicate_of", "price_tier", "own_variant",
        "variant", "version", "is_deleted",
    ]
    rows: list[tuple[Any, ...]] = []
    resource = rng.randbytes(16)
    scope = rng.randbytes(16)
    shape = ["http", "agent", "llm", "llm", "llm", "llm", "embedding", "tool"]
    for t in range((count + 7) // 8):
        trace_id = rng.randbytes(16)
        root = rng.randbytes(8)
        start = now_ns - rng.randrange(0, 3600 * NS)
        for i, kind in enumerate(shape[: min(8, count - 8 * t)]):
            span_id = root if i == 0 else rng.randbytes(8)
            llm = kind in ("llm", "embedding")
            s = start + i * 50_000_000
            d = rng.randrange(200_000_000, 4_000_000_000)
            content = (system_prompt + " " + _text(rng, 1400, tail=0.6)).encode() if llm else _text(rng, 30).encode()
            rows.append((
                trace_id, span_id, None if i == 0 else root, f"chat gpt-4o {kind}" if llm else f"{kind} step",
                kind, 1 if i else 2, s, s + d, d, 0, None, "checkout-api", resource, scope,
                "openai" if llm else None, "chat" if llm else None, "gpt-4o" if llm else None,
                "gpt-4o-2024-08-06" if llm else None, rng.randrange(500, 5000) if llm else None,
                rng.randrange(50, 800) if llm else None, 0 if llm else None, 0 if llm else None, 0 if llm else None,
                rng.randrange(100_000_000, 900_000_000) if llm else None, 1 if llm else None,
                "stop" if llm else None, None, None, None, 0, None, None, None, "support", "acme", None, None,
                f"conv-{t % 1000}", f"user-{t % 300}", rng.randrange(10**5, 10**8) if llm else None,
                "openai/gpt-4o" if llm else None, 1 if llm else 0, 0, content,
                f"chatcmpl-{rng.getrandbits(64):x}" if llm else None, 1, "search" if kind == "tool" else None,
                None, None, None, None, time.time_ns(), 0,
            ))
    return columns, rows


def _cpu() -> float:
    return time.process_time()


def bench_insert(client: ChdbClient, count: int, batch_size: int = BATCH) -> dict[str, Any]:
    columns, rows = _span_rows(count, random.Random(7), time.time_ns())
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    wall0, cpu0 = time.perf_counter(), _cpu()
    for batch in batches:
        client.insert("spans", batch, columns)
    wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
    # Small inserts make compact parts, which keep no per-column sizes: merged (outside the clock) to read them.
    client.command("OPTIMIZE TABLE spans FINAL")
    stored = client.query(
        "SELECT sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes) FROM system.parts"
        " WHERE database = {db:String} AND table = 'spans' AND active",
        {"db": client.database},
    )[0]
    raw_bytes = client.query(
        "SELECT sum(column_data_compressed_bytes), sum(column_data_uncompressed_bytes) FROM system.parts_columns"
        " WHERE database = {db:String} AND table = 'spans' AND column = 'raw' AND active",
        {"db": client.database},
    )[0]
    return {
        "spans": count,
        "batches": len(batches),
        "batch_size": batch_size,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "spans_per_s": round(count / wall),
        "cpu_us_per_span": round(cpu / count * 1e6, 1),
        "stored_bytes_per_span": round(int(stored[1]) / max(1, int(stored[0]))),
        "content_bytes_per_span_compressed": round(int(raw_bytes[0]) / max(1, int(stored[0]))),
        "content_bytes_per_span_plain": round(int(raw_bytes[1]) / max(1, int(stored[0]))),
    }


# A span's words (m010, a `text:` search's): one word per 7 bytes of content, w0…w19999, w0 the commonest
# (word k of rank ≈ 20000^(u²), u uniform: Zipf-like), so `w1` is in most LLM spans and `w19999` in few.
_WORDS = ("arrayStringConcat(arrayMap(k -> concat(' w', toString(toUInt32(pow(20000, "
          "pow((sipHash64(t, i, k) % 1000000) / 1e6, 2)) - 1))), range({n})))")


def _fill(client: ChdbClient, table: str, rows: int, end_ns: int, content_bytes: int, words: bool = False
          ) -> float:
    """`rows` spans over the 7 days before end_ns, 8 per trace, generated by the engine; `words`: with their
    search words (a table of m010's columns)."""
    traces = rows // 8
    step = 7 * DAY_NS // max(1, traces)
    # INSERT … SELECT takes no {x:Type} parameters in the column expressions' positions here for
    # chdb's streaming path; all values are ints this script computes, never outside text.
    sql = f"""
        INSERT INTO {table} (trace_id, span_id, parent_span_id, name, kind, otel_kind, start_ns, end_ns, duration_ns,
            status, service, provider, operation, request_model, input_tokens, output_tokens, cost_nusd, billed,
            flags, raw, validation_marker, version{", search_words" if words else ""})
        SELECT
            sipHash128(t) AS trace_id,
            reinterpretAsFixedString(sipHash64(t, i, 3))::FixedString(8),
            if(i = 0, NULL, reinterpretAsFixedString(sipHash64(t, 0, 3))::FixedString(8)),
            if(i BETWEEN 2 AND 6, 'chat gpt-4o', 'step'),
            ['http', 'agent', 'llm', 'llm', 'llm', 'llm', 'embedding', 'tool'][i + 1],
            1, s, s + d, d, 0,
            ['checkout-api', 'search-api', 'support-bot', 'batch-jobs'][t % 4 + 1],
            if(i BETWEEN 2 AND 6, 'openai', NULL), if(i BETWEEN 2 AND 6, 'chat', NULL),
            if(i BETWEEN 2 AND 6, ['gpt-4o', 'gpt-4o-mini', 'claude-sonnet'][t % 3 + 1], NULL),
            if(i BETWEEN 2 AND 6, 500 + t % 4000, NULL), if(i BETWEEN 2 AND 6, 50 + t % 700, NULL),
            if(i BETWEEN 2 AND 6, 1000 + t % 100000, NULL), i BETWEEN 2 AND 5, 0,
            randomPrintableASCII(if(i BETWEEN 2 AND 6, {int(content_bytes)}, 120)), 0, 1
            {", if(i BETWEEN 2 AND 6, " + _WORDS.format(n=max(1, int(content_bytes) // 7)) + ", '')" if words else ""}
        FROM (
            SELECT intDiv(number, 8) AS t, number % 8 AS i,
                   {int(end_ns - 7 * DAY_NS)} + t * {int(step)} + i * 50000000 AS s,
                   200000000 + sipHash64(number) % 3000000000 AS d
            FROM numbers({int(traces * 8)})
        )
    """
    t0 = time.perf_counter()
    client.command(sql)
    return time.perf_counter() - t0


def _timed(client: ChdbClient, sql: str, params: dict[str, Any], **kw: Any) -> tuple[float, float, int]:
    wall0, cpu0 = time.perf_counter(), _cpu()
    rows = client.query(sql, params, **kw)
    return (time.perf_counter() - wall0) * 1e3, (_cpu() - cpu0) * 1e3, len(rows)


def bench_queries(client: ChdbClient, layout: schema.SpansLayout, fill: int, content_bytes: int,
                  repeat: int) -> dict[str, Any]:
    table = f"spans_{layout.name}"
    client.command(f"DROP TABLE IF EXISTS {table}")
    client.command(layout.ddl(table, retention_days=3650))
    end_ns = time.time_ns()
    fill_s = _fill(client, table, fill, end_ns, content_bytes)
    parts = client.query(
        "SELECT count(), sum(rows), sum(data_compressed_bytes) FROM system.parts"
        " WHERE database = {db:String} AND table = {t:String} AND active",
        {"db": client.database, "t": table},
    )[0]
    rng = random.Random(11)
    traces = fill // 8
    out: dict[str, Any] = {"layout": layout.name, "order_by": layout.order_by, "indexes": list(layout.indexes),
                           "rows": int(parts[1]), "parts": int(parts[0]),
                           "bytes_per_span": round(int(parts[2]) / max(1, int(parts[1]))), "fill_s": round(fill_s, 1)}
    lookup = (
        f"SELECT span_id, parent_span_id, name, kind, start_ns, end_ns, raw FROM {table} FINAL"
        " WHERE trace_id = sipHash128({t:UInt64})"
        " ORDER BY start_ns"
    )
    window = (
        f"SELECT service, kind, count(), sum(input_tokens), sum(output_tokens), sum(cost_nusd) FROM {table} FINAL"
        " WHERE start_ns >= {a:Int64} AND start_ns < {b:Int64} GROUP BY service, kind"
    )
    # The trace view knows the trace's start and end from trace_summaries (a primary-key lookup there):
    # with them, the lookup is pruned to the trace's day (partition) and hour (by_hour's key) first.
    in_window = lookup.replace(" ORDER BY", " AND start_ns >= {a:Int64} AND start_ns <= {b:Int64} ORDER BY")
    step = 7 * DAY_NS // max(1, traces)
    base = end_ns - 7 * DAY_NS
    results: dict[str, list[tuple[float, float, int]]] = {
        "trace_lookup": [], "trace_lookup_in_window": [], "range_1h": [], "range_24h": []
    }
    _timed(client, window, {"a": end_ns - DAY_NS, "b": end_ns})  # first touch: marks and primary index loaded
    for _ in range(repeat):
        t = rng.randrange(traces)
        results["trace_lookup"].append(_timed(client, lookup, {"t": t}, bytes_columns=("raw",)))
        start = base + t * step
        results["trace_lookup_in_window"].append(
            _timed(client, in_window, {"t": t, "a": start, "b": start + 400_000_000}, bytes_columns=("raw",))
        )
        for name, width in (("range_1h", 3600 * NS), ("range_24h", DAY_NS)):
            a = end_ns - 7 * DAY_NS + rng.randrange(0, 7 * DAY_NS - width)
            results[name].append(_timed(client, window, {"a": a, "b": a + width}))
    for name, runs in results.items():
        out[name] = {
            "wall_ms": round(statistics.median(r[0] for r in runs), 1),
            "cpu_ms": round(statistics.median(r[1] for r in runs), 1),
            "rows_returned": runs[0][2],
        }
    client.command(f"DROP TABLE {table} SYNC")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ClickHouse store (chdb): insert CPU per span and query shapes")
    parser.add_argument("--rows", type=int, default=20_000, help="spans inserted, in batches of --batch")
    parser.add_argument("--batch", type=int, default=BATCH,
                        help="rows per INSERT (each makes a part: the main cost per span, see the README)")
    parser.add_argument("--fill", type=int, default=1_000_000, help="spans per layout for the query shapes (0: skip)")
    parser.add_argument("--layouts", default=",".join(schema.LAYOUTS),
                        help="comma-separated: " + ", ".join(schema.LAYOUTS))
    parser.add_argument("--content-bytes", type=int, default=2500,
                        help="LLM span content in the query tables (random printable ASCII: ZSTD keeps ≈85%%)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    unknown = set(args.layouts.split(",")) - set(schema.LAYOUTS)
    if unknown:
        parser.error(f"unknown layout(s): {', '.join(sorted(unknown))}")
    workdir = tempfile.mkdtemp(prefix="llmobs-chdb-bench-")
    report: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    try:
        client = ChdbClient(workdir, "bench")
        schema.migrate(client)
        report["chdb_engine"] = client.query("SELECT version()")[0][0]
        report["insert"] = bench_insert(client, args.rows, args.batch)
        ins = report["insert"]
        if not args.json:
            print(f"insert: {ins['spans']} spans in {ins['batches']} batches of {ins['batch_size']}: "
                  f"{ins['spans_per_s']} spans/s, "
                  f"{ins['cpu_us_per_span']} µs CPU per span (wall {ins['wall_s']} s, CPU {ins['cpu_s']} s); "
                  f"stored {ins['stored_bytes_per_span']} B/span, content {ins['content_bytes_per_span_plain']} B "
                  f"→ {ins['content_bytes_per_span_compressed']} B", flush=True)
        report["queries"] = []
        if args.fill:
            for name in args.layouts.split(","):
                result = bench_queries(client, schema.LAYOUTS[name], args.fill, args.content_bytes, args.repeat)
                report["queries"].append(result)
                if not args.json:
                    print(f"{name}: {result['rows']} spans ({result['bytes_per_span']} B/span, {result['parts']} parts,"
                          f" filled in {result['fill_s']} s)", flush=True)
                    for shape in ("trace_lookup", "trace_lookup_in_window", "range_1h", "range_24h"):
                        r = result[shape]
                        print(f"  {shape:<22} {r['wall_ms']:>8} ms wall {r['cpu_ms']:>8} ms CPU"
                              f"  ({r['rows_returned']} rows)", flush=True)
        client.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
