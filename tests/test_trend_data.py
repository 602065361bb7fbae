"""What the charts, Trends, the drift panel and change markers read (m007), kept by the writer:
the variant dimension, refusals, per-call token-length histograms, tool rollups and `changes`.

Spans go through the real Normalizer into a real SQLite store through the real SpanWriter; every
figure is checked against SQL over the stored spans (the ground truth), not the code's own output.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from llmobs_tui.cli import main
from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store import histogram
from store.changes import MAX_CHANGES, ChangeTracker, changes_query, parse_changes
from store.connection import WriterLock, open_writer
from store.models import FLAG_REFUSAL
from store.pricing import record_price_rows
from store.queries import grouped_rollups
from store.retention import enforce
from store.writer import SpanWriter
from tests.otlp_factory import T0, log_record, logs_request, make_span, trace_request

MS = 1_000_000
NS = 10**9
# The token-length histograms, like every rollup histogram, count in log buckets.
REFUSED = f"(flags & {FLAG_REFUSAL} != 0 OR finish_reason = 'content_filter')"


def chat(trace: int, span: int, parent: int | None, start_ms: int = 10, end_ms: int = 900, *,
         model: str = "gpt-4o", served: str | None = None, inp: int | None = 1000, out: int | None = 100,
         status: int = 0, **attrs: Any):
    values: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                              "gen_ai.request.model": model}
    if served:
        values["gen_ai.response.model"] = served
    if inp is not None:
        values["gen_ai.usage.input_tokens"] = inp
    if out is not None:
        values["gen_ai.usage.output_tokens"] = out
    values.update(attrs)
    return make_span(trace, span, parent, f"chat {model}", values, start_ns=T0 + start_ms * MS,
                     end_ns=T0 + end_ms * MS, status_code=status,
                     status_message="Error code: 429 - rate limited" if status == 2 else "")


def root(trace: int, span: int = 1, start_ms: int = 0, **attrs: Any):
    return make_span(trace, span, None, "POST /ask", {"app.llm.feature": "ask", **attrs},
                     start_ns=T0 + start_ms * MS, end_ns=T0 + (start_ms + 1000) * MS, kind=2)


def tool(trace: int, span: int, parent: int | None, name: str | None, start_ms: int, dur_ms: int, status: int = 0):
    attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool"}
    if name is not None:
        attrs["gen_ai.tool.name"] = name
    # No name at all: the tool is '' (a named span would give its name: execute_tool NAME).
    return make_span(trace, span, parent, f"execute_tool {name}" if name else "", attrs,
                     start_ns=T0 + start_ms * MS, end_ns=T0 + (start_ms + dur_ms) * MS, status_code=status,
                     status_message="boom" if status == 2 else "")


def ingest(writer: SpanWriter, normalizer: Normalizer, spans: list, *, service: str = "svc",
           resource: dict[str, Any] | None = None, received_ns: int = T0 + 10**12) -> None:
    rows, resources, scopes, rejections = normalizer.decode_traces(
        trace_request(spans, service=service, resource_attrs=resource), received_ns=received_ns)
    assert rejections.count == 0, rejections.message()
    writer.write(rows, [], resources, scopes)


def total_row(db: sqlite3.Connection, columns: str, res: int = 60) -> tuple:
    return db.execute(f"SELECT {columns} FROM rollups WHERE res = ? AND dims_id = 0 AND bucket = ?",
                      (res, T0 // NS - T0 // NS % res)).fetchone()


def billed_truth(db: sqlite3.Connection, expression: str, where: str = "1") -> Any:
    return db.execute(f"SELECT {expression} FROM spans WHERE billed = 1 AND {where}").fetchone()[0]


# --- the variant dimension --------------------------------------------------------------------


def test_variant_comes_from_the_span_then_the_resource_and_is_inherited_from_the_root(writer, writer_db,
                                                                                      normalizer):
    # Trace 1: the root names the variant; its call inherits it, even though the root arrives last.
    ingest(writer, normalizer, [chat(1, 2, 1)])
    ingest(writer, normalizer, [root(1, **{"app.experiment.variant": "treatment"})])
    # Trace 2: only the resource names one (feature-flag semconv); a span's own key wins over it.
    ingest(writer, normalizer, [root(2), chat(2, 2, 1), chat(2, 3, 1, **{"llmobs.variant": "span-own"})],
           resource={"feature_flag.result.variant": "control"})
    # Trace 3: none at all.
    ingest(writer, normalizer, [root(3), chat(3, 2, 1)])
    spans = {(int.from_bytes(t, "big"), int.from_bytes(s, "big")): (own, eff) for t, s, own, eff in writer_db.execute(
        "SELECT trace_id, span_id, own_variant, variant FROM spans")}
    assert spans[(1, 1)] == ("treatment", "treatment")
    assert spans[(1, 2)] == (None, "treatment"), "inherited from the root that arrived after it"
    assert spans[(2, 2)] == ("control", "control")
    assert spans[(2, 3)] == ("span-own", "span-own")
    assert spans[(3, 2)] == (None, None)
    traces = {int.from_bytes(t, "big"): v for t, v in writer_db.execute("SELECT trace_id, variant FROM traces")}
    assert traces == {1: "treatment", 2: "control", 3: None}
    # Per-variant rollups (through the dims key) match the billed spans, and add up to the total.
    by_variant = {g.key["variant"]: g["calls"] for g in grouped_rollups(writer_db, T0 // NS - 60, T0 // NS + 60,
                                                                        ["variant"])}
    truth = dict(writer_db.execute("SELECT variant, count(*) FROM spans WHERE billed = 1 GROUP BY variant"))
    assert by_variant == truth == {"treatment": 1, "control": 1, "span-own": 1, None: 1}
    assert sum(by_variant.values()) == total_row(writer_db, "calls")[0]
    assert writer_db.execute("SELECT count(*) FROM dims WHERE variant = 'treatment'").fetchone()[0] == 1


def test_the_variant_filter_and_its_known_values_read_the_store(writer, writer_db, normalizer):
    from llmobs_tui.filtering import parse
    from store.dashboards import known_values_queries, parse_known_values

    for trace, variant in ((1, "control"), (2, "treatment"), (3, "treatment")):
        ingest(writer, normalizer, [root(trace, **{"app.experiment.variant": variant}), chat(trace, 2, 1)])
    compiled = parse("variant=treatment")
    found = writer_db.execute(f"SELECT trace_id FROM traces t WHERE {compiled.where} ORDER BY 1",
                              compiled.params).fetchall()
    assert found == writer_db.execute("SELECT trace_id FROM traces WHERE variant = 'treatment' ORDER BY 1").fetchall()
    assert len(found) == 2
    query = known_values_queries(T0 / NS)["variant"]
    known = parse_known_values({"variant": writer_db.execute(query.sql, query.params).fetchall()})
    assert known["variant"] == ["control", "treatment"]


def test_variant_keys_are_configurable(db_path, writer, writer_db):
    normalizer = Normalizer(PriceTable.load(),
                            IngestOptions(dimension_keys={"feature": ("app.llm.feature",), "variant": ("my.arm",)}))
    ingest(writer, normalizer, [root(1, **{"my.arm": "B", "app.experiment.variant": "ignored"}), chat(1, 2, 1)])
    assert writer_db.execute("SELECT DISTINCT variant FROM spans").fetchall() == [("B",)]


def test_variant_survives_the_trace_being_evicted_from_the_writer_cache(db_path, writer_db, normalizer):
    writer = SpanWriter(writer_db, trace_cache_spans=1)
    ingest(writer, normalizer, [root(1, **{"app.experiment.variant": "treatment"})])
    ingest(writer, normalizer, [root(9)])  # evicts trace 1
    ingest(writer, normalizer, [chat(1, 2, 1)])  # reloads trace 1 from the spans table
    assert writer_db.execute("SELECT variant FROM spans WHERE span_id = ?", ((2).to_bytes(8, "big"),)
                             ).fetchone() == ("treatment",)
    groups = {g.key["variant"]: g["calls"] for g in grouped_rollups(writer_db, T0 // NS - 60, T0 // NS + 60,
                                                                    ["variant"])}
    assert groups == {"treatment": 1}


def test_report_by_variant_matches_sql(tmp_path, capsys):
    db_path = tmp_path / "r.db"
    now = time.time_ns()
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    lock = WriterLock(db_path)
    lock.acquire()
    db = open_writer(db_path)
    writer = SpanWriter(db)
    spans = []
    for trace, variant in enumerate(["control", "treatment", "treatment", None], start=1):
        attrs = {"app.experiment.variant": variant} if variant else {}
        spans.append(make_span(trace, 1, None, "POST /ask", {"app.llm.feature": "ask", **attrs},
                               start_ns=now - 600 * NS, end_ns=now - 598 * NS))
        spans.append(make_span(trace, 2, 1, "chat gpt-4o", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 1000 * trace, "gen_ai.usage.output_tokens": 10 * trace},
            start_ns=now - 600 * NS, end_ns=now - 599 * NS))
    rows, resources, scopes, _ = normalizer.decode_traces(trace_request(spans), received_ns=now)
    writer.write(rows, [], resources, scopes)
    truth = {v: (c, i, cost) for v, c, i, cost in db.execute(
        "SELECT variant, count(*), sum(input_tokens), sum(cost_nusd) FROM spans WHERE billed = 1 GROUP BY variant")}
    db.close()
    lock.release()
    assert main(["report", "--db", str(db_path), "--by", "variant", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    got = {g["key"]["variant"]: (g["calls"], g["tokens"]["input"], round(g["cost_usd"] * 1e9)) for g in report["groups"]}
    assert got == truth
    assert set(truth) == {"control", "treatment", None}


# --- refusals -----------------------------------------------------------------------------------


def _parts(*parts: dict) -> str:
    return json.dumps([{"role": "assistant", "parts": list(parts)}])


REFUSAL_FORMS = [
    ("finish content_filter", {"gen_ai.response.finish_reasons": ["content_filter"]}, True),
    ("finish refusal (Anthropic)", {"gen_ai.response.finish_reasons": ["refusal"]}, True),
    ("finish SAFETY (Gemini)", {"gen_ai.response.finish_reasons": ["SAFETY"]}, True),
    ("refusal part", {"gen_ai.output.messages": _parts({"type": "refusal", "content": "No."})}, True),
    ("OpenAI refusal field", {"output.value": json.dumps(
        {"id": "x", "choices": [{"message": {"content": None, "refusal": "I can't do that."}}]})}, True),
    ("OpenAI refusal null", {"output.value": json.dumps(
        {"id": "x", "choices": [{"message": {"content": "Sure, here it is.", "refusal": None}}]})}, False),
    ("flattened refusal", {"gen_ai.completion.0.refusal": "I can't do that."}, True),
    ("refusal phrase", {"gen_ai.output.messages": _parts(
        {"type": "text", "content": "I\u2019m sorry, but I can\u2019t help with that."})}, True),
    ("phrase in plain text", {"gen_ai.completion.0.content": "I cannot assist with this request."}, True),
    ("apology that is no refusal", {"gen_ai.output.messages": _parts(
        {"type": "text", "content": "I'm sorry to hear that. Here is your refund."})}, False),
    ("phrase later in the text", {"gen_ai.output.messages": _parts(
        {"type": "text", "content": "Done. I can't help with taxes, though."})}, False),
    ("plain stop", {"gen_ai.response.finish_reasons": ["stop"]}, False),
]


@pytest.mark.parametrize(("form", "attrs", "refused"), REFUSAL_FORMS, ids=[f[0] for f in REFUSAL_FORMS])
def test_each_form_of_refusal_is_counted(writer, writer_db, normalizer, form, attrs, refused):
    ingest(writer, normalizer, [root(1), chat(1, 2, 1, **attrs)])
    assert total_row(writer_db, "refusals")[0] == int(refused)
    assert billed_truth(writer_db, "count(*)", REFUSED) == int(refused)


def test_a_json_answers_first_text_value_is_found_where_a_regex_search_finds_it():
    """The refusal check finds the first "content"/"text" string value of a structured answer with
    str.find (receiver.normalize._first_text_start); a regex search is the definition: keys not followed
    by a string value are passed over, a "text" key before a "content" one comes first."""
    import random
    import re

    from receiver.normalize import _first_text_start

    definition = re.compile(r'"(?:content|text)"\s*:\s*"')
    pieces = ['"content"', '"text"', '"content": "', '"text":"', ': "', '"', "I", " ", "[", "{", '"content": [',
              '"conte', 'xt"', '"tex', "content", "text", '"content"  :  "', '"text" :[', "abc", "\n"]
    rng = random.Random(8)
    for _ in range(20_000):
        head = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        found = definition.search(head)
        assert _first_text_start(head) == (found.end() if found else -1), repr(head)


def test_refusal_is_read_before_content_is_dropped(writer, writer_db):
    normalizer = Normalizer(PriceTable.load(), IngestOptions(keep_content=False))
    ingest(writer, normalizer, [root(1), chat(1, 2, 1, **{"gen_ai.output.messages": _parts(
        {"type": "refusal", "content": "No."})})])
    assert total_row(writer_db, "refusals")[0] == 1


def test_a_refusal_finish_reason_from_a_log_record_counts(writer, writer_db, normalizer):
    ingest(writer, normalizer, [root(1), chat(1, 2, 1)])
    assert total_row(writer_db, "refusals")[0] == 0
    rows, resources, scopes, _ = normalizer.decode_logs(logs_request([log_record(
        1, 2, event_name="gen_ai.choice", body={"index": 0, "finish_reason": "content_filter"})]), T0)
    writer.write([], rows, resources, scopes)
    assert total_row(writer_db, "refusals")[0] == 1 == billed_truth(writer_db, "count(*)", REFUSED)


def test_refusals_and_token_lengths_move_when_billing_once_moves_the_call(writer, writer_db, normalizer):
    """A framework span (refused, 5000 tokens in) is billed until the SDK span below it arrives: then
    the SDK span is the call, and its figures replace the wrapper's in every resolution."""
    wrapper = make_span(1, 2, 1, "ChatOpenAI", {
        "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.provider": "openai",
        "llm.token_count.prompt": 5000, "llm.token_count.completion": 7,
        "llm.output_messages.0.message.content": "I'm sorry, but I can't help with that."},
        start_ns=T0 + 5 * MS, end_ns=T0 + 950 * MS)
    ingest(writer, normalizer, [root(1), wrapper])
    assert total_row(writer_db, "calls, refusals")[0:2] == (1, 1)
    ingest(writer, normalizer, [chat(1, 3, 2, inp=1200, out=80)])
    for res in (10, 60, 3600):
        calls, refusals, hist_in, hist_out = total_row(
            writer_db, "calls, refusals, hist_input_tokens, hist_output_tokens", res)
        assert (calls, refusals) == (1, 0) == (billed_truth(writer_db, "count(*)"),
                                               billed_truth(writer_db, "count(*)", REFUSED))
        decoded_in: dict[int, int] = {}
        decoded_out: dict[int, int] = {}
        histogram.decode_into(hist_in, decoded_in)
        histogram.decode_into(hist_out, decoded_out)
        assert {b: c for b, c in decoded_in.items() if c} == {histogram.bucket_of(1200): 1}
        assert {b: c for b, c in decoded_out.items() if c} == {histogram.bucket_of(80): 1}
    # And back: the refusal of a per-dimension row went too (no row is left with a stray count).
    assert writer_db.execute("SELECT sum(refusals) FROM rollups").fetchone()[0] == 0


# --- token-length histograms ------------------------------------------------------------------------


def test_token_length_histograms_match_the_billed_spans(writer, writer_db, normalizer):
    calls = [(0, 0), (1, 3), (950, 40), (1000, 100), (1000, 100), (30_000, 2000), (None, None)]
    spans = [root(1)]
    for i, (inp, out) in enumerate(calls):
        spans.append(chat(1, 10 + i, 1, start_ms=10 + i, inp=inp, out=out))
    # Reasoning tokens are inside output_tokens (design §2 rule 2): the histogram counts them once.
    spans.append(chat(1, 30, 1, inp=10, out=500, **{"gen_ai.usage.reasoning.output_tokens": 400}))
    ingest(writer, normalizer, spans)
    truth_in: dict[int, int] = {}
    truth_out: dict[int, int] = {}
    for inp, out in writer_db.execute("SELECT input_tokens, output_tokens FROM spans WHERE billed = 1"):
        if inp is not None:
            truth_in[histogram.bucket_of(inp)] = truth_in.get(histogram.bucket_of(inp), 0) + 1
        if out is not None:
            truth_out[histogram.bucket_of(out)] = truth_out.get(histogram.bucket_of(out), 0) + 1
    assert sum(truth_in.values()) == 7 == sum(truth_out.values()), "calls with 0 tokens count; no usage does not"
    groups = grouped_rollups(writer_db, T0 // NS - 60, T0 // NS + 60, [])
    assert len(groups) == 1
    assert groups[0].input_tokens == truth_in
    assert groups[0].output_tokens == truth_out
    assert groups[0]["input_tokens"] == billed_truth(writer_db, "sum(input_tokens)"), "the counter is unchanged"


# --- tool rollups -------------------------------------------------------------------------------------


def test_tool_rollups_match_a_group_by_over_tool_spans_and_ignore_duplicates(writer_db, normalizer):
    writer = SpanWriter(writer_db, trace_cache_spans=3)  # small: duplicates also arrive after eviction
    batches = [
        [root(1), tool(1, 2, 1, "search", 10, 120), tool(1, 3, 1, "search", 20, 300, status=2)],
        [root(2, start_ms=70_000), tool(2, 2, 1, "lookup", 70_010, 45), tool(2, 3, 1, None, 70_100, 5)],
        [root(3, start_ms=3_700_000), tool(3, 2, 1, "search", 3_700_010, 80)],
    ]
    for batch in batches:
        ingest(writer, normalizer, batch)
    for batch in batches:  # a retried delivery
        ingest(writer, normalizer, batch)
    assert writer.stats.duplicates == sum(len(b) for b in batches)
    for res in (60, 3600):
        truth = {}
        for bucket, name, calls, errors, duration in writer_db.execute(
                "SELECT start_ns / 1000000000 / ? * ?, coalesce(tool_name, ''), count(*), "
                "sum(status = 2 OR own_error_class IS NOT NULL), sum(duration_ns) FROM spans "
                "WHERE kind = 'tool' GROUP BY 1, 2", (res, res)):
            truth[(bucket, name)] = (calls, errors, duration)
        got = {}
        for bucket, name, calls, errors, duration, blob in writer_db.execute(
                "SELECT bucket, tool, calls, errors, duration_ns, hist_latency FROM tool_rollups WHERE res = ?",
                (res,)):
            latency: dict[int, int] = {}
            histogram.decode_into(blob, latency)
            assert sum(latency.values()) == calls
            got[(bucket, name)] = (calls, errors, duration)
        assert got == truth
        assert ("", ) in {(k[1],) for k in got}, "a tool span naming no tool is kept under ''"


def test_retention_evicts_tool_rollups_with_the_rollups(writer, writer_db, normalizer):
    ingest(writer, normalizer, [root(1), tool(1, 2, 1, "search", 10, 100)])
    now = T0 + 8 * 86400 * NS
    ingest(writer, normalizer, [make_span(2, 1, None, "fresh", {}, start_ns=now - NS, end_ns=now),
                                make_span(2, 2, 1, "execute_tool fresh", {"gen_ai.tool.name": "fresh",
                                          "gen_ai.operation.name": "execute_tool"}, start_ns=now - NS, end_ns=now)],
           received_ns=now)
    enforce(writer_db, writer, max_age_s=7 * 86400, max_bytes=None, now_ns=now)
    assert writer_db.execute("SELECT DISTINCT tool FROM tool_rollups").fetchall() == [("fresh",)]
    assert writer_db.execute("SELECT count(*) FROM rollups WHERE bucket < ?", ((now // NS) - 7 * 86400,)
                             ).fetchone()[0] == 0
    # The writer forgot its cached old rows: a late span of the old hour starts a fresh row.
    assert writer._tool_rollups == {}


# --- change markers ------------------------------------------------------------------------------------


def all_changes(db: sqlite3.Connection) -> list[tuple]:
    return db.execute("SELECT kind, scope, before, after, time_ns FROM changes ORDER BY time_ns, id").fetchall()


def drawn(db: sqlite3.Connection) -> list[tuple]:
    query = changes_query(T0 / NS - 86400, T0 / NS + 86400)
    # Times as milliseconds after T0 (Change.time_s is a float: nanoseconds would not survive it).
    return [(c.kind, c.scope, c.before, c.after, round((c.time_s - T0 / NS) * 1000))
            for c in parse_changes(db.execute(query.sql, query.params).fetchall())]


def test_each_change_kind_is_recorded_once_with_its_before_and_time(writer, writer_db, normalizer):
    prompt = {"app.llm.prompt.template.id": "answer"}
    resource_v1 = {"service.version": "1.0"}
    # Baselines: the first version, the first served snapshot, the first service.version.
    ingest(writer, normalizer, [root(1), chat(1, 2, 1, served="gpt-4o-2024-08-06",
                                              **prompt, **{"app.llm.prompt.template.version": "v1"})],
           resource=resource_v1)
    ingest(writer, normalizer, [root(2, start_ms=5000), chat(2, 2, 1, 5010, served="gpt-4o-2024-08-06",
                                                             **prompt, **{"app.llm.prompt.template.version": "v1"})],
           resource=resource_v1)
    assert drawn(writer_db) == [], "baselines are not drawn"
    # Changes.
    ingest(writer, normalizer, [root(3, start_ms=60_000), chat(3, 2, 1, 60_020, served="gpt-4o-2024-11-20",
                                                               **prompt, **{"app.llm.prompt.template.version": "v2"})],
           resource={"service.version": "1.1"})
    ingest(writer, normalizer, [root(4, start_ms=90_000), chat(4, 2, 1, 90_010, status=2, inp=None, out=None,
                                                               **{"error.type": "RateLimitError",
                                                                  "http.response.status_code": 429})])
    # Seen again: nothing new.
    ingest(writer, normalizer, [root(5, start_ms=120_000), chat(5, 2, 1, 120_010, served="gpt-4o-2024-11-20",
                                                                **prompt, **{"app.llm.prompt.template.version": "v2"}),
                                chat(5, 3, 1, 120_020, status=2, inp=None, out=None,
                                     **{"error.type": "RateLimitError", "http.response.status_code": 429})],
           resource={"service.version": "1.1"})
    assert drawn(writer_db) == [
        ("service_version", "svc", "1.0", "1.1", 60_000),  # the resource's earliest span: the root
        ("served_model", "gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20", 60_020),
        ("prompt_version", "answer", "v1", "v2", 60_020),
        ("error_class", "", None, "api/rate_limit", 90_010),
    ]
    ms = MS
    rows = all_changes(writer_db)
    assert len(rows) == 7  # the three baselines, and the four changes
    assert ("prompt_version", "answer", None, "v1", T0 + 10 * ms) in rows
    assert ("service_version", "svc", None, "1.0", T0) in rows
    # An example trace is kept with each.
    trace_of = dict(writer_db.execute("SELECT after, trace_id FROM changes"))
    assert trace_of["v2"] == (3).to_bytes(16, "big")
    # A new writer (a restart) loads what was seen: nothing is recorded twice.
    again = SpanWriter(writer_db)
    ingest(again, normalizer, [root(6, start_ms=200_000), chat(6, 2, 1, 200_010, served="gpt-4o-2024-08-06",
                                                               **prompt, **{"app.llm.prompt.template.version": "v1"})],
           resource=resource_v1)
    assert len(all_changes(writer_db)) == 7


def test_changes_stop_at_the_cap_and_say_so(writer_db):
    tracker = ChangeTracker(writer_db, limit=3)
    writer_db.execute("BEGIN")
    for i in range(5):
        tracker.note("prompt_version", "p", f"v{i}", T0 + i, None)
    writer_db.execute("COMMIT")
    assert writer_db.execute("SELECT count(*) FROM changes").fetchone()[0] == 3
    assert writer_db.execute("SELECT value FROM meta WHERE key = 'changes_capped'").fetchone() == ("3",)
    assert MAX_CHANGES == 10_000


def test_changes_are_not_evicted_by_age(writer, writer_db, normalizer):
    ingest(writer, normalizer, [root(1), chat(1, 2, 1, status=2, inp=None, out=None,
                                              **{"error.type": "RateLimitError", "http.response.status_code": 429})])
    enforce(writer_db, writer, max_age_s=3600, max_bytes=None, now_ns=T0 + 30 * 86400 * NS)
    assert writer_db.execute("SELECT count(*) FROM spans").fetchone()[0] == 0
    assert [r[3] for r in all_changes(writer_db)] == ["api/rate_limit"]


def test_a_changed_price_table_is_a_change_marker(tmp_path, capsys):
    db_path = tmp_path / "p.db"
    lock = WriterLock(db_path)
    lock.acquire()
    db = open_writer(db_path)
    shipped = PriceTable.load()
    record_price_rows(db, shipped.records(), T0)  # the first table: nothing it changed from
    record_price_rows(db, shipped.records(), T0 + NS)  # the same again: no change
    assert db.execute("SELECT count(*) FROM changes").fetchone()[0] == 0
    db.close()
    lock.release()
    prices = tmp_path / "prices.toml"
    prices.write_text('[[price]]\nid = "openai/gpt-4o"\nprovider = "openai"\nnames = ["gpt-4o"]\n'
                      'kind = "chat"\ninput = 5.0\noutput = 20.0\ncache_read = 2.5\n'
                      'checked = "2026-11-22"\nsource = "test"\n')
    before = time.time_ns()
    assert main(["reprice", "--db", str(db_path), "--prices", str(prices)]) == 0
    capsys.readouterr()
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT kind, scope, before, after, time_ns FROM changes").fetchall()
    assert len(rows) == 1
    kind, scope, old, new, time_ns = rows[0]
    assert (kind, scope) == ("prices", "") and old and new and old != new
    assert before <= time_ns <= time.time_ns()
    query = changes_query(before / NS - 1, time.time())
    (change,) = parse_changes(db.execute(query.sql, query.params).fetchall())
    assert change.describe().startswith("price table changed")  # not two digests a reader cannot use
    db.close()


# --- the TUI fixture ---------------------------------------------------------------------------------------


def _dump(path: Path) -> dict[str, list]:
    db = sqlite3.connect(path)
    try:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()
                for table in ("spans", "traces", "rollups", "tool_rollups", "changes", "logs", "dims")}
    finally:
        db.close()


def test_the_fixture_store_is_deterministic_and_has_the_planted_data(tmp_path):
    from tests.tui_fixtures import (
        FROZEN_NOW,
        PLANTED_CHANGE_S,
        PLANTED_PROMPT,
        SERVED_MODEL,
        SERVED_MODEL_CHANGE_S,
        build_store,
    )

    started = time.perf_counter()
    first = _dump(build_store(tmp_path / "a.db"))
    elapsed = time.perf_counter() - started
    assert first == _dump(build_store(tmp_path / "b.db"))
    assert elapsed < 30
    db = sqlite3.connect(tmp_path / "a.db")
    query = changes_query(FROZEN_NOW - 3600, FROZEN_NOW)
    changes = {(c.kind, c.scope, c.before, c.after): c.time_s
               for c in parse_changes(db.execute(query.sql, query.params).fetchall())}
    prompt_id, old, new = PLANTED_PROMPT
    assert changes[("prompt_version", prompt_id, old, new)] == PLANTED_CHANGE_S
    assert changes[("served_model", *SERVED_MODEL)] == SERVED_MODEL_CHANGE_S

    def calls_and_refusals(start_s: float) -> tuple[int, int]:
        return db.execute(f"SELECT count(*), sum({REFUSED}) FROM spans WHERE billed = 1 AND start_ns >= ? "
                          "AND start_ns < ?", (int(start_s * NS), int((start_s + 3600) * NS))).fetchone()

    now_calls, now_refusals = calls_and_refusals(FROZEN_NOW - 3600)
    prev_calls, _ = calls_and_refusals(FROZEN_NOW - 7200)
    week_calls, week_refusals = calls_and_refusals(FROZEN_NOW - 3600 - 7 * 86400)
    assert min(prev_calls, week_calls) > 0.7 * now_calls, "the past has a similar volume"
    assert now_refusals / now_calls > 2 * week_refusals / week_calls > 0
    variants = dict(db.execute("SELECT variant, count(*) FROM traces WHERE variant IS NOT NULL GROUP BY 1"))
    assert set(variants) == {"control", "treatment"}
    for start_s in (FROZEN_NOW - 3600, FROZEN_NOW - 3600 - 7 * 86400):
        scores = db.execute("SELECT count(*) FROM logs WHERE eval_name IS NOT NULL AND eval_score IS NOT NULL "
                            "AND time_ns BETWEEN ? AND ?", (int(start_s * NS), int((start_s + 3700) * NS))
                            ).fetchone()[0]
        assert scores > 20
    # The rollups agree with the spans over the whole store (the writer's totals, every period).
    rollup_refusals, rollup_calls = db.execute(
        "SELECT sum(refusals), sum(calls) FROM rollups WHERE res = 3600 AND dims_id = 0").fetchone()
    assert (rollup_calls, rollup_refusals) == db.execute(
        f"SELECT count(*), sum({REFUSED}) FROM spans WHERE billed = 1").fetchone()
    db.close()
