"""The writer's side of the ClickHouse sink: what one SQLite transaction changed, recorded in the
clickhouse_outbox table (m013) inside that same transaction (store/clickhouse/sink.py ships it).

SpanWriter holds one `OutboxRecorder` only when a ClickHouse store is configured (`writer.outbox`); without
one every hook is a single `is None` test. A batch records keys, not rows (the shipper reads the rows when
it ships), except the rollup deltas, which exist nowhere else: they are summed per ClickHouse rollup key
over the transaction (a −old/+new pair inside one batch nets out), and shipped as signed rows.

Change markers are found rather than hooked: a marker is written by the writer's ChangeTracker and, when a
price table changes, by whoever records it (at the writer's start, outside any batch), so each batch takes
the `changes` rows past the last id it recorded (kept in the working store's meta, in the same transaction).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from typing import Any

# As store/writer.py's RESOLUTIONS and FINE_RESOLUTION (ClickHouse keeps 10 s buckets as totals only).
_RESOLUTIONS = (60, 3600)
_FINE = 10
_NO_DIMS = ("",) * 9
CHANGES_RECORDED = "clickhouse_changes_recorded"  # meta: the last `changes` id an outbox batch holds


class OutboxRecorder:
    def __init__(self) -> None:
        self._last_version = 0
        self.reset()

    def reset(self) -> None:
        """Forget what the current transaction recorded (it rolled back)."""
        self.spans: set[int] = set()
        self.gone_spans: list[tuple[bytes, bytes, int]] = []
        self.gone_logs: list[tuple[bytes, bytes, int, bytes]] = []
        self.logs: tuple[int, int] | None = None
        self.traces: set[bytes] = set()
        # Earlier starts of the traces this transaction moved to another hour, whose summary rows ClickHouse
        # may hold at those starts (the sort key holds the start's hour): each gets a deletion row.
        self.old_starts: dict[bytes, set[int]] = {}
        # The (start, cost) keys of these traces' rows in trace_summaries_by_cost that their new rows do not
        # replace (the sort key holds the start's day and the cost): each gets a deletion row there.
        self.old_cost_keys: dict[bytes, set[tuple[int, int]]] = {}
        # The (start, cost) ClickHouse held for each trace trace_sync looked up in this transaction.
        self.remote_keys: dict[bytes, tuple[int, int]] = {}
        self.resources: set[bytes] = set()
        self.scopes: set[bytes] = set()
        self.changes: set[int] = set()  # `changes` ids to ship again (forget dropped their example trace)
        # Traces whose tool calls were recomputed: each of their tool spans is shipped as its call or, part of
        # another's call, as a deletion row. And the tool spans of forgotten traces, as deletion rows.
        self.tool_traces: set[bytes] = set()
        self.gone_tool_calls: list[tuple[bytes, bytes, int]] = []
        # (res, bucket, dims) → [{counter index: value}, [{hist bucket: count}, …]]
        self.rollups: dict[tuple[int, int, tuple[str, ...]], list[Any]] = {}
        # (res, bucket, tool) → [calls, errors, duration_ns, {latency hist bucket: count}]
        self.tool_rollups: dict[tuple[int, int, str], list[Any]] = {}
        # OTLP metric points (store/metrics.py's MetricWriter, its own transaction): per series and bucket what
        # the transaction added, [res, bucket, name, unit, kind, service, attrs_json, n, total, min, max, last,
        # last_ns, {hist bucket: count}]; and the points the series caps dropped.
        self.metric_points: list[list[Any]] = []
        self.metric_points_dropped = 0

    # -- hooks ---------------------------------------------------------------------------------------------

    def rollup(self, contribution: tuple, sign: int) -> None:
        """SpanWriter._apply's contribution (second, dims, sparse counters, histogram buckets), signed."""
        second, dims, vector, hists = contribution
        for res in _RESOLUTIONS:
            self._add((res, second - second % res, dims), vector, hists, sign)
        self._add((_FINE, second - second % _FINE, _NO_DIMS), vector, hists, sign)

    def _add(self, key: tuple[int, int, tuple[str, ...]], vector: tuple, hists: tuple, sign: int) -> None:
        acc = self.rollups.get(key)
        if acc is None:
            acc = self.rollups[key] = [{}, [{} for _ in hists]]
        counters = acc[0]
        for i, value in vector:
            counters[i] = counters.get(i, 0) + sign * value
        for h, bucket in zip(acc[1], hists):
            if bucket is not None:
                h[bucket] = h.get(bucket, 0) + sign

    def tool_rollup(self, contribution: tuple, sign: int) -> None:
        """SpanWriter.tool_contribution's (second, tool, error, duration, latency bucket), signed."""
        second, tool, error, duration, latency = contribution
        for res in _RESOLUTIONS:
            acc = self.tool_rollups.get((res, second - second % res, tool))
            if acc is None:
                acc = self.tool_rollups[(res, second - second % res, tool)] = [0, 0, 0, {}]
            acc[0] += sign
            acc[1] += sign if error else 0
            if latency is not None:
                acc[2] += sign * (duration or 0)
                acc[3][latency] = acc[3].get(latency, 0) + sign

    def metric_points_added(self, contributions: Sequence[Sequence[Any]]) -> None:
        """MetricWriter's buckets, in the layout above."""
        self.metric_points.extend(list(point) for point in contributions)

    def changed_tool_rollups(self) -> list[tuple[int, int, str, int, int, int, dict[int, int]]]:
        """(res, bucket, tool, calls, errors, duration_ns, latency histogram) of the keys that did not net
        to nothing."""
        return [(res, bucket, tool, calls, errors, duration, hist)
                for (res, bucket, tool), (calls, errors, duration, hist) in self.tool_rollups.items()
                if calls or errors or duration or any(hist.values())]

    def changed_rollups(self) -> list[tuple[int, int, tuple[str, ...], dict[int, int], list[dict[int, int]]]]:
        """(res, bucket, dims, counters, histograms) of the keys whose deltas did not net to nothing."""
        return [(res, bucket, dims, counters, hists) for (res, bucket, dims), (counters, hists) in self.rollups.items()
                if any(counters.values()) or any(any(h.values()) for h in hists)]

    def summaries_replacing(self, db: sqlite3.Connection, new: dict[bytes, tuple[int, int]]) -> None:
        """Before these traces' summaries ({trace id: (new start_ns, new cost_nusd)}) replace the working
        store's: record each earlier (start, cost), here or in ClickHouse, whose row the new one does not
        replace: a start in another hour (trace_summaries), another day or cost (trace_summaries_by_cost)."""
        from store.clickhouse.schema import by_cost_key, start_hour
        from store.sessions import rows_in

        before = {row[0]: (row[1], row[2]) for row in rows_in(
            db, "SELECT trace_id, start_ns, cost_nusd FROM traces WHERE trace_id IN ({marks})", list(new))}
        for trace_id, (start, cost) in new.items():
            for old in (before.get(trace_id), self.remote_keys.get(trace_id)):
                if old is None:
                    continue
                if start_hour(old[0]) != start_hour(start):
                    self.old_starts.setdefault(trace_id, set()).add(old[0])
                if by_cost_key(*old) != by_cost_key(start, cost):
                    self.old_cost_keys.setdefault(trace_id, set()).add(old)

    def trace_deleted(self, trace_id: bytes, stored: tuple[int, int] | None) -> None:
        """This trace is deleted; its summary rows are stored at `stored` (start, cost), and maybe where
        ClickHouse said."""
        for old in (stored, self.remote_keys.get(trace_id)):
            if old is not None:
                self.old_starts.setdefault(trace_id, set()).add(old[0])
                self.old_cost_keys.setdefault(trace_id, set()).add(old)

    def logs_added(self, after_id: int, last_id: int) -> None:
        if last_id > after_id:
            self.logs = (min(after_id, self.logs[0]), last_id) if self.logs else (after_id, last_id)

    def logs_deleting(self, db: sqlite3.Connection, trace_ids: Sequence[bytes]) -> None:
        """These traces' log records are about to be deleted (forget): their ClickHouse keys, for deletion rows."""
        from store.clickhouse.rows import log_keys

        self.gone_logs.extend(log_keys(db, trace_ids))

    def changes_forgetting(self, db: sqlite3.Connection, trace_ids: Sequence[bytes]) -> None:
        """These traces are about to leave the change markers that name them as their example: ship those again."""
        from store.sessions import rows_in

        self.changes.update(row[0] for row in rows_in(db, "SELECT id FROM changes WHERE trace_id IN ({marks})",
                                                      list(trace_ids)))

    # -- the transaction's end -----------------------------------------------------------------------------

    def empty(self) -> bool:
        return not (self.spans or self.gone_spans or self.gone_logs or self.logs or self.traces
                    or self.resources or self.scopes or self.rollups or self.changes or self.tool_traces
                    or self.gone_tool_calls or self.tool_rollups or self.metric_points or self.metric_points_dropped)

    def seen_version(self, version: int) -> None:
        """Rows another replica wrote at `version` were read into this transaction: what it ships must
        replace them, so its version is above theirs whatever the two clocks say."""
        self._last_version = max(self._last_version, version)

    def flush(self, db: sqlite3.Connection) -> None:
        """Write what this transaction changed as one outbox batch (inside the transaction), then reset."""
        self._new_changes(db)
        if self.empty():
            return
        # The span rows' version: wall-clock ns, because a span corrected by one replica may have been
        # written earlier by another (after a restart, or as the load balancer moves traces), and only the
        # clock is shared between replicas; strictly increasing within this one.
        version = max(time.time_ns(), self._last_version + 1)
        self._last_version = version
        payload = {
            "spans": sorted(self.spans),
            "gone_spans": [(t.hex(), s.hex(), start) for t, s, start in self.gone_spans],
            "logs": self.logs,
            "gone_logs": [(t.hex(), s.hex(), time_ns, d.hex()) for t, s, time_ns, d in self.gone_logs],
            "traces": sorted(t.hex() for t in self.traces),
            "old_starts": {t.hex(): sorted(starts) for t, starts in self.old_starts.items() if t in self.traces},
            "old_cost_keys": {t.hex(): sorted(keys) for t, keys in self.old_cost_keys.items() if t in self.traces},
            "resources": sorted(d.hex() for d in self.resources),
            "scopes": sorted(d.hex() for d in self.scopes),
            "changes": sorted(self.changes),
            "tool_traces": sorted(t.hex() for t in self.tool_traces),
            "gone_tool_calls": [(t.hex(), s.hex(), start) for t, s, start in self.gone_tool_calls],
            "rollups": [(res, bucket, list(dims), counters, hists)
                        for res, bucket, dims, counters, hists in self.changed_rollups()],
            "tool_rollups": self.changed_tool_rollups(),
            "metric_points": self.metric_points,
            "metric_points_dropped": self.metric_points_dropped,
        }
        db.execute(
            "INSERT INTO clickhouse_outbox (token, version, payload) VALUES (?, ?, ?)",
            # A token unique across replicas and restarts (batch numbers restart with an emptied outbox).
            (uuid.uuid4().hex, version, json.dumps({k: v for k, v in payload.items() if v},
                                                   separators=(",", ":")).encode()),
        )
        self.reset()

    def _new_changes(self, db: sqlite3.Connection) -> None:
        """Add the change markers written since the last batch that recorded any (two primary-key reads)."""
        last = db.execute("SELECT max(id) FROM changes").fetchone()[0]
        if last is None:
            return
        row = db.execute("SELECT value FROM meta WHERE key = ?", (CHANGES_RECORDED,)).fetchone()
        recorded = int(row[0]) if row else 0
        if last > recorded:
            self.changes.update(r[0] for r in db.execute("SELECT id FROM changes WHERE id > ?", (recorded,)))
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (CHANGES_RECORDED, str(last)))
