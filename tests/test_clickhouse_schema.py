"""The ClickHouse store's schema on the real engine (chdb, in-process): migrations, and the three merge
rules the store's correctness rests on — signed rollup deltas fold, a re-sent span counts once, a deleted
span is gone — each checked before and after `OPTIMIZE TABLE … FINAL`, so no read depends on a merge."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from store import histogram
from store.clickhouse import schema
from store.clickhouse.client import ChdbClient, ClickHouseError, escape_parameter
from tests.chdb_http_server import engine_path

ZERO_DIMS = dict.fromkeys(schema.ROLLUP_DIMENSIONS, "")
# Recent times: rows older than the retention TTL are dropped as soon as they are written.
NOW_S = int(time.time()) // 60 * 60
BUCKET = NOW_S - 600


def _fresh(name: str = "t") -> str:
    return f"{name}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def database() -> Iterator[str]:
    name = _fresh("schema")
    yield name
    admin = ChdbClient(engine_path(), "default")
    admin.command("DROP DATABASE IF EXISTS {db:Identifier} SYNC", {"db": name})
    admin.close()


@pytest.fixture
def client(database: str) -> Iterator[ChdbClient]:
    client = ChdbClient(engine_path(), database)
    yield client
    client.close()


@pytest.fixture
def migrated(client: ChdbClient) -> ChdbClient:
    assert schema.migrate(client) == list(range(1, len(schema.MIGRATIONS) + 1))
    return client


def _schema_text(client: ChdbClient) -> dict[str, str]:
    return dict(client.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = {db:String}", {"db": client.database}
    ))


def test_migrate_creates_the_tables_and_a_second_run_changes_nothing(migrated: ChdbClient) -> None:
    tables = dict(migrated.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String}", {"db": migrated.database}
    ))
    assert tables == {
        "schema_migrations": "MergeTree",
        "spans": "ReplacingMergeTree",
        "logs": "ReplacingMergeTree",
        "trace_summaries": "ReplacingMergeTree",
        "rollups": "SummingMergeTree",
        "resources": "ReplacingMergeTree",
        "scopes": "ReplacingMergeTree",
        "meta": "ReplacingMergeTree",
        "changes": "ReplacingMergeTree",
        "tool_calls": "ReplacingMergeTree",
        schema.BY_COST_TABLE: "ReplacingMergeTree",
        "tool_rollups": "SummingMergeTree",
        "metric_points": "AggregatingMergeTree",
        "metric_points_dropped": "MergeTree",
        schema.ROOT_CALLS_TABLE: "ReplacingMergeTree",
        f"{schema.ROOT_CALLS_TABLE}_from_spans": "MaterializedView",
    }
    before = _schema_text(migrated)
    assert "CODEC(ZSTD(3))" in before["spans"] and "TTL" in before["spans"]
    assert schema.migrate(migrated) == []
    assert _schema_text(migrated) == before
    assert sorted(migrated.query("SELECT version, name FROM schema_migrations")) == [
        (version, step.__name__) for version, step in enumerate(schema.MIGRATIONS, start=1)]


def test_two_processes_migrating_at_once_apply_each_step_once(
    client: ChdbClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []

    def m002_slow(c: Any) -> None:  # long enough that the two migrations overlap
        ran.append(threading.current_thread().name)
        time.sleep(0.3)
        c.command("CREATE TABLE IF NOT EXISTS extra (x UInt8) ENGINE = MergeTree ORDER BY x")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, m002_slow])
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(name: str) -> None:
        own = ChdbClient(engine_path(), client.database)
        try:
            barrier.wait()
            results[name] = schema.migrate(own, poll_s=0.02, holder=name)
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.close()

    client.command("CREATE DATABASE IF NOT EXISTS {db:Identifier}", {"db": client.database})
    client.use_database()
    threads = [threading.Thread(target=run, args=(n,), name=n) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(ran) == 1, f"step applied by {ran}"
    assert sorted(results["a"] + results["b"]) == list(range(1, len(schema.MIGRATIONS) + 1))
    assert sorted(client.query("SELECT version FROM schema_migrations")) == [(v,) for v in list(range(1, len(schema.MIGRATIONS) + 1))]
    assert client.query("EXISTS TABLE schema_migration_lock") == [(0,)]


def test_a_held_lock_makes_others_wait_and_a_stale_one_is_taken_over(client: ChdbClient) -> None:
    client.command("CREATE DATABASE IF NOT EXISTS {db:Identifier}", {"db": client.database})
    client.use_database()
    client.command(f"CREATE TABLE {schema.LOCK_TABLE} (holder String) ENGINE = Memory")
    with pytest.raises(schema.MigrationLocked, match="drop that table"):
        schema.migrate(client, wait_s=0.3, poll_s=0.05)
    assert client.query("SELECT count() FROM schema_migrations") == [(0,)]
    # A lock older than stale_after_s was left by a process that died: taken over, then released.
    assert schema.migrate(client, stale_after_s=-1) == list(range(1, len(schema.MIGRATIONS) + 1))
    assert client.query(f"EXISTS TABLE {schema.LOCK_TABLE}") == [(0,)]


def test_a_database_from_a_newer_version_is_refused(migrated: ChdbClient) -> None:
    migrated.insert("schema_migrations", [(99, "m099_future", 0, "x")], ["version", "name", "applied_ns", "applied_by"])
    with pytest.raises(schema.SchemaTooNew, match="version 99"):
        schema.migrate(migrated)


def test_retention_is_a_ttl_that_set_retention_changes(migrated: ChdbClient) -> None:
    schema.set_retention(migrated, 30)
    text = _schema_text(migrated)
    for table in ("spans", "logs", "trace_summaries", "rollups", "tool_calls", schema.BY_COST_TABLE, "tool_rollups"):
        assert "toIntervalDay(30)" in text[table], table
    assert "toIntervalHour(2) WHERE res = 10" in text["rollups"]
    with pytest.raises(ValueError):
        schema.set_retention(migrated, 0)


def test_serves_retention_changes_the_ttls_only_when_it_differs(migrated: ChdbClient) -> None:
    """`serve --store … --retention`: ClickHouse keeps --retention in whole days; each start checks it,
    and only a different number of days alters the tables (a TTL change touches every part)."""
    assert schema.ensure_retention(migrated, schema.DEFAULT_RETENTION_DAYS) is False
    assert schema.ensure_retention(migrated, 30) is True
    assert "toIntervalDay(30)" in _schema_text(migrated)["spans"]
    before = _schema_text(migrated)
    assert schema.ensure_retention(migrated, 30) is False
    assert _schema_text(migrated) == before
    assert schema.ensure_retention(migrated, 2) is True
    assert "toIntervalDay(2)" in _schema_text(migrated)["trace_summaries"]


def test_serve_on_clickhouse_keeps_whole_days_there_and_a_day_in_its_working_store() -> None:
    from llmobs_tui.cli.parser import build_parser
    from llmobs_tui.settings import Settings

    def pipeline(*flags: str) -> Any:
        args = build_parser().parse_args(["serve", "--store", "clickhouse://u@ch:8123/db", *flags])
        return Settings.from_args(args, {}).pipeline_config()

    assert (pipeline("--retention", "36h").retention_s, pipeline("--retention", "36h").clickhouse["retention_days"]) \
        == (86400, 2)
    assert pipeline("--retention", "30d").clickhouse["retention_days"] == 30
    assert pipeline("--retention", "2h").retention_s == 7200
    assert pipeline().clickhouse["retention_days"] == 7


# --- rollups: signed deltas ---------------------------------------------------------------------------------

ROLLUP_READ = (
    "SELECT service, model, sum(calls), sum(cost_nusd), sum(input_tokens),"
    " sumMap(latencyMap.bucket, latencyMap.count), sumMap(costMap.bucket, costMap.count)"
    " FROM rollups WHERE res = 60 AND bucket = {b:Int64} GROUP BY service, model ORDER BY service, model"
)


def _rollup_row(service: str, model: str, sign: int, latencies_us: list[float], cost: int, tokens: int,
                bucket: int = BUCKET) -> dict[str, Any]:
    """One call's contribution (sign +1) or its removal (sign −1), as the writer's delta rows are."""
    row: dict[str, Any] = {"res": 60, "bucket": bucket, **ZERO_DIMS, "service": service, "model": model}
    row.update(dict.fromkeys(schema.ROLLUP_COUNTERS, 0))
    row.update(calls=sign * len(latencies_us), cost_nusd=sign * cost, input_tokens=sign * tokens)
    latency = Counter(histogram.bucket_of(v) for v in latencies_us)
    row["latencyMap.bucket"] = sorted(latency)
    row["latencyMap.count"] = [sign * latency[b] for b in sorted(latency)]
    cost_bucket = histogram.bucket_of(cost / 1000)
    row["costMap.bucket"] = [cost_bucket]
    row["costMap.count"] = [sign * len(latencies_us)]
    return row


def insert_rollups(client: Any, rows: list[dict[str, Any]]) -> None:
    names = list(rows[0])
    client.insert("rollups", [[r[n] for n in names] for r in rows], names)


def expected_rollups(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Ground truth: the rows folded in Python, zero histogram entries dropped (as sumMap does)."""
    folded: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        acc = folded.setdefault((r["service"], r["model"]), [0, 0, 0, Counter(), Counter()])
        acc[0] += r["calls"]
        acc[1] += r["cost_nusd"]
        acc[2] += r["input_tokens"]
        for b, c in zip(r["latencyMap.bucket"], r["latencyMap.count"]):
            acc[3][b] += c
        for b, c in zip(r["costMap.bucket"], r["costMap.count"]):
            acc[4][b] += c
    out = []
    for (service, model), (calls, cost, tokens, lat, cst) in sorted(folded.items()):
        hist = [{b: c for b, c in sorted(h.items()) if c} for h in (lat, cst)]
        out.append((service, model, calls, cost, tokens, hist[0], hist[1]))
    return out


def read_rollups(client: Any) -> list[tuple[Any, ...]]:
    return [(*row[:5], dict(zip(*row[5])), dict(zip(*row[6]))) for row in client.query(ROLLUP_READ, {"b": BUCKET})]


def signed_delta_rows() -> list[dict[str, Any]]:
    """Three calls billed, then one of them moved to another model (billing-once found its real caller):
    −old contribution, +new; and a call added and fully taken back (forget)."""
    return [
        _rollup_row("api", "gpt-4o", +1, [120_000.0, 950_000.0], cost=5_000_000, tokens=1200),
        _rollup_row("api", "gpt-4o", +1, [40_000.0], cost=1_000_000, tokens=300),
        _rollup_row("api", "gpt-4o", -1, [40_000.0], cost=1_000_000, tokens=300),
        _rollup_row("api", "gpt-4o-mini", +1, [40_000.0], cost=1_000_000, tokens=300),
        _rollup_row("bot", "claude", +1, [7_000.0], cost=9, tokens=10),
        _rollup_row("bot", "claude", -1, [7_000.0], cost=9, tokens=10),
    ]


def test_signed_rollup_deltas_fold_before_and_after_merges(migrated: ChdbClient) -> None:
    rows = signed_delta_rows()
    for row in rows:  # one INSERT each: separate parts, nothing merged yet
        insert_rollups(migrated, [row])
    truth = expected_rollups(rows)
    assert truth[0][2:5] == (2, 5_000_000, 1200) and truth[2][2:] == (0, 0, 0, {}, {})
    assert read_rollups(migrated) == truth
    migrated.command("OPTIMIZE TABLE rollups FINAL")
    assert migrated.query("SELECT count() FROM system.parts WHERE database = {db:String} AND table = 'rollups' AND active",
                          {"db": migrated.database}) == [(1,)]
    assert read_rollups(migrated) == truth
    # The merge summed the histograms key by key (not kept one row's): read without sumMap.
    merged = migrated.query(
        "SELECT latencyMap.bucket, latencyMap.count FROM rollups WHERE service = 'api' AND model = 'gpt-4o'"
    )
    assert merged == [(sorted(truth[0][5]), [truth[0][5][b] for b in sorted(truth[0][5])])]
    # Percentiles read back within the histogram's bound.
    p50_bucket = sorted(truth[0][5])[0]
    assert histogram.bucket_value(p50_bucket) == pytest.approx(120_000.0, rel=histogram.RELATIVE_ERROR)


# --- spans: replacing ------------------------------------------------------------------------------------------

SPAN_MIN = ["trace_id", "span_id", "name", "kind", "start_ns", "end_ns", "cost_nusd", "billed", "raw", "version",
            "is_deleted"]


def _span(version: int, billed: int, cost: int | None, deleted: int = 0, span_id: bytes = b"S" * 8) -> list[Any]:
    return [b"T" * 16, span_id, "chat gpt-4o", "llm", NOW_S * 10**9, (NOW_S + 1) * 10**9, cost, billed,
            b"\x0a\x10proto\x00bytes", version, deleted]


SPANS_READ = ("SELECT span_id, billed, cost_nusd, raw FROM spans FINAL WHERE trace_id = {t:FixedString(16)}"
              " ORDER BY span_id")


def test_a_resent_span_counts_once_and_the_newest_version_wins(migrated: ChdbClient) -> None:
    migrated.insert("spans", [_span(1, 1, 500)], SPAN_MIN)
    migrated.insert("spans", [_span(1, 1, 500)], SPAN_MIN)  # the exporter retried: the same span again
    migrated.insert("spans", [_span(2, 0, 500)], SPAN_MIN)  # the writer un-billed it (a child is billed)
    migrated.insert("spans", [_span(1, 0, 7, span_id=b"C" * 8)], SPAN_MIN)
    assert migrated.query("SELECT count() FROM spans") == [(4,)]  # unmerged: FINAL is what reads must use
    expected = [(b"C" * 8, 0, 7, b"\x0a\x10proto\x00bytes"), (b"S" * 8, 0, 500, b"\x0a\x10proto\x00bytes")]
    assert migrated.query(SPANS_READ, {"t": b"T" * 16}, bytes_columns=("raw",)) == expected
    migrated.command("OPTIMIZE TABLE spans FINAL")
    assert migrated.query("SELECT count() FROM spans") == [(2,)]
    assert migrated.query(SPANS_READ, {"t": b"T" * 16}, bytes_columns=("raw",)) == expected
    # forget: the span re-inserted as deleted disappears from reads at once, and from disk at the merge.
    migrated.insert("spans", [_span(3, 0, 500, deleted=1)], SPAN_MIN)
    assert migrated.query(SPANS_READ, {"t": b"T" * 16}, bytes_columns=("raw",)) == expected[:1]
    migrated.command("OPTIMIZE TABLE spans FINAL")
    assert migrated.query(SPANS_READ, {"t": b"T" * 16}, bytes_columns=("raw",)) == expected[:1]


HOSTILE = "it's \"quoted\" {x:String} $$ `tick` \\N back\\slash\nnew line\ttab\r\x00nul ; DROP TABLE spans; -- é 😀"


def test_a_hostile_string_round_trips_as_data(migrated: ChdbClient) -> None:
    assert migrated.query("SELECT {s:String} AS s", {"s": HOSTILE}) == [(HOSTILE,)]
    row = _span(1, 0, None)
    row[2] = HOSTILE
    migrated.insert("spans", [row], SPAN_MIN)
    assert migrated.query("SELECT name FROM spans FINAL WHERE name = {n:String}", {"n": HOSTILE}) == [(HOSTILE,)]
    assert migrated.query("SELECT count() FROM spans FINAL WHERE name = {n:String}", {"n": HOSTILE[:-1]}) == [(0,)]
    assert migrated.query("SELECT {b:String} AS b", {"b": b"\x00\xff'\n"}, bytes_columns=("b",)) == [(b"\x00\xff'\n",)]
    assert migrated.query("SELECT {a:Array(String)} AS a", {"a": [HOSTILE, "x"]}) == [([HOSTILE, "x"],)]


def test_escape_parameter_covers_every_special_character() -> None:
    assert escape_parameter("a\\b\tc\nd\re\0f'g") == "a\\\\b\\tc\\nd\\re\\0f\\'g"
    assert escape_parameter(None) == "\\N"
    assert escape_parameter(b"\x00\xff") == "\\x00\\xff"
    assert escape_parameter(True) == "1" and escape_parameter(-3) == "-3"
    assert escape_parameter(["a'b", None, 2]) == "['a\\'b', NULL, 2]"
    with pytest.raises(TypeError):
        escape_parameter(object())


def test_errors_carry_clickhouse_codes_and_bad_identifiers_are_refused(migrated: ChdbClient) -> None:
    with pytest.raises(ClickHouseError) as caught:
        migrated.query("SELECT * FROM no_such_table")
    assert caught.value.code == 60
    with pytest.raises(ValueError, match="not a plain identifier"):
        migrated.insert("spans; DROP TABLE spans", [[1]], ["trace_id"])
    with pytest.raises(ValueError, match="not a plain identifier"):
        migrated.insert("spans", [[1]], ["trace_id`"])
    with pytest.raises(ClickHouseError, match="no column"):
        migrated.insert("spans", [[1]], ["no_such_column"])
    # A refused insert loses nothing already stored.
    migrated.insert("spans", [_span(1, 1, 5)], SPAN_MIN)
    with pytest.raises(ClickHouseError):
        migrated.insert("spans", [[*_span(1, 1, 5)[:-2], "not a number", 0]], SPAN_MIN)
    assert migrated.query("SELECT count() FROM spans FINAL") == [(1,)]


def test_root_calls_hold_the_root_calls_of_spans_before_and_after_m011(client: ChdbClient,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """m011: `root_calls` (store/clickhouse/twin_calls.py) is filled from the spans already stored (the last two
    days) and then, by its view, from every insert into `spans`: the calls that are a root, deletion rows too,
    and nothing else. Its retention follows `set_retention`."""
    columns = [*SPAN_MIN, "parent_span_id", "response_id", "call_layer"]
    now = time.time_ns()

    def span(trace: int, parent: bytes | None, response_id: str | None, kind: str = "llm", start: int = now,
             deleted: int = 0) -> list[Any]:
        return [trace.to_bytes(16, "big"), b"S" * 8, "chat", kind, start, start + 10**9, 1, 1, b"", 1 + deleted,
                deleted, parent, response_id, 0]

    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:10])
    schema.migrate(client)
    client.insert("spans", [
        span(1, None, "msg_root"),  # a root call: copied
        span(2, b"P" * 8, "msg_child"),  # under another span
        span(3, None, None),  # no response id
        span(4, None, "msg_tool", kind="tool"),  # not a call
        span(5, None, "msg_old", start=now - 3 * 86_400 * 10**9),  # older than the lookups look
    ], columns)
    monkeypatch.undo()
    assert schema.migrate(client) == [11]
    read = f"SELECT response_id, is_deleted FROM {schema.ROOT_CALLS_TABLE} ORDER BY response_id, is_deleted"
    assert client.query(read) == [("msg_root", 0)]
    client.insert("spans", [span(6, None, "msg_new"), span(7, b"P" * 8, "msg_new_child"),
                            span(1, None, "msg_root", deleted=1)], columns)  # forgotten
    assert client.query(read) == [("msg_new", 0), ("msg_root", 0), ("msg_root", 1)]
    assert client.query(f"SELECT response_id FROM {schema.ROOT_CALLS_TABLE} FINAL") == [("msg_new",)]
    schema.set_retention(client, 30)
    assert "toIntervalDay(30)" in _schema_text(client)[schema.ROOT_CALLS_TABLE]
