"""OTLP metrics on the ClickHouse store: the rows store/metrics.py's queries return on SQLite, from
`metric_points` (schema m009), for the same parse_* functions.

A series is its digest there (no ids across replicas): it stands in for the SQLite series id as the
integer it reads as. The buckets a replica's writer shipped are folded here as MetricWriter merges them:
counts and sums added, min and max, the newest sample by its time, histograms bucket by bucket.
"""

from __future__ import annotations

from typing import Any

from store import histogram
from store import metrics as metric_store
from store.clickhouse.client import ClickHouseClient

_WINDOW = "res = {res:UInt32} AND bucket >= {start:Int64} AND bucket < {end:Int64}"


def _series_id(digest: bytes) -> int:
    return int.from_bytes(bytes(digest), "big")


def _blob(hist: tuple[list[int], list[int]] | None) -> bytes | None:
    """sumMap's (buckets, counts) as the SQLite store's histogram blob (zero counts left out)."""
    counts = {b: c for b, c in zip(*hist) if c} if hist else {}
    return histogram.encode(counts) if counts else None


def overview_rows(client: ClickHouseClient, window_s: float, now_s: float) -> dict[str, list[tuple[Any, ...]]]:
    """store.metrics.overview_queries' rows: every series seen in the window, its newest sample, its
    histogram, and the points the series caps dropped."""
    res, start, end = metric_store.window_buckets(window_s, now_s)
    found = client.query(
        "SELECT series, name, any(unit), any(kind), any(service), any(attrs_json), sum(n), sum(total), min(min), "
        f"max(max), max(last), sumMap(hist) FROM metric_points WHERE {_WINDOW} GROUP BY name, series",
        {"res": res, "start": start, "end": end}, bytes_columns=("series",))
    rows: dict[str, list[tuple[Any, ...]]] = {"series": [], "last": [], "hist": []}
    for series, name, unit, kind, service, attrs, n, total, low, high, (last_ns, last), hist in found:
        series_id = _series_id(series)
        rows["series"].append((series_id, name, unit, kind, service, attrs, n, total, low, high))
        rows["last"].append((series_id, last_ns, last))
        blob = _blob(hist)
        if blob is not None:
            rows["hist"].append((series_id, blob))
    dropped = client.query("SELECT sum(points) FROM metric_points_dropped")
    rows["dropped"] = [(int(dropped[0][0]),)] if dropped and dropped[0][0] else []
    return rows


def chart_rows(client: ClickHouseClient, name: str, window_s: float, now_s: float) -> list[tuple[Any, ...]]:
    """store.metrics.chart_query's rows: the metric's buckets in the window, per series, by bucket."""
    res, start, end = metric_store.window_buckets(window_s, now_s)
    found = client.query(
        "SELECT series, any(unit), any(kind), any(service), any(attrs_json), bucket, sum(n), sum(total), "
        f"tupleElement(max(last), 2), sumMap(hist) FROM metric_points WHERE {_WINDOW} AND name = {{name:String}} "
        "GROUP BY series, bucket ORDER BY bucket, series",
        {"res": res, "start": start, "end": end, "name": name}, bytes_columns=("series",))
    return [(_series_id(series), *row[:-1], _blob(row[-1])) for series, *row in found]


def saturation_rows(client: ClickHouseClient, now_s: float) -> list[tuple[Any, ...]]:
    """store.metrics.saturation_query's rows: each model-server series' newest sample of the last minutes."""
    found = client.query(
        "SELECT name, series, max(last) FROM metric_points WHERE res = 10 AND bucket >= {since:Int64} "
        "AND name IN {names:Array(String)} GROUP BY name, series",
        {"since": int(now_s) - metric_store.SATURATION_FRESH_S, "names": list(metric_store.SATURATION_NAMES)},
        bytes_columns=("series",))
    return [(name, _series_id(series), last_ns, last) for name, series, (last_ns, last) in found]
