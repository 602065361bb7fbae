"""The ClickHouse sink's cost (`serve --store clickhouse://…`): what the outbox adds to the writer, how big
it is, and what shipping it to ClickHouse costs the writer process.

    python -m bench.clickhouse_ingest                  # 50,000 spans in requests of 500
    python -m bench.clickhouse_ingest --spans 20000 --per-request 200

1. The same agent traffic (a root, a framework chat span, the SDK's chat span under it, a tool span; ≈1 KB
   of prompt per chat span) is decoded by the real Normalizer and written by the real SpanWriter twice:
   with the outbox off (SQLite only) and on. CPU µs per span of each write (decode included), and the
   outbox's bytes per span.
2. The outbox is shipped by the real Shipper over HTTP (clickhouse-connect) to tests/chdb_http_server.py
   running in a process of its own, one ship per written request, as the writer process does after each
   commit: CPU µs per span of this process only (the converters, the HTTP client), not ClickHouse's.
3. As serve runs it: the same, with each batch's traces first looked up in ClickHouse (trace_sync: one
   query per batch; its CPU is in the write figure), into an empty database so that nothing is found.
4. Then the rechecks of the calls written (store/clickhouse/twin_calls.py: each call looked up for a twin in
   another trace 2, 60 and 120 s after it was written; the writer's clock is moved on), as the writer process
   runs them between batches: CPU µs per call looked up, of this process and of the ClickHouse server's
   process (tests/chdb_http_server.py: Python's HTTP handling and the engine). The same passes look each
   written trace up again 2 and 60 s after its write (trace_sync.TRACE_CHECK_AFTER_S): per span written is
   what the passes cost as a whole.

Everything lives in a temporary directory, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from store.clickhouse.client import HttpClient
from store.clickhouse.outbox import OutboxRecorder
from store.clickhouse.schema import migrate
from store.clickhouse.sink import Shipper
from store.clickhouse.trace_sync import TraceSync
from store.clickhouse.twin_calls import RECHECK_AFTER_S
from store.clickhouse.url import PASSWORD_ENV, parse_store_url
from tests.otlp_factory import make_span, trace_request
from tests.store_writing import writing

NS = 1_000_000_000


def traffic(spans: int, t0: int) -> list:
    out = []
    prompt = '[{"role": "user", "parts": [{"type": "text", "content": "' + "tell me about tides " * 50 + '"}]}]'
    for n in range(1, spans // 4 + 1):
        start = t0 + n * 10_000_000
        llm = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.usage.output_tokens": 40,
               "gen_ai.input.messages": prompt, "gen_ai.conversation.id": f"c-{n % 500}", "user.id": f"u-{n % 50}"}
        out += [
            make_span(n, 2, 1, "chat gpt-4o", {**llm, "gen_ai.request.model": "gpt-4o",
                                               "gen_ai.usage.input_tokens": 900 + n % 100},
                      start_ns=start + 1000, end_ns=start + 900_000_000),
            make_span(n, 3, 2, "chat gpt-4o-mini", {**llm, "gen_ai.request.model": "gpt-4o-mini",
                                                    "gen_ai.usage.input_tokens": 900 + n % 100,
                                                    "gen_ai.response.id": f"chatcmpl-{n:x}"},
                      start_ns=start + 2000, end_ns=start + 800_000_000),
            make_span(n, 4, 1, "tool search", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
                      start_ns=start + 900_000_000, end_ns=start + 950_000_000),
            make_span(n, 1, None, "agent", {"app.llm.feature": f"f-{n % 5}", "app.llm.tenant": f"t-{n % 7}"},
                      start_ns=start, end_ns=start + 1_000_000_000),
        ]
    return out


def write(path: Path, spans: list, per_request: int, now: int, outbox: bool,
          ship_to: HttpClient | None = None, sync: bool = False, server_pid: int = 0) -> dict[str, float]:
    requests = [trace_request(spans[i:i + per_request]) for i in range(0, len(spans), per_request)]
    write_cpu = ship_cpu = ship_wall = 0.0
    rechecks: dict[str, float] = {}
    with writing(path, now) as (normalizer, writer, db):
        clock = [now]
        writer.clock = lambda: clock[0]
        writer.outbox = OutboxRecorder() if outbox else None
        shipper = Shipper(db, lambda: ship_to) if ship_to is not None else None
        if sync and shipper is not None:
            writer.sync = TraceSync(shipper.reader)
        outbox_bytes = 0
        for request in requests:
            cpu = time.process_time()
            rows, resources, scopes, _ = normalizer.decode_traces(request, now)
            writer.write(rows, [], resources, scopes)
            write_cpu += time.process_time() - cpu
            if outbox:
                outbox_bytes += db.execute("SELECT coalesce(sum(length(payload)), 0) FROM clickhouse_outbox "
                                           "WHERE batch = (SELECT max(batch) FROM clickhouse_outbox)").fetchone()[0]
            if shipper is not None:
                cpu, wall = time.process_time(), time.perf_counter()
                assert shipper.ship(), shipper.stats.last_error
                ship_cpu += time.process_time() - cpu
                ship_wall += time.perf_counter() - wall
        if writer.sync is not None and shipper is not None and server_pid:
            calls = len(writer.sync.rechecks)
            cpu, server_cpu, wall, looked = time.process_time(), _cpu_of(server_pid), time.perf_counter(), 0
            for after_s in RECHECK_AFTER_S:
                clock[0] = now + after_s * NS
                while (n := writer.recheck_twins()):
                    looked += n
                assert shipper.ship()
            # The passes also look each written trace up again (trace_sync.TRACE_CHECK_AFTER_S): per span written
            # is what the passes cost ingest as a whole.
            spent, server_spent = time.process_time() - cpu, _cpu_of(server_pid) - server_cpu
            rechecks = {"calls": calls, "looked_up": looked,
                        "traces_looked_up": writer.sync.stats.trace_checks,
                        "cpu_us_per_call_looked_up": spent / max(1, looked) * 1e6,
                        "server_cpu_us_per_call_looked_up": server_spent / max(1, looked) * 1e6,
                        "wall_us_per_call_looked_up": (time.perf_counter() - wall) / max(1, looked) * 1e6,
                        "cpu_us_per_span_written": spent / len(spans) * 1e6,
                        "server_cpu_us_per_span_written": server_spent / len(spans) * 1e6}
        rows_shipped = shipper.stats.tables if shipper else {}
    n = len(spans)
    return {"spans": n, "write_cpu_us_per_span": write_cpu / n * 1e6, "outbox_bytes_per_span": outbox_bytes / n,
            "ship_cpu_us_per_span": ship_cpu / n * 1e6, "ship_wall_us_per_span": ship_wall / n * 1e6,
            "rows_shipped": rows_shipped, **({"rechecks": rechecks} if rechecks else {})}  # type: ignore[dict-item]


def _cpu_of(pid: int) -> float:
    """A process's CPU seconds (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--per-request", type=int, default=500)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmobs-bench-ch-"))
    server = None
    try:
        server = subprocess.Popen([sys.executable, "-m", "tests.chdb_http_server", "--path", str(tmp / "chdb"),
                                   "--port", "0"], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        port = int(re.search(r":(\d+)", server.stdout.readline()).group(1))  # type: ignore[union-attr]
        client = HttpClient(parse_store_url(f"clickhouse://default@127.0.0.1:{port}/bench", {PASSWORD_ENV: ""}))
        migrate(client)
        now = time.time_ns()
        spans = traffic(args.spans, now - 600 * NS)
        plain = write(tmp / "plain.db", spans, args.per_request, now, outbox=False)
        shipped = write(tmp / "shipped.db", spans, args.per_request, now, outbox=True, ship_to=client)
        in_clickhouse = client.query("SELECT count() FROM spans FINAL")[0][0]
        # serve's default: each batch first looks its traces up in ClickHouse (store/clickhouse/trace_sync.py).
        # Into a database of its own, so that the lookups find nothing, as with traces new to every replica.
        client.command("CREATE DATABASE IF NOT EXISTS bench_sync")
        sync_client = HttpClient(parse_store_url(f"clickhouse://default@127.0.0.1:{port}/bench_sync",
                                                 {PASSWORD_ENV: ""}))
        migrate(sync_client)
        synced = write(tmp / "synced.db", spans, args.per_request, now, outbox=True, ship_to=sync_client, sync=True,
                       server_pid=server.pid)
        sync_client.close()
        client.close()
        db = sqlite3.connect(tmp / "shipped.db")
        stored = db.execute("SELECT count(*) FROM spans").fetchone()[0]
        db.close()
        print(json.dumps({"outbox_off": plain, "outbox_on_and_shipped": shipped,
                          "outbox_on_shipped_and_traces_looked_up": synced,
                          "spans_in_clickhouse": in_clickhouse, "spans_in_sqlite": stored}, indent=1))
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
