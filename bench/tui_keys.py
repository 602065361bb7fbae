"""Key-press latency of the real TUI while `serve` ingests: the time from a key to the new screen
showing its data, per key kind, with the TUI process's CPU per key.

    python -m bench.tui_keys                        # week.db, ingest off then at full speed
    python -m bench.tui_keys --ingest on --rate 2000 --rounds 4
    python -m bench.tui_keys --db /tmp/small.db --ingest off

What runs: a real `llmobs-tui serve` on the store (bench.Serve), bench.tui's `ingest_load` sending
OTLP/gRPC to it from its own process, and the real `LlmobsApp` opened read-only on the same store the
way `llmobs-tui --read-only --db` opens it (the rule engine's alerts included), in a child process of
its own (its own GIL), headless at 160×48. Keys go through Textual's real key dispatch
(`Pilot.press`).

What is timed, per press: from just before the key is posted to the moment the app's `shown_hook`
reports that the expected screen has run `show(data)` for a load that started after the key
("shown"), then to the end of the next screen refresh after that show, when the new data is on the
screen ("painted": a `call_after_refresh` from the hook; the figure the targets are about). CPU is
the TUI process's own (time.process_time, all its threads) over the press-to-painted span, so that
a busy machine shows as wall time, not as CPU. The idle CPU (per second of the live loop with no
key) is reported separately, and after the tour the CPU per second of watching the Overview, the
trace list and Sessions for 5 s each (the live refresh alone: a key pressed meanwhile waits for it).
The window is 24 h (`--window`): with ingest off, the last hour of a store built earlier is empty,
and Enter on an empty trace list opens nothing.

The tour starts once the app has composed, read and rendered the screens ahead of their first key
(LlmobsApp.warm_screens, a few seconds after the first paint; the time is reported): a key pressed
before that is served too, but may wait for a screen being composed.

The keys, as a user presses them: 1–7 (the screens), Enter on the trace list (opens the newest
trace), Esc (back), `t` (next window, same screen reloads) and `:open ID` Enter on the store's
500-span trace (bench/tui.py's build_week plants it). Between keys the tour waits 0.6–1.2 s, so
that presses land at every phase of the 1 s live refresh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# (label, keys to press before the timed one, the timed key, the screen that must show)
STEPS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("1 overview", (), "1", "overview"),
    ("2 breakdown", (), "2", "breakdown"),
    ("3 traces", (), "3", "traces"),
    ("enter trace", (), "enter", "trace"),
    ("esc back", (), "escape", "traces"),
    ("5 alerts", (), "5", "alerts"),
    ("6 sessions", (), "6", "sessions"),
    ("7 trends", (), "7", "trends"),
    ("4 trace", (), "4", "trace"),
    ("t window", (), "t", "trace"),
    ("1 overview", (), "1", "overview"),
    ("t window", (), "t", "overview"),
    ("t window", (), "t", "overview"),
    ("t window", (), "t", "overview"),  # back to 1 h
    ("open 500-span", ("colon", "o", "p", "e", "n", "space"), "enter", "trace"),
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- the TUI child process ----------------------------------------------------------------------


async def tour(db: Path, rounds: int, big_trace: str | None, seed: int, window_s: float = 86400,
               alerts_on: bool = True) -> dict:
    """The real app, read-only as `llmobs-tui --read-only` runs it, pressed through `STEPS` `rounds` times."""
    from llmobs_tui.alerting.live import EngineAlerts
    from llmobs_tui.app import LlmobsApp
    from llmobs_tui.config import Config
    from llmobs_tui.widgets.chrome import IngestStatus

    rng = random.Random(seed)
    alerts = EngineAlerts(db, Config()) if alerts_on else None
    # When each rule evaluation ran (perf_counter): a press that overlaps one shares the GIL with it.
    evaluations: list[tuple[float, float]] = []
    if alerts is not None:
        evaluate_now = alerts.evaluate_now

        def timed_evaluation(now_s: float) -> None:
            started = time.perf_counter()
            try:
                evaluate_now(now_s)
            finally:
                evaluations.append((started, time.perf_counter()))

        alerts.evaluate_now = timed_evaluation  # type: ignore[method-assign]
    app = LlmobsApp(db, alerts=alerts, window_s=window_s)
    app.status = IngestStatus(mode=f"read-only {db}")
    shown = asyncio.Event()
    expect: dict = {}

    def hook(screen, load_started: float) -> None:
        if expect and "shown_at" not in expect and expect["screen"] == screen.NAME and load_started >= expect["after"]:
            expect["shown_at"] = time.perf_counter()
            app.call_after_refresh(painted)

    def painted() -> None:
        if expect:
            expect["painted_at"] = time.perf_counter()
            shown.set()

    app.shown_hook = hook
    samples: dict[str, list[tuple[float, float, float]]] = {}
    presses: list[tuple[float, str, float, float]] = []  # (t0, label, painted ms, CPU ms)
    timeouts: dict[str, int] = {}
    idle_cpu: list[float] = []
    watching: dict[str, float] = {}
    try:
        async with app.run_test(headless=True, size=(160, 48)) as pilot:
            expect.update(screen="overview", after=0.0)
            await asyncio.wait_for(shown.wait(), 60)
            # The screens composed, read and rendered ahead of their first key (LlmobsApp.warm_screens):
            # the tour measures a TUI that has settled, as one is a few seconds after it starts.
            started = time.perf_counter()
            await asyncio.wait_for(app.screens_warmed.wait(), 60)
            warm_s = time.perf_counter() - started
            # The live loop with nobody pressing: its CPU per second is the floor under every key.
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(3)
            idle_cpu.append((time.process_time() - cpu0) / (time.perf_counter() - wall0))
            for _ in range(rounds):
                for label, before, key, screen in STEPS:
                    if label.startswith("open") and not big_trace:
                        continue
                    for k in before:
                        await pilot.press(k)
                    if label.startswith("open"):
                        await pilot.press(*big_trace)
                    shown.clear()
                    expect.clear()
                    cpu0, t0 = time.process_time(), time.perf_counter()
                    expect.update(screen=screen, after=t0)
                    await pilot.press(key)
                    try:
                        await asyncio.wait_for(shown.wait(), 10)
                    except TimeoutError:
                        timeouts[label] = timeouts.get(label, 0) + 1
                        expect.clear()
                        continue
                    shown_s, painted_s = expect["shown_at"] - t0, expect["painted_at"] - t0
                    cpu = time.process_time() - cpu0
                    expect.clear()
                    samples.setdefault(label, []).append((shown_s, painted_s, cpu))
                    presses.append((t0, label, round(painted_s * 1000, 1), round(cpu * 1000, 1)))
                    await asyncio.sleep(rng.uniform(0.6, 1.2))
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(3)
            idle_cpu.append((time.process_time() - cpu0) / (time.perf_counter() - wall0))
            # Watching one screen while ingest runs: the live refresh's CPU per second on each list.
            for key, screen in (("1", "overview"), ("3", "traces"), ("6", "sessions")):
                await pilot.press(key)
                await asyncio.sleep(1.5)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                await asyncio.sleep(5)
                watching[screen] = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
            app.exit()
    finally:
        if alerts is not None:
            alerts.close()
    press_rows = [{"key": label, "painted_ms": painted_ms, "tui_cpu_ms": cpu_ms,
                   "beside_rule_evaluation": any(start < t0 + painted_ms / 1000 and end > t0
                                                 for start, end in evaluations)}
                  for t0, label, painted_ms, cpu_ms in presses]
    return {"samples": samples, "timeouts": timeouts, "idle_cpu_per_s": idle_cpu, "watching_cpu_per_s": watching,
            "presses": press_rows, "warmed_after_first_paint_s": round(warm_s, 2),
            "rule_evaluation_ms": [round((end - start) * 1000, 1) for start, end in evaluations]}


def summarize(result: dict) -> dict:
    """p50/p95/max of shown and painted ms, and CPU ms per press, per key kind and over all keys."""
    out: dict = {}
    everything: list[tuple[float, float, float]] = []
    for label, rows in result["samples"].items():
        everything += rows
        out[label] = _stats(rows)
    if everything:
        out["ALL KEYS"] = _stats(everything)
    out["timeouts"] = result["timeouts"]
    out["screens_warmed_s"] = result.get("warmed_after_first_paint_s")
    presses = result.get("presses", [])
    beside = [p["painted_ms"] for p in presses if p["beside_rule_evaluation"]]
    apart = [p["painted_ms"] for p in presses if not p["beside_rule_evaluation"]]
    out["painted_ms_beside_rule_evaluation"] = {
        "n": len(beside), "p50": round(statistics.median(beside)) if beside else None,
        "max": round(max(beside)) if beside else None}
    out["painted_ms_apart"] = {"n": len(apart), "p50": round(statistics.median(apart)) if apart else None,
                               "p95": round(percentile(apart, 0.95)) if apart else None}
    out["rule_evaluation_ms"] = result.get("rule_evaluation_ms", [])
    out["presses"] = presses
    out["idle_tui_cpu_ms_per_s"] = [round(c * 1000) for c in result["idle_cpu_per_s"]]
    out["watching_tui_cpu_ms_per_s"] = {screen: round(c * 1000) for screen, c in result["watching_cpu_per_s"].items()}
    return out


def _stats(rows: list[tuple[float, float, float]]) -> dict:
    shown = [r[0] * 1000 for r in rows]
    painted = [r[1] * 1000 for r in rows]
    cpu = [r[2] * 1000 for r in rows]
    return {"n": len(rows),
            "shown_ms": {"p50": round(statistics.median(shown)), "p95": round(percentile(shown, 0.95)),
                         "max": round(max(shown))},
            "painted_ms": {"p50": round(statistics.median(painted)), "p95": round(percentile(painted, 0.95)),
                           "max": round(max(painted))},
            "tui_cpu_ms_per_key": {"p50": round(statistics.median(cpu)), "mean": round(statistics.fmean(cpu))}}


def table(result: dict) -> str:
    """One line per key kind: shown and painted p50/p95/max in ms, the TUI's CPU ms per press."""
    head = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    lines = [" ".join(f"{k}={v}" for k, v in head.items()),
             f"{'key':<16}{'n':>4}  {'shown p50/p95/max ms':>22}  {'painted p50/p95/max ms':>24}  "
             f"{'TUI CPU ms/key p50/mean':>24}"]
    for label, row in result.items():
        if isinstance(row, dict) and "shown_ms" in row:
            shown, painted, cpu = row["shown_ms"], row["painted_ms"], row["tui_cpu_ms_per_key"]
            lines.append(f"{label:<16}{row['n']:>4}  {shown['p50']:>8}/{shown['p95']:>5}/{shown['max']:>6}  "
                         f"{painted['p50']:>10}/{painted['p95']:>5}/{painted['max']:>6}  "
                         f"{cpu['p50']:>14}/{cpu['mean']:>5}")
    if result.get("watching_tui_cpu_ms_per_s"):
        lines.append("watching, TUI CPU ms per s: " + ", ".join(
            f"{screen} {ms}" for screen, ms in result["watching_tui_cpu_ms_per_s"].items()))
    beside, apart = result.get("painted_ms_beside_rule_evaluation"), result.get("painted_ms_apart")
    if beside and apart:
        lines.append(f"painted, presses beside a rule evaluation: n={beside['n']} p50 {beside['p50']} max "
                     f"{beside['max']} ms; the others: n={apart['n']} p50 {apart['p50']} p95 {apart['p95']} ms; "
                     f"evaluations (ms): {result.get('rule_evaluation_ms')}")
    if result.get("timeouts"):
        lines.append(f"no screen change within 10 s: {result['timeouts']}")
    return "\n".join(lines)


def run_tui(db: Path, rounds: int, big_trace: str | None, seed: int, profile: str | None, window_s: float,
            alerts_on: bool = True) -> dict:
    """The tour in a child process (its own GIL, like a user's TUI); returns its summary."""
    # faulthandler: a crash of the TUI child (SIGSEGV) says where, instead of an empty stderr.
    cmd = [sys.executable, "-X", "faulthandler", "-m", "bench.tui_keys", "--tui-child", "--db", str(db),
           "--rounds", str(rounds), "--seed", str(seed), "--window", str(window_s)]
    if big_trace:
        cmd += ["--big-trace", big_trace]
    if profile:
        cmd += ["--profile", profile]
    if not alerts_on:
        cmd += ["--no-alerts"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60 + rounds * len(STEPS) * 15)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"the TUI child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def child_main(args: argparse.Namespace) -> int:
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    result = asyncio.run(tour(args.db, args.rounds, args.big_trace, args.seed, args.window,
                               alerts_on=not args.no_alerts))
    if args.profile:
        profiler.disable()
        profiler.dump_stats(args.profile)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the parent: serve, the load, the TUI ---------------------------------------------------------


def measure(db: Path, rounds: int, rate: float | None, big_trace: str | None, seed: int,
            profile: str | None, window_s: float, alerts_on: bool = True) -> dict:
    """One tour; with `rate` (spans/s, inf: full speed) a real serve ingests the load meanwhile."""
    import psutil

    from bench import Serve, tree, tree_cpu
    from bench.tui import ingest_load

    if rate is None:
        started = time.monotonic()
        summary = summarize(run_tui(db, rounds, big_trace, seed, profile, window_s, alerts_on))
        return {"ingest": "off", "wall_s": round(time.monotonic() - started), **summary}
    server = Serve(db, "--retention", "30d")
    if server.address is None:
        server.stop(10)
        raise RuntimeError(server.output())
    ctx = multiprocessing.get_context("spawn")
    stop, counter, results = ctx.Event(), ctx.Value("q", 0), ctx.Queue()
    first_number = (1 << 62) + secrets.randbits(61)
    load = ctx.Process(target=ingest_load, args=(server.address, rate, first_number, stop, counter, results))
    load.start()
    try:
        time.sleep(3)
        server_tree = tree(psutil.Process(server.pid))
        count0, cpu0, started = counter.value, tree_cpu(server_tree), time.monotonic()
        summary = summarize(run_tui(db, rounds, big_trace, seed, profile, window_s, alerts_on))
        seconds = time.monotonic() - started
        ingested = counter.value - count0
        server_cpu = tree_cpu(server_tree) - cpu0
    finally:
        stop.set()
        try:
            results.get(timeout=60)
        except Exception:
            pass
        load.join(30)
        server.stop()
    return {"ingest": f"{'full speed' if rate == float('inf') else f'{rate:g} spans/s'}",
            "ingest_spans_per_s": round(ingested / seconds), "serve_cpu_cores": round(server_cpu / seconds, 2),
            "wall_s": round(seconds), **summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=RESULTS / "week.db",
                        help="the store (default bench/results/week.db, see bench.tui); ingest adds to it")
    parser.add_argument("--ingest", choices=("off", "on", "both"), default="both",
                        help="measure with ingest off, on, or off then on (default)")
    parser.add_argument("--rate", type=float, default=float("inf"), help="ingest spans/s (default: full speed)")
    parser.add_argument("--rounds", type=int, default=3, help="tours of every key (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="the pauses between keys")
    parser.add_argument("--window", type=float, default=86400, help="the TUI's window in seconds (default 24 h)")
    parser.add_argument("--big-trace", help="hex id of a 500-span trace to `:open` (default: from the store's .json)")
    parser.add_argument("--profile", help="write a cProfile of the TUI process here")
    parser.add_argument("--no-alerts", action="store_true",
                        help="without the rule engine (to see what its evaluations cost the keys)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--tui-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tui_child:
        return child_main(args)
    if not args.db.exists():
        print(f"{args.db} does not exist: build it with `python -m bench.tui` first", file=sys.stderr)
        return 1
    big_trace = args.big_trace
    info = args.db.with_suffix(".json")
    if big_trace is None and info.exists():
        big_trace = json.loads(info.read_text()).get("big_trace")
    report = {}
    for mode in (("off", "on") if args.ingest == "both" else (args.ingest,)):
        rate = None if mode == "off" else args.rate
        report[f"ingest_{mode}"] = measure(args.db, args.rounds, rate, big_trace, args.seed, args.profile,
                                           args.window, alerts_on=not args.no_alerts)
        print(table(report[f"ingest_{mode}"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
