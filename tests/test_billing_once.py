"""One provider call is billed once, even when its spans are not ancestor and descendant (design §2
rule 3, issue 10): an SDK's own span beside an instrumentation's span, a framework span whose SDK span
hangs elsewhere in the trace. Every case in every arrival order and batching, through the real
normalizer and SpanWriter, read back through the rollups `report` uses."""

from __future__ import annotations

import itertools
import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver.normalize import Normalizer
from store.connection import WriterLock, open_writer
from store.writer import SpanWriter
from tests.otlp_factory import T0, make_span, trace_request
from tests.test_writer import rollup_totals

MS = 1_000_000
TRACE = 0xB111
NATIVE = ("com.anthropic.sdk.python", "0.75.0")
OPENLLMETRY = ("opentelemetry.instrumentation.anthropic", "0.47.0")
OPENAI_SDK = ("opentelemetry.instrumentation.openai_v2", "2.1b0")
LANGCHAIN = ("openinference.instrumentation.langchain", "0.1.50")
APP = ("app", "1.0")
# claude-sonnet-4-5: $3/1M in, $15/1M out. 1000 in × 3 + 100 out × 15 = 4,500 µ$ = 4,500,000 n$.
SONNET_CALL_NUSD = 4_500_000
GPT4O_CALL_NUSD = 3_500_000  # 1000 in × $2.50/1M + 100 out × $10/1M


def app_root(span_id: int = 1, start: int = 0, end: int = 2000) -> tuple[Span, tuple[str, str]]:
    return make_span(TRACE, span_id, None, "POST /ask", {"app.llm.feature": "ask"},
                     start_ns=T0 + start * MS, end_ns=T0 + end * MS, kind=2), APP


def anthropic_native(span_id: int, parent: int | None, start: int = 12, end: int = 880, response_id: str | None = "msg_01",
                     usage: bool = True, error: bool = False) -> tuple[Span, tuple[str, str]]:
    """The anthropic SDK's own GenAI span."""
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                             "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.response.model": "claude-sonnet-4-5"}
    if response_id:
        attrs["gen_ai.response.id"] = response_id
    if usage:
        attrs.update({"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100})
    if error:
        attrs["error.type"] = "anthropic.RateLimitError"
        attrs["http.response.status_code"] = 429
    return make_span(TRACE, span_id, parent, "chat claude-sonnet-4-5", attrs, start_ns=T0 + start * MS,
                     end_ns=T0 + end * MS, status_code=2 if error else 0), NATIVE


def anthropic_instrumented(span_id: int, parent: int | None, start: int = 10, end: int = 900,
                           response_id: str | None = "msg_01", error: bool = False) -> tuple[Span, tuple[str, str]]:
    """OpenLLMetry's span of the same call: a sibling of the SDK's own span, both with usage."""
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.system": "anthropic",
                             "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.response.model": "claude-sonnet-4-5",
                             "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}
    if response_id:
        attrs["gen_ai.response.id"] = response_id
    if error:
        attrs = {k: v for k, v in attrs.items() if "usage" not in k}
        attrs["error.type"] = "RateLimitError"
    return make_span(TRACE, span_id, parent, "anthropic.chat", attrs, start_ns=T0 + start * MS,
                     end_ns=T0 + end * MS, status_code=2 if error else 0), OPENLLMETRY


def openai_sdk(span_id: int, parent: int | None, start: int = 20, end: int = 900, response_id: str | None = None,
               stream: bool = False) -> tuple[Span, tuple[str, str]]:
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                             "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
                             "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}
    if response_id:
        attrs["gen_ai.response.id"] = response_id
    if stream:
        attrs["gen_ai.request.stream"] = True
    return make_span(TRACE, span_id, parent, "chat gpt-4o", attrs, start_ns=T0 + start * MS,
                     end_ns=T0 + end * MS), OPENAI_SDK


def langchain_llm(span_id: int, parent: int | None, start: int = 5, end: int = 950) -> tuple[Span, tuple[str, str]]:
    """LangChain's LLM span through OpenInference: never made current, so the SDK span is not below it."""
    attrs = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.provider": "openai",
             "llm.token_count.prompt": 1000, "llm.token_count.completion": 100}
    return make_span(TRACE, span_id, parent, "ChatOpenAI", attrs, start_ns=T0 + start * MS,
                     end_ns=T0 + end * MS), LANGCHAIN


def langchain_chain(span_id: int, parent: int | None, start: int = 2, end: int = 990) -> tuple[Span, tuple[str, str]]:
    return make_span(TRACE, span_id, parent, "RunnableSequence", {"openinference.span.kind": "CHAIN"},
                     start_ns=T0 + start * MS, end_ns=T0 + end * MS), LANGCHAIN


Scoped = tuple[Span, tuple[str, str]]


@pytest.fixture
def store(writer_db):
    """A real store file, opened for writing (tests/conftest.py)."""
    return writer_db


def write(db: sqlite3.Connection, normalizer: Normalizer, batches: list[list[Scoped]]) -> SpanWriter:
    """Each batch is one writer commit; within it, one request per instrumentation scope."""
    writer = SpanWriter(db)
    for batch in batches:
        rows: list = []
        resources: dict = {}
        scopes: dict = {}
        for scope in dict.fromkeys(scope for _, scope in batch):
            request = trace_request([span for span, s in batch if s == scope], scope=scope)
            r, res, sc, _ = normalizer.decode_traces(request, received_ns=T0 + 10**12)
            rows += r
            resources.update(res)
            scopes.update(sc)
        writer.write(rows, [], resources, scopes)
    return writer


def billed(db: sqlite3.Connection) -> dict[int, tuple[int, int | None]]:
    return {int.from_bytes(sid, "big"): (b, None if dup is None else int.from_bytes(dup, "big"))
            for sid, b, dup in db.execute("SELECT span_id, billed, duplicate_of FROM spans WHERE kind = 'llm'")}


def orders(spans: list[Scoped]) -> list[list[list[Scoped]]]:
    """Every arrival order, each as one batch and as one span per batch."""
    out = []
    for perm in itertools.permutations(spans):
        out.append([list(perm)])
        out.append([[s] for s in perm])
    return out


CASES = {
    # The SDK's own span and an instrumentation's, siblings under the app's span, same response id.
    "anthropic SDK span beside an instrumentation's": (
        [app_root(), anthropic_native(2, 1), anthropic_instrumented(3, 1)],
        {2: (1, None), 3: (0, 2)}, SONNET_CALL_NUSD),
    # The same without a response id on one side: told apart by layer and time containment.
    "anthropic SDK span beside an instrumentation's, one response id missing": (
        [app_root(), anthropic_native(2, 1, response_id=None), anthropic_instrumented(3, 1)],
        {2: (1, None), 3: (0, 2)}, SONNET_CALL_NUSD),
    # LangChain's span in a chain, the SDK's span a cousin under the app's root.
    "LangChain span and SDK span as cousins": (
        [app_root(), langchain_chain(2, 1), langchain_llm(3, 2), openai_sdk(4, 1)],
        {3: (0, 4), 4: (1, None)}, GPT4O_CALL_NUSD),
    "LangChain span and a streaming SDK span as cousins": (
        [app_root(), langchain_chain(2, 1), langchain_llm(3, 2), openai_sdk(4, 1, stream=True)],
        {3: (0, 4), 4: (1, None)}, GPT4O_CALL_NUSD),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_call_is_billed_once_in_every_arrival_order(case, store, normalizer):
    spans, expected, cost = CASES[case]
    for batches in orders(spans):
        store.execute("DELETE FROM spans")
        store.execute("DELETE FROM traces")
        store.execute("DELETE FROM rollups")
        write(store, normalizer, batches)
        assert billed(store) == expected, [[s.name for s, _ in b] for b in batches]
        totals = rollup_totals(store)[()]
        assert totals["calls"] == 1
        assert totals["tokens"]["input"] == 1000 and totals["tokens"]["output"] == 100
        assert totals["cost_nusd"] == cost
        llm_calls, trace_cost = store.execute("SELECT llm_calls, cost_nusd FROM traces").fetchone()
        assert (llm_calls, trace_cost) == (1, cost)


def test_a_429_seen_by_both_spans_is_one_rate_limit_error(store, normalizer):
    spans = [app_root(), anthropic_native(2, 1, response_id=None, usage=False, error=True),
             anthropic_instrumented(3, 1, response_id=None, error=True)]
    for batches in orders(spans):
        for table in ("spans", "traces", "rollups"):
            store.execute(f"DELETE FROM {table}")
        write(store, normalizer, batches)
        totals = rollup_totals(store)[()]
        assert totals["calls"] == 1
        assert totals["errors"]["api"] == 1
        assert totals["api_by_class"].get("rate_limit") == 1
        assert store.execute("SELECT errors_api FROM traces").fetchone()[0] == 1


def test_two_concurrent_calls_of_one_model_stay_two(store, normalizer):
    # Same library, same model, overlapping windows, different responses: two calls.
    spans = [app_root(), openai_sdk(2, 1, start=10, end=900, response_id="chatcmpl-a"),
             openai_sdk(3, 1, start=20, end=800, response_id="chatcmpl-b")]
    write(store, normalizer, [spans])
    assert billed(store) == {2: (1, None), 3: (1, None)}
    assert rollup_totals(store)[()]["calls"] == 2


def test_a_framework_span_is_matched_to_its_own_call_not_a_concurrent_one(store, normalizer):
    # LangChain's call (5–950 ms) and its SDK span (20–900), plus another SDK call of the same model
    # made directly by the app at the same time (300–600): three spans, two calls.
    spans = [app_root(), langchain_chain(2, 1), langchain_llm(3, 2), openai_sdk(4, 1),
             openai_sdk(5, 1, start=300, end=600)]
    for batches in [[spans], [[s] for s in reversed(spans)]]:
        for table in ("spans", "traces", "rollups"):
            store.execute(f"DELETE FROM {table}")
        write(store, normalizer, batches)
        assert billed(store) == {3: (0, 4), 4: (1, None), 5: (1, None)}
        assert rollup_totals(store)[()]["calls"] == 2


def test_a_late_twin_moves_the_rollups_by_exact_deltas(store, normalizer):
    # Billed alone first (committed, rolled up), then its twin arrives: the rollups must end where
    # they would have been had both come together.
    write(store, normalizer, [[app_root(), langchain_chain(2, 1), langchain_llm(3, 2)]])
    first = rollup_totals(store)[()]
    assert (first["calls"], first["cost_nusd"]) == (1, GPT4O_CALL_NUSD)
    write(store, normalizer, [[openai_sdk(4, 1, response_id="chatcmpl-z")]])
    totals = rollup_totals(store)[()]
    assert (totals["calls"], totals["cost_nusd"], totals["tokens"]["input"]) == (1, GPT4O_CALL_NUSD, 1000)
    assert billed(store) == {3: (0, 4), 4: (1, None)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    layers=st.lists(st.lists(st.sampled_from(["native", "instrumented", "langchain"]), min_size=1, max_size=3,
                             unique=True), min_size=1, max_size=4),
    seed=st.randoms(use_true_random=False),
    one_per_batch=st.booleans(),
)
def test_any_set_of_duplicate_spans_of_one_call_bills_once(layers, seed, one_per_batch, tmp_path_factory,
                                                           normalizer):
    """Calls one after another, each seen by 1–3 layers (the SDK's own span, an instrumentation's, a
    framework's), shuffled and batched at random: every call bills once."""
    path = tmp_path_factory.mktemp("prop") / "p.db"
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    try:
        spans: list[Scoped] = [app_root(end=10_000)]
        next_id = 2
        for call, seen_by in enumerate(layers):
            base = 100 + call * 2000
            rid = f"msg_{call}"
            for layer in seen_by:
                if layer == "native":
                    spans.append(anthropic_native(next_id, 1, start=base + 20, end=base + 900, response_id=rid))
                elif layer == "instrumented":
                    spans.append(anthropic_instrumented(next_id, 1, start=base + 10, end=base + 950,
                                                        response_id=rid if call % 2 else None))
                else:
                    span, _ = anthropic_instrumented(next_id, 1, start=base, end=base + 990, response_id=None)
                    spans.append((span, LANGCHAIN))
                next_id += 1
        seed.shuffle(spans)
        batches = [[s] for s in spans] if one_per_batch else [spans[: len(spans) // 2], spans[len(spans) // 2:]]
        write(db, normalizer, [b for b in batches if b])
        totals = rollup_totals(db)[()]
        assert totals["calls"] == len(layers)
        assert totals["tokens"]["input"] == 1000 * len(layers)
        assert totals["cost_nusd"] == SONNET_CALL_NUSD * len(layers)
        assert db.execute("SELECT count(*) FROM spans WHERE billed = 1").fetchone()[0] == len(layers)
    finally:
        db.close()
        lock.release()


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_duplicate_is_marked_in_the_waterfall_and_the_span_detail(tmp_path, normalizer):
    """A person opening the trace sees which span is the billed call and which is its twin."""
    from llmobs_tui.app import LlmobsApp
    from llmobs_tui.widgets.waterfall import Waterfall
    from tests.test_tui import settle, text_of

    path = tmp_path / "dup.db"
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    write(db, normalizer, [[app_root(), langchain_chain(2, 1), langchain_llm(3, 2), openai_sdk(4, 1)]])
    db.close()
    lock.release()
    app = LlmobsApp(path, clock=lambda: T0 / 1e9 + 60, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        app.open_trace(TRACE.to_bytes(16, "big"))
        await settle(pilot)
        waterfall = app.screen.query_one(Waterfall)
        rows = "\n".join(waterfall.render_line(y).text for y in range(waterfall.size.height))
        assert any("ChatOpenAI" in line and " dup " in line for line in rows.splitlines()), rows
        while waterfall.selected.name != "ChatOpenAI":
            await pilot.press("down")
        await pilot.press("dollar_sign")
        await settle(pilot)
        cost = " ".join(text_of(app.screen.query_one("#detail-cost")).split())
        assert f"the same provider call as span {(4).to_bytes(8, 'big').hex()}" in cost


def _in_trace(scoped: Scoped, trace: int) -> Scoped:
    span, scope = scoped
    copy = Span()
    copy.CopyFrom(span)
    copy.trace_id = trace.to_bytes(16, "big")
    return copy, scope


def test_twins_in_two_traces_are_billed_once_by_response_id(store, normalizer):
    # OpenLLMetry never makes its span current: with no app span around the call, the SDK's own span
    # starts a trace of its own. Both carry the response id.
    native = _in_trace(anthropic_native(2, None), 0xA1)
    instrumented = _in_trace(anthropic_instrumented(3, None), 0xA2)
    other_call = _in_trace(anthropic_native(4, None, response_id="msg_other"), 0xA3)
    for batches in orders([native, instrumented, other_call]):
        for table in ("spans", "traces", "rollups"):
            store.execute(f"DELETE FROM {table}")
        write(store, normalizer, batches)
        assert billed(store) == {2: (1, None), 3: (0, 2), 4: (1, None)}, [[s.name for s, _ in b] for b in batches]
        totals = rollup_totals(store)[()]
        assert (totals["calls"], totals["cost_nusd"]) == (2, 2 * SONNET_CALL_NUSD)
        assert store.execute("SELECT sum(llm_calls), sum(cost_nusd) FROM traces").fetchone() == (2, 2 * SONNET_CALL_NUSD)


def test_a_twin_in_another_trace_found_after_the_cache_forgot_it(tmp_path, normalizer):
    path = tmp_path / "evicted.db"
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    try:
        write(db, normalizer, [[_in_trace(anthropic_instrumented(3, None), 0xA2)]])
        # A new writer (a restarted serve) knows nothing in memory: the twin is found in the store.
        write(db, normalizer, [[_in_trace(anthropic_native(2, None), 0xA1)]])
        assert billed(db) == {2: (1, None), 3: (0, 2)}
        assert rollup_totals(db)[()]["calls"] == 1
        write(db, normalizer, [[_in_trace(anthropic_instrumented(3, None), 0xA2)]])  # a retry: no change
        assert rollup_totals(db)[()]["calls"] == 1
    finally:
        db.close()
        lock.release()
