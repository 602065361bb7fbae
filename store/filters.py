"""The SQL side of the `/` filter language (llmobs_tui.filtering): which column each filter field
reads, and the clauses a term compiles to. The language (fields, operators, units) lives in
llmobs_tui.filtering; every column name lives here (issue 12). Values are always parameters."""

from __future__ import annotations

from store.content_index import ALL_MATCHES, NEWEST_MATCHES

# Trace-summary fields: expressions over the traces table (alias t).
TRACE_FIELDS: dict[str, str] = {
    "feature": "t.feature",
    "tenant": "t.tenant",
    "variant": "t.variant",
    "service": "t.service",
    "root": "t.root_name",
    "duration": "t.duration_ns",
    "cost": "t.cost_nusd",
    "tokens": "(t.input_tokens + t.output_tokens)",
    "calls": "t.llm_calls",
    "spans": "t.spans",
}

# Span fields: expressions over the spans table (alias s); a trace matches when any span does.
SPAN_FIELDS: dict[str, str] = {
    "model": "coalesce(s.request_model, s.response_model)",
    "provider": "s.provider",
    "name": "s.name",
    "kind": "s.kind",
    "tool": "s.tool_name",
    "error": "coalesce(s.error_subclass, s.error_class)",
    "prompt": "s.prompt_id",
    "version": "s.prompt_version",
    "user": "s.user_id",
    "conversation": "s.conversation_id",
    "ttft": "s.ttft_ns",
    "latency": "s.duration_ns",
}

# `status=error`: the trace failed somewhere.
TRACE_FAILING = "(t.errors_api + t.errors_validation + t.errors_guardrail + t.error_spans) > 0"


def any_span_clause(expression: str, sql_op: str, negate: bool = False) -> str:
    """A clause over `traces t`: some span of the trace has `expression sql_op ?` (or, `negate`,
    none has)."""
    exists = f"EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = t.trace_id AND {expression} {sql_op} ?)"
    return f"NOT {exists}" if negate else exists


# `text:…`: the trace has a span or log record whose indexed content (store/content_index.py)
# contains the phrase; the parameter is content_index.phrase_query(user text), never raw user text.
CONTENT_MATCH = f"t.trace_id IN ({ALL_MATCHES})"


def content_match_clause(negate: bool = False, newest_only: bool = False) -> str:
    """A clause over `traces t`: some stored content of the trace matches (or, `negate`, none does).
    `newest_only`: among the newest MATCH_SCAN_LIMIT matches, so that a common word costs a bounded
    read (a positive search only: a negation must see every match to be right)."""
    if newest_only and not negate:
        return f"t.trace_id IN ({NEWEST_MATCHES})"
    return f"NOT {CONTENT_MATCH}" if negate else CONTENT_MATCH
