"""GET /metrics benchmark: CPU per Prometheus scrape of a large store, read-only.

A scrape reads the totals since the store began from the hour rollups (store/lifetime_totals.py).
Measured: a full read (what the first scrape after a start costs, and the refresh every 5 minutes)
and a steady scrape (the cache of settled hours in use: what a scrape every 15 s costs), as CPU
milliseconds of the reading thread next to wall milliseconds, because this machine's cores are shared.

    python -m bench.metrics_scrape                                  # bench/results/week3m.db, 20 rounds
    python -m bench.metrics_scrape --db bench/results/week.db --rounds 50
    python -m bench.metrics_scrape --live 20                        # also: a real serve under ingest load,
                                                                    # scraped over HTTP every second
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bench import Serve, tree, tree_cpu


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _summary(cpu_ms: list[float], wall_ms: list[float]) -> dict:
    return {"cpu_ms_p50": round(statistics.median(cpu_ms), 2), "cpu_ms_p95": round(_p(cpu_ms, 0.95), 2),
            "wall_ms_p50": round(statistics.median(wall_ms), 2), "wall_ms_p95": round(_p(wall_ms, 0.95), 2),
            "rounds": len(cpu_ms)}


def _opener(db: Path) -> tuple[Callable[[], sqlite3.Connection], str | None]:
    """How each scrape opens the store: as serve does (store.connection.open_reader), or, for a bench
    store built before the newest migration (which only `serve` may apply, and this bench must not
    write), read-only without the schema check; the rollups it reads are the same."""
    from store.connection import StoreError, open_reader

    try:
        open_reader(db).close()
        return (lambda: open_reader(db)), None
    except StoreError as exc:
        if "older schema" not in str(exc):
            raise
        return (lambda: sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)), str(exc)


def time_scrapes(db: Path, rounds: int) -> dict:
    from receiver.prometheus import Exposition
    from store.lifetime_totals import TotalsCache, read_for_scrape

    open_db, note = _opener(db)
    reader = open_db()
    spans = reader.execute("SELECT max(id) FROM spans").fetchone()[0] or 0
    hour_rows = reader.execute("SELECT count(*) FROM rollups WHERE res = 3600").fetchone()[0]
    last_hour = reader.execute("SELECT max(bucket) FROM rollups WHERE res = 3600").fetchone()[0] or 0
    reader.close()
    # "Now" is kept inside the store's last hour, as while serve writes it: each steady scrape then
    # reads two hours of rollups that hold data (a store built hours ago would flatter it).
    now_s = min(time.time(), last_hour + 3599)
    exposition = Exposition()

    def scrape(cache: TotalsCache) -> tuple[float, float, bytes]:
        """One scrape as MetricsSource.render_now does it: open, read in one snapshot, render."""
        cpu, wall = time.thread_time(), time.perf_counter()
        conn = open_db()
        try:
            snapshot = read_for_scrape(conn, now_s, cache)
        finally:
            conn.close()
        body = exposition.render(snapshot).encode()
        return (time.thread_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000, body

    full_cpu, full_wall, steady_cpu, steady_wall = [], [], [], []
    for _ in range(max(3, rounds // 4)):
        cache = TotalsCache()  # a fresh process's first scrape (and the 5-minute refresh): every hour rollup
        cpu_ms, wall_ms, body = scrape(cache)
        full_cpu.append(cpu_ms)
        full_wall.append(wall_ms)
    for _ in range(rounds):
        cpu_ms, wall_ms, body = scrape(cache)
        steady_cpu.append(cpu_ms)
        steady_wall.append(wall_ms)
    series = sum(1 for line in body.decode().splitlines() if line.startswith("llm_input_tokens_total{"))
    return {"store": {"path": str(db), "spans": spans, "hour_rollup_rows": hour_rows, "note": note},
            "body_bytes": len(body), "label_sets": series,
            "full_read": _summary(full_cpu, full_wall), "steady_scrape": _summary(steady_cpu, steady_wall)}


def time_live(seconds: float, rate: float) -> dict:
    """A real serve on a fresh store under `rate` spans/s, scraped over HTTP every second."""
    import psutil

    from bench.tui import ingest_load

    with tempfile.TemporaryDirectory() as tmp:
        server = Serve(Path(tmp) / "live.db", "--metrics-port", "0")
        http = server.first_line.split("Prometheus metrics on ")[-1].split(";")[0].strip()
        ctx = multiprocessing.get_context("spawn")
        stop, counter, results = ctx.Event(), ctx.Value("q", 0), ctx.Queue()
        load = ctx.Process(target=ingest_load, args=(server.address, rate, (1 << 62) + secrets.randbits(61),
                                                     stop, counter, results))
        load.start()
        time.sleep(3)
        serve_tree = psutil.Process(server.pid)
        started, spans_before, cpu_before = time.monotonic(), counter.value, tree_cpu(tree(serve_tree))
        walls = []
        while time.monotonic() - started < seconds:
            wall = time.perf_counter()
            with urllib.request.urlopen(http, timeout=30) as response:
                response.read()
            walls.append((time.perf_counter() - wall) * 1000)
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - wall)))
        elapsed = time.monotonic() - started
        spans = counter.value - spans_before
        cpu = tree_cpu(tree(serve_tree)) - cpu_before
        stop.set()
        results.get(timeout=60)
        load.join(30)
        server.stop()
    return {"live": {"seconds": round(elapsed, 1), "ingest_spans_per_s": round(spans / elapsed),
                     "serve_cpu_ms_per_1k_spans": round(cpu * 1000 / max(1, spans) * 1000, 1),
                     "scrapes": len(walls), "scrape_wall_ms_p50": round(statistics.median(walls), 1),
                     "scrape_wall_ms_p95": round(_p(walls, 0.95), 1)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("bench/results/week3m.db"),
                        help="the store to scrape, read-only (default bench/results/week3m.db: build it with "
                             "`python -m bench.tui --db bench/results/week3m.db --store-spans 3000000 --views-only`)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--live", type=float, default=0.0, metavar="SECONDS",
                        help="also run a real serve under ingest load this long, scraping every second")
    parser.add_argument("--rate", type=float, default=2000.0, help="spans/s of the live ingest load (default 2000)")
    args = parser.parse_args(argv)
    if not args.db.exists():
        print(f"no store at {args.db}", file=sys.stderr)
        return 1
    result = time_scrapes(args.db, args.rounds)
    if args.live:
        result |= time_live(args.live, args.rate)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
