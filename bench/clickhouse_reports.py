"""What the read commands cost on a ClickHouse store (chdb, the engine in-process): `report` per model,
service and feature, per tool and per user, and the trace list, over a store of `--spans` spans.

    python -m bench.clickhouse_reports                      # 1M spans over 7 days
    python -m bench.clickhouse_reports --spans 200000 --repeat 5

The store is filled inside the engine (INSERT … SELECT, as bench/clickhouse_insert.py fills it): spans
8 per trace over the 7 days before now; trace summaries from them; rollups per minute and per hour and
per dimension set, as the writer ships them, plus a signed −/+ correction pair for 1 % of the minute rows,
left unmerged (reads must fold them). Each query runs `--repeat` times (the first, which loads marks and
indexes, is not counted); the median wall and CPU ms are printed. CPU is the process's (chdb's threads
included): the whole cost of answering.

Everything lives in a temporary directory, deleted at the end, unless `--keep DIR` keeps it there for later runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.clickhouse_insert import DAY_NS, NS, _fill
from store.clickhouse import dashboards, reports, schema
from store.clickhouse.client import ChdbClient

_DIMS = ("service", "provider", "model", "operation", "feature", "tenant", "prompt_id", "prompt_version", "variant")


def _fill_summaries(client: ChdbClient, conversation_minutes: int = 0) -> None:
    # Values are ints and fixed SQL only: nothing from outside reaches this text.
    conversation = ("concat('c-', toString(cityHash64(trace_id) % 5000))" if conversation_minutes <= 0 else
                    f"concat('c-', toString(intDiv(min(start_ns), {int(conversation_minutes) * 60 * NS})), '-', "
                    "toString(cityHash64(trace_id) % 50))")
    client.command(f"""
        INSERT INTO trace_summaries (trace_id, root_known, service, start_ns, end_ns, duration_ns, spans, llm_calls,
            input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nusd,
            unpriced_calls, errors_api, errors_validation, errors_guardrail, error_spans, feature, user_id,
            conversation_id, updated_ns)
        SELECT trace_id, 1, any(service), min(start_ns), max(end_ns), max(end_ns) - min(start_ns), count(),
            countIf(billed = 1), sum(coalesce(input_tokens, 0)), sum(coalesce(output_tokens, 0)), 0, 0, 0,
            sum(coalesce(cost_nusd, 0)), 0, 0, 0, 0, 0, ['ask', 'search', 'checkout'][cityHash64(trace_id) % 3 + 1],
            concat('u-', toString(cityHash64(trace_id) % 500)), {conversation},
            max(end_ns)
        FROM spans GROUP BY trace_id
    """)


def _fill_tool_calls(client: ChdbClient) -> None:
    """The tool calls the replicas would keep (m006): each tool span of the fill is a call of its own (no
    chains), failed when its status is."""
    client.command("INSERT INTO tool_calls (trace_id, span_id, start_ns, tool, duration_ns, failed, version) "
                   "SELECT trace_id, span_id, start_ns, tool_name, duration_ns, status = 2, 1 FROM spans "
                   "WHERE kind = 'tool'")


METRIC_SERIES = 200  # 40 metric names, 5 services each: the caps allow 5,000


def _fill_metric_points(client: ChdbClient, end_ns: int) -> None:
    """OTLP metric points as the replicas ship them (m009): METRIC_SERIES series over the week, a row per
    series and bucket at 1 min and 1 h, at 10 s for the last 2 h, in one part per resolution. A third of
    the names are gauges (two of them a model server's queue and KV cache), a third counters, a third
    histograms of a few buckets."""
    end_s = end_ns // NS
    for res, buckets in ((60, 7 * 1440), (3600, 7 * 24), (10, 720)):
        first = end_s - end_s % res - (buckets - 1) * res
        client.command(f"""
            INSERT INTO metric_points (res, bucket, name, series, unit, kind, service, attrs_json, n, total, min, max,
                                       last, hist)
            SELECT {res}, {first} + b.number * {res} AS bucket, name, MD5(concat(name, '|', service)),
                   if(kind = 'histogram', 's', ''), kind, service, '{{}}', 6, 6 * value, value - 1, value + 1,
                   (bucket * {NS} + 5 * {NS}, if(kind = 'histogram', NULL, value)),
                   if(kind = 'histogram', ([toUInt16(40 + b.number % 5), toUInt16(52)], [toInt64(4), toInt64(2)]),
                      ([], []))
            FROM (SELECT number % 40 AS k,
                         multiIf(k = 0, 'vllm:num_requests_waiting', k = 3, 'vllm:kv_cache_usage_perc',
                                 concat('bench.metric.', toString(k))) AS name,
                         ['gauge', 'counter', 'histogram'][k % 3 + 1] AS kind,
                         concat('svc-', toString(intDiv(number, 40))) AS service, number AS sid
                  FROM numbers({METRIC_SERIES})) AS s
            CROSS JOIN numbers({buckets}) AS b
            ARRAY JOIN [toFloat64((s.sid * 7 + b.number) % 100)] AS value""")


def _fill_by_cost(client: ChdbClient, live: bool = True) -> None:
    """The by-cost copy of the summaries (m007) as replicas leave it before a merge: each trace's live row
    (`live`: a kept store's came with the migration), an earlier row at half its cost (the trace's first
    batch) and that row's deletion at the live row's version, each in parts of their own."""
    table = schema.BY_COST_TABLE
    if live:
        client.command(f"INSERT INTO {table} SELECT * FROM trace_summaries")
    for deleted, version in ((0, "updated_ns - 1"), (1, "updated_ns")):
        client.command(f"INSERT INTO {table} (trace_id, root_known, start_ns, end_ns, cost_nusd, updated_ns, "
                       f"is_deleted) SELECT trace_id, {1 - deleted}, start_ns, end_ns, intDiv(cost_nusd, 2), "
                       f"{version}, {deleted} FROM trace_summaries WHERE cost_nusd > 1")


def _fill_rollups(client: ChdbClient) -> None:
    """Minute and hour rollups of the billed spans, per (service, provider, model, feature), with latency and
    time-to-first-token histograms; then a −/+ pair for 1 % of the minute rows, in parts of their own."""
    for res in (60, 3600):
        client.command(f"""
            INSERT INTO rollups (res, bucket, service, provider, model, operation, feature, tenant, prompt_id,
                prompt_version, variant, calls, errors_api, err_rate_limit, input_tokens, output_tokens, cost_nusd,
                duration_ns, `latencyMap.bucket`, `latencyMap.count`, `ttftMap.bucket`, `ttftMap.count`)
            SELECT {res}, intDiv(start_ns, {res * NS}) * {res}, coalesce(service, ''), coalesce(provider, ''),
                coalesce(request_model, ''), coalesce(operation, ''),
                ['ask', 'search', 'checkout'][cityHash64(trace_id) % 3 + 1], '', '', '', '',
                count(), countIf(sipHash64(span_id) % 50 = 0), countIf(sipHash64(span_id) % 50 = 0),
                sum(input_tokens), sum(output_tokens), sum(cost_nusd), sum(duration_ns),
                (sumMap([toUInt16(floor(log2(duration_ns / 1000) * 4))], [toInt64(1)]) AS lat).1, lat.2,
                (sumMap([toUInt16(floor(log2(duration_ns / 4000) * 4))], [toInt64(1)]) AS tt).1, tt.2
            FROM spans WHERE billed = 1 GROUP BY 2, 3, 4, 5, 6, 7
        """)
    for sign in (-1, 1):
        client.command(f"""
            INSERT INTO rollups (res, bucket, service, provider, model, operation, feature, tenant, prompt_id,
                prompt_version, variant, calls, cost_nusd)
            SELECT res, bucket, service, provider, model, operation, feature, tenant, prompt_id, prompt_version,
                variant, {sign}, {sign} * 1000
            FROM rollups WHERE res = 60 AND cityHash64(bucket, model, feature) % 100 = 0
            SETTINGS insert_deduplication_token = 'bench-{sign}'
        """)


def _timed(call: Callable[[], Any], repeat: int) -> dict[str, float]:
    call()  # first touch: marks and primary index loaded
    walls, cpus = [], []
    for _ in range(repeat):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        call()
        walls.append((time.perf_counter() - wall0) * 1e3)
        cpus.append((time.process_time() - cpu0) * 1e3)
    return {"wall_ms": round(statistics.median(walls), 1), "cpu_ms": round(statistics.median(cpus), 1)}


def _check(client: ChdbClient, now_s: int) -> int:
    """One `check` evaluation (the demo's rules) on this engine: AlertEngine's ClickHouse reads, given the
    in-process client instead of one it would open over HTTP."""
    return len(alert_engine(client).evaluate(float(now_s)))


def alert_engine(client: ChdbClient) -> Any:
    """An AlertEngine with the demo's rules reading this engine (the in-process client instead of one it would
    open over HTTP; closing the engine would close it: not done)."""
    from llmobs_tui.alerting.engine import AlertEngine
    from llmobs_tui.config import load_config
    from store.clickhouse.url import ClickHouseUrl

    config = load_config(Path(__file__).parent.parent / "llmobs_tui" / "data" / "demo.toml")
    engine = AlertEngine("unused.db", config, ClickHouseUrl("http", "in-process", 0, "bench", client.database))
    engine._db = client
    return engine


def arguments(description: str | None, repeat: int) -> argparse.ArgumentParser:
    """The flags of the benchmarks that fill a chdb store first (this one, bench.clickhouse_tui)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--content-bytes", type=int, default=600)
    parser.add_argument("--conversation-minutes", type=int, default=0,
                        help="each conversation's turns within this many minutes (50 conversations at a time); "
                             "default 0: 5,000 conversations, each spread over the whole week")
    parser.add_argument("--keep", metavar="DIR",
                        help="fill the store in DIR and keep it; a later run given the same DIR reads it again "
                             "(its week ends when it was filled; --spans and the fill flags are then ignored)")
    parser.add_argument("--stop-merges", action="store_true",
                        help="stop ClickHouse's background merges before timing: in-process they share the "
                             "bench's CPU, and right after a fill they run for minutes")
    return parser


def opened_store(args: argparse.Namespace, prefix: str) -> tuple[ChdbClient, int, float, Callable[[], None]]:
    """The store the flags ask for: (its client, the week's end in ns, seconds its fill took, the cleanup
    to call at the end). Filled in a temporary directory, or in --keep's, or read again from there."""
    if args.keep is None:
        path = tempfile.mkdtemp(prefix=prefix)
        cleanup: Callable[[], None] = lambda: shutil.rmtree(path, ignore_errors=True)  # noqa: E731
    else:
        path, cleanup = args.keep, lambda: None
    kept = Path(path) / "bench.json"
    if args.keep is not None and kept.exists():
        client = ChdbClient(path, "bench")
        schema.migrate(client)
        if not client.query("SELECT count() FROM tool_calls")[0][0]:  # kept before m006 made the table
            _fill_tool_calls(client)
        if not client.query(f"SELECT count() FROM {schema.BY_COST_TABLE} WHERE is_deleted = 1")[0][0]:  # before m007
            _fill_by_cost(client, live=False)
        meta = json.loads(kept.read_text())
        end_ns, fill_s = meta["end_ns"], meta["fill_s"]
        if not client.query("SELECT count() FROM metric_points")[0][0]:  # kept before m009 made the table
            _fill_metric_points(client, end_ns)
        args.spans = meta["spans"]  # what the store holds, printed with the figures
    else:
        client, end_ns, fill_s = filled_store(path, args.spans, args.content_bytes, args.conversation_minutes)
        if args.keep is not None:
            kept.write_text(json.dumps({"end_ns": end_ns, "fill_s": fill_s, "spans": args.spans}))
    if args.stop_merges:
        client.command("SYSTEM STOP MERGES")
    return client, end_ns, fill_s, cleanup


def filled_store(path: str, spans: int, content_bytes: int, conversation_minutes: int = 0
                 ) -> tuple[ChdbClient, int, float]:
    """A migrated chdb store at `path` holding `spans` spans (a week ending now), their summaries and
    rollups: (its client, the week's end in ns, seconds the fill took)."""
    client = ChdbClient(path, "bench")
    schema.migrate(client)
    end_ns = time.time_ns()
    fill0 = time.perf_counter()
    _fill(client, "spans", spans, end_ns, content_bytes, words=True)
    _fill_summaries(client, conversation_minutes)
    _fill_by_cost(client)
    _fill_rollups(client)
    _fill_tool_calls(client)
    schema.fill_tool_rollups(client)
    _fill_metric_points(client, end_ns)
    return client, end_ns, time.perf_counter() - fill0


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, repeat=7).parse_args(argv)
    client, end_ns, fill_s, cleanup = opened_store(args, "llmobs-bench-chreports-")
    try:
        counts = {table: int(client.query(f"SELECT count() FROM {table}")[0][0])
                  for table in ("spans", "trace_summaries", "rollups")}
        now_s = end_ns // NS
        out: dict[str, Any] = {"spans": args.spans, "rows": counts, "fill_s": round(fill_s, 1),
                               "repeat": args.repeat, "queries": {}}
        calls: dict[str, Callable[[], Any]] = {
            "report --window 24h --by model": lambda: reports.report(client, 86400, ["model"], now_s),
            "report --window 7d --by model": lambda: reports.report(client, 7 * 86400, ["model"], now_s),
            "report --window 24h --by service,feature": lambda: reports.report(client, 86400, ["service", "feature"],
                                                                               now_s),
            "report --window 1h --by model": lambda: reports.report(client, 3600, ["model"], now_s),
            "report --window 24h --by tool": lambda: reports.tool_report(client, 86400, ["tool"], now_s),
            "report --window 24h --by user": lambda: reports.user_report(client, 86400, now_s),
            "traces --window 24h --sort cost --limit 50": lambda: dashboards.trace_list(client, 86400, now_s, (), False,
                                                                                         "cost", True, 50),
        }
        # A trace from the middle of the last day: `show` reads its spans. (`export` reads their content too,
        # which is random text here, not protobuf.)
        trace_id = client.query("SELECT trace_id FROM trace_summaries WHERE start_ns >= {a:Int64} ORDER BY start_ns "
                                "LIMIT 1", {"a": end_ns - DAY_NS // 2})[0][0]
        calls["show TRACE (spans of one trace)"] = lambda: reports.trace_spans(client, trace_id)
        calls["check (demo rules: 4 SLOs, budgets, every rule)"] = lambda: _check(client, now_s)
        for name, call in calls.items():
            out["queries"][name] = _timed(call, args.repeat)
        groups = reports.report(client, 86400, ["model"], now_s)["groups"]
        out["check"] = {"report_24h_by_model_calls": sum(g["calls"] for g in groups),
                        "spans_in_24h_billed": int(client.query(
                            "SELECT countIf(billed = 1) FROM spans FINAL WHERE start_ns >= {a:Int64}",
                            {"a": end_ns - DAY_NS})[0][0])}
    finally:
        client.close()
        cleanup()
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
