"""OTLP ExportMetricsServiceRequest → one row per data point, for store/metrics.py's MetricWriter.

Runs in a decoder process. What it decides:

- The series a point belongs to: metric name, unit, kind, `service.name`, and the point's attributes
  minus high-cardinality ones (ids of users, requests, sessions, responses; client addresses and
  ports; URLs), each value cut to MAX_VALUE_CHARS and at most MAX_ATTRIBUTES per series. Dropping an
  attribute folds streams into one series; each stream keeps its own identity (`stream`: a digest of
  resource, scope and every attribute) so cumulative deltas are still taken per stream by the writer.
- Kinds: gauges and non-monotonic sums are levels (`gauge`), monotonic sums `counter`, both
  histogram types `histogram` with their buckets turned into store/histogram.py's log buckets.
- Malformed points (NaN or infinite values, no time, a histogram whose buckets do not add up) are
  rejected and counted, the rest of the request is kept.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any

from store import histogram
from store import metrics as sm
from store.otlp_values import any_value

MAX_ATTRIBUTES = 12
MAX_VALUE_CHARS = 96
MAX_NAME_CHARS = 200

# Attribute keys that identify one request, user, session or connection: never a series dimension.
_DROP_EXACT = frozenset({
    "user", "user.id", "user.email", "user.name", "enduser.id", "session.id", "session_id", "request_id",
    "request.id", "gen_ai.response.id", "gen_ai.conversation.id", "gen_ai.request.id", "conversation.id",
    "trace_id", "span_id", "client.address", "client.port", "network.peer.address", "network.peer.port",
    "network.local.address", "network.local.port", "source.address", "source.port", "url.full", "url.query",
    "url.path", "http.url", "http.target", "http.client_ip", "process.pid", "thread.id", "service.instance.id",
    "openai.response.system_fingerprint",
})
# Ids that name a piece of hardware or a model deployment: few, and what a GPU chart is split by.
_KEEP_IDS = frozenset({"hw.id", "hw.parent", "gpu.id", "gpu_id", "gpu", "device.id", "device_id", "gpu.uuid",
                       "engine", "engine_id", "tp_rank", "pp_rank", "dp_rank"})


def _dropped_key(key: str) -> bool:
    if key in _KEEP_IDS:
        return False
    if key in _DROP_EXACT:
        return True
    lowered = key.lower()
    return lowered.endswith((".id", "_id", ".uuid", "_uuid")) or lowered in ("id", "uuid")


def _text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 1] + "…"


def _attributes(attributes: Iterable[Any]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(kept attributes, every attribute) as text."""
    kept: dict[str, str] = {}
    every: list[tuple[str, str]] = []
    for kv in attributes:
        key = kv.key
        try:
            value = _text(any_value(kv.value))
        except Exception:  # an odd value is data, not a reason to lose the point
            value = "?"
        every.append((key, value))
        if not _dropped_key(key):
            kept[key[:MAX_VALUE_CHARS]] = value
    if len(kept) > MAX_ATTRIBUTES:
        kept = dict(sorted(kept.items())[:MAX_ATTRIBUTES])
    return kept, every


def _stream_digest(prefix: bytes, name: str, every: list[tuple[str, str]]) -> bytes:
    h = hashlib.blake2b(prefix, digest_size=16)
    h.update(name.encode("utf-8", "replace"))
    for key, value in sorted(every):
        h.update(b"\x00" + key.encode("utf-8", "replace") + b"\x01" + value.encode("utf-8", "replace"))
    return h.digest()


class MetricRejections:
    def __init__(self) -> None:
        self.count = 0
        self.reasons: dict[str, int] = {}

    def add(self, reason: str, n: int = 1) -> None:
        self.count += n
        self.reasons[reason] = self.reasons.get(reason, 0) + n

    def message(self) -> str:
        return "; ".join(f"{n} data points: {reason}" for reason, n in sorted(self.reasons.items()))


def _finite(value: float) -> bool:
    return math.isfinite(value)


def explicit_to_log(bounds: Iterable[float], counts: Iterable[int], scale: float, low: float | None,
                    high: float | None) -> dict[int, int]:
    """An explicit-bucket histogram's counts at each bucket's midpoint (the outer buckets at the
    point's min / max when known, else at their one bound), clamped to [min, max]."""
    edges = list(bounds)
    out: dict[int, int] = {}
    for i, c in enumerate(counts):
        if not c:
            continue
        lo: float | None = edges[i - 1] if i > 0 else None
        hi: float | None = edges[i] if i < len(edges) else None
        value: float
        if lo is None and hi is None:
            value = high if high is not None else low if low is not None else 0.0
        elif lo is None:
            assert hi is not None
            value = (low + hi) / 2 if low is not None and low < hi else hi
        elif hi is None:
            value = high if high is not None and high > lo else lo
        else:
            value = (lo + hi) / 2
        if low is not None:
            value = max(value, low)
        if high is not None:
            value = min(value, high)
        b = histogram.bucket_of(value * scale)
        out[b] = out.get(b, 0) + int(c)
    return out


def exponential_to_log(point: Any, scale: float) -> dict[int, int]:
    """An exponential histogram's counts at each bucket's geometric midpoint; zero and negative
    buckets in bucket 0 (the store's histograms hold magnitudes from 0 up)."""
    base = 2.0 ** (2.0 ** -point.scale)
    out: dict[int, int] = {}
    zero = int(point.zero_count) + sum(int(c) for c in point.negative.bucket_counts)
    if zero:
        out[0] = zero
    offset = point.positive.offset
    for i, c in enumerate(point.positive.bucket_counts):
        if not c:
            continue
        try:
            value = base ** (offset + i + 0.5)
        except OverflowError:
            value = float("inf")
        b = histogram.bucket_of(value * scale) if math.isfinite(value) else histogram.MAX_BUCKET
        out[b] = out.get(b, 0) + int(c)
    return out


def decode_metrics(request: Any, received_ns: int) -> tuple[list[tuple], MetricRejections]:
    """Rows in store.metrics' R_* layout, and what was rejected."""
    rows: list[tuple] = []
    rejected = MetricRejections()
    for resource_metrics in request.resource_metrics:
        service = ""
        resource_every: list[tuple[str, str]] = []
        for kv in resource_metrics.resource.attributes:
            value = _text(any_value(kv.value))
            resource_every.append((kv.key, value))
            if kv.key == "service.name":
                service = value
        resource_prefix = _stream_digest(b"r", "", resource_every)
        for scope_metrics in resource_metrics.scope_metrics:
            prefix = resource_prefix + scope_metrics.scope.name.encode("utf-8", "replace")
            for metric in scope_metrics.metrics:
                _decode_metric(metric, service, prefix, received_ns, rows, rejected)
    return rows, rejected


def _decode_metric(metric: Any, service: str, prefix: bytes, received_ns: int, rows: list[tuple],
                   rejected: MetricRejections) -> None:
    which = metric.WhichOneof("data")
    name = metric.name[:MAX_NAME_CHARS]
    if which is None:
        return
    data = getattr(metric, which)
    if not name:
        rejected.add("a metric without a name", len(data.data_points))
        return
    unit = metric.unit[:32]
    temporality = sm.LEVEL
    if which == "gauge":
        kind = "gauge"
    elif which == "sum":
        monotonic = data.is_monotonic
        kind = "counter" if monotonic else "gauge"
        delta = data.aggregation_temporality == 1  # AGGREGATION_TEMPORALITY_DELTA
        if monotonic:
            temporality = sm.DELTA if delta else sm.CUMULATIVE
        else:  # a cumulative up-down counter is its level; a delta one is summed into it by the writer
            temporality = sm.DELTA if delta else sm.LEVEL
    elif which in ("histogram", "exponential_histogram"):
        kind = "histogram"
        temporality = sm.DELTA if data.aggregation_temporality == 1 else sm.CUMULATIVE
    else:  # summary: a legacy Prometheus type with client-side quantiles that cannot be merged
        rejected.add(f"metric type {which} is not stored", len(data.data_points))
        return
    scale = sm.hist_scale(unit)
    for point in data.data_points:
        time_ns = point.time_unix_nano or received_ns
        start_ns = point.start_time_unix_nano
        if point.flags & 1:  # DATA_POINT_FLAGS_NO_RECORDED_VALUE: a stale marker, not a value
            continue
        kept, every = _attributes(point.attributes)
        attrs_json = json.dumps(kept, sort_keys=True, ensure_ascii=False)
        stream = _stream_digest(prefix, name, every)
        if kind != "histogram":
            value = point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)
            if not _finite(value):
                rejected.add("not a finite number")
                continue
            rows.append((name, unit, kind, service, attrs_json, stream, temporality, start_ns, time_ns, value, 0,
                         None, None, None))
            continue
        count = int(point.count)
        total = float(point.sum) if point.HasField("sum") else 0.0
        low = float(point.min) if point.HasField("min") else None
        high = float(point.max) if point.HasField("max") else None
        if not all(_finite(v) for v in (total, low or 0.0, high or 0.0)):
            rejected.add("not a finite number")
            continue
        if which == "histogram":
            counts = list(point.bucket_counts)
            if counts and (sum(counts) != count or len(counts) != len(point.explicit_bounds) + 1):
                rejected.add("histogram buckets that do not match its count or bounds")
                continue
            buckets = explicit_to_log(point.explicit_bounds, counts, scale, low, high)
        else:
            buckets = exponential_to_log(point, scale)
            if sum(buckets.values()) != count:
                rejected.add("histogram buckets that do not match its count")
                continue
        if not buckets and count:
            # No buckets at all: the count at the mean, the best there is.
            buckets = {histogram.bucket_of(max(total / count, 0.0) * scale): count}
        rows.append((name, unit, kind, service, attrs_json, stream, temporality, start_ns, time_ns, total, count,
                     low, high, buckets))

