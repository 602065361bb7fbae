"""Tool calls: kind "tool" and a tool name from every family (MCP included), and the breakdown by
tool (calls, errors, p50/p95 duration) in `llmobs-tui report --by tool` and on the Breakdown screen.

Spans are real OTLP protobuf built with tests/otlp_factory.py, decoded by the real normalizer and
committed by the real writer; the CLI runs against that store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from llmobs_tui.cli import main
from llmobs_tui.screens.breakdown import BreakdownScreen
from llmobs_tui.screens.traces import TracesScreen
from llmobs_tui.widgets.keyed_table import KeyedTable
from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store.connection import WriterLock, open_reader, open_writer
from store.models import COL
from store.queries import tool_calls_query
from store.writer import SpanWriter
from tests.otlp_factory import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    T0,
    make_span,
    trace_request,
)
from tests.test_tui import make_app, settle, tui_store  # noqa: F401  (the TUI tests' store fixture)

PRICES = PriceTable.load()
NS = 10**9
MS = 10**6


def one(attrs: Mapping[str, Any], name: str, kind: int = SPAN_KIND_INTERNAL) -> tuple[str, str | None]:
    rows, _, _, rejections = Normalizer(PRICES, IngestOptions()).decode_traces(
        trace_request([make_span(1, 2, None, name, attrs, kind=kind)]), received_ns=T0 + 1000 * NS)
    assert rejections.count == 0
    (row,) = rows
    return row[COL["kind"]], row[COL["tool_name"]]


# =================================================================================================
# Kind and tool name
# =================================================================================================

TOOL_SPANS = [
    # OTel contrib MCP instrumentation (draft semconv #2083): mcp.method.name + mcp.tool.name,
    # span renamed `tools/call {tool}` [opentelemetry-instrumentation-mcp instrumentation.py]
    ("mcp-contrib-client", {"mcp.method.name": "tools/call", "mcp.tool.name": "get_weather", "mcp.request.id": 3,
                            "mcp.request.argument.city": '"Paris"'}, "tools/call get_weather", SPAN_KIND_CLIENT,
     ("tool", "get_weather")),
    ("mcp-contrib-server", {"mcp.method.name": "tools/call", "mcp.tool.name": "get_weather", "mcp.request.id": 3,
                            "mcp.session.id": "191c4850af6c49e08843a3f6c80e5046"}, "tools/call get_weather",
     SPAN_KIND_SERVER, ("tool", "get_weather")),
    # OTel MCP semconv (docs/gen-ai/mcp.md): gen_ai.tool.name; gen_ai.operation.name only Recommended
    ("mcp-semconv", {"mcp.method.name": "tools/call", "gen_ai.tool.name": "get_weather",
                     "gen_ai.operation.name": "execute_tool", "jsonrpc.request.id": "10",
                     "mcp.session.id": "s1", "mcp.protocol.version": "2025-06-18", "network.transport": "pipe"},
     "tools/call get_weather", SPAN_KIND_CLIENT, ("tool", "get_weather")),
    ("mcp-semconv-no-operation", {"mcp.method.name": "tools/call", "gen_ai.tool.name": "get_weather"},
     "tools/call get_weather", SPAN_KIND_CLIENT, ("tool", "get_weather")),
    # MCP methods that are not tool calls
    ("mcp-initialize", {"mcp.method.name": "initialize", "mcp.request.id": 0, "mcp.protocol.version": "2025-06-18"},
     "initialize", SPAN_KIND_CLIENT, ("span", None)),
    ("mcp-initialized", {"mcp.method.name": "notifications/initialized"}, "notifications/initialized",
     SPAN_KIND_CLIENT, ("span", None)),
    ("mcp-tools-list", {"mcp.method.name": "tools/list", "mcp.request.id": 1}, "tools/list", SPAN_KIND_CLIENT,
     ("span", None)),
    ("mcp-resources-read", {"mcp.method.name": "resources/read", "mcp.resource.uri": "file:///a.txt"},
     "resources/read", SPAN_KIND_CLIENT, ("span", None)),
    ("mcp-prompts-get", {"mcp.method.name": "prompts/get", "gen_ai.prompt.name": "analyze-code"},
     "prompts/get analyze-code", SPAN_KIND_CLIENT, ("span", None)),
    # gen_ai execute_tool (contrib util-genai start_tool, frameworks); the name from the span name
    # when gen_ai.tool.name is missing (span name template `execute_tool {gen_ai.tool.name}`)
    ("otel-execute-tool", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather",
                           "gen_ai.tool.call.id": "call_1"}, "execute_tool get_weather", SPAN_KIND_INTERNAL,
     ("tool", "get_weather")),
    ("otel-execute-tool-unnamed", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.call.id": "call_1"},
     "execute_tool get_weather", SPAN_KIND_INTERNAL, ("tool", "get_weather")),
    # OpenInference TOOL span
    ("openinference", {"openinference.span.kind": "TOOL", "tool.name": "get_weather",
                       "input.value": '{"city": "Paris"}'}, "get_weather", SPAN_KIND_INTERNAL,
     ("tool", "get_weather")),
    # Vercel AI SDK ai.toolCall
    ("vercel", {"ai.operationId": "ai.toolCall", "operation.name": "ai.toolCall", "ai.toolCall.name": "get_weather",
                "ai.toolCall.id": "call_1"}, "ai.toolCall", SPAN_KIND_INTERNAL, ("tool", "get_weather")),
    # OpenLLMetry tool spans: traceloop.span.kind=tool, the tool in traceloop.entity.name (its MCP
    # instrumentation names them `{tool}.tool`) [openllmetry mcp/instrumentation.py _handle_tool_call]
    ("openllmetry", {"traceloop.span.kind": "tool", "traceloop.entity.name": "get_weather",
                     "traceloop.workflow.name": "weather_agent"}, "get_weather.tool", SPAN_KIND_INTERNAL,
     ("tool", "get_weather")),
    # Langfuse tool observation: the tool is the observation's (span's) name
    ("langfuse", {"langfuse.observation.type": "tool", "langfuse.observation.input": '{"city": "Paris"}'},
     "get_weather", SPAN_KIND_INTERNAL, ("tool", "get_weather")),
]


@pytest.mark.parametrize(("attrs", "name", "span_kind", "expected"), [c[1:] for c in TOOL_SPANS],
                         ids=[c[0] for c in TOOL_SPANS])
def test_tool_spans_get_kind_and_tool_name(attrs, name, span_kind, expected):
    assert one(attrs, name, span_kind) == expected


# =================================================================================================
# report --by tool, against a real store
# =================================================================================================

MCP_CLIENT = {"mcp.method.name": "tools/call", "mcp.tool.name": "get_weather", "mcp.request.id": 3}
MCP_SERVER = {**MCP_CLIENT, "mcp.session.id": "sess-1"}


def seed_tools(db_path: Path, now_ns: int) -> None:
    t = now_ns - 600 * NS
    spans = [
        # Trace 1, feature support: a framework's execute_tool wrapping the MCP client's tools/call,
        # wrapping the MCP server's (propagated through params._meta). One call: the outer 400 ms;
        # failed, because the server reports tool_error. MCP session traffic is not a tool call.
        make_span(1, 1, None, "agent run", {"app.llm.feature": "support"}, start_ns=t, end_ns=t + 2 * NS),
        make_span(1, 2, 1, "initialize", {"mcp.method.name": "initialize"}, start_ns=t, end_ns=t + 20 * MS),
        make_span(1, 3, 1, "tools/list", {"mcp.method.name": "tools/list"}, start_ns=t + 20 * MS,
                  end_ns=t + 30 * MS),
        make_span(1, 4, 1, "execute_tool get_weather", {"gen_ai.operation.name": "execute_tool",
                                                        "gen_ai.tool.name": "get_weather"},
                  start_ns=t + 100 * MS, end_ns=t + 500 * MS),
        make_span(1, 5, 4, "tools/call get_weather", MCP_CLIENT, start_ns=t + 110 * MS, end_ns=t + 490 * MS,
                  kind=SPAN_KIND_CLIENT),
        make_span(1, 6, 5, "tools/call get_weather", {**MCP_SERVER, "error.type": "tool_error"},
                  start_ns=t + 150 * MS, end_ns=t + 450 * MS, kind=SPAN_KIND_SERVER),
        # Trace 2, feature search: Vercel tool calls, one failed.
        make_span(2, 1, None, "POST /search", {"app.llm.feature": "search"}, start_ns=t, end_ns=t + NS),
        make_span(2, 2, 1, "ai.toolCall", {"ai.operationId": "ai.toolCall", "ai.toolCall.name": "search_docs"},
                  start_ns=t, end_ns=t + 100 * MS),
        make_span(2, 3, 1, "ai.toolCall", {"ai.operationId": "ai.toolCall", "ai.toolCall.name": "search_docs"},
                  start_ns=t + 100 * MS, end_ns=t + 300 * MS, status_code=STATUS_ERROR, status_message="timeout"),
        # Trace 3, feature support: an OpenLLMetry tool and a Langfuse tool observation of one tool.
        make_span(3, 1, None, "support turn", {"app.llm.feature": "support"}, start_ns=t, end_ns=t + NS),
        make_span(3, 2, 1, "lookup_order.tool", {"traceloop.span.kind": "tool",
                                                 "traceloop.entity.name": "lookup_order"},
                  start_ns=t, end_ns=t + 50 * MS),
        make_span(3, 3, 1, "lookup_order", {"langfuse.observation.type": "tool"}, start_ns=t + 60 * MS,
                  end_ns=t + 210 * MS),
        # Trace 4: two days old, outside a 24 h window.
        make_span(4, 1, None, "execute_tool get_weather", {"gen_ai.operation.name": "execute_tool",
                                                           "gen_ai.tool.name": "get_weather"},
                  start_ns=now_ns - 2 * 86400 * NS, end_ns=now_ns - 2 * 86400 * NS + 10 * NS),
    ]
    lock = WriterLock(db_path)
    lock.acquire()
    db = open_writer(db_path)
    rows, resources, scopes, _ = Normalizer(PRICES, IngestOptions()).decode_traces(
        trace_request(spans), received_ns=now_ns)
    SpanWriter(db).write(rows, [], resources, scopes)
    db.close()
    lock.release()


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_report_by_tool_counts_each_call_once_with_errors_and_p95(tmp_path, capsys):
    db = tmp_path / "tools.db"
    seed_tools(db, time.time_ns())
    code, out, err = run_cli(capsys, "report", "--db", str(db), "--by", "tool", "--format", "json")
    assert code == 0, err
    result = json.loads(out)
    assert result["by"] == ["tool"]
    groups = {g["key"]["tool"]: g for g in result["groups"]}
    assert set(groups) == {"get_weather", "search_docs", "lookup_order"}  # no initialize, no tools/list
    assert groups["get_weather"] == {"key": {"tool": "get_weather"}, "calls": 1, "errors": 1, "error_rate": 1.0,
                                     "duration_ms": {"p50": 400.0, "p95": 400.0}}
    assert groups["search_docs"] == {"key": {"tool": "search_docs"}, "calls": 2, "errors": 1, "error_rate": 0.5,
                                     "duration_ms": {"p50": 100.0, "p95": 200.0}}
    assert groups["lookup_order"] == {"key": {"tool": "lookup_order"}, "calls": 2, "errors": 0, "error_rate": 0.0,
                                      "duration_ms": {"p50": 50.0, "p95": 150.0}}
    # the two-day-old call is in a 7-day window
    code, out, _ = run_cli(capsys, "report", "--db", str(db), "--by", "tool", "--window", "7d", "--format", "json")
    groups = {g["key"]["tool"]: g for g in json.loads(out)["groups"]}
    assert (groups["get_weather"]["calls"], groups["get_weather"]["duration_ms"]["p95"]) == (2, 10000.0)

    code, out, _ = run_cli(capsys, "report", "--db", str(db), "--by", "tool")
    assert code == 0
    assert "# Tool calls" in out
    assert "| tool | calls | errors | error % | p50 | p95 |" in out
    assert "| search_docs | 2 | 1 | 50.0% | 100ms | 200ms |" in out
    assert "| get_weather | 1 | 1 | 100.0% | 400ms | 400ms |" in out
    assert "5 tool calls, 2 failed" in out


def test_report_by_tool_and_feature_and_refused_dimensions(tmp_path, capsys):
    db = tmp_path / "tools.db"
    seed_tools(db, time.time_ns())
    code, out, _ = run_cli(capsys, "report", "--db", str(db), "--by", "feature,tool", "--format", "json")
    assert code == 0
    result = json.loads(out)
    assert result["by"] == ["tool", "feature"]
    keys = {(g["key"]["tool"], g["key"]["feature"]): g["calls"] for g in result["groups"]}
    assert keys == {("get_weather", "support"): 1, ("search_docs", "search"): 2, ("lookup_order", "support"): 2}
    code, _, err = run_cli(capsys, "report", "--db", str(db), "--by", "tool,model")
    assert code == 2 and "tool calls group by tool, service, feature, tenant only" in err


def test_report_by_tool_on_an_empty_window(tmp_path, capsys):
    db = tmp_path / "tools.db"
    seed_tools(db, time.time_ns() - 30 * 86400 * NS)  # every tool call a month old or more
    code, out, _ = run_cli(capsys, "report", "--db", str(db), "--by", "tool", "--window", "1h")
    assert code == 0 and "No tool calls in this window." in out


def test_tool_query_uses_the_tool_index(tmp_path):
    db = tmp_path / "tools.db"
    seed_tools(db, time.time_ns())
    reader = open_reader(db)
    try:
        sql, params = tool_calls_query(0, 2**62)
        plan = " | ".join(row[-1] for row in reader.execute("EXPLAIN QUERY PLAN " + sql, params))
    finally:
        reader.close()
    # the window through the partial index of tool spans (migration m003); parent and child lookups
    # through spans_by_trace; no table scan
    assert "SEARCH s USING INDEX spans_tool_by_start" in plan
    assert "SEARCH p USING INDEX spans_by_trace" in plan and "SEARCH c USING INDEX spans_by_trace" in plan
    assert not any(f"SCAN {alias}" in plan.split(" | ") for alias in ("s", "p", "c", "spans")), plan


# =================================================================================================
# The Breakdown screen grouped by tool
# =================================================================================================


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_breakdown_by_tool_lists_tools_and_drills_to_their_traces(tui_store, size):  # noqa: F811
    app = make_app(tui_store)
    async with app.run_test(size=size) as pilot:
        await pilot.press("2")
        await settle(pilot)
        for _ in range(6):  # model → feature → tenant → prompt → variant → provider → tool
            await pilot.press("g")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, BreakdownScreen) and screen.by == "tool"
        table = screen.query_one(KeyedTable)
        headers = [str(c.label) for c in table.columns.values()]
        wide = size[0] >= 110
        assert headers == (["tool", "calls", "errors", "error %", "p50", "p95"] if wide
                           else ["tool", "calls", "error %", "p95"])
        tools = {str(table.get_row_at(i)[0]) for i in range(table.row_count)}
        # the demo agent's tools (llmobs_tui/scenarios.py), each counted from its execute_tool spans
        assert tools and tools <= {"search_orders", "lookup_customer", "get_policy", "check_inventory"}
        calls = sum(int(str(table.get_row_at(i)[1]).replace(",", "")) for i in range(table.row_count))
        db = open_reader(tui_store)
        try:
            window_start_ns = int((app.clock() - app.window_s) * 1e9)
            expected = db.execute("SELECT count(*) FROM spans WHERE kind = 'tool' AND start_ns >= ? "
                                  "AND start_ns <= ?", (window_start_ns, int(app.clock() * 1e9))).fetchone()[0]
        finally:
            db.close()
        assert calls == expected > 0
        first = str(table.get_row_at(0)[0])
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TracesScreen)
        assert app.screen.flt.text == f"tool={first}"
        assert app.screen.query_one(KeyedTable).row_count > 0
