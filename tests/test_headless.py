"""`llmobs-tui traces` and `llmobs-tui show` (issue 13, capability 7): the store queried from a script.

Two stores, both written through the real normalizer and writer: the TUI's fixture store (an hour of
demo traffic ending at FROZEN_NOW, with the hostile trace; the command's clock is pinned to it), and
small hand-built traces whose self times and critical path are worked out by hand. Numbers are
checked against SQL on the store, not against the code under test."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import time
import unicodedata
from pathlib import Path

import pytest

from llmobs_tui import format as fmt
from llmobs_tui.cli import investigate, main
from llmobs_tui.cli.common import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from llmobs_tui.critical_path import analyse
from store.dashboards import TRACE_SORTS, parse_spans, trace_spans_query
from store.writer import SpanWriter
from tests.otlp_factory import MS, STATUS_ERROR, make_span, trace_request
from tests.tui_fixtures import FROZEN_NOW, HOSTILE_TRACE_NUMBER, build_store

NS = 10**9


@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("headless") / "fixture.db")


@pytest.fixture
def frozen(monkeypatch) -> None:
    """The fixture store's traffic ends at FROZEN_NOW: count the window back from there."""
    monkeypatch.setattr(investigate, "clock", lambda: FROZEN_NOW)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_usage_error(capsys, *argv: str) -> str:
    """A flag argparse refuses: exit 2 before any command runs; returns stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == EXIT_USAGE
    return capsys.readouterr().err


def sql(db_path: Path, query: str, params: tuple = ()) -> list[tuple]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute(query, params).fetchall()
    finally:
        db.close()


def trace_table_ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:]]


# --- traces --------------------------------------------------------------------------------------


def test_filtered_json_rows_equal_a_direct_query(fixture_store, frozen, capsys):
    code, out, err = run_cli(capsys, "traces", "--db", str(fixture_store), "--filter", "model=~gpt-4o status=error",
                             "--limit", "10000", "--format", "json")
    assert code == EXIT_OK, err
    result = json.loads(out)
    assert result["filter"] == "model=~gpt-4o status=error"
    assert result["window"]["seconds"] == 3600 and result["descending"] is True and result["sort"] == "start"

    # Ground truth: a span whose model (request, else response) contains gpt-4o, in a trace with a
    # failed span, started within the hour before FROZEN_NOW; newest first.
    start_ns = int((FROZEN_NOW - 3600) * NS)
    models = sql(fixture_store, "SELECT trace_id, request_model, response_model FROM spans")
    gpt4o = {tid for tid, request, response in models
             if re.search("gpt-4o", request if request is not None else (response or ""), re.I)}
    failed = {tid for (tid,) in sql(fixture_store, "SELECT DISTINCT trace_id FROM spans "
                                                   "WHERE status = 2 OR error_class IS NOT NULL")}
    summary = sql(fixture_store, "SELECT trace_id, start_ns, duration_ns, spans, root_name, service FROM traces "
                                 "WHERE start_ns >= ? ORDER BY start_ns DESC, trace_id", (start_ns,))
    expected = [row for row in summary if row[0] in gpt4o and row[0] in failed]
    assert len(expected) > 10  # the filter selects something, and not everything
    assert len(expected) < len(summary)
    got = result["traces"]
    assert sorted(r["trace_id"] for r in got) == sorted(row[0].hex() for row in expected)
    starts = [r["start_ns"] for r in got]
    assert starts == sorted(starts, reverse=True)

    # Each row's figures: the summary row, and the billed calls summed over the trace's spans.
    billed = {tid: (calls, tokens_in, tokens_out, cost, unpriced) for tid, calls, tokens_in, tokens_out, cost, unpriced
              in sql(fixture_store, "SELECT trace_id, sum(billed), "
                                    "sum(CASE WHEN billed THEN coalesce(input_tokens, 0) ELSE 0 END), "
                                    "sum(CASE WHEN billed THEN coalesce(output_tokens, 0) ELSE 0 END), "
                                    "sum(CASE WHEN billed THEN coalesce(cost_nusd, 0) ELSE 0 END), "
                                    "sum(billed AND cost_nusd IS NULL) FROM spans GROUP BY trace_id")}
    by_id = {row[0].hex(): row for row in expected}
    for row in got:
        tid, start, duration, spans, root, service = by_id[row["trace_id"]]
        calls, tokens_in, tokens_out, cost, unpriced = billed[tid]
        assert row["start_ns"] == start and row["duration_ns"] == duration
        assert row["duration_ms"] == pytest.approx(duration / 1e6, abs=1e-3)
        assert (row["spans"], row["root"], row["service"]) == (spans, root, service)
        assert (row["llm_calls"], row["input_tokens"], row["output_tokens"]) == (calls, tokens_in, tokens_out)
        assert row["cost_usd"] == pytest.approx(cost / 1e9, abs=1e-12)
        assert row["unpriced_calls"] == unpriced
        assert row["failed"] is True
        assert any(re.search("gpt-4o", m, re.I) for m in row["models"])
        assert row["start"].endswith("Z") and row["start"].startswith(time.strftime("%Y-%m-%d", time.gmtime(start / NS)))


def test_table_lists_the_same_traces_as_json(fixture_store, frozen, capsys):
    _, table, _ = run_cli(capsys, "traces", "--db", str(fixture_store), "--filter", "feature=checkout", "--limit", "7")
    _, out, _ = run_cli(capsys, "traces", "--db", str(fixture_store), "--filter", "feature=checkout", "--limit", "7",
                        "--format", "json")
    rows = json.loads(out)["traces"]
    assert len(rows) == 7
    assert table.splitlines()[0].split() == list(investigate.TRACE_HEADERS)
    assert trace_table_ids(table) == [r["trace_id"] for r in rows]
    for line, row in zip(table.splitlines()[1:], rows, strict=True):
        assert fmt.duration(row["duration_ns"]) in line
        assert fmt.money(round(row["cost_usd"] * 1e9)) in line
        assert ("error (" in line) == row["failed"]
    # Piped (as here): no colour, no escape sequence at all.
    assert "\x1b" not in table


@pytest.mark.parametrize("sort,column", [("cost", "cost_nusd"), ("duration", "duration_ns"), ("start", "start_ns"),
                                         ("calls", "llm_calls")])
def test_sort_direction_and_limit_match_sql(fixture_store, frozen, capsys, sort, column):
    start_ns = int((FROZEN_NOW - 3600) * NS)
    for flags, order in (((), "DESC"), (("--asc",), "ASC")):
        code, out, _ = run_cli(capsys, "traces", "--db", str(fixture_store), "--sort", sort, *flags, "--limit", "5",
                               "--format", "json")
        assert code == EXIT_OK
        got = json.loads(out)["traces"]
        assert len(got) == 5
        expected = [v for (v,) in sql(fixture_store, f"SELECT {column} FROM traces WHERE start_ns >= ? "
                                                     f"ORDER BY {column} {order} LIMIT 5", (start_ns,))]
        key = {"cost_nusd": lambda r: round(r["cost_usd"] * 1e9), "duration_ns": lambda r: r["duration_ns"],
               "start_ns": lambda r: r["start_ns"], "llm_calls": lambda r: r["llm_calls"]}[column]
        assert [key(r) for r in got] == expected


def test_every_sort_key_is_accepted(fixture_store, frozen, capsys):
    for sort in TRACE_SORTS:
        code, out, err = run_cli(capsys, "traces", "--db", str(fixture_store), "--sort", sort, "--limit", "3",
                                 "--format", "json")
        assert code == EXIT_OK, err
        assert len(json.loads(out)["traces"]) == 3


def test_the_window_counts_back_from_now(fixture_store, frozen, capsys):
    _, out, _ = run_cli(capsys, "traces", "--db", str(fixture_store), "--window", "10m", "--limit", "10000",
                        "--format", "json")
    got = json.loads(out)
    (count,) = sql(fixture_store, "SELECT count(*) FROM traces WHERE start_ns >= ?",
                   (int((FROZEN_NOW - 600) * NS),))[0]
    assert 0 < len(got["traces"]) == count
    assert got["window"] == {"seconds": 600, "from": "2026-11-18T10:56:40.000Z", "to": "2026-11-18T11:06:40.000Z"}


def test_empty_result_and_the_limit_note(fixture_store, frozen, capsys):
    code, out, _ = run_cli(capsys, "traces", "--db", str(fixture_store), "--filter", "model=no-such-model")
    assert code == EXIT_OK and out.strip() == "no traces started in the last 1h matching model=no-such-model"
    code, out, _ = run_cli(capsys, "traces", "--db", str(fixture_store), "--filter", "model=no-such-model",
                           "--format", "json")
    assert code == EXIT_OK and json.loads(out)["traces"] == []
    code, out, err = run_cli(capsys, "traces", "--db", str(fixture_store), "--limit", "2")
    assert len(trace_table_ids(out)) == 2 and "raise --limit" in err


def test_the_store_comes_from_llmobs_db(fixture_store, frozen, capsys, monkeypatch):
    monkeypatch.setenv("LLMOBS_DB", str(fixture_store))
    code, out, _ = run_cli(capsys, "traces", "--limit", "1", "--format", "json")
    assert code == EXIT_OK and len(json.loads(out)["traces"]) == 1


# --- show ----------------------------------------------------------------------------------------


def shortest_unique_prefix(db_path: Path, trace_id: bytes) -> str:
    ids = [tid.hex() for (tid,) in sql(db_path, "SELECT trace_id FROM traces")]
    target = trace_id.hex()
    for n in range(1, 33):
        if sum(1 for i in ids if i.startswith(target[:n])) == 1:
            return target[:n]
    raise AssertionError("no unique prefix")


def tree_lines(out: str) -> list[str]:
    """The span rows of `show`'s tree (after the header and the column heading)."""
    lines = out.splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("CP  SPAN"))
    return lines[heading + 1:]


def tree_cells(out: str) -> list[tuple[bool, list[str]]]:
    """Per row: (on the critical path, [span, kind, duration, self, …]). The SPAN column (tree guides
    and name) is cut where the heading puts it, as it holds runs of spaces; the rest split on them."""
    heading = next(line for line in out.splitlines() if line.startswith("CP  SPAN"))
    span_at, kind_at = heading.index("SPAN"), heading.index("KIND")
    rows = []
    for line in tree_lines(out):
        rest = re.split(r"\s{2,}", line[kind_at:].strip())
        rows.append((line[:span_at].strip() == investigate.CRITICAL_MARK, [line[span_at:kind_at].rstrip(), *rest]))
    return rows


def test_show_prints_every_span_with_its_self_time_and_the_critical_path(fixture_store, capsys):
    # The largest trace of the fixture: nested tools, parallel calls.
    (tid,) = sql(fixture_store, "SELECT trace_id FROM traces ORDER BY spans DESC, trace_id LIMIT 1")[0]
    spans = parse_spans(sql(fixture_store, trace_spans_query(tid).sql, trace_spans_query(tid).params))
    path = analyse(spans)
    prefix = shortest_unique_prefix(fixture_store, tid)
    code, out, err = run_cli(capsys, "show", prefix, "--db", str(fixture_store))
    assert code == EXIT_OK, err
    assert out.splitlines()[0].startswith(f"trace {tid.hex()}")
    rows = tree_cells(out)
    assert len(rows) == len(spans) >= 8
    # Tree order, from the JSON of the same trace (depth-first, children by start).
    _, js, _ = run_cli(capsys, "show", tid.hex(), "--db", str(fixture_store), "--format", "json")
    ordered = json.loads(js)["spans"]
    by_hex = {s.span_id.hex(): s for s in spans}
    assert sorted(s["span_id"] for s in ordered) == sorted(by_hex)
    for (marked, cells), item in zip(rows, ordered, strict=True):
        span = by_hex[item["span_id"]]
        assert cells[0].endswith(span.name)
        assert cells[1] == span.kind
        assert cells[2] == fmt.duration(span.duration_ns)
        assert cells[3] == fmt.duration(path.self_ns[span.span_id])
        assert marked == (span.span_id in path.on_path)
        if span.billed and span.input_tokens:
            assert f"{span.input_tokens:,}" in cells
    # Parents before children.
    seen: set[bytes] = set()
    for item in ordered:
        span = by_hex[item["span_id"]]
        assert span.parent_span_id is None or span.parent_span_id not in by_hex or span.parent_span_id in seen
        seen.add(span.span_id)


def write_trace(writer: SpanWriter, normalizer, spans: list) -> None:
    rows, resources, scopes, rejections = normalizer.decode_traces(trace_request(spans), time.time_ns())
    assert rejections.count == 0
    writer.write(rows, [], resources, scopes)


PLAN_TRACE = 0xABC1 << 112
OTHER_TRACE = 0xABC2 << 112


def plan_trace(base: int) -> list:
    """root 0–1000 ms; retrieve 100–600 with embed 200–300 under it; chat 400–900 (a 429).

    Self: root 1000 − (100…900) = 200 ms, retrieve 500 − 100 = 400, embed 100, chat 500. The end
    waits on chat (ends last, 900), and before chat started (400) nothing the root waited on ended:
    root 100 + 400 = 500 ms and chat 500 ms are the path; retrieve and embed ran alongside it."""
    llm = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
           "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 80}
    return [
        make_span(PLAN_TRACE, 1, None, "POST /plan", {}, start_ns=base, end_ns=base + 1000 * MS),
        make_span(PLAN_TRACE, 2, 1, "retrieve", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "kb"},
                  start_ns=base + 100 * MS, end_ns=base + 600 * MS),
        make_span(PLAN_TRACE, 3, 2, "embed", {}, start_ns=base + 200 * MS, end_ns=base + 300 * MS),
        make_span(PLAN_TRACE, 4, 1, "chat gpt-4o", {**llm, "error.type": "RateLimitError",
                                                    "http.response.status_code": 429},
                  start_ns=base + 400 * MS, end_ns=base + 900 * MS, status_code=STATUS_ERROR),
    ]


@pytest.fixture
def hand_store(writer_db, normalizer, db_path) -> Path:
    writer = SpanWriter(writer_db)
    base = time.time_ns() - 60 * NS
    write_trace(writer, normalizer, plan_trace(base))
    write_trace(writer, normalizer, [make_span(OTHER_TRACE, 1, None, "other", {}, start_ns=base, end_ns=base + MS)])
    return db_path


def test_show_tree_on_a_hand_built_trace(hand_store, capsys):
    code, out, err = run_cli(capsys, "show", "abc1", "--db", str(hand_store))
    assert code == EXIT_OK, err
    header = out.splitlines()[:3]
    assert header[0] == f"trace {(PLAN_TRACE).to_bytes(16, 'big').hex()}  POST /plan  service svc"
    assert "1.00s  4 spans  1 LLM call  1.2k in / 80 out tok" in header[1] and "1 failed" in header[1]
    assert header[2].startswith("critical path (*): ")
    assert "POST /plan 500ms 50%" in header[2] and "● chat gpt-4o 500ms 50%" in header[2]
    rows = tree_cells(out)
    assert [(marked, cells[0], cells[2], cells[3]) for marked, cells in rows] == [
        (True, "· POST /plan", "1.00s", "200ms"),
        (False, "├─⚒ retrieve", "500ms", "400ms"),
        (False, "│ └─· embed", "100ms", "100ms"),
        (True, "└─● chat gpt-4o", "500ms", "500ms"),
    ]
    chat = rows[3][1]
    assert chat[1] == "llm" and chat[4].startswith("gpt-4o") and chat[5:7] == ["1,200", "80"]
    assert chat[-1] == "error api/rate_limit RateLimitError"


def test_show_json_round_trips_the_stored_spans(hand_store, capsys):
    code, out, _ = run_cli(capsys, "show", "abc1", "--db", str(hand_store), "--format", "json")
    assert code == EXIT_OK
    assert out.isascii()
    trace = json.loads(out)
    tid = PLAN_TRACE.to_bytes(16, "big")
    assert trace["trace_id"] == tid.hex()
    assert (trace["span_count"], trace["llm_calls"], trace["failed_spans"]) == (4, 1, 1)
    assert trace["duration_ns"] == 1000 * MS and trace["duration_ms"] == 1000.0
    stored = {row[0]: row for row in sql(hand_store, "SELECT span_id, parent_span_id, name, kind, start_ns, end_ns, "
                                                     "input_tokens, output_tokens, cost_nusd, billed, error_class "
                                                     "FROM spans WHERE trace_id = ?", (tid,))}
    assert [s["span_id"] for s in trace["spans"]] == [bytes.fromhex(f"{n:016x}").hex() for n in (1, 2, 3, 4)]
    for item in trace["spans"]:
        row = stored[bytes.fromhex(item["span_id"])]
        _, parent, name, kind, start, end, tokens_in, tokens_out, cost, billed, error_class = row
        assert item["parent_span_id"] == (parent.hex() if parent else None)
        assert (item["name"], item["kind"], item["start_ns"], item["end_ns"]) == (name, kind, start, end)
        assert item["duration_ns"] == end - start and item["duration_ms"] == (end - start) / 1e6
        assert (item["input_tokens"], item["output_tokens"]) == (tokens_in, tokens_out)
        assert item["billed"] == bool(billed)
        assert item["cost_usd"] == (cost / 1e9 if billed and cost is not None else None)
        assert (item["error"] or {}).get("class") == error_class
    by_name = {s["name"]: s for s in trace["spans"]}
    assert {name: (s["self_ms"], s["critical_path"], s["critical_ms"], s["depth"]) for name, s in by_name.items()} == {
        "POST /plan": (200.0, True, 500.0, 0), "retrieve": (400.0, False, None, 1), "embed": (100.0, False, None, 2),
        "chat gpt-4o": (500.0, True, 500.0, 1)}
    chat = by_name["chat gpt-4o"]
    assert chat["status"] == "error" and chat["otel_status"] == "error"
    assert chat["error"]["type"] == "RateLimitError" and chat["error"]["subclass"] == "rate_limit"
    assert chat["cost_usd"] > 0 and trace["cost_usd"] == chat["cost_usd"]
    assert [(t["name"], t["ms"], t["share"]) for t in trace["critical_path"]["top"]] == [
        ("POST /plan", 500.0, 0.5), ("chat gpt-4o", 500.0, 0.5)]


HOSTILE_TRACE = 0xBAD0 << 112
HOSTILE_NAME = "\x1b[2J\x1b[Hroot \u202eevil\u202c \x9b31m"
HOSTILE_MODEL = "gpt-4o\x1b[31m"
HOSTILE_ERROR = "Boom\x1b]8;;http://evil.example\x07click"


def is_hostile(ch: str) -> bool:
    return ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf")


def test_hostile_text_prints_neutralised(writer_db, normalizer, db_path, capsys):
    base = time.time_ns() - 30 * NS
    write_trace(SpanWriter(writer_db), normalizer, [
        make_span(HOSTILE_TRACE, 1, None, HOSTILE_NAME, {}, start_ns=base, end_ns=base + 100 * MS),
        make_span(HOSTILE_TRACE, 2, 1, "chat \x1b[31mred", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": HOSTILE_MODEL, "error.type": HOSTILE_ERROR,
            "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 1},
            start_ns=base + 10 * MS, end_ns=base + 90 * MS, status_code=STATUS_ERROR)])
    outputs = [run_cli(capsys, "show", "bad0", "--db", str(db_path)),
               run_cli(capsys, "traces", "--db", str(db_path))]
    for code, out, _ in outputs:
        assert code == EXIT_OK
        assert not [ch for ch in out if is_hostile(ch)], out
    tree = outputs[0][1]
    assert "␛[2J␛[Hroot ⁅U+202E⁆evil⁅U+202C⁆ ⁅U+009B⁆31m" in tree
    assert "gpt-4o␛[31m" in tree and "Boom␛]8;;http://evil.example␇click" in tree
    assert "␛[2J␛[Hroot" in outputs[1][1]
    # JSON keeps the text exactly, escaped by json: ASCII only, and it decodes back to what was sent.
    code, out, _ = run_cli(capsys, "show", "bad0", "--db", str(db_path), "--format", "json")
    assert code == EXIT_OK and out.isascii() and "\x1b" not in out
    trace = json.loads(out)
    assert trace["root"] == HOSTILE_NAME
    assert trace["spans"][1]["model"] == HOSTILE_MODEL and trace["spans"][1]["error"]["type"] == HOSTILE_ERROR


def test_fixture_hostile_trace_is_neutralised_in_the_tree(fixture_store, capsys):
    from llmobs_tui.scenarios import trace_id_of

    code, out, _ = run_cli(capsys, "show", trace_id_of(HOSTILE_TRACE_NUMBER).hex(), "--db", str(fixture_store))
    assert code == EXIT_OK
    assert "chat gpt-4o ␛]0;pwned␇" in out and "[bold red]boom[/]" in out
    assert not [ch for ch in out if is_hostile(ch)]


def test_a_deep_chain_prints_every_span_without_recursion_or_runaway_indent(writer_db, normalizer, db_path, capsys):
    base = time.time_ns() - 30 * NS
    depth = 1500  # past Python's default recursion limit
    chain = [make_span(0xDEE9 << 112, n, n - 1 if n > 1 else None, f"step {n}", {}, start_ns=base + n * MS,
                       end_ns=base + (2 * depth - n + 2) * MS) for n in range(1, depth + 1)]
    write_trace(SpanWriter(writer_db), normalizer, chain)
    code, out, err = run_cli(capsys, "show", "dee9", "--db", str(db_path))
    assert code == EXIT_OK, err
    rows = tree_cells(out)
    assert len(rows) == depth
    assert [cells[0].split("· ")[-1] for _, cells in rows] == [f"step {n}" for n in range(1, depth + 1)]
    assert all(marked for marked, _ in rows)  # each span waits on the next: the whole chain is the path
    # Indentation past INDENT_CELLS is elided, so the name and the figures stay on a short line.
    assert max(len(line) for line in tree_lines(out)) < 200
    assert rows[-1][1][0].startswith("┆ ")


# --- errors --------------------------------------------------------------------------------------


def test_bad_filters_are_usage_errors_with_the_reason(fixture_store, capsys):
    for expression, reason in (("colour=red", "unknown field 'colour'"), ("ttft>fast", "is not a number"),
                               ("model=~gpt-(", "bad regular expression"), ("model='gpt", "unbalanced quotes")):
        code, out, err = run_cli(capsys, "traces", "--db", str(fixture_store), "--filter", expression)
        assert code == EXIT_USAGE, expression
        assert err.startswith("llmobs-tui: --filter: ") and reason in err and out == ""


@pytest.mark.parametrize("argv,reason", [
    (["traces", "--window", "90"], "give a unit"),
    (["traces", "--window", "soon"], "is not a duration"),
    (["traces", "--window", "0h"], "must be positive"),
    (["traces", "--sort", "colour"], "choose from start, duration, cost"),
    (["traces", "--limit", "0"], "give at least 1"),
    (["traces", "--limit", "many"], "is not a whole number"),
    (["traces", "--format", "xml"], "invalid choice"),
    (["show", "abc", "--format", "table"], "invalid choice"),
    (["show"], "TRACE_ID"),
])
def test_bad_flags_are_refused_before_the_store_is_read(capsys, argv, reason):
    err = run_usage_error(capsys, *argv)
    assert reason in err


def test_unknown_bad_and_ambiguous_trace_ids(hand_store, capsys):
    code, _, err = run_cli(capsys, "show", "ffff", "--db", str(hand_store))
    assert code == EXIT_ERROR and "no trace starting with ffff in" in err
    code, _, err = run_cli(capsys, "show", "ff" * 16, "--db", str(hand_store))
    assert code == EXIT_ERROR and f"no trace {'ff' * 16} in" in err
    code, _, err = run_cli(capsys, "show", "abc", "--db", str(hand_store))
    assert code == EXIT_USAGE
    assert "prefix abc is ambiguous" in err
    assert PLAN_TRACE.to_bytes(16, "big").hex() in err and OTHER_TRACE.to_bytes(16, "big").hex() in err
    code, _, err = run_cli(capsys, "show", "xyz\x1b[2J", "--db", str(hand_store))
    assert code == EXIT_USAGE and "is not a trace id" in err and "\x1b" not in err
    # Pasted forms resolve as in the app: upper case, 0x, dashes.
    code, out, _ = run_cli(capsys, "show", "0xABC1-0000", "--db", str(hand_store))
    assert code == EXIT_OK and "POST /plan" in out


def test_a_missing_store_is_an_error_naming_it(tmp_path, capsys):
    missing = tmp_path / "missing.db"
    for argv in (["traces"], ["show", "abc"]):
        code, out, err = run_cli(capsys, *argv, "--db", str(missing))
        assert code == EXIT_ERROR and out == ""
        assert f"no database at {missing}" in err


# --- help and colour -----------------------------------------------------------------------------


def test_help_for_both_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["traces", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--filter EXPR", "--window DURATION", "--sort KEY", "--asc", "--limit N", "--format {table,json}",
                 "--db PATH", "model=~gpt-4o status=error"):
        assert flag in text
    sorts = re.search(r"--sort KEY\s+(.*?)\(default start\)", text, re.S)
    assert sorts is not None
    assert [word for word in re.findall(r"[a-z]+", sorts.group(1)) if word != "or"] == list(TRACE_SORTS)
    with pytest.raises(SystemExit) as exit_info:
        main(["show", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for item in ("TRACE_ID", "--format {tree,json}", "enough of its start", "self time", "critical"):
        assert item in text
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "traces" in top and "show" in top


SEARCH_TRACE = 0x5EA7 << 112


def write_searchable_trace(writer_db, normalizer) -> None:
    """A call whose prompt holds a planted phrase (among hostile text), for `text:`."""
    base = time.time_ns() - 30 * NS
    prompt = json.dumps([{"role": "user", "parts": [{"type": "text", "content":
                          "Hi!\x1b[2J What does the Refund Policy say about opened boxes? \u202egnirts"}]}])
    write_trace(SpanWriter(writer_db), normalizer, [
        make_span(SEARCH_TRACE, 1, None, "POST /support", {}, start_ns=base, end_ns=base + 100 * MS),
        make_span(SEARCH_TRACE, 2, 1, "chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                                      "gen_ai.input.messages": prompt},
                  start_ns=base + 10 * MS, end_ns=base + 90 * MS)])


def test_a_text_search_lists_the_match_and_what_is_not_indexed(writer_db, normalizer, db_path, capsys):
    from store.content_index import ContentIndexer

    write_searchable_trace(writer_db, normalizer)
    # Not indexed yet: nothing found, and the command says why.
    code, out, err = run_cli(capsys, "traces", "--db", str(db_path), "--filter", 'text:"refund policy"',
                             "--format", "json")
    result = json.loads(out)
    assert code == EXIT_OK and result["traces"] == []
    assert result["text_index_lag"] == {"spans": 2, "logs": 0} and "2 spans and 0 log records" in err
    ContentIndexer(writer_db).run(deadline_s=30)
    code, out, err = run_cli(capsys, "traces", "--db", str(db_path), "--filter", 'text:"refund policy"',
                             "--format", "json")
    result = json.loads(out)
    assert code == EXIT_OK and err == "" and result["text_index_lag"] == {"spans": 0, "logs": 0}
    (trace,) = result["traces"]
    assert trace["trace_id"] == SEARCH_TRACE.to_bytes(16, "big").hex()
    assert trace["match"]["span_id"] == (2).to_bytes(8, "big").hex()
    assert trace["match"]["matched"] == ["Refund Policy"] and "the Refund Policy say" in trace["match"]["snippet"]
    # The table: the snippet cleaned, the match between « ».
    code, table, _ = run_cli(capsys, "traces", "--db", str(db_path), "--filter", "text:refund model=gpt-4o")
    assert code == EXIT_OK
    assert table.splitlines()[0].split()[-1] == "MATCH"
    assert "What does the «Refund» Policy" in table and "\x1b" not in table and "\u202e" not in table
    # Without a text: term, no match and no lag: the keys stay, null.
    _, out, _ = run_cli(capsys, "traces", "--db", str(db_path), "--format", "json")
    result = json.loads(out)
    assert result["text_index_lag"] is None and result["traces"][0]["match"] is None


def json_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in json_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in json_keys(v)}
    return set()


def test_json_keys_are_the_ones_help_documents(hand_store, writer_db, normalizer, capsys):
    from llmobs_tui.cli.parser import SHOW_JSON_HELP, TRACES_JSON_HELP
    from store.content_index import ContentIndexer

    write_searchable_trace(writer_db, normalizer)
    ContentIndexer(writer_db).run(deadline_s=30)
    _, out, _ = run_cli(capsys, "traces", "--db", str(hand_store), "--filter", "text:refund", "--format", "json")
    traces = json.loads(out)
    assert traces["traces"][0]["match"]  # the match object's keys are in the output too
    assert json_keys(traces) == set(re.findall(r'"(\w+)"', TRACES_JSON_HELP))
    _, out, _ = run_cli(capsys, "show", "abc1", "--db", str(hand_store), "--format", "json")
    trace = json.loads(out)
    assert any(span["error"] for span in trace["spans"])  # the error object's keys are in the output too
    assert json_keys(trace) == set(re.findall(r'"(\w+)"', SHOW_JSON_HELP))


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color():
    assert investigate.colour_enabled(FakeTerminal(), {}) is True
    assert investigate.colour_enabled(FakeTerminal(), {"NO_COLOR": "1"}) is False
    assert investigate.colour_enabled(FakeTerminal(), {"NO_COLOR": ""}) is True  # no-color.org: set and not empty
    assert investigate.colour_enabled(FakeTerminal(), {"TERM": "dumb"}) is False
    assert investigate.colour_enabled(io.StringIO(), {}) is False


def test_colour_wraps_cleaned_cells_only(hand_store, capsys, monkeypatch):
    monkeypatch.setattr(investigate, "colour_enabled", lambda stream, environ=None: True)
    code, out, _ = run_cli(capsys, "show", "abc1", "--db", str(hand_store))
    assert code == EXIT_OK
    chat = next(line for line in tree_lines(out) if "chat gpt-4o" in line)
    assert f"{investigate.SGR_RED}error api/rate_limit RateLimitError" in chat
    assert chat.startswith(f"{investigate.SGR_BOLD}{investigate.CRITICAL_MARK}")
    # Every escape sequence in the output is one of ours.
    assert set(re.findall(r"\x1b\[[0-9;]*m", out)) <= {investigate.SGR_RED, investigate.SGR_BOLD,
                                                       investigate.SGR_RESET}
    assert out.count("\x1b") == len(re.findall(r"\x1b\[[0-9;]*m", out))


def test_long_names_are_cut_to_fit_a_terminal(writer_db, normalizer, db_path, capsys, monkeypatch):
    base = time.time_ns() - 30 * NS
    long_name = "handle " + "very-long-route-segment/" * 5
    write_trace(SpanWriter(writer_db), normalizer, [make_span(0xC0DE << 112, 1, None, long_name, {}, start_ns=base,
                                                              end_ns=base + MS)])
    _, piped, _ = run_cli(capsys, "show", "c0de", "--db", str(db_path))
    (row,) = tree_lines(piped)
    assert f"{long_name[:investigate.NAME_CELLS - 3]}…" in row  # `· ` and the name in NAME_CELLS cells
    monkeypatch.setattr(investigate, "_terminal_width", lambda stream: 100)
    _, narrow, _ = run_cli(capsys, "show", "c0de", "--db", str(db_path))
    (row,) = tree_lines(narrow)
    assert len(row) <= 100 and "handle very-long" in row and "…" in row


def test_traces_says_when_the_search_index_is_off(tmp_path, capsys):
    """A writer under --max-db-size does not index: a text: search says so instead of a lag."""
    from store.connection import open_writer
    from store.content_index import record_indexing

    path = tmp_path / "off.db"
    db = open_writer(path)
    try:
        record_indexing(db, "--max-db-size")
    finally:
        db.close()
    from llmobs_tui.cli import main

    assert main(["traces", "--db", str(path), "--filter", "text:refund"]) == 0
    assert "search index is off (--max-db-size)" in capsys.readouterr().err
