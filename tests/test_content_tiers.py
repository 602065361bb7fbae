"""Content tiers and tail sampling (issue 16, `--content tiered`): planted traffic through the real
Normalizer and SpanWriter, with the exact set of spans whose content is kept (and by which tier)
computed from the rules, and checked against what the store holds: the tier in `flags`, and the
content attributes present or absent in the stored span itself."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver.content_tiers import ContentPolicy, decode_burning, encode_burning, is_control, trace_sampled
from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store import models as m
from store.connection import WriterLock, open_writer
from store.writer import SpanWriter
from tests.otlp_factory import MS, STATUS_ERROR, T0, log_record, logs_request, make_span, trace_request

RECEIVED = T0 + 10 * 10**9
SAMPLE = 0.25
POLICY = ContentPolicy(mode="tiered", sample=SAMPLE, slowest=0.99, costliest=0.99, window_s=900, min_samples=50)
CONTENT = {"gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]',
           "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "text", "content": "hi"}]}]'}
CONTENT_KEYS = set(CONTENT)


def chat(model: str = "gpt-4o", input_tokens: int = 100, output_tokens: int = 50, **extra: object) -> dict:
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
            **CONTENT, **extra}


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def traces_where(sampled: bool, count: int, start: int) -> list[int]:
    """`count` trace numbers from `start` on whose ids the hash rule samples in (or out)."""
    found = []
    n = start
    while len(found) < count:
        if trace_sampled(tid(n), SAMPLE) == sampled:
            found.append(n)
        n += 1
    return found


def normalizer(policy: ContentPolicy | None = POLICY, **options: object) -> Normalizer:
    return Normalizer(PriceTable.load(), IngestOptions(content=policy, **options))  # type: ignore[arg-type]


def write(path: Path, batches: list[tuple[Normalizer, list[Span]]], logs: list = ()) -> None:
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    try:
        writer = SpanWriter(db, clock=lambda: RECEIVED)
        for norm, spans in batches:
            rows, resources, scopes, rejected = norm.decode_traces(trace_request(spans), RECEIVED)
            assert rejected.count == 0, rejected.message()
            writer.write(rows, [], resources, scopes)
        for norm, records in logs:
            rows, resources, scopes, _ = norm.decode_logs(logs_request(records), RECEIVED)
            writer.write([], rows, resources, scopes)
    finally:
        db.close()
        lock.release()


def stored(path: Path) -> dict[tuple[int, int], tuple[str | None, bool]]:
    """(trace, span) → (tier name, whether the stored span still holds its content), from SQL."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT trace_id, span_id, flags, raw FROM spans").fetchall()
    finally:
        db.close()
    out = {}
    for trace_id, span_id, flags, raw in rows:
        span = Span.FromString(zstandard.ZstdDecompressor().decompress(raw))
        has_content = bool(CONTENT_KEYS & {a.key for a in span.attributes})
        tier = m.CONTENT_TIERS.get(m.content_tier(flags))
        assert bool(flags & m.FLAG_CONTENT_DROPPED) == (tier in ("sampled out", "none")), (tier, flags)
        out[(int.from_bytes(trace_id, "big"), int.from_bytes(span_id, "big"))] = (tier, has_content)
    return out


def test_planted_traffic_keeps_exactly_the_expected_spans(tmp_path):
    """200 ordinary calls, then errors, a validation failure, guardrail rejections, a slow and a costly
    outlier, each in a trace the hash samples out: each is kept by its own tier, every ordinary call
    exactly when its trace is sampled, and a failed call's siblings are not kept with it."""
    norm = normalizer()
    ordinary = list(range(1, 201))
    spans = [make_span(t, 1, None, "chat gpt-4o", chat(), start_ns=T0, end_ns=T0 + 1000 * MS) for t in ordinary]
    expected = {(t, 1): ("sampled" if trace_sampled(tid(t), SAMPLE) else "sampled out") for t in ordinary}
    out = traces_where(False, 8, 1000)
    planted = [
        (make_span(out[0], 1, None, "chat gpt-4o", chat(), end_ns=T0 + 1000 * MS, status_code=STATUS_ERROR,
                   status_message="429 Too Many Requests: rate limit exceeded"), "error"),
        (make_span(out[1], 1, None, "chat gpt-4o", chat(**{"app.llm.validation.error": "not JSON"}),
                   end_ns=T0 + 1000 * MS), "validation"),
        (make_span(out[2], 1, None, "chat gpt-4o", chat(**{"gen_ai.response.finish_reasons": ["content_filter"]}),
                   end_ns=T0 + 1000 * MS), "guardrail"),
        (make_span(out[3], 1, None, "input guardrail", {"openinference.span.kind": "GUARDRAIL", "guardrail.passed": False,
                                                          **CONTENT}, end_ns=T0 + 5 * MS), "guardrail"),
        (make_span(out[4], 1, None, "chat gpt-4o", chat(), end_ns=T0 + 10_000 * MS), "slow"),
        (make_span(out[5], 1, None, "chat gpt-4o", chat(input_tokens=100_000), end_ns=T0 + 1000 * MS), "costly"),
    ]
    for span, tier in planted:
        expected[(int.from_bytes(span.trace_id, "big"), 1)] = tier
    # A trace sampled out whose LLM call failed: the failed call keeps its content, its siblings do not
    # (only the sampled tier is whole-trace).
    family = [make_span(out[6], 1, None, "agent run", {"gen_ai.operation.name": "invoke_agent", **CONTENT},
                        end_ns=T0 + 3000 * MS),
              make_span(out[6], 2, 1, "chat gpt-4o", chat(), end_ns=T0 + 1000 * MS),
              make_span(out[6], 3, 1, "chat gpt-4o", chat(), end_ns=T0 + 1000 * MS, status_code=STATUS_ERROR,
                        status_message="upstream 503"),
              make_span(out[6], 4, 1, "no content here", {"gen_ai.operation.name": "execute_tool"})]
    expected.update({(out[6], 1): "sampled out", (out[6], 2): "sampled out", (out[6], 3): "error",
                     (out[6], 4): None})
    path = tmp_path / "tiers.db"
    write(path, [(norm, spans), (norm, [s for s, _ in planted]), (norm, family)])

    got = stored(path)
    assert {key: tier for key, (tier, _) in got.items()} == expected
    for key, (tier, has_content) in got.items():
        assert has_content == (tier not in (None, "sampled out")), key
    kept_ordinary = {t for t in ordinary if got[(t, 1)][0] == "sampled"}
    assert 20 < len(kept_ordinary) < 80  # about a quarter: the rule is a sample, not a constant


def test_before_min_samples_no_call_is_slow_or_costly_and_a_window_slides(tmp_path):
    """Outliers among a model's first calls are only sampled; the percentile is of the window, which
    forgets values older than `window`."""
    norm = normalizer(ContentPolicy(mode="tiered", sample=0.0, slowest=0.9, window_s=900, min_samples=10))
    tiers = norm.tiers
    assert tiers is not None

    def decide(duration_ms: int, received_ns: int) -> int:
        return tiers.decide(b"t" * 16, b"s" * 8, billable=True, error_class=None, failed=False, validation_marker=0,
                            duration_ns=duration_ms * MS, cost_nusd=1000, model="m", operation="chat",
                            feature=None, received_ns=received_ns)

    assert decide(60_000, RECEIVED) == m.TIER_SAMPLED_OUT  # the first call: nothing to compare with
    for _ in range(20):
        assert decide(1000, RECEIVED) == m.TIER_SAMPLED_OUT
    # The threshold was taken at the 11th value (10 in the window: one of 60 s, nine of 1 s): p90 is 1 s.
    assert decide(5000, RECEIVED) == m.TIER_SLOW
    # 16 minutes later the window holds nothing of the above: not enough values again.
    later = RECEIVED + 16 * 60 * 10**9
    assert decide(5000, later) == m.TIER_SAMPLED_OUT


def test_sampling_is_whole_trace_across_two_decoders(tmp_path):
    """The spans of one trace normalized by two decoders (two Normalizers, as two processes): each
    trace's content is kept whole or dropped whole, as its id's hash says, in both."""
    first, second = normalizer(), normalizer()
    traces = list(range(5000, 5060))
    batches = []
    for t in traces:
        spans = [make_span(t, s, None if s == 1 else 1, "chat gpt-4o", chat(), end_ns=T0 + 1000 * MS)
                 for s in range(1, 5)]
        batches.append((first, spans[:2]))
        batches.append((second, spans[2:]))
    path = tmp_path / "two.db"
    write(path, batches)
    got = stored(path)
    for t in traces:
        want = "sampled" if trace_sampled(tid(t), SAMPLE) else "sampled out"
        assert {got[(t, s)][0] for s in range(1, 5)} == {want}, t
    assert {got[(t, 1)][0] for t in traces} == {"sampled", "sampled out"}


def test_a_burning_scope_keeps_all_its_content_until_it_recovers(tmp_path):
    """While the `support` feature's SLO burns (told through the decoders' control frame), every call
    of that feature keeps its content; others are sampled as usual; once it recovers, sampling again."""
    norm = normalizer(ContentPolicy(mode="tiered", sample=0.0))
    frame = encode_burning({("support", None), (None, "gpt-4o-mini")})
    assert is_control(frame)
    assert norm.tiers is not None
    norm.tiers.set_burning(decode_burning(frame))
    burning = [make_span(t, 1, None, "chat", chat(**{"app.llm.feature": "support"})) for t in range(1, 11)]
    other = [make_span(t, 1, None, "chat", chat(**{"app.llm.feature": "search"})) for t in range(11, 21)]
    mini = [make_span(t, 1, None, "chat", chat(model="gpt-4o-mini", **{"app.llm.feature": "search"}))
            for t in range(21, 26)]
    path = tmp_path / "burn.db"
    write(path, [(norm, burning + other + mini)])
    norm.tiers.set_burning(decode_burning(encode_burning(())))
    write(path, [(norm, [make_span(t, 1, None, "chat", chat(**{"app.llm.feature": "support"}))
                         for t in range(31, 36)])])
    got = stored(path)
    assert {t for (t, _), (tier, _) in got.items() if tier == "burning"} == set(range(1, 11)) | set(range(21, 26))
    assert {t for (t, _), (tier, _) in got.items() if tier == "sampled out"} == set(range(11, 21)) | set(range(31, 36))


def test_content_none_and_all_and_log_records(tmp_path):
    """--content none drops every span's and log record's content and says so (tier none); --content
    all keeps everything and records no tier; in tiered mode a log record's content follows its trace's
    sample, or its span's tier when this decoder kept the span."""
    none = normalizer(ContentPolicy(mode="none"))
    keep = normalizer(None)
    tiered = normalizer(ContentPolicy(mode="tiered", sample=SAMPLE))
    sampled_out = traces_where(False, 3, 9000)
    sampled_in = traces_where(True, 1, 9000)[0]
    path = tmp_path / "modes.db"
    failed = make_span(sampled_out[2], 1, None, "chat", chat(), status_code=STATUS_ERROR, status_message="boom")
    write(path, [(none, [make_span(1, 1, None, "chat", chat())]), (keep, [make_span(2, 1, None, "chat", chat())]),
                 (tiered, [failed])],
          logs=[(tiered, [log_record(t, 7, "gen_ai.user.message", body={"content": "secret prompt"})
                          for t in (sampled_out[0], sampled_in)]
                 + [log_record(sampled_out[2], 1, "gen_ai.user.message", body={"content": "failed prompt"})]),
                (none, [log_record(sampled_in, 8, "gen_ai.user.message", body={"content": "never kept"})])])
    got = stored(path)
    assert got[(1, 1)] == ("none", False)
    assert got[(2, 1)] == (None, True)
    assert got[(sampled_out[2], 1)] == ("error", True)
    db = sqlite3.connect(path)
    try:
        bodies = {(int.from_bytes(t, "big"), int.from_bytes(s, "big")): b"prompt" in zstandard.ZstdDecompressor(
        ).decompress(raw) for t, s, raw in db.execute("SELECT trace_id, span_id, raw FROM logs")}
    finally:
        db.close()
    assert bodies == {(sampled_out[0], 7): False, (sampled_in, 7): True, (sampled_out[2], 1): True,
                      (sampled_in, 8): False}


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_pipeline_tells_its_decoders_which_scopes_burn(tmp_path):
    """The main process asks its burn source and sends the answer to every decoder process (a control
    frame ahead of the requests): the burning feature's calls keep their content in both decoders."""
    import asyncio

    from receiver.pipeline import IngestPipeline, PipelineConfig

    answers = iter([frozenset({("support", None)})])
    path = tmp_path / "pipe.db"
    pipeline = IngestPipeline(PipelineConfig(
        db_path=str(path), decoders=2, retention_s=None, content=ContentPolicy(mode="tiered", sample=0.0),
        burn_source=lambda: next(answers, frozenset({("support", None)})), burn_interval_s=3600))
    await pipeline.start()
    try:
        for _ in range(100):
            if pipeline.burning:
                break
            await asyncio.sleep(0.05)
        assert pipeline.burning == {("support", None)}
        bodies = [trace_request([make_span(t, 1, None, "chat", chat(**{"app.llm.feature": "support" if t % 2
                                                                        else "search"}))]).SerializeToString()
                  for t in range(1, 21)]
        # All at once: the pipeline spreads them over both decoders (the least busy takes each).
        await asyncio.gather(*(pipeline.submit("traces", body) for body in bodies))
    finally:
        await pipeline.aclose()
    got = stored(path)
    assert {t for (t, _), (tier, _) in got.items() if tier == "burning"} == set(range(1, 21, 2))
    assert {t for (t, _), (tier, _) in got.items() if tier == "sampled out"} == set(range(2, 21, 2))


def test_the_burn_watch_names_the_scope_whose_slo_burns(tmp_path):
    """serve's burn source (alerting/notify.py BurnWatch) on a real store: 30 % of `support`'s calls
    failed in the last minutes burn its availability SLO; `search`'s, all healthy, does not burn."""
    from llmobs_tui.alerting.notify import BurnWatch
    from llmobs_tui.config import Config, SloSpec
    from tests.test_alerting import NOW, Call, Store

    store = Store(tmp_path / "burn.db")
    for i in range(200):
        store.add(Call(NOW - 600 + i * 2, feature="support", error="500" if i % 10 < 3 else None),
                  Call(NOW - 600 + i * 2 + 1, feature="search"))
    config = Config(slos=[SloSpec("support up", "availability", 0.99, feature="support"),
                          SloSpec("search up", "availability", 0.99, feature="search"),
                          SloSpec("mini fast", "latency", 0.99, threshold=30.0, model="gpt-4o-mini")])
    watch = BurnWatch(store.write(), config, clock=lambda: NOW)
    assert watch() == {("support", None)}
    assert BurnWatch(store.path, config, clock=lambda: NOW + 3 * 86400)() == frozenset()  # recovered


# --- configuration ---------------------------------------------------------------------------------


def settings(tmp_path: Path, *argv: str, config: str | None = None):
    from llmobs_tui.cli.parser import build_parser
    from llmobs_tui.settings import Settings

    args = ["serve", "--db", str(tmp_path / "s.db")]
    if config is not None:
        (tmp_path / "llmobs.toml").write_text(config)
        args += ["--config", str(tmp_path / "llmobs.toml")]
    return Settings.from_args(build_parser().parse_args([*args, *argv]), environ={})


def test_content_flag_and_table(tmp_path):
    from llmobs_tui.settings import SettingsError

    assert settings(tmp_path).content is None and settings(tmp_path).keep_content
    assert settings(tmp_path, "--no-content").content == ContentPolicy(mode="none")
    assert not settings(tmp_path, "--content", "none").keep_content
    assert settings(tmp_path, "--content", "tiered").content == ContentPolicy(mode="tiered")
    table = ('[content]\nsample = "10%"\nslowest = 0.95\ncostliest = 0.9\nwindow = "5m"\non_burn = false\n'
             'min_samples = 20\n')
    want = ContentPolicy(mode="tiered", sample=0.1, slowest=0.95, costliest=0.9, window_s=300, on_burn=False,
                         min_samples=20)
    assert settings(tmp_path, config=table).content == want  # the table alone means tiered
    assert settings(tmp_path, "--content", "all", config=table).content is None  # the flag wins
    assert settings(tmp_path, config='[content]\nmode = "all"\n').content is None
    pipeline = settings(tmp_path, config=table).pipeline_config()
    assert pipeline.content == want and pipeline.decoder_options()["content"] == want
    with pytest.raises(SettingsError, match="contradict"):
        settings(tmp_path, "--no-content", "--content", "tiered")
    with pytest.raises(SystemExit):
        settings(tmp_path, "--content", "some")


@pytest.mark.parametrize("table,line,message", [
    ('[content]\nmode = "most"\n', 2, "mode must be one of all, none, tiered"),
    ('[content]\nsample = 1.5\n', 2, "sample must be from 0 to 100%"),
    ('[content]\n\nslowest = 0\n', 3, "slowest must be above 0"),
    ('[content]\ncostliest = "lots"\n', 2, "not a fraction or a percentage"),
    ('[content]\nwindow = "5s"\n', 2, "window must be from 1m to 1d"),
    ('[content]\non_burn = "yes"\n', 2, "on_burn must be true or false"),
    ('[content]\nmin_samples = 0\n', 2, "min_samples must be a whole number"),
    ('[content]\nsampel = 0.1\n', 2, "sampel: unknown"),
])
def test_content_table_errors_name_their_line(tmp_path, table, line, message):
    from llmobs_tui.config import ConfigError, load_config

    (tmp_path / "c.toml").write_text(table)
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "c.toml")
    assert f"c.toml:{line}: [content]" in str(error.value) and message in str(error.value)


def test_the_tier_line_of_a_span():
    from llmobs_tui.widgets.span_detail import content_tier_text

    def line(flags: int) -> str | None:
        text = content_tier_text(flags)
        return None if text is None else text.plain

    assert line(0) is None and line(m.FLAG_REDACTED) is None  # --content all, or an older store
    assert line(m.TIER_COSTLY << m.CONTENT_TIER_SHIFT | m.FLAG_REDACTED) == "kept: costly"
    assert line(m.TIER_SAMPLED_OUT << m.CONTENT_TIER_SHIFT | m.FLAG_CONTENT_DROPPED) == "not kept (tier: sampled out)"
    assert line(m.TIER_NONE << m.CONTENT_TIER_SHIFT | m.FLAG_CONTENT_DROPPED) == "not kept (tier: none)"
    assert m.flag_names(m.TIER_SLOW << m.CONTENT_TIER_SHIFT) == []  # the tier is not a receiver flag


# --- the TUI -------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_span_detail_says_which_tier_kept_or_dropped_the_content(tmp_path):
    from llmobs_tui.app import LlmobsApp
    from llmobs_tui.widgets.waterfall import Waterfall
    from tests.test_tui import settle, text_of

    trace = traces_where(False, 1, 7000)[0]
    path = tmp_path / "tui.db"
    spans = [make_span(trace, 1, None, "agent [bold]run[/bold]", {"gen_ai.operation.name": "invoke_agent", **CONTENT},
                       end_ns=T0 + 3000 * MS, kind=2),
             make_span(trace, 2, 1, "chat failed", chat(), start_ns=T0 + 10 * MS, end_ns=T0 + 900 * MS,
                       status_code=STATUS_ERROR, status_message="upstream 503")]
    write(path, [(normalizer(), spans)])
    app = LlmobsApp(path, clock=lambda: T0 / 1e9 + 60, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        app.open_trace(tid(trace))
        await settle(pilot)
        waterfall = app.screen.query_one(Waterfall)
        seen = {}
        for key in ("up", "up", "down"):  # the failed call is selected first; the root is above it
            await settle(pilot)
            seen[waterfall.selected.name] = " ".join(text_of(app.screen.query_one("#detail-conversation")).split())
            await pilot.press(key)
    root = seen["agent [bold]run[/bold]"]  # a span name is data: shown literally
    assert root.startswith("Content not kept (tier: sampled out). The receiver runs with --content tiered"), seen
    failed = seen["chat failed"]
    assert failed.startswith("✕ failed") and "content kept: error user" in failed and "hello" in failed, seen


# --- end to end: a real serve with the OTel SDK --------------------------------------------------------


@pytest.mark.slow
def test_a_real_serve_keeps_failed_calls_and_the_sample(tmp_path):
    """`serve --content tiered` ([content] sample = 0.5) fed by the OpenTelemetry SDK's OTLP/gRPC
    exporter: failed calls keep their content, the others exactly when the hash samples their trace,
    whichever of the two decoders got them."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    config = tmp_path / "llmobs.toml"
    # The slow and costly tiers off (1: no span is kept for them): a decoder that happens to get 50 of
    # the 60 calls reaches min_samples, and the slowest of the rest would be kept as "slow" (CI saw it).
    config.write_text("[content]\nsample = 0.5\nslowest = 1.0\ncostliest = 1.0\n")
    db = tmp_path / "serve.db"
    proc = subprocess.Popen([sys.executable, "-m", "llmobs_tui", "serve", "--db", str(db), "--config", str(config),
                             "--grpc-port", "0", "--http-port", "0", "--decoders", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        line = proc.stdout.readline()
        grpc_address = re.search(r"OTLP/gRPC on (\S+?),", line).group(1)
        provider = TracerProvider(resource=Resource.create({"service.name": "tiered-app"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://{grpc_address}",
                                                                        insecure=True), max_export_batch_size=16))
        tracer = provider.get_tracer("app")
        failed_traces = set()
        for i in range(60):
            with tracer.start_as_current_span("handle") as root:
                with tracer.start_as_current_span("chat gpt-4o") as call:
                    for key, value in chat().items():
                        call.set_attribute(key, value)
                    if i % 10 == 0:
                        call.set_status(Status(StatusCode.ERROR, "upstream 503"))
                        failed_traces.add(root.get_span_context().trace_id)
        provider.shutdown()
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    got = stored(db)
    calls = {t: v for (t, s), v in got.items() if v[0] is not None}
    assert len(calls) == 60, output
    for t, (tier, has_content) in calls.items():
        if t in failed_traces:
            assert tier == "error" and has_content
        else:
            assert tier == ("sampled" if trace_sampled(tid(t), 0.5) else "sampled out"), t
    assert {v[0] for v in calls.values()} == {"error", "sampled", "sampled out"}
