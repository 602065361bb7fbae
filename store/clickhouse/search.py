"""`text:` search on ClickHouse: the same matches and snippets as SQLite's content index (store/content_index.py).

What is searched: each span's and log record's words (m010's `search_words`), which the shipper computes from
the content it ships (store/clickhouse/rows.py) with the content index's own extraction and tokenizer
(store/fts5_words.py). A search is a substring of them (fts5_words.needle): exactly the spans and records whose
FTS5 phrase query matches on SQLite. The words are written with the span, before the ack: a search finds a span
as soon as it is acknowledged (SQLite's index trails the acks), and no index has to be kept in step with
forget, reprice or retention (the words are a column of the row those already handle).

Reading: no FINAL. A search names traces, and the trace list keeps only those whose summary is live, so an old
version of a re-shipped span names a trace that matches anyway, and a forgotten trace's spans name a trace the
list no longer has. As on SQLite, a positive search reads the newest MATCH_SCAN_LIMIT matching rows of spans
(and of log records) and no more: spans are sorted by their start hour first, so reading them newest first
stops once that many are found; a negation reads every match. Unlike SQLite, only the trace list's window is
searched (a trace's spans and records start within it): that bounds the read of a rare word, which meets no
index, to the window's content.

Snippets: the first matching span of each listed trace (by start), else its first matching log record, read
back whole, its text extracted again and made into a snippet by SQLite's own snippet() (make_snippets), so a
snippet reads as the SQLite store's would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from store.clickhouse.client import ClickHouseClient
from store.clickhouse.rows import NO_SPAN
from store.clickhouse.schema import HOUR_NS
from store.content_index import (
    CHAR_SEPARATOR,
    MATCH_SCAN_LIMIT,
    SearchResult,
    TextMatch,
    log_bytes_text,
    make_snippets,
    span_bytes_text,
)
from store.fts5_words import needle

SEARCH_FIELD = "text"  # a filter term (field, op, value) with this field is a search; op "=" or "!="
# The spans' sort key starts with this expression (store/clickhouse/schema.py, by_hour): sorted on it, newest
# first, a read goes through the parts in that order and stops at its limit.
_HOUR = f"intDiv(start_ns, {HOUR_NS})"


def _matching(table: str, param: str, newest_only: bool, beyond: int = 0) -> str:
    """The trace ids of this table's rows in the window ({fsince:Int64}) whose words hold {param:String};
    `newest_only`: the newest MATCH_SCAN_LIMIT (+ `beyond`) of them."""
    time_column = "start_ns" if table == "spans" else "time_ns"
    sql = (f"SELECT trace_id FROM {table} WHERE {time_column} >= {{fsince:Int64}} "
           f"AND position(search_words, {{{param}:String}}) > 0")
    if newest_only:
        sql += f" ORDER BY {_HOUR if table == 'spans' else 'time_ns'} DESC LIMIT {MATCH_SCAN_LIMIT + beyond}"
    return f"SELECT trace_id FROM ({sql})"


@dataclass(frozen=True, slots=True)
class Matched:
    """A positive search read once (`resolved`): the traces of its newest matching rows, and whether more rows
    matched than were read."""

    trace_ids: tuple[bytes, ...]
    cut: bool


def resolved(client: ClickHouseClient, terms: Sequence[tuple[str, str, Any]], invert: bool, since_ns: int
             ) -> list[tuple[str, str, Any]]:
    """The filter's terms with each positive search of a filter that is not inverted read now, once: its
    value becomes the Matched traces. The trace list's queries then test ids, not content: a by-cost list
    reads its filter two or three times, and the search would be read as often (a read of the window's
    content each, for a word that meets no early stop), and the list's `cut` comes with it."""
    if invert:
        return list(terms)
    out = []
    for name, op, value in terms:
        if name == SEARCH_FIELD and op == "=" and isinstance(value, str):
            params: dict[str, Any] = {"fsince": since_ns, "m": needle(value)}
            rows = client.query(f"SELECT 1, * FROM ({_matching('spans', 'm', True, 1)}) UNION ALL "
                                f"SELECT 2, * FROM ({_matching('logs', 'm', True, 1)})", params)
            by_table: dict[int, list[bytes]] = {1: [], 2: []}
            for table, trace_id in rows:
                by_table[table].append(bytes(trace_id))
            value = Matched(tuple({t for ids in by_table.values() for t in ids[:MATCH_SCAN_LIMIT]}),
                            any(len(ids) > MATCH_SCAN_LIMIT for ids in by_table.values()))
        out.append((name, op, value))
    return out


def trace_condition(value: str | Matched, negate: bool, newest_only: bool, param: str, params: dict[str, Any]
                    ) -> str:
    """A condition over `trace_summaries AS t`: some span or log record of the trace holds the search (or,
    `negate`, none does); `newest_only`: among the newest matches (a positive search of a filter that is not
    inverted, as store.filters.content_match_clause). Binds `param`; reads rows from {fsince:Int64}. A search
    already read (Matched) is a test of its traces' ids."""
    if isinstance(value, Matched):
        params[param] = list(value.trace_ids)
        return f"t.trace_id IN {{{param}:Array(FixedString(16))}}"
    params[param] = needle(value)
    return (f"t.trace_id {'NOT ' if negate else ''}IN ({_matching('spans', param, newest_only and not negate)} "
            f"UNION ALL {_matching('logs', param, newest_only and not negate)})")


def _any_of(needles: Sequence[str], params: dict[str, Any]) -> str:
    for i, text in enumerate(needles):
        params[f"n{i}"] = text
    return " OR ".join(f"position(search_words, {{n{i}:String}}) > 0" for i in range(len(needles)))


def text_matches(client: ClickHouseClient, trace_ids: Sequence[bytes], since_ns: int, searches: Sequence[str],
                 fts5_query: str, cut: bool | None = None) -> SearchResult:
    """store.content_index's SearchResult for these traces (those the list shows, started at or after
    `since_ns`) and these positive searches (the user's texts; `fts5_query`, the filter's text_search, makes the
    snippets): one match per trace, whether the search was cut (`cut`: known from the list's read; None:
    counted here), no lag (words are shipped with their span)."""
    needles = [found for found in (needle(text) for text in searches) if found]
    if not needles:
        return SearchResult({}, 0, False)
    params: dict[str, Any] = {"since": since_ns}
    where = _any_of(needles, params)
    if cut is None:
        counted = client.query(
            f"SELECT (SELECT count() FROM (SELECT 1 FROM spans WHERE start_ns >= {{since:Int64}} AND ({where}) "
            f"LIMIT {MATCH_SCAN_LIMIT + 1})), (SELECT count() FROM (SELECT 1 FROM logs WHERE "
            f"time_ns >= {{since:Int64}} AND ({where}) LIMIT {MATCH_SCAN_LIMIT + 1}))", params)[0]
        cut = max(int(counted[0]), int(counted[1])) > MATCH_SCAN_LIMIT
    if not trace_ids:
        return SearchResult({}, 0, cut)
    params["ids"] = list(trace_ids)
    texts: dict[int, str] = {}
    found: dict[bytes, tuple[int, bytes | None]] = {}
    for trace_id, span_id, kind, raw in client.query(
            f"SELECT trace_id, span_id, kind, raw FROM spans WHERE trace_id IN {{ids:Array(FixedString(16))}} "
            f"AND start_ns >= {{since:Int64}} AND ({where}) ORDER BY trace_id, start_ns, span_id LIMIT 1 BY trace_id",
            params, bytes_columns=("raw",)):
        found[bytes(trace_id)] = (len(texts), bytes(span_id))
        texts[len(texts)] = span_bytes_text(raw, kind)
    params["ids"] = [t for t in trace_ids if t not in found]
    if params["ids"]:
        for trace_id, span_id, event_name, raw in client.query(
                f"SELECT trace_id, span_id, event_name, raw FROM logs WHERE trace_id IN {{ids:Array(FixedString(16))}} "
                f"AND time_ns >= {{since:Int64}} AND ({where}) ORDER BY trace_id, time_ns, record_digest "
                f"LIMIT 1 BY trace_id", params, bytes_columns=("raw",)):
            found[bytes(trace_id)] = (len(texts), None if bytes(span_id) == NO_SPAN else bytes(span_id))
            texts[len(texts)] = log_bytes_text(raw, event_name)
    snippets = make_snippets(fts5_query, texts)
    return SearchResult({trace_id: TextMatch(trace_id, span_id, snippets.get(at, "").replace(CHAR_SEPARATOR, ""))
                         for trace_id, (at, span_id) in found.items()}, 0, cut)
