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
from multiprocessing.connection import Connection
from typing import Any

from receiver import protocol
from receiver.normalize import IngestOptions, Normalizer
from receiver.otlp import OtlpDecodeError, decode_body
from receiver.prices import PriceTable
from store.gctuning import tune_for_throughput

log = logging.getLogger("llmobs.decoder")


def run(inbox: Connection, outbox: Connection, options: dict[str, Any]) -> None:
    """Entry point of a decoder process (multiprocessing spawn target)."""
    # The main process coordinates shutdown: Ctrl-C in the terminal or SIGTERM to the process group
    # must not kill a decoder with a request half done. EOF on the inbox is our signal to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    prices = PriceTable.load(options.get("prices_file"))
    normalizer = Normalizer(prices, IngestOptions(
        redact=options.get("redact", True),
        keep_content=options.get("keep_content", True),
        max_attr_bytes=options.get("max_attr_bytes", 256 * 1024),
        dimension_keys=options["dimension_keys"],
    ))
    max_body = options.get("max_body_bytes", 128 << 20)
    tune_for_throughput()
    while True:
        try:
            frame = inbox.recv_bytes()
        except (EOFError, OSError):
            return
        if not frame:
            return
        reply = handle(normalizer, frame, max_body)
        try:
            outbox.send_bytes(reply)
        except (BrokenPipeError, OSError):
            return


def handle(normalizer: Normalizer, frame: bytes, max_body: int) -> bytes:
    req_id, signal_name, json_body, gzipped, received_ns, body = protocol.decode_request(frame)
    try:
        message, repaired = decode_body(signal_name, bytes(body), json_body=json_body, gzipped=gzipped,
                                        max_bytes=max_body)
    except OtlpDecodeError as exc:
        return protocol.TAG_INVALID + pickle.dumps((req_id, str(exc)))
    except Exception as exc:  # never let one request kill the decoder
        log.error("decoder failed on request %s: %s", req_id, traceback.format_exc())
        return protocol.TAG_INVALID + pickle.dumps((req_id, f"could not decode request: {exc!r}"))
    try:
        if signal_name == "traces":
            spans, resources, scopes, rejections = normalizer.decode_traces(
                message, received_ns, utf8_repaired=repaired)
            logs: list = []
        elif signal_name == "logs":
            logs, resources, scopes, rejections = normalizer.decode_logs(
                message, received_ns, utf8_repaired=repaired)
            spans = []
        else:
            # Metrics are accepted so that an SDK exporting all signals works, but not stored:
            # every figure the TUI shows is derived from spans.
            return protocol.TAG_DONE + pickle.dumps((req_id, count_data_points(message), 0, ""))
    except Exception as exc:
        log.error("normalizer failed on request %s: %s", req_id, traceback.format_exc())
        return protocol.TAG_INVALID + pickle.dumps((req_id, f"could not normalize request: {exc!r}"))
    if not spans and not logs:
        return protocol.TAG_DONE + pickle.dumps((req_id, 0, rejections.count, rejections.message()))
    payload = (req_id, spans, logs, resources, scopes, rejections.count, rejections.message())
    return protocol.TAG_BATCH + pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


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
