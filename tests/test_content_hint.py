"""A span without prompt or completion says which setting of its instrumentation records them
(issue 10): the span detail's Conversation tab reads the span's instrumentation scope and names the
switch of that family (README: "Capture prompts and completions"), as literal text."""

from __future__ import annotations

import pytest

from llmobs_tui.app import LlmobsApp
from llmobs_tui.widgets.waterfall import Waterfall
from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store.connection import WriterLock, open_writer
from store.writer import SpanWriter
from tests.otlp_factory import MS, T0, make_span, trace_request
from tests.test_tui import settle, text_of

pytestmark = pytest.mark.slow

TRACE = 0xC047
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 3}

# (span name, scope, attributes, what the hint must name)
SPANS = [
    ("chat gpt-4o", ("opentelemetry.instrumentation.openai_v2", "2.1b0"), CHAT,
     ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_AND_EVENT",
      "OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental"]),
    ("ChatCompletion", ("openinference.instrumentation.openai", "0.1.66"),
     {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.token_count.prompt": 12},
     ["OpenInference", "OPENINFERENCE_HIDE_INPUTS", "OPENINFERENCE_HIDE_OUTPUTS"]),
    ("ai.generateText.doGenerate", ("ai", "5.0.0"),
     {"ai.operationId": "ai.generateText.doGenerate", "ai.model.id": "gpt-4o", "ai.model.provider": "openai.chat"},
     ["experimental_telemetry: { isEnabled: true, recordInputs: true, recordOutputs: true }"]),
    ("anthropic.chat", ("opentelemetry.instrumentation.anthropic", "0.47.0"),
     {"gen_ai.operation.name": "chat", "gen_ai.system": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5"},
     ["TRACELOOP_TRACE_CONTENT=true"]),
    ("agent run", ("pydantic-ai", "1.0.10"), {"gen_ai.agent.name": "support", "agent_name": "support"},
     ["include_content=True"]),
    # A scope name is the sender's text: drawn literally, never as markup.
    ("guarded call", ("openinference.instrumentation.[bold]x[/bold]", "1"),
     {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o"}, ["openinference.instrumentation.[bold]x[/bold]"]),
    ("custom call", ("acme.tracing", "1"), CHAT, ['"Capture prompts and completions"']),
]


@pytest.mark.anyio
async def test_the_no_content_line_names_the_setting_of_the_instrumentation_it_sees(tmp_path):
    path = tmp_path / "hint.db"
    lock = WriterLock(path)
    lock.acquire()
    db = open_writer(path)
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    writer = SpanWriter(db)
    batches = [([make_span(TRACE, 1, None, "POST /ask", {}, start_ns=T0, end_ns=T0 + 2000 * MS, kind=2)],
                ("app", "1"))]
    for i, (name, scope, attrs, _) in enumerate(SPANS):
        batches.append(([make_span(TRACE, i + 2, 1, name, attrs, start_ns=T0 + (10 + i * 100) * MS,
                                   end_ns=T0 + (90 + i * 100) * MS)], scope))
    for spans, scope in batches:
        rows, resources, scopes, _ = normalizer.decode_traces(trace_request(spans, scope=scope),
                                                              received_ns=T0 + 10**12)
        writer.write(rows, [], resources, scopes)
    db.close()
    lock.release()

    app = LlmobsApp(path, clock=lambda: T0 / 1e9 + 60, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        app.open_trace(TRACE.to_bytes(16, "big"))
        await settle(pilot)
        waterfall = app.screen.query_one(Waterfall)
        for name, scope, _, expected in SPANS:
            for _ in range(len(SPANS) + 2):
                if waterfall.selected.name == name:
                    break
                await pilot.press("down")
            assert waterfall.selected.name == name
            await settle(pilot)
            shown = " ".join(text_of(app.screen.query_one("#detail-conversation")).split())
            assert shown.startswith("No prompt or completion recorded for this span."), shown
            for part in expected:
                assert part in shown, (scope, shown)
