"""The trace list by cost on ClickHouse reads trace_summaries_by_cost (m007) with a cost bound (issue 17).

The by-cost copy is sorted by (start day, cost), so every version of a trace whose cost or start day changed
is a row of its own until the writer's deletion row at its old key folds it (store/clickhouse/rows.py,
by_cost_rows). Here the summaries are written version by version as the sink writes them, with merges
stopped (the stale rows stay in their parts, as between two merges), costs that rise and fall, starts that
move across a day and out of the window, and deleted traces; every list is checked against the live
summaries sorted in Python.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from store.clickhouse import dashboards
from store.clickhouse import rows as ch_rows
from store.clickhouse.client import HttpClient
from store.clickhouse.schema import BY_COST_TABLE, DAY_NS, start_hour
from store.filters import SPAN_FIELDS

NS = 1_000_000_000
HOUR = 3600 * NS
NOW_NS = 1_796_000_000 * NS // DAY_NS * DAY_NS + 6 * HOUR  # 06:00 UTC: the last 24 h span two days
WINDOW_S = 86400
_FEATURE_AT = ch_rows.TRACE_COLUMNS.index("feature")
_START_AT = ch_rows.TRACE_COLUMNS.index("start_ns")
_END_AT = ch_rows.TRACE_COLUMNS.index("end_ns")
_COST_AT = ch_rows.TRACE_COLUMNS.index("cost_nusd")


class CountingClient:
    """The client, with the SQL of every query it was asked (which reads the list took)."""

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        self.sql: list[str] = []
        self.params: list[dict[str, Any]] = []

    def query(self, sql: str, parameters: dict[str, Any] | None = None, **kw: Any) -> list[tuple]:
        self.sql.append(sql)
        self.params.append(dict(parameters or {}))
        return self.client.query(sql, parameters, **kw)


def _summary(trace_id: bytes, start: int, cost: int, feature: str, version: int) -> list[Any]:
    row = ch_rows.trace_tombstones([trace_id], version, start)[0]
    row[-1] = 0
    row[ch_rows.TRACE_COLUMNS.index("root_known")] = 1
    row[_END_AT] = start + NS
    row[_COST_AT] = cost
    row[_FEATURE_AT] = feature
    return row


def _write(client: HttpClient, versions: list[tuple[bytes, int | None, int, str]], batch: int = 12
           ) -> dict[bytes, tuple]:
    """Write each (trace, start or None: forgotten, cost, feature) as the sink ships it, `batch` versions to
    an insert into each table (parts of their own), with the deletion rows for the keys ClickHouse held;
    returns the live summaries {trace: (start, cost, feature)}."""
    held: dict[bytes, tuple[int, int]] = {}
    live: dict[bytes, tuple] = {}
    for first in range(0, len(versions), batch):
        summaries: list[list[Any]] = []
        by_cost: list[list[Any]] = []
        for n, (trace_id, start, cost, feature) in enumerate(versions[first:first + batch], start=first):
            version = NOW_NS + n
            old = held.get(trace_id)
            if start is None:
                summary = ch_rows.trace_tombstones([trace_id], version)[0]
                tombstones = ch_rows.trace_tombstones([trace_id], version, old[0]) if old else []
                held.pop(trace_id, None)
                live.pop(trace_id, None)
            else:
                summary = _summary(trace_id, start, cost, feature, version)
                moved = old is not None and start_hour(old[0]) != start_hour(start)
                tombstones = ch_rows.trace_tombstones([trace_id], version, old[0]) if moved else []
                held[trace_id] = (start, cost)
                live[trace_id] = (start, cost, feature)
            summaries += [summary, *tombstones]
            by_cost += ch_rows.by_cost_rows([summary], {trace_id: [old]} if old else {})
        client.insert("trace_summaries", summaries, ch_rows.TRACE_INSERT_COLUMNS)
        if by_cost:
            client.insert(BY_COST_TABLE, by_cost, ch_rows.TRACE_INSERT_COLUMNS)
    return live


def _traffic(seed: int, traces: int = 240) -> list[tuple[bytes, int | None, int, str]]:
    """Traces written in 1–4 versions, interleaved: a cost that rises as spans arrive, falls (a reprice, a
    call billed elsewhere) or stays; a start that moves earlier (a late root), some across midnight or out of
    the window's start; one in twelve forgotten at the end, one in twenty revived after that."""
    rng = random.Random(seed)
    pending: list[list[tuple[bytes, int | None, int, str]]] = []
    for t in range(traces):
        trace_id = (0xC0 << 120 | t).to_bytes(16, "big")
        start = NOW_NS - rng.randrange(0, WINDOW_S * NS + 3 * HOUR)  # some before the window
        cost = rng.choice([0, 1, 2, rng.randrange(1, 10**6), rng.randrange(1, 10**9)])
        feature = rng.choice(["ask", "search"])
        steps = []
        for _ in range(rng.randint(1, 4)):
            steps.append((trace_id, start, cost, feature))
            cost = max(0, int(cost * rng.choice([0.3, 1, 1, 1.7, 3])) + rng.randrange(0, 3))
            if rng.random() < 0.3:
                start -= rng.choice([NS, 40 * 60 * NS, 7 * HOUR])
        if t % 12 == 0:
            steps.append((trace_id, None, 0, feature))
            if t % 24 == 0:
                steps.append((trace_id, start, cost, feature))
        pending.append(steps)
    out = []
    while pending:
        steps = pending[rng.randrange(len(pending))]
        out.append(steps.pop(0))
        if not steps:
            pending.remove(steps)
    return out


def _expected(live: dict[bytes, tuple], descending: bool, limit: int, feature: str | None = None) -> list[tuple]:
    since = NOW_NS - WINDOW_S * NS
    rows = [(t, start, cost) for t, (start, cost, f) in live.items()
            if start >= since and (feature is None or f == feature)]
    # cost in the asked direction, then the newest start, then the highest id (store/dashboards.py's order)
    rows.sort(key=lambda r: (-r[2] if descending else r[2], -r[1], [-b for b in r[0]]))
    return rows[:limit]


def _listed(client: Any, descending: bool, limit: int, terms: list | None = None) -> list[tuple]:
    got = dashboards.trace_list(client, WINDOW_S, NOW_NS / NS, terms or [], False, "cost", descending, limit)
    return [(t.trace_id, t.start_ns, t.cost_nusd) for t in got]


@pytest.fixture(scope="module")
def written(server: Any) -> Iterator[tuple[HttpClient, dict[bytes, tuple]]]:
    """(a client on a database written with _traffic, merges stopped; the live summaries), for the module:
    its tests only read."""
    from store.clickhouse import schema
    from store.clickhouse.client import ChdbClient
    from store.clickhouse.url import PASSWORD_ENV, parse_store_url
    from tests.chdb_http_server import engine_path
    from tests.clickhouse_fixtures import PASSWORD, USER

    database = f"bycost_{uuid.uuid4().hex[:12]}"
    client = HttpClient(parse_store_url(f"clickhouse://{USER}@127.0.0.1:{server.port}/{database}",
                                        {PASSWORD_ENV: PASSWORD}))
    schema.migrate(client)
    for table in ("trace_summaries", BY_COST_TABLE):
        client.command(f"SYSTEM STOP MERGES {table}")
    live = _write(client, _traffic(seed=17))
    stale = client.query(f"SELECT count() FROM {BY_COST_TABLE} WHERE is_deleted = 0")[0][0]
    assert stale > len(live) + 100, "the copy holds rows later versions replaced, unmerged"
    yield client, live
    client.close()
    admin = ChdbClient(engine_path(), "default")
    admin.command("DROP DATABASE IF EXISTS {db:Identifier} SYNC", {"db": database})
    admin.close()


@pytest.mark.parametrize("candidates", [1, 4])
def test_the_list_by_cost_is_the_live_summaries_in_order(written: tuple, candidates: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    http, live = written
    monkeypatch.setattr(dashboards, "_CANDIDATES", candidates)
    in_window = len(_expected(live, True, 10**6))
    assert 150 < in_window < len(live)
    for descending in (True, False):
        for limit in (1, 2, 7, 40, 100, in_window - 1, in_window, 1000):
            assert _listed(http, descending, limit) == _expected(live, descending, limit), (descending, limit)
        for feature in ("ask", "search"):
            assert _listed(http, descending, 30, [("feature", "=", feature)]) == \
                _expected(live, descending, 30, feature)


def test_the_bound_is_dropped_only_when_too_few_live_rows_lie_beyond_it(written: tuple,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Which reads the list took: the threshold and the bounded list; and the list without the bound when
    the rows beyond the threshold were mostly old versions (one candidate per row asked for)."""
    http, live = written
    client = CountingClient(http)
    assert _listed(client, True, 20) == _expected(live, True, 20)
    assert len(client.sql) == 2 and "{bound:Int64}" in client.sql[1]
    monkeypatch.setattr(dashboards, "_CANDIDATES", 1)
    client.sql.clear()
    assert _listed(client, True, 100) == _expected(live, True, 100)
    assert len(client.sql) == 3 and "{bound:Int64}" not in client.sql[2]
    # Fewer rows in the window than candidates asked for: every live one is beyond the bound.
    client.sql.clear()
    assert _listed(client, True, 1000) == _expected(live, True, 1000)
    assert len(client.sql) == 2


def test_the_threshold_reads_at_most_a_thousand_rows_unless_the_limit_is_more(written: tuple) -> None:
    """ClickHouse's top-K granule skipping stops past a LIMIT of 1000 (query_plan_max_limit_for_top_k_
    optimization): 12.5 → 31 ms at 100M spans for 2,000 rows."""
    http, _ = written
    for limit, candidates in ((7, 28), (250, 1000), (500, 1000), (1000, 1000), (1500, 1500)):
        client = CountingClient(http)
        _listed(client, True, limit)
        assert client.params[0]["candidates"] == candidates, limit


def test_a_span_field_filter_reads_the_list_without_a_bound(written: tuple) -> None:
    """A span field is a subquery over spans: the list reads it once (there are no spans here: no trace)."""
    http, _ = written
    assert "model" in SPAN_FIELDS
    client = CountingClient(http)
    assert _listed(client, True, 20, [("model", "=", "gpt-4o")]) == []
    assert len(client.sql) == 1 and BY_COST_TABLE in client.sql[0]


def test_an_empty_window_lists_nothing(http: HttpClient) -> None:
    client = CountingClient(http)
    assert _listed(client, True, 500) == [] and len(client.sql) == 1


def test_m007_copies_the_live_summaries_sorted_by_day_and_cost(url: Any, database: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A database at m006 with two versions of a trace, a forgotten one and a retention of 3 days: after m007
    the copy holds the live summaries (FINAL), sorted by day and cost, with that retention; run again,
    nothing is added (the migration is recorded; a copy interrupted and done again collapses)."""
    from store.clickhouse import schema
    from store.clickhouse.client import ChdbClient
    from tests.chdb_http_server import engine_path

    client = HttpClient(url)
    engine = ChdbClient(engine_path(), database)
    try:
        monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:6])
        assert schema.migrate(client) == [1, 2, 3, 4, 5, 6]
        schema.ensure_retention(client, 3)
        engine.use_database()
        now = time.time_ns()  # recent: the TTL drops rows older than the retention as they are written
        ids = [(0xA0 << 120 | n).to_bytes(16, "big") for n in range(3)]
        client.insert("trace_summaries", [
            _summary(ids[0], now - HOUR, 10, "ask", 1),
            _summary(ids[0], now - HOUR, 30, "ask", 2),  # the newer version: a call arrived late
            _summary(ids[1], now - 2 * HOUR, 5, "search", 1),
            ch_rows.trace_tombstones([ids[1]], 2, now - 2 * HOUR)[0],  # forgotten
            _summary(ids[2], now - 30 * HOUR, 7, "ask", 1),
        ], ch_rows.TRACE_INSERT_COLUMNS)
        monkeypatch.undo()
        assert schema.migrate(client)[0] == 7
        read = "SELECT trace_id, start_ns, cost_nusd, updated_ns, is_deleted FROM {} ORDER BY trace_id"
        assert engine.query(read.format(BY_COST_TABLE)) == engine.query(read.format("trace_summaries FINAL"))
        assert [(bytes(r[0]), r[2]) for r in engine.query(read.format(BY_COST_TABLE))] == [(ids[0], 30), (ids[2], 7)]
        sorting, full = engine.query("SELECT sorting_key, engine_full FROM system.tables WHERE database = "
                                     "currentDatabase() AND name = {t:String}", {"t": BY_COST_TABLE})[0]
        assert sorting.replace(" ", "") == f"intDiv(start_ns,{DAY_NS}),cost_nusd,trace_id"
        assert "toIntervalDay(3)" in full
        schema.MIGRATIONS[6](client)  # m007 interrupted after its copy, and done again
        assert engine.query(read.format(f"{BY_COST_TABLE} FINAL")) == engine.query(read.format("trace_summaries FINAL"))
        assert schema.migrate(client) == []
    finally:
        client.close()
        engine.close()


def test_a_budget_alerts_example_is_the_costliest_live_trace(written: tuple) -> None:
    """The daily-cost rule's example trace (store/clickhouse/alerts.py) is read the same way: the costliest
    live trace since the window's start, of the feature or of all, not an old version's cost."""
    from store.clickhouse.alerts import costliest_trace_example

    http, live = written
    since = NOW_NS - WINDOW_S * NS
    assert costliest_trace_example(http, since) == (_expected(live, True, 1)[0][0], None)
    for feature in ("ask", "search"):
        assert costliest_trace_example(http, since, feature) == (_expected(live, True, 1, feature)[0][0], None)
    assert costliest_trace_example(http, NOW_NS + DAY_NS) is None


def test_forget_deletes_every_row_the_copy_holds_of_a_trace_even_one_left_behind(http: HttpClient) -> None:
    """A straggler written while its replica could not look the trace up leaves the older row's cost behind
    (the list shows the trace twice); `forget --store` deletes it with the live one: nothing of the user's
    trace is listed after."""
    from store.clickhouse.forget import forget

    now = time.time_ns()
    trace_id, other = (0xD0 << 120 | 1).to_bytes(16, "big"), (0xD0 << 120 | 2).to_bytes(16, "big")
    user_at = ch_rows.TRACE_COLUMNS.index("user_id")
    first, second, kept = (_summary(trace_id, now - HOUR, 10, "ask", 1), _summary(trace_id, now - HOUR, 30, "ask", 2),
                           _summary(other, now - HOUR, 20, "ask", 1))
    for row in (first, second, kept):
        row[user_at] = "u-gone" if row[0] == trace_id else "u-kept"
        http.insert("trace_summaries", [row], ch_rows.TRACE_INSERT_COLUMNS)
        http.insert(BY_COST_TABLE, ch_rows.by_cost_rows([row], {}), ch_rows.TRACE_INSERT_COLUMNS)  # no old key

    def listed() -> list[tuple]:
        rows = dashboards.traces_since(http, now - 2 * HOUR, [], False, "cost", True, 10)
        return [(bytes(r[0]), r[10]) for r in rows]

    assert listed() == [(trace_id, 30), (other, 20), (trace_id, 10)]
    assert forget(http, "user", "u-gone").traces == 1
    assert listed() == [(other, 20)]
