"""Benchmarks (`python -m bench.ingest`, `python -m bench.tui`) and what they share: a real
`llmobs-tui serve` child process whose output is collected, and whose own counters are read back so
that a difference between what the load acknowledged and what the store holds can be attributed."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil  # imported where used: it is an optional (bench) dependency

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

_STOPPED = re.compile(r"stopped; (\d+) spans, log records and metric points accepted this run, (\d+) spans committed")
_RETENTION = re.compile(r"retention (\S+?)[,.;]")


@dataclass
class ServeCounters:
    """What serve itself says at shutdown. None: the line was not found (serve died, or its format
    changed), so nothing can be attributed from it."""

    accepted: int | None = None   # spans (and log records) in requests it answered with success
    committed: int | None = None  # spans its writer inserted: accepted minus the duplicates it dropped
    retention: str | None = None
    returncode: int | None = None

    @property
    def duplicates(self) -> int | None:
        """Spans acknowledged but not inserted because the store already held their (trace, span) id
        (by design: an exporter's retry must not double-count). The benches send no log records."""
        if self.accepted is None or self.committed is None:
            return None
        return self.accepted - self.committed


class Serve:
    """`llmobs-tui serve` on free loopback ports; stdout is drained on a thread (a full pipe would
    block serve) and kept for the shutdown line."""

    def __init__(self, db: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "llmobs_tui", "serve", "--db", str(db), "--grpc-port", "0", "--http-port", "0",
               "--stats-every", "3600s", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.first_line = self.proc.stdout.readline()
        self.lines: list[str] = [self.first_line]
        match = re.search(r"OTLP/gRPC on (\S+?),", self.first_line)
        self.address = match.group(1) if match else None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 120) -> ServeCounters:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        counters = ServeCounters(returncode=self.proc.returncode)
        retention = _RETENTION.search(self.first_line)
        if retention:
            counters.retention = retention.group(1)
        for line in self.lines:
            match = _STOPPED.search(line)
            if match:
                counters.accepted, counters.committed = int(match.group(1)), int(match.group(2))
        return counters


def attribute(missing: int, counters: ServeCounters, deleted_after_commit: int | None) -> tuple[list[str], int]:
    """Explain `missing` acknowledged spans from serve's own counters. Returns the lines to print and
    how many stay unexplained (a real loss: the benchmark fails)."""
    lines = []
    if counters.duplicates is None:
        lines.append("serve's counters: its shutdown line was not found"
                     + (f" (exit code {counters.returncode})" if counters.returncode else "")
                     + "; nothing can be attributed")
        return lines, missing
    lines.append(f"serve's counters: accepted {counters.accepted:,}, committed {counters.committed:,}, "
                 f"dropped as duplicates {counters.duplicates:,}"
                 + ("" if deleted_after_commit is None else
                    f", deleted after commit {deleted_after_commit:,} (retention {counters.retention}"
                    f" or --max-db-size: the store's only deletes)"))
    if not missing:
        return lines, 0
    explained = 0
    for count, reason in ((counters.duplicates, "dropped as duplicates of ids already stored (by design)"),
                          (deleted_after_commit or 0, "committed, then evicted by retention/size limit")):
        share = min(missing - explained, max(0, count))
        if share:
            lines.append(f"  {share:,} missing spans: {reason}")
            explained += share
    unexplained = missing - explained
    if unexplained:
        lines.append(f"  {unexplained:,} missing spans: UNEXPLAINED (acknowledged, neither duplicate nor evicted)")
    return lines, unexplained


def tree(proc: psutil.Process) -> list:
    """A process and all its descendants (serve's decoders and writer)."""
    import psutil

    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu(procs: list) -> float:
    """CPU-seconds (user + system) used so far by these processes."""
    import psutil

    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total
