"""The SQLite store: schema, connections, bad files, retention, histograms, query plans."""

from __future__ import annotations

import itertools
import math
import os
import random
import sqlite3
from pathlib import Path

import pytest

from store import histogram, retention
from store.alerts import _PIECE_WHERE, _SUMS
from store.charts import cost_burn_query
from store.connection import StoreError, StoreLocked, WriterLock, open_reader, open_writer
from store.dashboards import fold_top, overview_queries
from store.drift import drift_queries
from store.migrations import MIGRATIONS, migrate
from store.queries import rollup_ranges, total_rows
from store.writer import SpanWriter
from tests.otlp_factory import T0, make_span, trace_request

NS = 10**9


def test_a_new_store_is_wal_migrated_and_incrementally_vacuumed(db_path):
    db = open_writer(db_path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert migrate(db) == 0, "reopening must not migrate again"
    db.close()


def test_a_store_upgraded_to_the_rollup_sums_index_pins_its_planner_statistics(db_path, monkeypatch):
    """m014 on a store an earlier release made: the index comes with its row of pinned statistics, and
    the alert rules' per-dimension sums stay on the primary key (an index without statistics once drew
    them onto itself: 70 s an evaluation on a 3M-span store)."""
    monkeypatch.setattr("store.migrations.MIGRATIONS", MIGRATIONS[:13])
    db = open_writer(db_path)
    # An earlier release's pinned statistics had no row for an index it did not have.
    db.execute("DELETE FROM sqlite_stat1 WHERE idx = 'rollups_sums'")
    db.close()
    monkeypatch.setattr("store.migrations.MIGRATIONS", MIGRATIONS)
    db = open_writer(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("SELECT stat FROM sqlite_stat1 WHERE idx = 'rollups_sums'").fetchone() is not None
    db.close()
    reader = open_reader(db_path)
    piece = " ".join(row[3] for row in reader.execute(f"EXPLAIN QUERY PLAN SELECT r.dims_id, {_SUMS} {_PIECE_WHERE}",
                                                     (3600, 0, 86400 * 7)))
    assert "PRIMARY KEY (res=? AND bucket>? AND bucket<?)" in piece, piece
    reader.close()


def test_a_failing_migration_leaves_the_previous_schema(db_path, monkeypatch):
    db = open_writer(db_path)

    def broken(conn):
        conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("boom")

    monkeypatch.setattr("store.migrations.MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(RuntimeError, match="boom"):
        migrate(db)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0


def test_a_version_1_store_with_data_migrates_and_keeps_its_history(db_path, normalizer, monkeypatch):
    """A store written before the alerting columns existed opens, gains them, and its old rollups
    still report (without the new histograms)."""
    from store.queries import grouped_rollups

    monkeypatch.setattr("store.migrations.MIGRATIONS", MIGRATIONS[:1])
    db = open_writer(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    from store.writer import ROLLUP_COUNTERS

    # refusals came with m007: not a version-1 column
    counters = {name: 0 for name in ROLLUP_COUNTERS if name != "refusals"} | {"calls": 3, "cost_nusd": 9000}
    db.execute(f"INSERT INTO rollups (res, bucket, dims_id, {', '.join(counters)}, hist_latency) "
               f"VALUES (60, ?, 0, {', '.join('?' * len(counters))}, ?)",
               (T0 // NS - T0 // NS % 60, *counters.values(), histogram.encode({histogram.bucket_of(2e6): 3})))
    db.close()
    monkeypatch.undo()
    db = open_writer(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    columns = {row[1] for row in db.execute("PRAGMA table_info(rollups)")}
    assert {"hist_cost", "hist_tokens"} <= columns
    assert {"eval_name", "eval_score"} <= {row[1] for row in db.execute("PRAGMA table_info(logs)")}
    (group,) = grouped_rollups(db, T0 // NS - 3600, T0 // NS + 60, [])
    assert group["calls"] == 3 and group["cost_nusd"] == 9000 and histogram.count(group.latency) == 3
    assert group.cost == {} and group.tokens == {}
    # New spans write the new histograms next to the old rows.
    writer = SpanWriter(db)
    span = make_span(1, 1, None, "chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                                 "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10})
    rows, resources, scopes, _ = normalizer.decode_traces(trace_request([span]), T0)
    writer.write(rows, [], resources, scopes)
    (group,) = grouped_rollups(db, T0 // NS - 3600, T0 // NS + 60, [])
    assert group["calls"] == 4 and histogram.count(group.tokens) == 1 and histogram.count(group.cost) == 1
    db.close()


def test_a_store_from_a_newer_version_is_refused(db_path):
    db = open_writer(db_path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        open_writer(db_path)
    with pytest.raises(StoreError, match="newer"):
        open_reader(db_path)


def test_readers_cannot_write(db_path):
    open_writer(db_path).close()
    reader = open_reader(db_path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM spans")


def test_a_corrupt_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match="not a usable llmobs-tui database"):
        open_writer(path)
    with pytest.raises(StoreError, match="not a usable llmobs-tui database"):
        open_reader(path)


def test_a_missing_store_gets_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no database"):
        open_reader(tmp_path / "nope.db")


def test_a_plain_sqlite_file_is_not_mistaken_for_a_store(tmp_path):
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not an llmobs-tui database"):
        open_reader(path)


def test_only_one_process_may_write(db_path):
    first = WriterLock(db_path)
    first.acquire()
    with pytest.raises(StoreLocked, match=f"pid {os.getpid()}"):
        WriterLock(db_path).acquire()
    first.release()
    second = WriterLock(db_path)
    second.acquire()
    second.release()


def test_a_locked_database_gets_a_clear_error(db_path):
    open_writer(db_path).close()
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("PRAGMA locking_mode = EXCLUSIVE")
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        db = sqlite3.connect(db_path, isolation_level=None, timeout=0.1)
        with pytest.raises(sqlite3.OperationalError) as excinfo:
            db.execute("BEGIN IMMEDIATE")
        from store.connection import describe_error

        assert "locked by another process" in describe_error(db_path, excinfo.value)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


# --- retention -----------------------------------------------------------------------------------


def _ingest(writer, normalizer, trace_id: int, start_ns: int, content: int = 0) -> None:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
             "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}
    if content:
        attrs["gen_ai.input.messages"] = os.urandom(content).hex()
    spans = [make_span(trace_id, 1, None, "root", {}, start_ns=start_ns, end_ns=start_ns + NS),
             make_span(trace_id, 2, 1, "chat gpt-4o", attrs, start_ns=start_ns, end_ns=start_ns + NS // 2)]
    rows, resources, scopes, _ = normalizer.decode_traces(trace_request(spans), received_ns=start_ns + 2 * NS)
    writer.write(rows, [], resources, scopes)


def test_retention_by_age_evicts_whole_old_traces_and_old_rollups(writer, writer_db, normalizer):
    now = T0 + 30 * 86400 * NS
    _ingest(writer, normalizer, 1, now - 10 * 86400 * NS)
    _ingest(writer, normalizer, 2, now - 3600 * NS)
    result = retention.enforce(writer_db, writer, max_age_s=7 * 86400, max_bytes=None, now_ns=now)
    assert (result.traces, result.spans) == (1, 2)
    assert [r[0] for r in writer_db.execute("SELECT trace_id FROM traces")] == [(2).to_bytes(16, "big")]
    assert writer_db.execute("SELECT count(*) FROM spans WHERE trace_id = ?", ((1).to_bytes(16, "big"),)).fetchone()[0] == 0
    oldest_bucket = writer_db.execute("SELECT min(bucket) FROM rollups").fetchone()[0]
    assert oldest_bucket >= (now - 7 * 86400 * NS) // NS - 3600
    # The writer forgot the evicted trace: a late span of it starts a fresh trace, counted once.
    _ingest(writer, normalizer, 1, now - 60 * NS)
    assert writer_db.execute("SELECT spans FROM traces WHERE trace_id = ?", ((1).to_bytes(16, "big"),)).fetchone()[0] == 2


def test_retention_by_size_evicts_oldest_whole_traces_until_under_the_limit(writer, writer_db, normalizer, db_path):
    for i in range(200):
        _ingest(writer, normalizer, 1000 + i, T0 + i * NS, content=4000)
    before = retention.used_bytes(writer_db)
    limit = before // 2
    result = retention.enforce(writer_db, writer, max_age_s=None, max_bytes=limit, now_ns=T0 + 1000 * NS,
                               deadline_s=30)
    assert result.traces > 0
    assert retention.used_bytes(writer_db) <= limit
    kept = [int.from_bytes(r[0], "big") for r in writer_db.execute("SELECT trace_id FROM traces ORDER BY start_ns")]
    assert kept == list(range(1200 - len(kept), 1200)), "the newest traces are the ones kept"
    orphans = writer_db.execute(
        "SELECT count(*) FROM spans WHERE trace_id NOT IN (SELECT trace_id FROM traces)").fetchone()[0]
    assert orphans == 0, "traces are evicted whole"
    assert writer_db.execute("SELECT sum(spans) FROM traces").fetchone()[0] == \
        writer_db.execute("SELECT count(*) FROM spans").fetchone()[0]
    writer_db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert os.path.getsize(db_path) < before, "freed pages went back to the file system"


# --- histograms and query plumbing ---------------------------------------------------------------


def test_histogram_quantiles_stay_within_the_stated_relative_error():
    rng = random.Random(7)
    values = [rng.lognormvariate(12, 1.5) for _ in range(20_000)]  # µs: ms to minutes
    counts: dict[int, int] = {}
    for v in values:
        b = histogram.bucket_of(v)
        counts[b] = counts.get(b, 0) + 1
    blob = histogram.encode(counts)
    merged = histogram.merge([blob, None])
    ordered = sorted(values)
    for q, got in zip((0.5, 0.95, 0.99), histogram.quantiles(merged, (0.5, 0.95, 0.99))):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        assert abs(got - exact) / exact <= histogram.RELATIVE_ERROR + 1e-9


def test_histograms_subtract_exactly():
    counts: dict[int, int] = {}
    histogram.decode_into(histogram.encode({10: 3, 20: 1}), counts)
    histogram.decode_into(histogram.encode({10: 1}), counts, sign=-1)
    assert histogram.quantiles(counts, (0.5,)) == [histogram.bucket_value(10)]
    assert histogram.count(counts) == 3


@pytest.mark.parametrize("start,end", [(0, 59), (30, 7200), (3599, 3601), (3600, 7200), (100, 90000), (5000, 5000)])
def test_rollup_ranges_cover_the_window_without_overlap(start, end):
    base = 1_767_000_000 - 1_767_000_000 % 3600
    start += base
    end += base
    covered: list[tuple[int, int]] = []
    for res, lo, hi in rollup_ranges(start, end):
        assert lo % res == 0 and hi % res == 0
        covered.append((lo, hi))
    covered.sort()
    for (_, a_hi), (b_lo, _) in itertools.pairwise(covered):
        assert a_hi == b_lo, "no gaps or overlaps"
    assert covered[0][0] <= start and covered[-1][1] > end


def test_hot_queries_use_their_indexes_even_on_a_young_store(writer, writer_db, normalizer, db_path):
    """A store with two spans must plan like one with millions: planner statistics are pinned."""
    _ingest(writer, normalizer, 1, T0)
    writer_db.close()
    writer_db = open_reader(db_path)

    def plan(sql: str, params: tuple) -> str:
        return " ".join(row[3] for row in writer_db.execute("EXPLAIN QUERY PLAN " + sql, params))

    assert "spans_by_trace" in plan("SELECT * FROM spans WHERE trace_id = ?", (b"x" * 16,))
    assert "traces_by_start" in plan("SELECT * FROM traces WHERE start_ns > ? ORDER BY start_ns DESC LIMIT 50", (0,))
    assert "PRIMARY KEY" in plan("SELECT * FROM rollups WHERE res = 60 AND bucket >= ? AND bucket < ?", (0, 1))
    # The alert rules' per-dimension sums of a time range (store.alerts.SharedRollups): by the time range. An
    # index led by (res, dims_id) without its pinned statistics tempted SQLite to skip the GROUP BY's sort by
    # walking every row of the resolution instead: 70 s an evaluation on a 3M-span store (fails then).
    piece = plan(f"SELECT r.dims_id, {_SUMS} {_PIECE_WHERE}", (60, 0, 1))
    assert "PRIMARY KEY (res=? AND bucket>? AND bucket<?)" in piece, piece
    # The Overview's top features and models (m014): cost and calls from their index, a time range at a time.
    top = overview_queries(86400 * 7, T0 / 1e9)["top"]
    assert plan(top.sql, top.params).count("COVERING INDEX rollups_sums (res=? AND bucket>? AND bucket<?)") == 3
    # The total rows by their bucket starts (store.queries.total_rows), not every dimension set's rows of
    # the range: the Overview's buckets and today's cost, the cost burn, the drift panel's periods and rates.
    assert "logs_by_span" in plan("SELECT * FROM logs WHERE trace_id = ? AND span_id = ?", (b"x" * 16, b"y" * 8))
    now_s = T0 / 1e9
    for query in (*(overview_queries(w, now_s)[name] for w in (300, 86400 * 7) for name in ("buckets", "today")),
                  cost_burn_query(now_s), *drift_queries(86400, now_s).values()):
        if "FROM rollups" in query.sql:
            shown = plan(query.sql, query.params)
            assert "(res=? AND bucket=? AND dims_id=?)" in shown and "SCAN" not in shown, query.sql


def test_total_rows_are_the_total_rows_of_the_ranges():
    """total_rows lists every bucket start of each range: the same rows as the range with dims_id = 0,
    whatever the window, both resolutions, and nothing of the other dimension sets or past the ends."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE rollups (res INTEGER, bucket INTEGER, dims_id INTEGER, calls INTEGER, "
               "PRIMARY KEY (res, bucket, dims_id)) WITHOUT ROWID")
    base = 1_767_000_000 - 1_767_000_000 % 3600
    rng = random.Random(7)
    db.executemany("INSERT OR IGNORE INTO rollups VALUES (?, ?, ?, 1)",
                   [(res, base + rng.randrange(-3 * 86400, 3 * 86400) // res * res, rng.randrange(4))
                    for res in (60, 3600) for _ in range(3000)])
    for _ in range(200):
        start = base + rng.randrange(-3 * 86400, 3 * 86400)
        ranges = rollup_ranges(start, start + rng.choice((59, 600, 3600, 7300, 86400, 200_000, 3 * 86400 * 365)))
        by_range = " OR ".join("(res = ? AND bucket >= ? AND bucket < ?)" for _ in ranges)
        expected = db.execute(f"SELECT res, bucket FROM rollups WHERE ({by_range}) AND dims_id = 0 ORDER BY 1, 2",
                              [x for r in ranges for x in r]).fetchall()
        condition, params = total_rows(ranges, alias="")
        assert db.execute(f"SELECT res, bucket FROM rollups WHERE {condition} ORDER BY 1, 2", params).fetchall() == expected
    assert total_rows([], alias="") == ("(0)", ())
    # Years of hour rows stay within SQLite's limit on parameters (32,766): a range read then.
    ranges = rollup_ranges(base - 10 * 365 * 86400, base + 7300)
    condition, params = total_rows(ranges, alias="")
    assert len(params) < 1000
    by_range = " OR ".join("(res = ? AND bucket >= ? AND bucket < ?)" for _ in ranges)
    expected = db.execute(f"SELECT res, bucket FROM rollups WHERE ({by_range}) AND dims_id = 0 ORDER BY 1, 2",
                          [x for r in ranges for x in r]).fetchall()
    assert len(expected) > 50
    assert db.execute(f"SELECT res, bucket FROM rollups WHERE {condition} ORDER BY 1, 2", params).fetchall() == expected


def test_none_bytes_and_bool_are_bound_without_sqlite3s_protocol_lookup_and_store_the_same():
    """store.connection registers pass-through adapters (the protocol lookup they skip was 40 % of the
    spans INSERT): in a fresh interpreter, every value binds and reads back as it did before, and
    no base type that sqlite3 binds directly has been given one."""
    import subprocess
    import sys

    probe = """
import sqlite3
def stored():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (v)")
    values = [None, b"", b"\\x00blob", True, False, 0, -2**63, 2**63 - 1, 1.5, "", "text \\u00e9", bytearray(b"ba")]
    db.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    return db.execute("SELECT v, typeof(v) FROM t").fetchall()
before = stored()
import store.connection
after = stored()
assert before == after, (before, after)
registered = {t.__name__ for t, proto in sqlite3.adapters if proto is sqlite3.PrepareProtocol}
assert {"NoneType", "bytes", "bool"} <= registered, registered
assert not registered & {"int", "float", "str", "bytearray"}, registered
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_writer_lock_file_lives_next_to_the_database(db_path: Path):
    lock = WriterLock(db_path)
    lock.acquire()
    assert lock.path == db_path.with_name(db_path.name + ".lock")
    assert lock.path.read_text() == str(os.getpid())
    lock.release()


def test_span_writer_resumes_ids_after_reopening(db_path, normalizer):
    db = open_writer(db_path)
    _ingest(SpanWriter(db), normalizer, 1, T0)
    db.close()
    db = open_writer(db_path)
    _ingest(SpanWriter(db), normalizer, 2, T0)
    ids = [r[0] for r in db.execute("SELECT id FROM spans ORDER BY id")]
    assert ids == [1, 2, 3, 4]


def test_the_overviews_top_features_and_models_are_folded_from_one_read_of_both():
    """(feature, model) sums → features by cost then calls, models by calls (named only), ties by name."""
    rows = [("chat", "gpt-4o", 500, 10), ("chat", "claude", 100, 10), ("search", "gpt-4o", 300, 5),
            ("", "claude", 200, 3), (None, "", 50, 40), ("search", "mini", 300, 5)]
    features, models = fold_top(rows)
    assert features == [("chat", 600, 20), ("search", 600, 10), ("", 200, 3), (None, 50, 40)]
    assert models == [("gpt-4o", 800, 15), ("claude", 300, 13), ("mini", 300, 5)]
    tied = fold_top([(f"f{i}", f"m{9 - i}", 1, 1) for i in range(10)])
    assert [f for f, _, _ in tied[0]] == [f"f{i}" for i in range(8)]  # equal figures by name, top 8
    assert [m for m, _, _ in tied[1]] == [f"m{i}" for i in range(8)]


def test_a_histogram_is_encoded_as_bucket_ordered_pairs_without_empty_buckets():
    """The stored format (readers in SQL and ClickHouse parse it): little-endian int32 (bucket,
    count) pairs in bucket order; a bucket a subtraction emptied is left out; nothing left is None."""
    import struct

    rng = random.Random(11)
    for _ in range(300):
        counts = {rng.randint(0, histogram.MAX_BUCKET): rng.choice([0, 0, 1, 2, 7, -1, 2**31 - 1])
                  for _ in range(rng.randint(0, 60))}
        kept = sorted((b, c) for b, c in counts.items() if c)
        blob = histogram.encode(counts)
        if not kept:
            assert blob is None
            continue
        assert blob == b"".join(struct.pack("<ii", b, c) for b, c in kept)
        assert histogram.merge([blob]) == dict(kept)


def test_histogram_quantiles_are_the_nearest_rank_of_the_expanded_values():
    """quantiles() against the definition, on histograms with empty and negative (subtracted) buckets;
    and decode_into's merge adds like counting one by one, of separate blobs and of blobs concatenated."""
    rng = random.Random(5)
    qs = (0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 1.0)
    for _ in range(400):
        counts = {rng.randint(0, 300): rng.choice([0, -2, 1, 1, 3, 40]) for _ in range(rng.randint(0, 50))}
        values = sorted(b for b, c in counts.items() for _ in range(max(c, 0)))
        expected = [histogram.bucket_value(values[max(1, math.ceil(q * len(values))) - 1]) if values else None
                    for q in qs]
        assert histogram.quantiles(counts, qs) == expected
        # Three blobs sharing buckets (a bucket's count split between them), as a merge of minutes reads.
        parts: list[dict[int, int]] = [{}, {}, {}]
        one_by_one: dict[int, int] = {}
        for b, c in counts.items():
            for _ in range(abs(c)):
                part = parts[rng.randrange(3)]
                part[b] = part.get(b, 0) + 1
                one_by_one[b] = one_by_one.get(b, 0) + 1
        blobs = [histogram.encode(part) for part in parts]
        assert histogram.merge(blobs) == one_by_one
        # The readers' SQL concatenates the blobs of many rows: one blob repeating buckets.
        assert histogram.merge([b"".join(blob for blob in blobs if blob)]) == one_by_one
