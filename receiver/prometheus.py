"""Prometheus exposition (`GET /metrics`, text format 0.0.4) of the store's totals since it began.

The numbers come from store/lifetime_totals.py (hour rollups plus what retention retired), read on a
read-only connection in a worker thread under a deadline, so a scrape never blocks ingest and a
restart of `serve` exposes the same totals again. This module only turns them into text:

- counters per bounded label set (service, provider, model, operation; requests also by API error
  class). A counter must never go down, or Prometheus reads a reset: a late correction that lowers
  one label set (a call found to be a wrapper's, re-attributed to its inner call's model; a
  `reprice` to a cheaper price) is held at the highest value exposed by this process until the
  store catches up;
- histograms with fixed `le` buckets, derived from the rollups' log-scale buckets (each call is
  counted at its bucket's representative value, within ±2 % of the true one, so a call within ~4 %
  of an `le` bound may land in the neighbouring bucket). `_sum` is estimated the same way: the
  store keeps bucket counts, not per-call sums, and the estimate is within 2 % of the true sum.
  `llm_decode_tokens_per_second` and `llm_streaming_chunk_gap_seconds` come from the TPOT histogram
  (the rollups keep no per-call rate and no per-chunk times): rate = 1 / TPOT, low by a factor
  (output − 1) / output, under 1 % past 100 output tokens; chunk gap = TPOT, one token per chunk;
- `llm_cache_hit_ratio`, a gauge over the last five minutes (as `report --window 5m`).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from receiver.auth import TokenCheck
from receiver.listener import bind_site
from receiver.tls import TlsFiles
from store import histogram
from store.lifetime_totals import GAUGE_WINDOW_S, LABELS, ScrapeData, SeriesTotals, TotalsCache

log = logging.getLogger("llmobs.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SCRAPE_DEADLINE_S = 10.0  # a store too slow to answer in this time gets 503, and the query is interrupted


def escape_label_value(value: str) -> str:
    """A label value as the exposition format quotes it: backslash, double quote and line feed
    escaped. The values are span data (a model name is whatever a sender wrote)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels_text(pairs: Sequence[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs) + "}"


@dataclass(frozen=True, slots=True)
class CounterSpec:
    name: str
    help: str
    value: Callable[[SeriesTotals], float]


@dataclass(frozen=True, slots=True)
class HistogramSpec:
    name: str
    help: str
    source: str  # a lifetime_totals.HISTOGRAMS column: per-call values in µs
    bounds: tuple[float, ...]  # `le` bounds in the exposed unit, ascending (+Inf is added)
    per_second: bool = False  # expose 1 / value (a rate) instead of the value in seconds

    def exposed(self, bucket: int) -> float:
        """A log bucket's representative value, in the exposed unit."""
        micros = histogram.bucket_value(bucket)
        return 1e6 / micros if self.per_second else micros / 1e6


# API error classes of design §2 rule 6, with the rollup counters that count them.
ERROR_CLASSES = (("rate_limit", "err_rate_limit"), ("provider", "err_provider"), ("client", "err_client"),
                 ("timeout", "err_timeout"), ("network", "err_network"), ("other", "err_other"))

COUNTERS = (
    CounterSpec("llm_input_tokens_total", "Input tokens of billed LLM calls, cache reads and writes included.",
                lambda s: s["input_tokens"]),
    CounterSpec("llm_output_tokens_total", "Output tokens of billed LLM calls, reasoning included.",
                lambda s: s["output_tokens"]),
    CounterSpec("llm_cache_read_tokens_total", "Input tokens served from the provider's prompt cache.",
                lambda s: s["cache_read_tokens"]),
    CounterSpec("llm_cost_usd_total", "Cost in USD of priced LLM calls (calls of an unpriced model add nothing).",
                lambda s: s["cost_nusd"] / 1e9),
    CounterSpec("llm_validation_errors_total", "Calls whose output the application rejected (validation errors).",
                lambda s: s["errors_validation"]),
    CounterSpec("llm_guardrail_rejections_total", "Calls refused by a guardrail or a provider's content filter.",
                lambda s: s["errors_guardrail"]),
)
_SECONDS = "Failed calls (API errors) are left out."
HISTOGRAMS = (
    HistogramSpec("llm_ttft_seconds", f"Time to first token of streamed LLM calls, in seconds. {_SECONDS}",
                  "hist_ttft", (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)),
    HistogramSpec("llm_tpot_seconds", f"Time per output token after the first, in seconds. {_SECONDS}",
                  "hist_tpot", (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)),
    HistogramSpec("llm_total_latency_seconds", f"Duration of LLM calls, in seconds. {_SECONDS}",
                  "hist_latency", (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)),
    HistogramSpec("llm_decode_tokens_per_second",
                  "Decode rate of streamed calls in output tokens per second, estimated per call as 1 / TPOT.",
                  "hist_tpot", (5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0),
                  per_second=True),
    HistogramSpec("llm_streaming_chunk_gap_seconds",
                  "Mean gap between streamed chunks per call, in seconds, estimated as TPOT (one token per "
                  "chunk): the store keeps no per-chunk times.",
                  "hist_tpot", (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)),
)


class Exposition:
    """Renders the exposition text. One per process: it holds the high-water marks that keep every
    counter from going down between scrapes."""

    def __init__(self) -> None:
        self._high_water: dict[tuple[str, tuple], float] = {}
        self._le_index: dict[str, list[int]] = {}

    def _monotonic(self, name: str, labels: tuple, value: float) -> float:
        key = (name, labels)
        seen = self._high_water.get(key)
        if seen is not None and value < seen:
            return seen
        self._high_water[key] = value
        return value

    def _bucket_positions(self, spec: HistogramSpec) -> list[int]:
        """For each log bucket, the index of the first `le` bound holding its representative value
        (len(bounds): only +Inf)."""
        positions = self._le_index.get(spec.name)
        if positions is None:
            positions = [bisect.bisect_left(spec.bounds, spec.exposed(b)) for b in range(histogram.MAX_BUCKET + 1)]
            self._le_index[spec.name] = positions
        return positions

    def render(self, snapshot: ScrapeData) -> str:
        out: list[str] = []
        series = snapshot.totals

        def sample(name: str, pairs: list[tuple[str, str]], value: float, monotonic: bool = True) -> None:
            if monotonic:
                value = self._monotonic(name, tuple(pairs), value)
            out.append(f"{name}{_labels_text(pairs)} {format_value(value)}")

        def header(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        header("llm_requests_total", "counter",
               "Billed LLM calls (each call once), by API error class; error_class=\"none\": the call returned.")
        for s in series:
            base = list(zip(LABELS, s.labels))
            sample("llm_requests_total", [*base, ("error_class", "none")], s["calls"] - s["errors_api"])
            for error_class, counter in ERROR_CLASSES:
                sample("llm_requests_total", [*base, ("error_class", error_class)], s[counter])
        for counter_spec in COUNTERS:
            header(counter_spec.name, "counter", counter_spec.help)
            for s in series:
                sample(counter_spec.name, list(zip(LABELS, s.labels)), counter_spec.value(s))
        for spec in HISTOGRAMS:
            header(spec.name, "histogram", spec.help)
            positions = self._bucket_positions(spec)
            for s in series:
                counts = s.histograms[spec.source]
                base = list(zip(LABELS, s.labels))
                shown_before = (f"{spec.name}_count", tuple(base)) in self._high_water
                if not shown_before and not any(c > 0 for c in counts.values()):
                    continue  # no call of this label set measured it (yet)
                per_bound = [0] * (len(spec.bounds) + 1)
                total = 0.0
                count = 0
                for bucket, n in counts.items():
                    if n <= 0:
                        continue
                    per_bound[positions[bucket]] += n
                    total += n * spec.exposed(bucket)
                    count += n
                cumulative = 0
                for bound, n in zip(spec.bounds, per_bound):
                    cumulative += n
                    sample(f"{spec.name}_bucket", [*base, ("le", format_value(bound))], cumulative)
                sample(f"{spec.name}_bucket", [*base, ("le", "+Inf")], count)
                sample(f"{spec.name}_sum", base, total)
                sample(f"{spec.name}_count", base, count)
        header("llm_cache_hit_ratio", "gauge",
               f"Share of input tokens read from the prompt cache over the last {GAUGE_WINDOW_S // 60} minutes.")
        for labels, (read, inp) in snapshot.recent_cache.items():
            if inp > 0:
                sample("llm_cache_hit_ratio", list(zip(LABELS, labels)), read / inp, monotonic=False)
        out.append("")
        return "\n".join(out)


class MetricsSource:
    """Reads the store for `GET /metrics` off the event loop: one read at a time (scrapes that arrive
    while one runs, two Prometheus replicas or a curl beside one, share its text), each on a fresh
    read-only connection in a worker thread, interrupted at `deadline_s` so that a stuck read never
    holds a thread or the WAL for long."""

    def __init__(self, db_path: str, *, deadline_s: float = SCRAPE_DEADLINE_S) -> None:
        self.db_path = db_path
        self.deadline_s = deadline_s
        self.exposition = Exposition()
        self.totals = TotalsCache()
        self._reading: asyncio.Future[bytes] | None = None

    async def body(self) -> bytes:
        if self._reading is None:
            reading = self._reading = asyncio.ensure_future(asyncio.to_thread(self.render_now))
            reading.add_done_callback(lambda _: setattr(self, "_reading", None))
        # shield: a scraper that hangs up does not cancel the read the others wait for
        return await asyncio.shield(self._reading)

    def render_now(self, now_s: float | None = None) -> bytes:
        """One scrape, synchronously (in a worker thread)."""
        from store.lifetime_totals import scrape_store

        snapshot = scrape_store(self.db_path, time.time() if now_s is None else now_s, self.totals, self.deadline_s)
        return self.exposition.render(snapshot).encode("utf-8", "replace")


async def metrics_response(source: MetricsSource) -> web.Response:
    """The answer to an authorized `GET /metrics`: the exposition, or 503 with the reason when the
    store cannot be read in time (Prometheus then marks the target down, not the counters reset)."""
    from store.connection import DatabaseError, StoreError

    try:
        body = await source.body()
    except (StoreError, DatabaseError) as exc:
        log.warning("GET /metrics: cannot read the store: %s", exc)
        return web.Response(status=503, text=f"cannot read the store: {exc}\n", headers={"Retry-After": "5"})
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


class MetricsServer:
    """`serve --metrics-port`: `GET /metrics` alone on a port of its own (for a scrape config or a
    network policy that keeps Prometheus away from the OTLP port), on the same interface, token and
    TLS as the OTLP ports."""

    def __init__(self, source: MetricsSource, host: str, port: int, *, auth: TokenCheck | None = None,
                 tls: TlsFiles | None = None) -> None:
        self.source = source
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.auth = auth
        self.tls = tls
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        ssl_context = self.tls.server_context() if self.tls is not None else None
        self.port = await bind_site(runner, self.host, self.requested_port, ssl_context, "metrics", "--metrics-port")
        self._runner = runner
        return self.port

    @property
    def url(self) -> str:
        from receiver.grpc_server import format_address

        return f"{'https' if self.tls is not None else 'http'}://{format_address(self.host, self.port or 0)}/metrics"

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.auth is not None and not self.auth.allows(request.headers.get("Authorization")):
            return web.Response(status=401, text=TokenCheck.reason(request.headers.get("Authorization")) + "\n",
                                headers={"WWW-Authenticate": "Bearer"})
        return await metrics_response(self.source)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
