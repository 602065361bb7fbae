"""The contentless search index (m012, store/content_index.py): FTS5 keeps postings only and the text
it indexed lives once, compressed, in content_text. SQLite 3.40 forgets a contentless row only when
given the exact text it indexed, so every delete path is checked here against ground truth: after
it, the index's postings (fts5vocab) are exactly those of a normal FTS5 table built from the texts
content_text still holds, and the trace list finds what a store that never had the deleted traces
would. Spans go through the real Normalizer and SpanWriter, the index through the real indexer.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from receiver.normalize import Normalizer
from store import content_index, retention
from store.connection import WriterLock, open_writer
from store.content_index import MARK_END, MARK_START, SPANS_WATERMARK, ContentIndexer, index_lag, phrase_query
from store.forget import forget
from store.meta import get_meta, set_meta
from store.writer import SpanWriter
from tests.otlp_factory import MS, T0, log_record, trace_id_bytes
from tests.test_content_search import (
    agent_trace,
    assert_index_intact,
    found,
    index_all,
    matches,
    postings,
    store_logs,
    store_spans,
    stored_texts,
)

DAY_NS = 86400 * 10**9


@pytest.fixture
def writer(writer_db: sqlite3.Connection) -> SpanWriter:
    return SpanWriter(writer_db, clock=lambda: T0)


def user_trace(trace: int, user: str, prompt: str, start_ns: int = T0) -> list:
    spans = agent_trace(trace, prompt, answer=f"answer for {user}", start_ns=start_ns)
    spans[1].attributes.add(key="user.id").value.string_value = user
    return spans


def test_the_text_is_kept_once_compressed_and_the_index_keeps_none(writer_db, writer, normalizer):
    store_spans(writer, normalizer, agent_trace(1, "What is the lighthouse refund clause? " * 20))
    index_all(writer_db)
    (rowid, body), = writer_db.execute("SELECT id, body FROM content_text").fetchall()
    text = stored_texts(writer_db)[rowid]
    assert "lighthouse refund clause" in text and len(body) < len(text.encode()) / 2, "zstd-compressed"
    assert writer_db.execute("SELECT count(*) FROM content_index WHERE content_index MATCH ?",
                             (phrase_query("lighthouse refund"),)).fetchone()[0] == 1
    assert "content_index_content" not in {r[0] for r in writer_db.execute("SELECT name FROM sqlite_schema")}
    assert writer_db.execute("SELECT body FROM content_index WHERE content_index MATCH 'lighthouse'").fetchone() == \
        (None,), "contentless: FTS5 gives no text back"
    assert_index_intact(writer_db)


def indexed_traces(db: sqlite3.Connection, search: str) -> set[int]:
    """The traces whose indexed content matches, whatever their age (the trace list shows a window)."""
    return {int.from_bytes(row[0], "big")
            for row in db.execute(content_index.ALL_MATCHES, (phrase_query(search),))}


def test_retention_by_age_and_by_size_leaves_the_index_exact(writer_db, writer, normalizer):
    old = T0 - 10 * DAY_NS
    for trace in range(1, 31):
        start = old if trace <= 10 else T0 - (40 - trace) * 60 * 10**9
        store_spans(writer, normalizer, agent_trace(trace, f"question {trace} about the shared word harbour " * 30,
                                                    answer=f"reply {trace} harbour", start_ns=start))
        store_logs(writer, normalizer, [log_record(trace, 2, "gen_ai.choice",
                                                   {"message": {"content": f"log {trace} harbour"}},
                                                   time_ns=start + 5 * MS)])
    store_logs(writer, normalizer, [log_record(None, None, "app.audit", "traceless harbour line", time_ns=old)])
    index_all(writer_db)
    assert indexed_traces(writer_db, "harbour") == set(range(1, 31))
    retention.enforce(writer_db, writer, max_age_s=7 * 86400, max_bytes=None, now_ns=T0)
    assert indexed_traces(writer_db, "harbour") == set(range(11, 31))
    assert_index_intact(writer_db)
    # By size: the oldest traces go until the store fits.
    used = retention.used_bytes(writer_db)
    result = retention.enforce(writer_db, writer, max_age_s=None, max_bytes=used - 40_000, now_ns=T0)
    left = indexed_traces(writer_db, "harbour")
    assert result.traces > 0 and left == set(range(31 - len(left), 31)) and left, "the oldest went"
    assert found(writer_db, "text:harbour") == left
    assert_index_intact(writer_db)
    assert len(stored_texts(writer_db)) == 2 * len(left), "a span row and a log row per trace left"


def test_forget_leaves_the_index_exact(writer_db, writer, normalizer):
    for trace, user in enumerate(["alice", "bob", "alice", "carol"], start=1):
        store_spans(writer, normalizer, user_trace(trace, user, f"secret plan of {user} number {trace}"))
    index_all(writer_db)
    done = forget(writer_db, writer, "user", "alice")
    assert done.removed.traces == 2
    assert found(writer_db, "text:secret plan") == {2, 4}
    assert found(writer_db, "text:alice") == set()
    assert_index_intact(writer_db)


def test_a_row_met_again_after_a_clamped_watermark_is_replaced_not_doubled(writer_db, writer, normalizer):
    for trace in range(1, 6):
        store_spans(writer, normalizer, agent_trace(trace, f"parcel {trace} reached the depot"))
    store_logs(writer, normalizer, [log_record(3, 2, "gen_ai.choice", {"message": {"content": "depot log"}})])
    index_all(writer_db)
    before = postings(writer_db)
    with writer_db:  # as after a clamp: the watermarks below rows already indexed
        set_meta(writer_db, SPANS_WATERMARK, "3")
        set_meta(writer_db, content_index.LOGS_WATERMARK, "0")
    indexer = index_all(writer_db)
    assert indexer.stats.spans == 7 and indexer.stats.logs == 1
    assert postings(writer_db) == before, "the same postings, not twice"
    assert found(writer_db, "text:depot") == {1, 2, 3, 4, 5}
    assert_index_intact(writer_db)


def test_a_row_met_again_without_text_any_more_leaves_the_index(writer_db, writer, normalizer):
    """The range a pass covers is what it finds: a stale row whose span has no text now is forgotten."""
    store_spans(writer, normalizer, agent_trace(1, "keep me"))
    index_all(writer_db)
    span_row = writer_db.execute("SELECT id FROM content_text").fetchone()[0]
    with writer_db:
        writer_db.execute("UPDATE spans SET raw = NULL WHERE id = ?", (span_row,))
        set_meta(writer_db, SPANS_WATERMARK, "0")
    index_all(writer_db)
    assert stored_texts(writer_db) == {} and found(writer_db, "text:keep") == set()
    assert_index_intact(writer_db)


def test_snippets_are_the_ones_a_normal_table_gave(writer_db, writer, normalizer):
    """parse_text_matches rebuilds snippets from content_text: the same as snippet() over m008's table
    (which kept the text) for the same rows and query, marks, ellipses and scripts included."""
    long_text = " ".join(f"word{n}" for n in range(200))
    prompts = {1: f"{long_text} the refund policy says thirty days {long_text}",
               2: "Refund POLICY at the very start, then more words",
               3: "返金ポリシーについて教えてください。refund policy",
               4: "no match here"}
    for trace, prompt in prompts.items():
        store_spans(writer, normalizer, agent_trace(trace, prompt, answer="the refund policy applies"))
    index_all(writer_db)
    old = sqlite3.connect(":memory:")
    old.execute(content_index.CREATE_INDEX)
    old.executemany("INSERT INTO content_index (rowid, trace_id, span_id, body) VALUES (?, ?, ?, ?)",
                    [(rowid, trace, span, stored_texts(writer_db)[rowid]) for rowid, trace, span in
                     writer_db.execute("SELECT id, trace_id, span_id FROM content_text")])
    for search in ("refund policy", "refund", "ポリシー", "thirty days"):
        query = phrase_query(search)
        got = matches(writer_db, f"text:{search}", [1, 2, 3, 4])
        expected = {}
        for trace in (1, 2, 3, 4):
            row = old.execute("SELECT snippet(content_index, 2, ?, ?, '…', ?) FROM content_index WHERE content_index "
                              "MATCH ? AND trace_id = ? ORDER BY rowid LIMIT 1",
                              (MARK_START, MARK_END, content_index.SNIPPET_TOKENS, query,
                               trace_id_bytes(trace))).fetchone()
            if row:
                expected[trace] = row[0].replace(content_index.CHAR_SEPARATOR, "")
        assert {trace: m.snippet for trace, m in got.items()} == expected, search
        assert expected and all(MARK_START in s for s in expected.values())
    old.close()


def test_m012_rebuilds_an_old_stores_index_from_its_spans(db_path: Path, normalizer: Normalizer):
    """A store at m011 has m008's table, text inside: m012 drops it and the indexer fills the new one
    from watermark 0 (its lag is the whole store until then)."""
    from store.migrations import MIGRATIONS

    lock = WriterLock(db_path)
    lock.acquire()
    try:
        db = open_writer(db_path)
        writer = SpanWriter(db, clock=lambda: T0)
        for trace in range(1, 4):
            store_spans(writer, normalizer, agent_trace(trace, f"old store question {trace} about tides"))
        # Back to m011's schema, indexed the old way.
        db.execute("DROP TABLE content_index")
        db.execute("DROP TABLE content_text")
        db.execute(content_index.CREATE_INDEX)
        db.executemany("INSERT INTO content_index (rowid, trace_id, span_id, body) VALUES (?, ?, ?, ?)",
                       [(rowid, trace, span, "stale text about tides") for rowid, trace, span in
                        db.execute("SELECT id, trace_id, span_id FROM spans WHERE name LIKE 'chat%'").fetchall()])
        with db:
            set_meta(db, SPANS_WATERMARK, "6")
        db.execute("PRAGMA user_version = 11")  # m011's: m012 runs again on open
        db.close()

        db = open_writer(db_path)  # migrates
        try:
            assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
            assert get_meta(db, SPANS_WATERMARK) is None and index_lag(db) == (6, 0)
            assert found(db, "text:tides") == set(), "nothing indexed yet"
            ContentIndexer(db).run(deadline_s=30)
            assert index_lag(db) == (0, 0)
            assert found(db, "text:tides") == {1, 2, 3} and found(db, "text:stale") == set()
            assert_index_intact(db)
        finally:
            db.close()
    finally:
        lock.release()


def test_a_search_reads_trace_ids_through_content_text_for_every_path(writer_db, writer, normalizer):
    """The filter's two forms (all matches, for a negation; the newest, for a search) and the match
    count agree with the rows content_text holds."""
    for trace in range(1, 5):
        store_spans(writer, normalizer, agent_trace(trace, "lantern" if trace % 2 else "candle"))
    index_all(writer_db)
    assert found(writer_db, "text:lantern") == {1, 3}
    assert found(writer_db, "!text:lantern") == {2, 4}
    sql, params = content_index.match_count_query(phrase_query("lantern"))
    assert writer_db.execute(sql, params).fetchone()[0] == 2
    assert json.dumps(sorted(matches(writer_db, "text:candle", [1, 2, 3, 4]))) == "[2, 4]"


def test_a_damaged_stored_text_does_not_stop_retention(writer_db, writer, normalizer, caplog):
    old = T0 - 10 * DAY_NS
    for trace in (1, 2):
        store_spans(writer, normalizer, agent_trace(trace, f"old question {trace} lantern", start_ns=old))
    store_spans(writer, normalizer, agent_trace(3, "new question lantern"))
    index_all(writer_db)
    damaged = writer_db.execute("SELECT min(id) FROM content_text").fetchone()[0]
    writer_db.execute("UPDATE content_text SET body = x'00ff00ff' WHERE id = ?", (damaged,))
    writer_db.commit()
    retention.enforce(writer_db, writer, max_age_s=7 * 86400, max_bytes=None, now_ns=T0)
    assert writer_db.execute("SELECT count(*) FROM spans WHERE start_ns < ?", (T0 - 7 * DAY_NS,)).fetchone()[0] == 0
    assert indexed_traces(writer_db, "lantern") == {3}, "the damaged row's leftover postings match no trace"
    assert found(writer_db, "text:lantern") == {3}
    assert "damaged" in caplog.text
