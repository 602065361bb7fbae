"""`traces` and `show`: the trace list and one trace's span tree, read from the store, for a script, a
coding agent or a person at a shell. The same filter language as `/` in the TUI
(llmobs_tui/filtering.py), the same queries as the Traces and Trace screens (store/dashboards.py) and
the same critical path (llmobs_tui/critical_path.py), so the command line and the screens agree.
Read-only: both run beside a `serve` or a TUI that writes the store.

Text output is for reading: every name, model and error message from the store is cleaned of control
characters (llmobs_tui/format.py `clean`), so a span named `\\x1b[2J` cannot clear the terminal, and
colour is used only on a terminal without NO_COLOR. JSON output is for `jq`, with stable keys: ids
as lowercase hex, times as ISO-8601 UTC plus `*_ns`, durations as `*_ms` (float) and `*_ns`
(integer), costs as `*_usd` (null when unpriced), missing values as null. The keys are documented
where a user reads them, in `--help` (cli/parser.py TRACES_JSON_HELP, SHOW_JSON_HELP), and
tests/test_headless.py holds the output to that list.

Totals (`llm_calls`, tokens, cost) count billed calls only, as the trace header and the summary row
do: a wrapper span around an SDK call is not counted twice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from llmobs_tui import format as fmt
from llmobs_tui.cli.common import EXIT_OK, EXIT_USAGE, fail
from llmobs_tui.settings import Settings

if TYPE_CHECKING:
    from llmobs_tui.critical_path import CriticalPath
    from store.backends import ClickHouseReader
    from store.connection import Connection
    from store.content_index import TextMatch
    from store.dashboards import SpanRow, TraceRow

NS = 1_000_000_000
# The command's "now", which the window counts back from; tests pin it to their store's clock.
clock: Callable[[], float] = time.time

# The most candidates an ambiguous prefix lists before "and more".
AMBIGUOUS_SHOWN = 5
# Names in text output: at most this many cells (the JSON has them whole); on a terminal, less if
# the line would not fit.
NAME_CELLS = 60
# Tree indentation beyond this many cells is elided (`┆`) so a 2,000-deep chain keeps its names.
INDENT_CELLS = 32
CRITICAL_MARK = "*"

SGR_RED = "\x1b[31m"
SGR_BOLD = "\x1b[1m"
SGR_RESET = "\x1b[0m"


# --- traces --------------------------------------------------------------------------------------


def cmd_traces(settings: Settings) -> int:
    from llmobs_tui.filtering import FilterError, parse
    from store.connection import DatabaseError, StoreError, describe_error, read_snapshot
    from store.content_index import indexing_off_query, lag_query, parse_text_matches, text_matches_query
    from store.dashboards import parse_traces, traces_query

    try:
        flt = parse(settings.filter_text)
    except FilterError as exc:
        return fail(f"--filter: {fmt.clean(exc)}", EXIT_USAGE)
    now_s = clock()
    query = traces_query(settings.window_s, now_s, flt.where, flt.params, settings.sort,
                         not settings.ascending, settings.limit)
    matches: dict[bytes, TextMatch] | None = None
    lag: tuple[int, int] | None = None
    off_reason = ""
    if settings.store_url is not None:
        try:
            reader = _clickhouse(settings)
            try:
                rows = reader.trace_list(settings.window_s, now_s, settings.sort, not settings.ascending,
                                         settings.limit, flt.terms, flt.inverted)
                if flt.text_search is not None:
                    result = reader.text_matches([row.trace_id for row in rows], now_s - settings.window_s,
                                                 flt.positive_searches, flt.text_search)
                    matches, lag = result.matches, (0, 0)
            finally:
                reader.close()
        except StoreError as exc:
            return fail(str(exc))
    else:
        try:
            db = _open(settings)
            try:
                with read_snapshot(db):
                    rows = parse_traces(db.execute(query.sql, query.params).fetchall())
                    if flt.text_search is not None:
                        # Where each listed trace matched, and what the index has not reached yet (a
                        # `text:` search cannot find it): the Traces screen shows both too.
                        sql, params = lag_query()
                        spans_behind, logs_behind = db.execute(sql, params).fetchone()
                        lag = (spans_behind or 0, logs_behind or 0)
                        sql, params = indexing_off_query()
                        off_reason = db.execute(sql, params).fetchone()[0]
                        matches = {}
                        if rows:
                            sql, params = text_matches_query(flt.text_search, [row.trace_id for row in rows])
                            matches = parse_text_matches(db.execute(sql, params).fetchall())
            finally:
                db.close()
        except StoreError as exc:
            return fail(str(exc))
        except DatabaseError as exc:
            return fail(describe_error(settings.db_path, exc))
    if off_reason:
        print(f"note: the search index is off ({fmt.clean(off_reason)}): content stored since is not searchable",
              file=sys.stderr)
    elif lag and any(lag):
        print(f"note: {fmt.plural(lag[0], 'span')} and {fmt.plural(lag[1], 'log record')} are not indexed yet; "
              "text: cannot find them until they are", file=sys.stderr)
    if settings.output_format == "json":
        print(json.dumps(traces_json(rows, settings, now_s, matches, lag), indent=2, ensure_ascii=True))
        return EXIT_OK
    if not rows:
        matching = f" matching {fmt.clean(settings.filter_text, limit=200)}" if not flt.empty else ""
        print(f"no traces started in the last {fmt.window_label(settings.window_s)}{matching}")
        return EXIT_OK
    headers: tuple[str, ...] = TRACE_HEADERS
    cells = [_trace_cells(row) for row in rows]
    if matches is not None:
        headers = (*headers, "MATCH")
        for row, line in zip(rows, cells, strict=True):
            line.append(match_cell(matches.get(row.trace_id)))
    print(render_table(headers, cells, TRACE_RIGHT, flexible=2, colour=colour_enabled(sys.stdout),
                       width=_terminal_width(sys.stdout)))
    if len(rows) == settings.limit:
        print(f"note: the first {settings.limit} traces by {settings.sort}; more may match (raise --limit)",
              file=sys.stderr)
    return EXIT_OK


TRACE_HEADERS = ("TRACE", "START", "ROOT", "SERVICE", "DURATION", "SPANS", "CALLS", "TOKENS", "COST", "STATUS")
TRACE_RIGHT = frozenset({4, 5, 6, 7, 8})
# A `text:` match in the table: this many characters of the snippet, the first match after at most
# a quarter of them, each match between « ».
MATCH_CHARS = 60


def _trace_cells(row: TraceRow) -> list[Cell]:
    status = trace_status(row)
    return [row.trace_id.hex(), iso_time(row.start_ns, "seconds"), fmt.clean(row.root_name or "?", limit=200),
            fmt.clean(row.service or "–", limit=200), fmt.duration(row.duration_ns), str(row.spans),
            str(row.llm_calls), fmt.tokens(row.input_tokens + row.output_tokens),
            fmt.money(row.cost_nusd) + (f" +{row.unpriced_calls} unpriced" if row.unpriced_calls else ""),
            (status, SGR_RED) if row.failed else status]


def match_cell(match: TextMatch | None) -> str:
    """The snippet of a `text:` match, cleaned, the matches between « », cut to MATCH_CHARS with the
    first match in view. `…` alone: matched through content the snippet query did not reach."""
    from store.content_index import snippet_parts

    if match is None:
        return "…"
    parts = [(fmt.clean(piece, limit=None), matched) for piece, matched in snippet_parts(match.snippet)]
    text = "".join(f"«{piece}»" if matched else piece for piece, matched in parts)
    lead = 0  # the characters before the first match (the content may hold a « of its own)
    for piece, matched in parts:
        if matched:
            break
        lead += len(piece)
    skip = max(0, lead - MATCH_CHARS // 4)
    if skip:
        text = "…" + text[skip + 1:]
    return text if len(text) <= MATCH_CHARS else text[:MATCH_CHARS - 1] + "…"


def match_json(match: TextMatch | None) -> dict[str, Any] | None:
    from store.content_index import snippet_parts

    if match is None:
        return None
    parts = snippet_parts(match.snippet)
    return {"span_id": match.span_id.hex() if match.span_id else None,
            "snippet": "".join(piece for piece, _ in parts),
            "matched": [piece for piece, matched in parts if matched]}


def trace_status(row: TraceRow) -> str:
    """`ok`, or `error (2 api, 1 validation)`: the error classes kept apart, as the screens do."""
    if not row.failed:
        return "ok"
    parts = [f"{n} {name}" for name, n in (("api", row.errors_api), ("validation", row.errors_validation),
                                            ("guardrail", row.errors_guardrail)) if n]
    return f"error ({', '.join(parts) or fmt.plural(row.error_spans, 'failed span')})"


def traces_json(rows: Sequence[TraceRow], settings: Settings, now_s: float,
                matches: dict[bytes, TextMatch] | None = None, lag: tuple[int, int] | None = None) -> dict[str, Any]:
    """`matches` and `lag`: with a `text:` search, where each trace matched and what is not indexed yet."""
    start_s = now_s - settings.window_s
    return {
        "window": {"seconds": settings.window_s, "from": iso_time(int(start_s * NS)), "to": iso_time(int(now_s * NS))},
        "filter": settings.filter_text,
        "sort": settings.sort,
        "descending": not settings.ascending,
        "limit": settings.limit,
        "text_index_lag": {"spans": lag[0], "logs": lag[1]} if lag is not None else None,
        "traces": [{
            "trace_id": row.trace_id.hex(),
            "start": iso_time(row.start_ns),
            "start_ns": row.start_ns,
            "root": row.root_name,
            "service": row.service,
            "duration_ms": _ms(row.duration_ns),
            "duration_ns": row.duration_ns,
            "spans": row.spans,
            "llm_calls": row.llm_calls,
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
            "cost_usd": row.cost_nusd / 1e9,
            "unpriced_calls": row.unpriced_calls,
            "errors": {"api": row.errors_api, "validation": row.errors_validation,
                       "guardrail": row.errors_guardrail, "spans": row.error_spans},
            "failed": row.failed,
            "feature": row.feature,
            "tenant": row.tenant,
            "models": row.models.split(",") if row.models else [],
            "match": match_json(matches.get(row.trace_id)) if matches is not None else None,
        } for row in rows],
    }


# --- show ----------------------------------------------------------------------------------------


def cmd_show(settings: Settings) -> int:
    from llmobs_tui.critical_path import analyse
    from store.connection import DatabaseError, StoreError, describe_error, read_snapshot
    from store.dashboards import (
        normalize_trace_id_prefix,
        parse_spans,
        parse_trace_prefix,
        trace_prefix_query,
        trace_spans_query,
    )

    prefix = normalize_trace_id_prefix(settings.trace_id)
    if prefix is None:
        return fail(f"{settings.trace_id!r} is not a trace id: give its hex digits (up to 32; a prefix will do)",
                    EXIT_USAGE)
    store_name = str(settings.db_path)
    try:
        if settings.store_url is not None:
            reader = _clickhouse(settings)
            store_name = reader.name
            try:
                ids = reader.trace_ids_with_prefix(prefix, AMBIGUOUS_SHOWN)
                spans = reader.trace_spans(ids[0]) if len(ids) == 1 else []
            finally:
                reader.close()
        else:
            db = _open(settings)
            try:
                with read_snapshot(db):
                    found = trace_prefix_query(prefix, AMBIGUOUS_SHOWN)
                    ids = parse_trace_prefix(db.execute(found.sql, found.params).fetchall())
                    spans = []
                    if len(ids) == 1:
                        query = trace_spans_query(ids[0])
                        spans = parse_spans(db.execute(query.sql, query.params).fetchall())
            finally:
                db.close()
    except StoreError as exc:
        return fail(str(exc))
    except DatabaseError as exc:
        return fail(describe_error(settings.db_path, exc))
    if not ids:
        what = f"trace {prefix}" if len(prefix) == 32 else f"trace starting with {prefix}"
        return fail(f"no {what} in {store_name} (evicted by retention, or never received)")
    if len(ids) > 1:
        shown = ", ".join(i.hex() for i in ids[:AMBIGUOUS_SHOWN])
        more = " and more" if len(ids) > AMBIGUOUS_SHOWN else ""
        return fail(f"trace id prefix {prefix} is ambiguous: it starts {shown}{more}; give more of the id",
                    EXIT_USAGE)
    if not spans:
        return fail(f"trace {ids[0].hex()} has no stored spans in {store_name}")
    trace = TraceView(ids[0], spans, analyse(spans))
    if settings.output_format == "json":
        print(json.dumps(trace.as_json(), indent=2, ensure_ascii=True))
    else:
        print(trace.render(colour=colour_enabled(sys.stdout), width=_terminal_width(sys.stdout)))
    return EXIT_OK


@dataclass(frozen=True, slots=True)
class TreeRow:
    span: SpanRow
    depth: int
    prefix: str  # the tree's guide lines before the name: `│ ├─`


def tree_rows(spans: Sequence[SpanRow]) -> list[TreeRow]:
    """Every span once, in tree order as the waterfall draws it: children by start time under their
    parent; a span whose parent was not received is a root. Iterative (a 2,000-deep chain must not
    hit the recursion limit); spans in a parent cycle, which no root reaches, follow as roots."""
    present = {s.span_id for s in spans}
    ordered = sorted(spans, key=lambda s: (s.start_ns, s.id))
    children: dict[bytes | None, list[SpanRow]] = {}
    for span in ordered:
        parent = span.parent_span_id
        if parent not in present or parent == span.span_id:
            parent = None
        children.setdefault(parent, []).append(span)
    rows: list[TreeRow] = []
    emitted: set[int] = set()
    stack: list[tuple[SpanRow, int, str, bool]] = []

    def push(kids: list[SpanRow], depth: int, prefix: str) -> None:
        for i in range(len(kids) - 1, -1, -1):
            stack.append((kids[i], depth, prefix, i == len(kids) - 1))

    def drain() -> None:
        while stack:
            span, depth, prefix, last = stack.pop()
            if id(span) in emitted:
                continue  # a repeated span id lists the same children: show them once
            emitted.add(id(span))
            branch = ("└─" if last else "├─") if depth else ""
            rows.append(TreeRow(span, depth, prefix + branch))
            push(children.get(span.span_id, []), depth + 1, prefix + (("  " if last else "│ ") if depth else ""))

    push(children.get(None, []), 0, "")
    drain()
    for span in ordered:
        if id(span) not in emitted:
            stack.append((span, 0, "", True))
            drain()
    return rows


class TraceView:
    """One trace's figures, computed once for the tree and the JSON."""

    def __init__(self, trace_id: bytes, spans: list[SpanRow], path: CriticalPath) -> None:
        self.trace_id = trace_id
        self.spans = spans
        self.path = path
        self.rows = tree_rows(spans)
        self.root = next((s for s in spans if s.parent_span_id is None), self.rows[0].span)
        self.t0 = min(s.start_ns for s in spans)
        self.t1 = max(max(s.end_ns, s.start_ns) for s in spans)
        self.calls = [s for s in spans if s.billed]
        self.cost_nusd = sum(s.cost_nusd or 0 for s in self.calls)
        self.unpriced = sum(1 for s in self.calls if s.cost_nusd is None)
        self.input_tokens = sum(s.input_tokens or 0 for s in self.calls)
        self.output_tokens = sum(s.output_tokens or 0 for s in self.calls)
        self.failed = sum(1 for s in spans if s.failed)

    # -- text ----------------------------------------------------------------------------------

    def header(self) -> list[str]:
        from llmobs_tui.critical_path import contributor_parts

        service = f"  service {fmt.clean(self.root.service, limit=200)}" if self.root.service else ""
        lines = [f"trace {self.trace_id.hex()}  {fmt.clean(self.root.name, limit=200)}{service}"]
        totals = (f"started {iso_time(self.t0)}  {fmt.duration(self.t1 - self.t0)}  "
                  f"{fmt.plural(len(self.spans), 'span')}  {fmt.plural(len(self.calls), 'LLM call')}  "
                  f"{fmt.tokens(self.input_tokens)} in / {fmt.tokens(self.output_tokens)} out tok  "
                  f"{fmt.money(self.cost_nusd)}")
        if self.unpriced:
            totals += f" +{self.unpriced} unpriced"
        if self.failed:
            totals += f"  {self.failed} failed"
        lines.append(totals)
        parts = contributor_parts(self.path, self.spans)
        top = " · ".join(f"{label} {figures}" for label, figures in parts) if parts else "the only span"
        lines.append(f"critical path ({CRITICAL_MARK}): {top}")
        return lines

    def render(self, *, colour: bool, width: int | None) -> str:
        cells = []
        for row in self.rows:
            span = row.span
            mark = CRITICAL_MARK if span.span_id in self.path.contribution_ns else ""
            prefix = row.prefix if len(row.prefix) <= INDENT_CELLS else "┆ " + row.prefix[-(INDENT_CELLS - 2):]
            status = span_status(span)
            cells.append([
                (mark, SGR_BOLD) if mark else mark,
                f"{prefix}{fmt.KIND_MARK.get(span.kind, '·')} {fmt.clean(span.name, limit=200)}",
                fmt.clean(span.kind, limit=20),
                fmt.duration(span.duration_ns),
                fmt.duration(self.path.self_ns.get(span.span_id)),
                fmt.clean(span.model, limit=60) if span.model else "",
                _count(span.input_tokens),
                _count(span.output_tokens),
                _span_cost(span),
                (status, SGR_RED) if span.failed else status,
            ])
        table = render_table(SPAN_HEADERS, cells, SPAN_RIGHT, flexible=1, colour=colour, width=width)
        return "\n".join([*self.header(), "", table])

    # -- JSON ----------------------------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        from llmobs_tui.critical_path import GAP

        by_id: dict[Hashable, SpanRow] = {s.span_id: s for s in self.spans}
        path = self.path
        top = []
        for span_id, ns in path.top(3):
            span = by_id.get(span_id) if span_id is not GAP else None
            top.append({"span_id": span.span_id.hex() if span else None, "name": span.name if span else None,
                        "kind": span.kind if span else None, "ms": _ms(ns), "ns": ns,
                        "share": round(ns / path.duration_ns, 4) if path.duration_ns else None})
        return {
            "trace_id": self.trace_id.hex(),
            "root": self.root.name,
            "service": self.root.service,
            "start": iso_time(self.t0),
            "start_ns": self.t0,
            "duration_ms": _ms(self.t1 - self.t0),
            "duration_ns": self.t1 - self.t0,
            "span_count": len(self.spans),
            "llm_calls": len(self.calls),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_nusd / 1e9,
            "unpriced_calls": self.unpriced,
            "failed_spans": self.failed,
            "critical_path": {"duration_ms": _ms(path.duration_ns), "duration_ns": path.duration_ns, "top": top},
            "spans": [self._span_json(row) for row in self.rows],
        }

    def _span_json(self, row: TreeRow) -> dict[str, Any]:
        span = row.span
        critical_ns = self.path.contribution_ns.get(span.span_id)
        self_ns = self.path.self_ns.get(span.span_id)
        return {
            "span_id": span.span_id.hex(),
            "parent_span_id": span.parent_span_id.hex() if span.parent_span_id else None,
            "depth": row.depth,
            "name": span.name,
            "kind": span.kind,
            "start": iso_time(span.start_ns),
            "start_ns": span.start_ns,
            "end_ns": span.end_ns,
            "offset_ms": _ms(span.start_ns - self.t0),
            "duration_ms": _ms(span.duration_ns),
            "duration_ns": span.duration_ns,
            "self_ms": _ms(self_ns),
            "self_ns": self_ns,
            "critical_path": critical_ns is not None,
            "critical_ms": _ms(critical_ns),
            "critical_ns": critical_ns,
            "service": span.service,
            "provider": span.provider,
            "operation": span.operation,
            "model": span.model,
            "input_tokens": span.input_tokens,
            "output_tokens": span.output_tokens,
            "cache_read_tokens": span.cache_read_tokens,
            "cache_write_tokens": span.cache_write_tokens,
            "reasoning_tokens": span.reasoning_tokens,
            "ttft_ms": _ms(span.ttft_ns),
            "billed": bool(span.billed),
            "unpriced": bool(span.billed) and span.cost_nusd is None,
            "cost_usd": span.cost_nusd / 1e9 if span.billed and span.cost_nusd is not None else None,
            "status": "error" if span.failed else "ok",
            "otel_status": OTEL_STATUS.get(span.status, str(span.status)),
            "error": {"class": span.error_class, "subclass": span.error_subclass, "type": span.error_type,
                      "message": span.status_message} if span.failed else None,
        }


SPAN_HEADERS = ("CP", "SPAN", "KIND", "DURATION", "SELF", "MODEL", "IN", "OUT", "COST", "STATUS")
SPAN_RIGHT = frozenset({3, 4, 6, 7, 8})
OTEL_STATUS = {0: "unset", 1: "ok", 2: "error"}


def span_status(span: SpanRow) -> str:
    """`ok`, or `error api/rate_limit RateLimitError`: the class and sub-class the normalizer gave the
    failure and the error type the application reported (cleaned: it is the sender's text)."""
    if not span.failed:
        return "ok"
    words = ["error"]
    if span.error_class:
        words.append(span.error_class + (f"/{span.error_subclass}" if span.error_subclass else ""))
    if span.error_type:
        words.append(fmt.clean(span.error_type, limit=60))
    return " ".join(words)


def _span_cost(span: SpanRow) -> str:
    if span.billed:
        return fmt.money(span.cost_nusd, unpriced=True)
    # Not billed: a wrapper whose call is billed on a descendant, or a twin of a billed span.
    return "dup" if span.is_llm and span.duplicate_of is not None else ""


def _count(n: int | None) -> str:
    return "" if n is None else f"{n:,}"


# --- shared --------------------------------------------------------------------------------------


def _clickhouse(settings: Settings) -> ClickHouseReader:
    """The ClickHouse store of `--store` (raises StoreError with the line to print)."""
    from store.backends import ClickHouseReader

    assert settings.store_url is not None
    return ClickHouseReader(settings.store_url)


def _open(settings: Settings) -> Connection:
    """A read-only connection with the filter's REGEXP function, as llmobs_tui/reader.py registers it."""
    from llmobs_tui.filtering import regexp
    from store.connection import open_reader

    db = open_reader(settings.db_path)
    db.create_function("regexp", 2, regexp, deterministic=True)
    return db


def iso_time(ns: int, timespec: str = "milliseconds") -> str:
    """`2026-11-18T11:05:10.250Z`: UTC, so that output does not depend on the reader's zone."""
    return datetime.fromtimestamp(ns / NS, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def _ms(ns: int | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 3)


def colour_enabled(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Colour only for a person at a terminal: not when piped or redirected, not under NO_COLOR
    (https://no-color.org: set and not empty) and not on a dumb terminal."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _terminal_width(stream: TextIO) -> int | None:
    """The terminal's width when writing to one; None when piped (a script gets whole lines)."""
    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    import shutil

    return shutil.get_terminal_size().columns


# A table cell: its text, or its text and the SGR sequence to draw it in when colour is on.
Cell = str | tuple[str, str]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], right: frozenset[int], *, flexible: int,
                 colour: bool, width: int | None) -> str:
    """Columns aligned by display cells (wide characters count twice), two spaces apart. The
    `flexible` column (names) is cut to NAME_CELLS cells, and on a terminal of `width` further so
    that a line fits. Cell text must already be cleaned; colour wraps it after padding, so the
    escape sequences here are only ever ours."""
    from rich.cells import cell_len, set_cell_size

    texts = [[cell if isinstance(cell, str) else cell[0] for cell in row] for row in rows]
    widths = [max([cell_len(h), *(cell_len(r[i]) for r in texts)]) for i, h in enumerate(headers)]
    widths[flexible] = min(widths[flexible], max(cell_len(headers[flexible]), NAME_CELLS))
    if width is not None:
        others = sum(w for i, w in enumerate(widths) if i != flexible) + 2 * (len(widths) - 1)
        widths[flexible] = max(12, min(widths[flexible], width - others))

    def fit(text: str, i: int) -> str:
        if cell_len(text) > widths[i]:
            text = set_cell_size(text, widths[i] - 1) + "…"
        pad = " " * (widths[i] - cell_len(text))
        return pad + text if i in right else text + pad

    lines = ["  ".join(fit(h, i) for i, h in enumerate(headers)).rstrip()]
    for row in rows:
        out = []
        for i, cell in enumerate(row):
            text = fit(cell if isinstance(cell, str) else cell[0], i)
            if colour and not isinstance(cell, str) and cell[0]:
                text = f"{cell[1]}{text}{SGR_RESET}"
            out.append(text)
        lines.append("  ".join(out).rstrip())
    return "\n".join(lines)
