"""How fast this shared host is at the moment: the CPU milliseconds of a fixed piece of Python work.

    python -m bench.host_speed          # five samples and their median

The project machine's two cores are shared with other tenants, and the same code's CPU seconds per
span move with them: a plain Python loop took 0.46 s and 0.85 s minutes apart on 2026-12-03. A CPU
figure is only comparable with another taken at a similar reference, so bench.ingest and
bench.components report this one beside theirs, taken before and after their run; bench.ingest also
samples it during the run, one run of the work every 3 s (about 1 % of one core: the CPU time it
counts is its own, so a host slowed by its tenants, or by serve's processes sharing its caches,
shows as a higher figure). The work is the kind serve's Python does: small
dicts, tuples, ints, str formatting and bytes joins, no I/O.
"""

from __future__ import annotations

import statistics
import sys
import time

SAMPLES = 5


def _work() -> int:
    counts: dict[int, int] = {}
    pieces: list[bytes] = []
    total = 0
    for i in range(120_000):
        key = i & 511
        counts[key] = counts.get(key, 0) + 1
        row = (key, i, "x" if i & 1 else None)
        total += row[0] + len(str(i))
        if not i & 63:
            pieces.append(b"%d:%d" % (key, counts[key]))
    return total + len(b",".join(pieces))


def reference_ms(samples: int = SAMPLES) -> float:
    """The median CPU milliseconds of `samples` runs of the fixed work (lower is a faster host)."""
    return round(statistics.median(one_sample_ms() for _ in range(samples)), 1)


def one_sample_ms() -> float:
    """One run's CPU milliseconds, of the calling thread only (a benchmark samples the host from a
    thread of its own while it measures)."""
    started = time.thread_time()
    _work()
    return (time.thread_time() - started) * 1000


def main() -> int:
    times = [reference_ms(1) for _ in range(SAMPLES)]
    print(" · ".join(f"{t:.1f}" for t in times) + f" ms; median {statistics.median(times):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
