"""A deterministic store for the TUI's tests, snapshots and screenshots.

An hour of seeded demo traffic ending at FROZEN_NOW, written through the real normalizer and
writer, plus hand-made traces: hostile text (markup, escape sequences, RTL), a prompt-version
regression, and a trace with log records. Before it, the same length of traffic just before (the
"previous period") and exactly a week earlier ("last week"), so comparisons have a past: both with
the old prompt version, fewer refusals and the usual model snapshot. Every period has an A/B test on
search (control/treatment) and LLM-judge scores as log records. The planted changes happen at known
instants (PLANTED_CHANGE_S, SERVED_MODEL_CHANGE_S). Same seed, same file, same pictures.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from llmobs_tui.scenarios import (
    MS,
    S,
    SpanSpec,
    Trace,
    Traffic,
    TrafficState,
    to_otlp_logs_request,
    to_otlp_request,
    trace_id_of,
)
from receiver.normalize import Normalizer
from store.content_index import ContentIndexer
from store.pricing import record_price_rows
from store.writer import SpanWriter
from tests.metrics_factory import serving_requests, write_metrics
from tests.otlp_factory import log_record, logs_request
from tests.store_writing import writing

FROZEN_NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z
HOSTILE_TRACE_NUMBER = 900_001
LOGGED_TRACE_NUMBER = 900_002
PLANTED_CHANGE_TRACE_NUMBER = 900_003
SERVED_MODEL_TRACE_NUMBER = 900_004
WEEK_S = 7 * 86400
# The planted changes (default 60-minute build): support's prompt goes v7 → v8 (a changes row with
# exactly this time: the first v8 call starts here), and gpt-4o-mini starts answering as a new snapshot.
PLANTED_CHANGE_S = FROZEN_NOW - 20 * 60
PLANTED_PROMPT = ("support-answer", "v7", "v8")
SERVED_MODEL_CHANGE_S = FROZEN_NOW - 10 * 60
SERVED_MODEL = ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4o-mini-2025-01-15")
# Refusal shares: the current period refuses more than the past (the drift panel's example).
REFUSAL_SHARE_NOW = 0.04
REFUSAL_SHARE_PAST = 0.01


def use_utc() -> None:
    """Clock text and 'today' depend on the local zone: pin it for reproducible pictures."""
    os.environ["TZ"] = "UTC"
    time.tzset()


def hostile_trace() -> Trace:
    """Untrusted text that must render literally (issue: markup, escapes, box drawing, RTL)."""
    prompt = json.dumps([{"role": "user", "parts": [{"type": "text", "content":
                          "┌─┐ boxed ╚═╝ and RTL \u202eevil\u202c עברית مرحبا [red]not markup[/red] \x1b[31mred\x1b[0m"}]}])
    spans = [
        SpanSpec("[bold red]boom[/]", None, 0, 900 * MS, {"app.llm.feature": "support", "app.llm.tenant.id": "acme",
                                                          "note": "\x1b[2J\x1b[H cleared?"}, kind=2),
        SpanSpec("chat gpt-4o \x1b]0;pwned\x07", 0, 10 * MS, 850 * MS, {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 12, "gen_ai.input.messages": prompt,
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                {"type": "text", "content": "[link=https://evil.example]click[/link] ok"}]}])}, kind=3),
    ]
    return Trace("support", "support-bot", spans)


def build_store(path: Path, *, minutes: int = 60, traces_per_minute: int = 12, seed: int = 7,
                history: bool = True) -> Path:
    """Write the fixture store at `path` (replacing it) and return the path. `history`: also the
    same length of traffic before it and a week before it."""
    for suffix in ("", "-wal", "-shm", ".lock"):
        try:
            os.remove(f"{path}{suffix}")
        except FileNotFoundError:
            pass
    with writing(path, int(FROZEN_NOW * S)) as (normalizer, writer, db):
        # As the writer process does at start: the rows the Cost tab shows.
        record_price_rows(db, normalizer.prices.records(), int(FROZEN_NOW * S))
        state = TrafficState()
        traffic = Traffic(seed, state)
        total = minutes * traces_per_minute
        start = FROZEN_NOW - minutes * 60
        if history:
            # Oldest first, as a live store fills: last week's window, then the previous period.
            state.refusal_share = REFUSAL_SHARE_PAST
            for offset, first_number in ((WEEK_S, 2_000_000), (minutes * 60, 1_000_000)):
                batch = []
                for i in range(total):
                    batch.append((traffic.next_trace(), first_number + i,
                                  int((start - offset + i * 60 / traces_per_minute) * S)))
                    if len(batch) == 50:
                        _write(writer, normalizer, batch)
                        batch = []
                _write(writer, normalizer, batch)
        state.refusal_share = REFUSAL_SHARE_NOW
        batch: list = []
        for i in range(total):
            at = start + i * 60 / traces_per_minute
            if i == total * 2 // 3:
                # A new prompt version doubles input tokens for support, and checkout hits a 429 storm.
                state.prompt_versions["support"] = "v8"
                state.heavy_versions.add(("support", "v8"))
                state.rate_limit_storm = True
                batch.append((_one_call_trace(traffic, "support", "gpt-4o-mini"), PLANTED_CHANGE_TRACE_NUMBER,
                              int(PLANTED_CHANGE_S * S) if minutes == 60 and traces_per_minute == 12
                              else int(at * S)))
            if i == total * 5 // 6:
                state.served_models[SERVED_MODEL[0]] = SERVED_MODEL[2]
                batch.append((_one_call_trace(traffic, "support", "gpt-4o-mini"), SERVED_MODEL_TRACE_NUMBER,
                              int(SERVED_MODEL_CHANGE_S * S) if minutes == 60 and traces_per_minute == 12
                              else int(at * S)))
            trace = traffic.next_trace()
            batch.append((trace, i + 1, int(at * S)))
            if len(batch) >= 50:
                _write(writer, normalizer, batch)
                batch = []
        batch.append((hostile_trace(), HOSTILE_TRACE_NUMBER, int((FROZEN_NOW - 90) * S)))
        logged = traffic.rag("search")
        batch.append((logged, LOGGED_TRACE_NUMBER, int((FROZEN_NOW - 60) * S)))
        _write(writer, normalizer, batch)
        # Log records joined to the logged trace's chat span: the Events & logs tab shows them.
        chat_index = next(i for i, s in enumerate(logged.spans) if s.name.startswith("chat "))
        trace_id = trace_id_of(LOGGED_TRACE_NUMBER)
        span_id = (LOGGED_TRACE_NUMBER % 2**40).to_bytes(5, "big") + (chat_index + 1).to_bytes(3, "big")
        records = [log_record(event_name="gen_ai.choice", time_ns=int((FROZEN_NOW - 59) * S),
                              body={"index": 0, "finish_reason": "stop", "message": {"content": "Here is the policy."}})]
        for record in records:
            record.trace_id = trace_id
            record.span_id = span_id
        rows, resources, scopes, _ = normalizer.decode_logs(logs_request(records), int(FROZEN_NOW * S))
        writer.write([], rows, resources, scopes)
        # As the writer process does after acknowledging: the content searched by text: terms.
        ContentIndexer(db).run(deadline_s=600)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # A model server's queue, KV cache and GPUs, and the app's GenAI client metrics (screen 8, and
    # the Overview's Saturation card).
    write_metrics(path, serving_requests(FROZEN_NOW, minutes), FROZEN_NOW)
    return path


def _one_call_trace(traffic: Traffic, feature: str, model: str) -> Trace:
    """A request whose one call starts with the trace: a planted change's time is the trace's start."""
    root = SpanSpec(f"POST /{feature}/chat", None, 0, 0, {"app.llm.feature": feature, "app.llm.tenant.id": "acme"},
                    kind=2)
    spans = [root]
    end = traffic.llm_call(spans, 0, 0, model, feature, "acme", "u1000", 700, stream=False)
    root.duration_ns = end + 2 * MS
    return Trace(feature, "support-bot", spans)


def _write(writer: SpanWriter, normalizer: Normalizer, batch: list) -> None:
    if not batch:
        return
    rows, resources, scopes, rejections = normalizer.decode_traces(to_otlp_request(batch), int(FROZEN_NOW * S))
    assert rejections.count == 0, rejections.message()
    writer.write(rows, [], resources, scopes)
    # The LLM judge's scores, after the spans they score (as an evaluator runs after the answer).
    log_rows, resources, scopes, rejections = normalizer.decode_logs(to_otlp_logs_request(batch), int(FROZEN_NOW * S))
    assert rejections.count == 0, rejections.message()
    if log_rows:
        writer.write([], log_rows, resources, scopes)


