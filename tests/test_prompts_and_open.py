"""Issue 11, the first five minutes: the `/` and `:` prompts (visible text, live filter, history,
completion) and opening a trace by id (`:open`, a pasted id, the id column, y/Y)."""

from __future__ import annotations

import pytest
from textual import events
from textual.widgets import Input

from llmobs_tui.screens.prompt import PromptScreen
from llmobs_tui.screens.trace import TraceScreen
from llmobs_tui.screens.traces import TracesScreen
from llmobs_tui.widgets.keyed_table import KeyedTable
from store import dashboards as q
from store.connection import open_reader
from tests.test_tui import make_app, settle, table_keys, tui_store  # noqa: F401 (fixture)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def rendered_line(widget, y: int = 0) -> str:
    return "".join(segment.text for segment in widget.render_line(y))


def messages(app) -> list[str]:
    return [n.message for n in app._notifications]


async def typing_pause(pilot) -> None:
    await pilot.pause(0.45)  # past the prompt's 250 ms debounce
    await settle(pilot)


def failed(db, key: str) -> bool:
    return db.execute("SELECT errors_api + errors_validation + errors_guardrail + error_spans FROM traces "
                      "WHERE trace_id = ?", (bytes.fromhex(key),)).fetchone()[0] > 0


async def test_typed_text_is_visible_in_both_prompts(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for key, text in (("slash", "model=gpt"), ("colon", "window 1h")):
            await pilot.press(key)
            await pilot.press(*text)
            await pilot.pause()
            field = app.screen.query_one(Input)
            assert field.content_region.height >= 1
            assert text in rendered_line(field)
            await pilot.press("escape")
            await pilot.pause()


async def test_filter_applies_as_you_type_and_escape_restores(tui_store):
    app = make_app(tui_store)
    db = open_reader(tui_store)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        traces = app.screen
        assert isinstance(traces, TracesScreen)
        before = table_keys(traces)
        assert any(not failed(db, k) for k in before)
        await pilot.press("slash", *"status=error")
        assert traces.flt.text == "", "debounced: nothing applies while keys arrive"
        await typing_pause(pilot)
        assert isinstance(app.screen, PromptScreen), "the prompt stays open"
        assert traces.flt.text == "status=error"
        keys = table_keys(traces)
        assert keys and all(failed(db, k) for k in keys), "the list under the prompt shows the filter"
        await pilot.press("escape")
        await settle(pilot)
        assert traces.flt.text == "" and table_keys(traces) == before
        # Enter keeps it; a bad filter typed afterwards shows its error in the prompt, applies nothing.
        await pilot.press("slash", *"status=error")
        await typing_pause(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is traces and traces.flt.text == "status=error"
        await pilot.press("slash", "ctrl+u", *"ttft>>1s")
        await typing_pause(pilot)
        assert "not a number" in str(app.screen.query_one("#prompt-hint").content)
        await pilot.press("enter")
        await settle(pilot)
        assert traces.flt.text == "status=error"


async def test_history_per_prompt_kind(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        for text in ("status=error", "model=~gpt"):
            await pilot.press("slash", "ctrl+u", *text, "enter")
            await settle(pilot)
        await pilot.press("colon", *"window 24h", "enter")
        await settle(pilot)
        await pilot.press("slash", "ctrl+u", *"draft")
        field = app.screen.query_one(Input)
        await pilot.press("up")
        assert field.value == "model=~gpt"
        await pilot.press("up")
        assert field.value == "status=error"
        await pilot.press("up")
        assert field.value == "status=error", "stops at the oldest"
        await pilot.press("down", "down")
        assert field.value == "draft", "back down to what was being typed"
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("colon", "up")
        assert app.screen.query_one(Input).value == "window 24h", "commands have their own history"
        await pilot.press("escape")


async def test_tab_completes_field_names_and_known_values(tui_store):
    db = open_reader(tui_store)
    models = sorted({m for (m,) in db.execute("SELECT model FROM dims WHERE model != ''")})
    features = sorted({f for (f,) in db.execute("SELECT feature FROM dims WHERE feature != ''")})
    assert models and features
    app = make_app(tui_store)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("slash", *"mod", "tab")
        field = app.screen.query_one(Input)
        assert field.value == "model"
        await pilot.press("equals_sign", "tab")
        await pilot.pause()
        assert field.value == f"model={models[0]}"
        await pilot.press("tab")
        assert field.value == f"model={models[1]}", "Tab again: the next one"
        await pilot.press("ctrl+u", *f"feature={features[0][:2]}")
        await pilot.pause(0.2)
        assert features[0] in rendered_line(field), "the suggestion shows as you type"
        await pilot.press("escape")
        await pilot.press("colon", *"op", "tab")
        assert app.screen.query_one(Input).value == "open"


def test_known_values_and_prefix_queries(tui_store):
    db = open_reader(tui_store)
    rows = {name: db.execute(query.sql, query.params).fetchall()
            for name, query in q.known_values_queries(2e9).items()}
    values = q.parse_known_values(rows)
    assert values["model"] and values["feature"] and values["tenant"] and values["service"]
    (trace_id,) = db.execute("SELECT trace_id FROM traces LIMIT 1 OFFSET 17").fetchone()
    for length in (5, 8, 12, 32):
        prefix = trace_id.hex()[:length]
        query = q.trace_prefix_query(prefix)
        found = q.parse_trace_prefix(db.execute(query.sql, query.params).fetchall())
        expected = [t for (t,) in db.execute("SELECT trace_id FROM traces ORDER BY trace_id") if t.hex().startswith(prefix)]
        assert found == expected
    query = q.trace_prefix_query("fff")
    assert all(t.hex().startswith("fff") for (t,) in db.execute(query.sql, query.params))
    assert "SEARCH traces USING PRIMARY KEY" in " ".join(str(r) for r in db.execute(f"EXPLAIN QUERY PLAN {query.sql}", query.params))
    assert q.normalize_trace_id_prefix("0xAB-12") == "ab12" and q.normalize_trace_id_prefix("xyz") is None


async def test_open_by_id_prefix_ambiguous_and_unknown(tui_store):
    db = open_reader(tui_store)
    ids = [t.hex() for (t,) in db.execute("SELECT trace_id FROM traces ORDER BY trace_id")]
    target = ids[len(ids) // 2]
    unique = next(target[:n] for n in range(4, 33) if sum(i.startswith(target[:n]) for i in ids) == 1)
    app = make_app(tui_store)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("colon", *f"open {unique}", "enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.trace_id.hex() == target
        await pilot.press("colon", *"open a", "enter")
        await settle(pilot)
        count = sum(i.startswith("a") for i in ids)
        assert any(f"{count} traces have ids starting with a" in m for m in messages(app))
        await pilot.press("colon", *("open " + "0" * 31 + "1"), "enter")
        await settle(pilot)
        assert any("No trace 0000" in m for m in messages(app))
        assert app.screen.trace_id.hex() == target


async def test_a_pasted_or_typed_id_opens_the_trace(tui_store):
    db = open_reader(tui_store)
    ids = [t.hex() for (t,) in db.execute("SELECT trace_id FROM traces ORDER BY trace_id")]
    app = make_app(tui_store)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("slash")
        app.screen.query_one(Input).post_message(events.Paste(ids[3]))
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.trace_id.hex() == ids[3]
        await pilot.press("3")
        await settle(pilot)
        app.screen.query_one(KeyedTable).post_message(events.Paste(f"  {ids[5].upper()}\n"))
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.trace_id.hex() == ids[5]
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("slash", "ctrl+u", *ids[7][:12], "enter")  # `/` with just (the start of) an id
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.trace_id.hex() == ids[7]


async def test_trace_list_shows_short_trace_ids_when_wide(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        table = app.screen.query_one(KeyedTable)
        assert "trace" in [str(c.label) for c in table.columns.values()]
        key = table_keys(app.screen)[0]
        assert key[:8] in " ".join(rendered_line(table, y) for y in range(3))
        assert table.virtual_size.width <= 160


async def test_y_copies_the_trace_id_and_shift_y_the_span_id(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TraceScreen) and screen.selected_span is not None
        await pilot.press("y")
        await settle(pilot)
        assert f"The trace id is {screen.trace_id.hex()}" in messages(app)[-1]
        await pilot.press("Y")
        await settle(pilot)
        assert f"The span id is {screen.selected_span.span_id.hex()}" in messages(app)[-1]
