"""The alert engine as the TUI runs it: an evaluation every 10 s, the drift rule due once a minute,
decoded histograms kept from one evaluation to the next (the last evaluation's, and the drift rule's
last read: store.alerts.SharedRollups' `decoded`). Every evaluation must equal a fresh engine's at
the same moment, including after late calls changed rows it had already read (the ground truth: a
new engine, no caches; tests/test_alert_rollups.py checks that against per-window SQL reads).
"""

from __future__ import annotations

import itertools
import random

from llmobs_tui.alerting.engine import AlertEngine
from llmobs_tui.config import DEMO_CONFIG, AlertSettings, Config, load_config
from store.alerts import window_pieces
from store.queries import rollup_ranges
from tests.test_alert_rollups import write_root_late
from tests.test_alerting import DAY, HOUR, NOW, Call, Store, healthy_week, last
from tests.tui_fixtures import use_utc


def fresh(path, config: Config, now_s: float) -> list[dict]:
    engine = AlertEngine(path, config)
    try:
        return [f.as_json() for f in engine.evaluate(now_s)]
    finally:
        engine.close()


def test_evaluations_every_10_s_equal_a_fresh_engines_as_the_store_changes(tmp_path):
    use_utc()
    rng = random.Random(11)
    store = Store(tmp_path / "live.db")
    store.add(*healthy_week(rng, every_s=900, days=8))
    store.add(*last(40, within_s=600, feature="search", inp=6000, out=900))  # drifted, but too few to judge yet
    store.write()
    config = Config(slos=load_config(DEMO_CONFIG).slos, alerts=AlertSettings(drift_min_calls=20))
    live = AlertEngine(store.path, config)
    drift_seen = []
    try:
        start = NOW - 150
        for step in range(16):  # 150 s: the drift rule is due three times
            now_s = start + 10 * step
            if step == 7:  # late calls into buckets already read (and decoded) a minute ago
                write_root_late(store.path, [Call(NOW - 20 * 60 - i * 7, "search", inp=7000, out=1200)
                                             for i in range(60)], first_number=10**7)
            due = live._drift_rule.due(config.alerts, now_s)
            got = [f.as_json() for f in live.evaluate(now_s)]
            want = fresh(store.path, config, now_s)
            drift = [f for f in got if f["rule"] == "drift"]
            if due:  # the drift rule read the store: all of it as a fresh engine's
                assert got == want, (step, now_s)
                last_drift = drift
            else:  # between, the drift rule repeats its last answer (once a minute, by design)
                assert [f for f in got if f["rule"] != "drift"] == [f for f in want if f["rule"] != "drift"]
                assert drift == last_drift
            drift_seen.append((due, [(f["key"], f["value"]) for f in drift]))
            assert live._decoded, "histograms kept for the next evaluation"
            assert live._drift_decoded, "and the drift rule's, for its next minute"
    finally:
        live.close()
    # The drift rule read the store three times, and the late calls moved its verdict: a kept histogram
    # never stood in for the rows they changed.
    assert sum(due for due, _ in drift_seen) == 3
    assert drift_seen[0][1] != drift_seen[-1][1], drift_seen


def test_a_partial_day_is_cut_at_whole_6_hours_so_windows_share_it():
    now = int(NOW)
    today = now - now % DAY
    pieces = {w: window_pieces(now - w, now) for w in (6 * HOUR, 3 * DAY, 7 * DAY)}
    hours_today = {w: [(lo, hi) for res, lo, hi in p if res == 3600 and lo >= today] for w, p in pieces.items()}
    # Today's whole hours: the same pieces whatever the window's length (the 6 h window starts later).
    assert hours_today[3 * DAY] == hours_today[7 * DAY]
    assert set(hours_today[6 * HOUR][1:]) <= set(hours_today[7 * DAY])
    assert all(hi - lo <= 6 * HOUR for lo, hi in hours_today[7 * DAY])
    for w, cut in pieces.items():  # still exactly the ranges' rows, each once, in order
        ranges = rollup_ranges(now - w, now)
        for res in (60, 3600):
            covered = [(lo, hi) for r, lo, hi in cut if r == res]
            assert covered == sorted(covered)
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(covered))
            assert sum(hi - lo for lo, hi in covered) == sum(hi - lo for r, lo, hi in ranges if r == res)
