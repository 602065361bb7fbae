"""Search inside a trace (issue 13, capability 2): `/` on the Trace screen, through the real writer
and the real app. A planted trace mentions "refund" in five different places (a prompt, a tool
result, a span name with markup and an escape sequence in it, an attribute key, an attribute
value) and not in four other spans, two of which failed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from llmobs_tui.app import LlmobsApp
from llmobs_tui.scenarios import MS, S, SpanSpec, Trace, to_otlp_request, trace_id_of
from llmobs_tui.screens.prompt import PromptScreen
from llmobs_tui.screens.trace import TraceScreen
from llmobs_tui.screens.traces import TracesScreen
from llmobs_tui.trace_search import SpanText, find_matches
from llmobs_tui.widgets.waterfall import MATCH_MARK, Waterfall
from receiver.normalize import Normalizer
from store.writer import SpanWriter
from tests.test_markup_safety import Frame
from tests.tui_fixtures import FROZEN_NOW

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

NUMBER = 4242
HOSTILE_NAME = "[bold red]Refund[/] \x1b[31mnow"


def chat(parent: int, start_ms: int, duration_ms: int, *, user: str = "Hello", answer: str = "Hi",
         error: str | None = None) -> SpanSpec:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
             "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20}
    if error:
        attrs.update({"error.type": "RateLimitError", "http.response.status_code": 429})
    else:
        attrs["gen_ai.input.messages"] = json.dumps([
            {"role": "system", "parts": [{"type": "text", "content": "You are a store assistant."}]},
            {"role": "user", "parts": [{"type": "text", "content": user}]}])
        attrs["gen_ai.output.messages"] = json.dumps([{"role": "assistant", "parts": [
            {"type": "text", "content": answer}], "finish_reason": "stop"}])
    return SpanSpec("chat gpt-4o", parent, start_ms * MS, duration_ms * MS, attrs, error=error, kind=3)


def planted_trace() -> Trace:
    spans = [
        SpanSpec("support request", None, 0, 1000 * MS, {"app.llm.feature": "support"}, kind=2),  # 0
        chat(0, 10, 290, user="I want a REFUND for order 42", answer="Let me look it up."),  # 1: content
        SpanSpec("lookup_order", 0, 310 * MS, 90 * MS, {  # 2: tool result
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
            "gen_ai.tool.call.arguments": json.dumps({"order": 42}),
            "gen_ai.tool.call.result": json.dumps({"status": "refund-eligible"})}),
        chat(0, 410, 40, error="Error code: 429 - Rate limit reached"),  # 3: failed, no match
        SpanSpec(HOSTILE_NAME, 0, 460 * MS, 10 * MS),  # 4: the name
        SpanSpec("compose", 0, 480 * MS, 420 * MS),  # 5: no match
        SpanSpec("format_reply", 5, 490 * MS, 10 * MS, {"refund.reason": "late"}),  # 6: an attribute key
        SpanSpec("audit", 5, 510 * MS, 10 * MS, {"audit.note": "customer asked about Refunds twice"}),  # 7: a value
        chat(0, 910, 40, error="Error code: 429 - Rate limit reached"),  # 8: failed, no match
    ]
    return Trace("support", "support-bot", spans)


def span_id(index: int) -> bytes:
    """The span id to_otlp_request gives span `index` of the planted trace."""
    return (NUMBER % 2**40).to_bytes(5, "big") + (index + 1).to_bytes(3, "big")


MATCHES = [1, 2, 4, 6, 7]  # in tree order
FAILED = [3, 8]


@pytest.fixture
def store(db_path: Path, writer_db: sqlite3.Connection, normalizer: Normalizer) -> Path:
    writer = SpanWriter(writer_db, clock=lambda: int(FROZEN_NOW * S))
    request = to_otlp_request([(planted_trace(), NUMBER, int((FROZEN_NOW - 120) * S))])
    rows, resources, scopes, rejections = normalizer.decode_traces(request, int(FROZEN_NOW * S))
    assert rejections.count == 0
    writer.write(rows, [], resources, scopes)
    return db_path


async def settle(pilot) -> None:
    for _ in range(3):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.app.tick()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def open_planted(pilot) -> TraceScreen:
    await pilot.press("3")
    await settle(pilot)
    pilot.app.open_trace(trace_id_of(NUMBER))
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, TraceScreen)
    return screen


async def search(pilot, text: str) -> None:
    await pilot.press("slash")
    await pilot.pause()
    assert isinstance(pilot.app.screen, PromptScreen), "/ on the Trace screen opens the prompt"
    for ch in text:
        await pilot.press(ch if ch != " " else "space")
    await pilot.press("enter")
    await settle(pilot)


def header(screen: TraceScreen) -> str:
    return str(screen.query_one("#trace-summary").render())


def selected_index(screen: TraceScreen) -> int:
    selected = screen.query_one(Waterfall).selected
    assert selected is not None
    return next(i for i in range(9) if span_id(i) == selected.span_id)


async def test_slash_marks_the_matches_and_n_moves_between_them_and_wraps(store):
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_planted(pilot)
        waterfall = screen.query_one(Waterfall)
        assert selected_index(screen) == 1  # the trace opens on its first LLM call
        assert not waterfall.searching and "match" not in header(screen)

        await search(pilot, "REFUND")
        assert isinstance(app.screen, TraceScreen)
        assert [span_id(i) for i in MATCHES] == [s.span_id for s in waterfall.match_order]
        # The cursor was on a match already: it stays, and the header counts it.
        assert selected_index(screen) == 1
        assert "match 1/5 for 'REFUND' in user message" in header(screen)
        assert "Esc, then n/N" in header(screen), "the header says how to reach the failed spans"
        # Each match is marked in its row, and only the matches.
        marked = [i for i, row in enumerate(waterfall.rows)
                  if MATCH_MARK in "".join(seg.text for seg in waterfall._segments(row, 150, False))]
        assert marked == MATCHES  # rows are in tree order, one per span: row i is span i

        visited = []
        for _ in range(5):
            await pilot.press("n")
            await pilot.pause()
            visited.append(selected_index(screen))
        assert visited == [2, 4, 6, 7, 1], "n walks the matches in tree order and wraps"
        assert "match 1/5" in header(screen)
        await pilot.press("N")
        await pilot.pause()
        assert selected_index(screen) == 7 and "match 5/5" in header(screen), "N wraps backwards"
        where = {2: "tool result", 4: "name", 6: "attribute refund.reason", 7: "attribute audit.note"}
        for index, expected in where.items():
            waterfall.select_span(span_id(index))
            await pilot.pause()
            assert f"in {expected}" in header(screen)

        # Esc ends the search: the marks go, n/N are the failed spans' again, the screen stays.
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, TraceScreen) and not waterfall.searching
        assert "match" not in header(screen) and "failed (n/N)" in header(screen)
        waterfall.select_span(span_id(1))
        await pilot.press("n")
        await pilot.pause()
        assert selected_index(screen) == 3
        await pilot.press("n")
        await pilot.pause()
        assert selected_index(screen) == 8
        # With no search on, Esc goes back to the previous screen as before.
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TracesScreen)


async def test_n_reaches_a_match_inside_a_collapsed_subtree_and_the_prompt_esc_restores(store):
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_planted(pilot)
        waterfall = screen.query_one(Waterfall)
        waterfall.select_span(span_id(5))
        await pilot.press("space")  # collapse "compose" and its two matching children
        await pilot.pause()
        assert span_id(6) not in [row.span.span_id for row in waterfall.rows]
        waterfall.select_span(span_id(4))
        await search(pilot, "refund")
        assert selected_index(screen) == 4  # on a match already
        await pilot.press("n")
        await pilot.pause()
        assert selected_index(screen) == 6, "the collapsed subtree opens to show the match"
        # LLM only (l) hides four of the five matches: n skips them, the header counts them.
        await pilot.press("l")
        await pilot.pause()
        assert "(4 hidden by l/p)" in header(screen)
        for _ in range(2):
            await pilot.press("n")
            await pilot.pause()
            assert selected_index(screen) == 1
        await pilot.press("l")
        await pilot.pause()

        # `/` then Esc in the prompt keeps the search there was.
        await pilot.press("slash")
        await pilot.pause()
        await pilot.press("x", "y", "z")
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen) and len(waterfall.match_order) == 5
        # A search with no match says so, and n says there is nothing to go to.
        await search(pilot, "no such words")
        assert waterfall.searching and waterfall.match_order == []
        assert "no match for 'no such words'" in header(screen)


async def test_hostile_text_in_a_match_and_in_the_query_is_shown_literally(store):
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_planted(pilot)
        waterfall = screen.query_one(Waterfall)
        # Plain text, not a pattern: as a regex `[bold red]` would match any name with a b, o, l, d…
        await search(pilot, "[bold red]")
        assert [s.span_id for s in waterfall.match_order] == [span_id(4)]
        assert selected_index(screen) == 4, "Enter moves to the first match"
        frame = Frame(app)
        assert "\x1b" not in frame.text
        assert "[bold red]Refund[/] ␛[31mnow" in frame.text, "the matched name is drawn as it is, escape shown"
        assert "match 1/1 for '[bold red]' in name" in frame.text
        assert "\x1b[31m" not in frame.raw


async def test_content_is_searched_in_a_bounded_number_of_spans_names_in_all(store, monkeypatch):
    import llmobs_tui.screens.trace as trace_module

    monkeypatch.setattr(trace_module, "MAX_CONTENT_SPANS", 3)  # the first three spans by start time
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_planted(pilot)
        await search(pilot, "refund")
        # Content (message, tool result) of spans 0–2; the name of span 4; not spans 6 and 7's attributes.
        assert [s.span_id for s in screen.query_one(Waterfall).match_order] == [span_id(i) for i in (1, 2, 4)]
        assert "content of the first 3 of 9 spans, names of all" in header(screen)


def test_matching_is_case_insensitive_plain_text_and_reports_where():
    from tests.test_first_minutes_render import span

    spans = [span(span_id=b"a" * 8, name="Refund (v2)"), span(span_id=b"b" * 8, name="other"),
             span(span_id=b"c" * 8, name="third")]
    texts = {b"b" * 8: SpanText((("user message", "give me a refund"),)),
             b"c" * 8: SpanText((("attribute x", "x\n.*"),))}
    assert find_matches("REFUND", spans, texts) == {b"a" * 8: "name", b"b" * 8: "user message"}
    assert find_matches("(v2)", spans, texts) == {b"a" * 8: "name"}
    assert find_matches(".*", spans, texts) == {b"c" * 8: "attribute x"}
    assert find_matches("  ", spans, texts) == {}


async def test_a_span_that_arrives_during_a_search_is_searched_too(store, writer_db, normalizer):
    app = LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_planted(pilot)
        await search(pilot, "refund")
        assert len(screen.query_one(Waterfall).match_order) == 5
        late = Trace("support", "support-bot", [
            *planted_trace().spans,
            SpanSpec("notify_customer", 0, 960 * MS, 30 * MS, {"message.body": "Your REFUND is on its way"})])
        request = to_otlp_request([(late, NUMBER, int((FROZEN_NOW - 120) * S))])
        # Only the new span (index 9) is written: the others are in the store already.
        del request.resource_spans[0].scope_spans[0].spans[:9]
        rows, resources, scopes, _ = normalizer.decode_traces(request, int(FROZEN_NOW * S))
        SpanWriter(writer_db, clock=lambda: int(FROZEN_NOW * S)).write(rows, [], resources, scopes)
        await settle(pilot)  # the next refresh reads the new span, then its content
        await settle(pilot)
        assert [s.span_id for s in screen.query_one(Waterfall).match_order] == \
            [span_id(i) for i in (*MATCHES, 9)]
        assert "/6 for 'refund'" in header(screen)
