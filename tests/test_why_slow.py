"""Issue 13, capability 5: "why slow?" (`w`) on a call or a trace, against its cohort.

Cohorts are written through the real normalizer and writer; every percentile is checked against a
brute-force computation over the stored spans and traces. Latency, TTFT and TPOT percentiles come
from the rollups' log-bucketed histograms (store/histogram.py, γ = 1.04): a quantile read back is
within RELATIVE_ERROR (≈ 1.96 %) of the nearest-rank quantile of the raw values, and a call's
percentile rank is exact for some value within one bucket (a factor γ) of the call's own. Token
percentiles and everything about traces are read from rows, so they must match exactly.
"""

from __future__ import annotations

import math
import random
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmobs_tui import why_slow
from llmobs_tui.app import LlmobsApp
from llmobs_tui.reader import StoreReader
from llmobs_tui.scenarios import MS, S, SpanSpec, Trace, to_otlp_request, trace_id_of
from llmobs_tui.screens.help import describe_bindings
from llmobs_tui.screens.trace import TraceScreen
from llmobs_tui.screens.traces import TracesScreen
from llmobs_tui.screens.why_slow import WhySlowScreen, render_explanation
from store import cohort as cohort_store
from store import histogram
from store.cohort import window_bounds
from store.connection import open_reader
from store.dashboards import SpanRow
from store.writer import SpanWriter
from tests.test_markup_safety import Frame
from tests.tui_scenarios import settle

pytestmark = pytest.mark.anyio

NOW = 1_795_000_000.0
WINDOW = 3600.0
GAMMA = histogram.GAMMA

SLOW_PREFILL = 5001  # TTFT 4.1 s at a normal input size: provider-side
LONG_OUTPUT = 5002  # 2,400 output tokens at a normal speed: a long answer
NOT_STREAMED = 5003  # slow, with no TTFT to split its time at
SLOW_TOOL = 6001  # a research trace whose tool took 6 s
IDLE = 6002  # a research trace that sat 3.5 s between its two calls
RETRIED = 6003  # a research trace whose call failed twice (429) before it went through


def chat(parent: int | None, start_ns: int, *, ttft_s: float, input_tokens: int, output_tokens: int,
         model: str = "gpt-4o", tokens_per_s: float = 80.0, stream: bool = True) -> SpanSpec:
    """A chat call (OTel GenAI keys) whose duration is TTFT plus decode; streamed, it reports its TTFT."""
    duration = int((ttft_s + output_tokens / tokens_per_s) * S)
    attributes = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
        "gen_ai.response.model": model, "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens, "gen_ai.request.stream": stream}
    if stream:
        attributes["gen_ai.response.time_to_first_chunk"] = ttft_s
    return SpanSpec(f"chat {model}", parent, start_ns, duration, attributes, kind=3)


def rate_limited(parent: int, start_ns: int, model: str) -> SpanSpec:
    return SpanSpec(f"chat {model}", parent, start_ns, 100 * MS, {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
        "error.type": "RateLimitError", "http.response.status_code": 429},
        error="Error code: 429 - Rate limit reached", kind=3)


def root(name: str, feature: str, duration_ns: int) -> SpanSpec:
    return SpanSpec(name, None, 0, duration_ns, {"app.llm.feature": feature}, kind=2)


def one_call(feature: str, call: SpanSpec) -> Trace:
    call.parent, call.start_ns = 0, 5 * MS
    return Trace(feature, "svc", [root(f"POST /{feature}/ask", feature, call.end_ns + 5 * MS), call])


def research(rng: random.Random, tool_s: float | None = None, idle_s: float = 0.0, retries: int = 0) -> Trace:
    """POST /research/ask → plan (chat) → execute_tool search → answer (chat)."""
    model = "gpt-4o-mini"
    spans = [root("POST /research/ask", "research", 0)]
    t = 2 * MS
    spans.append(chat(0, t, ttft_s=rng.uniform(0.25, 0.35), input_tokens=rng.randint(800, 1000),
                      output_tokens=rng.randint(60, 90), model=model, tokens_per_s=120))
    t = spans[-1].end_ns + 2 * MS
    tool_ns = int((tool_s if tool_s is not None else rng.uniform(0.25, 0.35)) * S)
    spans.append(SpanSpec("execute_tool search", 0, t, tool_ns, {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}))
    t += tool_ns + 2 * MS + int(idle_s * S)
    for _ in range(retries):
        spans.append(rate_limited(0, t, model))
        t += 100 * MS + 2 * S  # the 429, then the client's back-off
    spans.append(chat(0, t, ttft_s=rng.uniform(0.25, 0.35), input_tokens=rng.randint(1200, 1500),
                      output_tokens=rng.randint(100, 140), model=model, tokens_per_s=120))
    spans[0].duration_ns = spans[-1].end_ns + 3 * MS
    return Trace("research", "svc", spans)


def build_store(writer_db: sqlite3.Connection, normalizer) -> dict[str, int]:
    """The cohorts: 60 gpt-4o calls on support (and the two planted ones), neighbours that must stay
    out of it (another model, another feature, calls before the window), 30 research traces (and
    three planted ones), and six onboarding calls: a cohort too small to compare with."""
    rng = random.Random(13)
    writer = SpanWriter(writer_db, clock=lambda: int(NOW * S))
    batch: list[tuple[Trace, int, int]] = []
    number = 0

    def add(trace: Trace, at_s: float, trace_number: int | None = None) -> None:
        nonlocal number
        number += 1
        batch.append((trace, trace_number or number, int(at_s * S)))

    for _ in range(60):
        inp = rng.randint(900, 1500)
        add(one_call("support", chat(None, 0, ttft_s=rng.uniform(0.35, 0.65) * (1 + inp / 40_000), input_tokens=inp,
                                     output_tokens=rng.randint(120, 280), tokens_per_s=rng.uniform(70, 90))),
            NOW - rng.uniform(60, 3000))
    for model, feature in (("gpt-4o-mini", "support"), ("gpt-4o", "checkout")):
        for _ in range(15):  # fast neighbours: in the cohort, they would pull its median down
            add(one_call(feature, chat(None, 0, ttft_s=0.1, input_tokens=300, output_tokens=20, model=model)),
                NOW - rng.uniform(60, 3000))
    for _ in range(10):  # slow calls from before the window: in the cohort, they would push it up
        add(one_call("support", chat(None, 0, ttft_s=9.0, input_tokens=1200, output_tokens=200)), NOW - 3 * 3600)
    # A slow first token, and a somewhat long answer too: the verdict names the bigger cause, and its share.
    add(one_call("support", chat(None, 0, ttft_s=4.1, input_tokens=1180, output_tokens=330)), NOW - 600, SLOW_PREFILL)
    add(one_call("support", chat(None, 0, ttft_s=0.5, input_tokens=1150, output_tokens=2400)), NOW - 900, LONG_OUTPUT)
    add(one_call("support", chat(None, 0, ttft_s=5.0, input_tokens=1200, output_tokens=200, stream=False)),
        NOW - 1100, NOT_STREAMED)
    for _ in range(30):
        add(research(rng), NOW - rng.uniform(60, 3000))
    add(research(rng, tool_s=6.0), NOW - 700, SLOW_TOOL)
    add(research(rng, idle_s=3.5), NOW - 800, IDLE)
    add(research(rng, retries=2), NOW - 1000, RETRIED)
    for _ in range(6):
        add(one_call("onboarding", chat(None, 0, ttft_s=0.9, input_tokens=500, output_tokens=90,
                                        model="mistral-small-latest")), NOW - rng.uniform(60, 3000))
    rows, resources, scopes, rejections = normalizer.decode_traces(to_otlp_request(batch), int(NOW * S))
    assert rejections.count == 0, rejections.message()
    writer.write(rows, [], resources, scopes)
    return {"traces": len(batch)}


@pytest.fixture
def store(writer_db: sqlite3.Connection, normalizer, db_path: Path) -> Path:
    build_store(writer_db, normalizer)
    return db_path


@pytest.fixture
def db(store: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection for the ground truth."""
    conn = open_reader(store)
    yield conn
    conn.close()


# --- ground truth ---------------------------------------------------------------------------------


def cohort_rows(db: sqlite3.Connection, model: str, feature: str) -> list[tuple]:
    """The cohort by brute force: every successful billed call of the model on the feature in the
    window (widened to whole minutes, as the rollups cover it)."""
    first, end = window_bounds(NOW - WINDOW, NOW)
    return db.execute("SELECT duration_ns, ttft_ns, input_tokens, output_tokens FROM spans WHERE billed = 1 "
                      "AND feature = ? AND request_model = ? AND error_class IS NULL AND start_ns >= ? "
                      "AND start_ns < ?", (feature, model, first * S, end * S)).fetchall()


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def mid_rank(values: list[float], x: float) -> float:
    return (sum(v < x for v in values) + 0.5 * sum(v == x for v in values)) / len(values)


def tpot_of(duration_ns: int, ttft_ns: int, output: int) -> float:
    return (duration_ns - ttft_ns) / (output - 1)


async def read_spans(path: Path, number: int) -> list[SpanRow]:
    reader = StoreReader(path)
    await reader.open()
    try:
        return (await reader.trace(trace_id_of(number))).spans
    finally:
        await reader.close()


async def explain(path: Path, trace: int | bytes, span_name: str | None = None) -> why_slow.Explanation:
    """What `w` shows: for `span_name`, that call against its cohort; else the trace."""
    reader = StoreReader(path)
    await reader.open()
    try:
        trace_id = trace_id_of(trace) if isinstance(trace, int) else trace
        spans = (await reader.trace(trace_id)).spans
        label = "1h"
        if span_name is not None:
            span = max((s for s in spans if s.name == span_name), key=lambda s: s.start_ns)
            cohort = await reader.call_cohort(why_slow.model_of(span), span.feature, WINDOW, NOW)
            return why_slow.explain_call(span, spans, cohort, label)
        trace_cohort, typical = await reader.trace_cohort(trace_id, WINDOW, NOW)
        return why_slow.explain_trace(spans, trace_cohort, typical, label)
    finally:
        await reader.close()


def parts_of(e: why_slow.Explanation) -> dict[str, why_slow.Part]:
    return {p.key: p for p in e.parts}


def standing(e: why_slow.Explanation, what: str) -> why_slow.Standing:
    return next(s for s in e.standings if s.what == what)


# --- a call ---------------------------------------------------------------------------------------


async def test_a_slow_first_token_at_a_normal_input_size_is_provider_side(store, db):
    rows = cohort_rows(db, "gpt-4o", "support")
    assert len(rows) == 63  # 60 + the three planted calls: neighbours and older calls stayed out
    e = await explain(store, SLOW_PREFILL, "chat gpt-4o")
    assert e.cohort_size == len(rows) and not e.too_small
    duration, ttft, inp, out = db.execute("SELECT duration_ns, ttft_ns, input_tokens, output_tokens FROM spans "
                                          "WHERE trace_id = ? AND billed = 1", (trace_id_of(SLOW_PREFILL),)).fetchone()
    assert abs(ttft - 4.1 * S) < 1000

    # Cohort quantiles read from the histograms: within the histogram's relative error of the raw values.
    reader = StoreReader(store)
    await reader.open()
    try:
        cohort = await reader.call_cohort("gpt-4o", "support", WINDOW, NOW)
    finally:
        await reader.close()
    streamed = [r for r in rows if r[1] is not None]  # only these have a TTFT and a TPOT
    columns = {"latency": [r[0] for r in rows], "ttft": [r[1] for r in streamed],
               "tpot": [tpot_of(r[0], r[1], r[3]) for r in streamed]}
    for name, values in columns.items():
        for q in (0.5, 0.95):
            read = why_slow.histogram_quantile_ns(getattr(cohort, name), q)
            assert read is not None
            assert abs(read / nearest_rank(values, q) - 1) <= histogram.RELATIVE_ERROR + 1e-9, (name, q)
    # The call's percentile ranks: exact for some value within one bucket of its own.
    own = {"total latency": (duration, columns["latency"]), "TTFT": (ttft, columns["ttft"]),
           "TPOT": (tpot_of(duration, ttft, out), columns["tpot"])}
    for what, (value, values) in own.items():
        rank = standing(e, what).rank
        assert rank is not None
        low = sum(v < value / GAMMA for v in values) / len(values)
        high = sum(v <= value * GAMMA for v in values) / len(values)
        assert low <= rank <= high, (what, low, rank, high)
    # Token percentiles are read from the spans: exact.
    assert standing(e, "input tokens").rank == mid_rank([r[2] for r in rows], inp)
    assert standing(e, "output tokens").rank == mid_rank([r[3] for r in rows], out)
    assert 0.2 <= mid_rank([r[2] for r in rows], inp) <= 0.8  # the planted input size is ordinary

    # Where the extra time went: the parts add up to the excess over the median latency.
    median = nearest_rank(columns["latency"], 0.5)
    assert e.median_ns is not None and abs(e.median_ns / median - 1) <= histogram.RELATIVE_ERROR + 1e-9
    assert e.excess_ns == round(duration - e.median_ns)
    total = sum(p.ns for p in e.parts)
    assert abs(total - e.excess_ns) <= 0.05 * e.excess_ns
    parts = parts_of(e)
    provider = parts["provider_prefill"]
    # TTFT beyond what calls of a similar input size wait: between the planted TTFT less the slowest
    # and less the fastest normal TTFT of the cohort.
    normal = [r[1] for r in streamed if r[1] != ttft and r[3] < 300]
    assert ttft - max(normal) <= provider.ns <= ttft - min(normal)
    lost = sum(p.ns for p in e.parts if p.ns > 0)  # shares are of the time lost, faster parts aside
    assert provider.share == pytest.approx(provider.ns / lost)
    assert sum(p.share for p in e.parts if p.share is not None) == pytest.approx(1)
    assert 0.6 < provider.share < 0.9 and provider.ns == max(p.ns for p in e.parts)
    assert parts["output_length"].share > 0.1  # the longer answer is the rest of it

    match = re.match(r"TTFT 4\.10s is p(\d+) for gpt-4o on support while input tokens are p(\d+): "
                     r"provider-side \(queueing or prefill\); (\d+%|all) of the excess\. Total ", e.verdict)
    assert match, e.verdict
    assert int(match[1]) == math.floor(standing(e, "TTFT").rank * 100) >= 95
    assert int(match[2]) == math.floor(mid_rank([r[2] for r in rows], inp) * 100)
    assert match[3] == why_slow.share_text(provider.share) and match[3] == f"{round(provider.share * 100)}%"


async def test_a_long_answer_is_decode_time(store, db):
    rows = cohort_rows(db, "gpt-4o", "support")
    e = await explain(store, LONG_OUTPUT, "chat gpt-4o")
    parts = parts_of(e)
    output = parts["output_length"]
    assert output.ns == max(p.ns for p in e.parts) and output.share > 0.8
    # (output − the cohort's median output) × the cohort's median TPOT, the TPOT read from a histogram.
    median_output = nearest_rank([r[3] for r in rows], 0.5)
    median_tpot = nearest_rank([tpot_of(r[0], r[1], r[3]) for r in rows if r[1] is not None], 0.5)
    expected = (2400 - median_output) * median_tpot
    assert abs(output.ns / expected - 1) <= histogram.RELATIVE_ERROR + 1e-6
    assert abs(parts["provider_prefill"].ns) < 0.05 * e.excess_ns  # its first token came on time
    assert standing(e, "output tokens").rank == mid_rank([r[3] for r in rows], 2400)
    match = re.match(r"Output 2\.4k tokens is p(\d+) for gpt-4o on support \(decode [\d.]+s\): a long answer; "
                     r"(\d+%|all) of the excess", e.verdict)
    assert match, e.verdict
    assert int(match[1]) >= 95 and match[2] == why_slow.share_text(output.share)


async def test_a_call_without_ttft_is_not_split_at_its_first_token(store, db):
    e = await explain(store, NOT_STREAMED, "chat gpt-4o")
    parts = parts_of(e)
    assert "provider_prefill" not in parts and "input_size" not in parts
    unsplit = parts["unsplit"]
    assert unsplit.ns == max(p.ns for p in e.parts) and unsplit.share > 0.9
    assert e.excess_ns == sum(p.ns for p in e.parts)  # the rest is all that is not the answer's length
    rows = cohort_rows(db, "gpt-4o", "support")
    outputs = [r[3] for r in rows]
    assert re.match(rf"Total [\d.]+s is p9\d for gpt-4o on support with output tokens "
                    rf"p{math.floor(mid_rank(outputs, 200) * 100)}; no TTFT on this call, so prefill and decode "
                    rf"cannot be told apart; (\d+%|all) of the excess\.", e.verdict), e.verdict


async def test_the_fastest_call_is_not_slow(store, db):
    first, end = window_bounds(NOW - WINDOW, NOW)
    fastest = db.execute("SELECT trace_id FROM spans WHERE billed = 1 AND feature = 'support' AND request_model = "
                         "'gpt-4o' AND start_ns >= ? AND start_ns < ? ORDER BY duration_ns LIMIT 1",
                         (first * S, end * S)).fetchone()[0]
    e = await explain(store, fastest, "chat gpt-4o")
    assert e.excess_ns is not None and e.excess_ns < 0 and not e.parts
    assert re.match(r"Not slow for its cohort: total [\d.]+m?s is p[0-4] for gpt-4o on support \(median ", e.verdict)


async def test_a_call_after_failed_attempts_names_its_retries(store):
    e = await explain(store, RETRIED, "chat gpt-4o-mini")  # the last call, after two 429s
    spans = await read_spans(store, RETRIED)
    failed = sorted(s.start_ns for s in spans if s.failed)
    last = max((s for s in spans if s.name == "chat gpt-4o-mini"), key=lambda s: s.start_ns)
    held = why_slow._dur(last.start_ns - failed[0])
    assert held == "4.20s"
    assert e.verdict.endswith(f" Before it, 2 failed gpt-4o-mini calls (rate_limit) held the caller {held}.")
    assert any(n.startswith("retries: 2 failed calls of the same model") for n in e.notes)


async def test_a_cohort_too_small_gets_no_percentiles(store, db):
    reader = StoreReader(store)
    await reader.open()
    try:
        number_row = db.execute("SELECT trace_id FROM spans WHERE request_model = 'mistral-small-latest' "
                                "ORDER BY start_ns DESC LIMIT 1").fetchone()
        spans = (await reader.trace(number_row[0])).spans
        call = next(s for s in spans if s.is_llm)
        cohort = await reader.call_cohort(why_slow.model_of(call), call.feature, WINDOW, NOW)
        e = why_slow.explain_call(call, spans, cohort, "1h")
        trace_cohort, typical = await reader.trace_cohort(number_row[0], WINDOW, NOW)
        t = why_slow.explain_trace(spans, trace_cohort, typical, "1h")
    finally:
        await reader.close()
    assert e.too_small and e.cohort_size == 6
    assert all(s.rank is None for s in e.standings) and e.median_ns is None
    assert e.verdict.startswith("Too few calls to compare: 6 calls of mistral-small-latest on onboarding in the "
                                "last 1h (20 needed for percentiles). Its ")
    # What can be said without a cohort: its own time, split at the first token.
    assert [p.key for p in e.parts] == ["ttft", "decode"]
    assert sum(p.ns for p in e.parts) == call.duration_ns and e.parts[0].ns == call.ttft_ns
    assert t.too_small and t.cohort_size == 6 and all(s.rank is None for s in t.standings)
    assert t.verdict.startswith("Too few traces to compare: 6 traces of POST /onboarding/ask on onboarding")
    assert sum(p.ns for p in t.parts) == t.value_ns  # the whole critical path, by category


async def test_a_call_older_than_the_window_says_so(store):
    reader = StoreReader(store)
    await reader.open()
    try:
        spans = (await reader.trace(trace_id_of(SLOW_PREFILL))).spans
        call = next(s for s in spans if s.is_llm)
        later = NOW + 3 * 3600  # the window has moved past every call of the store
        e = why_slow.explain_call(call, spans, await reader.call_cohort("gpt-4o", "support", WINDOW, later), "1h")
    finally:
        await reader.close()
    assert e.too_small and e.cohort_size == 0
    assert "this call is older than the window: it is set against the last 1h's calls" in e.notes


def run_queries(db: sqlite3.Connection, queries) -> dict[str, list[tuple]]:
    return {name: db.execute(q.sql, q.params).fetchall() for name, q in queries.items()}


def test_the_span_and_trace_reads_are_bounded_newest_first(db):
    first, end = window_bounds(NOW - WINDOW, NOW)
    whole = cohort_store.parse_call_cohort("gpt-4o", "support", NOW - WINDOW, NOW, run_queries(
        db, cohort_store.call_cohort_queries("gpt-4o", "support", NOW - WINDOW, NOW)))
    assert not whole.samples_capped and len(whole.samples) == len(cohort_rows(db, "gpt-4o", "support"))
    bounded = cohort_store.parse_call_cohort("gpt-4o", "support", NOW - WINDOW, NOW, run_queries(
        db, cohort_store.call_cohort_queries("gpt-4o", "support", NOW - WINDOW, NOW, scan_limit=40)), scan_limit=40)
    newest = db.execute("SELECT input_tokens, output_tokens, ttft_ns, duration_ns, billed, feature, request_model, "
                        "error_class FROM spans WHERE start_ns >= ? AND start_ns < ? ORDER BY start_ns DESC LIMIT 40",
                        (first * S, end * S)).fetchall()
    kept = [tuple(r[:4]) for r in newest if r[4] == 1 and r[5] == "support" and r[6] == "gpt-4o" and r[7] is None]
    assert bounded.samples_capped and 0 < len(bounded.samples) < len(whole.samples)
    assert sorted(vars_of(s) for s in bounded.samples) == sorted(kept)
    # The histograms are not bounded: they are the rollups of the whole window.
    assert bounded.latency == whole.latency

    subject = trace_id_of(SLOW_TOOL)
    traces = cohort_store.parse_trace_cohort(NOW - WINDOW, NOW, run_queries(
        db, cohort_store.trace_cohort_queries(subject, NOW - WINDOW, NOW, scan_limit=30)), scan_limit=30)
    newest_traces = db.execute("SELECT trace_id FROM traces WHERE start_ns >= ? AND start_ns < ? AND root_name = "
                               "'POST /research/ask' AND trace_id IN (SELECT trace_id FROM traces WHERE "
                               "start_ns >= ? ORDER BY start_ns DESC LIMIT 30)", (first * S, end * S, first * S))
    assert traces.capped and {t.trace_id for t in traces.samples} == {r[0] for r in newest_traces}


def vars_of(sample: cohort_store.CallSample) -> tuple:
    return (sample.input_tokens, sample.output_tokens, sample.ttft_ns, sample.duration_ns)


# --- a trace --------------------------------------------------------------------------------------


def trace_durations(db: sqlite3.Connection) -> list[int]:
    first, end = window_bounds(NOW - WINDOW, NOW)
    return [r[0] for r in db.execute("SELECT duration_ns FROM traces WHERE root_name = 'POST /research/ask' AND "
                                     "feature = 'research' AND start_ns >= ? AND start_ns < ?", (first * S, end * S))]


async def test_a_slow_tool_is_named_against_typical_traces(store, db):
    durations = trace_durations(db)
    assert len(durations) == 33
    e = await explain(store, SLOW_TOOL)
    own = db.execute("SELECT duration_ns FROM traces WHERE trace_id = ?", (trace_id_of(SLOW_TOOL),)).fetchone()[0]
    assert e.subject == "trace" and e.cohort_size == 33 and not e.too_small
    assert standing(e, "duration").rank == mid_rank(durations, own)
    assert e.median_ns == nearest_rank(durations, 0.5) and e.excess_ns == own - e.median_ns
    tool = parts_of(e)["tool"]
    # The typical trace's tool took 0.25–0.35 s: the rest of the 6 s is excess.
    assert 5.65 * S <= tool.ns <= 5.75 * S and tool.share > 0.9
    match = re.match(r"Tool spans took 6\.00s on the critical path against (\d+)ms in a typical trace "
                     r"\(most: execute_tool search 6\.00s\): (\d+%|all) of the excess\. Duration [\d.]+s is p(\d+) "
                     r"for POST /research/ask on research", e.verdict)
    assert match, e.verdict
    assert 250 <= int(match[1]) <= 350 and int(match[3]) == math.floor(mid_rank(durations, own) * 100)


async def test_time_between_spans_and_retries_are_their_own_causes(store):
    idle = await explain(store, IDLE)
    between = parts_of(idle)["between"]
    assert between.ns == max(p.ns for p in idle.parts) and 3.4 * S <= between.ns <= 3.6 * S
    assert idle.verdict.startswith("Time between spans (the app's own code, or waiting) took 3.5")

    retried = await explain(store, RETRIED)
    retries = parts_of(retried)["retries"]
    spans = await read_spans(store, RETRIED)
    failed = sorted(s.start_ns for s in spans if s.failed)
    last = max((s for s in spans if s.name == "chat gpt-4o-mini"), key=lambda s: s.start_ns)
    # Two 429s and their back-offs: from the first failed attempt to the attempt that went through.
    assert retries.ns == last.start_ns - failed[0] == max(p.ns for p in retried.parts)
    assert retried.verdict.startswith("Failed LLM calls and their retries took 4.20s on the critical path against "
                                      "none in a typical trace (most: chat gpt-4o-mini 4.20s): ")


def test_retry_windows_and_the_critical_path_cut_add_up():
    def span(n: int, parent: int | None, start: int, end: int, kind: str = "llm", failed: bool = False,
             ttft: int | None = None) -> SpanRow:
        return SpanRow(n, bytes([n]), None if parent is None else bytes([parent]), f"s{n}", kind, start, end,
                       end - start, 2 if failed else 0, None, "svc", "openai", "chat", "m", "m", 10, 10, 0, 0, 0,
                       ttft, 1, None, "api" if failed else None, None, None, None, None, None, None, None, None,
                       None, None, int(kind == "llm" and not failed), 0, None)

    spans = [span(1, None, 0, 10_000, kind="span"), span(2, 1, 100, 200, failed=True),
             span(3, 1, 1_200, 1_300, failed=True), span(4, 1, 2_300, 4_000, ttft=500),
             span(5, 1, 4_100, 9_000, kind="tool")]
    assert [(start, end, failed.name) for start, end, failed in why_slow.retry_windows(spans)] == [(100, 2_300, "s2")]
    cut = why_slow.trace_time(spans)
    assert sum(cut.by_category.values()) == cut.duration_ns == 10_000
    assert cut.by_category == {"between": 100 + 100 + 1_000, "retries": 2_200, "prefill": 500, "decode": 1_200,
                               "tool": 4_900}


# --- the screen -----------------------------------------------------------------------------------


def make_app(store: Path) -> LlmobsApp:
    return LlmobsApp(store, clock=lambda: NOW, refresh_s=None, window_s=WINDOW)


def screen_words(app: LlmobsApp) -> str:
    """The frame's text with the modal's border and line breaks taken out: wrapped words rejoin."""
    return " ".join(Frame(app).text.replace("│", " ").split())


@pytest.mark.parametrize("size", [(160, 48), (80, 24)])
async def test_w_on_the_slowest_span_explains_it(store, size):
    app = make_app(store)
    async with app.run_test(size=size) as pilot:
        app.open_trace(trace_id_of(SLOW_PREFILL), slowest=True)
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.selected_span.name == "chat gpt-4o"
        rows = describe_bindings(app, app.screen)
        assert any(r.keys == "w" and r.words.startswith("Why slow? ") for r in rows)  # the help lists it
        await pilot.press("w")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, WhySlowScreen) and screen.explanation is not None
        verdict = screen.explanation.verdict
        assert verdict.startswith("TTFT 4.10s is p9") and "provider-side" in verdict
        words = screen_words(app)
        assert "Why slow? this call chat gpt-4o" in words
        assert " ".join(verdict.split()[:12]) in words  # the verdict is on screen, at any size
        await pilot.press("w")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)

        await pilot.press("home")  # the root span: the trace is explained
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        assert isinstance(app.screen, WhySlowScreen) and app.screen.explanation.subject == "trace"
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)


async def test_the_explanation_is_drawn_again_for_a_new_size(store):
    """Opened at 160×48, then the terminal shrinks to 80×24: the histogram is drawn for the new width (its
    axis on one line with both corners), not wrapped."""
    app = make_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        app.open_trace(trace_id_of(SLOW_PREFILL), slowest=True)
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        assert isinstance(app.screen, WhySlowScreen) and app.screen.explanation is not None
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        await pilot.press("end")  # the histogram is at the bottom of the scrolled dialog
        await settle(pilot)
        axis = [line for line in Frame(app).text.splitlines() if "│ └──" in line]
        assert axis and all("┘" in line for line in axis), Frame(app).text


async def test_w_on_the_traces_screen_explains_the_selected_trace(store):
    app = make_app(store)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        traces = app.screen
        assert isinstance(traces, TracesScreen) and traces.selected_trace is not None
        assert any(r.keys == "w" and r.words.startswith("Why slow? ") for r in describe_bindings(app, traces))
        await pilot.press("w")
        await settle(pilot)
        assert isinstance(app.screen, WhySlowScreen)
        e = app.screen.explanation
        assert e is not None and e.subject == "trace"
        assert e.name == traces.selected_trace.root_name
        await pilot.press("q")  # q closes the explanation, not the app
        await settle(pilot)
        assert isinstance(app.screen, TracesScreen) and app.is_running


def test_names_from_spans_render_literally():
    e = why_slow.Explanation("call", "[bold red]boom[/] \x1b[2J", "gpt-4o on [link=x]f[/link]", "1h", 3, True,
                             1_000, verdict="Too few calls: [red]x[/red] \x1b]0;pwned\x07")
    text = "".join(segment.text for segment in _segments(render_explanation(e)))
    assert "[bold red]boom[/]" in text and "[link=x]f[/link]" in text and "[red]x[/red]" in text
    assert "\x1b" not in text and "\x07" not in text


def _segments(renderable):
    import io

    from rich.console import Console

    console = Console(width=100, file=io.StringIO(), color_system=None)
    return console.render(renderable)
