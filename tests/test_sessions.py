"""Sessions (issue 13, capability 3): the writer's conversation rows against SQL ground truth over
the spans, late spans moving a trace between conversations, eviction, the m006 backfill of an
older store, `report --by user`, and the Sessions and conversation screens through the real app."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from pathlib import Path

import pytest

from llmobs_tui.config import ConfigError, load_config
from receiver.normalize import Normalizer
from store import retention, sessions
from store.migrations import MIGRATIONS, migrate
from store.writer import SpanWriter
from tests.otlp_factory import MS, T0, make_span, trace_request
from tests.tui_scenarios import settle

S = 1_000_000_000


def llm_attrs(conversation: str | None, user: str | None, inp: int, out: int, model: str = "gpt-4o",
              key: str = "gen_ai.conversation.id") -> dict:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
             "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out}
    if conversation is not None:
        attrs[key] = conversation
    if user is not None:
        attrs["user.id"] = user
    return attrs


def write(writer: SpanWriter, normalizer: Normalizer, spans: list) -> None:
    rows, resources, scopes, rejections = normalizer.decode_traces(trace_request(spans), T0)
    assert rejections.count == 0
    writer.write(rows, [], resources, scopes)


def plant(seed: int = 3, conversations: int = 25) -> list:
    """Traces of conversations: a root span carrying the user, 1-3 chat calls carrying the
    conversation, some failing; a few traces without a conversation."""
    rng = random.Random(seed)
    spans = []
    trace = 0
    for c in range(conversations):
        user = f"user-{c % 7}"
        at = T0 + c * 40 * S
        for _turn in range(rng.randint(1, 6)):
            trace += 1
            at += rng.randint(1, 5) * S
            length = rng.randint(100, 4000) * MS
            spans.append(make_span(trace, 1, None, "POST /chat", {"user.id": user}, at, at + length, kind=2))
            for call in range(rng.randint(1, 3)):
                failed = rng.random() < 0.1
                start = at + (call + 1) * 10 * MS
                spans.append(make_span(trace, call + 2, 1, "chat gpt-4o",
                                       llm_attrs(f"conv-{c}", None, rng.randint(100, 5000), rng.randint(10, 500)),
                                       start, start + 50 * MS, status_code=2 if failed else 0))
    for extra in range(3):  # no conversation: in no row
        trace += 1
        spans.append(make_span(trace, 1, None, "chat gpt-4o", llm_attrs(None, "user-x", 10, 10),
                               T0 + extra * S, T0 + extra * S + 100 * MS))
    return spans


def ground_truth(db: sqlite3.Connection) -> dict[str, tuple]:
    """Each conversation's figures by brute force over the spans: a trace is in the conversation of
    its first span (start, span id) carrying one; durations from the spans' extent."""
    traces: dict[bytes, list] = {}
    for row in db.execute("SELECT trace_id, span_id, start_ns, end_ns, conversation_id, user_id, billed, "
                          "input_tokens, output_tokens, cost_nusd, error_class FROM spans"):
        traces.setdefault(row[0], []).append(row)
    by_conversation: dict[str, list] = {}
    for spans in traces.values():
        ordered = sorted(spans, key=lambda s: (s[2], s[1]))
        conversation = next((s[4] for s in ordered if s[4] is not None), None)
        if conversation is None:
            continue
        user = next((s[5] for s in ordered if s[5] is not None), None)
        billed = [s for s in spans if s[6]]
        by_conversation.setdefault(conversation, []).append((
            min(s[2] for s in spans), max(s[3] for s in spans) - min(s[2] for s in spans), user,
            len(billed), sum(s[7] or 0 for s in billed), sum(s[8] or 0 for s in billed),
            sum(s[9] or 0 for s in billed), sum(1 for s in billed if s[10] is not None)))
    truth = {}
    for conversation, turns in by_conversation.items():
        turns.sort()
        durations = sorted(t[1] for t in turns)
        p95 = durations[math.ceil(0.95 * len(durations)) - 1]
        user = next((t[2] for t in turns if t[2] is not None), None)
        truth[conversation] = (user, len(turns), sum(t[3] for t in turns), sum(t[4] for t in turns),
                               sum(t[5] for t in turns), sum(t[6] for t in turns), sum(t[7] for t in turns), p95)
    return truth


def stored(db: sqlite3.Connection) -> dict[str, tuple]:
    """The conversations' rows; and the users' rows checked against grouping them by brute force."""
    users = db.execute("SELECT user_id, conversations, turns, llm_calls, input_tokens, output_tokens, cost_nusd, "
                       "unpriced_calls, errors, first_ns, last_ns FROM users ORDER BY 1").fetchall()
    assert users == db.execute(
        "SELECT user_id, count(*), sum(turns), sum(llm_calls), sum(input_tokens), sum(output_tokens), sum(cost_nusd), "
        "sum(unpriced_calls), sum(errors), min(first_ns), max(last_ns) FROM conversations WHERE user_id IS NOT NULL "
        "GROUP BY user_id ORDER BY 1").fetchall()
    return {row[0]: tuple(row[1:]) for row in db.execute(
        "SELECT conversation_id, user_id, turns, llm_calls, input_tokens, output_tokens, cost_nusd, errors, p95_ns "
        "FROM conversations")}


def test_conversation_rows_match_the_spans_whatever_the_arrival_order(writer_db, normalizer):
    spans = plant()
    random.Random(11).shuffle(spans)  # children before parents, a trace's spans across batches
    writer = SpanWriter(writer_db, trace_cache_spans=20)  # small: traces are reloaded from the store too
    for start in range(0, len(spans), 17):
        write(writer, normalizer, spans[start:start + 17])
    truth = ground_truth(writer_db)
    assert len(truth) == 25
    assert stored(writer_db) == truth
    assert any(row[6] for row in truth.values()) and all(row[5] > 0 for row in truth.values())
    # first and last seen: the first turn's start, the last turn's end
    first, last = writer_db.execute(
        "SELECT first_ns, last_ns FROM conversations WHERE conversation_id = 'conv-4'").fetchone()
    assert (first, last) == writer_db.execute(
        "SELECT min(start_ns), max(end_ns) FROM traces WHERE conversation_id = 'conv-4'").fetchone()


def full_rows(db: sqlite3.Connection) -> list[tuple]:
    return db.execute(f"SELECT {', '.join(sessions.CONVERSATION_COLUMNS[:-1])} FROM conversations ORDER BY 1").fetchall()


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_long_conversations_move_by_deltas_exactly(writer_db, normalizer, monkeypatch, seed):
    """With every conversation 'long' (RECOMPUTE_TURNS 1), rows move by deltas wherever that is
    exact: after every batch (spans shuffled: late roots move traces between conversations, name
    users late, start earlier than the first turn) each row equals a recomputation from its turns."""
    monkeypatch.setattr(sessions, "RECOMPUTE_TURNS", 1)
    outcomes = []
    real_refresh, real_moved = sessions.refresh, sessions._moved_by_deltas
    monkeypatch.setattr(sessions, "_moved_by_deltas", lambda *args: outcomes.append(real_moved(*args)) or outcomes[-1])
    rng = random.Random(seed)
    spans = plant(seed=seed, conversations=6)
    for trace in range(1, 40):  # late roots: another conversation, another user, an earlier start
        if rng.random() < 0.5:
            at = T0 + rng.randint(-30, 300) * S
            spans.append(make_span(trace, 9, None, "agent",
                                   {"session.id": f"conv-{rng.randint(0, 5)}", "user.id": f"user-{rng.randint(0, 9)}"},
                                   at, at + rng.randint(1, 9) * S))
    rng.shuffle(spans)
    writer = SpanWriter(writer_db, trace_cache_spans=50)
    for batch, start in enumerate(range(0, len(spans), 9)):
        write(writer, normalizer, spans[start:start + 9])
        by_deltas = full_rows(writer_db)
        real_refresh(writer_db, [row[0] for row in by_deltas], T0)
        assert by_deltas == full_rows(writer_db), f"batch {batch}"
    assert stored(writer_db) == ground_truth(writer_db)
    assert sum(outcome is not None for outcome in outcomes) >= 3, "the delta path was taken"


def test_a_long_conversation_arriving_in_order_moves_by_deltas(writer_db, normalizer, monkeypatch):
    outcomes = []
    real_moved = sessions._moved_by_deltas
    monkeypatch.setattr(sessions, "_moved_by_deltas", lambda *args: outcomes.append(real_moved(*args)) or outcomes[-1])
    writer = SpanWriter(writer_db)
    turns = sessions.RECOMPUTE_TURNS + 40
    for turn in range(1, turns + 1):
        at = T0 + turn * 10 * S
        write(writer, normalizer, [
            make_span(turn, 1, None, "POST /chat", {"user.id": "u1"}, at, at + (turn % 7 + 1) * S, kind=2),
            make_span(turn, 2, 1, "chat gpt-4o", llm_attrs("long", None, 100 + turn, 10), at + 10 * MS,
                      at + 500 * MS, status_code=2 if turn % 9 == 0 else 0)])
    assert stored(writer_db) == ground_truth(writer_db)
    assert outcomes[sessions.RECOMPUTE_TURNS:] and all(o is not None for o in outcomes[sessions.RECOMPUTE_TURNS:])
    (failed_turns,) = writer_db.execute("SELECT failed_turns FROM conversations").fetchone()
    assert failed_turns == turns // 9


def test_the_p95_of_a_long_conversation_is_one_index_step(writer_db):
    plan = " ".join(row[3] for row in writer_db.execute(
        "EXPLAIN QUERY PLAN SELECT duration_ns FROM traces WHERE conversation_id = ? ORDER BY duration_ns DESC "
        "LIMIT 1 OFFSET ?", ("c", 3)))
    assert "traces_by_conversation_duration" in plan and "TEMP B-TREE" not in plan, plan


def test_a_late_span_moves_its_trace_to_another_conversation(writer_db, normalizer):
    writer = SpanWriter(writer_db)
    # Trace 1: a chat call in conversation A; trace 2: another turn of A.
    write(writer, normalizer, [make_span(1, 2, 1, "chat", llm_attrs("A", "u1", 100, 10), T0 + 10 * MS),
                               make_span(2, 2, None, "chat", llm_attrs("A", "u1", 300, 30), T0 + 5 * S)])
    assert stored(writer_db)["A"][:2] == ("u1", 2)
    # Trace 1's root arrives late: it started earlier and names session B (Langfuse/OpenInference key).
    write(writer, normalizer, [make_span(1, 1, None, "agent", {"session.id": "B", "user.id": "u2"}, T0,
                                         T0 + 2 * S)])
    rows = stored(writer_db)
    assert rows == ground_truth(writer_db)
    assert rows["A"][1] == 1 and rows["A"][3] == 300  # A kept trace 2 only
    assert rows["B"][:2] == ("u2", 1) and rows["B"][3] == 100
    # Trace 2's root arrives and moves A's last turn away: A's row is gone.
    write(writer, normalizer, [make_span(2, 1, None, "agent", {"session.id": "B"}, T0 + 4 * S, T0 + 7 * S)])
    rows = stored(writer_db)
    assert "A" not in rows and rows["B"][1] == 2 and rows == ground_truth(writer_db)


def test_eviction_keeps_the_conversation_rows_consistent(writer_db, normalizer):
    writer = SpanWriter(writer_db)
    spans = plant(seed=5, conversations=12)
    write(writer, normalizer, spans)
    before = stored(writer_db)
    # Evict up to the end of the first turn of a conversation in the middle that has several.
    conversation = next(c for c in sorted(before, key=lambda c: int(c.split("-")[1]))[5:] if before[c][1] > 1)
    cutoff = writer_db.execute("SELECT end_ns FROM traces WHERE conversation_id = ? ORDER BY start_ns LIMIT 1",
                               (conversation,)).fetchone()[0] + 1
    result = retention.enforce(writer_db, writer, max_age_s=1, max_bytes=None, now_ns=cutoff + S)
    assert result.traces > 0
    after = stored(writer_db)
    assert after == ground_truth(writer_db)
    assert set(after) < set(before)  # whole conversations went with their last turn
    assert after[conversation][1] == before[conversation][1] - 1  # and one lost only its first turn
    assert writer_db.execute("SELECT count(*) FROM conversations WHERE conversation_id NOT IN "
                             "(SELECT conversation_id FROM traces WHERE conversation_id IS NOT NULL)").fetchone()[0] == 0


def test_migration_backfills_a_store_written_before_m006(db_path, writer_db, normalizer):
    writer = SpanWriter(writer_db)
    write(writer, normalizer, plant(seed=9, conversations=10))
    expected = stored(writer_db)
    traces_before = writer_db.execute("SELECT trace_id, conversation_id, user_id FROM traces ORDER BY 1").fetchall()
    # Back to the schema before m006: no conversation columns, no conversations table.
    writer_db.executescript(
        "DROP TABLE conversations; DROP TABLE users; DROP INDEX traces_by_conversation;"
        "DROP INDEX traces_by_conversation_duration;"
        "ALTER TABLE traces DROP COLUMN conversation_id;"
        "ALTER TABLE traces DROP COLUMN user_id;")
    m006 = next(i for i, m in enumerate(MIGRATIONS) if m.__name__ == "m006_conversations")
    # Only m006 runs again: the later migrations are in place and are not repeatable.
    later = MIGRATIONS[m006 + 1:]
    writer_db.execute(f"PRAGMA user_version = {m006}")
    try:
        del MIGRATIONS[m006 + 1:]
        assert migrate(writer_db) == 1
    finally:
        MIGRATIONS.extend(later)
    writer_db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    assert writer_db.execute("SELECT trace_id, conversation_id, user_id FROM traces ORDER BY 1").fetchall() \
        == traces_before
    assert stored(writer_db) == expected == ground_truth(writer_db)


def test_sessions_queries_sort_and_filter_on_the_summary(writer_db, normalizer):
    from llmobs_tui.filtering import parse

    writer = SpanWriter(writer_db)
    write(writer, normalizer, plant())
    now_s = (T0 + 3600 * S) / S
    sql, params = sessions.conversations_query(7200, now_s, sort="cost")
    rows = sessions.parse_conversations(writer_db.execute(sql, params))
    assert [r.cost_nusd for r in rows] == sorted((r.cost_nusd for r in rows), reverse=True)
    assert len(rows) == 25
    # the filter language: a conversation matches when any of its traces does
    flt = parse("user=user-3")
    sql, params = sessions.conversations_query(7200, now_s, flt.where, flt.params)
    matched = {r.conversation_id for r in sessions.parse_conversations(writer_db.execute(sql, params))}
    assert matched == {f"conv-{c}" for c in range(25) if c % 7 == 3}
    # the window: a conversation whose last turn ended before it is not listed (conv-23 ends by +954 s)
    sql, params = sessions.conversations_query(3600 - 956, now_s)
    assert {r.conversation_id for r in sessions.parse_conversations(writer_db.execute(sql, params))} == {"conv-24"}
    # users: top by cost, conversations grouped
    sql, params = sessions.users_query(7200, now_s)
    users = sessions.parse_users(writer_db.execute(sql, params))
    truth = ground_truth(writer_db)
    assert {u.user_id: u.cost_nusd for u in users} == {
        u: sum(t[5] for t in truth.values() if t[0] == u) for u in {t[0] for t in truth.values()}}
    assert [u.cost_nusd for u in users] == sorted((u.cost_nusd for u in users), reverse=True)
    # with a filter, a user's figures are those of their matching conversations
    flt = parse("conversation=conv-3")
    sql, params = sessions.users_query(7200, now_s, flt.where, flt.params)
    (only,) = sessions.parse_users(writer_db.execute(sql, params))
    assert (only.user_id, only.conversations, only.cost_nusd) == (truth["conv-3"][0], 1, truth["conv-3"][5])
    # every sort walks an index or sorts only the window (no error, right order)
    for sort in sessions.SESSION_SORTS:
        sql, params = sessions.conversations_query(7200, now_s, sort=sort, descending=False)
        assert len(writer_db.execute(sql, params).fetchall()) == 25


def test_the_sorts_walk_their_index(writer_db):
    for sort, index in (("last", "conversations_by_last"), ("cost", "conversations_by_cost"),
                        ("tokens", "conversations_by_tokens"), ("turns", "conversations_by_turns"),
                        ("p95", "conversations_by_p95"), ("errors", "conversations_by_errors")):
        sql, params = sessions.conversations_query(3600, T0 / S, sort=sort)
        plan = " ".join(str(r[-1]) for r in writer_db.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert index in plan and "TEMP B-TREE" not in plan, (sort, plan)
    for sort, index in (("last", "users_by_last"), ("cost", "users_by_cost"), ("tokens", "users_by_tokens")):
        sql, params = sessions.users_query(3600, T0 / S, sort=sort)
        plan = " ".join(str(r[-1]) for r in writer_db.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert index in plan and "TEMP B-TREE" not in plan, (sort, plan)
    sql, _ = sessions.turns_query("c")
    plan = " ".join(str(r[-1]) for r in writer_db.execute("EXPLAIN QUERY PLAN " + sql, ("c", 5)))
    assert "traces_by_conversation" in plan


def test_context_growth_and_the_window_warning():
    turns = [sessions.TurnRow(bytes([i]) * 16, i, i + 1, 1, "r", 1, inp, 100, 0, 0, 0, 0, 0, 0, None, None)
             for i, inp in enumerate((1000, 60_000, 110_000))]
    calls = [sessions.Call(t.trace_id, t.input_tokens, 100, 0, "gpt-4o-2024-08-06", 2.5, 1.25) for t in turns]
    growth = sessions.context_growth(turns, calls)
    assert [g.cumulative_input for g in growth] == [1000, 61_000, 171_000]
    assert [g.history_tokens for g in growth] == [0, 1100, 60_100]
    assert growth[2].history_nusd == 60_100 * 2500  # $2.50 per 1M input tokens
    assert growth[2].window == 128_000
    assert sessions.context_warning(growth, 0.8) == (3, growth[2])
    assert sessions.context_warning(growth, 0.9) is None
    assert sessions.context_window("claude-sonnet-4-5") == 200_000
    assert sessions.context_window("gpt-4o-mini", {"gpt-4o-mini": 64_000}) == 64_000
    assert sessions.context_window("my-model") is None


def test_sessions_config_section(tmp_path):
    path = tmp_path / "llmobs.toml"
    path.write_text('[sessions]\ncontext_warning = "70%"\ncontext_windows = { "my-model" = 32000 }\n')
    config = load_config(path)
    assert config.sessions.context_warning == 0.7
    assert config.sessions.context_windows == {"my-model": 32000}
    path.write_text('[sessions]\n\ncontext_warning = "170%"\n')
    with pytest.raises(ConfigError, match=r"llmobs.toml:3: \[sessions\] context_warning"):
        load_config(path)
    path.write_text('[sessions]\ncontext_windows = { "x" = -1 }\n')
    with pytest.raises(ConfigError, match=r":2: \[sessions\] context_windows"):
        load_config(path)
    # the example config's commented section, uncommented, is valid as written
    from llmobs_tui.config import EXAMPLE_CONFIG

    lines = EXAMPLE_CONFIG.read_text().splitlines()
    at = lines.index("# [sessions]")
    path.write_text("\n".join(line[2:] for line in lines[at:at + 3]) + "\n")
    assert load_config(path).sessions.context_windows == {"gpt-4o": 128000, "my-finetune": 32000}


def test_report_by_user(tmp_path, capsys, normalizer):
    from llmobs_tui.cli import main
    from store.connection import WriterLock, open_writer

    db_path = tmp_path / "r.db"
    lock = WriterLock(db_path)
    lock.acquire()
    db = open_writer(db_path)
    import time

    now = time.time_ns()
    writer = SpanWriter(db)
    spans = []
    for trace, (user, conversation, inp) in enumerate((("ann", "c1", 100), ("ann", "c1", 200), ("ann", "c2", 300),
                                                       ("bob", "c3", 50), ("bob", None, 70)), start=1):
        spans.append(make_span(trace, 1, None, "chat", llm_attrs(conversation, user, inp, 10),
                               now - 600 * S + trace * S, now - 590 * S + trace * S))
    rows, resources, scopes, _ = normalizer.decode_traces(trace_request(spans), now)
    writer.write(rows, [], resources, scopes)
    db.close()
    lock.release()
    assert main(["report", "--db", str(db_path), "--by", "user", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    users = {g["user"]: g for g in report["groups"]}
    assert users["ann"]["traces"] == 3 and users["ann"]["conversations"] == 2
    assert users["ann"]["tokens"]["input"] == 600 and users["ann"]["calls"] == 3
    assert users["bob"]["traces"] == 2 and users["bob"]["conversations"] == 1
    assert report["groups"][0]["user"] == "ann"  # top by cost
    assert main(["report", "--db", str(db_path), "--by", "user"]) == 0
    out = capsys.readouterr().out
    assert "| user |" in out and "| ann |" in out and "| bob |" in out
    assert main(["report", "--db", str(db_path), "--by", "user,model"]) == 2
    assert "--by user" in capsys.readouterr().err


# --- the screens --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from tests.tui_fixtures import build_store, use_utc

    use_utc()
    return build_store(tmp_path_factory.mktemp("sessions") / "tui.db", minutes=20, traces_per_minute=8)


def make_app(store: Path, **kwargs):
    from llmobs_tui.app import LlmobsApp
    from tests.tui_fixtures import FROZEN_NOW

    return LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None, **kwargs)


def busiest_conversation(store: Path) -> tuple[str, int, int, int]:
    """(id, turns, input tokens, output tokens) of the conversation with the most turns, by SQL over spans."""
    db = sqlite3.connect(store)
    try:
        truth = ground_truth(db)
    finally:
        db.close()
    conversation, row = max(truth.items(), key=lambda kv: (kv[1][1], kv[0]))
    return conversation, row[1], row[3], row[4]


@pytest.mark.anyio
@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_6_lists_conversations_sorts_filters_and_opens_one(store, size):
    from llmobs_tui import format as fmt
    from llmobs_tui.screens.conversation import ConversationScreen
    from llmobs_tui.screens.sessions import SessionsScreen
    from llmobs_tui.screens.trace import TraceScreen
    from llmobs_tui.widgets.keyed_table import KeyedTable

    conversation, turns, inp, out = busiest_conversation(store)
    app = make_app(store)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, SessionsScreen)
        table = screen.query_one(KeyedTable)
        assert conversation in table.keys()  # noqa: SIM118 (KeyedTable.keys: row keys)
        row = screen.rows[conversation]
        assert (row.turns, row.input_tokens, row.output_tokens) == (turns, inp, out)
        cells = [str(getattr(c, "plain", c)) for c in table.get_row(conversation)]
        # 80 columns: tokens in + out; 160: input and output apart
        assert str(turns) in cells
        assert fmt.tokens(inp + out) in cells if size[0] < 110 else {fmt.tokens(inp), fmt.tokens(out)} <= set(cells)
        # sort by turns (Shift-N): the busiest first
        await pilot.press("N")
        await settle(pilot)
        assert table.keys()[0] == conversation
        # the filter language
        await pilot.press("slash")
        await pilot.pause()
        for ch in f"conversation={conversation}":
            await pilot.press(ch)
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is screen and table.keys() == [conversation]
        # Enter opens the conversation: its turns in order
        table.focus()
        table.move_cursor(row=0)
        await pilot.press("enter")
        await settle(pilot)
        view = app.screen
        assert isinstance(view, ConversationScreen) and view.conversation_id == conversation
        turn_table = view.query_one(KeyedTable)
        assert turn_table.row_count == turns
        starts = [t.start_ns for t in view.turns]
        assert starts == sorted(starts)
        chat = view.chat_text()
        assert "user" in chat and "assistant" in chat
        # Enter on a turn opens that trace
        turn_table.focus()
        turn_table.move_cursor(row=turns - 1)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.trace_id == view.turns[-1].trace_id
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is view
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is screen


@pytest.mark.anyio
async def test_the_context_warning_and_the_user_grouping(store):
    from llmobs_tui.config import SessionSettings
    from llmobs_tui.screens.conversation import ConversationScreen
    from llmobs_tui.screens.sessions import SessionsScreen
    from llmobs_tui.widgets.keyed_table import KeyedTable

    conversation, *_ = busiest_conversation(store)
    # A window small enough that the demo's prompts pass 80 % of it.
    app = make_app(store, sessions=SessionSettings(context_warning=0.8, context_windows={"gpt": 1000, "claude": 1000,
                                                                                          "gemini": 1000}))
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        app.open_conversation(conversation)
        await settle(pilot)
        view = app.screen
        assert isinstance(view, ConversationScreen)
        summary = view.summary_text()
        assert "▲ context passed 80% of" in summary and "window at turn 1" in summary
        assert "context per turn" in summary and "█" in summary  # the growth, scaled to its largest prompt
        # the turn past the share is marked in the table too
        cells = [c.plain for c in view.query_one(KeyedTable).get_row_at(0)]
        assert any(c.endswith("%") and float(c.rstrip("%")) >= 80 for c in cells)
        app.sessions_settings = SessionSettings(context_warning=0.8)
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, SessionsScreen)
        await pilot.press("u")
        await settle(pilot)
        assert screen.grouping == "user"
        table = screen.query_one(KeyedTable)
        db = sqlite3.connect(store)
        try:
            truth = ground_truth(db)
        finally:
            db.close()
        top = max({t[0] for t in truth.values() if t[0]},
                  key=lambda u: (sum(t[5] for t in truth.values() if t[0] == u), u))
        assert table.keys()[0] == f"user:{top}"
        # Enter on a user lists that user's conversations
        table.move_cursor(row=0)
        await pilot.press("enter")
        await settle(pilot)
        top_row = screen.users[f"user:{top}"]
        assert screen.grouping == "conversation" and screen.user == top
        # that user's conversations: the ones their row sums
        listed = set(table.keys())
        assert listed == {c for c, t in truth.items() if t[0] == top}
        assert sum(screen.rows[c].cost_nusd for c in listed) == top_row.cost_nusd
        assert len(listed) == top_row.conversations
        # u: back to all users
        await pilot.press("u")
        await settle(pilot)
        assert screen.grouping == "user" and screen.user is None and len(table.keys()) > 1


@pytest.mark.anyio
async def test_ids_and_messages_render_as_text_never_markup(tmp_path, normalizer):
    """Conversation and user ids and the messages come from the sender: shown literally."""
    from llmobs_tui.app import LlmobsApp
    from llmobs_tui.screens.conversation import ConversationScreen
    from llmobs_tui.widgets.keyed_table import KeyedTable
    from store.connection import WriterLock, open_writer

    conversation, user = "[bold red]conv[/] \x1b[2J", "[link=x]u[/link]"
    prompt = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "[red]not markup[/red] hi"}]}])
    answer = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "[@click=app.quit]ok[/]"}]}])
    attrs = llm_attrs(conversation, user, 40, 5) | {"gen_ai.input.messages": prompt, "gen_ai.output.messages": answer}
    db_path = tmp_path / "hostile.db"
    lock = WriterLock(db_path)
    lock.acquire()
    db = open_writer(db_path)
    writer = SpanWriter(db)
    write(writer, normalizer, [make_span(1, 1, None, "chat", attrs, T0, T0 + S)])
    db.close()
    lock.release()
    app = LlmobsApp(db_path, clock=lambda: T0 / S + 60, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        table = app.screen.query_one(KeyedTable)
        (key,) = table.keys()
        assert key == conversation
        cells = " ".join(c.plain for c in table.get_row(key))
        assert "[bold red]conv[/]" in cells and "[link=x]u[/link]" in cells
        assert "\x1b" not in cells  # the escape is shown as a visible stand-in, never sent
        await pilot.press("enter")
        await settle(pilot)
        view = app.screen
        assert isinstance(view, ConversationScreen)
        chat = view.chat_text()
        assert "[red]not markup[/red] hi" in chat and "[@click=app.quit]ok[/]" in chat
        assert "[bold red]conv[/]" in view.summary_text()
        assert app.is_running  # a [@click=app.quit] in a message did nothing


def test_reprice_moves_the_conversation_costs(writer_db, normalizer):
    writer = SpanWriter(writer_db)
    write(writer, normalizer, plant(seed=13, conversations=8))
    scanned, changed = writer.reprice(lambda provider, response_model, request_model, tokens: ("flat", 1000, 0))
    assert scanned and changed
    rows = stored(writer_db)
    assert rows == ground_truth(writer_db)
    assert all(row[5] == 1000 * row[2] for row in rows.values())  # every billed call now costs 1000 nUSD
