"""Totals since the store began, per bounded label set: what `GET /metrics` exposes as Prometheus
counters and histograms (the formatting is receiver/prometheus.py's).

Read from the hour rollups (every billed call is in them, at 60 s and 3600 s alike), never from
spans, so a scrape costs the same at 3M spans as at 3k. Labels are the rollup dimensions that stay
bounded (design §2 rule 7): service, provider, model, operation. Feature, tenant, prompt and
variant are rollup dimensions too but are folded away here; user and conversation never reach a
rollup at all.

Retention deletes old rollups, and a Prometheus counter must never go down (a drop reads as a
restart of the process, and `rate()` then counts the whole total again). So whatever retention
deletes from the hour rollups is first added, in the same transaction, to a ledger in `meta`
(`retire`): the totals are the retired ledger plus the rollups still kept, read in one snapshot, and
a restart reads the same numbers back from the file.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from store import histogram
from store.meta import get_meta, set_meta
from store.writer import ROLLUP_COUNTERS

LABELS = ("service", "provider", "model", "operation")
# The per-call histograms exposed. TPOT doubles as the source of decode rate and chunk gap (formatting).
HISTOGRAMS = ("hist_latency", "hist_ttft", "hist_tpot")
RETIRED_KEY = "lifetime_totals.retired"  # meta: what retention removed from the hour rollups, per label set
_LEDGER_VERSION = 1
# A hostile or buggy sender can make up a model name per request. Label sets beyond this many (in the
# order they were first seen, so the set kept never changes) are folded into one OTHER series.
MAX_LABEL_SETS = 500
OTHER = "(other)"
HOUR = 3600
GAUGE_WINDOW_S = 300  # the cache-hit gauge's window, as `report --window 5m`

_COUNTER_INDEX = {name: i for i, name in enumerate(ROLLUP_COUNTERS)}


@dataclass(slots=True)
class SeriesTotals:
    """One label set's totals since the store began."""

    labels: tuple[str, str, str, str]  # LABELS, '' where the span named none
    first_dims_id: int  # the order label sets were first seen in: decides which are folded into OTHER
    counters: list[int] = field(default_factory=lambda: [0] * len(ROLLUP_COUNTERS))
    histograms: dict[str, dict[int, int]] = field(default_factory=lambda: {h: {} for h in HISTOGRAMS})

    def __getitem__(self, name: str) -> int:
        return self.counters[_COUNTER_INDEX[name]]

    def add(self, counters: Iterable[int], blobs: Iterable[bytes | None]) -> None:
        for i, value in enumerate(counters):
            self.counters[i] += value or 0
        for name, blob in zip(HISTOGRAMS, blobs):
            histogram.decode_into(blob, self.histograms[name])

    def merge(self, other: SeriesTotals) -> None:
        for i, value in enumerate(other.counters):
            self.counters[i] += value
        for name, counts in other.histograms.items():
            mine = self.histograms[name]
            for bucket, count in counts.items():
                mine[bucket] = mine.get(bucket, 0) + count


def _grouped_hours_query(where: str) -> str:
    sums = ", ".join(f"sum(r.{c})" for c in ROLLUP_COUNTERS)
    # group_concat of the pair arrays is itself a valid encoding (decoding adds repeated buckets):
    # one blob per label set instead of one Python round trip per hour row.
    blobs = ", ".join(f"CAST(group_concat(r.{h}, x'') AS BLOB)" for h in HISTOGRAMS)
    labels = ", ".join(f"d.{c}" for c in LABELS)
    return (f"SELECT {labels}, min(d.id), {sums}, {blobs} FROM rollups r JOIN dims d ON d.id = r.dims_id "
            f"WHERE r.res = {HOUR}{where} GROUP BY {labels}")


# Every label set's hour rollups, summed. dims_id 0 (the per-bucket total rows) has no dims row, so
# the join leaves it out and nothing is counted twice.
KEPT_TOTALS_SQL = _grouped_hours_query("")
_RETIRING_SQL = _grouped_hours_query(" AND r.bucket < ?")
_SINCE_SQL = _grouped_hours_query(" AND r.bucket >= ?")


def _parse_grouped(rows: Iterable[tuple]) -> dict[tuple, SeriesTotals]:
    n_labels, n_counters = len(LABELS), len(ROLLUP_COUNTERS)
    out: dict[tuple, SeriesTotals] = {}
    for row in rows:
        labels = tuple(row[:n_labels])
        series = SeriesTotals(labels=labels, first_dims_id=row[n_labels])
        counters_at = n_labels + 1
        series.add(row[counters_at:counters_at + n_counters], row[counters_at + n_counters:])
        out[labels] = series
    return out


def parse_ledger(text: str | None) -> dict[tuple, SeriesTotals]:
    """The retired ledger as stored in meta (None or unreadable: nothing retired yet)."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict) or data.get("v") != _LEDGER_VERSION:
        return {}
    out: dict[tuple, SeriesTotals] = {}
    for entry in data.get("series", ()):
        labels = tuple(entry["labels"])
        series = SeriesTotals(labels=labels, first_dims_id=int(entry["first_dims_id"]))
        counters = entry["counters"]
        # A counter added to ROLLUP_COUNTERS later is 0 in an older ledger.
        for name, value in counters.items():
            if name in _COUNTER_INDEX:
                series.counters[_COUNTER_INDEX[name]] = int(value)
        for name, blob in entry.get("histograms", {}).items():
            if name in series.histograms:
                histogram.decode_into(base64.b64decode(blob), series.histograms[name])
        out[labels] = series
    return out


def format_ledger(series: Iterable[SeriesTotals]) -> str:
    entries = []
    for s in series:
        encoded = {name: histogram.encode(counts) for name, counts in s.histograms.items()}
        entries.append({
            "labels": list(s.labels),
            "first_dims_id": s.first_dims_id,
            "counters": {name: value for name, value in zip(ROLLUP_COUNTERS, s.counters) if value},
            "histograms": {name: base64.b64encode(blob).decode() for name, blob in encoded.items() if blob},
        })
    return json.dumps({"v": _LEDGER_VERSION, "series": entries}, separators=(",", ":"))


def retire(db: sqlite3.Connection, before_s: int) -> None:
    """Add the hour rollups that `DELETE FROM rollups WHERE bucket < before_s` is about to remove to
    the retired ledger. Call it inside the deleting transaction, just before the delete: the totals
    a reader sees then never move, whichever side of the commit it reads."""
    retiring = _parse_grouped(db.execute(_RETIRING_SQL, (before_s,)))
    if not retiring:
        return
    ledger = parse_ledger(get_meta(db, RETIRED_KEY))
    _add_into(ledger, retiring)
    set_meta(db, RETIRED_KEY, format_ledger(ledger.values()))


def fold(series: Iterable[SeriesTotals], max_label_sets: int = MAX_LABEL_SETS) -> list[SeriesTotals]:
    """At most `max_label_sets` label sets, the first seen; the rest summed into one OTHER series."""
    ordered = sorted(series, key=lambda s: s.first_dims_id)
    kept = ordered[:max_label_sets]
    if len(ordered) > max_label_sets:
        other = SeriesTotals(labels=(OTHER, OTHER, OTHER, OTHER), first_dims_id=ordered[max_label_sets].first_dims_id)
        for s in ordered[max_label_sets:]:
            other.merge(s)
        kept.append(other)
    return kept


def _add_into(totals: dict[tuple, SeriesTotals], more: dict[tuple, SeriesTotals]) -> None:
    for labels, series in more.items():
        mine = totals.get(labels)
        if mine is None:
            totals[labels] = series
        else:
            mine.merge(series)
            mine.first_dims_id = min(mine.first_dims_id, series.first_dims_id)




def read_totals(db: sqlite3.Connection, max_label_sets: int = MAX_LABEL_SETS) -> list[SeriesTotals]:
    """Totals since the store began per label set: the retired ledger plus the hour rollups kept.
    Run it inside one read transaction (store.connection.read_snapshot), so that a retention pass
    committing in between cannot make a total count twice or not at all."""
    totals = parse_ledger(get_meta(db, RETIRED_KEY))
    _add_into(totals, _parse_grouped(db.execute(KEPT_TOTALS_SQL)))
    return fold(totals.values(), max_label_sets)


class TotalsCache:
    """read_totals for a scrape every few seconds. Reading every hour rollup costs ~140 ms of CPU at
    3M spans (the rows are wide: seven histograms each), nearly all of it in hours that no longer
    change. So the hours before the previous one ("settled") are read once and kept; each scrape
    reads only the current and previous hour. The settled part is read again when retention moves
    rows into the ledger (its text changes) and at least every `refresh_s`, which bounds how late a
    span that arrives more than an hour after it started is counted (a span started 3 h ago and
    delivered now adds to a settled hour; until the refresh, the totals miss it, and never drop)."""

    def __init__(self, refresh_s: float = 300.0, max_label_sets: int = MAX_LABEL_SETS) -> None:
        self.refresh_s = refresh_s
        self.max_label_sets = max_label_sets
        self.full_reads = 0
        self._settled: dict[tuple, SeriesTotals] = {}
        self._key: tuple[int, str | None] | None = None  # (first unsettled hour, ledger text) it was read at
        self._read_at = float("-inf")

    def read(self, db: sqlite3.Connection, now_s: float, monotonic_s: float) -> list[SeriesTotals]:
        """Inside one read transaction, as read_totals. `monotonic_s`: a monotonic clock, for the refresh."""
        split = int(now_s) // HOUR * HOUR - HOUR
        ledger = get_meta(db, RETIRED_KEY)
        key = (split, ledger)
        if key != self._key or monotonic_s - self._read_at >= self.refresh_s:
            settled = parse_ledger(ledger)
            _add_into(settled, _parse_grouped(db.execute(_RETIRING_SQL, (split,))))
            self._settled, self._key, self._read_at = settled, key, monotonic_s
            self.full_reads += 1
        totals: dict[tuple, SeriesTotals] = {}
        for labels, series in self._settled.items():  # copies: the cached part is never added to
            copy = SeriesTotals(labels=series.labels, first_dims_id=series.first_dims_id,
                                counters=list(series.counters),
                                histograms={name: dict(counts) for name, counts in series.histograms.items()})
            totals[labels] = copy
        _add_into(totals, _parse_grouped(db.execute(_SINCE_SQL, (split,))))
        return fold(totals.values(), self.max_label_sets)


@dataclass(slots=True)
class ScrapeData:
    """What one scrape reads from the store."""

    totals: list[SeriesTotals]
    # label set → (cache-read tokens, input tokens) over the last GAUGE_WINDOW_S
    recent_cache: dict[tuple[str, ...], tuple[int, int]]


def read_for_scrape(db: sqlite3.Connection, now_s: float, cache: TotalsCache | None = None,
                    gauge_window_s: int = GAUGE_WINDOW_S) -> ScrapeData:
    """The totals (through `cache` when given) and the recent cache reads, in one read transaction."""
    from store.connection import read_snapshot
    from store.queries import grouped_rollups

    with read_snapshot(db):
        totals = read_totals(db) if cache is None else cache.read(db, now_s, time.monotonic())
        recent = grouped_rollups(db, int(now_s) - gauge_window_s, int(now_s), list(LABELS), hists=())
    kept = {s.labels for s in totals}
    recent_cache: dict[tuple[str, ...], tuple[int, int]] = {}
    for group in recent:
        labels = tuple(group.key[name] or "" for name in LABELS)
        if labels not in kept:
            labels = (OTHER,) * len(LABELS)
        read, inp = recent_cache.get(labels, (0, 0))
        recent_cache[labels] = (read + group["cache_read_tokens"], inp + group["input_tokens"])
    return ScrapeData(totals, recent_cache)


def scrape_store(db_path: str, now_s: float, cache: TotalsCache | None = None,
                 deadline_s: float = 10.0) -> ScrapeData:
    """read_for_scrape on a fresh read-only connection, interrupted (sqlite3.OperationalError) once
    `deadline_s` has passed, so that a stuck read never holds a thread or the WAL for long."""
    from store.connection import open_reader

    deadline = time.monotonic() + deadline_s
    db = open_reader(db_path)
    try:
        db.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        return read_for_scrape(db, now_s, cache)
    finally:
        db.close()
