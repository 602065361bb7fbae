"""GET /metrics: the Prometheus exposition of the store's totals, read by Prometheus's own text parser.

Spans go in through the real OTel SDK exporter (or the real normalizer and writer); the numbers
exposed are checked against SQL over the stored spans, against `llmobs-tui report --format json`,
across a restart of `serve` and across retention deleting the rollups they came from.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from receiver.prometheus import HISTOGRAMS, Exposition, escape_label_value
from store.lifetime_totals import LABELS, RETIRED_KEY, ScrapeData, SeriesTotals
from store.writer import ROLLUP_COUNTERS

NS = 1_000_000_000
TOKEN = "metrics-token-0123456789"
# A quote, a backslash before an `n` and before a quote, a line feed: each breaks an unescaped exposition.
HOSTILE_MODEL = 'evil"model\\n\\"} 1\nllm_x{le="1'
COUNTER_NAMES = ("llm_requests_total", "llm_input_tokens_total", "llm_output_tokens_total",
                 "llm_cache_read_tokens_total", "llm_cost_usd_total", "llm_validation_errors_total",
                 "llm_guardrail_rejections_total")
CATALOG = (*COUNTER_NAMES, "llm_ttft_seconds", "llm_tpot_seconds", "llm_total_latency_seconds",
           "llm_decode_tokens_per_second", "llm_streaming_chunk_gap_seconds", "llm_cache_hit_ratio")


@dataclass(frozen=True)
class Call:
    """One LLM call, with durations chosen well inside one `le` bucket of every histogram (the
    exposition counts a call at its log bucket's representative value, within ±2 %)."""

    model: str
    provider: str = "openai"
    duration_s: float = 1.5
    ttft_s: float | None = None
    input_tokens: int = 1200
    output_tokens: int = 81
    cache_read: int = 0
    rate_limited: bool = False
    validation: bool = False
    content_filter: bool = False


CALLS = (
    Call("gpt-4o-mini", duration_s=1.5, ttft_s=0.35, cache_read=400),   # TPOT 14.4 ms, 69.6 tok/s
    Call("gpt-4o-mini", duration_s=4.0, ttft_s=0.62, output_tokens=401, cache_read=1000),  # TPOT 8.45 ms
    Call("gpt-4o-mini", duration_s=0.7, output_tokens=50),
    Call("gpt-4o-mini", duration_s=0.2, rate_limited=True),
    Call("gpt-4o-mini", duration_s=2.5, validation=True),
    Call("claude-sonnet-4-5", provider="anthropic", duration_s=1.2, content_filter=True, cache_read=800),
    Call("claude-sonnet-4-5", provider="anthropic", duration_s=7.0, ttft_s=1.2, output_tokens=301),
    Call(HOSTILE_MODEL, duration_s=0.4),
)


def send(endpoint: str, calls: tuple[Call, ...], token: str | None = TOKEN, service: str = "shop") -> None:
    """Each call as a trace (an HTTP root and the LLM span under it), through the SDK's OTLP/HTTP exporter."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint + "/v1/traces",
                                                                     headers=headers)))
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2", "2.1b0")
    start = time.time_ns() - 30 * NS
    for number, call in enumerate(calls):
        begin = start + number * NS
        end = begin + int(call.duration_s * NS)
        root = tracer.start_span("POST /ask", start_time=begin)
        from opentelemetry import trace

        with trace.use_span(root, end_on_exit=False):
            span = tracer.start_span(f"chat {call.model}", start_time=begin)
            attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": call.provider,
                     "gen_ai.request.model": call.model, "gen_ai.usage.input_tokens": call.input_tokens,
                     "gen_ai.usage.output_tokens": call.output_tokens,
                     "gen_ai.response.finish_reasons": ["content_filter" if call.content_filter else "stop"]}
            if call.cache_read:
                attrs["gen_ai.usage.cache_read.input_tokens"] = call.cache_read
            if call.ttft_s is not None:
                attrs["gen_ai.response.time_to_first_chunk"] = call.ttft_s
            if call.validation:
                attrs["app.llm.validation.error"] = "missing field 'city'"
            if call.rate_limited:
                attrs.update({"error.type": "429", "http.response.status_code": 429})
                span.set_status(Status(StatusCode.ERROR, "RateLimitError: rate limit reached"))
            span.set_attributes(attrs)
            span.end(end_time=end)
        root.end(end_time=end + NS // 100)
    provider.shutdown()


def scrape(url: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    """(status, content type, body) of GET url."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of the exposition, parsed by prometheus_client: (name, sorted labels) → value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def families(text: str) -> dict[str, str]:
    """Family name as exposed (counters with their _total) → type."""
    return {f.name + ("_total" if f.type == "counter" else ""): f.type for f in text_string_to_metric_families(text)}


def label_key(labels: dict[str, str]) -> tuple:
    return tuple(sorted(labels.items()))


def by_series(parsed: dict[tuple[str, tuple], float], name: str, **fixed: str) -> dict[tuple, float]:
    """Samples of `name` with `fixed` labels, keyed by their (service, provider, model, operation)."""
    out = {}
    for (sample_name, labels), value in parsed.items():
        d = dict(labels)
        if sample_name == name and all(d.get(k) == v for k, v in fixed.items()):
            out[tuple(d[k] for k in LABELS)] = value
    return out


def ground_truth(db_path: Path) -> dict[tuple, dict[str, float]]:
    """Per label set, from the stored spans themselves (billed calls: each call once)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT coalesce(service, ''), coalesce(provider, ''), coalesce(request_model, response_model, ''), "
            "coalesce(operation, ''), count(*), sum(error_class IS 'api' AND error_subclass IS 'rate_limit'), "
            "sum(coalesce(input_tokens, 0)), sum(coalesce(output_tokens, 0)), sum(coalesce(cache_read_tokens, 0)), "
            "sum(coalesce(cost_nusd, 0)), sum(error_class IS 'validation'), sum(error_class IS 'guardrail') "
            "FROM spans WHERE billed = 1 GROUP BY 1, 2, 3, 4").fetchall()
    finally:
        db.close()
    names = ("calls", "rate_limit", "input", "output", "cache_read", "cost_nusd", "validation", "guardrail")
    return {tuple(r[:4]): dict(zip(names, r[4:])) for r in rows}


def stored_calls(db_path: Path) -> list[tuple]:
    """(labels, duration s, ttft s or None, output tokens, api error) of each billed call."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return [((r[0] or "", r[1] or "", r[2] or "", r[3] or ""), r[4] / NS, None if r[5] is None else r[5] / NS,
                 r[6], r[7] == "api")
                for r in db.execute("SELECT service, provider, coalesce(request_model, response_model), operation, "
                                    "duration_ns, ttft_ns, output_tokens, error_class FROM spans WHERE billed = 1")]
    finally:
        db.close()


def check_against_store(text: str, db_path: Path) -> None:
    parsed = samples(text)
    truth = ground_truth(db_path)
    assert truth, "nothing was stored"
    requests_none = by_series(parsed, "llm_requests_total", error_class="none")
    rate_limited = by_series(parsed, "llm_requests_total", error_class="rate_limit")
    for labels, t in truth.items():
        assert requests_none[labels] + rate_limited[labels] == t["calls"], labels
        assert rate_limited[labels] == t["rate_limit"], labels
        assert by_series(parsed, "llm_input_tokens_total")[labels] == t["input"]
        assert by_series(parsed, "llm_output_tokens_total")[labels] == t["output"]
        assert by_series(parsed, "llm_cache_read_tokens_total")[labels] == t["cache_read"]
        assert by_series(parsed, "llm_cost_usd_total")[labels] == pytest.approx(t["cost_nusd"] / 1e9, rel=1e-12)
        assert by_series(parsed, "llm_validation_errors_total")[labels] == t["validation"]
        assert by_series(parsed, "llm_guardrail_rejections_total")[labels] == t["guardrail"]
    assert set(requests_none) == set(truth)
    # Histograms: each call's own value against the fixed bounds (the calls keep well clear of them).
    calls = stored_calls(db_path)
    for labels in truth:
        mine = [c for c in calls if c[0] == labels and not c[4]]  # API errors are left out of latencies
        latency = by_series(parsed, "llm_total_latency_seconds_count")
        assert latency[labels] == len(mine)
        for le in (0.5, 1.0, 2.0, 5.0, 10.0):
            got = by_series(parsed, "llm_total_latency_seconds_bucket", le=repr(le))[labels]
            assert got == sum(1 for c in mine if c[1] <= le), (labels, le)
        true_sum = sum(c[1] for c in mine)
        assert by_series(parsed, "llm_total_latency_seconds_sum")[labels] == pytest.approx(true_sum, rel=0.02)
        ttfts = [c[2] for c in mine if c[2] is not None]
        if ttfts:
            for le in (0.25, 0.5, 0.75, 1.5):
                got = by_series(parsed, "llm_ttft_seconds_bucket", le=repr(le))[labels]
                assert got == sum(1 for t in ttfts if t <= le), (labels, le)
            tpots = [(c[1] - c[2]) / (c[3] - 1) for c in mine if c[2] is not None and c[3] > 1]
            for le in (0.005, 0.01, 0.02):
                got = by_series(parsed, "llm_tpot_seconds_bucket", le=repr(le))[labels]
                assert got == sum(1 for t in tpots if t <= le), (labels, le)
                assert by_series(parsed, "llm_streaming_chunk_gap_seconds_bucket", le=repr(le))[labels] == got
            for le in (50.0, 75.0, 100.0, 150.0):
                got = by_series(parsed, "llm_decode_tokens_per_second_bucket", le=repr(le))[labels]
                assert got == sum(1 for t in tpots if 1 / t <= le), (labels, le)
        else:
            assert labels not in by_series(parsed, "llm_ttft_seconds_count")


def check_against_report(text: str, db_path: Path) -> None:
    """The counters agree with `llmobs-tui report --format json` grouped by the same labels."""
    result = subprocess.run([sys.executable, "-m", "llmobs_tui", "report", "--db", str(db_path), "--window", "1d",
                             "--by", ",".join(LABELS), "--format", "json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    parsed = samples(text)
    groups = json.loads(result.stdout)["groups"]
    assert groups
    requests = {}
    for (name, labels), value in parsed.items():
        if name == "llm_requests_total":
            key = tuple(dict(labels)[k] for k in LABELS)
            requests[key] = requests.get(key, 0) + value
    for group in groups:
        labels = tuple(group["key"][k] or "" for k in LABELS)
        assert requests[labels] == group["calls"]
        assert by_series(parsed, "llm_requests_total", error_class="rate_limit")[labels] == \
            group["errors"]["api_by_class"]["rate_limit"]
        assert by_series(parsed, "llm_input_tokens_total")[labels] == group["tokens"]["input"]
        assert by_series(parsed, "llm_output_tokens_total")[labels] == group["tokens"]["output"]
        assert by_series(parsed, "llm_cache_read_tokens_total")[labels] == group["tokens"]["cache_read"]
        assert by_series(parsed, "llm_cost_usd_total")[labels] == pytest.approx(group["cost_usd"], rel=1e-12)
        assert by_series(parsed, "llm_validation_errors_total")[labels] == group["errors"]["validation"]
        assert by_series(parsed, "llm_guardrail_rejections_total")[labels] == group["errors"]["guardrail"]
    assert len(requests) == len(groups)


class ServeProcess:
    """`llmobs-tui serve` with a token, free ports and --metrics-port."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmobs_tui", "serve", "--db", str(db), "--grpc-port", "0", "--http-port", "0",
             "--metrics-port", "0", "--token", TOKEN, "--stats-every", "1h"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        http = re.search(r"OTLP/HTTP on (http://127\.0\.0\.1:\d+)", line)
        metrics = re.search(r"Prometheus metrics on (http://127\.0\.0\.1:\d+/metrics)", line)
        assert http and metrics, line + self.proc.stdout.read() if self.proc.poll() is not None else line
        self.http = http.group(1)
        self.metrics_url = metrics.group(1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        assert self.proc.returncode == 0, self.proc.stdout.read()


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[type[ServeProcess]]:
    started: list[ServeProcess] = []

    class Tracked(ServeProcess):
        def __init__(self, db: Path) -> None:
            super().__init__(db)
            started.append(self)

    yield Tracked
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(30)


@pytest.mark.slow
def test_a_real_serve_exposes_the_catalog_matching_the_store_and_report_and_restarts_without_a_drop(
        tmp_path, serve_factory):
    db = tmp_path / "serve.db"
    serve = serve_factory(db)
    send(serve.http, CALLS)
    status, content_type, on_http_port = scrape(serve.http + "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4"), on_http_port
    assert set(families(on_http_port)) == set(CATALOG)
    check_against_store(on_http_port, db)
    check_against_report(on_http_port, db)
    status, _, on_metrics_port = scrape(serve.metrics_url)
    assert status == 200 and samples(on_metrics_port) == samples(on_http_port)
    # The cache-hit gauge: cache reads over input tokens of the last five minutes (all of these calls).
    truth = ground_truth(db)
    ratio = by_series(samples(on_http_port), "llm_cache_hit_ratio")
    for labels, t in truth.items():
        if t["cache_read"]:
            assert ratio[labels] == pytest.approx(t["cache_read"] / t["input"])
    # The same bearer-token rule as /v1/*, on both ports.
    for url in (serve.http + "/metrics", serve.metrics_url):
        assert scrape(url, token=None)[0] == 401
        assert scrape(url, token="wrong-token-0123456789")[0] == 401

    before = samples(on_http_port)
    serve.stop()
    serve = serve_factory(db)
    after = samples(scrape(serve.http + "/metrics")[2])
    counters = {k: v for k, v in before.items() if not k[0].startswith("llm_cache_hit_ratio")}
    assert {k: after[k] for k in counters} == counters  # nothing new: the same totals, read from the store
    send(serve.http, CALLS[:2])
    grown = samples(scrape(serve.metrics_url)[2])
    assert all(grown[k] >= v for k, v in counters.items())
    key = ("llm_requests_total", label_key({"service": "shop", "provider": "openai", "model": "gpt-4o-mini",
                                             "operation": "chat", "error_class": "none"}))
    assert grown[key] == before[key] + 2
    check_against_store(scrape(serve.metrics_url)[2], db)
    serve.stop()



@pytest.mark.anyio
async def test_a_hostile_model_name_is_escaped_and_comes_back_exact(backend):
    import asyncio

    await asyncio.to_thread(send, backend.http_address, (Call(HOSTILE_MODEL, duration_s=0.4),), None)
    status, _, text = await asyncio.to_thread(scrape, backend.http_address + "/metrics", None)
    assert status == 200
    db = Path(backend.config.pipeline.db_path)
    stored = {labels[2] for labels in ground_truth(db)}
    assert len(stored) == 1
    (model,) = stored
    assert '"' in model and "\\" in model  # the store kept the hostile characters
    parsed = samples(text)  # a broken escape would fail to parse, or split the label
    assert set(by_series(parsed, "llm_input_tokens_total")) == {("shop", "openai", model, "chat")}
    check_against_store(text, db)


@pytest.mark.anyio
async def test_metrics_on_the_otlp_port_refuse_a_missing_token(tmp_path):
    import asyncio

    from llmobs_tui.backend import Backend, BackendConfig
    from receiver.pipeline import PipelineConfig

    b = Backend(BackendConfig(PipelineConfig(db_path=str(tmp_path / "auth.db"), decoders=1, retention_s=None),
                              grpc_port=None, http_port=0, token=TOKEN))
    await b.start()
    try:
        url = b.http_address + "/metrics"
        assert (await asyncio.to_thread(scrape, url, None))[0] == 401
        assert (await asyncio.to_thread(scrape, url, "not-the-token-0123456789"))[0] == 401
        status, _, text = await asyncio.to_thread(scrape, url, TOKEN)
        assert status == 200 and set(families(text)) == set(CATALOG)
    finally:
        await b.aclose()


def test_retention_deleting_rollups_never_lowers_a_counter(tmp_path):
    from receiver.prometheus import MetricsSource
    from store import retention
    from tests.otlp_factory import make_span
    from tests.store_writing import write_through, writing

    now_s = int(time.time())
    db_path = tmp_path / "retained.db"

    def calls(first_trace: int, start_s: int, n: int, model: str) -> list:
        spans = []
        for i in range(n):
            begin = (start_s + i * 60) * NS
            spans.append(make_span(first_trace + i, 1, None, "chat", {
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
                "gen_ai.usage.input_tokens": 100 + i, "gen_ai.usage.output_tokens": 10,
                "gen_ai.response.time_to_first_chunk": 0.3}, start_ns=begin, end_ns=begin + 2 * NS))
        return spans

    # Three days ago (to be evicted) and the last hour (kept), in two label sets.
    old = calls(1, now_s - 3 * 86400, 90, "gpt-4o") + calls(500, now_s - 3 * 86400, 30, "gpt-4o-mini")
    new = calls(1000, now_s - 3000, 20, "gpt-4o")
    with writing(db_path, now_s * NS) as (normalizer, writer, db):
        write_through(normalizer, writer, old + new, [], now_s * NS)
        truth_before = ground_truth(db_path)
        source = MetricsSource(str(db_path))
        before = source.render_now(now_s).decode()
        check_against_store(before, db_path)
        result = retention.enforce(db, writer, max_age_s=86400, max_bytes=None, now_ns=now_s * NS)
        assert result.traces == 120 and result.rollups > 0
        assert db.execute("SELECT value FROM meta WHERE key = ?", (RETIRED_KEY,)).fetchone() is not None
        # A fresh reader (a restarted serve) sees the same totals: the evicted rollups live on in the ledger.
        after = MetricsSource(str(db_path)).render_now(now_s).decode()
        assert {k: v for k, v in samples(after).items() if "ratio" not in k[0]} == \
            {k: v for k, v in samples(before).items() if "ratio" not in k[0]}
        mini = ("svc", "openai", "gpt-4o-mini", "chat")
        assert by_series(samples(after), "llm_input_tokens_total")[mini] == truth_before[mini]["input"]
        # Another pass retires nothing twice; new calls add on top.
        retention.enforce(db, writer, max_age_s=86400, max_bytes=None, now_ns=now_s * NS + 60 * NS)
        write_through(normalizer, writer, calls(2000, now_s - 600, 5, "gpt-4o-mini"), [], now_s * NS)
        later = samples(MetricsSource(str(db_path)).render_now(now_s).decode())
        assert by_series(later, "llm_input_tokens_total")[mini] == truth_before[mini]["input"] + sum(
            100 + i for i in range(5))
        assert by_series(later, "llm_ttft_seconds_count")[mini] == 35


def _series(calls: int, input_tokens: int, latency_us: tuple[float, ...] = ()) -> SeriesTotals:
    s = SeriesTotals(labels=("svc", "openai", "gpt-4o", "chat"), first_dims_id=1)
    s.counters[ROLLUP_COUNTERS.index("calls")] = calls
    s.counters[ROLLUP_COUNTERS.index("input_tokens")] = input_tokens
    from store import histogram

    for value in latency_us:
        bucket = histogram.bucket_of(value)
        s.histograms["hist_latency"][bucket] = s.histograms["hist_latency"].get(bucket, 0) + 1
    return s


def test_a_correction_that_lowers_a_total_is_held_until_the_store_catches_up():
    """A late child span can move a call to another label set; Prometheus would read the drop as a
    restart and count the whole total again, so the exposed counter holds its high-water mark."""
    exposition = Exposition()
    first = samples(exposition.render(ScrapeData([_series(10, 1000, (1.5e6, 0.3e6))], {})))
    lowered = samples(exposition.render(ScrapeData([_series(9, 900, (1.5e6,))], {})))
    assert lowered == first
    caught_up = samples(exposition.render(ScrapeData([_series(12, 1300, (1.5e6, 0.3e6, 4e6))], {})))
    key = ("llm_input_tokens_total", label_key({"service": "svc", "provider": "openai", "model": "gpt-4o",
                                                "operation": "chat"}))
    assert caught_up[key] == 1300
    count_key = ("llm_total_latency_seconds_count", key[1])
    assert caught_up[count_key] == 3


def test_histogram_buckets_are_cumulative_and_end_at_the_count():
    text = Exposition().render(ScrapeData([_series(4, 10, (0.05e6, 0.7e6, 2.2e6, 400e6))], {}))
    for family in text_string_to_metric_families(text):
        if family.type != "histogram" or not family.samples:
            continue
        buckets = [(s.labels["le"], s.value) for s in family.samples if s.name.endswith("_bucket")]
        values = [v for _, v in buckets]
        assert values == sorted(values) and buckets[-1][0] == "+Inf"
        count = next(s.value for s in family.samples if s.name.endswith("_count"))
        assert buckets[-1][1] == count == 4
    assert {spec.name for spec in HISTOGRAMS} <= set(families(text))


@pytest.mark.parametrize("raw, escaped", [
    ('a"b', 'a\\"b'), ("a\\b", "a\\\\b"), ("a\nb", "a\\nb"), ('\\"\n', '\\\\\\"\\n'), ("ok-model", "ok-model")])
def test_label_values_are_escaped_as_the_format_says(raw, escaped):
    assert escape_label_value(raw) == escaped
    line = f'm{{model="{escape_label_value(raw)}"}} 1\n'
    (family,) = text_string_to_metric_families(line)
    assert family.samples[0].labels["model"] == raw
    assert not math.isnan(family.samples[0].value)


def test_the_scrape_cache_reads_only_recent_hours_and_catches_a_late_span_at_its_refresh(tmp_path):
    """TotalsCache keeps hours before the previous one; what it exposes equals read_totals (SQL over
    every hour rollup) once its refresh is due, and it never exposes less in between."""
    from store.connection import open_reader, read_snapshot
    from store.lifetime_totals import TotalsCache, read_totals
    from tests.otlp_factory import make_span
    from tests.store_writing import write_through, writing

    now_s = int(time.time())

    def call(trace: int, start_s: int, tokens: int) -> object:
        return make_span(trace, 1, None, "chat", {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": tokens, "gen_ai.usage.output_tokens": 5}, start_ns=start_s * NS,
            end_ns=start_s * NS + NS)

    def same(a: list[SeriesTotals], b: list[SeriesTotals]) -> bool:
        return sorted((s.labels, s.counters, s.histograms) for s in a) == \
            sorted((s.labels, s.counters, s.histograms) for s in b)

    db_path = tmp_path / "cache.db"
    cache = TotalsCache(refresh_s=300)
    with writing(db_path, now_s * NS) as (normalizer, writer, _db):
        write_through(normalizer, writer, [call(1, now_s - 6 * 3600, 100), call(2, now_s - 60, 10)], [], now_s * NS)
        reader = open_reader(db_path)
        with read_snapshot(reader):
            assert same(cache.read(reader, now_s, monotonic_s=0.0), read_totals(reader))
        # A new call in the current hour shows at once; one delivered 5 hours late waits for the refresh.
        write_through(normalizer, writer, [call(3, now_s - 30, 1), call(4, now_s - 5 * 3600, 1000)], [], now_s * NS)
        with read_snapshot(reader):
            (between,) = cache.read(reader, now_s, monotonic_s=10.0)
            truth = read_totals(reader)
        assert between["input_tokens"] == 111 and truth[0]["input_tokens"] == 1111
        with read_snapshot(reader):
            assert same(cache.read(reader, now_s, monotonic_s=400.0), truth)
        reader.close()
    assert cache.full_reads == 2


@pytest.mark.slow
def test_a_busy_metrics_port_stops_serve_at_start_with_the_flag_to_change(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "llmobs_tui", "serve", "--db", str(tmp_path / "busy.db"),
                                 "--grpc-port", "0", "--http-port", "0", "--metrics-port", str(port)],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"cannot listen for metrics on 127.0.0.1:{port}" in result.stderr and "--metrics-port" in result.stderr
