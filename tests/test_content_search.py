"""Full-text search over stored content (issue 13, capability 1): `text:` on the Traces screen.

Spans and log records go through the real normalizer (redaction on, as by default) and the real
writer; the real indexer (store/content_index.py) fills the FTS5 table after the commit, as the
writer process does; the trace list's own query (store.dashboards.traces_query with the parsed
filter) is the search. Ground truth is the set of traces planted with each text.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest
import zstandard
from textual.widgets import Input

from llmobs_tui.filtering import FilterError, complete, parse, regexp
from receiver.normalize import Normalizer
from store import content_index, dashboards, retention
from store.connection import WriterLock, open_reader, open_writer
from store.content_index import (
    CHAR_SEPARATOR,
    MARK_END,
    MARK_START,
    ContentIndexer,
    index_lag,
    phrase_query,
    snippet_parts,
)
from store.otlp_values import message_to_otlp_json
from store.queries import decompress
from store.writer import SpanWriter
from tests.otlp_factory import MS, T0, log_record, logs_request, make_span, span_id_bytes, trace_id_bytes, trace_request

NOW_S = T0 / 1e9 + 60
WINDOW_S = 7 * 86400
EMAIL = "jane.doe@example.com"


def chat_span(trace: int, span: int, parent: int | None, prompt: str, answer: str = "ok",
              model: str = "gpt-4o", start_ns: int = T0):
    return make_span(trace, span, parent, f"chat {model}", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20,
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompt}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]),
    }, start_ns=start_ns + 10 * MS, end_ns=start_ns + 900 * MS)


def agent_trace(trace: int, prompt: str, answer: str = "ok", model: str = "gpt-4o", start_ns: int = T0) -> list:
    """A root span without content and one chat span (span 2) carrying the prompt and the answer."""
    root = make_span(trace, 1, None, "POST /support", {"http.route": "/support"}, start_ns=start_ns,
                     end_ns=start_ns + 1000 * MS, kind=2)
    return [root, chat_span(trace, 2, 1, prompt, answer, model, start_ns)]


def store_spans(writer: SpanWriter, normalizer: Normalizer, spans: list) -> None:
    rows, resources, scopes, rejections = normalizer.decode_traces(trace_request(spans, service="support-bot"))
    assert rejections.count == 0, rejections.message()
    writer.write(rows, [], resources, scopes)


def store_logs(writer: SpanWriter, normalizer: Normalizer, records: list) -> None:
    rows, resources, scopes, _ = normalizer.decode_logs(logs_request(records))
    writer.write([], rows, resources, scopes)


def index_all(db: sqlite3.Connection) -> ContentIndexer:
    indexer = ContentIndexer(db, chunk=7)  # small transactions: several per test, as in the writer
    indexer.run(deadline_s=30)
    assert not indexer.has_work and index_lag(db) == (0, 0)
    return indexer


def found(db: sqlite3.Connection, filter_text: str) -> set[int]:
    """The trace numbers the trace list shows for this filter."""
    flt = parse(filter_text)
    db.create_function("regexp", 2, regexp, deterministic=True)
    query = dashboards.traces_query(WINDOW_S, NOW_S, flt.where, flt.params)
    return {int.from_bytes(row[0], "big") for row in db.execute(query.sql, query.params)}


def matches(db: sqlite3.Connection, filter_text: str, traces: list[int]) -> dict[int, content_index.TextMatch]:
    flt = parse(filter_text)
    assert flt.text_search is not None
    sql, params = content_index.text_matches_query(flt.text_search, [trace_id_bytes(t) for t in traces])
    return {int.from_bytes(k, "big"): v for k, v in content_index.parse_text_matches(db.execute(sql, params)).items()}


def stored_texts(db: sqlite3.Connection) -> dict[int, str]:
    """The index's rows and the text each was indexed with (content_text, decompressed)."""
    return {rowid: decompress(body).decode() for rowid, body in db.execute("SELECT id, body FROM content_text")}


def add_index_rows(db: sqlite3.Connection, rows: list[tuple[int, bytes, bytes | None, str]]) -> None:
    """Index rows as the indexer writes them: the text in content_text and the postings in FTS5."""
    db.executemany("INSERT INTO content_text (id, trace_id, span_id, body) VALUES (?, ?, ?, ?)",
                   [(rowid, trace, span, zstandard.ZstdCompressor().compress(text.encode()))
                    for rowid, trace, span, text in rows])
    db.executemany("INSERT INTO content_index (rowid, body) VALUES (?, ?)", [(r[0], r[3]) for r in rows])


def postings(db: sqlite3.Connection, schema: str = "main") -> list[tuple]:
    """Every (term, rowid, column, offset) the index holds, deletes applied (fts5vocab)."""
    db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.vocab_{schema} USING fts5vocab({schema}, content_index, "
               "instance)")
    return sorted(db.execute(f"SELECT term, doc, col, offset FROM temp.vocab_{schema}"))


def fts5_totals(db: sqlite3.Connection) -> list[int]:
    """FTS5's 'averages' record: rows, then tokens per column (varints; no record yet: zeros)."""
    block = (db.execute("SELECT block FROM content_index_data WHERE id = 1").fetchone() or (b"",))[0]
    numbers, value = [], 0
    for byte in block:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            numbers.append(value)
            value = 0
    return numbers or [0, 0]


def assert_index_intact(db: sqlite3.Connection) -> None:
    """The index holds exactly the postings of the texts content_text keeps, no more (a delete given
    a wrong text leaves some behind), no fewer: compared with a normal FTS5 table built from them.
    A contentless table cannot check this itself."""
    db.execute("INSERT INTO content_index (content_index, rank) VALUES ('integrity-check', 0)")
    texts = stored_texts(db)
    assert db.execute("SELECT count(*) FROM content_index").fetchone()[0] == len(texts)
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.execute(content_index.CREATE_TABLES[0].replace("content = '',", ""))
        scratch.executemany("INSERT INTO content_index (rowid, body) VALUES (?, ?)", texts.items())
        assert postings(db) == postings(scratch)
        # FTS5's totals of rows and tokens (the 'averages' record): a delete given more tokens than
        # were indexed leaves no posting behind but throws these off.
        assert fts5_totals(db) == fts5_totals(scratch)
    finally:
        scratch.close()


@pytest.fixture
def writer(writer_db: sqlite3.Connection) -> SpanWriter:
    return SpanWriter(writer_db, clock=lambda: T0)


# -- what is found ---------------------------------------------------------------------------------


def test_a_planted_phrase_and_a_word_are_found_case_insensitively(writer_db, writer, normalizer):
    store_spans(writer, normalizer, agent_trace(1, "What is your Refund Policy for damaged goods?"))
    store_spans(writer, normalizer, agent_trace(2, "hello", answer="Refunds take five days."))
    store_spans(writer, normalizer, agent_trace(3, "What is your shipping policy?"))
    store_spans(writer, normalizer, [make_span(4, 1, None, "tool lookup_order", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
        "gen_ai.tool.call.arguments": json.dumps({"order": "ORD-77123"}),
        "gen_ai.tool.call.result": json.dumps({"status": "parcel lost in Quarantine Bay"})})])
    assert found(writer_db, 'text:"refund policy"') == set(), "not indexed yet: the indexer runs after the commit"
    index_all(writer_db)
    assert found(writer_db, 'text:"refund policy"') == {1}
    assert found(writer_db, "text:REFUND") == {1, 2}
    assert found(writer_db, "text:policy") == {1, 3}
    assert found(writer_db, "text:ORD-77123") == {4}, "a tool's arguments"
    assert found(writer_db, 'text:"quarantine bay"') == {4}, "a tool's result"
    assert found(writer_db, "text:refund policy") == {1}, "unquoted words after text: belong to it"
    hit = matches(writer_db, 'text:"refund policy"', [1])[1]
    assert hit.span_id == span_id_bytes(2), "the chat span matched, not the root"
    assert f"{MARK_START}Refund Policy{MARK_END}" in hit.snippet.replace(f"{MARK_END}{MARK_START}", "")


def test_words_match_from_their_start_and_the_last_one_may_be_cut_short(writer_db, writer, normalizer):
    store_spans(writer, normalizer, agent_trace(1, "Refunds take five days for order_id 7781."))
    store_spans(writer, normalizer, agent_trace(2, "A prefund is not a refund request."))
    index_all(writer_db)
    assert found(writer_db, "text:refun") == {1, 2}, "the last word is a prefix"
    assert found(writer_db, "text:refund request") == {2}
    assert found(writer_db, "text:refun request") == set(), "only the last word may be cut short"
    assert found(writer_db, "text:efund") == set(), "a search starts at a word's start"
    assert found(writer_db, "text:order_id 7781") == {1}, "punctuation between words is a separator"
    assert found(writer_db, "text:order id 7781") == {1}
    hit = matches(writer_db, "text:five days", [1])[1]
    assert CHAR_SEPARATOR not in hit.snippet and f"{MARK_START}five days{MARK_END}" in hit.snippet


def test_spanish_and_japanese_text_is_found(writer_db, writer, normalizer):
    store_spans(writer, normalizer, agent_trace(1, "¿Cuál es la política de devolución del pedido número 12?"))
    store_spans(writer, normalizer, agent_trace(2, "返金ポリシーについて教えてください。", answer="承知しました"))
    store_spans(writer, normalizer, agent_trace(3, "Politica sin acento"))
    index_all(writer_db)
    assert found(writer_db, 'text:"política de devolución"') == {1}
    assert found(writer_db, "text:POLÍTICA") == {1}, "case folds beyond ASCII"
    assert found(writer_db, "text:返金ポリシー") == {2}
    assert found(writer_db, "text:承知しました") == {2}
    assert found(writer_db, "text:ポリシーについて") == {2}, "any run inside a text written without spaces"
    assert found(writer_db, "text:ポリシーにつ") == {2}
    hit = matches(writer_db, "text:ポリシー", [2])[2]
    assert CHAR_SEPARATOR not in hit.snippet, "the separators are never shown"
    assert "ポリシー" in "".join(text for text, _ in snippet_parts(hit.snippet))


def test_a_redacted_email_cannot_be_found_but_its_marker_can(writer_db, writer, normalizer):
    store_spans(writer, normalizer, agent_trace(1, f"Please write to {EMAIL} about the refund"))
    store_logs(writer, normalizer, [log_record(1, 2, "gen_ai.user.message", {"content": f"again: {EMAIL}"})])
    index_all(writer_db)
    body = "\n".join(stored_texts(writer_db).values())
    assert "[REDACTED:email]" in body and "jane" not in body and "example.com" not in body
    for needle in (EMAIL, "jane.doe", "example.com", "doe@"):
        assert found(writer_db, f"text:{needle}") == set(), needle
    assert found(writer_db, "text:[REDACTED:email]") == {1}
    assert found(writer_db, 'text:"write to [REDACTED:email] about"') == {1}


def test_log_records_are_searchable_whenever_they_arrive(writer_db, writer, normalizer):
    store_spans(writer, normalizer, agent_trace(1, "first question"))
    index_all(writer_db)
    # After the span was indexed: the log record is indexed as its own row, pointing at the span.
    store_logs(writer, normalizer, [
        log_record(1, 2, "gen_ai.choice", {"index": 0, "finish_reason": "stop",
                                           "message": {"content": "The warranty covers water damage."}}),
        log_record(None, None, "app.audit", "warranty mentioned without any trace"),
    ])
    # Before its span: searchable under the trace once the span lands, on the span it names.
    store_logs(writer, normalizer, [log_record(5, 3, "gen_ai.user.message", {"content": "Is the warranty void?"})])
    store_spans(writer, normalizer, [make_span(5, 3, None, "chat", {"gen_ai.operation.name": "chat"})])
    assert index_lag(writer_db) == (1, 3)
    index_all(writer_db)
    assert found(writer_db, 'text:"covers water damage"') == {1}
    assert found(writer_db, "text:warranty") == {1, 5}
    hits = matches(writer_db, "text:warranty", [1, 5])
    assert hits[1].span_id == span_id_bytes(2) and hits[5].span_id == span_id_bytes(3)


def test_other_terms_combine_and_negation_works(writer_db, writer, normalizer):
    store_spans(writer, normalizer, agent_trace(1, "refund please", model="gpt-4o"))
    store_spans(writer, normalizer, agent_trace(2, "refund now", model="claude-3-5-sonnet-20241022"))
    store_spans(writer, normalizer, agent_trace(3, "no money back", model="gpt-4o"))
    index_all(writer_db)
    everything = {1, 2, 3}
    assert found(writer_db, "") == everything
    assert found(writer_db, "text:refund model=gpt-4o") == {1}
    assert found(writer_db, "model=gpt-4o text:refund") == {1}
    assert found(writer_db, "text:refund model=~claude") == {2}
    assert found(writer_db, "!text:refund") == {3}
    assert found(writer_db, "text!=refund") == {3}
    assert found(writer_db, 'text:refund text:"please"') == {1}
    assert parse("!text:refund").text_search is None, "an inverted search has no snippets to show"


def test_searches_without_a_word_are_refused_with_a_clear_message():
    for text in ("text:", "text:***", 'text:"  ,. "', "text:* model=gpt-4o", "text:'\"\"\"'"):
        with pytest.raises(FilterError, match="search for a word"):
            parse(text)
    for text in ("text:ab", "text:x", "text:返金", "text:42"):
        assert parse(text).text_search, text
    assert parse("text:abc").params == ['"abc" *']
    assert complete("te", {}) == ["tenant", "text:"]
    with pytest.raises(FilterError) as unknown:
        parse("txt=1")
    assert "text" in str(unknown.value), "the fields listed for an unknown one include text"


def test_fts_syntax_in_the_search_is_literal_text(writer_db, writer, normalizer):
    planted = {
        1: 'the flags "alpha" OR "beta" are set',
        2: "alpha only here",
        3: "beta only here",
        4: "call NEAR(x y) in the query",
        5: "rated *** by users",
        6: 'a docstring """ opens here',
        7: "body:secret col:value ^start",
        8: "alpha OR beta in words",
    }
    for trace, text in planted.items():
        store_spans(writer, normalizer, agent_trace(trace, text))
    index_all(writer_db)
    # Punctuation separates words (it is not searched): the quotes here are not looked for, and
    # OR is a word to find, never the operator (which would also find traces 2 and 3).
    assert found(writer_db, """text:'"alpha" OR "beta"'""") == {1, 8}
    assert found(writer_db, 'text:"alpha" OR "beta"') == {1, 8}, "shlex drops the quotes: the words stay one phrase"
    assert found(writer_db, "text:NEAR(") == {4}
    assert found(writer_db, "text:NEAR(x y)") == {4}
    assert found(writer_db, "text:rated *** by") == {5}, "a * inside is not a prefix operator"
    assert found(writer_db, """text:'docstring \"\"\" opens'""") == {6}
    assert found(writer_db, "text:body:secret") == {7}, "not a column filter"
    assert found(writer_db, "text:^start") == {7}, "not an initial-token anchor"
    assert found(writer_db, 'text:\'alpha" OR body:*\'') == set()
    assert phrase_query('x" OR "y') == '"x"" OR ""y" *'


def test_a_common_word_reads_only_the_newest_matches_and_says_so(writer_db, writer, normalizer):
    """Past MATCH_SCAN_LIMIT matches the list is filled from the newest (a bounded read at any store
    size); a negation still sees every match."""
    store_spans(writer, normalizer, agent_trace(1, "needle in the oldest trace", start_ns=T0 - 10**9))
    store_spans(writer, normalizer, agent_trace(2, "needle in the newest trace"))
    index_all(writer_db)
    newest, span, text = writer_db.execute("SELECT id, span_id, body FROM content_text WHERE trace_id = ?",
                                           (trace_id_bytes(2),)).fetchone()
    # Filler matches between the two, for a trace the list does not have: the scan stops among them.
    with writer_db:
        content_index.forget_rows(writer_db, [(newest, text)])
        add_index_rows(writer_db, [(content_index.MATCH_SCAN_LIMIT + 10, trace_id_bytes(2), span,
                                    decompress(text).decode())])
        add_index_rows(writer_db, [(n, b"filler", None, "another needle")
                                   for n in range(5, content_index.MATCH_SCAN_LIMIT + 5)])
    sql, params = content_index.match_count_query(phrase_query("needle"))
    assert writer_db.execute(sql, params).fetchone()[0] == content_index.MATCH_SCAN_LIMIT + 1
    assert found(writer_db, "text:needle") == {2}, "the oldest match is past the newest MATCH_SCAN_LIMIT"
    assert found(writer_db, 'text:"needle in the oldest"') == {1}, "a rarer phrase is found anywhere"
    assert found(writer_db, "text!=needle") == set() and found(writer_db, "!text:needle") == set()
    assert set(matches(writer_db, "text:needle", [1, 2])) == {2}


# -- eviction --------------------------------------------------------------------------------------


def index_rows_of(db: sqlite3.Connection, trace: int) -> int:
    return db.execute("SELECT count(*) FROM content_text WHERE trace_id = ?", (trace_id_bytes(trace),)).fetchone()[0]


def test_retention_removes_the_index_rows_of_evicted_traces(writer_db, writer, normalizer):
    old, new = T0 - 10 * 86400 * 10**9, T0
    store_spans(writer, normalizer, agent_trace(1, "old refund question", start_ns=old))
    store_logs(writer, normalizer, [log_record(1, 2, "gen_ai.choice", {"message": {"content": "old refund reply"}},
                                               time_ns=old + 5 * MS)])
    store_spans(writer, normalizer, agent_trace(2, "new refund question", start_ns=new))
    store_logs(writer, normalizer, [log_record(None, None, "app.audit", "refund log without a trace",
                                               time_ns=old)])
    index_all(writer_db)
    assert index_rows_of(writer_db, 1) == 2 and index_rows_of(writer_db, 2) == 1
    result = retention.enforce(writer_db, writer, max_age_s=7 * 86400, max_bytes=None, now_ns=new)
    assert result.traces == 1 and result.logs == 2
    assert index_rows_of(writer_db, 1) == 0
    assert found(writer_db, "text:refund") == {2}
    # Every index row belongs to a stored span or log record (rowid: spans.id, or -logs.id).
    orphans = writer_db.execute(
        "SELECT count(*) FROM content_text c WHERE NOT EXISTS (SELECT 1 FROM spans s WHERE s.id = c.id) "
        "AND NOT EXISTS (SELECT 1 FROM logs l WHERE -l.id = c.id)").fetchone()[0]
    assert orphans == 0
    assert writer_db.execute("SELECT count(*) FROM content_index").fetchone()[0] == 1
    assert_index_intact(writer_db)


def test_ids_reused_after_eviction_are_indexed(writer_db, writer, normalizer):
    """SQLite numbers a new log row max(id) + 1: once the newest log row is evicted its id comes back,
    and a watermark left above it would skip the new row."""
    old = T0 - 10 * 86400 * 10**9
    store_spans(writer, normalizer, agent_trace(1, "first", start_ns=old))
    store_logs(writer, normalizer, [log_record(1, 2, "gen_ai.choice", {"message": {"content": "old answer"}},
                                               time_ns=old)])
    index_all(writer_db)
    evicted_log = writer_db.execute("SELECT max(id) FROM logs").fetchone()[0]
    retention.enforce(writer_db, writer, max_age_s=86400, max_bytes=None, now_ns=T0)
    store_logs(writer, normalizer, [log_record(2, 2, "gen_ai.choice", {"message": {"content": "fresh answer"}})])
    assert writer_db.execute("SELECT max(id) FROM logs").fetchone()[0] == evicted_log
    store_spans(writer, normalizer, agent_trace(2, "second"))
    index_all(writer_db)
    assert found(writer_db, 'text:"fresh answer"') == {2}


def test_a_store_from_before_the_index_catches_up_from_zero(db_path: Path, normalizer):
    """A store written without the indexer (an older llmobs-tui, or --no-search-index): the indexer
    works through it in small steps, each a short transaction, and resumes from its watermark."""
    lock = WriterLock(db_path)
    lock.acquire()
    db = open_writer(db_path)
    try:
        writer = SpanWriter(db, clock=lambda: T0)
        for trace in range(1, 41):
            store_spans(writer, normalizer, agent_trace(trace, f"question number {trace:03d} about invoices"))
        assert index_lag(db) == (80, 0)
        indexer = ContentIndexer(db, chunk=10)
        assert indexer._one_transaction() == 10
        assert index_lag(db) == (70, 0)
        indexer.run(deadline_s=30)
        assert index_lag(db) == (0, 0) and indexer.stats.spans == 80 and indexer.stats.rows == 40
    finally:
        db.close()
        lock.release()
    reader = open_reader(db_path)
    try:
        assert found(reader, "text:invoices") == set(range(1, 41))
        assert found(reader, "text:number 017") == {17}
    finally:
        reader.close()


def test_under_load_the_indexer_runs_for_its_share_of_commit_time(writer_db, writer, normalizer):
    for trace in range(1, 21):
        store_spans(writer, normalizer, agent_trace(trace, f"order {trace} arrived broken"))
    indexer = ContentIndexer(writer_db, chunk=4, load_share=0.15)
    indexer.notify_commit(0.005)  # earns 0.75 ms: less than one small transaction's worth
    assert indexer.step_under_load() == 0 and index_lag(writer_db) == (40, 0)
    indexer.notify_commit(1.0)  # earns 150 ms
    assert indexer.step_under_load() > 0
    assert index_lag(writer_db)[0] < 40
    indexer.run(deadline_s=30)
    assert not indexer.has_work and index_lag(writer_db) == (0, 0)
    indexer.notify_commit(0.01)
    assert indexer.has_work, "a commit means new rows may wait"
    indexer.pause(60)
    assert not indexer.has_work, "paused after an error: no retry loop"


# -- the writer process ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_writer_process_indexes_after_the_ack(backend):
    phrase = "our lighthouse keeper policy"
    request = trace_request(agent_trace(0x5EA, f"Tell me about {phrase}."), service="support-bot")
    async with aiohttp.ClientSession() as session:
        async with session.post(backend.http_address + "/v1/traces", json=message_to_otlp_json(request)) as response:
            assert response.status == 200
    db = open_reader(backend.config.pipeline.db_path)
    try:
        assert db.execute("SELECT count(*) FROM spans").fetchone()[0] == 2, "committed when acknowledged"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and found(db, f'text:"{phrase}"') != {0x5EA}:
            await asyncio.sleep(0.05)
        assert found(db, f'text:"{phrase}"') == {0x5EA}
        assert index_lag(db) == (0, 0)
    finally:
        db.close()


# -- the Traces screen --------------------------------------------------------------------------------


@pytest.fixture
def searchable_store(tmp_path: Path, normalizer: Normalizer) -> Path:
    from tests.tui_fixtures import FROZEN_NOW, build_store, use_utc

    use_utc()
    path = build_store(tmp_path / "search.db", minutes=5, traces_per_minute=4)
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    try:
        writer = SpanWriter(db, clock=lambda: int(FROZEN_NOW * 1e9))
        start = int((FROZEN_NOW - 30) * 1e9)
        root = make_span(0xC0FFEE, 1, None, "POST /support", {"http.route": "/support"}, start_ns=start,
                         end_ns=start + 2000 * MS, kind=2)
        planner = chat_span(0xC0FFEE, 2, 1, "plan the answer", start_ns=start)
        # The match is in the third span, not the first LLM call the Trace screen would select.
        answer = chat_span(0xC0FFEE, 3, 1, "Customer asks: what is the lighthouse refund clause? \x1b[2J\x1b]0;x\x07",
                           answer="[bold]It covers storms[/bold]", start_ns=start + 950 * MS)
        store_spans(writer, normalizer, [root, planner, answer])
        other = agent_trace(0xBEEF, "nothing to see", start_ns=start)
        store_spans(writer, normalizer, other)
        ContentIndexer(db).run(deadline_s=60)
        store_spans(writer, normalizer, agent_trace(0xFEED, "not yet indexed", start_ns=start))
    finally:
        db.close()
        lock.release()
    return path


@pytest.mark.anyio
async def test_typing_a_search_shows_the_snippet_and_enter_opens_the_matched_span(searchable_store):
    from llmobs_tui.screens.prompt import PromptScreen
    from llmobs_tui.screens.trace import TraceScreen
    from llmobs_tui.screens.traces import TracesScreen
    from llmobs_tui.widgets.keyed_table import KeyedTable
    from tests.test_first_minutes_render import make_app, settle
    from tests.test_prompts_and_open import typing_pause

    app = make_app(searchable_store)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        traces = app.screen
        assert isinstance(traces, TracesScreen)
        await pilot.press("slash")
        await settle(pilot)
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*'text:"lighthouse refund"')
        await typing_pause(pilot)
        assert app.screen.query_one(Input).value == 'text:"lighthouse refund"'
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is traces and traces.flt.text_search == '"lighthouse refund" *'
        table = traces.query_one(KeyedTable)
        assert table.keys() == [f"{0xC0FFEE:032x}"]
        cell = table.get_row(f"{0xC0FFEE:032x}")[-1]
        assert "lighthouse refund" in cell.plain
        highlighted = [cell.plain[s.start:s.end] for s in cell.spans if "reverse" in str(s.style)]
        assert highlighted and "".join(highlighted).lower() == "lighthouse refund"
        assert "\x1b" not in cell.plain and "\x07" not in cell.plain
        header = str(traces.query_one("#traces-filter").render())
        assert "search index: 2 spans still to index" in header
        await pilot.press("enter")
        await settle(pilot)
        trace_screen = app.screen
        assert isinstance(trace_screen, TraceScreen)
        assert trace_screen.trace_id == trace_id_bytes(0xC0FFEE)
        selected = trace_screen.selected_span
        assert selected is not None and selected.span_id == span_id_bytes(3)


@pytest.mark.parametrize(("options", "reason"), [({"max_db_bytes": 64_000_000}, "--max-db-size"),
                                                 ({"content_index": False}, "--no-search-index"), ({}, "")])
def test_the_writer_records_whether_it_indexes_and_the_search_says_so(db_path: Path, options, reason):
    from multiprocessing import Pipe

    from llmobs_tui.reader import StoreReader
    from store.writer_process import WriterLoop

    db = open_writer(db_path)
    inbox, _sender = Pipe(duplex=False)
    _receiver, outbox = Pipe(duplex=False)
    try:
        loop = WriterLoop(db, SpanWriter(db), inbox, outbox, {"db_path": str(db_path), **options})
        assert (loop.indexer is None) == bool(reason)
        loop.reserve.give_up()
    finally:
        db.close()

    async def search() -> str:
        reader = StoreReader(db_path)
        await reader.open()
        try:
            return (await reader.text_matches([], parse("text:refund"), 0)).off_reason
        finally:
            await reader.close()

    assert asyncio.run(search()) == reason
