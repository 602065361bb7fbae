"""Realistic LLM-application traffic as data: the demo feed, the screenshot fixtures and the TUI
benchmark are all built from these scenarios.

A scenario is a list of `SpanSpec` (parent index, offsets, attributes) relative to the trace's start;
emitters turn it into spans: through the real OTel SDK (the live demo) or straight into OTLP
protobuf (deterministic fixtures). Everything random comes from one `random.Random`, so a seed
reproduces the same traffic exactly. No Textual, no grpc: this runs in a child process.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MS = 1_000_000
S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Model:
    provider: str
    name: str
    response_name: str
    ttft_s: float
    tokens_per_s: float
    reasoning: bool = False
    caches: bool = False
    embedding: bool = False


MODELS = {
    "gpt-4o": Model("openai", "gpt-4o", "gpt-4o-2024-08-06", 0.45, 85),
    "gpt-4o-mini": Model("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.30, 120),
    "o4-mini": Model("openai", "o4-mini", "o4-mini-2025-04-16", 1.6, 140, reasoning=True),
    "claude-sonnet-4-5": Model("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", 0.85, 65, caches=True),
    "claude-haiku-4-5": Model("anthropic", "claude-haiku-4-5", "claude-haiku-4-5-20251001", 0.35, 160, caches=True),
    "gemini-2.5-flash": Model("gcp.gemini", "gemini-2.5-flash", "gemini-2.5-flash", 0.5, 180),
    "mistral-small": Model("mistral_ai", "mistral-small-latest", "mistral-small-2506", 0.3, 140),
    "llama-3.3-70b-local": Model("ollama", "llama-3.3-70b-local", "llama-3.3-70b-local", 0.9, 35),
    "text-embedding-3-small": Model("openai", "text-embedding-3-small", "text-embedding-3-small", 0, 0, embedding=True),
}

FEATURES = {
    # feature: (prompt id, current version, planner model, worker model, tenant weights)
    "support": ("support-answer", "v7", "gpt-4o", "gpt-4o-mini"),
    "checkout": ("checkout-assist", "v3", "claude-sonnet-4-5", "claude-haiku-4-5"),
    "search": ("search-rag", "v12", "gemini-2.5-flash", "gpt-4o-mini"),
    "onboarding": ("onboarding-guide", "v2", "mistral-small", "llama-3.3-70b-local"),
}
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
SERVICES = {"support": "support-bot", "checkout": "checkout-api", "search": "search-api", "onboarding": "support-bot"}

QUESTIONS = (
    "Where is my order #{n}? I was told it would arrive on Tuesday.",
    "Can I change the shipping address to 221B Baker Street, London?",
    "My card ending 4242 was charged twice, please refund one of them.",
    "How do I reset my password? Reply to {user}@example.com please.",
    "Compare the Pro and Team plans for a 40-person company.",
    "Summarise the last three tickets from this customer.",
    "Which of these invoices are overdue, and by how much?",
    "Translate the return policy into Spanish and keep the formatting.",
)
DOCUMENTS = (
    "Returns are accepted within 30 days of delivery when the item is unused.",
    "Express shipping takes 1–2 business days within the EU.",
    "Team plans include SSO, audit logs and priority support.",
    "Refunds are issued to the original payment method within 5 days.",
)


@dataclass(slots=True)
class SpanSpec:
    name: str
    parent: int | None
    start_ns: int  # offset from the trace start
    duration_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # status message when the span failed
    kind: int = 1  # OTel SpanKind: 1 internal, 2 server, 3 client
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)  # (name, offset ns, attrs)

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns


@dataclass(slots=True)
class Evaluation:
    """A `gen_ai.evaluation.result` log record about one span (an LLM judge's score of an answer)."""

    span: int  # index into Trace.spans
    offset_ns: int  # from the trace start
    name: str
    score: float


@dataclass(slots=True)
class Trace:
    feature: str
    service: str
    spans: list[SpanSpec]
    evaluations: list[Evaluation] = field(default_factory=list)

    @property
    def duration_ns(self) -> int:
        return max(s.end_ns for s in self.spans)


@dataclass(slots=True)
class TrafficState:
    """What changes over a demo run: prompt versions, incidents."""

    prompt_versions: dict[str, str] = field(default_factory=lambda: {f: v[1] for f, v in FEATURES.items()})
    # A bigger prompt (twice the input tokens) for a feature: the regression the alert rules catch.
    heavy_versions: set[tuple[str, str]] = field(default_factory=set)
    rate_limit_storm: bool = False
    # (429 share, provider 5xx share) of calls outside a storm. Checkout runs on a provisioned tier:
    # its errors stay well inside its availability SLO, so a storm is what burns its budget.
    error_shares: dict[str, tuple[float, float]] = field(default_factory=lambda: {"checkout": (0.004, 0.002)})
    storm_share: float = 0.6  # the share of checkout calls that get a 429 during a storm
    # An A/B test on one feature (`app.experiment.variant` on the request's root span, inherited by
    # its calls): treatment sends a longer prompt, so it is a bit slower and costlier.
    experiment_feature: str = "search"
    # The share of calls the model refuses (finish reason content_filter, or a refusal part).
    refusal_share: float = 0.012
    # Requested model → the snapshot the provider answers as, when it is not the usual one (a silent
    # model update: a `served_model` change marker).
    served_models: dict[str, str] = field(default_factory=dict)
    # The share of answers an LLM judge scores (gen_ai.evaluation.result log records).
    evaluated_share: float = 0.25


OPEN_CONVERSATIONS = 40  # conversations under way at once in the generated traffic


class Traffic:
    """Generates traces: agentic trees, RAG pipelines, streaming and reasoning calls, and failures."""

    def __init__(self, seed: int | None = None, state: TrafficState | None = None) -> None:
        self.rng = random.Random(seed)
        self.state = state or TrafficState()
        self._counter = 0
        self._variant: str | None = None  # the experiment arm of the trace being built
        self._conversation: str | None = None  # the conversation the trace being built is a turn of
        self._open_conversations: dict[str, int] = {}  # conversation id → turns it has still to take

    # -- building blocks ---------------------------------------------------------------------------

    def _messages(self, user: str, n_docs: int = 0) -> tuple[str, str]:
        rng = self.rng
        question = rng.choice(QUESTIONS).format(n=rng.randint(10000, 99999), user=user)
        system = "You are a concise, friendly assistant for an online store. Cite the policy you use."
        docs = " ".join(rng.sample(DOCUMENTS, k=min(n_docs, len(DOCUMENTS))))
        prompt = [
            {"role": "system", "parts": [{"type": "text", "content": system}]},
            {"role": "user", "parts": [{"type": "text", "content": (docs + "\n\n" if docs else "") + question}]},
        ]
        answer = rng.choice(DOCUMENTS) + " Is there anything else I can help with?"
        completion = [{"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}]
        return json.dumps(prompt), json.dumps(completion)

    def llm_call(self, spans: list[SpanSpec], parent: int, start_ns: int, model_key: str, feature: str,
                 tenant: str, user: str, base_input: int, stream: bool = True, n_docs: int = 0,
                 tool_call: str | None = None) -> int:
        """Append one LLM call (OTel GenAI semconv, current keys) and return its end offset."""
        rng = self.rng
        model = MODELS[model_key]
        prompt_id, _, _, _ = FEATURES[feature]
        version = self.state.prompt_versions[feature]
        input_tokens = int(base_input * rng.uniform(0.8, 1.25))
        if (feature, version) in self.state.heavy_versions:
            input_tokens *= 2
        treatment = self._variant == "treatment" and feature == self.state.experiment_feature
        if treatment:
            input_tokens = int(input_tokens * 1.35)
        output_tokens = rng.randint(40, 420)
        reasoning = rng.randint(300, 1800) if model.reasoning else 0
        output_tokens += reasoning
        cache_read = int(input_tokens * rng.uniform(0.5, 0.9)) if model.caches and rng.random() < 0.7 else 0
        cache_write = int(input_tokens * 0.1) if model.caches and cache_read == 0 else 0
        ttft = model.ttft_s * rng.uniform(0.6, 1.8) * (1 + input_tokens / 40_000)
        if rng.random() < 0.03:
            ttft *= rng.uniform(3, 6)  # the slow tail every provider has
        if treatment:
            ttft *= 1.3
        decode = output_tokens / (model.tokens_per_s * rng.uniform(0.7, 1.2))
        duration = int((ttft + decode) * S)
        finish = "tool_calls" if tool_call else "stop"
        prompt, completion = self._messages(user, n_docs)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": model.provider,
            "gen_ai.request.model": model.name,
            "gen_ai.request.temperature": 0.2,
            "gen_ai.request.max_tokens": 1024,
            "gen_ai.request.stream": stream,
            "gen_ai.response.model": self.state.served_models.get(model.name, model.response_name),
            "gen_ai.response.id": f"resp_{rng.getrandbits(48):012x}",
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            # One request is one turn: every call of a trace names the same conversation.
            "gen_ai.conversation.id": self._conversation or f"conv_{rng.randint(1, 400)}",
            "app.llm.prompt.template.id": prompt_id,
            "app.llm.prompt.template.version": version,
            "user.id": user,
            "server.address": {"openai": "api.openai.com", "anthropic": "api.anthropic.com",
                               "gcp.gemini": "generativelanguage.googleapis.com", "mistral_ai": "api.mistral.ai",
                               "ollama": "localhost"}[model.provider],
            "gen_ai.input.messages": prompt,
        }
        if cache_read:
            attrs["gen_ai.usage.cache_read.input_tokens"] = cache_read
        if cache_write:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = cache_write
        if reasoning:
            attrs["gen_ai.usage.reasoning.output_tokens"] = reasoning
        if stream:
            attrs["gen_ai.response.time_to_first_chunk"] = round(ttft, 4)
        error = None
        roll = rng.random()
        rate_limit_share, provider_share = self.state.error_shares.get(feature, (0.025, 0.01))
        if self.state.rate_limit_storm and feature == "checkout":
            rate_limit_share = self.state.storm_share
        if roll < rate_limit_share:
            duration = int(rng.uniform(0.05, 0.25) * S)
            attrs.update({"error.type": "RateLimitError", "http.response.status_code": 429})
            error = "Error code: 429 - Rate limit reached for requests"
            for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
                        "gen_ai.response.time_to_first_chunk", "gen_ai.usage.cache_read.input_tokens",
                        "gen_ai.usage.reasoning.output_tokens"):
                attrs.pop(key, None)
        elif roll < rate_limit_share + provider_share:
            duration = int(rng.uniform(1, 8) * S)
            overloaded = model.provider == "anthropic"
            attrs.update({"error.type": "OverloadedError" if overloaded else "InternalServerError",
                          "http.response.status_code": 529 if overloaded else 500})
            error = "Overloaded" if overloaded else "Error code: 500 - The server had an error"
            for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
                        "gen_ai.response.time_to_first_chunk"):
                attrs.pop(key, None)
        elif roll < rate_limit_share + provider_share + self.state.refusal_share * 0.6:
            finish = "content_filter"
        elif roll < rate_limit_share + provider_share + self.state.refusal_share and not tool_call:
            # A refusal the model words itself (finish "stop", an OTel `refusal` part).
            completion = json.dumps([{"role": "assistant", "parts": [{"type": "refusal",
                                      "content": "I'm sorry, but I can't share other customers' orders."}],
                                      "finish_reason": "stop"}])
            finish = "refusal_part"
        if error is None:
            attrs["gen_ai.response.finish_reasons"] = ["stop" if finish == "refusal_part" else finish]
            if finish == "refusal_part":
                pass
            elif finish == "content_filter":
                completion = json.dumps([{"role": "assistant", "parts": [{"type": "text",
                                          "content": "I can't help with that request."}],
                                          "finish_reason": "content_filter"}])
            elif tool_call:
                completion = json.dumps([{"role": "assistant", "parts": [{"type": "tool_call",
                                          "id": f"call_{rng.getrandbits(32):08x}",
                                          "name": tool_call, "arguments": {"query": "order status", "limit": 5}}],
                                          "finish_reason": "tool_call"}])
            attrs["gen_ai.output.messages"] = completion
        spans.append(SpanSpec(f"chat {model.name}", parent, start_ns, duration, attrs, error=error, kind=3))
        end = start_ns + duration
        index = len(spans) - 1
        # The app validates structured output; now and then it fails (a validation error, not an api one).
        if error is None and finish not in ("content_filter", "refusal_part") and rng.random() < 0.03:
            spans.append(SpanSpec("parse_output", parent, end + 2 * MS, 3 * MS,
                                  {"error.type": "pydantic.ValidationError", "app.llm.output.schema": "Answer"},
                                  error="1 validation error for Answer: field required"))
            end += 5 * MS
        del index
        return end

    def embedding(self, spans: list[SpanSpec], parent: int, start_ns: int, user: str) -> int:
        rng = self.rng
        duration = int(rng.uniform(0.04, 0.15) * S)
        spans.append(SpanSpec("embeddings text-embedding-3-small", parent, start_ns, duration, {
            "gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "text-embedding-3-small", "gen_ai.usage.input_tokens": rng.randint(20, 120),
            "user.id": user}, kind=3))
        return start_ns + duration

    def _next_turn(self) -> str:
        """The conversation the next request is a turn of: up to OPEN_CONVERSATIONS are under way at a
        time, each planned to last a log-uniform 1–39 turns (many short, a few long, as in a real app),
        and a finished one never takes another turn. Bounded lengths matter: the writer recomputes a
        conversation's row from its turns, so one id shared by a whole day's traffic would be unlike
        any real app (and slow to keep)."""
        rng = self.rng
        if len(self._open_conversations) < OPEN_CONVERSATIONS and (not self._open_conversations or rng.random() < 0.3):
            # Random, as a real app's ids are: two runs (a store fed twice) never share a conversation.
            conversation = f"conv_{rng.getrandbits(40):010x}"
            self._open_conversations[conversation] = int(40 ** rng.random())
        else:
            conversation = rng.choice(sorted(self._open_conversations))
        left = self._open_conversations[conversation] - 1
        if left <= 0:
            del self._open_conversations[conversation]
        else:
            self._open_conversations[conversation] = left
        return conversation

    def _request(self, feature: str, method: str, route: str, http_attributes: bool = True
                 ) -> tuple[str, str, SpanSpec]:
        """A request's tenant, user and root server span (its duration is set once the trace is built)."""
        tenant = self.rng.choice(TENANTS)
        user = f"u{self.rng.randint(1000, 9999)}"
        attrs: dict[str, Any] = {}
        if http_attributes:
            attrs = {"http.request.method": method, "http.route": route, "http.response.status_code": 200}
        attrs |= {"app.llm.feature": feature, "app.llm.tenant.id": tenant, "user.id": user}
        self._conversation = self._next_turn()
        self._variant = None
        if feature == self.state.experiment_feature:
            self._variant = self.rng.choice(("control", "treatment"))
            attrs["app.experiment.variant"] = self._variant
        return tenant, user, SpanSpec(f"{method} {route}", None, 0, 0, attrs, kind=2)

    # -- scenarios -----------------------------------------------------------------------------------

    def agentic(self, feature: str) -> Trace:
        """planner → parallel tool calls, each with a nested LLM call → composer (depth 5)."""
        rng = self.rng
        _, _, planner, worker = FEATURES[feature]
        tenant, user, root = self._request(feature, "POST", f"/{feature}/ask")
        spans = [root]
        spans.append(SpanSpec(f"invoke_agent {feature}-agent", 0, 2 * MS, 0, {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": f"{feature}-agent",
            "gen_ai.provider.name": MODELS[planner].provider}))
        t = self.llm_call(spans, 1, 5 * MS, planner, feature, tenant, user, 1800, tool_call="search_orders")
        tools = rng.sample(["search_orders", "lookup_customer", "get_policy", "check_inventory"], k=rng.randint(2, 3))
        ends = []
        for tool in tools:  # parallel siblings: they start together
            tool_start = t + rng.randint(1, 8) * MS
            tool_index = len(spans)
            spans.append(SpanSpec(f"execute_tool {tool}", 1, tool_start, 0, {
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                "gen_ai.tool.call.id": f"call_{rng.getrandbits(32):08x}",
                "gen_ai.tool.call.arguments": json.dumps({"customer": tenant, "limit": 5})}))
            inner_start = tool_start + int(rng.uniform(0.02, 0.3) * S)  # a database or API lookup first
            inner_end = self.llm_call(spans, tool_index, inner_start, worker, feature, tenant, user, 900, stream=False)
            spans[tool_index].duration_ns = inner_end + 3 * MS - tool_start
            ends.append(inner_end + 3 * MS)
        t = max(ends)
        # Support answers with a reasoning model: reasoning tokens, and a long wait for the first token.
        composer = "o4-mini" if feature == "support" else planner
        t = self.llm_call(spans, 1, t + 5 * MS, composer, feature, tenant, user, 2600)
        spans[1].duration_ns = t + 2 * MS - spans[1].start_ns
        spans[0].duration_ns = t + 6 * MS
        return Trace(feature, SERVICES[feature], spans)

    def rag(self, feature: str) -> Trace:
        """embed → retrieve → chat (streaming)."""
        rng = self.rng
        _, _, planner, _ = FEATURES[feature]
        tenant, user, root = self._request(feature, "GET", f"/{feature}")
        spans = [root]
        t = self.embedding(spans, 0, 3 * MS, user)
        retrieve = int(rng.uniform(0.01, 0.08) * S)
        spans.append(SpanSpec("retrieval products-index", 0, t + MS, retrieve, {
            "gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": "products-index",
            "gen_ai.retrieval.top_k": 5}))
        t += MS + retrieve
        t = self.llm_call(spans, 0, t + 2 * MS, planner, feature, tenant, user, 3200, n_docs=3)
        spans[0].duration_ns = t + 4 * MS
        return Trace(feature, SERVICES[feature], spans)

    def guarded(self, feature: str) -> Trace:
        """An input guardrail, then one call: the smallest trace."""
        rng = self.rng
        _, _, _, worker = FEATURES[feature]
        tenant, user, root = self._request(feature, "POST", f"/{feature}/chat", http_attributes=False)
        spans = [root]
        blocked = rng.random() < 0.04
        spans.append(SpanSpec("input-moderation", 0, 1 * MS, int(rng.uniform(0.01, 0.05) * S),
                              {"openinference.span.kind": "GUARDRAIL", "guardrail.name": "pii-and-abuse"},
                              error="blocked: prompt injection detected" if blocked else None))
        t = spans[1].end_ns
        if not blocked:
            t = self.llm_call(spans, 0, t + MS, worker, feature, tenant, user, 700)
        spans[0].duration_ns = t + 2 * MS
        return Trace(feature, SERVICES[feature], spans)

    def next_trace(self) -> Trace:
        rng = self.rng
        self._counter += 1
        feature = rng.choices(list(FEATURES), weights=(4, 3, 3, 1))[0]
        kind = rng.choices(("agentic", "rag", "guarded"), weights=(4, 4, 2))[0]
        trace: Trace = getattr(self, kind)(feature)
        self._evaluate(trace)
        return trace

    def _evaluate(self, trace: Trace) -> None:
        """Now and then an LLM judge scores the trace's last answer (a log record a second later)."""
        rng = self.rng
        if rng.random() >= self.state.evaluated_share:
            return
        calls = [i for i, s in enumerate(trace.spans)
                 if s.name.startswith("chat ") and "error.type" not in s.attributes]
        if not calls:
            return
        last = calls[-1]
        score = min(1.0, max(0.0, rng.gauss(0.82, 0.1)))
        if self._variant == "treatment":
            score = min(1.0, score + 0.05)  # the longer prompt answers a little better
        trace.evaluations.append(Evaluation(last, trace.spans[last].end_ns + S, "answer_relevance", round(score, 3)))

    def traces(self) -> Iterator[Trace]:
        while True:
            yield self.next_trace()


# --- emitting as OTLP protobuf (deterministic fixtures, benchmarks) ------------------------------------


def to_otlp_request(traces: list[tuple[Trace, int, int]], scope: tuple[str, str] = ("llmobs.demo", "1")) -> Any:
    """An ExportTraceServiceRequest of `(trace, trace_number, start_ns)`; ids derive from the number."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    from receiver.otlp import to_any_value as value

    request = ExportTraceServiceRequest()
    by_service: dict[str, Any] = {}
    for trace, number, start_ns in traces:
        scope_spans = by_service.get(trace.service)
        if scope_spans is None:
            resource_spans = request.resource_spans.add()
            resource_spans.resource.attributes.append(KeyValue(key="service.name", value=value(trace.service)))
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name, scope_spans.scope.version = scope
            by_service[trace.service] = scope_spans
        trace_id = trace_id_of(number)
        for index, spec in enumerate(trace.spans):
            span = scope_spans.spans.add()
            span.trace_id = trace_id
            span.span_id = (number % 2**40).to_bytes(5, "big") + (index + 1).to_bytes(3, "big")
            if spec.parent is not None:
                span.parent_span_id = (number % 2**40).to_bytes(5, "big") + (spec.parent + 1).to_bytes(3, "big")
            span.name = spec.name
            span.kind = spec.kind
            span.start_time_unix_nano = start_ns + spec.start_ns
            span.end_time_unix_nano = start_ns + spec.end_ns
            for key, v in spec.attributes.items():
                span.attributes.append(KeyValue(key=key, value=value(v)))
            for name, offset, attrs in spec.events:
                event = span.events.add(name=name, time_unix_nano=start_ns + offset)
                for key, v in attrs.items():
                    event.attributes.append(KeyValue(key=key, value=value(v)))
            if spec.error:
                span.status.code = 2
                span.status.message = spec.error
    return request


def to_otlp_logs_request(traces: list[tuple[Trace, int, int]], scope: tuple[str, str] = ("llmobs.demo", "1")) -> Any:
    """An ExportLogsServiceRequest of the traces' evaluations (same ids as `to_otlp_request`)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    from receiver.otlp import to_any_value as value

    request = ExportLogsServiceRequest()
    by_service: dict[str, Any] = {}
    for trace, number, start_ns in traces:
        for evaluation in trace.evaluations:
            scope_logs = by_service.get(trace.service)
            if scope_logs is None:
                resource_logs = request.resource_logs.add()
                resource_logs.resource.attributes.append(KeyValue(key="service.name", value=value(trace.service)))
                scope_logs = resource_logs.scope_logs.add()
                scope_logs.scope.name, scope_logs.scope.version = scope
                by_service[trace.service] = scope_logs
            record = scope_logs.log_records.add()
            record.time_unix_nano = start_ns + evaluation.offset_ns
            record.event_name = "gen_ai.evaluation.result"
            record.severity_number = 9
            record.trace_id = trace_id_of(number)
            record.span_id = (number % 2**40).to_bytes(5, "big") + (evaluation.span + 1).to_bytes(3, "big")
            for key, v in (("gen_ai.evaluation.name", evaluation.name),
                           ("gen_ai.evaluation.score.value", evaluation.score)):
                record.attributes.append(KeyValue(key=key, value=value(v)))
    return request


def trace_id_of(number: int) -> bytes:
    """The trace id `to_otlp_request` gives trace number `number`: scrambled like real random ids."""
    return (number * 0x9E3779B97F4A7C15 % 2**64).to_bytes(8, "big") + number.to_bytes(8, "big")
