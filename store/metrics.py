"""OTLP metrics, kept as bounded-cardinality series downsampled into time buckets (migration m011).

Three tables:

- `metric_series`: one row per (name, unit, kind, service, kept attributes). The decoder keeps only
  low-cardinality attributes (receiver/metrics_normalize.py drops ids); on top of that the number of
  series is capped per metric name and overall. A point of a new series past a cap is DROPPED and
  counted (meta `metric_points_dropped`, and rejected in the export's partial success), not folded
  into an "(other)" series: folding needs each folded stream's cumulative state (below), which is the
  unbounded memory the cap exists to prevent, and an "(other)" average of unrelated gauges (two GPUs,
  two models' queues) would be a number that means nothing.
- `metric_streams`: per exporter stream (the full identity: resource, scope, every attribute) the
  previous cumulative point, to turn cumulative sums and histograms into deltas. A start time other
  than the previous one, or a value below it, is a reset: the new value is then the delta. Persisted
  so that a writer restart neither double counts nor loses a delta. A point not newer than the stream's
  previous one (an exporter's retry after a nack) changes nothing. A delta counter's or histogram's stream
  is kept too, for its newest point's time only (count RETRY_GUARD): its retried points add nothing either.
  Capped per series and overall, each sort under caps of its own (a delta stream past them is counted as it
  comes, without that check; a cumulative one past them is dropped).
- `metric_points`: per series and 10 s / 1 min / 1 h bucket (as the span rollups; 10 s kept 2 h):
  `n` (samples, or observations of a histogram), `total` (sum of samples, of deltas, of observations),
  min, max, the last sample and its time, and for histograms their observations in the store's log
  buckets (store/histogram.py).

Kinds: `gauge` (gauges and non-monotonic sums: a level; a delta up-down counter is summed into its
level), `counter` (monotonic sums: deltas), `histogram` (explicit-bucket and exponential). Histogram
buckets are converted to store/histogram.py's log buckets, each bucket's count at a representative
value (an explicit bucket's midpoint clamped to the point's min/max, an exponential bucket's geometric
midpoint), so percentiles read back are as good as the exporter's buckets allow and histograms of any
layout merge across series, exporters and time. Values are scaled before bucketing (hist_scale): µs
for seconds, thousandths for anything else.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from store import histogram
from store.dashboards import resolution_for  # the span charts' buckets, so the two screens' charts line up
from store.meta import get_meta

if TYPE_CHECKING:
    from store.clickhouse.outbox import OutboxRecorder

NS = 1_000_000_000
RESOLUTIONS = (10, 60, 3600)
FINE_KEEP_S = 2 * 3600  # 10-second buckets serve the short windows only, as the span rollups'

MAX_SERIES_PER_METRIC = 200
MAX_SERIES = 5000
MAX_STREAMS_PER_SERIES = 1000
MAX_STREAMS = 20_000
DROPPED_KEY = "metric_points_dropped"

KINDS = ("gauge", "counter", "histogram")
RETRY_GUARD = -1  # metric_streams.count of a delta counter's or histogram's stream: its newest time only
# Temporality of a row from the decoder.
LEVEL, DELTA, CUMULATIVE = 0, 1, 2

# A decoded data point, as the decoder sends it (a plain tuple: pickled per point).
R_NAME, R_UNIT, R_KIND, R_SERVICE, R_ATTRS, R_STREAM, R_TEMPORALITY, R_START, R_TIME, R_VALUE, R_COUNT, R_MIN, \
    R_MAX, R_HIST = range(14)

CREATE_TABLES = (
    """CREATE TABLE metric_series (
        id INTEGER PRIMARY KEY,
        digest BLOB NOT NULL UNIQUE,      -- of name, unit, kind, service, attrs_json
        name TEXT NOT NULL,
        unit TEXT NOT NULL,
        kind TEXT NOT NULL,               -- gauge | counter | histogram
        service TEXT NOT NULL,
        attrs_json TEXT NOT NULL,         -- the kept attributes, a JSON object with sorted keys
        first_ns INTEGER NOT NULL,
        last_ns INTEGER NOT NULL          -- the newest point's time: retention drops idle series
    )""",
    "CREATE INDEX metric_series_by_name ON metric_series (name)",
    """CREATE TABLE metric_streams (
        stream BLOB PRIMARY KEY,          -- digest of the exporter's full stream identity
        series_id INTEGER NOT NULL,
        start_ns INTEGER NOT NULL,
        time_ns INTEGER NOT NULL,
        value REAL NOT NULL,              -- the previous cumulative sum (a histogram's sum)
        count INTEGER NOT NULL,           -- a histogram's previous cumulative count
        hist BLOB                         -- a histogram's previous cumulative log buckets
    ) WITHOUT ROWID""",
    """CREATE TABLE metric_points (
        series_id INTEGER NOT NULL,
        res INTEGER NOT NULL,             -- 10, 60 or 3600
        bucket INTEGER NOT NULL,          -- bucket start, epoch seconds
        n INTEGER NOT NULL,
        total REAL NOT NULL,
        min REAL,
        max REAL,
        last REAL,
        last_ns INTEGER NOT NULL,
        hist BLOB,
        PRIMARY KEY (series_id, res, bucket)
    ) WITHOUT ROWID""",
    "CREATE INDEX metric_points_by_bucket ON metric_points (res, bucket)",
)


def hist_scale(unit: str) -> float:
    """Multiplier applied to a histogram's values before log bucketing (whose resolution starts at 1):
    seconds become µs as for span latencies; other units (tokens, ms, bytes, fractions) thousandths."""
    return 1e6 if unit == "s" else 1e3


def series_digest(name: str, unit: str, kind: str, service: str, attrs_json: str) -> bytes:
    return hashlib.blake2b("\x00".join((name, unit, kind, service, attrs_json)).encode(), digest_size=16).digest()


# -- writing -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Stream:
    series_id: int
    start_ns: int
    time_ns: int
    value: float
    count: int
    hist: dict[int, int] | None


@dataclass(slots=True)
class _Bucket:
    n: int = 0
    total: float = 0.0
    min: float | None = None
    max: float | None = None
    last: float | None = None
    last_ns: int = 0
    hist: dict[int, int] | None = None


@dataclass(slots=True)
class MetricWriteStats:
    points: int = 0
    dropped: int = 0
    duplicates: int = 0
    series: int = 0
    streams: int = 0


@dataclass(slots=True)
class _Batch:
    stored: int = 0
    dropped: int = 0


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


class MetricWriter:
    """Stores decoded metric points in their own transaction. Not thread-safe: the writer process's."""

    def __init__(self, db: sqlite3.Connection, *, max_series_per_metric: int = MAX_SERIES_PER_METRIC,
                 max_series: int = MAX_SERIES, max_streams_per_series: int = MAX_STREAMS_PER_SERIES,
                 max_streams: int = MAX_STREAMS, outbox: OutboxRecorder | None = None) -> None:
        """`outbox`: a ClickHouse store's (store/clickhouse/outbox.py): each transaction's bucket
        contributions are recorded in it, inside the transaction, to be shipped as delta rows."""
        self.db = db
        self.outbox = outbox
        self.max_series_per_metric = max_series_per_metric
        self.max_series = max_series
        self.max_streams_per_series = max_streams_per_series
        self.max_streams = max_streams
        self.stats = MetricWriteStats()
        self._series: dict[bytes, int] = {}
        self._streams: dict[bytes, _Stream | None] = {}  # None: known not to be stored
        self._counts_loaded_at = float("-inf")
        self._per_name: dict[str, int] = {}
        self._total_series = 0
        # Streams with state (cumulative, or a delta up-down counter's level), and the delta counters' and
        # histograms' streams kept only to recognise a retry (count RETRY_GUARD): each under caps of its own,
        # so that a high-cardinality delta exporter never takes a cumulative stream's room.
        self._streams_per_series: dict[int, int] = {}
        self._total_streams = 0
        self._guards_per_series: dict[int, int] = {}
        self._total_guards = 0

    def _load_counts(self) -> None:
        """The cap's counts, from the store: retention may have dropped idle series and streams since."""
        self._per_name = dict(self.db.execute("SELECT name, count(*) FROM metric_series GROUP BY name").fetchall())
        self._total_series = sum(self._per_name.values())
        self._streams_per_series, self._guards_per_series = {}, {}
        for series_id, guard, streams in self.db.execute(
                "SELECT series_id, count = ?, count(*) FROM metric_streams GROUP BY 1, 2", (RETRY_GUARD,)):
            (self._guards_per_series if guard else self._streams_per_series)[series_id] = streams
        self._total_streams = sum(self._streams_per_series.values())
        self._total_guards = sum(self._guards_per_series.values())
        self._series.clear()
        self._streams.clear()
        self._counts_loaded_at = time.monotonic()

    def write(self, batches: Sequence[Sequence[Sequence[Any]]]) -> list[tuple[int, int]]:
        """Commit the points of several requests in one transaction; (stored, dropped) per request.
        On failure nothing is stored, the caches are dropped and the error raised."""
        if time.monotonic() - self._counts_loaded_at > 60.0:
            self._load_counts()
        before = (self.stats.points, self.stats.dropped, self.stats.duplicates, self.stats.series,
                  self.stats.streams)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            results = self._write(batches)
            if self.outbox is not None:
                self.outbox.flush(self.db)  # in this transaction: committed, or rolled back, with it
            self.db.execute("COMMIT")
        except BaseException:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if self.outbox is not None:
                self.outbox.reset()
            (self.stats.points, self.stats.dropped, self.stats.duplicates, self.stats.series,
             self.stats.streams) = before
            self._counts_loaded_at = float("-inf")  # reload what the rollback undid
            raise
        return [(b.stored, b.dropped) for b in results]

    def _write(self, batches: Sequence[Sequence[Sequence[Any]]]) -> list[_Batch]:
        buckets: dict[tuple[int, int, int], _Bucket] = {}
        touched: dict[int, tuple[int, Sequence[Any]]] = {}  # series id → newest point time, a row of it
        stream_updates: dict[bytes, _Stream] = {}
        results = []
        for rows in batches:
            result = _Batch()
            results.append(result)
            for row in rows:
                series_id = self._series_id(row)
                if series_id is None:
                    result.dropped += 1
                    continue
                sample = self._sample(row, series_id, stream_updates)
                if sample is _DROPPED:
                    result.dropped += 1
                    continue
                result.stored += 1
                if sample is None:  # a duplicate (a retry), or a baseline: nothing to add
                    continue
                time_ns = row[R_TIME]
                if time_ns > touched.get(series_id, (0, row))[0]:
                    touched[series_id] = (time_ns, row)
                second = time_ns // NS
                for res in RESOLUTIONS:
                    key = (series_id, res, second - second % res)
                    bucket = buckets.get(key)
                    if bucket is None:
                        bucket = buckets[key] = _Bucket()
                    _add(bucket, row[R_KIND], sample, time_ns)
        db = self.db
        for stream, state in stream_updates.items():
            db.execute("INSERT OR REPLACE INTO metric_streams (stream, series_id, start_ns, time_ns, value, count, "
                       "hist) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (stream, state.series_id, state.start_ns, state.time_ns, state.value, state.count,
                        histogram.encode(state.hist) if state.hist else None))
        for series_id, (last_ns, row) in touched.items():
            if not db.execute("UPDATE metric_series SET last_ns = max(last_ns, ?) WHERE id = ?",
                              (last_ns, series_id)).rowcount:
                # Retention dropped it (idle past the retention) since this writer cached its id.
                self._insert_series(row, series_id)
        if self.outbox is not None:
            # What this transaction adds to each bucket, before it is merged with the stored one: ClickHouse
            # folds these contributions as the merge below does (store/clickhouse/schema.py, m009).
            # Each carries its series' identity (name, unit, kind, service, attrs: a point's first fields).
            self.outbox.metric_points_added(
                [(res, start, *touched[series_id][1][R_NAME:R_ATTRS + 1], *_bucket_values(bucket))
                 for (series_id, res, start), bucket in buckets.items()])
        for (series_id, res, start), bucket in buckets.items():
            stored = db.execute("SELECT n, total, min, max, last, last_ns, hist FROM metric_points "
                                "WHERE series_id = ? AND res = ? AND bucket = ?", (series_id, res, start)).fetchone()
            if stored is not None:
                n, total, low, high, last, last_ns, blob = stored
                bucket.n += n
                bucket.total += total
                bucket.min = _min(bucket.min, low)
                bucket.max = _max(bucket.max, high)
                if last_ns > bucket.last_ns:
                    bucket.last, bucket.last_ns = last, last_ns
                if blob:
                    bucket.hist = bucket.hist if bucket.hist is not None else {}
                    histogram.decode_into(blob, bucket.hist)
            db.execute("INSERT OR REPLACE INTO metric_points (series_id, res, bucket, n, total, min, max, last, "
                       "last_ns, hist) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (series_id, res, start, bucket.n, bucket.total, bucket.min, bucket.max, bucket.last,
                        bucket.last_ns, histogram.encode(bucket.hist) if bucket.hist else None))
        dropped = sum(r.dropped for r in results)
        if dropped:
            if self.outbox is not None:
                self.outbox.metric_points_dropped += dropped
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                       "value = CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER)", (DROPPED_KEY, str(dropped)))
        self.stats.points += sum(r.stored for r in results)
        self.stats.dropped += dropped
        return results

    def _series_id(self, row: Sequence[Any]) -> int | None:
        name, unit, kind, service, attrs = row[R_NAME], row[R_UNIT], row[R_KIND], row[R_SERVICE], row[R_ATTRS]
        digest = series_digest(name, unit, kind, service, attrs)
        series_id = self._series.get(digest)
        if series_id is not None:
            return series_id
        found = self.db.execute("SELECT id FROM metric_series WHERE digest = ?", (digest,)).fetchone()
        if found is not None:
            self._series[digest] = found[0]
            return found[0]
        if self._per_name.get(name, 0) >= self.max_series_per_metric or self._total_series >= self.max_series:
            return None
        series_id = self._insert_series(row, None)
        self._series[digest] = series_id
        self._per_name[name] = self._per_name.get(name, 0) + 1
        self._total_series += 1
        self.stats.series += 1
        return series_id

    def _insert_series(self, row: Sequence[Any], series_id: int | None) -> int:
        name, unit, kind, service, attrs = row[R_NAME], row[R_UNIT], row[R_KIND], row[R_SERVICE], row[R_ATTRS]
        cursor = self.db.execute(
            "INSERT INTO metric_series (id, digest, name, unit, kind, service, attrs_json, first_ns, last_ns) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (series_id, series_digest(name, unit, kind, service, attrs), name, unit, kind, service, attrs,
             row[R_TIME], row[R_TIME]))
        return int(cursor.lastrowid or 0)

    def _stream(self, stream: bytes, series_id: int, pending: dict[bytes, _Stream],
                guard: bool = False) -> _Stream | object | None:
        """The stream's previous point; None when there is none; _DROPPED when a new stream is past a cap
        (`guard`: a delta counter's or histogram's, kept to recognise retries, under the guards' caps)."""
        if stream in pending:
            return pending[stream]
        if stream in self._streams:
            return self._streams[stream]
        found = self.db.execute("SELECT series_id, start_ns, time_ns, value, count, hist FROM metric_streams "
                                "WHERE stream = ?", (stream,)).fetchone()
        if found is not None:
            hist: dict[int, int] | None = None
            if found[5]:
                hist = {}
                histogram.decode_into(found[5], hist)
            state = _Stream(found[0], found[1], found[2], found[3], found[4], hist)
            self._streams[stream] = state
            return state
        per_series = self._guards_per_series if guard else self._streams_per_series
        total = self._total_guards if guard else self._total_streams
        if per_series.get(series_id, 0) >= self.max_streams_per_series or total >= self.max_streams:
            return _DROPPED
        per_series[series_id] = per_series.get(series_id, 0) + 1
        if guard:
            self._total_guards += 1
        else:
            self._total_streams += 1
        self.stats.streams += 1
        return None

    def _sample(self, row: Sequence[Any], series_id: int, pending: dict[bytes, _Stream]) -> Any:
        """What the point adds to its buckets: a float (a level or a counter's delta), a histogram
        delta (count, sum, min, max, log buckets), None (nothing: a retry), or _DROPPED."""
        kind, temporality = row[R_KIND], row[R_TEMPORALITY]
        if temporality == LEVEL:
            return _level_sample(row)
        stream = row[R_STREAM]
        delta_sum = temporality == DELTA and kind != "gauge"
        previous = self._stream(stream, series_id, pending, guard=delta_sum)
        if previous is _DROPPED:
            # A delta counter or histogram needs no state to be counted: past the stream caps it is only not
            # guarded against retries (below). A cumulative stream needs its previous point: dropped.
            return _level_sample(row) if delta_sum else _DROPPED
        assert previous is None or isinstance(previous, _Stream)
        start_ns, time_ns, value = row[R_START], row[R_TIME], float(row[R_VALUE])
        # A point not newer than the stream's newest is an exporter's retry (its ack lost, or refused after the
        # commit because ClickHouse did not confirm the batch): it adds nothing. Of a cumulative stream, only with
        # the same start (another start is a restart, whose times begin again); a delta point's start is the
        # previous point's time, so any point up to the newest one is a retry.
        if previous is not None and time_ns <= previous.time_ns and (temporality == DELTA
                                                                    or start_ns == previous.start_ns):
            self.stats.duplicates += 1
            return None
        if delta_sum:
            pending[stream] = self._streams[stream] = _Stream(series_id, start_ns, time_ns, 0.0, RETRY_GUARD, None)
            return _level_sample(row)
        if kind == "gauge":  # a delta up-down counter: its level is the sum of its deltas
            level = value + (previous.value if previous is not None else 0.0)
            pending[stream] = self._streams[stream] = _Stream(series_id, start_ns, time_ns, level, 0, None)
            return level
        count = int(row[R_COUNT] or 0)
        hist = row[R_HIST] if kind == "histogram" else None
        pending[stream] = self._streams[stream] = _Stream(series_id, start_ns, time_ns, value, count,
                                                          dict(hist) if hist else None)
        reset = (previous is None or start_ns != previous.start_ns or value < previous.value
                 or count < previous.count)
        if previous is None and not start_ns:
            return None  # an unknown start: this first point is only the baseline of the deltas to come
        if kind == "counter":
            return value if reset else value - previous.value  # type: ignore[union-attr]
        if reset:
            return (count, value, row[R_MIN], row[R_MAX], hist)
        assert previous is not None
        delta_hist = {}
        for b, c in (hist or {}).items():
            d = c - (previous.hist or {}).get(b, 0)
            if d > 0:
                delta_hist[b] = d
        # The min and max of a cumulative histogram are over its whole life: not this interval's.
        return (count - previous.count, value - previous.value, None, None, delta_hist)


_DROPPED = object()


def _level_sample(row: Sequence[Any]) -> Any:
    """A level's (or a delta point's) sample as it comes: a float, or a histogram's (count, sum, min, max, buckets)."""
    if row[R_KIND] == "histogram":
        return (row[R_COUNT], row[R_VALUE], row[R_MIN], row[R_MAX], row[R_HIST])
    return float(row[R_VALUE])


def _bucket_values(bucket: _Bucket) -> tuple[Any, ...]:
    """(n, total, min, max, last, last_ns, hist) of a bucket, as the outbox ships it."""
    return (bucket.n, bucket.total, bucket.min, bucket.max, bucket.last, bucket.last_ns, dict(bucket.hist or {}))


def _add(bucket: _Bucket, kind: str, sample: Any, time_ns: int) -> None:
    if kind == "histogram":
        count, total, low, high, hist = sample
        bucket.n += int(count)
        bucket.total += float(total)
        bucket.min = _min(bucket.min, low)
        bucket.max = _max(bucket.max, high)
        if hist:
            if bucket.hist is None:
                bucket.hist = {}
            for b, c in hist.items():
                bucket.hist[b] = bucket.hist.get(b, 0) + c
        if time_ns >= bucket.last_ns:
            bucket.last_ns = time_ns
        return
    bucket.n += 1
    bucket.total += sample
    if kind == "gauge":
        bucket.min = _min(bucket.min, sample)
        bucket.max = _max(bucket.max, sample)
    if time_ns >= bucket.last_ns:
        bucket.last, bucket.last_ns = sample, time_ns


def retire(db: sqlite3.Connection, now_ns: int, max_age_s: float | None) -> int:
    """Inside the caller's transaction: drop 10 s buckets past 2 h, and with an age limit everything
    older (points, streams, series with no newer point). Returns the rows deleted."""
    deleted = db.execute("DELETE FROM metric_points WHERE res = 10 AND bucket < ?",
                         (now_ns // NS - FINE_KEEP_S,)).rowcount
    if max_age_s:
        cutoff_ns = now_ns - int(max_age_s * NS)
        deleted += db.execute("DELETE FROM metric_points WHERE bucket < ?", (cutoff_ns // NS,)).rowcount
        deleted += db.execute("DELETE FROM metric_streams WHERE time_ns < ?", (cutoff_ns,)).rowcount
        deleted += db.execute("DELETE FROM metric_series WHERE last_ns < ?", (cutoff_ns,)).rowcount
    return deleted


def dropped_message(dropped: int) -> str:
    """The export response's word on points dropped by the series caps (empty when none)."""
    if not dropped:
        return ""
    return (f"{dropped} data points dropped: series limit reached ({MAX_SERIES_PER_METRIC} per metric name, "
            f"{MAX_SERIES} in all, {MAX_STREAMS_PER_SERIES} exporter streams per series)")


def dropped_points(db: sqlite3.Connection) -> int:
    return int(get_meta(db, DROPPED_KEY) or 0)


# -- reading -----------------------------------------------------------------------------------


@dataclass(slots=True)
class SeriesSummary:
    series_id: int
    name: str
    unit: str
    kind: str
    service: str
    attrs: dict[str, str]
    n: int
    total: float
    min: float | None
    max: float | None
    last: float | None  # the newest sample of a gauge
    last_ns: int
    hist: dict[int, int] = field(default_factory=dict)

    def quantile(self, q: float) -> float | None:
        value = histogram.quantiles(self.hist, [q])[0]
        return None if value is None else value / hist_scale(self.unit)

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None


def merge_series(series: Sequence[SeriesSummary]) -> SeriesSummary:
    """Several series of one metric as one: counts and totals added, histograms merged; for levels
    `last` is the mean of the series' newest samples (two GPUs' utilization: their average)."""
    first = series[0]
    hist: dict[int, int] = {}
    for s in series:
        for b, c in s.hist.items():
            hist[b] = hist.get(b, 0) + c
    lasts = [s.last for s in series if s.last is not None]
    lows = [s.min for s in series if s.min is not None]
    highs = [s.max for s in series if s.max is not None]
    return SeriesSummary(0, first.name, first.unit, first.kind, first.service if len(series) == 1 else "", {},
                         sum(s.n for s in series), sum(s.total for s in series), min(lows) if lows else None,
                         max(highs) if highs else None, sum(lasts) / len(lasts) if lasts else None,
                         max(s.last_ns for s in series), hist)


# What the Metrics screen groups, and in which order: (section, name prefixes). A name matching none
# is under "Other metrics".
SECTIONS = (
    ("GenAI client", ("gen_ai.client.",)),
    ("GenAI server", ("gen_ai.server.",)),
    ("Model serving", ("vllm:", "vllm_", "tgi_", "sglang:", "sglang_")),
    ("GPU", ("hw.gpu.", "gpu.", "DCGM_FI_", "nvidia_")),
)
OTHER_SECTION = "Other metrics"
# A model server's queue and KV cache: the saturation signals (vLLM, TGI, SGLang).
QUEUE_WAITING = ("vllm:num_requests_waiting", "tgi_queue_size", "sglang:num_queue_reqs")
RUNNING = ("vllm:num_requests_running", "tgi_batch_current_size", "sglang:num_running_reqs")
KV_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")
SATURATION_NAMES = QUEUE_WAITING + RUNNING + KV_CACHE


@dataclass(slots=True)
class ServingSaturation:
    """What model servers report of their load, from each series' newest sample (last 2 minutes)."""
    waiting: float | None  # requests queued, summed over the servers (vLLM, TGI, SGLang)
    running: float | None  # requests being served, summed
    kv_cache: float | None  # KV-cache use of the fullest server, 0..1
    servers: int  # series reporting any of these


SATURATION_FRESH_S = 120  # a server silent for longer is gone, not idle: its last queue is not today's


def saturation_query(now_s: float) -> tuple[str, tuple]:
    marks = ", ".join("?" * len(SATURATION_NAMES))
    # One max() aggregate: SQLite takes `last` from the row holding it.
    return (f"SELECT s.name, s.id, max(p.last_ns), p.last FROM metric_series s CROSS JOIN metric_points p "
            f"ON p.series_id = s.id WHERE s.name IN ({marks}) AND p.res = 10 AND p.bucket >= ? GROUP BY s.id",
            (*SATURATION_NAMES, int(now_s) - SATURATION_FRESH_S))


def parse_saturation(rows: Iterable[tuple]) -> ServingSaturation | None:
    """None when no model server reports a queue or KV cache."""
    waiting: float | None = None
    running: float | None = None
    kv: float | None = None
    series = 0
    for name, _series_id, _last_ns, last in rows:
        if last is None:
            continue
        series += 1
        if name in QUEUE_WAITING:
            waiting = (waiting or 0.0) + last
        elif name in RUNNING:
            running = (running or 0.0) + last
        elif name in KV_CACHE:
            kv = last if kv is None else max(kv, last)
    return ServingSaturation(waiting, running, kv, series) if series else None


def section_of(name: str) -> str:
    for section, prefixes in SECTIONS:
        if name.startswith(prefixes):
            return section
    return OTHER_SECTION


@dataclass(slots=True)
class MetricsOverview:
    series: list[SeriesSummary]
    dropped_points: int
    window_s: float


def window_buckets(window_s: float, now_s: float) -> tuple[int, int, int]:
    """(res, first bucket, end) of a window: buckets of `res` seconds from the one holding its start, up to now."""
    res = resolution_for(window_s)
    start = int(now_s - window_s)
    return res, start - start % res, int(now_s) + 1


def overview_queries(window_s: float, now_s: float) -> dict[str, tuple[str, tuple]]:
    """Every series seen in the window: its sums, its newest sample, and its histogram buckets."""
    res, start, end = window_buckets(window_s, now_s)
    return {
        "series": ("SELECT s.id, s.name, s.unit, s.kind, s.service, s.attrs_json, sum(p.n), sum(p.total), "
                   "min(p.min), max(p.max) FROM metric_points p JOIN metric_series s ON s.id = p.series_id "
                   "WHERE p.res = ? AND p.bucket >= ? AND p.bucket < ? GROUP BY p.series_id",
                   (res, start, end)),
        # One max() aggregate: SQLite takes `last` from the row holding it.
        "last": ("SELECT series_id, max(last_ns), last FROM metric_points WHERE res = ? AND bucket >= ? "
                 "AND bucket < ? GROUP BY series_id", (res, start, end)),
        "hist": ("SELECT series_id, hist FROM metric_points WHERE res = ? AND bucket >= ? AND bucket < ? "
                 "AND hist IS NOT NULL", (res, start, end)),
        "dropped": ("SELECT value FROM meta WHERE key = ?", (DROPPED_KEY,)),
    }


def _attrs(text: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def parse_overview(rows: dict[str, list[tuple]], window_s: float) -> MetricsOverview:
    last = {series_id: (last_ns, value) for series_id, last_ns, value in rows["last"]}
    hists: dict[int, dict[int, int]] = {}
    for series_id, blob in rows["hist"]:
        histogram.decode_into(blob, hists.setdefault(series_id, {}))
    series = []
    for series_id, name, unit, kind, service, attrs, n, total, low, high in rows["series"]:
        last_ns, value = last.get(series_id, (0, None))
        series.append(SeriesSummary(series_id, name, unit, kind, service, _attrs(attrs), int(n or 0),
                                    float(total or 0.0), low, high, value, int(last_ns or 0),
                                    hists.get(series_id, {})))
    series.sort(key=lambda s: (s.name, s.service, sorted(s.attrs.items())))
    dropped = int(rows["dropped"][0][0]) if rows.get("dropped") else 0
    return MetricsOverview(series, dropped, window_s)


@dataclass(slots=True)
class MetricChartSeries:
    label: str
    values: list[float | None]


@dataclass(slots=True)
class MetricChart:
    name: str
    unit: str
    kind: str
    res: int
    times: list[float]
    lines: list[MetricChartSeries]


def chart_query(name: str, window_s: float, now_s: float) -> tuple[str, tuple]:
    res, start, end = window_buckets(window_s, now_s)
    # CROSS JOIN: the metric's series first (by name), then each one's points by primary key; without
    # statistics for these tables the planner would walk every series' points in the window instead.
    return ("SELECT s.id, s.unit, s.kind, s.service, s.attrs_json, p.bucket, p.n, p.total, p.last, p.hist "
            "FROM metric_series s CROSS JOIN metric_points p ON p.series_id = s.id "
            "WHERE s.name = ? AND p.res = ? AND p.bucket >= ? AND p.bucket < ? ORDER BY p.bucket",
            (name, res, start, end))


def series_label(service: str, attrs: dict[str, str]) -> str:
    parts = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(attrs.items())]
    return " ".join(parts) or service or "(all)"


def parse_chart(name: str, window_s: float, now_s: float, rows: Iterable[tuple], max_lines: int = 6) -> MetricChart:
    """Gauges: each series' mean per bucket; counters: each series' sum per bucket; histograms: p50
    and p95 of every series merged, per bucket. The `max_lines` busiest series are drawn, the rest
    summed (counters) or left out (levels, which do not add up)."""
    res, start, end = window_buckets(window_s, now_s)
    times = [float(t) for t in range(start, end, res)]
    index = {int(t): i for i, t in enumerate(times)}
    unit = kind = ""
    per_series: dict[int, tuple[str, dict[int, float]]] = {}
    services: dict[int, tuple[str, bool]] = {}  # series id → (its service, whether it has attributes)
    weight: dict[int, float] = {}
    merged: dict[int, dict[int, int]] = {}
    for series_id, row_unit, row_kind, service, attrs, bucket, n, total, _last, blob in rows:
        unit, kind = row_unit, row_kind
        i = index.get(int(bucket))
        if i is None:
            continue
        if kind == "histogram":
            if blob:
                histogram.decode_into(blob, merged.setdefault(i, {}))
            continue
        value = (total / n if n else None) if kind == "gauge" else total
        if value is None:
            continue
        by_bucket = per_series.setdefault(series_id, (series_label(service, _attrs(attrs)), {}))[1]
        services[series_id] = (service, bool(attrs and attrs != "{}"))
        by_bucket[i] = value
        weight[series_id] = weight.get(series_id, 0.0) + abs(value) + 1e-9
    if len({service for service, _ in services.values()}) > 1:
        # Two services' series with the same attributes (each app's gpu0) would be two lines of one name.
        per_series = {series_id: (f"{services[series_id][0]} {label}" if services[series_id][1] else label, values)
                      for series_id, (label, values) in per_series.items()}
    lines: list[MetricChartSeries] = []
    if kind == "histogram":
        scale = hist_scale(unit)
        for q, label in ((0.5, "p50"), (0.95, "p95")):
            quantile_values: list[float | None] = [None] * len(times)
            for i, counts in merged.items():
                v = histogram.quantiles(counts, [q])[0]
                quantile_values[i] = None if v is None else v / scale
            lines.append(MetricChartSeries(label, quantile_values))
    else:
        ranked = sorted(per_series, key=lambda s: -weight[s])
        for series_id in ranked[:max_lines]:
            label, by_index = per_series[series_id]
            lines.append(MetricChartSeries(label, [by_index.get(i) for i in range(len(times))]))
        rest = ranked[max_lines:]
        if rest and kind == "counter":
            summed: list[float | None] = [None] * len(times)
            for series_id in rest:
                for i, v in per_series[series_id][1].items():
                    summed[i] = (summed[i] or 0.0) + v
            lines.append(MetricChartSeries(f"{len(rest)} more", summed))
    return MetricChart(name, unit, kind, res, times, lines)


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
