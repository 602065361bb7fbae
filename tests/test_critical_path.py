"""Critical path and self time on hand-built trees, against the definition worked out by hand."""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass

from llmobs_tui.critical_path import GAP, analyse

MS = 1_000_000


@dataclass
class S:
    span_id: str
    parent_span_id: str | None
    start_ns: int
    end_ns: int


def tree(*spans: tuple[str, str | None, int, int]) -> list[S]:
    return [S(sid, parent, start * MS, end * MS) for sid, parent, start, end in spans]


def ms(path, key) -> float:
    return path.contribution_ns.get(key, 0) / MS


def test_sequential_children_and_the_parents_own_time():
    # root 0–100: llm 10–40, tool 40–70, llm2 75–95; the root waits 0–10, 70–75, 95–100 itself.
    path = analyse(tree(("root", None, 0, 100), ("llm", "root", 10, 40), ("tool", "root", 40, 70),
                        ("llm2", "root", 75, 95)))
    assert (ms(path, "root"), ms(path, "llm"), ms(path, "tool"), ms(path, "llm2")) == (20, 30, 30, 20)
    assert sum(path.contribution_ns.values()) == path.duration_ns == 100 * MS
    assert path.on_path == {"root", "llm", "tool", "llm2"}
    assert path.self_ns["root"] == 20 * MS and path.self_ns["tool"] == 30 * MS


def test_parallel_children_only_the_one_the_end_waited_for():
    # Two retrievers in parallel 10–50 and 10–80, then an LLM 80–100: the short retriever is off the path.
    path = analyse(tree(("root", None, 0, 100), ("fast", "root", 10, 50), ("slow", "root", 10, 80),
                        ("llm", "root", 80, 100)))
    assert "fast" not in path.on_path
    assert (ms(path, "root"), ms(path, "slow"), ms(path, "llm")) == (10, 70, 20)
    assert path.top(2) == [("slow", 70 * MS), ("llm", 20 * MS)]
    # Self time counts the union of children once: 10–80 and 80–100 covered, 0–10 own.
    assert path.self_ns["root"] == 10 * MS


def test_nested_spans_hand_the_path_down_and_back_up():
    # agent 0–100 > chain 5–90 > (llm 10–50, tool 55–85); the agent's last 10 ms are its own.
    path = analyse(tree(("agent", None, 0, 100), ("chain", "agent", 5, 90), ("llm", "chain", 10, 50),
                        ("tool", "chain", 55, 85)))
    assert {k: ms(path, k) for k in ("agent", "chain", "llm", "tool")} == \
        {"agent": 15, "chain": 15, "llm": 40, "tool": 30}
    assert [sid for sid, _, _ in path.sections] == ["agent", "chain", "tool", "chain", "llm", "chain", "agent"]


def test_a_child_that_overlaps_the_path_but_ends_before_it_is_entered():
    # b 20–60 ends after a (10–40) starts: a ran alongside b, so only b and the root are on the path...
    path = analyse(tree(("root", None, 0, 70), ("a", "root", 10, 40), ("b", "root", 20, 60)))
    assert path.on_path == {"root", "b"}
    assert (ms(path, "root"), ms(path, "b")) == (30, 40)
    # ...while a child that ended before b began is on it.
    path = analyse(tree(("root", None, 0, 70), ("a", "root", 5, 15), ("b", "root", 20, 60)))
    assert (ms(path, "root"), ms(path, "a"), ms(path, "b")) == (20, 10, 40)


def test_children_past_the_parents_end_are_clipped_and_zero_length_spans_end_the_walk():
    path = analyse(tree(("root", None, 0, 50), ("child", "root", 10, 60), ("late", "child", 55, 70),
                        ("zero", "root", 5, 5), ("zero2", "root", 5, 5)))
    # The trace runs to 70 (the root ended before its async child): the root's bounds are the trace's.
    assert path.duration_ns == 70 * MS
    assert sum(path.contribution_ns.values()) == 70 * MS
    assert ms(path, "late") == 15 and ms(path, "child") == 45


def test_several_roots_and_orphans_gaps_are_time_nothing_ran():
    path = analyse(tree(("a", None, 0, 30), ("b", "missing-parent", 50, 100), ("c", "b", 60, 90)))
    assert path.duration_ns == 100 * MS
    assert (ms(path, GAP), ms(path, "a"), ms(path, "b"), ms(path, "c")) == (20, 30, 20, 30)
    assert GAP not in path.on_path
    assert path.top(1) == [("a", 30 * MS)] or path.top(1) == [("c", 30 * MS)]


def test_cycles_repeated_ids_and_empty_traces_do_not_hang():
    assert analyse([]).duration_ns == 0
    path = analyse(tree(("x", "y", 0, 10), ("y", "x", 0, 10), ("r", None, 0, 20), ("r", None, 0, 20)))
    assert sum(path.contribution_ns.values()) == path.duration_ns == 20 * MS


def test_random_trees_the_path_always_accounts_for_the_whole_trace():
    rng = random.Random(7)
    for _ in range(300):
        spans = [S("0", None, 0, rng.randint(1, 1000))]
        for i in range(1, rng.randint(2, 40)):
            parent = rng.choice(spans)
            start = rng.randint(parent.start_ns - 5, parent.end_ns + 5)
            spans.append(S(str(i), parent.span_id, start, start + rng.randint(0, 400)))
        path = analyse(spans)
        assert sum(path.contribution_ns.values()) == path.duration_ns
        # Sections tile the trace: back to back from the end to the start, no overlap.
        edges = sorted((start, end) for _, start, end in path.sections)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(edges))
        assert all(path.self_ns[s.span_id] >= 0 for s in spans if s.span_id in path.self_ns)


def test_a_2000_span_trace_is_analysed_well_within_a_frame():
    deep = [S("0", None, 0, 10_000)] + [S(str(i), str(i - 1), i, 10_000 - i) for i in range(1, 2000)]
    started = time.process_time()
    path = analyse(deep)
    assert time.process_time() - started < 0.5  # the bench's budget is 50 ms; this is a guard, not a timing
    assert len(path.on_path) == 2000
