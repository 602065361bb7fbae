"""The reads of the alert engine (llmobs_tui.alerting): the rollups of one evaluation, read once and
shared by its rules (SharedRollups), and what rollups cannot answer: the example call a finding
links to, and the evaluation events of a quality SLO. Every one is a typed function over the
schema, so the engine spells no column (issue 12)."""

from __future__ import annotations

import functools
import operator
import sqlite3
import threading
from array import array
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import zstandard

from store import histogram
from store.queries import GROUP_COLUMNS, GroupStats, rollup_ranges
from store.writer import HISTOGRAMS, ROLLUP_COUNTERS

# (trace id, span id of the call to open the trace on, if known)
Example = tuple[bytes, bytes | None]


def _example(db: sqlite3.Connection, since_ns: int, condition: str, params: tuple = (), table: str = "spans",
             order: str = "start_ns DESC") -> Example | None:
    """(trace id, span id) of the most telling match: the span is the one the Alerts screen opens
    the trace on. From the traces table (a cost budget): the trace's costliest call."""
    if table == "traces":
        row = db.execute(
            f"SELECT trace_id FROM traces WHERE start_ns >= ? AND {condition} ORDER BY {order} LIMIT 1",
            (since_ns, *params)).fetchone()
        if row is None:
            return None
        span = db.execute("SELECT span_id FROM spans WHERE trace_id = ? AND billed = 1 "
                          "ORDER BY cost_nusd DESC LIMIT 1", (row[0],)).fetchone()
        return row[0], span[0] if span else None
    row = db.execute(
        f"SELECT trace_id, span_id FROM {table} WHERE start_ns >= ? AND {condition} ORDER BY {order} LIMIT 1",
        (since_ns, *params)).fetchone()
    return (row[0], row[1]) if row else None


def costliest_trace_example(db: sqlite3.Connection, since_ns: int, feature: str | None = None) -> Example | None:
    """The costliest trace since `since_ns` (of a feature, or of all), on its costliest call."""
    scope, params = ("", ()) if feature is None else (" AND feature = ?", (feature,))
    return _example(db, since_ns, "1" + scope, params, table="traces", order="cost_nusd DESC")


def over_token_budget_example(db: sqlite3.Connection, since_ns: int, feature: str, limit: int) -> Example | None:
    """The latest billed call of a feature over `limit` input + output tokens."""
    return _example(db, since_ns, "billed = 1 AND feature = ? AND "
                    "coalesce(input_tokens, 0) + coalesce(output_tokens, 0) > ?", (feature, limit))


def prompt_version_example(db: sqlite3.Connection, since_ns: int, feature: str, version: str) -> Example | None:
    """The costliest billed call of a feature's prompt version."""
    return _example(db, since_ns, "billed = 1 AND feature = ? AND prompt_version = ?", (feature, version),
                    order="cost_nusd DESC")


def feature_call_example(db: sqlite3.Connection, since_ns: int, feature: str) -> Example | None:
    """The latest billed call of a feature."""
    return _example(db, since_ns, "billed = 1 AND feature = ?", (feature,))


def error_example(db: sqlite3.Connection, since_ns: int, name: str, subclass: bool) -> Example | None:
    """The latest call failed with error class (or, `subclass`, error subclass) `name`: the failed
    billed call (the provider's 429 itself) before a wrapper span that inherited it."""
    column = "error_subclass" if subclass else "error_class"
    return _example(db, since_ns, f"{column} = ?", (name,), order="billed DESC, start_ns DESC")


def streaming_call_example(db: sqlite3.Connection, since_ns: int, model: str) -> Example | None:
    """The latest call of a model that streamed (has a time to first token)."""
    return _example(db, since_ns, "(request_model = ? OR response_model = ?) AND ttft_ns IS NOT NULL", (model, model))


def slow_first_token_example(db: sqlite3.Connection, since_ns: int, model: str, ttft_over_ns: int) -> Example | None:
    """The slowest-to-first-token call of a model over `ttft_over_ns`."""
    return _example(db, since_ns, "(request_model = ? OR response_model = ?) AND ttft_ns > ?",
                    (model, model, ttft_over_ns), order="ttft_ns DESC")


def quality_events(db: sqlite3.Connection, threshold: float, start_ns: int, end_ns: int, evaluation: str | None = None,
                   feature: str | None = None, model: str | None = None) -> tuple[int, int]:
    """(bad, total) evaluation events in [start_ns, end_ns): bad scores under `threshold`."""
    sql = ("SELECT count(*), coalesce(sum(l.eval_score < ?), 0) FROM logs l "
           "LEFT JOIN spans s ON s.trace_id = l.trace_id AND s.span_id = l.span_id "
           "WHERE l.eval_score IS NOT NULL AND l.time_ns >= ? AND l.time_ns < ?")
    params: list[Any] = [threshold, start_ns, end_ns]
    if evaluation:
        sql += " AND l.eval_name = ?"
        params.append(evaluation)
    if feature:
        sql += " AND s.feature = ?"
        params.append(feature)
    if model:
        sql += " AND coalesce(s.request_model, s.response_model) = ?"
        params.append(model)
    total, bad = db.execute(sql, params).fetchone()
    return bad, total


SLO_KINDS = ("availability", "validity", "ttft", "latency", "cost_per_call", "quality")


def slo_example(db: sqlite3.Connection, kind: str, threshold: float, since_ns: int, feature: str | None = None,
                model: str | None = None) -> Example | None:
    """The call that made an SLO's value: the slowest, the costliest, or the latest failed one;
    for a quality SLO (any kind not above) the latest evaluation under `threshold`."""
    scope = ""
    params: list[Any] = []
    if feature:
        scope += " AND feature = ?"
        params.append(feature)
    if model:
        scope += " AND (request_model = ? OR response_model = ?)"
        params += [model, model]
    condition = {
        "availability": "billed = 1 AND error_class = 'api'",
        "validity": "billed = 1 AND error_class = 'validation'",
        "ttft": "billed = 1 AND ttft_ns > ?",
        "latency": "billed = 1 AND duration_ns > ?",
        "cost_per_call": "billed = 1 AND cost_nusd > ?",
    }.get(kind)
    if condition is None:
        row = db.execute(
            "SELECT trace_id, span_id FROM logs WHERE eval_score < ? AND time_ns >= ? ORDER BY time_ns DESC LIMIT 1",
            (threshold, since_ns)).fetchone()
        return (row[0], row[1]) if row and row[0] else None
    if "?" in condition:
        params.insert(0, int(threshold * 1e9))  # seconds → ns; USD → nUSD
    order = {"ttft": "ttft_ns DESC", "latency": "duration_ns DESC",
             "cost_per_call": "cost_nusd DESC"}.get(kind, "start_ns DESC")
    return _example(db, since_ns, condition + scope, tuple(params), order=order)


# --- rollups shared by the rules of one evaluation ---------------------------------------------------

DAY_S = 86400
# Per dimension set of a piece: the counters summed, and histograms' blobs concatenated (pairs of
# bucket and count: a concatenation is one valid encoding, decoding adds repeated buckets).
_SUMS = ", ".join(f"sum(r.{c})" for c in ROLLUP_COUNTERS)
_CONCAT = "CAST(group_concat(r.{0}, x'') AS BLOB)"
_PIECE_WHERE = "FROM rollups r WHERE r.res = ? AND r.bucket >= ? AND r.bucket < ? GROUP BY r.dims_id"
_N_COUNTERS = len(ROLLUP_COUNTERS)


# Where window_pieces cuts a range of hour rows, and of minute rows: windows of different lengths
# share their whole days, and the windows ending now (5 minutes … 6 hours) their whole 10 minutes.
# A day a window covers only part of is cut at whole 6 hours: today's hours, read by the 6 h, 3 d
# and 7 d windows and the drift rule's baseline (which ends an hour earlier), were read as three
# overlapping pieces (0–14 h, 0–15 h, 10–15 h: 34 hours of rows for 15), and so was the week's first day.
_CUT_S = {3600: DAY_S, 60: 600}
_PART_OF_DAY_S = 6 * 3600


def window_pieces(start_s: int, end_s: int) -> list[tuple[int, int, int]]:
    """rollup_ranges(start_s, end_s) with its ranges cut at UTC midnights (hour rows; a day not whole
    in the range at every 6 hours too) and at whole 10 minutes (minute rows): (res, first bucket,
    end bucket exclusive)."""
    pieces = []
    for res, lo, hi in rollup_ranges(start_s, end_s):
        step = _CUT_S.get(res)
        while lo < hi:
            cut = hi if step is None else min(hi, (lo // step + 1) * step)
            if step == DAY_S and (lo % DAY_S or cut % DAY_S):  # part of a day: its whole 6 hours
                cut = min(cut, (lo // _PART_OF_DAY_S + 1) * _PART_OF_DAY_S)
            pieces.append((res, lo, cut))
            lo = cut
    return pieces


def _decode(blob: bytes | None) -> dict[int, int]:
    """histogram.decode_into(blob, {}). Compiled, it sums a bucket's repeats in C before the dict (a
    week of concatenated rows is ~10^5 pairs per histogram: 0.12 ms against 10). In Python, in half the
    time of decode_into: the keys made in one C call, then one add per pair without a .get."""
    if not blob:
        return {}
    if histogram.COMPILED:
        counts: dict[int, int] = {}
        histogram.decode_into(blob, counts)
        return counts
    flat = array("i")
    flat.frombytes(blob)
    buckets = flat[0::2]
    counts = dict.fromkeys(buckets, 0)
    for b, c in zip(buckets, flat[1::2]):
        counts[b] += c
    return counts


# One rollup read an alert evaluation plans (SharedRollups.prefetch_all): windows, by, where, hists.
PlannedRead = tuple[Sequence[tuple[int, int]], Sequence[str], Mapping[str, str | None] | None, Sequence[str]]


class SharedRollups:
    """grouped_rollups for the many windows one alert evaluation asks about, each rollup row read once.

    The rules ask for ~30 windows (SLO burn windows and SLO periods, today, the last hour, 15 minutes,
    the prior week) and most of them cover days of hour rows: read window by window, the same week of
    rows was read and its histograms decoded a dozen times (~0.45 µs a row to read, ~80 ns a histogram
    bucket to decode). Here a window is a set of pieces (window_pieces: whole days are shared), each
    piece one query per store snapshot summing the counters and concatenating the histograms per
    dimension set, and each (piece, group, histogram) decoded once: the blobs of the group's dimension
    sets joined, then decoded (not each set's decoded and the dicts added). Counters and histogram
    counts are integers summed in another order: the totals are exactly grouped_rollups' (a test
    compares them). Live for one read snapshot only: the pieces are not invalidated.

    Decoded histograms are also kept from one evaluation to the next, keyed by their blobs' bytes
    (`decoded`): a past day's blobs are the same bytes 10 s later, and decoding them was a third of an
    evaluation. Keyed by content, a changed row is a new key: nothing to invalidate, nothing stale."""

    def __init__(self, db: sqlite3.Connection, hists: Collection[str] = (),
                 decoded: dict[bytes, dict[int, int]] | None = None) -> None:
        """`hists`: the histograms read with every piece's counters (those most windows want); any
        other is read per piece when first asked for. A piece's query costs ~1.3 µs a row for the
        counters and ~0.3 µs a row per histogram, a query of its own ~0.5 µs a row more.
        `decoded`: the last evaluation's SharedRollups.decoded (read only)."""
        self.db = db
        self._previous = decoded or {}
        # The histograms decoded (or reused) by this evaluation, by blob: the next one's `decoded`.
        # Only these are kept, so the cache holds about one evaluation's blobs (a few MB at 3M spans).
        self.decoded: dict[bytes, dict[int, int]] = {}
        self._with_counters = tuple(h for h in HISTOGRAMS if h in hists)
        self._counters: dict[tuple[int, int, int], dict[int, tuple[int, ...]]] = {}
        self._blobs: dict[tuple[tuple[int, int, int], str], dict[int, bytes | None]] = {}
        self._decoded: dict[tuple[tuple[int, int, int], tuple[int, ...], str], dict[int, int]] = {}
        self._dims: dict[int, dict[str, str]] | None = None

    def prefetch(self, windows: Sequence[tuple[int, int]], where: dict[str, str] | None = None,
                 hists: Sequence[str] = ()) -> None:
        """Nothing to do here: each rollup row is read once per evaluation whatever the windows (the
        ClickHouse store reads several windows in one query instead)."""

    def prefetch_all(self, reads: Sequence[PlannedRead]) -> None:
        """Nothing to do here either (the ClickHouse store reads every window of an evaluation in one query)."""

    def _piece(self, piece: tuple[int, int, int]) -> dict[int, tuple[int, ...]]:
        """The piece's summed counters per dimension set (and its `hists` blobs, kept aside)."""
        counters = self._counters.get(piece)
        if counters is None:
            blobs = "".join(", " + _CONCAT.format(h) for h in self._with_counters)
            counters = self._counters[piece] = {}
            kept: list[dict[int, bytes | None]] = [{} for _ in self._with_counters]
            for row in self.db.execute(f"SELECT r.dims_id, {_SUMS}{blobs} {_PIECE_WHERE}", piece):
                counters[row[0]] = row[1:1 + _N_COUNTERS]
                for by_dims, blob in zip(kept, row[1 + _N_COUNTERS:]):
                    by_dims[row[0]] = blob
            for name, by_dims in zip(self._with_counters, kept):
                self._blobs[(piece, name)] = by_dims
        return counters

    def _hist(self, piece: tuple[int, int, int], members: tuple[int, ...], name: str) -> dict[int, int]:
        """Histogram `name` of a group's dimension sets over a piece: their blobs joined (one valid
        encoding) and decoded once. Decoding each set's blob and adding the dicts cost as much again
        as the decoding: ~100 buckets a set, a hundred sets, for every piece and histogram."""
        key = (piece, members, name)
        counts = self._decoded.get(key)
        if counts is None:
            blobs = self._blobs.get((piece, name))
            if blobs is None:
                blobs = self._blobs[(piece, name)] = dict(
                    self.db.execute(f"SELECT r.dims_id, {_CONCAT.format(name)} {_PIECE_WHERE}", piece).fetchall())
            get = blobs.get
            joined = b"".join([blob for blob in map(get, members) if blob])
            if not joined:
                counts = {}
            else:
                counts = self.decoded.get(joined) or self._previous.get(joined) or _decode(joined)
                self.decoded[joined] = counts  # never changed: grouped() adds from it into its own dicts
            self._decoded[key] = counts
        return counts

    def _dimension_sets(self) -> dict[int, dict[str, str]]:
        if self._dims is None:
            columns = [c for names in GROUP_COLUMNS.values() for c in names]
            self._dims = {row[0]: dict(zip(columns, row[1:]))
                          for row in self.db.execute(f"SELECT id, {', '.join(columns)} FROM dims")}
        return self._dims

    def grouped(self, start_s: int, end_s: int, by: Sequence[str], where: dict[str, str] | None = None,
                hists: Sequence[str] = ()) -> list[GroupStats]:
        """What store.queries.grouped_rollups(db, start_s, end_s, by, where, hists) returns."""
        for name in by:
            if name not in GROUP_COLUMNS:
                raise ValueError(f"cannot group by {name!r}: choose from {', '.join(GROUP_COLUMNS)}")
        columns = [c for name in by for c in GROUP_COLUMNS[name]]
        scope = [(column, value or "") for column, value in (where or {}).items()]
        totals_only = not columns and not where  # the per-bucket total rows (dims_id 0) sum every set
        wanted = [(h, h[5:]) for h in hists]  # hist_ttft → GroupStats.ttft
        # The dimension sets in scope and their group keys (the totals row 0 has no dimension set).
        targets: dict[int, tuple] = {0: ()} if totals_only else {
            dims_id: tuple(values[c] for c in columns) for dims_id, values in self._dimension_sets().items()
            if all(values[c] == v for c, v in scope)}
        groups: dict[tuple, GroupStats] = {}
        for piece in window_pieces(start_s, end_s):
            rows = self._piece(piece)
            members: dict[tuple, list[int]] = {}  # group key → its dimension sets with rows in the piece
            for dims_id, key in targets.items():
                counters = rows.get(dims_id)
                if counters is None:
                    continue
                group = groups.get(key)
                if group is None:
                    group = groups[key] = GroupStats(key={c: v or None for c, v in zip(columns, key)})
                group.counters = list(map(operator.add, group.counters, counters))
                members.setdefault(key, []).append(dims_id)
            for key, sets in members.items():
                group = groups[key]
                for column, name in wanted:
                    counts = getattr(group, name)
                    get = counts.get
                    for b, c in self._hist(piece, tuple(sets), column).items():
                        counts[b] = get(b, 0) + c
        # As grouped_rollups: a group can net to nothing (its calls moved to their feature).
        result = [g for g in groups.values() if any(g.counters) or g.latency or g.ttft]
        result.sort(key=lambda g: (-g["cost_nusd"], -g["calls"], tuple(str(v) for v in g.key.values())))
        return result


# --- runaway agents (llmobs_tui/alerting/runaway.py) --------------------------------------------------
# A running agent's root span (and its agent span) is exported when it ENDS, so while it runs the
# store holds its LLM and tool calls under a trace whose root has not arrived (traces.root_known = 0).
# The rule reads only what happened in its window: the newest tool spans (spans_tool_by_start) and
# the traces of the newest spans (spans_by_start), each bounded by a row limit, never a table scan.

_THREAD = threading.local()  # a zstd decompressor per thread: the engine's and the TUI's run at once


def _decompress(raw: bytes) -> bytes:
    decompressor = getattr(_THREAD, "zstd", None)
    if decompressor is None:
        decompressor = _THREAD.zstd = zstandard.ZstdDecompressor()
    return decompressor.decompress(raw)


RUNAWAY_TOOL_COLUMNS = ("id", "trace_id", "span_id", "tool_name", "start_ns", "root_known", "conversation_id", "raw")


def runaway_tool_calls_query(since_ns: int, raw_after_id: int, limit: int) -> tuple[str, tuple]:
    """The newest `limit` tool spans started since `since_ns`, with their trace's root_known and
    conversation; `raw` only for spans.id > `raw_after_id` (those the caller has not digested yet:
    ids grow in commit order, so a span seen before is never read twice)."""
    return ("SELECT s.id, s.trace_id, s.span_id, s.tool_name, s.start_ns, t.root_known, t.conversation_id, "
            "CASE WHEN s.id > ? THEN s.raw END "
            "FROM spans s INDEXED BY spans_tool_by_start JOIN traces t ON t.trace_id = s.trace_id "
            "WHERE s.kind = 'tool' AND s.start_ns >= ? ORDER BY s.start_ns DESC LIMIT ?",
            (raw_after_id, since_ns, limit))


def span_raws_query(ids: Sequence[int]) -> tuple[str, tuple]:
    """(id, raw) of these span rows (the caller bounds `ids`: one parameter each)."""
    return f"SELECT id, raw FROM spans WHERE id IN ({', '.join('?' * len(ids))})", tuple(ids)


RUNAWAY_TRACE_COLUMNS = ("trace_id", "root_name", "llm_calls", "tool_calls", "tokens", "cost_nusd", "start_ns",
                         "end_ns", "conversation_id", "last_span_id")


def running_traces_query(since_ns: int, span_limit: int) -> tuple[str, tuple]:
    """Traces still running: their root has not arrived and one of the newest `span_limit` spans
    started since `since_ns` is theirs. With their steps so far (LLM calls and tool calls), tokens,
    cost and latest span (what a finding opens the trace on). The per-trace counts run only for
    these traces (a handful), each a range of spans_by_trace."""
    return ("SELECT t.trace_id, t.root_name, t.llm_calls, "
            "(SELECT count(*) FROM spans c WHERE c.trace_id = t.trace_id AND c.kind = 'tool'), "
            "t.input_tokens + t.output_tokens, t.cost_nusd, t.start_ns, t.end_ns, t.conversation_id, "
            "(SELECT l.span_id FROM spans l WHERE l.trace_id = t.trace_id ORDER BY l.end_ns DESC LIMIT 1) "
            "FROM traces t WHERE t.root_known = 0 AND t.trace_id IN "
            "(SELECT r.trace_id FROM spans r INDEXED BY spans_by_start WHERE r.start_ns >= ? "
            "ORDER BY r.start_ns DESC LIMIT ?)",
            (since_ns, span_limit))


@functools.cache
def _argument_keys() -> tuple[bytes, ...]:
    """The attribute keys a tool span's arguments are read from (store.content.TOOL_IO_KEYS), as bytes."""
    from store.content import TOOL_IO_KEYS

    return tuple(arguments.encode() for arguments, _result in TOOL_IO_KEYS)


def tool_arguments_text(raw: bytes | None, compressed: bool = True) -> str | None:
    """A stored tool span's arguments (spans.raw: zstd protobuf; `compressed=False`: the plain protobuf, as
    ClickHouse keeps it), normalized so that the same call reads the same: JSON re-serialized with sorted keys
    and no spacing, other text with its runs of white space collapsed. None when the span carries no arguments
    (content not captured, or a damaged blob): "the same arguments" cannot be claimed for what was never
    seen."""
    if not raw:
        return None
    if compressed:
        try:
            span = _decompress(raw)
        except Exception:  # a damaged blob: no arguments to compare, never a failed evaluation
            return None
    else:
        span = raw
    # An attribute's key is in the serialized span as it is: without any key arguments are read from, there
    # are none, and the span is not parsed (content capture is off by default in the GenAI instrumentations, so
    # most tool spans carry none): 10 µs instead of 32–38 a span, a few thousand a first evaluation. A loop, not
    # any() over a generator: 1–2 µs less a span.
    for key in _argument_keys():
        if key in span:
            break
    else:
        return None
    import json

    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from store.content import tool_io
    from store.otlp_values import any_value

    try:
        proto = Span.FromString(span)
    except Exception:
        return None
    arguments, _result = tool_io({kv.key: any_value(kv.value) for kv in proto.attributes})
    if arguments is None:
        return None
    if isinstance(arguments, (dict, list)):
        try:
            return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            pass
    return " ".join(str(arguments).split())
