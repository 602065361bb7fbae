"""`llmobs-tui demo`: a built-in traffic generator that sends through the real OpenTelemetry SDK and
OTLP exporter to our own receiver, exactly as an instrumented application would.

It runs in its own process: the SDK's Python OTLP encoder costs ~260 µs per span (perf-notes), which
must not share a GIL with the UI. On start it backfills the last minutes of history so every screen
has something to show within seconds, then sends live traffic, and plants incidents on a schedule
(a rate-limit storm, a prompt version that doubles input tokens) for the alert rules to catch. The
traffic also carries what the Trends screen compares: an A/B test (`control`/`treatment` on search),
refusals, and LLM-judge scores sent as `gen_ai.evaluation.result` log records.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from dataclasses import dataclass
from typing import Any

from llmobs_tui.scenarios import FEATURES, SERVICES, Trace, Traffic, TrafficState

S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class DemoPlan:
    traces_per_s: float = 2.0
    backfill_s: float = 20 * 60
    backfill_traces_per_s: float = 0.35
    # Incidents, in seconds after start: (start, end).
    rate_limit_storm: tuple[float, float] = (45.0, 300.0)
    heavy_prompt_from_s: float = 20.0
    heavy_prompt_feature: str = "support"
    seed: int | None = None
    backfill_after_s: float | None = None  # the newest trace already in the store


def _emit(tracer: Any, trace: Trace, start_ns: int, logger: Any = None) -> None:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    created = []
    for spec in trace.spans:
        if spec.parent is None:
            ctx = otel_context.Context()  # a new trace, whatever is current
        else:
            ctx = otel_trace.set_span_in_context(created[spec.parent])
        created.append(tracer.start_span(spec.name, context=ctx, kind=SpanKind(spec.kind - 1),
                                         attributes=spec.attributes, start_time=start_ns + spec.start_ns))
    # Children end (and are exported) before their parents, as in a real application.
    for span, spec in sorted(zip(created, trace.spans), key=lambda pair: pair[1].end_ns):
        for name, offset, attrs in spec.events:
            span.add_event(name, attrs, timestamp=start_ns + offset)
        if spec.error:
            span.set_status(Status(StatusCode.ERROR, spec.error))
        span.end(end_time=start_ns + spec.end_ns)
    if logger is not None:
        for evaluation in trace.evaluations:
            # The span's context gives the record its trace and span ids, as an evaluator library's would.
            logger.emit(timestamp=start_ns + evaluation.offset_ns, event_name="gen_ai.evaluation.result",
                        context=otel_trace.set_span_in_context(created[evaluation.span]),
                        attributes={"gen_ai.evaluation.name": evaluation.name,
                                    "gen_ai.evaluation.score.value": evaluation.score})


def run(endpoint: str, plan: DemoPlan) -> None:
    """The demo process: exports until SIGTERM (or its parent dies)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    # The exporter's warnings (a DEADLINE_EXCEEDED at shutdown) must not land on the TUI's screen.
    from llmobs_tui.logfile import child_logs_to_file

    child_logs_to_file()

    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    providers: dict[str, Any] = {}
    tracers = {}
    loggers = {}
    for service in sorted(set(SERVICES.values())):
        resource = Resource.create({"service.name": service, "deployment.environment": "demo"})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, insecure=True),
            max_queue_size=50_000, max_export_batch_size=512, schedule_delay_millis=300))
        providers[service] = provider
        tracers[service] = provider.get_tracer("opentelemetry.instrumentation.openai_v2", "2.1b0")
        log_provider = LoggerProvider(resource=resource)
        log_provider.add_log_record_processor(BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=endpoint, insecure=True), schedule_delay_millis=500))
        providers[f"{service} logs"] = log_provider
        loggers[service] = log_provider.get_logger("llmobs.demo.evaluator", "1")

    state = TrafficState()
    traffic = Traffic(plan.seed, state)
    started = time.time()
    parent = multiprocessing.parent_process()

    # Live traffic first, so the trace list fills at once; history right behind it, but only for the
    # gap since the newest trace already stored (a restarted demo must not pile history up).
    backfill_start = max(started - plan.backfill_s, plan.backfill_after_s or 0)
    backfill_step = 1 / plan.backfill_traces_per_s
    next_backfill = backfill_start
    next_live = started
    while not stop["now"] and (parent is None or parent.is_alive()):
        now = time.time()
        elapsed = now - started
        state.rate_limit_storm = plan.rate_limit_storm[0] <= elapsed < plan.rate_limit_storm[1]
        if elapsed >= plan.heavy_prompt_from_s:
            feature = plan.heavy_prompt_feature
            new_version = "v" + str(int(FEATURES[feature][1][1:]) + 1)
            if state.prompt_versions[feature] != new_version:
                state.prompt_versions[feature] = new_version
                state.heavy_versions.add((feature, new_version))
        if now >= next_live:
            trace = traffic.next_trace()
            _emit(tracers[trace.service], trace, int(now * S) - trace.duration_ns, loggers[trace.service])
            next_live += traffic.rng.expovariate(plan.traces_per_s)
            continue
        if next_backfill < started - 5:
            # History uses the prompt versions of the past, so today's regression stands out.
            saved = dict(state.prompt_versions)
            saved_storm = state.rate_limit_storm
            state.prompt_versions.update({f: v[1] for f, v in FEATURES.items()})
            state.rate_limit_storm = False
            for _ in range(20):
                if next_backfill >= started - 5:
                    break
                trace = traffic.next_trace()
                _emit(tracers[trace.service], trace, int(next_backfill * S), loggers[trace.service])
                next_backfill += traffic.rng.expovariate(1 / backfill_step)
            state.prompt_versions.update(saved)
            state.rate_limit_storm = saved_storm
            continue
        time.sleep(min(0.05, max(0.0, next_live - now)))
    for provider in providers.values():
        provider.shutdown()


class DemoFeed:
    """Owns the demo process."""

    def __init__(self, endpoint: str, plan: DemoPlan | None = None) -> None:
        self.endpoint = endpoint
        self.plan = plan or DemoPlan()
        self._process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._process = ctx.Process(target=run, args=(self.endpoint, self.plan), name="llmobs-demo", daemon=True)
        self._process.start()

    def stop(self, timeout: float = 0.5) -> None:
        """Blocks up to `timeout` (+ a kill): call it off the event loop that runs the receiver
        (llmobs_tui.run.shutdown), or the exporter cannot flush to it."""
        if self._process is not None and self._process.is_alive():
            self._process.terminate()  # SIGTERM: the SDK flushes what it holds
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(2)
        self._process = None
