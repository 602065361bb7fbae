"""The detail pane of a span: attributes, the rendered conversation, events and logs, and cost."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static, TabbedContent, TabPane

from llmobs_tui import format as fmt
from store.models import CONTENT_TIERS, FLAG_CONTENT_DROPPED, TIER_NONE, TIER_SAMPLED_OUT, content_tier, flag_names
from store.pricing import FEMTO_PER_NANO, FEMTO_PER_USD, TIER_BASE, TIER_LONG_CONTEXT, TIER_NAMES
from store.span_detail import SpanDetail

ROLE_STYLE = {"system": "bold yellow", "user": "bold green", "assistant": "bold magenta", "tool": "bold cyan",
              "developer": "bold yellow"}


def _value_text(value: Any) -> Text:
    if isinstance(value, (dict, list)):
        return fmt.safe(json.dumps(value, indent=2, ensure_ascii=False, default=str), newlines=True)
    if isinstance(value, bytes):
        return fmt.safe(f"<{len(value)} bytes> {value[:64].hex()}", style="dim")
    if isinstance(value, str):
        return fmt.safe(_unescaped_json(value), newlines=True)
    return fmt.safe(value, style="cyan")


def _unescaped_json(value: str) -> str:
    """A string attribute holding JSON (`gen_ai.input.messages` as the SDK serialised it, with
    `\\u2013` escapes) with its real characters; any other string as it is."""
    if "\\u" not in value or value.lstrip()[:1] not in ("{", "[", '"'):
        return value
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        return value
    return json.dumps(parsed, ensure_ascii=False)


def _json_or_text(value: Any) -> Text:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return fmt.safe(value, newlines=True)
    return _value_text(value)


def attributes_view(detail: SpanDetail) -> RenderableType:
    span = detail.span
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True, max_width=42)
    table.add_column(overflow="fold")
    table.add_row(Text("span", style="bold"), fmt.safe(f"{span.span_id.hex()}  {span.kind}"))
    if span.status == 2:
        table.add_row(Text("status", style="bold red"), fmt.safe(span.status_message or "ERROR", style="red"))
    flags = flag_names(span.flags)
    if flags:
        table.add_row(Text("receiver", style="bold yellow"), Text(", ".join(flags), style="yellow"))
    if detail.dropped_attributes:
        table.add_row(Text("dropped", style="bold yellow"), Text(f"{detail.dropped_attributes} attributes"))
    tier_line = content_tier_text(span.flags)
    if tier_line is not None:
        table.add_row(Text("content", style="bold"), tier_line)
    for attribute in detail.attributes:
        table.add_row(fmt.safe(attribute.key, limit=200), _value_text(attribute.value))
    if detail.scope[0]:
        table.add_row(Text("scope", style="bold"), fmt.safe(f"{detail.scope[0]} {detail.scope[1] or ''}"))
    for attribute in detail.resource:
        table.add_row(fmt.safe("resource." + attribute.key, limit=200), _value_text(attribute.value))
    for trace_id, span_id in detail.links:
        table.add_row(Text("link"), fmt.safe(f"{trace_id}/{span_id}"))
    return table


# What turns on prompt and completion capture, per instrumentation family, found from the span's
# instrumentation scope name (first row whose prefix matches wins; the README has the same table).
_OTEL_CONTENT = ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_AND_EVENT with "
                 "OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental (older releases: "
                 "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true)")
_OPENLLMETRY_CONTENT = "TRACELOOP_TRACE_CONTENT=true (OpenLLMetry records content unless it is false)"
CONTENT_SWITCHES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    # (scope-name prefixes, family, setting)
    (("opentelemetry.instrumentation.openai_v2", "opentelemetry.instrumentation.genai.",
      "opentelemetry.instrumentation.google_genai", "opentelemetry.util.genai"), "OTel GenAI instrumentation",
     _OTEL_CONTENT),
    # Both OTel contrib and OpenLLMetry ship an instrumentation under these names.
    (("opentelemetry.instrumentation.vertexai", "opentelemetry.instrumentation.langchain"),
     "OTel contrib or OpenLLMetry instrumentation", f"{_OTEL_CONTENT}; or, for OpenLLMetry, {_OPENLLMETRY_CONTENT}"),
    (("opentelemetry.instrumentation.", "traceloop"), "OpenLLMetry", _OPENLLMETRY_CONTENT),
    (("openinference.",), "OpenInference",
     "OPENINFERENCE_HIDE_INPUTS / OPENINFERENCE_HIDE_OUTPUTS (and OPENINFERENCE_HIDE_INPUT_MESSAGES / "
     "OPENINFERENCE_HIDE_OUTPUT_MESSAGES) unset or false, and no TraceConfig(hide_inputs=True)"),
    (("langfuse",), "Langfuse",
     "LANGFUSE_OBSERVE_DECORATOR_IO_CAPTURE_ENABLED unset or true, and no "
     "@observe(capture_input=False, capture_output=False)"),
    (("pydantic-ai", "pydantic_ai", "logfire"), "Pydantic AI",
     "Agent(instrument=InstrumentationSettings(include_content=True)) "
     "(logfire.instrument_pydantic_ai(include_content=True))"),
    (("openlit",), "OpenLIT", "OPENLIT_CAPTURE_MESSAGE_CONTENT=true (openlit.init(capture_message_content=True))"),
)
# The Vercel AI SDK's scope is just "ai".
_VERCEL_CONTENT = ("Vercel AI SDK",
                   "experimental_telemetry: { isEnabled: true, recordInputs: true, recordOutputs: true }")


def content_switch(scope_name: str | None) -> tuple[str, str] | None:
    """(family, the setting that records prompts and completions) for an instrumentation scope."""
    if not scope_name:
        return None
    name = scope_name.strip().lower()
    if name == "ai":
        return _VERCEL_CONTENT
    for prefixes, family, setting in CONTENT_SWITCHES:
        if name.startswith(prefixes):
            return family, setting
    return None


def content_tier_text(flags: int) -> Text | None:
    """Which content tier (`--content`, store.models CONTENT_TIERS) kept or dropped a span's prompts and
    completions: "kept: error", "not kept (tier: sampled out)"; None when no tier was recorded."""
    tier = content_tier(flags)
    name = CONTENT_TIERS.get(tier)
    if name is None:
        return None
    if flags & FLAG_CONTENT_DROPPED:
        return Text(f"not kept (tier: {name})", style="yellow")
    return Text(f"kept: {name}", style="green")


def no_content_text(detail: SpanDetail) -> Text:
    """The line shown when a span carries no prompt or completion: what to turn on, and where.
    Built from plain Text pieces: the scope name is the sender's, never markup."""
    flags = detail.span.flags
    if flags & FLAG_CONTENT_DROPPED:
        tier = content_tier(flags)
        if tier == TIER_SAMPLED_OUT:
            return Text("Content not kept (tier: sampled out). The receiver runs with --content tiered: it keeps "
                        "the prompts and completions of failed, slow and costly calls, of burning SLO scopes and "
                        "of a sample of traces ([content] sample in llmobs.toml); this span's trace was not "
                        "sampled.", style="dim")
        if tier in (TIER_NONE, 0):
            return Text("Content not kept (tier: none). The receiver runs with --content none (--no-content).",
                        style="dim")
    text = Text("No prompt or completion recorded for this span.", style="dim")
    scope = detail.scope[0]
    switch = content_switch(scope)
    if switch is None:
        text.append(" If the instrumentation should record them, turn its content capture on "
                    "(README: \"Capture prompts and completions\").", style="dim")
        return text
    family, setting = switch
    text.append(f" {family} (scope ", style="dim")
    text.append_text(fmt.safe(scope, style="dim", limit=120))
    text.append(") records them with: ", style="dim")
    text.append(setting)
    return text


def conversation_view(detail: SpanDetail) -> RenderableType:
    parts: list[RenderableType] = []
    arguments, result = detail.tool_io
    if arguments is not None or result is not None:
        if arguments is not None:
            parts.append(Text("arguments", style="bold cyan"))
            parts.append(_json_or_text(arguments))
        if result is not None:
            parts.append(Text("result", style="bold cyan"))
            parts.append(_json_or_text(result))
    for message in detail.messages:
        header = fmt.safe(message.role, style=ROLE_STYLE.get(message.role, "bold"), limit=40)
        if message.name:
            header.append(f" ({fmt.clean(message.name)})", style="dim")
        if message.finish_reason:
            header.append(f"  finish: {fmt.clean(message.finish_reason)}", style="dim")
        header.append(f"  [{fmt.clean(message.source, limit=40)}]", style="dim")
        parts.append(header)
        for part in message.parts:
            if part.type == "text":
                parts.append(fmt.safe(part.text or "", newlines=True, limit=20000))
            elif part.type == "reasoning":
                parts.append(fmt.safe("reasoning: " + (part.text or ""), style="dim italic", newlines=True,
                                      limit=20000))
            elif part.type == "tool_call":
                call = Text("→ tool call ", style="bold cyan")
                call.append_text(fmt.safe(part.name or "?", style="bold"))
                if part.id:
                    call.append(f"  {fmt.clean(part.id)}", style="dim")
                parts.append(call)
                parts.append(_json_or_text(part.arguments))
            elif part.type == "tool_call_response":
                response = Text("← tool result", style="bold cyan")
                if part.id:
                    response.append(f"  {fmt.clean(part.id)}", style="dim")
                parts.append(response)
                parts.append(_json_or_text(part.response))
            else:
                parts.append(fmt.safe(part.text or f"<{part.type}>", style="dim"))
        parts.append(Text(""))
    if not parts:
        return no_content_text(detail)
    kept = content_tier_text(detail.span.flags)
    if kept is not None:  # --content tiered: which tier kept this span's content
        kept.stylize("dim")
        parts.insert(0, Text.assemble(("content ", "dim"), kept))
    return Group(*parts)


def events_view(detail: SpanDetail) -> RenderableType:
    span = detail.span
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for name, time_ns, attrs in detail.events:
        body = Text()
        for i, (key, value) in enumerate(attrs.items()):
            if i:
                body.append("\n")
            body.append_text(fmt.safe(f"{key}: ", style="dim"))
            body.append_text(_value_text(value))
        table.add_row(Text("+" + fmt.duration(time_ns - span.start_ns)), fmt.safe(name, style="bold"), body)
    for name, time_ns, _attrs, log_body in detail.logs:
        body = _value_text(log_body) if log_body is not None else Text("")
        table.add_row(Text("+" + fmt.duration(time_ns - span.start_ns)), fmt.safe(f"log {name}", style="bold cyan"),
                      body)
    if not detail.events and not detail.logs:
        return Text("No span events or correlated log records.", style="dim")
    return table


def _exact_usd(femto_usd: int) -> str:
    """An exact amount of 1e-15 USD as dollars, with no more digits than it has."""
    text = f"{Decimal(femto_usd) / FEMTO_PER_USD:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"${text}"


def price_lines(detail: SpanDetail) -> list[tuple[str, Text]]:
    """The price rows of the Cost tab: the stored row that priced the span, the tier that applied,
    its per-1M prices and the formula's terms (store.pricing), which add up to the stored cost."""
    span = detail.span
    if span.price_id is None:
        return [("price", Text("unpriced: no price row matches this model (counted as unpriced, never $0)",
                               style="bold yellow"))]
    record = detail.price
    if record is None:
        return [("price row", fmt.safe(f"{span.price_id}: not recorded in this store (priced before the store "
                                        f"kept its price rows): run llmobs-tui reprice", style="yellow"))]
    lines: list[tuple[str, Text]] = []
    row = fmt.safe(record.id, style="bold")
    row.append_text(fmt.safe(f"  {record.kind}: {record.models}", style="dim", limit=160))
    if record.checked:
        row.append_text(fmt.safe(f"  checked {record.checked}", style="dim"))
    lines.append(("price row", row))
    if not record.in_table:
        lines.append(("", Text("no longer in the price table: llmobs-tui reprice applies the current one",
                               style="yellow")))
    cost = detail.cost
    tier = cost.tier if cost is not None else (detail.price_tier if detail.price_tier is not None else TIER_BASE)
    threshold = record.long_context_threshold
    if cost is not None and cost.tier != cost.current_tier:
        tier_text = Text(f"{TIER_NAMES[cost.tier]} prices priced this call; the row's threshold is now "
                         f"{threshold:,} tokens" if threshold is not None else
                         f"{TIER_NAMES[cost.tier]} prices priced this call; the row has no long-context prices now",
                         style="yellow")
        lines.append(("tier", tier_text))
    elif threshold is not None:
        inp = span.input_tokens or 0
        if tier == TIER_LONG_CONTEXT:
            tier_text = Text(f"long context: input {inp:,} > {threshold:,} tokens", style="yellow")
        else:
            tier_text = Text(f"base: input {inp:,} ≤ {threshold:,} tokens (long-context prices above)")
        if cost is not None and not cost.tier_recorded:
            tier_text.append(" (from the row: priced before tiers were stored)", style="dim")
        lines.append(("tier", tier_text))
    p_in, p_cread, p_cwrite, p_out, p_reason = record.prices(tier)
    lines.append(("per 1M", Text(f"in ${p_in:g} · cache read ${p_cread:g} · cache write ${p_cwrite:g} · "
                                 f"out ${p_out:g} · reasoning ${p_reason:g}")))
    if cost is None:
        return lines
    formula = " + ".join(f"{n:,}×${price:g}" for n, price in zip(cost.tokens, cost.prices)) + "  (/1M)"
    lines.append(("formula", Text(formula)))
    terms = [_exact_usd(t) for t in cost.terms_femto_usd if t] or ["$0"]
    total = Text(f"= {' + '.join(terms)} = {_exact_usd(cost.cost_nusd * FEMTO_PER_NANO)}")
    if cost.matches_stored:
        total.append("  the stored cost", style="dim")
    lines.append(("", total))
    if not cost.matches_stored:
        stored = _exact_usd((span.cost_nusd or 0) * FEMTO_PER_NANO)
        lines.append(("", Text(f"the price row changed since this call was priced (stored cost {stored}): "
                               f"run llmobs-tui reprice", style="bold yellow")))
    return lines


def cost_view(detail: SpanDetail) -> RenderableType:
    span = detail.span
    lines = Table.grid(padding=(0, 1))
    lines.add_column(style="dim", no_wrap=True, min_width=len("price row"))
    lines.add_column()
    if not span.is_llm:
        kind = "" if span.kind in ("span", "", None) else f"{span.kind} "
        return Text(f"{fmt.article(kind or 'span').capitalize()} {kind}span: not an LLM call, never billed.",
                    style="dim")
    lines.add_row("model", fmt.safe(f"{span.request_model or '–'} → {span.response_model or '–'}"))
    lines.add_row("provider", fmt.safe(span.provider or "–"))
    inp, out = span.input_tokens, span.output_tokens
    cread, cwrite, reason = span.cache_read_tokens or 0, span.cache_write_tokens or 0, span.reasoning_tokens or 0
    lines.add_row("input", Text(f"{fmt.tokens(inp)} "
                                f"(cache read {fmt.tokens(cread)}, cache write {fmt.tokens(cwrite)})"))
    lines.add_row("output", Text(f"{fmt.tokens(out)} (reasoning {fmt.tokens(reason)})"))
    if span.ttft_ns is not None:
        latency = f"TTFT {fmt.duration(span.ttft_ns)}"
        decode = detail.decode
        if decode is not None and decode.tokens_per_s:
            latency += f", TPOT {fmt.duration(decode.tpot_ns)}, decode {decode.tokens_per_s:.0f} tok/s"
        lines.add_row("latency", Text(latency))
    if span.duplicate_of is not None:
        lines.add_row("billing", Text(f"not billed here: the same provider call as span {span.duplicate_of.hex()}, "
                                      f"which is billed (same response id, or a wrapper's and an SDK's span of "
                                      f"one call)", style="yellow"))
    elif not span.billed:
        lines.add_row("billing", Text("not billed here: an LLM span below this one is the billed call", style="yellow"))
    for label, text in price_lines(detail):
        lines.add_row(label, text)
    lines.add_row("cost", Text(fmt.money(span.cost_nusd, unpriced=span.price_id is None), style="bold"))
    return lines


_HTTP_STATUS_KEYS = ("http.response.status_code", "http.status_code", "error.status_code", "llm.error.status_code")


def error_header(detail: SpanDetail) -> Text | None:
    """A failed span's error, for the top of the Conversation and Cost tabs (a 429 must not hide
    under Attributes): its class, the HTTP status if it carries one, and the message."""
    span = detail.span
    if not span.failed:
        return None
    text = Text("✕ failed", style="bold red")
    kind = span.error_subclass or span.error_class
    if kind:
        text.append(" · ")
        text.append_text(fmt.safe(kind.replace("_", " "), style="bold red", limit=40))
        if span.error_subclass and span.error_class and span.error_class != span.error_subclass:
            text.append_text(fmt.safe(f" ({span.error_class})", style="red", limit=40))
    status = next((a.value for a in detail.attributes if a.key in _HTTP_STATUS_KEYS), None)
    if status is not None:
        text.append_text(fmt.safe(f" · HTTP {status}", style="bold red", limit=20))
    elif span.status == 2:
        text.append(" · status ERROR", style="red")
    if span.error_type:
        text.append(" · ")
        text.append_text(fmt.safe(span.error_type, style="red", limit=120))
    if span.status_message:
        text.append("\n")
        text.append_text(fmt.safe(span.status_message, style="red", newlines=True, limit=2000))
    return text


def _with_error(detail: SpanDetail, body: RenderableType) -> RenderableType:
    header = error_header(detail)
    return body if header is None else Group(header, Text(""), body)


class SpanDetailView(Vertical):
    DEFAULT_CSS = """
    SpanDetailView { height: 1fr; }
    SpanDetailView TabbedContent { height: 1fr; }
    SpanDetailView TabPane { padding: 0 1; height: 1fr; }
    SpanDetailView VerticalScroll { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        with TabbedContent():
            for tab_id, title in (("conversation", "Conversation"), ("attributes", "Attributes"),
                                  ("events", "Events & logs"), ("cost", "Cost")):
                with TabPane(title, id=f"tab-{tab_id}"):
                    with VerticalScroll():
                        yield Static(Text("Select a span.", style="dim"), id=f"detail-{tab_id}")

    def show(self, detail: SpanDetail | None) -> None:
        if detail is None:
            for name in ("conversation", "attributes", "events", "cost"):
                self.query_one(f"#detail-{name}", Static).update(Text("Select a span.", style="dim"))
            return
        self.query_one("#detail-conversation", Static).update(_with_error(detail, conversation_view(detail)))
        self.query_one("#detail-attributes", Static).update(attributes_view(detail))
        self.query_one("#detail-events", Static).update(events_view(detail))
        self.query_one("#detail-cost", Static).update(_with_error(detail, cost_view(detail)))
