"""What the live TUI's reads cost on a ClickHouse store (`llmobs-tui --store`), chdb in-process.

    python -m bench.clickhouse_tui                          # 1M spans over 7 days, 5 repeats
    python -m bench.clickhouse_tui --spans 200000 --repeat 3

The store is filled as bench/clickhouse_reports.py fills it (spans 8 per trace over the 7 days before now,
trace summaries, minute and hour rollups per dimension set with an unmerged −/+ correction pair for 1 % of
the minute rows, 200 OTLP metric series over the week). Each read is
llmobs_tui.clickhouse_reader.ClickHouseStoreReader's method, as a screen calls it (asyncio, the client in
a worker thread), parsed by the shared parse_* functions: the whole cost of a screen's data. The first
call of each is not counted (marks and indexes loaded); the median and the range of `--repeat` runs are
printed, wall and CPU ms. CPU is the process's, chdb's threads included.

Everything lives in a temporary directory, deleted at the end, unless `--keep DIR` keeps it there for later runs.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.clickhouse_insert import DAY_NS, NS
from bench.clickhouse_reports import _check, alert_engine, arguments, opened_store
from llmobs_tui.clickhouse_reader import ClickHouseStoreReader
from llmobs_tui.filtering import parse
from store.clickhouse.url import ClickHouseUrl


def _timed(read: Callable[[], Awaitable[Any]], repeat: int) -> dict[str, Any]:
    asyncio.run(read())  # first touch: marks and primary index loaded
    walls, cpus = [], []
    for _ in range(repeat):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        asyncio.run(read())
        walls.append((time.perf_counter() - wall0) * 1e3)
        cpus.append((time.process_time() - cpu0) * 1e3)
    return {"wall_ms": round(statistics.median(walls), 1), "wall_range_ms": [round(min(walls), 1),
                                                                               round(max(walls), 1)],
            "cpu_ms": round(statistics.median(cpus), 1), "cpu_range_ms": [round(min(cpus), 1), round(max(cpus), 1)]}


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, repeat=5).parse_args(argv)
    client, end_ns, fill_s, cleanup = opened_store(args, "llmobs-bench-chtui-")
    try:
        now_s = end_ns / NS
        reader = ClickHouseStoreReader(ClickHouseUrl("http", "in-process", 0, "bench", client.database), client)
        reader.connect()
        trace_id = client.query("SELECT trace_id FROM trace_summaries WHERE start_ns >= {a:Int64} ORDER BY start_ns "
                                "LIMIT 1", {"a": end_ns - DAY_NS // 2})[0][0]
        conversation = client.query("SELECT conversation_id FROM trace_summaries WHERE start_ns >= {a:Int64} "
                                    "AND conversation_id IS NOT NULL ORDER BY start_ns LIMIT 1",
                                    {"a": end_ns - DAY_NS // 2})[0][0]
        model, feature = client.query("SELECT model, feature FROM rollups WHERE res = 3600 AND bucket >= {a:Int64} "
                                      "GROUP BY model, feature ORDER BY sum(calls) DESC LIMIT 1",
                                      {"a": int(now_s) - 86400})[0]
        empty = parse("")
        engine = alert_engine(client)  # one engine, evaluating every 10 s as serve's and the TUI's do
        reads: dict[str, Callable[[], Awaitable[Any]]] = {
            "overview + charts, 1h (key 1)": lambda: reader.charts(3600, now_s),
            "overview + charts, 24h": lambda: reader.charts(86400, now_s),
            "overview + charts, 24h, compared with the week before (v v)": lambda: reader.charts(86400, now_s,
                                                                                                   7 * 86400.0),
            "newest_span_id + store size (every tick)": reader.newest_span_id,
            "breakdown by model, 24h (key 2)": lambda: reader.breakdown(86400, now_s, "model"),
            "breakdown's two trend charts by model, 24h": lambda: _both_trends(reader, now_s),
            "tool calls by tool, 24h (Breakdown by tool)": lambda: reader.tool_calls(86400, now_s),
            "Trends by tool, latency p95, 24h (key 7, g to tool)": lambda: reader.trends("latency_p95", "tool", 86400,
                                                                                          now_s),
            "trace list by cost, 24h, 500 rows (key 3)": lambda: reader.traces(86400, now_s, empty, "cost", True),
            "one trace: spans + log counts (Enter)": lambda: reader.trace(trace_id),
            "drift panel, 1h (key 5)": lambda: reader.drift(3600, now_s),
            "sessions by last turn, 24h (key 6)": lambda: reader.sessions(86400, now_s, empty, "conversation",
                                                                          "last", True),
            "sessions by user, by cost, 24h (u on key 6)": lambda: reader.sessions(86400, now_s, empty, "user", "cost",
                                                                                True),
            "one conversation: its turns and calls (Enter on a session)": lambda: reader.conversation(conversation),
            "why slow? a call's cohort, 24h (w on a call)": lambda: reader.call_cohort(model, feature or None, 86400,
                                                                                       now_s),
            "why slow? a trace's cohort and 5 typical traces, 24h (w on a root)": lambda: reader.trace_cohort(
                trace_id, 86400, now_s),
            "every alert rule once, demo config (a new engine: nothing cached)": lambda: _rules(client, now_s),
            "every alert rule, the live engine's next evaluation (tool digests kept)": lambda: _rules_again(
                engine, now_s),
            "Metrics screen, 1h (key 8)": lambda: reader.metrics(3600, now_s),
            "Metrics screen, 24h": lambda: reader.metrics(86400, now_s),
            "one metric's chart, a histogram, 24h (Enter on a metric)": lambda: reader.metric_chart(
                "bench.metric.2", 86400, now_s),
            "the Overview's Saturation card (every refresh)": lambda: reader.serving_saturation(now_s),
        }
        # `text:` searches (store/clickhouse/search.py): the list, then its snippets, as the Traces screen reads.
        searches: dict[str, Callable[[], Awaitable[Any]]] = {
            f"trace list, text:{search}, {window // 3600}h, with snippets":
                lambda window=window, search=search: _search(reader, now_s, window, search)
            for window, search in ((3600, "w1"), (86400, "w1"), (3600, "w19998"), (86400, "w19998"),
                                   (86400, "w5 w1"), (86400, "zzz"))}
        reads.update(searches)
        out: dict[str, Any] = {"spans": args.spans, "fill_s": round(fill_s, 1), "repeat": args.repeat,
                               "reads": {name: _timed(read, args.repeat) for name, read in reads.items()}}
        # A search repeated (the live loop runs it again every refresh) skips the granules where its condition
        # matched nothing the last time (ClickHouse ≥ 25.3's query condition cache): a new search reads them all
        # once (its later queries in the same refresh skip them).
        out["reads"].update({f"{name}, a new search (condition cache emptied)": _timed(_first_time(client, read),
                                                                                      args.repeat)
                             for name, read in searches.items()})
        overview = asyncio.run(reader.overview(86400, now_s))
        out["check"] = {"overview_24h_calls": overview["calls"],
                        "billed_spans_24h": int(client.query(
                            "SELECT countIf(billed = 1) FROM spans FINAL WHERE start_ns >= {a:Int64}",
                            # The 24 h Overview reads hour buckets: its first one, straddling the window start, whole.
                            {"a": int(now_s - 86400) // 3600 * 3600 * NS})[0][0]),
                        "metric_series_24h": len(asyncio.run(reader.metrics(86400, now_s)).series)}
    finally:
        client.close()
        cleanup()
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


async def _rules(client: Any, now_s: float) -> int:
    """What the TUI's alert engine evaluates every 10 s off the UI thread (bench.clickhouse_reports's check)."""
    return _check(client, int(now_s))


async def _rules_again(engine: Any, now_s: float) -> int:
    return len(engine.evaluate(now_s))


def _first_time(client: Any, read: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    async def emptied_first() -> Any:
        client.command("SYSTEM DROP QUERY CONDITION CACHE")
        return await read()
    return emptied_first


async def _search(reader: ClickHouseStoreReader, now_s: float, window_s: int, text: str) -> int:
    flt = parse(f"text:{text}")
    traces = await reader.traces(window_s, now_s, flt, "start", True)
    await reader.text_matches([t.trace_id for t in traces], flt, now_s - window_s)
    return len(traces)


async def _both_trends(reader: ClickHouseStoreReader, now_s: float) -> None:
    for metric in ("cost", "latency_p95"):
        await reader.trends(metric, "model", 86400, now_s)


if __name__ == "__main__":
    raise SystemExit(main())
