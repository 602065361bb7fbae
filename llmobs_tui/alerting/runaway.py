"""Runaway agents: a trace (or a conversation's turns) calling the same tool with the same arguments
again and again, or an agent still running past a step, token or cost ceiling.

Spans are exported when they END, so while an agent runs the store holds its LLM and tool calls but
not its root span: "still running" is a trace whose root has not arrived (traces.root_known = 0)
that got a span within the window. Tool arguments are content, kept only in the span's stored
protobuf: a tool span whose tool repeats enough in its trace or conversation to be a loop is
digested once (tool name + a hash of its normalized arguments, ~15-45 µs of CPU) and the digest
kept by span row, so an evaluation reads only new candidates' blobs. Bounded: the window's newest
`TOOL_LIMIT` tool spans and the traces of its newest `SPAN_LIMIT` spans, through the
spans_tool_by_start and spans_by_start indexes.

What the rule does with a trace whose root has arrived: a loop still fires (a finished trace that
called a tool six times with the same arguments looped; a ticket whatever the configured
severity), a ceiling does not (the agent stopped; the trace list sorts finished traces by cost and
calls, and the budget rules watch spend). Both resolve once the trace leaves the window.

Pure of Textual and of the schema: the SQL is store/alerts.py's; the engine (a sqlite3 connection)
calls `detect`, the TUI's reader (aiosqlite) runs `queries` and hands the rows to `report`.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from store import alerts as store_alerts

NS = 1_000_000_000
TOOL_LIMIT = 5_000  # tool spans digested per evaluation at most (a warm cache reads only new ones)
SPAN_LIMIT = 20_000  # the newest spans whose traces are checked for a ceiling
ARGUMENTS_PREVIEW = 48  # characters of the arguments a finding's detail shows; never all of them
MAX_FINDINGS = 10  # per kind, worst first: a storm of loops is one screen, not hundreds of alerts


@dataclass(slots=True)
class Runaway:
    """One looping trace or conversation, or one running trace over a ceiling."""

    kind: str  # "loop" (one trace) | "conversation" (across its turns) | "ceiling"
    trace_id: bytes  # the trace to open: the loop's latest repetition, or the running trace
    span_id: bytes | None  # the span to open it on: the latest repetition, or the latest step
    running: bool  # the trace (for a conversation: one of its turns) has no root yet
    name: str  # the tool (loops) or the trace's name so far (ceilings): untrusted, Text only
    repeats: int = 0
    digest: str = ""  # a hash of tool + normalized arguments: the loop's identity
    arguments: str = ""  # the arguments, cut to ARGUMENTS_PREVIEW characters
    conversation_id: str | None = None
    turns: int = 1  # conversation loops: the traces the repetitions spread over
    steps: int = 0  # LLM calls + tool calls so far
    tokens: int = 0
    cost_nusd: int = 0
    over: tuple[str, ...] = ()  # ceilings passed, e.g. ("62 steps > 50", "$1.20 > $1.00")
    ratio: float = 0.0  # how far over its threshold (repeats / repeats threshold, value / ceiling)

    @property
    def key(self) -> str:
        if self.kind == "ceiling":
            return f"runaway:ceiling:{self.trace_id.hex()}"
        if self.kind == "conversation":
            return f"runaway:conversation:{self.conversation_id}:{self.digest}"
        return f"runaway:loop:{self.trace_id.hex()}:{self.digest}"

    def summary(self) -> str:
        """One line of plain text (the caller renders it as Text: the names are untrusted)."""
        state = "running" if self.running else "finished"
        if self.kind == "ceiling":
            return f"{self.name} · {' · '.join(self.over)} · running"
        where = f"across {self.turns} turns" if self.kind == "conversation" else state
        return f"{self.name} ×{self.repeats} same arguments #{self.digest[:8]} · {where}"


@dataclass(slots=True)
class RunawayReport:
    over_ceiling: list[Runaway] = field(default_factory=list)  # running traces past a ceiling, worst first
    looping: list[Runaway] = field(default_factory=list)  # trace and conversation loops, worst first
    tool_spans: int = 0  # tool spans looked at
    candidates: int = 0  # of them, tool spans whose tool repeats enough to be a loop (the ones digested)
    digested: int = 0  # of those, digested by this evaluation (the others were known)
    capped: bool = False  # the window held more tool spans than TOOL_LIMIT: only the newest were seen

    @property
    def worst(self) -> list[Runaway]:
        """Running ones first, then the most over their threshold."""
        return sorted(self.over_ceiling + self.looping, key=lambda r: (not r.running, -r.ratio, r.key))

    def __bool__(self) -> bool:
        return bool(self.over_ceiling or self.looping)


def _digest(tool: str, arguments: str) -> str:
    return hashlib.blake2b(f"{tool}\0{arguments}".encode(), digest_size=8).hexdigest()


def _preview(arguments: str) -> str:
    return arguments if len(arguments) <= ARGUMENTS_PREVIEW else arguments[:ARGUMENTS_PREVIEW - 1] + "…"


def _candidates(settings: Any, tools: Sequence[tuple]) -> list[tuple]:
    """The tool span rows that could be part of a loop: their tool is called at least `repeats`
    times in their trace, or `conversation_repeats` times in their conversation. Only these are
    digested: in ordinary traffic a trace calls a tool once or twice, so most tool spans never
    cost a blob read (~15-45 µs each), and under heavy ingest the window's newest TOOL_LIMIT tool
    spans would otherwise all be new at every evaluation."""
    repeats = settings.runaway_repeats or float("inf")
    across = settings.runaway_conversation_repeats or float("inf")
    per_trace = Counter((r[1], r[3]) for r in tools)
    per_conversation = Counter((r[6], r[3]) for r in tools if r[6] is not None)
    return [r for r in tools if per_trace[(r[1], r[3])] >= repeats
            or (r[6] is not None and per_conversation[(r[6], r[3])] >= across)]


class RunawayDetector:
    """The rule's reads and its arithmetic, with the digests of the tool spans already seen.

    One detector per connection that evaluates (the engine's, the TUI reader's): its calls do not
    overlap. `digests` maps a span row id to (span id, tool name, digest and arguments preview, or
    None and None when the span carries no arguments); it keeps
    only the spans of the last evaluation, so it holds at most TOOL_LIMIT entries."""

    def __init__(self) -> None:
        self._digests: dict[int, tuple[bytes, str, str | None, str | None]] = {}
        self._raw_after = 0  # every tool span row above this id arrived after the last evaluation
        # On ClickHouse, where a read's rows have no ids: the last evaluation's digests by (trace id, span id).
        self._digests_by_span: dict[tuple[bytes, bytes], tuple[bytes, str, str | None, str | None]] = {}
        self.last_cpu_ms = 0.0  # CPU of the last `report` (the thread's), for the benchmark

    def queries(self, settings: Any, now_s: float) -> dict[str, tuple[str, tuple]]:
        since_ns = int((now_s - settings.runaway_window_s) * NS)
        queries = {}
        if settings.runaway_repeats or settings.runaway_conversation_repeats:
            queries["tools"] = store_alerts.runaway_tool_calls_query(since_ns, self._raw_after, TOOL_LIMIT)
        if settings.runaway_max_steps or settings.runaway_max_tokens or settings.runaway_max_cost_usd:
            queries["running"] = store_alerts.running_traces_query(since_ns, SPAN_LIMIT)
        return queries

    def missing(self, settings: Any, rows: Mapping[str, Sequence[tuple]]) -> list[int]:
        """Candidate tool span rows neither digested before nor read with their blob (a span that
        became a candidate after it arrived, or was past TOOL_LIMIT then): the caller reads them with
        store_alerts.span_raws_query."""
        return [r[0] for r in _candidates(settings, rows.get("tools", ()))
                if r[7] is None and r[0] <= self._raw_after and self._known(r) is None]

    def _known(self, row: tuple) -> tuple[bytes, str, str | None, str | None] | None:
        known = self._digests.get(row[0])
        # Keyed by row id; the span id guards against a row id reused after its span was evicted.
        return known if known is not None and known[0] == row[2] else None

    def report(self, settings: Any, now_s: float, rows: Mapping[str, Sequence[tuple]],
               raws: Mapping[int, bytes | None] | None = None, compressed: bool = True) -> RunawayReport:
        """The findings from `queries`' rows (and `raws`: the blobs of `missing`'s rows; `compressed`: in the
        SQLite store's zstd form, else plain as ClickHouse keeps them)."""
        cpu = time.thread_time()
        report = RunawayReport()
        tools = rows.get("tools", ())
        if tools:
            self._loops(settings, tools, raws or {}, report, compressed)
        self._ceilings(settings, rows.get("running", ()), report)
        self.last_cpu_ms = (time.thread_time() - cpu) * 1000
        return report

    def detect(self, db: Any, settings: Any, now_s: float) -> RunawayReport:
        """`queries` → `missing` → `report` on a sqlite3 connection (the caller holds the read snapshot)."""
        rows = {name: db.execute(sql, params).fetchall()
                for name, (sql, params) in self.queries(settings, now_s).items()}
        missing = self.missing(settings, rows)
        raws = dict(db.execute(*store_alerts.span_raws_query(missing)).fetchall()) if missing else {}
        return self.report(settings, now_s, rows, raws)

    def detect_clickhouse(self, client: Any, settings: Any, now_s: float) -> RunawayReport:
        """`detect` on a ClickHouse store (store.clickhouse.alerts.runaway_rows): the same rows, the blobs
        of the candidates not digested by the last evaluation read with them. A read's rows have no ids
        there (a row's id is its place in the read), so the digests are carried over by span: reading the
        blobs is most of an evaluation (100 ms for 5,000 candidates at 100M spans), and a span's arguments
        do not change."""
        from store.clickhouse.alerts import runaway_rows

        before = self._digests_by_span
        rows, raws = runaway_rows(client, self.queries(settings, now_s), int((now_s - settings.runaway_window_s) * NS),
                                  TOOL_LIMIT, SPAN_LIMIT,
                                  lambda tools: [r for r in _candidates(settings, tools) if (r[1], r[2]) not in before])
        tools = rows.get("tools", ())
        self._digests = {r[0]: before[(r[1], r[2])] for r in tools if (r[1], r[2]) in before}
        self._raw_after = 0
        report = self.report(settings, now_s, rows, raws, compressed=False)
        self._digests_by_span = {(r[1], r[2]): self._digests[r[0]] for r in tools if r[0] in self._digests}
        return report

    # -- loops -------------------------------------------------------------------------------------

    def _loops(self, settings: Any, tools: Sequence[tuple], raws: Mapping[int, bytes | None],
               report: RunawayReport, compressed: bool) -> None:
        digests: dict[int, tuple[bytes, str, str | None, str | None]] = {}
        # Newest first (the query's order): the first span of a group is its latest repetition.
        per_trace: dict[tuple[bytes, str], list[tuple]] = {}
        per_conversation: dict[tuple[str, str], list[tuple]] = {}
        arguments_of: dict[str, str] = {}
        for row in _candidates(settings, tools):
            row_id, trace_id, span_id, tool, _start, _root_known, conversation, raw = row
            known = self._known(row)
            if known is None:
                if raw is None and row_id not in raws:
                    continue  # its blob was not read (a superseded read raced this one): `missing` asks next time
                text = store_alerts.tool_arguments_text(raw if raw is not None else raws[row_id], compressed)
                name = tool or "tool"
                known = (span_id, name, None if text is None else _digest(name, text),
                         None if text is None else _preview(text))
                report.digested += 1
            digests[row_id] = known
            digest = known[2]
            if digest is None:
                continue  # no arguments stored: "the same arguments" cannot be claimed
            arguments_of.setdefault(digest, known[3] or "")
            per_trace.setdefault((trace_id, digest), []).append(row)
            if conversation is not None:
                per_conversation.setdefault((conversation, digest), []).append(row)
        self._digests = digests
        self._raw_after = max(self._raw_after, max(r[0] for r in tools))
        report.tool_spans = len(tools)
        report.candidates = len(digests)
        report.capped = len(tools) >= TOOL_LIMIT
        threshold = settings.runaway_repeats or float("inf")
        for (trace_id, digest), calls in per_trace.items():
            if len(calls) >= threshold:
                latest = calls[0]
                report.looping.append(Runaway(
                    "loop", trace_id, latest[2], running=latest[5] == 0, name=digests[latest[0]][1],
                    repeats=len(calls), digest=digest, arguments=arguments_of[digest],
                    conversation_id=latest[6], ratio=len(calls) / threshold))
        across = settings.runaway_conversation_repeats or float("inf")
        for (conversation, digest), calls in per_conversation.items():
            turns = {c[1] for c in calls}
            if len(calls) < across or len(turns) < 2:
                continue
            # A single turn already looping on these arguments is that trace's finding, not a second one.
            if any(sum(1 for c in calls if c[1] == t) >= threshold for t in turns):
                continue
            latest = calls[0]
            report.looping.append(Runaway(
                "conversation", latest[1], latest[2], running=any(c[5] == 0 for c in calls),
                name=digests[latest[0]][1], repeats=len(calls), digest=digest,
                arguments=arguments_of[digest], conversation_id=conversation, turns=len(turns),
                ratio=len(calls) / across))
        report.looping.sort(key=lambda r: (not r.running, -r.ratio, r.key))

    # -- ceilings ----------------------------------------------------------------------------------

    @staticmethod
    def _ceilings(settings: Any, running: Sequence[tuple], report: RunawayReport) -> None:
        for (trace_id, root_name, llm_calls, tool_calls, tokens, cost, _start, _end, conversation,
             last_span) in running:
            steps = (llm_calls or 0) + (tool_calls or 0)
            over, ratios = [], []
            if settings.runaway_max_steps and steps > settings.runaway_max_steps:
                over.append(f"{steps:,} steps > {settings.runaway_max_steps:,}")
                ratios.append(steps / settings.runaway_max_steps)
            if settings.runaway_max_tokens and (tokens or 0) > settings.runaway_max_tokens:
                over.append(f"{tokens:,} tokens > {settings.runaway_max_tokens:,}")
                ratios.append(tokens / settings.runaway_max_tokens)
            ceiling_nusd = settings.runaway_max_cost_usd * 1e9
            if ceiling_nusd and (cost or 0) > ceiling_nusd:
                over.append(f"${cost / 1e9:,.2f} > ${settings.runaway_max_cost_usd:,.2f}")
                ratios.append(cost / ceiling_nusd)
            if over:
                report.over_ceiling.append(Runaway(
                    "ceiling", trace_id, last_span, running=True, name=root_name or "trace", steps=steps,
                    tokens=tokens or 0, cost_nusd=cost or 0, over=tuple(over), conversation_id=conversation,
                    ratio=max(ratios)))
        report.over_ceiling.sort(key=lambda r: (-r.ratio, r.key))
