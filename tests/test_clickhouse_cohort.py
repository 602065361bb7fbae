"""A trace cohort on ClickHouse (store/clickhouse/cohort.py) for a trace whose root name is not known: its
cohort is the traces without one on the same feature, as SQLite's `root_name IS …` finds them (the equality
tests on a real store, in tests/test_clickhouse_tui.py, have a root name for every trace)."""

from __future__ import annotations

import time

from store.clickhouse.client import ChdbClient
from store.clickhouse.cohort import trace_cohort_rows
from store.cohort import parse_trace_cohort

NS = 10**9


def test_a_trace_without_a_root_name_is_compared_with_the_others_without_one(engine: ChdbClient) -> None:
    now = time.time_ns()
    columns = ("trace_id", "start_ns", "end_ns", "duration_ns", "root_name", "feature", "llm_calls", "updated_ns")
    rows = [  # (trace, root name, feature, minutes ago)
        (1, None, "ask", 5), (2, None, "ask", 10), (3, "POST /ask", "ask", 12), (4, None, "search", 15),
        (5, None, None, 20),
    ]
    engine.insert("trace_summaries", [
        [trace.to_bytes(16, "big"), now - ago * 60 * NS, now - ago * 60 * NS + trace * NS, trace * NS, root, feature,
         1, now] for trace, root, feature, ago in rows], columns)
    found = parse_trace_cohort(now / NS - 3600, now / NS, trace_cohort_rows(engine, (1).to_bytes(16, "big"),
                                                                            now / NS - 3600, now / NS))
    assert found.root_name is None and found.feature == "ask"
    assert [int.from_bytes(s.trace_id, "big") for s in found.samples] == [1, 2]
    alone = parse_trace_cohort(now / NS - 3600, now / NS, trace_cohort_rows(engine, (5).to_bytes(16, "big"),
                                                                            now / NS - 3600, now / NS))
    assert [int.from_bytes(s.trace_id, "big") for s in alone.samples] == [5]  # no feature: '' as on SQLite


def test_a_trace_whose_start_moved_an_hour_earlier_is_its_live_summary(engine: ChdbClient) -> None:
    """The sink moves a summary whose start moved to another hour: a deletion row at the old hour's key and
    the new row at the new one, one version (store/clickhouse/sink.py). The subject is the new row."""
    now = time.time_ns() // (3600 * NS) * 3600 * NS - 60 * NS  # a minute before an hour's end
    columns = ("trace_id", "start_ns", "end_ns", "duration_ns", "root_name", "feature", "updated_ns", "is_deleted")
    trace = (7).to_bytes(16, "big")
    engine.insert("trace_summaries", [
        [trace, now, now + 30 * NS, 30 * NS, "child", "ask", 1, 0],                 # first: children only
        [trace, now, now, 0, None, None, 2, 1],                                       # deleted at the old hour
        [trace, now - 7200 * NS, now + 30 * NS, 7230 * NS, "POST /ask", "ask", 2, 0],  # its root, 2 h earlier
        [(8).to_bytes(16, "big"), now - 600 * NS, now, 600 * NS, "POST /ask", "ask", 1, 0],
    ], columns)
    found = parse_trace_cohort(now / NS - 86400, now / NS + 60, trace_cohort_rows(engine, trace, now / NS - 86400,
                                                                                  now / NS + 60))
    assert found.subject is not None and found.subject.duration_ns == 7230 * NS and found.root_name == "POST /ask"
    assert sorted(int.from_bytes(s.trace_id, "big") for s in found.samples) == [7, 8]
    # Two versions at one key: the newer counts.
    again = (9).to_bytes(16, "big")
    engine.insert("trace_summaries", [[again, now, now + NS, NS, "POST /ask", "ask", 1, 0]], columns)
    engine.insert("trace_summaries", [[again, now, now + 5 * NS, 5 * NS, "POST /ask", "ask", 2, 0]], columns)
    found = parse_trace_cohort(now / NS - 86400, now / NS + 60, trace_cohort_rows(engine, again, now / NS - 86400,
                                                                                  now / NS + 60))
    assert found.subject is not None and found.subject.duration_ns == 5 * NS
