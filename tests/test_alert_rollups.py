"""The alert engine's shared rollup reads (store.alerts.SharedRollups) and grouped_rollups' summing in
SQL give exactly what reading the rollup rows one by one gives, on a real store written through the
real normalizer and writer; and the engine that shares its reads fires the same alerts, with the same
SLO table, as the engine reading window by window.

The store: the alert tests' healthy week of two features plus a third, and anomalies in the last hour
(a 429 storm, a costlier prompt version with longer prompts, slow first tokens, cache misses), and
traces whose LLM call arrives before its root: their calls are counted without a feature, then moved
to it by negative deltas, which must net out the same way (rows of no feature summing to nothing).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from llmobs_tui.alerting.drift import evaluate_drift
from llmobs_tui.alerting.engine import AlertEngine, Finding
from llmobs_tui.config import DEMO_CONFIG, AlertSettings, Config, load_config
from store import histogram
from store.alerts import SharedRollups, window_pieces
from store.connection import open_reader, read_snapshot
from store.queries import GROUP_COLUMNS, GroupStats, grouped_rollups, rollup_ranges
from store.writer import HISTOGRAMS, ROLLUP_COUNTERS
from tests.otlp_factory import trace_request
from tests.store_writing import writing
from tests.test_alerting import DAY, HOUR, NOW, NS, Call, Store, healthy_week, last
from tests.tui_fixtures import use_utc


@pytest.fixture(autouse=True)
def _utc() -> None:
    use_utc()  # "today" for the daily budget is the local day


def write_root_late(path: Path, calls: list[Call], first_number: int) -> None:
    """Each call's LLM span in one write, its trace's root (which names the feature) in a later one."""
    with writing(path, int(NOW * NS)) as (normalizer, writer, _db):
        traces = [Store._spans(first_number + i, call) for i, call in enumerate(calls)]
        for part in ([s for spans in traces for s in spans[1:]], [spans[0] for spans in traces]):
            rows, resources, scopes, rejected = normalizer.decode_traces(trace_request(part), int(NOW * NS))
            assert rejected.count == 0, rejected.message()
            writer.write(rows, [], resources, scopes)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    use_utc()
    rng = random.Random(7)
    store = Store(tmp_path_factory.mktemp("rollups") / "alerts.db")
    store.add(*healthy_week(rng, every_s=1200, days=8, features=("support", "search", "checkout")))
    store.add(*last(60, feature="checkout", error="429"))
    store.add(*last(60, feature="search", version="v3", inp=9000, out=400, model="gpt-4o"))
    store.add(*last(60, feature="support", ttft=4.0, duration=7.0))
    store.add(*last(40, feature="support", cache_read=0))
    path = store.write()
    late = [Call(NOW - DAY * rng.uniform(0, 6), rng.choice(("support", "search")), ttft=rng.uniform(0.2, 2))
            for _ in range(80)]
    write_root_late(path, late, first_number=10**6)
    return path


# --- the reference: rollup rows read and summed one by one, as grouped_rollups did before -----------


def reference_grouped(db, start_s: int, end_s: int, by: list[str], where: dict[str, str] | None = None,
                      hists: tuple[str, ...] = ()) -> list[GroupStats]:
    columns = [c for name in by for c in GROUP_COLUMNS[name]]
    conditions, params = [], []
    for res, lo, hi in rollup_ranges(start_s, end_s):
        conditions.append("(r.res = ? AND r.bucket >= ? AND r.bucket < ?)")
        params += [res, lo, hi]
    select = ", ".join([*(f"d.{c}" for c in columns), *(f"r.{c}" for c in ROLLUP_COUNTERS),
                        *(f"r.{h}" for h in hists)])
    if not columns and not where:
        sql = f"SELECT {select} FROM rollups r WHERE ({' OR '.join(conditions)}) AND r.dims_id = 0"
    else:
        sql = f"SELECT {select} FROM rollups r JOIN dims d ON d.id = r.dims_id WHERE ({' OR '.join(conditions)})"
        for column, value in (where or {}).items():
            sql += f" AND d.{column} = ?"
            params.append(value or "")
    groups: dict[tuple, GroupStats] = {}
    n = len(columns)
    for row in db.execute(sql, params):
        key = tuple(row[:n])
        group = groups.setdefault(key, GroupStats(key={c: v or None for c, v in zip(columns, key)}))
        for i, value in enumerate(row[n:n + len(ROLLUP_COUNTERS)]):
            group.counters[i] += value
        for blob, name in zip(row[n + len(ROLLUP_COUNTERS):], hists):
            histogram.decode_into(blob, getattr(group, name[5:]))
    result = [g for g in groups.values() if any(g.counters) or g.latency or g.ttft]
    result.sort(key=lambda g: (-g["cost_nusd"], -g["calls"], tuple(str(v) for v in g.key.values())))
    return result


def as_data(groups: list[GroupStats]) -> list[tuple]:
    return [(g.key, g.counters, g.latency, g.ttft, g.tpot, g.cost, g.tokens, g.input_tokens, g.output_tokens)
            for g in groups]


WINDOWS = [(NOW - w, NOW) for w in (300, 1800, HOUR, 6 * HOUR, 3 * DAY, 7 * DAY, 30 * DAY)] + [
    (NOW - NOW % DAY, NOW),  # today
    (NOW - 7 * DAY, NOW - HOUR),  # the prior week of the cache rule
    (NOW - 7 * DAY, NOW - 900), (NOW - 900, NOW),  # the provider health's
    (NOW - 8 * DAY - 3601, NOW - HOUR - 1),  # a drift baseline
    (NOW - 2 * DAY - 7 * 60 - 13, NOW - 17 * 60 - 5),  # ragged at both ends
]
QUERIES = [([], None, ()), ([], None, HISTOGRAMS), ([], {"feature": "support"}, ("hist_ttft",)),
           ([], {"feature": "search"}, ("hist_latency", "hist_cost")), ([], {"model": "gpt-4o"}, ()),
           ([], {"feature": "support", "model": "gpt-4o-mini"}, ("hist_tokens",)),
           (["feature"], None, ("hist_input_tokens", "hist_output_tokens")), (["feature", "prompt"], None, ()),
           (["model"], None, ("hist_ttft",)), (["feature", "model"], None, HISTOGRAMS),
           (["feature"], {"feature": ""}, ("hist_latency",))]


def test_the_store_has_what_the_comparison_needs(store_path):
    db = open_reader(store_path)
    try:
        netted = db.execute("SELECT count(*) FROM rollups r JOIN dims d ON d.id = r.dims_id "
                            "WHERE d.feature = '' AND r.calls = 0").fetchone()[0]
        days = db.execute("SELECT count(DISTINCT bucket / 86400) FROM rollups WHERE res = 3600").fetchone()[0]
    finally:
        db.close()
    assert netted > 0  # calls counted without a feature, then moved to it when the root arrived
    assert days >= 8


def test_shared_reads_and_sql_sums_equal_rows_summed_one_by_one(store_path):
    db = open_reader(store_path)
    try:
        with read_snapshot(db):
            shared = SharedRollups(db, ("hist_ttft", "hist_latency"))  # one instance for every window
            with_data = 0
            for start, end in WINDOWS:
                for by, where, hists in QUERIES:
                    expected = as_data(reference_grouped(db, int(start), int(end), by, where, hists))
                    assert as_data(grouped_rollups(db, int(start), int(end), by, where, hists)) == expected
                    assert as_data(shared.grouped(int(start), int(end), by, where, hists)) == expected, (
                        start, end, by, where, hists)
                    with_data += bool(expected)
            assert with_data >= 0.8 * len(WINDOWS) * len(QUERIES)  # not a comparison of empty lists
    finally:
        db.close()


def test_the_rollups_agree_with_the_spans(store_path):
    """Ground truth: a week's LLM calls per feature counted from the raw spans; an empty scope is empty."""
    start, end = int(NOW - 7 * DAY), int(NOW)
    lo, hi = rollup_ranges(start, end)[0][1], rollup_ranges(start, end)[-1][2]
    db = open_reader(store_path)
    try:
        truth = dict(db.execute("SELECT coalesce(feature, ''), count(*) FROM spans WHERE billed = 1 "
                                "AND start_ns >= ? AND start_ns < ? GROUP BY 1", (lo * NS, hi * NS)).fetchall())
        groups = SharedRollups(db).grouped(start, end, ["feature"])
        assert {g.key["feature"] or "": g["calls"] for g in groups} == {k: v for k, v in truth.items() if v}
        assert SharedRollups(db).grouped(start, end, [], {"feature": "no-such-feature"}, ("hist_ttft",)) == []
    finally:
        db.close()


def test_window_pieces_cover_the_ranges_and_share_whole_days():
    for start, end in WINDOWS:
        ranges = rollup_ranges(int(start), int(end))
        pieces = window_pieces(int(start), int(end))
        for res in (60, 3600):
            covered = [(lo, hi) for r, lo, hi in pieces if r == res]
            assert covered == sorted(covered)
            assert sum(hi - lo for lo, hi in covered) == sum(hi - lo for r, lo, hi in ranges if r == res)
        assert all(hi - lo <= DAY and (lo % DAY == 0 or hi % DAY == 0 or hi - lo < DAY) for _, lo, hi in pieces)
    week = set(window_pieces(int(NOW - 7 * DAY), int(NOW)))
    assert len(week & set(window_pieces(int(NOW - 3 * DAY), int(NOW)))) >= 3  # today and two whole days


# --- the engine: same alerts, same SLO table -------------------------------------------------------


class _PerWindowReads:
    def __init__(self, db) -> None:
        self.db = db

    def grouped(self, start_s, end_s, by, where=None, hists=()):
        return grouped_rollups(self.db, start_s, end_s, by, where, hists)


class PerWindowEngine(AlertEngine):
    """The engine reading window by window, as before SharedRollups: one query per window, and the
    drift rule's own read of the rollups (store.drift.feature_periods)."""

    def _rollup_reads(self):
        return _PerWindowReads(self.db)

    def evaluate_drift(self, now_s: float) -> list[Finding]:
        return evaluate_drift(self.db, self.settings, now_s)


def findings_and_table(engine: AlertEngine, now_s: float) -> tuple[list[dict], list[dict]]:
    try:
        findings = engine.evaluate(now_s)
        return [f.as_json() for f in findings], [row.as_json() for row in engine.slo_rows]
    finally:
        engine.close()


@pytest.mark.parametrize("now_s", [NOW, NOW - 2 * HOUR - 7])
def test_the_engine_fires_the_same_alerts_as_reading_window_by_window(store_path, now_s):
    config = load_config(DEMO_CONFIG)
    config.alerts.drift_min_calls = 20
    config.alerts.tokens_per_call = {"search": 5000, "support": 9000}
    shared = findings_and_table(AlertEngine(store_path, config), now_s)
    per_window = findings_and_table(PerWindowEngine(store_path, config), now_s)
    assert shared == per_window
    if now_s == NOW:
        rules = {f["rule"] for f in shared[0]}
        assert {"slo_burn", "error_spike", "prompt_regression", "token_budget", "drift"} <= rules, rules
    assert all(row["events"] for row in shared[1])


def test_a_rule_called_on_its_own_reads_without_an_evaluation(store_path):
    engine = AlertEngine(store_path, Config(alerts=AlertSettings()))
    try:
        assert [f.key for f in engine.evaluate_error_spikes(NOW)] == ["errors:rate_limit"]
    finally:
        engine.close()


# --- the Breakdown's read, summed in SQL -------------------------------------------------------------


def old_breakdown_query(window_s: float, now_s: float, by: str) -> tuple[str, tuple]:
    """store.dashboards.breakdown_query before it summed in SQL: every rollup row of the window."""
    ranges = rollup_ranges(int(now_s - window_s), int(now_s))
    window_sql = " OR ".join("(r.res = ? AND r.bucket >= ? AND r.bucket < ?)" for _ in ranges)
    dims = ", ".join(f"d.{c}" for c in GROUP_COLUMNS[by])
    return (f"SELECT {dims}, {', '.join('r.' + c for c in ROLLUP_COUNTERS)}, r.hist_latency, r.hist_ttft, "
            f"r.hist_tpot FROM rollups r JOIN dims d ON d.id = r.dims_id WHERE ({window_sql})",
            tuple(x for r in ranges for x in r))


@pytest.mark.parametrize("by", list(GROUP_COLUMNS))
def test_the_breakdown_summed_in_sql_equals_its_rows_summed_one_by_one(store_path, by):
    from store.dashboards import breakdown_query, parse_breakdown

    db = open_reader(store_path)
    try:
        for window_s, now_s in ((DAY, NOW), (HOUR, NOW), (7 * DAY, NOW - 3 * HOUR - 7), (6 * HOUR, NOW - DAY)):
            query = breakdown_query(window_s, now_s, by)
            new = parse_breakdown(by, db.execute(query.sql, query.params).fetchall())
            old = parse_breakdown(by, db.execute(*old_breakdown_query(window_s, now_s, by)).fetchall())
            assert as_data(new) == as_data(old)
            assert new or by in ("variant", "tenant")
    finally:
        db.close()


def test_histograms_kept_between_evaluations_follow_the_store(tmp_path):
    """The engine keeps decoded histograms from one evaluation to the next, keyed by their bytes: after
    new calls change the rollups, its next evaluation equals a fresh engine's and the per-window one's."""
    rng = random.Random(3)
    store = Store(tmp_path / "changing.db")
    store.add(*healthy_week(rng, every_s=900, days=3))
    store.write()
    config = Config(slos=load_config(DEMO_CONFIG).slos, alerts=AlertSettings(drift_min_calls=20))
    kept = AlertEngine(store.path, config)
    try:
        before = kept.evaluate(NOW - 60)
        assert kept._decoded  # the histograms it decoded, for the next evaluation
        late = [*last(60, feature="support", ttft=5.0, duration=9.0), *last(30, feature="search", duration=30.0)]
        write_root_late(store.path, late, first_number=10**7)  # into buckets it read a minute ago
        after = [f.as_json() for f in kept.evaluate(NOW)]
        rows = [row.as_json() for row in kept.slo_rows]
    finally:
        kept.close()
    assert after == findings_and_table(AlertEngine(store.path, config), NOW)[0]
    assert (after, rows) == findings_and_table(PerWindowEngine(store.path, config), NOW)
    assert {f["key"] for f in after} - {f.key for f in before}  # the new calls did change the verdicts


def test_a_histogram_kept_from_the_last_evaluation_is_never_stale(tmp_path):
    """The same windows read again after new calls changed their rows: what the second read returns,
    given the first one's decoded histograms, equals the rows summed one by one, which did change."""
    rng = random.Random(5)
    store = Store(tmp_path / "stale.db")
    store.add(*healthy_week(rng, every_s=600, days=2))
    store.write()
    windows = [(NOW - w, NOW) for w in (1800, HOUR, 6 * HOUR, DAY, 2 * DAY)]
    queries = [([], {"feature": "support"}, ("hist_latency", "hist_ttft")), (["feature"], None, HISTOGRAMS)]

    def read(decoded: dict | None) -> tuple[list, list, dict]:
        db = open_reader(store.path)
        try:
            with read_snapshot(db):
                shared = SharedRollups(db, ("hist_latency",), decoded)
                got = [as_data(shared.grouped(int(s), int(e), by, where, hists))
                       for s, e in windows for by, where, hists in queries]
                want = [as_data(reference_grouped(db, int(s), int(e), by, where, hists))
                        for s, e in windows for by, where, hists in queries]
                return got, want, shared.decoded
        finally:
            db.close()

    first, first_truth, decoded = read(None)
    assert first == first_truth and decoded
    write_root_late(store.path, [*last(50, feature="support", ttft=3.0, duration=8.0),
                                 *last(20, within_s=20 * HOUR, feature="support", duration=40.0)], 10**7)
    second, second_truth, _ = read(decoded)
    assert second == second_truth
    assert second_truth != first_truth  # the late calls changed the windows' histograms


# --- Trends, summed in SQL ----------------------------------------------------------------------------


def old_trends_queries(metric_name: str, by: str, window_s: float, now_s: float) -> dict[str, tuple[str, tuple]]:
    """store.trends' queries before they summed in SQL: a row per bucket and dimension set."""
    from store.trends import METRIC, _columns, _first_bucket, resolution

    columns, hist = _columns(METRIC[metric_name], tools=False)
    res = resolution(window_s)
    dims = ", ".join(f"d.{c}" for c in GROUP_COLUMNS[by])
    select = ", ".join([*(f"r.{c}" for c in columns), *([f"r.{hist}"] if hist else [])])
    queries = {"rows": (f"SELECT r.bucket, {dims}, {select} FROM rollups r JOIN dims d ON d.id = r.dims_id "
                        "WHERE r.res = ? AND r.bucket >= ? AND r.bucket <= ? AND r.dims_id != 0",
                        (res, _first_bucket(window_s, now_s, res), int(now_s)))}
    if by == "variant":
        ranges = rollup_ranges(int(now_s - window_s), int(now_s))
        window_sql = " OR ".join("(r.res = ? AND r.bucket >= ? AND r.bucket < ?)" for _ in ranges)
        queries["variants"] = (
            f"SELECT d.variant, {', '.join('r.' + c for c in ROLLUP_COUNTERS)}, r.hist_latency, r.hist_ttft "
            f"FROM rollups r JOIN dims d ON d.id = r.dims_id WHERE ({window_sql}) AND d.variant != ''",
            tuple(x for r in ranges for x in r))
    return queries


@pytest.mark.parametrize("metric", ["latency_p95", "cost", "calls", "ttft_p95"])
@pytest.mark.parametrize("by", ["model", "feature", "prompt", "variant"])
def test_trends_summed_in_sql_equal_their_rows_one_by_one(store_path, metric, by):
    from store.trends import METRIC, parse_trends, trends_queries

    if metric not in METRIC:
        pytest.skip(f"no metric {metric}")
    db = open_reader(store_path)
    try:
        for window_s, now_s in ((DAY, NOW), (HOUR, NOW - 7), (7 * DAY, NOW)):
            new = {k: db.execute(q.sql, q.params).fetchall() for k, q in trends_queries(metric, by, window_s,
                                                                                          now_s).items()}
            old = {k: db.execute(*q).fetchall() for k, q in old_trends_queries(metric, by, window_s, now_s).items()}
            for others in (False, True):
                expected = parse_trends(metric, by, window_s, now_s, old, 3, others)
                assert parse_trends(metric, by, window_s, now_s, new, 3, others) == expected
                assert expected.series
    finally:
        db.close()
