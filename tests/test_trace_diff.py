"""Trace diff (issue 13, capability 6): `m` marks a trace, `d` on another compares them, through the
real writer and the real app. Two planted traces of the same agent: this one has a third
`search_docs` tool call the marked one lacks, lacks the marked one's `validate` step, its calls
are slower and use more tokens, and its system prompt and final answer differ by a few words."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from llmobs_tui.app import LlmobsApp
from llmobs_tui.scenarios import MS, S, SpanSpec, Trace, to_otlp_request, trace_id_of
from llmobs_tui.screens.trace import TraceScreen
from llmobs_tui.screens.trace_diff import TraceDiffScreen, spans_table
from llmobs_tui.screens.traces import TracesScreen
from llmobs_tui.trace_diff import (
    DiffLine,
    align,
    line_diff,
    signed_duration,
    signed_money,
    signed_tokens,
)
from receiver.normalize import Normalizer
from store.connection import open_reader
from store.writer import SpanWriter
from tests.test_first_minutes_render import span
from tests.test_markup_safety import Frame, static_text
from tests.tui_fixtures import FROZEN_NOW

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MARKED, THIS = 501, 502


def chat(parent: int, start_ms: int, duration_ms: int, input_tokens: int, output_tokens: int, *,
         system: str | None = None, answer: str = "Looking.") -> SpanSpec:
    messages = [{"role": "user", "parts": [{"type": "text", "content": "Where is my refund?"}]}]
    if system is not None:
        messages.insert(0, {"role": "system", "parts": [{"type": "text", "content": system}]})
    return SpanSpec("chat gpt-4o", parent, start_ms * MS, duration_ms * MS, {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
        "gen_ai.input.messages": json.dumps(messages),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": answer}],
                                               "finish_reason": "stop"}])}, kind=3)


def tool(parent: int, start_ms: int, duration_ms: int) -> SpanSpec:
    return SpanSpec("search_docs", parent, start_ms * MS, duration_ms * MS,
                    {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_docs"})


def marked_trace() -> Trace:
    return Trace("support", "support-bot", [
        SpanSpec("agent", None, 0, 2000 * MS, {"app.llm.feature": "support"}, kind=2),
        chat(0, 10, 800, 1000, 200, system="You are a support agent.\nBe brief.", answer="Refunds take 5 days."),
        tool(0, 820, 200),
        tool(0, 1030, 100),
        SpanSpec("validate", 0, 1140 * MS, 10 * MS),
        chat(0, 1200, 700, 1500, 300, answer="Your refund is on its way.\nThank you."),
    ])


def this_trace() -> Trace:
    return Trace("support", "support-bot", [
        SpanSpec("agent", None, 0, 2600 * MS, {"app.llm.feature": "support"}, kind=2),
        chat(0, 10, 1000, 1200, 250, system="You are a support agent.\nBe very brief.",
             answer="Refunds take 5 days."),
        tool(0, 1020, 200),
        tool(0, 1230, 100),
        tool(0, 1340, 200),  # the extra tool call
        chat(0, 1600, 900, 1500, 400, answer="Your refund was sent today.\nThank you."),
    ])


# The expected alignment: (depth, name, status), in display order.
ALIGNED = [
    (0, "agent", "both"),
    (1, "chat gpt-4o", "both"),
    (1, "search_docs", "both"),
    (1, "search_docs", "both"),
    (1, "validate", "missing"),
    (1, "search_docs", "added"),
    (1, "chat gpt-4o", "both"),
]


@pytest.fixture
def store(db_path: Path, writer_db: sqlite3.Connection, normalizer: Normalizer) -> Path:
    writer = SpanWriter(writer_db, clock=lambda: int(FROZEN_NOW * S))
    request = to_otlp_request([(marked_trace(), MARKED, int((FROZEN_NOW - 300) * S)),
                               (this_trace(), THIS, int((FROZEN_NOW - 120) * S))])
    rows, resources, scopes, rejections = normalizer.decode_traces(request, int(FROZEN_NOW * S))
    assert rejections.count == 0
    writer.write(rows, [], resources, scopes)
    return db_path


def stored_costs(store: Path, number: int) -> list[int]:
    """The billed cost of each LLM call of a trace, as the writer priced them, in start order."""
    db = open_reader(store)
    try:
        return [row[0] for row in db.execute(
            "SELECT cost_nusd FROM spans WHERE trace_id = ? AND billed = 1 ORDER BY start_ns", (trace_id_of(number),))]
    finally:
        db.close()


async def settle(pilot) -> None:
    for _ in range(3):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.app.tick()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def toasts(app: LlmobsApp) -> list[str]:
    return [n.message for n in app._notifications]


async def open_diff_of_planted(pilot) -> TraceDiffScreen:
    app = pilot.app
    app.open_trace(trace_id_of(MARKED))
    await settle(pilot)
    await pilot.press("d")
    assert "No trace is marked" in toasts(app)[-1]
    await pilot.press("m")
    assert app.marked_trace == (trace_id_of(MARKED), "agent")
    assert toasts(app)[-1] == (f"Marked trace {trace_id_of(MARKED).hex()[:8]} (agent) — "
                               "press d on another trace to compare")
    await pilot.press("d")
    assert "This is the marked trace" in toasts(app)[-1]
    assert isinstance(app.screen, TraceScreen)
    app.open_trace(trace_id_of(THIS))
    await settle(pilot)
    await pilot.press("d")
    await settle(pilot)
    screen = app.screen
    assert isinstance(screen, TraceDiffScreen)
    assert screen.diff is not None
    return screen


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
async def test_m_then_d_aligns_the_two_traces_with_their_deltas(store, size):
    marked_costs, this_costs = stored_costs(store, MARKED), stored_costs(store, THIS)
    assert len(marked_costs) == len(this_costs) == 2 and None not in marked_costs + this_costs
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=size) as pilot:
        screen = await open_diff_of_planted(pilot)
        diff = screen.diff
        assert diff is not None
        assert [(row.depth, row.name, row.status) for row in diff.spans] == ALIGNED
        assert (diff.added, diff.missing) == (1, 1)
        deltas = [(row.duration_delta_ns, row.tokens_delta, row.cost_delta_nusd) for row in diff.spans]
        assert deltas == [
            (600 * MS, None, None),  # agent 2000 → 2600 ms, no usage of its own
            (200 * MS, (1200 + 250) - (1000 + 200), this_costs[0] - marked_costs[0]),
            (0, None, None),
            (0, None, None),
            (None, None, None),  # validate: missing
            (None, None, None),  # the third search_docs: added
            (200 * MS, (1500 + 400) - (1500 + 300), this_costs[1] - marked_costs[1]),
        ]
        assert (diff.marked.duration_ns, diff.this.duration_ns) == (2000 * MS, 2600 * MS)
        assert (diff.marked.tokens, diff.this.tokens) == (3000, 3350)
        assert (diff.marked.cost_nusd, diff.this.cost_nusd) == (sum(marked_costs), sum(this_costs))
        assert diff.system_diff == [DiffLine("hunk", "@@ -1,2 +1,2 @@"), DiffLine("same", "You are a support agent."),
                                    DiffLine("removed", "Be brief."), DiffLine("added", "Be very brief.")]
        assert diff.output_diff == [DiffLine("hunk", "@@ -1,2 +1,2 @@"),
                                    DiffLine("removed", "Your refund is on its way."),
                                    DiffLine("added", "Your refund was sent today."), DiffLine("same", "Thank you.")]

        # On screen: the title, and the rows as far as they fit, with signed deltas and units.
        frame = Frame(app)
        lines = frame.lines
        assert lines[0].startswith(" Trace diff  marked agent ") and "vs  this agent" in lines[0]
        assert "5 spans in both · 1 added · 1 missing" in lines[1]
        row_of = {name: next(line for line in lines if name in line) for name in ("validate", "whole trace")}
        assert "missing" in row_of["validate"]
        assert "+600ms" in row_of["whole trace"] and "+350 tok" in row_of["whole trace"]
        assert "+ ⚒ search_docs" in frame.text and "- · validate" in frame.text
        body = static_text(screen.query_one("#diff-body"), width=size[0])
        assert "-Be brief." in body and "+Be very brief." in body and " You are a support agent." in body
        assert "-Your refund is on its way." in body and "+Your refund was sent today." in body
        # Added rows green, missing red (the +/- glyphs say it without colour).
        table = spans_table(diff, wide=size[0] >= 120)
        assert [row.style for row in table.rows] == ["bold", "", "", "", "", "red", "green", ""]
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen), "Esc goes back to the trace"


async def test_m_and_d_on_the_trace_list_use_the_selected_row(store):
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TracesScreen)
        assert screen.selected_trace is not None and screen.selected_trace.trace_id == trace_id_of(THIS)
        await pilot.press("m")
        assert app.marked_trace == (trace_id_of(THIS), "agent")
        await pilot.press("down")
        await pilot.press("d")
        await settle(pilot)
        diff_screen = app.screen
        assert isinstance(diff_screen, TraceDiffScreen)
        assert (diff_screen.marked_id, diff_screen.this_id) == (trace_id_of(THIS), trace_id_of(MARKED))
        assert diff_screen.diff is not None
        # Marked the other way round: the validate step is added, the third search_docs missing.
        assert [row.status for row in diff_screen.diff.spans] == ["both", "both", "both", "both", "missing",
                                                                  "added", "both"]
        assert diff_screen.diff.spans[4].name == "search_docs" and diff_screen.diff.spans[5].name == "validate"
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TracesScreen)


def test_alignment_counts_same_named_siblings_and_depth():
    def s(sid: str, parent: str | None, name: str, start: int, duration: int = 10, **kw) -> object:
        return span(id=start + 1, span_id=sid.encode().ljust(8, b"."),
                    parent_span_id=parent.encode().ljust(8, b".") if parent else None, name=name, kind="span",
                    start_ns=start, end_ns=start + duration, duration_ns=duration, billed=0, cost_nusd=None,
                    input_tokens=None, output_tokens=None, **kw)

    marked = [s("r", None, "root", 0, 100), s("a", "r", "step", 1), s("b", "r", "step", 2), s("c", "b", "leaf", 3)]
    # This trace: the second `step` has no leaf, a leaf hangs under the first one instead.
    this = [s("R", None, "root", 0, 100), s("A", "R", "step", 1), s("B", "R", "step", 2), s("C", "A", "leaf", 3)]
    rows = align(marked, this)  # type: ignore[arg-type]
    assert [(row.path, row.status) for row in rows] == [
        ((("root", 0),), "both"),
        ((("root", 0), ("step", 0)), "both"),
        ((("root", 0), ("step", 0), ("leaf", 0)), "added"),
        ((("root", 0), ("step", 1)), "both"),
        ((("root", 0), ("step", 1), ("leaf", 0)), "missing"),
    ]
    # Same-named spans match by their order among their namesakes, whatever else sits between them.
    marked = [s("r", None, "root", 0, 100), s("x", "r", "x", 1), s("y", "r", "y", 2)]
    this = [s("R", None, "root", 0, 100), s("Y", "R", "y", 1), s("X", "R", "x", 2)]
    assert {row.status for row in align(marked, this)} == {"both"}  # type: ignore[arg-type]


def test_signed_figures_carry_their_units_and_a_line_diff_of_equal_texts_is_empty():
    assert signed_duration(1_150_000_000) == "+1.15s"
    assert signed_duration(-120 * MS) == "-120ms"
    assert signed_duration(0) == "±0" and signed_duration(None) == "–"
    assert signed_tokens(1200) == "+1.2k tok" and signed_tokens(-300) == "-300 tok"
    assert signed_money(3_000_000) == "+$0.0030" and signed_money(-25_000_000_000) == "-$25.00"
    assert line_diff("same\ntext", "same\ntext") == []
    assert line_diff(None, "new") == [DiffLine("hunk", "@@ -0,0 +1 @@"), DiffLine("added", "new")]


def test_a_chain_thousands_of_spans_deep_aligns_without_recursion():
    def chain(prefix: bytes, depth: int) -> list:
        return [span(id=i + 1, span_id=prefix + i.to_bytes(4, "big"),
                     parent_span_id=prefix + (i - 1).to_bytes(4, "big") if i else None, name="step", kind="span",
                     start_ns=i, end_ns=10_000 - i, duration_ns=10_000 - 2 * i, billed=0, cost_nusd=None)
                for i in range(depth)]

    rows = align(chain(b"mark", 3000), chain(b"this", 3001))
    assert len(rows) == 3001 and rows[-1].depth == 3000
    assert [row.status for row in rows].count("both") == 3000 and rows[-1].status == "added"
    assert rows[1].duration_delta_ns == 0
