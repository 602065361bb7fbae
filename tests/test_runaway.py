"""Runaway agents (issue 16): planted loops and ceilings, written through the real Normalizer and
SpanWriter, evaluated by the real rule engine and checked against the store's own rows; the
Overview's panel through the real app; a finding delivered to a local webhook.

A running agent's root span has not arrived (spans are exported when they end): the planted
"running" traces simply never send their parentless span."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from llmobs_tui.alerting.engine import AlertEngine, Finding
from llmobs_tui.alerting.live import EngineAlerts
from llmobs_tui.alerting.notify import AlertDelivery
from llmobs_tui.alerting.runaway import RunawayDetector
from llmobs_tui.app import LlmobsApp
from llmobs_tui.config import AlertSettings, Config, ConfigError, NotifyTarget, load_config
from llmobs_tui.screens.trace import TraceScreen
from llmobs_tui.widgets.runaway_panel import RunawayPanel
from store.connection import open_reader
from store.content import TOOL_IO_KEYS
from tests.otlp_factory import make_span, span_id_bytes, trace_id_bytes
from tests.store_writing import write_through, writing
from tests.test_notify import receiver
from tests.tui_fixtures import use_utc
from tests.tui_scenarios import settle

NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z
NS = 1_000_000_000


def llm(trace: int, span: int, at_s: float, inp: int = 1000, out: int = 100, conversation: str | None = None):
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
             "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out}
    if conversation:
        attrs["gen_ai.conversation.id"] = conversation
    return make_span(trace, span, 1, "chat gpt-4o", attrs, start_ns=int(at_s * NS), end_ns=int((at_s + 0.8) * NS))


def tool(trace: int, span: int, at_s: float, name: str, arguments: str | None, conversation: str | None = None):
    attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
    if arguments is not None:
        attrs["gen_ai.tool.call.arguments"] = arguments
    if conversation:
        attrs["gen_ai.conversation.id"] = conversation
    return make_span(trace, span, 1, f"execute_tool {name}", attrs, start_ns=int(at_s * NS),
                     end_ns=int((at_s + 0.1) * NS))


def agent(trace: int, at_s: float, calls: list[tuple[str, str | None]], *, root: bool,
          conversation: str | None = None, inp: int = 1000, out: int = 100) -> list:
    """An agent turn: per step an LLM call then a tool call, 2 s apart; its root only when `root`."""
    spans = []
    for step, (name, arguments) in enumerate(calls):
        spans.append(llm(trace, 2 + 2 * step, at_s + 2 * step, inp, out, conversation))
        spans.append(tool(trace, 3 + 2 * step, at_s + 2 * step + 1, name, arguments, conversation))
    if root:
        attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"}
        if conversation:
            attrs["gen_ai.conversation.id"] = conversation
        spans.append(make_span(trace, 1, None, "invoke_agent support", attrs, start_ns=int(at_s * NS),
                               end_ns=int((at_s + 2 * len(calls) + 1) * NS), kind=2))
    return spans


def write(path: Path, *traces: list) -> Path:
    with writing(path, int(NOW * NS)) as (normalizer, writer, _db):
        write_through(normalizer, writer, [s for t in traces for s in t], [], int(NOW * NS))
    return path


def evaluate(path: Path, **settings) -> list[Finding]:
    engine = AlertEngine(path, Config(alerts=AlertSettings(**settings)))
    try:
        return [f for f in engine.evaluate(NOW) if f.rule == "runaway"]
    finally:
        engine.close()


def sql(path: Path, query: str, *params) -> list[tuple]:
    db = open_reader(path)
    try:
        return db.execute(query, params).fetchall()
    finally:
        db.close()


def latest_tool_span(path: Path, trace: int) -> bytes:
    return sql(path, "SELECT span_id FROM spans WHERE trace_id = ? AND kind = 'tool' ORDER BY start_ns DESC LIMIT 1",
               trace_id_bytes(trace))[0][0]


LOOP = [("search_orders", '{"order": 42, "status": "open"}')] * 3 + [("search_orders", '{"status":"open","order":42}')] * 3


@pytest.fixture(autouse=True)
def _utc() -> None:
    use_utc()


@pytest.fixture
def planted(tmp_path) -> Path:
    """Trace 1 loops (6 × search_orders with the same arguments, written with two key orders), still
    running; trace 2 is a healthy finished agent; trace 3 calls the same tool with other arguments."""
    healthy = agent(2, NOW - 120, [("lookup_customer", '{"id": 7}'), ("search_orders", '{"order": 42}'),
                                   ("refund", '{"order": 42}')], root=True)
    varied = agent(3, NOW - 90, [("search_orders", f'{{"order": {n}}}') for n in range(6)], root=False)
    return write(tmp_path / "loop.db", agent(1, NOW - 60, LOOP, root=False), healthy, varied)


def test_a_planted_loop_names_its_trace_and_latest_repetition(planted):
    assert sql(planted, "SELECT root_known FROM traces WHERE trace_id = ?", trace_id_bytes(1)) == [(0,)]
    findings = evaluate(planted, runaway_severity="page")
    assert [f.key.split(":")[:3] for f in findings] == [["runaway", "loop", trace_id_bytes(1).hex()]]
    loop = findings[0]
    assert loop.example_trace_id == trace_id_bytes(1)
    assert loop.example_span_id == latest_tool_span(planted, 1) == span_id_bytes(13)
    assert (loop.value, loop.threshold, loop.severity) == (6, 5, "page")
    assert "search_orders ×6" in loop.title and "(running)" in loop.title
    # The arguments are never in a title: their hash is; the detail shows them cut short.
    assert "42" not in loop.title and "open" not in loop.title and "#" in loop.title
    assert '{"order":42,"status":"open"}' in loop.detail


def test_the_same_tool_with_different_arguments_or_none_stored_is_no_loop(tmp_path):
    varied = agent(1, NOW - 60, [("search_orders", f'{{"order": {n}}}') for n in range(8)], root=False)
    # Content not captured: six calls of one tool whose arguments nobody saw are not "the same arguments".
    unseen = agent(2, NOW - 60, [("search_orders", None)] * 8, root=False)
    path = write(tmp_path / "varied.db", varied, unseen)
    assert sql(path, "SELECT count(*) FROM spans WHERE kind = 'tool'") == [(16,)]
    assert evaluate(path) == []


def test_a_finished_trace_is_no_running_agent_but_its_loop_still_counts(tmp_path):
    """Root arrived: past the step ceiling is not a runaway (the agent stopped); a loop in it is a ticket."""
    long_finished = agent(1, NOW - 200, [(f"tool{n}", f'{{"n": {n}}}') for n in range(30)], root=True)
    long_running = agent(2, NOW - 200, [(f"tool{n}", f'{{"n": {n}}}') for n in range(30)], root=False)
    finished_loop = agent(3, NOW - 100, LOOP, root=True)
    path = write(tmp_path / "finished.db", long_finished, long_running, finished_loop)
    findings = {f.key: f for f in evaluate(path, runaway_max_steps=20, runaway_severity="page")}
    ceiling = findings.pop(f"runaway:ceiling:{trace_id_bytes(2).hex()}")
    steps = sql(path, "SELECT llm_calls + (SELECT count(*) FROM spans s WHERE s.trace_id = t.trace_id AND "
                      "s.kind = 'tool') FROM traces t WHERE trace_id = ?", trace_id_bytes(2))[0][0]
    assert steps == 60 and ceiling.value_text == "60 steps > 20" and ceiling.severity == "page"
    assert ceiling.example_trace_id == trace_id_bytes(2)
    assert ceiling.example_span_id == sql(path, "SELECT span_id FROM spans WHERE trace_id = ? ORDER BY end_ns DESC "
                                                "LIMIT 1", trace_id_bytes(2))[0][0]
    [loop] = findings.values()
    assert loop.example_trace_id == trace_id_bytes(3) and loop.severity == "ticket" and "(finished)" in loop.title
    assert not any(trace_id_bytes(1).hex() in key for key in findings)


def test_conversation_repeats_across_turns(tmp_path):
    """Four turns each looking customer 7 up three times: 12 across the conversation (≥ 10), no turn ≥ 5."""
    turns = [agent(10 + n, NOW - 400 + 60 * n, [("lookup_customer", '{"id": 7}')] * 3, root=True, conversation="c-1")
             for n in range(4)]
    quiet = [agent(20 + n, NOW - 300 + 60 * n, [("lookup_customer", '{"id": 8}')] * 2, root=True, conversation="c-2")
             for n in range(2)]
    path = write(tmp_path / "conversation.db", *turns, *quiet)
    assert sql(path, "SELECT count(*) FROM traces WHERE conversation_id = 'c-1'") == [(4,)]
    [finding] = evaluate(path)
    assert finding.key.startswith("runaway:conversation:c-1:")
    assert (finding.value, finding.threshold) == (12, 10)
    assert "across 4 turns" in finding.title and finding.scope == "conversation c-1"
    # The latest repetition: the last turn's last tool call.
    assert finding.example_trace_id == trace_id_bytes(13)
    assert finding.example_span_id == latest_tool_span(path, 13)
    # A lower bar finds c-2 too; 0 turns the conversation check off.
    assert {f.key.split(":")[2] for f in evaluate(path, runaway_conversation_repeats=4)} == {"c-1", "c-2"}
    assert evaluate(path, runaway_conversation_repeats=0) == []


def test_token_and_cost_ceilings_of_a_running_agent(tmp_path):
    heavy = agent(1, NOW - 100, [(f"t{n}", f'{{"n": {n}}}') for n in range(10)], root=False, inp=20_000, out=2_000)
    light = agent(2, NOW - 100, [(f"t{n}", f'{{"n": {n}}}') for n in range(3)], root=False)
    path = write(tmp_path / "ceilings.db", heavy, light)
    tokens, cost = sql(path, "SELECT input_tokens + output_tokens, cost_nusd FROM traces WHERE trace_id = ?",
                       trace_id_bytes(1))[0]
    assert tokens == 220_000 and cost > 0.3e9  # gpt-4o: 200k input and 20k output tokens
    [finding] = evaluate(path, runaway_max_steps=0, runaway_max_tokens=100_000, runaway_max_cost_usd=0.25)
    assert finding.key == f"runaway:ceiling:{trace_id_bytes(1).hex()}"
    assert finding.value_text == f"220,000 tokens > 100,000 · ${cost / 1e9:,.2f} > $0.25"
    assert finding.value == pytest.approx(max(2.2, cost / 0.25e9))
    assert evaluate(path, runaway_max_steps=0, runaway_max_tokens=300_000) == []
    assert evaluate(path, runaway_max_steps=0, runaway_max_cost_usd=5) == []


def test_outside_the_window_nothing_runs_away(planted):
    assert evaluate(planted, runaway_window_s=30) == []


def test_a_warm_detector_reads_only_new_blobs(planted):
    detector = RunawayDetector()
    db = open_reader(planted)
    try:
        first = detector.detect(db, AlertSettings(), NOW)
        again = detector.detect(db, AlertSettings(), NOW)
    finally:
        db.close()
    # Only tool spans whose tool repeats ≥ 5 times in their trace are candidates (traces 1 and 3).
    candidates = sql(planted, "SELECT sum(n) FROM (SELECT count(*) AS n FROM spans WHERE kind = 'tool' "
                              "GROUP BY trace_id, tool_name HAVING n >= 5)")[0][0]
    assert (first.tool_spans, first.candidates, first.digested) == (15, candidates, candidates) and candidates == 12
    assert (again.tool_spans, again.candidates, again.digested) == (15, 12, 0)
    assert [r.key for r in again.looping] == [r.key for r in first.looping] and len(first.looping) == 1


def test_a_loop_that_grows_between_evaluations_is_found(tmp_path):
    """Four calls are no candidate (not digested); two more arrive: the four older blobs are read then."""
    calls = agent(1, NOW - 60, LOOP, root=False)
    tools = [s for s in calls if s.name.startswith("execute_tool")]
    path = write(tmp_path / "growing.db", [s for s in calls if s not in tools[4:]])
    detector, settings = RunawayDetector(), AlertSettings()
    db = open_reader(path)
    try:
        first = detector.detect(db, settings, NOW)
        assert (first.tool_spans, first.candidates, first.looping) == (4, 0, [])
    finally:
        db.close()
    write(path, tools[4:])
    db = open_reader(path)
    try:
        grown = detector.detect(db, settings, NOW)
    finally:
        db.close()
    assert (grown.tool_spans, grown.candidates, grown.digested) == (6, 6, 6)
    [loop] = grown.looping
    assert (loop.trace_id, loop.span_id, loop.repeats) == (trace_id_bytes(1), latest_tool_span(path, 1), 6)


def test_a_warm_detector_on_clickhouse_reads_only_new_blobs(tmp_path, http):
    """On ClickHouse a read's rows have no ids (a row's id is its place in the read): the digests are carried
    over by span. Four calls are no candidate; two more arrive and all six are read and digested; the next
    evaluation reads no blob and finds the same loop."""
    import sqlite3
    import time

    from store.clickhouse.sink import copy_store

    now = float(int(time.time()))  # recent: ClickHouse's retention drops older spans at merges
    calls = agent(1, now - 60, LOOP, root=False)
    tools = [s for s in calls if s.name.startswith("execute_tool")]
    healthy = agent(2, now - 120, [("lookup_customer", '{"id": 7}'), ("refund", '{"order": 42}')], root=True)
    path = tmp_path / "growing.db"

    def written(spans: list) -> None:  # by a writer whose clock says `now` (NOW's spans would be past retention)
        with writing(path, int(now * NS)) as (normalizer, writer, _db):
            write_through(normalizer, writer, spans, [], int(now * NS))

    def copied() -> None:
        db = sqlite3.connect(path)
        try:
            copy_store(db, http)  # again: the newer version of each span replaces the older (rollups unread here)
        finally:
            db.close()

    read_blobs = []
    query = http.query

    def watched(sql, *args, **kwargs):
        read_blobs.append(" raw FROM spans" in sql)
        return query(sql, *args, **kwargs)

    http.query = watched
    written([s for s in calls if s not in tools[4:]] + healthy)
    copied()
    detector, settings = RunawayDetector(), AlertSettings()
    first = detector.detect_clickhouse(http, settings, now)
    assert (first.tool_spans, first.candidates, first.digested, first.looping) == (6, 0, 0, [])
    assert not any(read_blobs)
    written(tools[4:])
    copied()
    grown = detector.detect_clickhouse(http, settings, now)
    assert (grown.tool_spans, grown.candidates, grown.digested) == (8, 6, 6)
    [loop] = grown.looping
    assert (loop.trace_id, loop.span_id, loop.repeats) == (trace_id_bytes(1), latest_tool_span(path, 1), 6)
    read_blobs.clear()
    again = detector.detect_clickhouse(http, settings, now)
    assert (again.tool_spans, again.candidates, again.digested) == (8, 6, 0)
    assert [r.key for r in again.looping] == [loop.key] and not any(read_blobs)


def test_clickhouse_reads_the_blobs_wanted_by_their_start_or_by_their_traces(tmp_path, http):
    """The blobs of the tool rows a ClickHouse evaluation wants: most of the window's (a first evaluation) are
    read by the earliest one's start alone; a few among many by their traces' ids. Either way each wanted span
    gets its own blob, with two versions of it unmerged in ClickHouse, and nothing else (an older version's blob
    that differs: tests/test_clickhouse_client.py)."""
    import sqlite3
    import time

    from store.alerts import tool_arguments_text
    from store.clickhouse.alerts import runaway_rows
    from store.clickhouse.sink import copy_store

    now = float(int(time.time()))  # recent: ClickHouse's retention drops older spans at merges
    loop = agent(1, now - 600, LOOP, root=False)
    others = [agent(10 + n, now - 500 + 10 * n, [("lookup", f'{{"id": {n}}}'), ("refund", f'{{"order": {n}}}')],
                    root=True) for n in range(12)]
    path = tmp_path / "many.db"
    with writing(path, int(now * NS)) as (normalizer, writer, _db):
        write_through(normalizer, writer, [s for t in (loop, *others) for s in t], [], int(now * NS))
    db = sqlite3.connect(path)
    try:
        for _ in range(2):  # two versions of every span, unmerged
            copy_store(db, http)
    finally:
        db.close()
    sqls: list[str] = []
    query = http.query

    def watched(sql, *args, **kwargs):
        sqls.append(sql)
        return query(sql, *args, **kwargs)

    http.query = watched
    detector, settings = RunawayDetector(), AlertSettings()
    since = int((now - settings.runaway_window_s) * NS)

    def read(pick):
        sqls.clear()
        rows, raws = runaway_rows(http, detector.queries(settings, now), since, 5000, 20000, pick)
        [blob_read] = [q for q in sqls if " raw FROM spans" in q]
        by_row = {row[0]: row for row in rows["tools"]}
        return ({(by_row[i][1], by_row[i][2]): tool_arguments_text(raw, compressed=False) for i, raw in raws.items()},
                "PREWHERE" in blob_read)

    everything, by_ids = read(lambda tools: tools)
    assert not by_ids and len(everything) == 6 + 2 * 12
    assert sorted(everything.values()) == sorted(
        tool_arguments_text_of(s) for t in (loop, *others) for s in t if s.name.startswith("execute_tool"))
    loop_only, by_ids = read(lambda tools: [r for r in tools if r[3] == "search_orders"])
    assert by_ids and loop_only == {key: text for key, text in everything.items() if key[0] == trace_id_bytes(1)}
    assert len(loop_only) == 6


def tool_arguments_text_of(span) -> str:
    """A tool span's arguments as the rule normalizes them (JSON re-serialized with sorted keys)."""
    import json

    [arguments] = [kv.value.string_value for kv in span.attributes if kv.key == "gen_ai.tool.call.arguments"]
    return json.dumps(json.loads(arguments), sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize("arguments_key,result_key", TOOL_IO_KEYS)
def test_tool_arguments_are_read_from_every_family_and_a_span_without_them_is_not_parsed(
        arguments_key, result_key, monkeypatch):
    """Each instrumentation family's arguments key gives the normalized arguments; a span with only a result,
    or with an arguments key's text in a value but not as a key, has none. Without the text of any arguments
    key in the stored span, the span is not parsed at all."""
    import zstandard
    from opentelemetry.proto.trace.v1 import trace_pb2

    from store import alerts

    def stored(attrs: dict[str, str]) -> bytes:
        span = make_span(1, 2, None, "execute_tool search", {"gen_ai.tool.name": "search", **attrs})
        return zstandard.ZstdCompressor().compress(span.SerializeToString())

    assert alerts.tool_arguments_text(stored({arguments_key: '{"b": 1,  "a": [2]}'})) == '{"a":[2],"b":1}'
    assert alerts.tool_arguments_text(stored({arguments_key: "find   the\norder"})) == "find the order"
    assert alerts.tool_arguments_text(stored({result_key: '{"ok": true}'})) is None
    assert alerts.tool_arguments_text(stored({"note": f"about {arguments_key}"})) is None  # parsed: not a key
    # Plain, as ClickHouse keeps the span: the same text.
    plain = make_span(1, 2, None, "execute_tool search", {arguments_key: '{"b": 1,  "a": [2]}'}).SerializeToString()
    assert alerts.tool_arguments_text(plain, compressed=False) == '{"a":[2],"b":1}'
    assert alerts.tool_arguments_text(plain) is None  # not zstd: a damaged blob, never an exception
    parsed = []
    real = trace_pb2.Span.FromString
    monkeypatch.setattr(trace_pb2.Span, "FromString", lambda data: parsed.append(1) or real(data))
    assert alerts.tool_arguments_text(stored({result_key: "done", "gen_ai.operation.name": "execute_tool"})) is None
    assert not parsed


def test_the_runaway_table(tmp_path):
    path = tmp_path / "llmobs.toml"
    path.write_text('[alerts.runaway]\nrepeats = 3\nconversation_repeats = 6\nmax_steps = 80\nmax_tokens = 500000\n'
                    'max_cost = "$2.50"\nwindow = "30m"\nseverity = "page"\n')
    settings = load_config(path).alerts
    assert (settings.runaway_repeats, settings.runaway_conversation_repeats, settings.runaway_max_steps,
            settings.runaway_max_tokens, settings.runaway_max_cost_usd, settings.runaway_window_s,
            settings.runaway_severity) == (3, 6, 80, 500_000, 2.5, 1800, "page")
    defaults = AlertSettings()
    assert (defaults.runaway_repeats, defaults.runaway_max_steps, defaults.runaway_severity) == (5, 50, "ticket")


@pytest.mark.parametrize("line,reason", [
    ("repeats = 1", "repeats: must be a whole number of at least 2"),
    ("max_steps = 2.5", "max_steps: must be a whole number"),
    ('severity = "urgent"', "severity: must be one of page, ticket"),
    ('window = "5s"', "window: must be from 1m to 1d"),
    ('window = "soon"', "window: 'soon' is not a duration"),
    ('max_cost = "lots"', "max_cost: 'lots' is not an amount"),
    ("loops = 3", "[alerts.runaway] loops: unknown"),
])
def test_runaway_config_errors_name_the_line(tmp_path, line, reason):
    path = tmp_path / "llmobs.toml"
    path.write_text(f"[alerts]\nmin_calls = 5\n\n[alerts.runaway]\nconversation_repeats = 8\n{line}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f"{path}:6: " in str(error.value) and reason in str(error.value)


# --- the Overview, through the real app ----------------------------------------------------------------


@pytest.mark.anyio
async def test_the_overview_lists_runaway_agents_and_enter_opens_the_trace(tmp_path):
    hostile = "[bold red]rm[/] -rf"
    looping = agent(1, NOW - 60, [(hostile, '{"path": "/"}')] * 6, root=False)
    running = agent(2, NOW - 200, [(f"t{n}", f'{{"n": {n}}}') for n in range(30)], root=False)
    path = write(tmp_path / "overview.db", looping, running)
    settings = replace(AlertSettings(), runaway_max_steps=40)
    app = LlmobsApp(path, clock=lambda: NOW, refresh_s=None, alerts=EngineAlerts(path, Config(alerts=settings)))
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        panel = app.screen.query_one(RunawayPanel)
        assert panel.display
        text = str(panel.render())
        assert "Runaway agents: 1 running over ceiling · 1 looping (1 still running)" in text
        assert trace_id_bytes(2).hex() in text and trace_id_bytes(1).hex() in text
        assert hostile in text and "60 steps > 40" in text  # the name kept verbatim: Text, not markup
        assert '"/"' not in text  # the arguments never shown
        # The worst first: the trace 50 % over its step ceiling (ratio 1.5) before the loop (6/5).
        panel.focus()
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.trace_id == trace_id_bytes(2)
        # A click on the second row opens the looping trace.
        await pilot.press("1")
        await settle(pilot)
        await pilot.click(RunawayPanel, offset=(10, 2))
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.trace_id == trace_id_bytes(1)
        # The loop's finding reaches the Alerts screen too, its example the latest repetition.
        loop = next(a for a in app.alerts.snapshot(NOW) if a.key.startswith("runaway:loop:"))
        assert loop.example_trace_id == trace_id_bytes(1) and loop.example_span_id == latest_tool_span(path, 1)


@pytest.mark.anyio
async def test_the_overview_keeps_its_layout_when_nothing_runs_away(tmp_path):
    path = write(tmp_path / "calm.db", agent(1, NOW - 60, [("search", '{"q": 1}')] * 2, root=True))
    app = LlmobsApp(path, clock=lambda: NOW, refresh_s=None, alerts=EngineAlerts(path, Config()))
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        assert not app.screen.query_one(RunawayPanel).display


# --- delivery -------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_runaway_finding_reaches_the_webhook(planted):
    async with receiver() as hook:
        lines: list[str] = []
        config = Config(notify=[NotifyTarget(type="webhook", url=hook.url)])
        delivery = AlertDelivery(planted, config, say=lines.append, backoff_s=0.01)
        delivery.notifier.start()
        try:
            events = await delivery.evaluate_once(NOW)
            assert [e.key.split(":")[1] for e in events if e.key.startswith("runaway:")] == ["loop"]
            await delivery.notifier.drained()
            [fired] = [body for body in hook.bodies() if body["rule"] == "runaway"]
            assert fired["event"] == "fire" and fired["severity"] == "ticket"
            assert fired["example_trace_id"] == trace_id_bytes(1).hex()
            assert fired["value"] == 6 and fired["threshold"] == 5
            assert "42" not in fired["title"]
        finally:
            await delivery.aclose(grace_s=1)
