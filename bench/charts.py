"""plotext building a chart, with plotext's own helpers and with `llmobs_tui/widgets/plotext_speedups`,
alternated in one process: CPU ms per chart, each way.

    python -m bench.charts                  # 7 rounds of 20 charts per shape and way
    python -m bench.charts --rounds 11 --json out.json

The shapes are the TUI's: an Overview chart over 7 days (168 hourly points, three lines, last week's
line, an SLO threshold and a change marker) at 76×21, the same at 1 h (60 points), and a Trends chart
of ten series at 152×30. Both ways build the same text (tests/test_plotext_speedups.py); the benchmark
checks that too before it times anything.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from llmobs_tui.widgets import plotext_speedups as speedups
from llmobs_tui.widgets.chart import ChartData, Line, Mark, Threshold, build_chart_text

T0 = 1_800_000_000.0


def overview(points: int, step_s: float) -> ChartData:
    times = [T0 + step_s * i for i in range(points)]
    wave = [900 + 400 * math.sin(i / 5) + 150 * math.sin(i / 1.7) for i in range(points)]
    return ChartData(times=times,
                     lines=[Line("p50", wave), Line("p95", [v * 1.9 for v in wave]),
                            Line("p99", [v * 2.6 for v in wave]),
                            Line("last week p95", [v * 1.7 if i % 13 else None for i, v in enumerate(wave)],
                                 past=True)],
                     thresholds=[Threshold(2500, "slo p95")], marks=[Mark(times[points // 3], "v2")],
                     selected_mark=0)


def trends() -> ChartData:
    times = [T0 + 3600 * i for i in range(24)]
    return ChartData(times=times, lines=[Line(f"tool-{k}", [50 * (k + 1) + 30 * math.sin(i / (k + 2))
                                                            for i in range(24)]) for k in range(10)])


SHAPES: dict[str, tuple[Callable[[], ChartData], int, int]] = {
    "overview 7d (168 points) 76x21": (lambda: overview(168, 3600), 76, 21),
    "overview 1h (60 points) 76x21": (lambda: overview(60, 60), 76, 21),
    "trends (10 series) 152x30": (trends, 152, 30),
}


def cpu_ms_per_chart(data: ChartData, width: int, height: int, charts: int) -> float:
    started = time.process_time()
    for _ in range(charts):
        build_chart_text(data, width, height)
    return (time.process_time() - started) / charts * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--charts", type=int, default=20, help="charts built per round, shape and way")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not speedups.installed():
        print("the speedups are not installed on this plotext: nothing to compare", file=sys.stderr)
        return 1
    result: dict[str, dict[str, list[float]]] = {}
    for shape, (make, width, height) in SHAPES.items():
        data = make()
        with speedups.plotexts_own():
            own = build_chart_text(data, width, height)
        if build_chart_text(data, width, height) != own:
            print(f"{shape}: the two ways build different text", file=sys.stderr)
            return 1
        runs: dict[str, list[float]] = {"plotext": [], "speedups": []}
        for _ in range(args.rounds):
            with speedups.plotexts_own():
                runs["plotext"].append(cpu_ms_per_chart(data, width, height, args.charts))
            runs["speedups"].append(cpu_ms_per_chart(data, width, height, args.charts))
        result[shape] = runs
    for shape, runs in result.items():
        print(f"{shape}: CPU ms per chart, median (min–max) of {args.rounds} rounds: plotext's own "
              + ", speedups ".join(f"{statistics.median(v):.1f} ({min(v):.1f}–{max(v):.1f})" for v in runs.values()))
    if args.json:
        args.json.write_text(json.dumps({"at": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "shapes": result},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
