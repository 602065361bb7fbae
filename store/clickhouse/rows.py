"""SQLite store rows → ClickHouse rows (store/clickhouse/schema.py), the one conversion both the sink
(outbox batches) and copy_store (a whole store) use.

What changes on the way: interned ids become the digests they stand for (no ids across replicas);
content leaves zstd (ClickHouse's column codec compresses it, across spans); a missing trace or span id
of a log record becomes zero bytes (FixedString is not nullable in the sort key); rollups carry their
dimension strings and histograms as (bucket, count) arrays. Rollup rows in ClickHouse are per dimension
set only at 60 s and 1 h (SQLite's dims_id 0 "total" rows are a sum ClickHouse's GROUP BY does), and
totals only at 10 s, keyed by empty dimension strings, as SQLite keeps them. Spans and log records gain
their words (store/fts5_words.py: what a `text:` search looks for on ClickHouse), computed from their
content here.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import zstandard

from store import histogram
from store.clickhouse.client import batches
from store.clickhouse.schema import (
    ROLLUP_COUNTERS,
    ROLLUP_DIMENSIONS,
    ROLLUP_HISTOGRAMS,
    by_cost_key,
    histogram_column,
)
from store.content_index import log_bytes_text, span_bytes_text
from store.fts5_words import words
from store.metrics import series_digest
from store.models import COL, SPAN_COLUMNS
from store.queries import decompress
from store.writer import SpanState

NO_TRACE = b"\0" * 16
NO_SPAN = b"\0" * 8
CHUNK = 500  # ids per `IN (…)`: under SQLite's bound-parameter limit with room to spare
FINE_RESOLUTION = 10  # store/writer.py's: its rollups are totals only

# --- spans ------------------------------------------------------------------------------------------------
SPAN_VALUE_COLUMNS = tuple(name for name in SPAN_COLUMNS if name not in ("id", "resource_id", "scope_id"))
SPAN_INSERT_COLUMNS = (*SPAN_VALUE_COLUMNS, "resource_digest", "scope_digest", "search_words", "version",
                       "is_deleted")
_RAW_AT, _KIND_AT = SPAN_VALUE_COLUMNS.index("raw"), SPAN_VALUE_COLUMNS.index("kind")
_SPAN_SELECT = (
    f"SELECT {', '.join('s.' + name for name in SPAN_VALUE_COLUMNS)}, r.digest, sc.digest FROM spans s "
    "LEFT JOIN resources r ON r.id = s.resource_id LEFT JOIN scopes sc ON sc.id = s.scope_id"
)


# Columns of the spans table that hold bytes, not text (the client decodes the others as UTF-8).
SPAN_BYTES_COLUMNS = ("raw", "duplicate_of")
_COMPRESSOR = zstandard.ZstdCompressor(level=1)


def sqlite_raw(raw: bytes | None) -> bytes | None:
    """A stored span or log record from ClickHouse (plain) back to the SQLite store's form (zstd), for the
    code that reads that form (store.span_detail, store.alerts, a working store)."""
    return _COMPRESSOR.compress(raw) if raw else raw


def stored_spans(client: Any, trace_ids: Sequence[bytes], first_ns: int | None = None,
                 last_ns: int | None = None, with_words: bool = False) -> list[dict[str, Any]]:
    """The spans of these traces as ClickHouse holds them (FINAL), by column name with `resource_digest` and
    `scope_digest` (and `search_words`: the columns a row re-inserted as it is needs), ids as bytes;
    `first_ns`/`last_ns`: their start times lie within (the partition key's column: the read skips other
    days)."""
    columns = (*SPAN_VALUE_COLUMNS, "resource_digest", "scope_digest", *(("search_words",) if with_words else ()))
    bounds, params = "", {}
    if first_ns is not None:
        bounds, params = " AND start_ns BETWEEN {first:Int64} AND {last:Int64}", {"first": first_ns, "last": last_ns}
    out = []
    for ids in batches(trace_ids):
        for row in client.query(
                f"SELECT {', '.join(columns)} FROM spans FINAL WHERE trace_id IN {{ids:Array(FixedString(16))}}"
                f"{bounds} ORDER BY trace_id, span_id", {"ids": ids, **params},
                bytes_columns=SPAN_BYTES_COLUMNS):
            span = dict(zip(columns, row))
            for key in ("trace_id", "span_id", "parent_span_id", "resource_digest", "scope_digest"):
                if span[key] is not None:
                    span[key] = bytes(span[key])
            out.append(span)
    return out


def span_rows(rows: Iterable[Sequence[Any]], version: int) -> list[list[Any]]:
    out = []
    for row in rows:
        values = list(row)
        values[_RAW_AT] = content = decompress(values[_RAW_AT])
        values.append(words(span_bytes_text(content, values[_KIND_AT])) if content else "")
        values.append(version)
        values.append(0)
        out.append(values)
    return out


def spans_by_id(db: sqlite3.Connection, ids: Sequence[int], version: int) -> list[list[Any]]:
    """The stored spans of these row ids (those still stored) as ClickHouse rows of `version`."""
    return span_rows(_in_chunks(db, f"{_SPAN_SELECT} WHERE s.id IN ({{marks}})", ids), version)


def span_state(values: Mapping[str, Any]) -> SpanState:
    """A stored span as the writer holds it, from its ClickHouse columns by name (any not given: None)."""
    row: list[Any] = [None] * len(SPAN_COLUMNS)
    for name, value in values.items():
        if name in COL:
            row[COL[name]] = value
    return SpanState.from_row(row, stored=True)


def span_tombstones(keys: Iterable[Sequence[Any]], version: int) -> list[list[Any]]:
    """Deleted spans, (trace_id, span_id, start_ns) each: rows that only need the sort and partition keys
    right (ReplacingMergeTree's is_deleted drops every version of the key at FINAL)."""
    out = []
    blank: dict[str, Any] = {name: None for name in SPAN_VALUE_COLUMNS}
    blank.update(name="", kind="", otel_kind=0, end_ns=0, status=0, validation_marker=0, billed=0, flags=0,
                 raw=b"", call_layer=1)
    for trace_id, span_id, start_ns in keys:
        row = dict(blank, trace_id=trace_id, span_id=span_id, start_ns=start_ns, end_ns=start_ns)
        out.append([*(row[name] for name in SPAN_VALUE_COLUMNS), None, None, "", version, 1])
    return out


# --- logs ---------------------------------------------------------------------------------------------------
LOG_INSERT_COLUMNS = ("trace_id", "span_id", "time_ns", "record_digest", "event_name", "severity", "resource_digest",
                      "scope_digest", "finish_reason", "eval_name", "eval_score", "raw", "search_words", "version",
                      "is_deleted")
_LOG_SELECT = (
    "SELECT l.trace_id, l.span_id, l.time_ns, l.event_name, l.severity, r.digest, sc.digest, l.finish_reason, "
    "l.eval_name, l.eval_score, l.raw FROM logs l "
    "LEFT JOIN resources r ON r.id = l.resource_id LEFT JOIN scopes sc ON sc.id = l.scope_id"
)


def log_rows(rows: Iterable[Sequence[Any]], version: int, with_words: bool = True) -> list[list[Any]]:
    """`with_words`: compute the records' words (else ''; for a caller that only needs their keys)."""
    out = []
    for trace_id, span_id, time_ns, event, severity, resource, scope, finish, eval_name, score, raw in rows:
        trace_id, span_id, content = trace_id or NO_TRACE, span_id or NO_SPAN, decompress(raw)
        # The record as stored names it: a retried export (the same record again) collapses into one row.
        digest = hashlib.blake2b(trace_id + span_id + time_ns.to_bytes(8, "big", signed=True) + content,
                                 digest_size=16).digest()
        found = words(log_bytes_text(content, event)) if with_words and content else ""
        out.append([trace_id, span_id, time_ns, digest, event, severity, resource, scope, finish, eval_name, score,
                    content, found, version, 0])
    return out


def log_keys(db: sqlite3.Connection, trace_ids: Sequence[bytes]) -> list[tuple[bytes, bytes, int, bytes]]:
    """(trace_id, span_id, time_ns, record_digest) of these traces' stored log records: their ClickHouse key."""
    rows = log_rows(_in_chunks(db, f"{_LOG_SELECT} WHERE l.trace_id IN ({{marks}})", trace_ids), 0, with_words=False)
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def log_tombstones(keys: Iterable[Sequence[Any]], version: int) -> list[list[Any]]:
    return [[trace_id, span_id, time_ns, digest, None, None, None, None, None, None, None, b"", "", version, 1]
            for trace_id, span_id, time_ns, digest in keys]


def logs_in_range(db: sqlite3.Connection, after_id: int, last_id: int, version: int) -> list[list[Any]]:
    """The log records with row ids in (after_id, last_id] that are still stored."""
    return log_rows(db.execute(f"{_LOG_SELECT} WHERE l.id > ? AND l.id <= ? ORDER BY l.id", (after_id, last_id)),
                    version)


# --- trace summaries ----------------------------------------------------------------------------------------------
TRACE_COLUMNS = (
    "trace_id", "root_span_id", "root_name", "root_known", "service", "start_ns", "end_ns", "duration_ns",
    "spans", "llm_calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens", "cost_nusd", "unpriced_calls", "errors_api", "errors_validation", "errors_guardrail",
    "error_spans", "feature", "tenant", "models", "conversation_id", "user_id", "variant",
)
TRACE_INSERT_COLUMNS = (*TRACE_COLUMNS, "updated_ns", "is_deleted")
_TRACE_START_AT, _TRACE_COST_AT = TRACE_COLUMNS.index("start_ns"), TRACE_COLUMNS.index("cost_nusd")


def _keyed_rows(db: sqlite3.Connection, table: str, key: str, columns: Sequence[str], keys: Sequence[Any] | None,
                version: int) -> list[list[Any]]:
    """Rows of `table` by `key` (all rows when `keys` is None) at `version`; a key no longer stored becomes
    a deletion row (its other columns zero), so that ClickHouse forgets it too."""
    select = f"SELECT {', '.join(columns)} FROM {table}"
    if keys is None:
        return [[*row, version, 0] for row in db.execute(select)]
    found = {row[0]: row for row in _in_chunks(db, f"{select} WHERE {key} IN ({{marks}})", keys)}
    out = []
    for k in dict.fromkeys(keys):
        row = found.get(k)
        if row is not None:
            out.append([*row, version, 0])
        else:
            out.append([k, *_zeros(table, columns[1:]), version, 1])
    return out


_NULLABLE = {"root_span_id", "root_name", "service", "feature", "tenant", "models", "conversation_id", "user_id",
             "variant"}


def _zeros(table: str, columns: Sequence[str]) -> list[Any]:
    return [None if name in _NULLABLE else 0 for name in columns]


def trace_rows(db: sqlite3.Connection, trace_ids: Sequence[bytes] | None, version: int | None = None
               ) -> list[list[Any]]:
    """Trace summaries; their version is the writer's updated_ns (a later update of a trace, by any
    replica, has a later one), or `version` for deletions and when given."""
    columns = (*TRACE_COLUMNS, "updated_ns")
    rows = _keyed_rows(db, "traces", "trace_id", columns, trace_ids, version or 0)
    for row in rows:
        deleted = row[-1]
        stored_updated = row[len(TRACE_COLUMNS)]
        row[len(TRACE_COLUMNS):] = [version if version is not None else (stored_updated or 0), deleted]
        if deleted:
            row[TRACE_COLUMNS.index("root_known")] = 0
    return rows


def trace_tombstones(trace_ids: Sequence[bytes], version: int, start_ns: int | None = None) -> list[list[Any]]:
    """Deleted trace summaries at `start_ns`, the start their stored row has (the sort key holds its hour
    and the partition its day; None: the deletion's time, for a trace whose start is not known). Their end
    is the deletion's: the table's TTL (end_ns + retention) must not drop the deletion before the row."""
    out = []
    for trace_id in trace_ids:
        row = [trace_id, *_zeros("traces", TRACE_COLUMNS[1:]), version, 1]
        row[TRACE_COLUMNS.index("start_ns")] = version if start_ns is None else start_ns
        row[TRACE_COLUMNS.index("end_ns")] = version
        out.append(row)
    return out


def newer_versions(client: Any, versions: Mapping[bytes, int], starts: Mapping[bytes, int], lead_ns: int
                   ) -> dict[bytes, int]:
    """Of the traces in `versions` (trace id → a version), those ClickHouse holds a newer summary of: trace id →
    that newest version. Each is looked for among the summaries starting from `lead_ns` before its start in
    `starts` to `lead_ns` after (the sort key's hour then prunes the rest of the table: another copy of the trace
    starts elsewhere only by the spans one copy lacks)."""
    out: dict[bytes, int] = {}
    ordered = sorted(versions, key=lambda t: starts.get(t, 0))
    for chunk in batches(ordered):
        first = min(starts.get(t, 0) for t in chunk) - lead_ns
        last = max(starts.get(t, 0) for t in chunk) + lead_ns
        for trace_id, version in client.query(
                "SELECT trace_id, max(updated_ns) FROM trace_summaries WHERE start_ns BETWEEN {first:Int64} AND "
                "{last:Int64} AND trace_id IN {ids:Array(FixedString(16))} AND updated_ns > {oldest:Int64} "
                "GROUP BY trace_id", {"ids": chunk, "first": first, "last": last,
                                      "oldest": min(versions[t] for t in chunk)}):
            if int(version) > versions[bytes(trace_id)]:
                out[bytes(trace_id)] = int(version)
    return out


def newest_span_counts(client: Any, ids: Sequence[bytes]) -> dict[bytes, int]:
    """trace id → the span count of its newest summary (as newest_summaries picks it), for those ClickHouse holds."""
    out: dict[bytes, int] = {}
    for chunk in batches(ids):
        for trace_id, spans in client.query(
                "SELECT trace_id, argMax(spans, (updated_ns, 1 - is_deleted)) FROM trace_summaries "
                "WHERE trace_id IN {ids:Array(FixedString(16))} GROUP BY trace_id", {"ids": chunk}):
            out[bytes(trace_id)] = int(spans)
    return out


def newest_summaries(client: Any, ids: Sequence[bytes]) -> dict[bytes, tuple[int, int, int, int, int]]:
    """trace id → (deleted, version, start_ns, end_ns, cost_nusd) of its newest summary, for those ClickHouse
    holds. A trace whose start moved to another hour has, at its newest version, a live row and the deletion
    row of its old hour's key (store/clickhouse/schema.py, m004): the live row wins the tie. A forgotten trace
    has deletion rows only."""
    out: dict[bytes, tuple[int, int, int, int, int]] = {}
    newest = "(updated_ns, 1 - is_deleted)"
    for chunk in batches(ids):
        for trace_id, deleted, version, first, last, cost in client.query(
                f"SELECT trace_id, argMax(is_deleted, {newest}), max(updated_ns), argMax(start_ns, {newest}), "
                f"argMax(end_ns, {newest}), argMax(cost_nusd, {newest}) FROM trace_summaries "
                "WHERE trace_id IN {ids:Array(FixedString(16))} GROUP BY trace_id", {"ids": chunk}):
            out[bytes(trace_id)] = (int(deleted), int(version), int(first), int(last), int(cost))
    return out


def by_cost_rows(summaries: Iterable[list[Any]], old_keys: Mapping[bytes, Iterable[tuple[int, int]]]
                 ) -> list[list[Any]]:
    """trace_summaries_by_cost's rows for these summary rows (TRACE_INSERT_COLUMNS, none of them an old
    hour's deletion row): each live one as it is, and a deletion row at the summary's version for every
    (start, cost) in `old_keys` of its trace whose key the new row does not replace (every one, deleted)."""
    out: list[list[Any]] = []
    for row in summaries:
        trace_id, version, deleted = row[0], row[-2], row[-1]
        new_key = None if deleted else by_cost_key(row[_TRACE_START_AT], row[_TRACE_COST_AT])
        if not deleted:
            out.append(row)
        gone = {by_cost_key(*old): old for old in old_keys.get(trace_id, ())}
        for key, (start, cost) in sorted(gone.items()):
            if key != new_key:
                tombstone = trace_tombstones([trace_id], version, start)[0]
                tombstone[_TRACE_COST_AT] = cost
                out.append(tombstone)
    return out


# --- resources and scopes ------------------------------------------------------------------------------------------
RESOURCE_INSERT_COLUMNS = ("digest", "service", "blob")
SCOPE_INSERT_COLUMNS = ("digest", "name", "version", "blob")


def resource_rows(db: sqlite3.Connection, digests: Sequence[bytes] | None) -> list[list[Any]]:
    select = "SELECT digest, service, blob FROM resources"
    rows = db.execute(select) if digests is None else _in_chunks(db, select + " WHERE digest IN ({marks})", digests)
    return [list(row) for row in rows]


def scope_rows(db: sqlite3.Connection, digests: Sequence[bytes] | None) -> list[list[Any]]:
    select = "SELECT digest, name, version, blob FROM scopes"
    rows = db.execute(select) if digests is None else _in_chunks(db, select + " WHERE digest IN ({marks})", digests)
    return [list(row) for row in rows]


# --- change markers -------------------------------------------------------------------------------------------------
CHANGE_INSERT_COLUMNS = ("kind", "scope", "after", "time_ns", "before", "trace_id", "seq", "version")
_CHANGE_SELECT = "SELECT kind, scope, after, time_ns, before, trace_id, id FROM changes"


def change_rows(db: sqlite3.Connection, ids: Sequence[int] | None, version: int) -> list[list[Any]]:
    """The working store's change markers (all of them when `ids` is None) at `version`; its row id is `seq`."""
    rows = db.execute(_CHANGE_SELECT) if ids is None else _in_chunks(db, _CHANGE_SELECT + " WHERE id IN ({marks})", ids)
    return [[*row, version] for row in rows]


# --- tool calls ---------------------------------------------------------------------------------------------------
TOOL_CALL_INSERT_COLUMNS = ("trace_id", "span_id", "start_ns", "tool", "duration_ns", "failed", "version", "is_deleted")


def tool_call_rows(db: sqlite3.Connection, trace_ids: Sequence[bytes] | None, version: int) -> list[list[Any]]:
    """Every tool span of these traces (all traces when None) as ClickHouse's tool_calls row: the call it is
    the outermost span of, or a deletion row (it is part of its parent's call, or no longer stored)."""
    select = ("SELECT s.trace_id, s.span_id, s.start_ns, t.call_id IS NOT NULL, t.tool, t.duration_ns, t.failed "
              "FROM spans s LEFT JOIN tool_calls t ON t.call_id = s.id WHERE s.kind = 'tool'")
    rows = db.execute(select) if trace_ids is None else _in_chunks(db, select + " AND s.trace_id IN ({marks})",
                                                                   trace_ids)
    out = []
    for trace_id, span_id, start, is_call, tool, duration, failed in rows:
        if is_call:
            out.append([trace_id, span_id, start, tool, duration, failed, version, 0])
        elif trace_ids is not None:  # a whole store's copy needs no deletions
            out.append([trace_id, span_id, start, None, None, 0, version, 1])
    return out


def tool_call_tombstones(keys: Iterable[Sequence[Any]], version: int) -> list[list[Any]]:
    """Deletion rows for these (trace id, span id, start) tool spans."""
    return [[trace_id, span_id, start, None, None, 0, version, 1] for trace_id, span_id, start in keys]


# --- rollups --------------------------------------------------------------------------------------------------------
ROLLUP_INSERT_COLUMNS = (
    "res", "bucket", *ROLLUP_DIMENSIONS, *ROLLUP_COUNTERS,
    *(f"{histogram_column(h)}.{part}" for h in ROLLUP_HISTOGRAMS for part in ("bucket", "count")),
)
NO_DIMS = ("",) * len(ROLLUP_DIMENSIONS)


def rollup_row(res: int, bucket: int, dims: Sequence[str], counters: Sequence[int] | Mapping[int, int],
               hists: Sequence[Mapping[int, int]]) -> list[Any]:
    """One ClickHouse rollup row. `counters`: all of them in ROLLUP_COUNTERS order, or {index: value};
    `hists`: bucket → count per ROLLUP_HISTOGRAMS (zero counts left out, as sumMap leaves them)."""
    if isinstance(counters, Mapping):
        values = [0] * len(ROLLUP_COUNTERS)
        for i, v in counters.items():
            values[i] = v
    else:
        values = list(counters)
    row: list[Any] = [res, bucket, *dims, *values]
    for h in hists:
        items = sorted((b, c) for b, c in h.items() if c)
        row.append([b for b, _ in items])
        row.append([c for _, c in items])
    return row


TOOL_ROLLUP_INSERT_COLUMNS = ("res", "bucket", "tool", "calls", "errors", "duration_ns",
                              f"{histogram_column('latency')}.bucket", f"{histogram_column('latency')}.count")


def tool_rollup_row(res: int, bucket: int, tool: str, calls: int, errors: int, duration_ns: int,
                    latency: Mapping[int, int]) -> list[Any]:
    """One ClickHouse tool_rollups row (zero counts left out of the histogram, as sumMap leaves them)."""
    items = sorted((b, c) for b, c in latency.items() if c)
    return [res, bucket, tool, calls, errors, duration_ns, [b for b, _ in items], [c for _, c in items]]


def stored_tool_rollup_rows(db: sqlite3.Connection) -> Iterator[list[Any]]:
    """Every SQLite tool_rollups row as a ClickHouse row."""
    for res, bucket, tool, calls, errors, duration_ns, blob in db.execute(
            "SELECT res, bucket, tool, calls, errors, duration_ns, hist_latency FROM tool_rollups"):
        counts: dict[int, int] = {}
        histogram.decode_into(blob, counts)
        yield tool_rollup_row(res, bucket, tool, calls, errors, duration_ns, counts)


def stored_rollup_rows(db: sqlite3.Connection) -> Iterator[list[Any]]:
    """Every SQLite rollup row as a ClickHouse row: per dimension set at 60 s and 1 h, totals at 10 s."""
    from store.writer import HISTOGRAMS
    from store.writer import ROLLUP_COUNTERS as SQLITE_COUNTERS

    assert tuple(SQLITE_COUNTERS) == ROLLUP_COUNTERS and len(HISTOGRAMS) == len(ROLLUP_HISTOGRAMS)
    dims = ", ".join(f"d.{name}" for name in ROLLUP_DIMENSIONS)
    rows = db.execute(
        f"SELECT r.res, r.bucket, r.dims_id, {dims}, {', '.join('r.' + c for c in ROLLUP_COUNTERS)}, "
        f"{', '.join('r.' + h for h in HISTOGRAMS)} FROM rollups r LEFT JOIN dims d ON d.id = r.dims_id "
        "WHERE (r.res = ? AND r.dims_id = 0) OR (r.res != ? AND r.dims_id != 0)",
        (FINE_RESOLUTION, FINE_RESOLUTION),
    )
    n_dims, n_counters = len(ROLLUP_DIMENSIONS), len(ROLLUP_COUNTERS)
    for row in rows:
        res, bucket, dims_id = row[0], row[1], row[2]
        names = NO_DIMS if dims_id == 0 else row[3:3 + n_dims]
        counters = row[3 + n_dims:3 + n_dims + n_counters]
        hists = []
        for blob in row[3 + n_dims + n_counters:]:
            counts: dict[int, int] = {}
            histogram.decode_into(blob, counts)
            hists.append(counts)
        yield rollup_row(res, bucket, names, counters, hists)


# --- OTLP metric points -----------------------------------------------------------------------------------
METRIC_POINT_INSERT_COLUMNS = ("res", "bucket", "name", "series", "unit", "kind", "service", "attrs_json", "n", "total",
                               "min", "max", "last", "hist")
METRIC_DROPPED_INSERT_COLUMNS = ("time_ns", "points")


def metric_point_row(res: int, bucket: int, name: str, unit: str, kind: str, service: str, attrs_json: str, n: int,
                     total: float, low: float | None, high: float | None, last: float | None, last_ns: int,
                     hist: Mapping[int, int]) -> list[Any]:
    """One ClickHouse metric_points row: a series' bucket (or what a transaction added to it), keyed by the
    series' digest; the newest sample as (its time, its value); the histogram as (buckets, counts)."""
    items = sorted((int(b), c) for b, c in hist.items() if c)
    return [res, bucket, name, series_digest(name, unit, kind, service, attrs_json), unit, kind, service, attrs_json,
            n, total, low, high, (last_ns, last), ([b for b, _ in items], [c for _, c in items])]


def stored_metric_point_rows(db: sqlite3.Connection) -> Iterator[list[Any]]:
    """Every SQLite metric_points row as a ClickHouse row."""
    for res, bucket, name, unit, kind, service, attrs_json, n, total, low, high, last, last_ns, blob in db.execute(
            "SELECT p.res, p.bucket, s.name, s.unit, s.kind, s.service, s.attrs_json, p.n, p.total, p.min, p.max, "
            "p.last, p.last_ns, p.hist FROM metric_points p JOIN metric_series s ON s.id = p.series_id"):
        counts: dict[int, int] = {}
        if blob:
            histogram.decode_into(blob, counts)
        yield metric_point_row(res, bucket, name, unit, kind, service, attrs_json, n, total, low, high, last, last_ns,
                               counts)


def _in_chunks(db: sqlite3.Connection, sql: str, keys: Sequence[Any]) -> Iterator[Sequence[Any]]:
    keys = list(keys)
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start:start + CHUNK]
        yield from db.execute(sql.format(marks=", ".join("?" * len(chunk))), chunk)
