"""The writer's cross-span rules hold whatever order spans arrive in (design §2 rules 3, 6, 7).

Spans go through the real normalizer into a real SQLite file; assertions read the stored rows,
the trace summary and the rollups that every dashboard and `report` read.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.normalize import Normalizer
from store.queries import grouped_rollups
from store.writer import SpanWriter
from tests.otlp_factory import T0, make_span, trace_request

MS = 1_000_000
TRACE = 0xABC
GPT4O_CALL_NUSD = 3_500_000  # 1000 in × $2.50/1M + 100 out × $10/1M = $0.0035


def sdk_call(span_id: int, parent: int | None, start: int = 10, end: int = 900, **extra: Any):
    """An OpenAI SDK span as the OTel contrib instrumentation emits it (v1.30 keys)."""
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
             "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100, **extra}
    return make_span(TRACE, span_id, parent, "chat gpt-4o", attrs, start_ns=T0 + start * MS, end_ns=T0 + end * MS)


def langchain_llm(span_id: int, parent: int | None, start: int = 5, end: int = 950):
    """A framework LLM span (OpenInference) wrapping the SDK call and repeating its usage."""
    attrs = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.provider": "openai",
             "llm.token_count.prompt": 1000, "llm.token_count.completion": 100}
    return make_span(TRACE, span_id, parent, "ChatOpenAI", attrs, start_ns=T0 + start * MS, end_ns=T0 + end * MS)


def chain(span_id: int, parent: int | None, name: str = "chain", start: int = 1, end: int = 990, **attrs: Any):
    return make_span(TRACE, span_id, parent, name, {"openinference.span.kind": "CHAIN", **attrs},
                     start_ns=T0 + start * MS, end_ns=T0 + end * MS)


def root(span_id: int = 1, feature: str | None = "checkout", tenant: str | None = "acme", name: str = "POST /checkout"):
    attrs = {}
    if feature:
        attrs["app.llm.feature"] = feature
    if tenant:
        attrs["app.llm.tenant.id"] = tenant
    return make_span(TRACE, span_id, None, name, attrs, start_ns=T0, end_ns=T0 + 1000 * MS)


def ingest(writer: SpanWriter, normalizer: Normalizer, *batches: list) -> None:
    for batch in batches:
        rows, resources, scopes, _ = normalizer.decode_traces(trace_request(batch), received_ns=T0 + 10**12)
        writer.write(rows, [], resources, scopes)


def span_state(db: sqlite3.Connection) -> dict[int, tuple]:
    return {
        int.from_bytes(sid, "big"): (billed, feature, tenant, error_class)
        for sid, billed, feature, tenant, error_class in db.execute(
            "SELECT span_id, billed, feature, tenant, error_class FROM spans")
    }


def trace_row(db: sqlite3.Connection) -> dict[str, Any]:
    db.row_factory = sqlite3.Row
    row = db.execute("SELECT * FROM traces WHERE trace_id = ?", (TRACE.to_bytes(16, "big"),)).fetchone()
    db.row_factory = None
    out = dict(row)
    out.pop("updated_ns")
    return out


def rollup_totals(db: sqlite3.Connection, by: tuple[str, ...] = ()) -> dict[tuple, dict[str, Any]]:
    """Rollup counters per group, read through the same query `report` uses."""
    result = {}
    for group in grouped_rollups(db, T0 // 10**9 - 3600, T0 // 10**9 + 3600, list(by)):
        report = group.as_report()
        result[tuple(group.key.values())] = {
            "calls": report["calls"],
            "errors": {k: v for k, v in report["errors"].items() if k != "api_by_class"},
            "api_by_class": report["errors"]["api_by_class"],
            "tokens": report["tokens"],
            "cost_nusd": group["cost_nusd"],
            "unpriced": report["unpriced_calls"],
            "latency_count": sum(group.latency.values()),
        }
    return {k: v for k, v in result.items() if v["calls"] or any(v["errors"].values())}


# --- bill each call once ----------------------------------------------------------------------

WRAPPED = [root(), chain(2, 1), langchain_llm(3, 2), sdk_call(4, 3)]


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_wrapped_call_is_billed_once_in_every_arrival_order(writer, writer_db, normalizer, order):
    ingest(writer, normalizer, *[[WRAPPED[i]] for i in order])
    states = span_state(writer_db)
    assert states[4][0] == 1, "the SDK span (deepest llm) is the billed call"
    assert states[3][0] == 0, "the framework wrapper is not billed again"
    totals = rollup_totals(writer_db)
    assert list(totals.values()) == [{
        "calls": 1, "errors": {"api": 0, "validation": 0, "guardrail": 0},
        "api_by_class": dict.fromkeys(("rate_limit", "provider", "client", "timeout", "network", "other"), 0),
        "tokens": {"input": 1000, "output": 100, "cache_read": 0, "cache_write": 0, "reasoning": 0},
        "cost_nusd": GPT4O_CALL_NUSD, "unpriced": 0, "latency_count": 1,
    }]
    trace = trace_row(writer_db)
    assert (trace["llm_calls"], trace["cost_nusd"], trace["input_tokens"], trace["spans"]) == (1, GPT4O_CALL_NUSD, 1000, 4)


def test_wrapper_is_unbilled_when_the_missing_middle_span_arrives_last(writer, writer_db, normalizer):
    # llm(3) → chain(5) → llm(4): until chain 5 arrives nothing links the two calls.
    outer = langchain_llm(3, 1)
    middle = chain(5, 3, name="retry")
    inner = sdk_call(4, 5)
    ingest(writer, normalizer, [root(), outer], [inner])
    assert rollup_totals(writer_db)[()]["calls"] == 2
    ingest(writer, normalizer, [middle])
    assert span_state(writer_db)[3][0] == 0
    totals = rollup_totals(writer_db)[()]
    assert (totals["calls"], totals["cost_nusd"], totals["latency_count"]) == (1, GPT4O_CALL_NUSD, 1)
    assert trace_row(writer_db)["llm_calls"] == 1


def test_agent_span_with_aggregated_usage_is_not_billed(writer, writer_db, normalizer):
    agent = make_span(TRACE, 2, 1, "invoke_agent planner", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
        "gen_ai.usage.input_tokens": 2000, "gen_ai.usage.output_tokens": 200, "gen_ai.request.model": "gpt-4o"},
        start_ns=T0, end_ns=T0 + 990 * MS)
    ingest(writer, normalizer, [root(), agent, sdk_call(3, 2), sdk_call(4, 2, start=500, end=950)])
    totals = rollup_totals(writer_db)[()]
    assert totals["calls"] == 2
    assert totals["tokens"]["input"] == 2000  # the two calls, not the agent's sum on top
    assert totals["cost_nusd"] == 2 * GPT4O_CALL_NUSD


def test_parallel_sibling_calls_are_both_billed(writer, writer_db, normalizer):
    ingest(writer, normalizer, [root(), chain(2, 1), sdk_call(3, 2, 10, 500), sdk_call(4, 2, 10, 600)])
    assert rollup_totals(writer_db)[()]["calls"] == 2


# --- dimensions inherited from the root ------------------------------------------------------------


def test_children_inherit_root_feature_and_tenant_when_the_root_arrives_last(writer, writer_db, normalizer):
    ingest(writer, normalizer, [chain(2, 1), sdk_call(3, 2)])
    # Before the root: the call is counted, under no feature.
    assert list(rollup_totals(writer_db, ("feature", "tenant"))) == [(None, None)]
    ingest(writer, normalizer, [root(feature="checkout", tenant="acme")])
    assert span_state(writer_db)[3][1:3] == ("checkout", "acme")
    totals = rollup_totals(writer_db, ("feature", "tenant"))
    assert list(totals) == [("checkout", "acme")], "the call moved out of the no-feature group"
    assert totals[("checkout", "acme")]["calls"] == 1
    trace = trace_row(writer_db)
    assert (trace["feature"], trace["tenant"], trace["root_known"], trace["root_name"]) == \
        ("checkout", "acme", 1, "POST /checkout")


def test_own_feature_wins_over_the_root_and_root_name_is_the_last_resort(writer, writer_db, normalizer):
    ingest(writer, normalizer, [root(feature=None, tenant=None, name="nightly-batch"),
                                sdk_call(2, 1), sdk_call(3, 1, **{"app.llm.feature": "summaries"})])
    states = span_state(writer_db)
    assert states[2][1] == "nightly-batch"
    assert states[3][1] == "summaries"


def test_trace_without_its_root_yet_shows_a_provisional_root(writer, writer_db, normalizer):
    ingest(writer, normalizer, [chain(2, 1, name="agent loop", start=3), sdk_call(3, 2)])
    trace = trace_row(writer_db)
    assert (trace["root_known"], trace["root_name"]) == (0, "agent loop")


# --- validation and guardrail errors ---------------------------------------------------------------


def validation_step(span_id: int, parent: int, start: int = 905, end: int = 910):
    return make_span(TRACE, span_id, parent, "parse_output", {"error.type": "pydantic.ValidationError"},
                     start_ns=T0 + start * MS, end_ns=T0 + end * MS, status_code=2)


@pytest.mark.parametrize("child_first", [True, False])
def test_failed_validation_child_marks_its_call(writer, writer_db, normalizer, child_first):
    batches = [[validation_step(5, 3, start=880, end=890)], [root(), sdk_call(3, 1)]]
    ingest(writer, normalizer, *(batches if child_first else reversed(batches)))
    assert span_state(writer_db)[3][3] == "validation"
    totals = rollup_totals(writer_db)[()]
    assert totals["calls"] == 1 and totals["errors"]["validation"] == 1
    assert trace_row(writer_db)["errors_validation"] == 1


@pytest.mark.parametrize("step_first", [True, False])
def test_failed_validation_sibling_after_the_call_marks_that_call(writer, writer_db, normalizer, step_first):
    earlier = sdk_call(3, 1, start=10, end=400)
    judged = sdk_call(4, 1, start=410, end=900)
    step = validation_step(5, 1, start=905, end=910)
    batches = [[step], [root(), earlier, judged]]
    ingest(writer, normalizer, *(batches if step_first else reversed(batches)))
    states = span_state(writer_db)
    assert states[4][3] == "validation" and states[3][3] is None
    assert rollup_totals(writer_db)[()]["errors"]["validation"] == 1


def test_validation_failure_with_no_call_is_still_counted(writer, writer_db, normalizer):
    ingest(writer, normalizer, [root(), validation_step(5, 1)])
    totals = rollup_totals(writer_db)[()]
    assert (totals["calls"], totals["errors"]["validation"]) == (0, 1)


def test_api_error_is_counted_with_its_subclass_and_kept_out_of_latency(writer, writer_db, normalizer):
    failed = make_span(TRACE, 3, 1, "chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                                                    "gen_ai.request.model": "gpt-4o", "error.type": "RateLimitError"},
                       start_ns=T0, end_ns=T0 + 20 * MS, status_code=2)
    ingest(writer, normalizer, [root(), failed, sdk_call(4, 1)])
    totals = rollup_totals(writer_db)[()]
    assert totals["calls"] == 2
    assert totals["errors"]["api"] == 1 and totals["api_by_class"]["rate_limit"] == 1
    assert totals["latency_count"] == 1, "a 20 ms 429 must not flatter the latency percentiles"


@pytest.mark.parametrize("log_first", [True, False])
def test_choice_log_with_content_filter_joins_its_span_in_either_order(writer, writer_db, normalizer, log_first):
    from tests.otlp_factory import log_record, logs_request

    call = sdk_call(3, 1)
    record = log_record(trace_id=TRACE, span_id=3, event_name="gen_ai.choice",
                        body={"index": 0, "finish_reason": "content_filter", "message": {"role": "assistant"}})

    def send_log():
        rows, resources, scopes, _ = normalizer.decode_logs(logs_request([record]), received_ns=T0 + 10**12)
        writer.write([], rows, resources, scopes)

    if log_first:
        send_log()
        ingest(writer, normalizer, [root(), call])
    else:
        ingest(writer, normalizer, [root(), call])
        send_log()
    assert span_state(writer_db)[3][3] == "guardrail"
    assert rollup_totals(writer_db)[()]["errors"]["guardrail"] == 1


def test_failed_guardrail_span_is_a_guardrail_error_but_not_a_call(writer, writer_db, normalizer):
    guard = make_span(TRACE, 6, 1, "input moderation", {"openinference.span.kind": "GUARDRAIL"},
                      start_ns=T0, end_ns=T0 + 5 * MS, status_code=2)
    ingest(writer, normalizer, [root(), guard, sdk_call(3, 1)])
    totals = rollup_totals(writer_db)[()]
    assert (totals["calls"], totals["errors"]["guardrail"]) == (1, 1)


# --- idempotence, cache eviction, failed commits ------------------------------------------------------


def test_a_retried_export_is_not_counted_twice(writer, writer_db, normalizer):
    batch = [root(), sdk_call(3, 1)]
    ingest(writer, normalizer, batch, batch)
    assert writer.stats.duplicates == 2
    assert writer.stats.conflicting == 0, "a retry is the same span: no conflict"
    assert writer_db.execute("SELECT count(*) FROM spans").fetchone()[0] == 2
    assert rollup_totals(writer_db)[()]["calls"] == 1


def test_a_reused_span_id_with_other_content_keeps_the_first_and_is_counted(writer, writer_db, normalizer):
    first = sdk_call(3, 1)
    other = make_span(TRACE, 3, 1, "something else entirely", {}, start_ns=T0 + 5 * MS, end_ns=T0 + 9 * MS)
    ingest(writer, normalizer, [root(), first], [other])
    # ...and again from a fresh writer, which must find the stored span to compare with.
    fresh = SpanWriter(writer_db)
    ingest(fresh, normalizer, [other])
    assert (writer.stats.duplicates, writer.stats.conflicting) == (1, 1)
    assert (fresh.stats.duplicates, fresh.stats.conflicting) == (1, 1)
    names = [r[0] for r in writer_db.execute("SELECT name FROM spans WHERE span_id = ?", ((3).to_bytes(8, "big"),))]
    assert names == [first.name]


def test_traces_evicted_from_memory_are_reloaded_correctly(writer_db, normalizer):
    writer = SpanWriter(writer_db, trace_cache_spans=1)
    other = make_span(0xDEF, 1, None, "other", {}, start_ns=T0, end_ns=T0 + MS)
    for batch in ([sdk_call(4, 3)], [other], [langchain_llm(3, 2)], [other], [chain(2, 1)], [root()]):
        rows, resources, scopes, _ = normalizer.decode_traces(trace_request(batch), received_ns=T0 + 10**12)
        writer.write(rows, [], resources, scopes)
    states = span_state(writer_db)
    assert states[4][0] == 1 and states[3][0] == 0
    assert states[4][1] == "checkout"
    assert list(rollup_totals(writer_db, ("feature",))) == [("checkout",)]
    assert rollup_totals(writer_db)[()]["calls"] == 1


def test_a_failed_commit_stores_nothing_and_a_retry_counts_once(writer, writer_db, normalizer):
    ingest(writer, normalizer, [root()])
    pages = writer_db.execute("PRAGMA page_count").fetchone()[0]
    writer_db.execute(f"PRAGMA max_page_count = {pages}")  # the "disk" is now full
    big = sdk_call(3, 1, **{"gen_ai.input.messages": os.urandom(100_000).hex()})  # incompressible
    rows, resources, scopes, _ = normalizer.decode_traces(trace_request([big]), received_ns=T0 + 10**12)
    with pytest.raises(sqlite3.OperationalError, match="full"):
        writer.write(rows, [], resources, scopes)
    assert writer_db.execute("SELECT count(*) FROM spans").fetchone()[0] == 1
    writer_db.execute("PRAGMA max_page_count = 1073741823")
    writer.write(rows, [], resources, scopes)
    assert rollup_totals(writer_db)[()]["calls"] == 1
    assert trace_row(writer_db)["spans"] == 2


def test_reprice_moves_rollups_and_trace_totals_by_the_exact_delta(writer, writer_db, normalizer):
    ingest(writer, normalizer, [root(), sdk_call(3, 1), sdk_call(4, 1, **{"gen_ai.request.model": "mystery-1"})])
    before = rollup_totals(writer_db)[()]
    assert (before["cost_nusd"], before["unpriced"]) == (GPT4O_CALL_NUSD, 1)

    def doubled(provider, response_model, request_model, tokens):
        if request_model == "gpt-4o":
            return "user/gpt-4o", 2 * GPT4O_CALL_NUSD
        return "user/mystery", 1_000
    scanned, changed = writer.reprice(doubled)
    assert (scanned, changed) == (2, 2)
    after = rollup_totals(writer_db)[()]
    assert (after["cost_nusd"], after["unpriced"]) == (2 * GPT4O_CALL_NUSD + 1_000, 0)
    assert trace_row(writer_db)["cost_nusd"] == 2 * GPT4O_CALL_NUSD + 1_000


# --- the property: arrival order and batching never change the numbers ------------------------------


@st.composite
def traces(draw):
    """A random trace: agents, chains, wrapper LLM spans, SDK calls, validation steps, guardrails."""
    n = draw(st.integers(min_value=2, max_value=14))
    spans = [root(feature=draw(st.sampled_from(["checkout", None])), tenant=draw(st.sampled_from(["acme", None])))]
    for span_id in range(2, n + 1):
        parent = draw(st.integers(min_value=1, max_value=span_id - 1))
        kind = draw(st.sampled_from(["chain", "llm_wrapper", "sdk", "sdk", "validation", "guardrail", "sdk_feature"]))
        start = draw(st.integers(min_value=0, max_value=500))
        end = start + draw(st.integers(min_value=1, max_value=400))
        if kind == "chain":
            spans.append(chain(span_id, parent, start=start, end=end))
        elif kind == "llm_wrapper":
            spans.append(langchain_llm(span_id, parent, start=start, end=end))
        elif kind in ("sdk", "sdk_feature"):
            extra = {"app.llm.feature": "search"} if kind == "sdk_feature" else {}
            if draw(st.booleans()):
                extra["error.type"] = draw(st.sampled_from(["RateLimitError", "InternalServerError"]))
            spans.append(sdk_call(span_id, parent, start=start, end=end, **extra))
        elif kind == "validation":
            spans.append(validation_step(span_id, parent, start=start, end=end))
        else:
            spans.append(make_span(TRACE, span_id, parent, "guard", {"openinference.span.kind": "GUARDRAIL"},
                                   start_ns=T0 + start * MS, end_ns=T0 + end * MS,
                                   status_code=draw(st.sampled_from([0, 2]))))
    return spans


def _outcome(db: sqlite3.Connection) -> tuple:
    return span_state(db), trace_row(db), rollup_totals(db, ("feature", "tenant", "model"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spans=traces(), data=st.data())
def test_any_arrival_order_and_batching_gives_the_same_numbers(tmp_path_factory, normalizer, spans, data):
    from store.connection import open_writer

    def run(batches, cache):
        path = tmp_path_factory.mktemp("prop") / "p.db"
        db = open_writer(path)
        writer = SpanWriter(db, trace_cache_spans=cache)
        ingest(writer, normalizer, *batches)
        try:
            return _outcome(db)
        finally:
            db.close()

    reference = run([spans], 10**6)
    order = data.draw(st.permutations(spans))
    cuts = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=len(spans) - 1), max_size=len(spans))))
    batches = [list(order[a:b]) for a, b in zip([0, *cuts], [*cuts, len(spans)])]
    cache = data.draw(st.sampled_from([1, 3, 10**6]))
    assert run(batches, cache) == reference


def test_the_twin_lookup_seeks_the_response_id_and_the_layer(writer_db):
    """A response id that many calls reuse (a mock server's, a replay's) must not make the twin lookup
    read every span sharing it: the plan seeks both columns of spans_by_response."""
    from store.writer import twins_query

    plan = " ".join(row[3] for row in writer_db.execute("EXPLAIN QUERY PLAN " + twins_query(3), ("a", "b", "c", 1)))
    assert "spans_by_response (response_id=? AND call_layer=?)" in plan, plan


def _minute_of_traffic(minute: int, late: bool = False) -> list:
    """Calls in 12 dimension sets (feature × tenant × model) during one minute after T0, tool calls too;
    `late`: spans of other traces in that same minute, arriving after later minutes were written."""
    spans = []
    for n in range(12):
        trace = (minute + 1) * 1000 + n + (500 if late else 0)
        start = T0 + minute * 60_000 * MS + n * 4_000 * MS
        model = ("gpt-4o", "gpt-4o-mini")[n % 2]
        spans.append(make_span(trace, 1, None, "POST /ask", {"app.llm.feature": f"f{n % 3}",
                                                             "app.llm.tenant.id": f"t{n % 2}"},
                               start_ns=start, end_ns=start + 900 * MS))
        spans.append(make_span(trace, 2, 1, f"chat {model}", {
            "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": 100 + minute, "gen_ai.usage.output_tokens": 10 + n},
            start_ns=start + 10 * MS, end_ns=start + (200 + 13 * n + minute) * MS))
        spans.append(make_span(trace, 3, 1, "execute_tool lookup", {"gen_ai.operation.name": "execute_tool",
                                                                    "gen_ai.tool.name": f"tool{n % 4}"},
                               start_ns=start + 300 * MS, end_ns=start + (320 + n) * MS))
    return spans


def _rollup_tables(db: sqlite3.Connection) -> tuple[list, list]:
    return (db.execute("SELECT * FROM rollups ORDER BY res, bucket, dims_id").fetchall(),
            db.execute("SELECT * FROM tool_rollups ORDER BY res, bucket, tool").fetchall())


def test_the_rollup_caches_keep_recent_buckets_only_and_late_spans_still_add_up(tmp_path, normalizer, monkeypatch):
    """Over an hour of traffic the writer keeps the accumulators of the last ~10 minutes only (not every
    bucket until a count cap: the writer's memory crept for over an hour); spans arriving late into a bucket
    dropped from the cache are added to its stored row, exactly as a writer that never drops any adds them."""
    from store import writer as writer_module
    from store.connection import WriterLock, open_writer

    def run(path, trim: bool) -> tuple[tuple[list, list], list[int]]:
        monkeypatch.setattr(writer_module, "ROLLUP_TRIM_AT", 50 if trim else 10**9)
        lock = WriterLock(path)
        lock.acquire()
        db = open_writer(path)
        try:
            writer = SpanWriter(db)
            sizes = []  # cached accumulators after each minute
            for minute in range(60):
                ingest(writer, normalizer, _minute_of_traffic(minute))
                sizes.append(len(writer._rollups) + len(writer._tool_rollups))
                if minute in (30, 59):  # late spans into minutes 3 and 25 (out of the cache by then)
                    ingest(writer, normalizer, _minute_of_traffic(minute - 27, late=True))
            return _rollup_tables(db), sizes
        finally:
            db.close()
            lock.release()

    trimmed, trimmed_sizes = run(tmp_path / "trimmed.db", trim=True)
    kept, kept_sizes = run(tmp_path / "kept.db", trim=False)
    assert trimmed == kept and len(kept[0]) > 500 and len(kept[1]) > 200
    # Untrimmed, every bucket of the hour stays (minute 59 holds twice minute 30's); trimmed, the last ten
    # minutes' worth and the trims' headroom: no more in the second half hour than in the first.
    assert kept_sizes[59] > 1.8 * kept_sizes[30] > 800
    assert max(trimmed_sizes[40:]) <= 1.1 * max(trimmed_sizes[15:40]) < kept_sizes[59] / 2


def test_a_span_from_a_clock_ahead_does_not_push_the_recent_buckets_out_of_the_cache():
    from store.writer import ROLLUP_RECENT_S, _recent_entries

    now_s = 1_800_000_000
    cache = {(60, now_s - 60 * m, 1): m for m in range(30)}  # the last half hour, a minute apart
    cache[(60, now_s + 3000, 1)] = "ahead"  # a span from a clock 50 minutes fast
    kept = _recent_entries(cache, 10_000, 5_000, now_s)
    assert {key[1] for key in kept} >= {now_s - 60 * m for m in range(ROLLUP_RECENT_S // 60)}
    assert (60, now_s - 60 * 29, 1) not in kept
    # A replay of old traffic is measured against its own newest bucket, not against the clock.
    old = {(60, 1_700_000_000 - 60 * m, 1): m for m in range(30)}
    assert len(_recent_entries(old, 10_000, 5_000, now_s)) == ROLLUP_RECENT_S // 60 + 1


def _burst_and_twins() -> list:
    """Twenty calls in one second and one dimension set (some failed, a few streamed), and a framework
    LLM span wrapping an SDK call (billing-once moves the call from one to the other)."""
    spans = []
    for n in range(20):
        trace = 90_000 + n
        start = T0 + 7_000 * MS + n * 40 * MS
        spans.append(make_span(trace, 1, None, "POST /ask", {"app.llm.feature": "burst"},
                               start_ns=start, end_ns=start + 30 * MS))
        first_token = [("gen_ai.content.completion.chunk", start + 12 * MS, {})] if n % 5 == 0 else []
        spans.append(make_span(trace, 2, 1, "chat gpt-4o", {
            "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 50 + n, "gen_ai.usage.output_tokens": 5 + n},
            start_ns=start + MS, end_ns=start + (20 + n) * MS, events=first_token,
            status_code=2 if n % 7 == 3 else 0, status_message="rate limited" if n % 7 == 3 else ""))
    return [*spans, root(), langchain_llm(2, 1), sdk_call(3, 2)]


def test_rollups_are_the_same_whether_spans_come_in_one_transaction_or_one_each(tmp_path, normalizer):
    """The writer sums a transaction's contributions per second and dimension set before it adds them to
    the rollup rows: the rows (every counter and histogram) are what one span per transaction gives, in
    either order, with the billing-once move inside the one transaction."""
    from store.connection import WriterLock, open_writer

    spans = _burst_and_twins() + [span for minute in range(3) for span in _minute_of_traffic(minute)]

    def run(path, batches: list[list]) -> tuple[list, list]:
        lock = WriterLock(path)
        lock.acquire()
        db = open_writer(path)
        try:
            writer = SpanWriter(db)
            ingest(writer, normalizer, *batches)
            # By dimension set, not its id (ids are handed out in arrival order); rows a late root or twin
            # moved everything out of stay at zero, so the reversed arrival has more of them.
            by_dims = db.execute(
                "SELECT r.*, d.service, d.provider, d.model, d.operation, d.feature, d.tenant, d.prompt_id, "
                "d.prompt_version, d.variant FROM rollups r LEFT JOIN dims d ON d.id = r.dims_id "
                "WHERE r.calls != 0 OR r.errors_guardrail != 0 OR r.errors_validation != 0").fetchall()
            return sorted(row[:2] + row[3:] for row in by_dims), _rollup_tables(db)[1]
        finally:
            db.close()
            lock.release()

    together = run(tmp_path / "together.db", [spans])
    one_each = run(tmp_path / "one_each.db", [[span] for span in spans])
    reversed_one_each = run(tmp_path / "reversed.db", [[span] for span in reversed(spans)])
    assert together == one_each == reversed_one_each
    burst_second = (T0 + 7_000 * MS) // 10**9
    fine_total = [row for row in together[0] if row[:2] == (10, burst_second - burst_second % 10)]
    assert len(fine_total) == 1 and fine_total[0][2] > 20 and len(together[0]) > 40
