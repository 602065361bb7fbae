"""A decoder process: request bytes in, normalized rows out. Several run in parallel.

Decoding is the dominant ingest cost (perf-notes: ~60 % of server CPU), and one Python process is
bound to one core by the GIL, so decoding runs here, outside the process that owns the sockets and
the UI. A decoder never touches the database.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import traceback
from collections.abc import Iterator, Sequence
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
from typing import Any, overload

from receiver import content_tiers, protocol
from receiver.metrics_normalize import decode_metrics
from receiver.normalize import IngestOptions, Normalizer, Rejections
from receiver.otlp import OtlpDecodeError, decode_body_and_bytes
from receiver.prices import PriceTable
from store.gctuning import tune_for_throughput
from store.process_logs import follow_parent_log
from store.span_walk import span_ranges

log = logging.getLogger("llmobs.decoder")


def run(inbox: Connection, outbox: Connection, options: dict[str, Any]) -> None:
    """Entry point of a decoder process (started by receiver/child_process.py)."""
    # The main process coordinates shutdown: Ctrl-C in the terminal or SIGTERM to the process group
    # must not kill a decoder with a request half done. EOF on the inbox is our signal to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    follow_parent_log()  # under the TUI: its log file, never the terminal
    prices = PriceTable.load(options.get("prices_file"))
    normalizer = Normalizer(prices, IngestOptions(
        redact=options.get("redact", True),
        keep_content=options.get("keep_content", True),
        max_attr_bytes=options.get("max_attr_bytes", 256 * 1024),
        dimension_keys=options["dimension_keys"],
        redact_patterns=tuple(options.get("redact_patterns", ())),
        drop_keys=tuple(options.get("drop_keys", ())),
        content=options.get("content"),
    ))
    max_body = options.get("max_body_bytes", 128 << 20)
    writer = WriterLink(options["batch_address"], options["batch_authkey"])
    tune_for_throughput()
    try:
        while True:
            try:
                frame = inbox.recv_bytes()
            except (EOFError, OSError):
                return
            if not frame:
                return
            if content_tiers.is_control(frame):  # the main process: which SLO scopes are burning
                if normalizer.tiers is not None:
                    normalizer.tiers.set_burning(content_tiers.decode_burning(frame))
                continue
            if not protocol.is_request_header(frame):
                log.error("decoder: unexpected frame of %d bytes from the main process", len(frame))
                return
            try:
                body = inbox.recv_bytes()  # a request's body follows its header
            except (EOFError, OSError):
                return
            try:
                for reply in handle(normalizer, frame, body, max_body):
                    if reply[:1] != protocol.TAG_BATCH:
                        outbox.send_bytes(reply)
                    elif not writer.send(reply):
                        # The writer is gone (it is being restarted): the request fails, retryably, and
                        # its remaining slices are not normalized for nothing.
                        outbox.send_bytes(protocol.TAG_UNDELIVERED + pickle.dumps(
                            (protocol.batch_request_id(reply), "the writer process is not running")))
                        break
            except (BrokenPipeError, OSError):
                return
    finally:
        writer.close()


class WriterLink:
    """This decoder's connection to the writer's socket (store/batch_inlet.py): batches go straight
    to the writer, not through the main process. Connects on first use, and again after the writer
    was restarted (it listens on the same path)."""

    def __init__(self, address: str, authkey: bytes) -> None:
        self.address = address
        self.authkey = authkey
        self._connection: Connection | None = None

    def send(self, frame: bytes) -> bool:
        """Deliver a batch; False when no writer takes it (none listening, or it died mid-send).
        One reconnect: the first send after a writer restart fails on the old connection."""
        for _attempt in range(2):
            if self._connection is None:
                try:
                    self._connection = Client(self.address, family="AF_UNIX", authkey=self.authkey)
                except (OSError, EOFError, AuthenticationError):
                    return False
            try:
                self._connection.send_bytes(frame)
                return True
            except (OSError, EOFError):
                self.close()
        return False

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except OSError:
                pass
            self._connection = None


# Spans (or log records) per batch sent on to the writer. A request larger than this is normalized
# and committed in slices, so that one huge request (a million spans fit under the body limit) holds
# neither the writer nor this process's memory: other exporters' requests commit between its slices.
CHUNK_ITEMS = 2048


def handle(normalizer: Normalizer, header: bytes, body: bytes, max_body: int) -> Iterator[bytes]:
    """Replies to one request (its header frame and its body): TAG_INVALID or TAG_DONE, or one or more
    TAG_BATCH slices, the last one marked final (the request is acknowledged when the writer has
    committed that one)."""
    req_id, signal_name, json_body, gzipped, received_ns = protocol.decode_request_header(header)
    try:
        message, repaired, parsed_from = decode_body_and_bytes(signal_name, body, json_body=json_body,
                                                               gzipped=gzipped, max_bytes=max_body)
    except OtlpDecodeError as exc:
        yield protocol.TAG_INVALID + pickle.dumps((req_id, str(exc)))
        return
    except Exception as exc:  # never let one request kill the decoder
        log.error("decoder failed on request %s: %s", req_id, traceback.format_exc())
        yield protocol.TAG_INVALID + pickle.dumps((req_id, f"could not decode request: {exc!r}"))
        return
    if signal_name == "metrics":
        yield from handle_metrics(req_id, message, received_ns)
        return
    rejections = Rejections()
    held = None  # one slice is held back, so that the last one sent can carry the final mark
    sent = False
    own_bytes = span_bytes_of(parsed_from, message) if signal_name == "traces" else None
    done = 0  # spans of the slices before this one
    try:
        for part in slices(signal_name, message, CHUNK_ITEMS):
            if signal_name == "traces":
                span_bytes = None
                if own_bytes is not None:
                    count = span_count(part)
                    span_bytes, done = own_bytes[done:done + count], done + count
                spans, resources, scopes, rejected = normalizer.decode_traces(
                    part, received_ns, utf8_repaired=repaired, span_bytes=span_bytes)
                logs: list = []
            else:
                logs, resources, scopes, rejected = normalizer.decode_logs(part, received_ns, utf8_repaired=repaired)
                spans = []
            for reason, n in rejected.reasons.items():
                rejections.add(reason, n)
            if not spans and not logs:
                continue
            if held is not None:
                yield protocol.encode_batch((req_id, *held, 0, "", False))
                sent = True
            held = (spans, logs, resources, scopes)
    except Exception as exc:
        log.error("normalizer failed on request %s: %s", req_id, traceback.format_exc())
        if not sent:  # nothing stored yet: the request as a whole is refused, as before slicing
            yield protocol.TAG_INVALID + pickle.dumps((req_id, f"could not normalize request: {exc!r}"))
            return
        held = held or ([], [], {}, {})
        rejections.add("unreadable remainder of the request")
    if held is None:
        yield protocol.TAG_DONE + pickle.dumps((req_id, 0, rejections.count, rejections.message()))
        return
    yield protocol.encode_batch((req_id, *held, rejections.count, rejections.message(), True))


def handle_metrics(req_id: int, message: Any, received_ns: int) -> Iterator[bytes]:
    """Metric data points go to the writer as a batch like spans; their rows ride as a ninth,
    last element of the batch tuple (store/writer_process.py reads it when present), the spans and
    logs lists empty."""
    try:
        rows, rejected = decode_metrics(message, received_ns)
    except Exception as exc:
        log.error("metrics normalizer failed on request %s: %s", req_id, traceback.format_exc())
        yield protocol.TAG_INVALID + pickle.dumps((req_id, f"could not normalize request: {exc!r}"))
        return
    if not rows:
        yield protocol.TAG_DONE + pickle.dumps((req_id, 0, rejected.count, rejected.message()))
        return
    # One batch, not slices: the points a series cap drops are known only in the writer, and the
    # main process takes a request's rejections from its final slice alone. Metric requests are
    # small (an SDK sends one point per series and interval); 100k points commit in about a second.
    yield protocol.encode_batch((req_id, [], [], {}, {}, rejected.count, rejected.message(), True, rows))


class SpanBytes(Sequence[bytes]):
    """The spans' own bytes in a request body, each cut out when the normalizer asks for it: a list of
    them all would hold a second copy of the request while it is normalized (+7 MB of peak RSS in
    bench.ingest's heavy workload), where each is needed only until its span is compressed."""

    __slots__ = ("data", "ranges")

    def __init__(self, data: bytes, ranges: Sequence[tuple[int, int]]) -> None:
        self.data = data
        self.ranges = ranges

    def __len__(self) -> int:
        return len(self.ranges)

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> SpanBytes: ...

    def __getitem__(self, index: int | slice) -> bytes | SpanBytes:
        if isinstance(index, slice):
            return SpanBytes(self.data, self.ranges[index])
        start, end = self.ranges[index]
        return self.data[start:end]


def span_bytes_of(data: bytes | None, request: Any) -> SpanBytes | None:
    """Each span's own bytes in the serialized request it was parsed from, in the order the request
    lists its spans (slices keeps it), cut out one at a time as they are read; None without them (a
    JSON or repaired body, no compiled walk) or when they do not match the parsed request span for span."""
    ranges = span_ranges(data) if data is not None else None
    if data is None or not ranges or len(ranges) != span_count(request):
        return None
    return SpanBytes(data, ranges)


def span_count(request: Any) -> int:
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


def slices(signal_name: str, request: Any, size: int) -> Iterator[Any]:
    """The request itself when it holds at most `size` items, else requests of at most `size` items
    each, with each item under a copy of its own resource and scope."""
    if signal_name == "traces":
        outer, middle, leaf, scope_key = "resource_spans", "scope_spans", "spans", "scope"
    else:
        outer, middle, leaf, scope_key = "resource_logs", "scope_logs", "log_records", "scope"
    total = sum(len(getattr(m, leaf)) for o in getattr(request, outer) for m in getattr(o, middle))
    if total <= size:
        yield request
        return
    part = type(request)()
    count = 0
    for o in getattr(request, outer):
        for m in getattr(o, middle):
            items = getattr(m, leaf)
            i = 0
            while i < len(items):
                take = min(size - count, len(items) - i)
                target_outer = getattr(part, outer).add()
                target_outer.resource.CopyFrom(o.resource)
                target_outer.schema_url = o.schema_url
                target_middle = getattr(target_outer, middle).add()
                getattr(target_middle, scope_key).CopyFrom(getattr(m, scope_key))
                target_middle.schema_url = m.schema_url
                getattr(target_middle, leaf).extend(items[i:i + take])
                count += take
                i += take
                if count == size:
                    yield part
                    part = type(request)()
                    count = 0
    if count:
        yield part


def count_data_points(request: Any) -> int:
    points = 0
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                which = metric.WhichOneof("data")
                if which is not None:
                    points += len(getattr(metric, which).data_points)
    return points


if __name__ == "__main__":  # pragma: no cover
    print("decoder processes are started by llmobs-tui; pid", os.getpid())
