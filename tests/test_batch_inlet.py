"""Batches go from the decoders straight to the writer's Unix socket (store/batch_inlet.py): only our
decoders get in, a restarted writer is found at the same path, and a batch no writer takes fails its
request retryably instead of leaving the exporter waiting."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, wait
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from receiver import decoder_process, protocol
from receiver.decoder_process import WriterLink
from receiver.pipeline import PipelineConfig
from store.batch_inlet import BatchInlet

KEY = b"k" * 32


def _frames(inlet: BatchInlet, n: int, timeout: float = 10.0) -> list[bytes]:
    """The next n frames the writer's loop would read (it waits on the same things, and the main
    process's pipe besides)."""
    got: list[bytes] = []
    while len(got) < n:
        ready = wait([inlet.wake, *inlet.connections], timeout)
        assert ready, f"only {len(got)} of {n} frames arrived"
        if inlet.wake in ready:
            inlet.take_new()
        got.extend(c.recv_bytes() for c in ready if not isinstance(c, int))
    return got


@pytest.mark.parametrize("abstract", [False, pytest.param(True, marks=pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract sockets are Linux's"))])
def test_a_decoder_link_delivers_and_reconnects_to_a_restarted_writer(tmp_path: Path, abstract: bool) -> None:
    # serve's own choice on Linux is abstract (receiver/pipeline.batch_socket_address): no file to lose
    address = f"\0llmobs-test-{os.getpid()}" if abstract else str(tmp_path / "writer.sock")
    inlet = BatchInlet(address, KEY)
    link = WriterLink(address, KEY)
    try:
        assert link.send(b"first")
        assert _frames(inlet, 1) == [b"first"]
        inlet.close()  # the writer dies ...
        inlet = BatchInlet(address, KEY)  # ... and its successor listens at the same path
        assert link.send(b"second")  # the old connection fails; the link reconnects once and resends
        assert _frames(inlet, 1) == [b"second"]
    finally:
        link.close()
        inlet.close()


def test_no_writer_listening_is_a_failed_send_not_a_hang(tmp_path: Path) -> None:
    link = WriterLink(str(tmp_path / "nobody.sock"), KEY)
    assert link.send(b"batch") is False


def test_a_client_without_the_key_is_refused_and_ours_still_gets_in(tmp_path: Path) -> None:
    address = str(tmp_path / "writer.sock")
    inlet = BatchInlet(address, KEY)
    try:
        with pytest.raises((AuthenticationError, EOFError, OSError)):
            Client(address, family="AF_UNIX", authkey=b"x" * 32)
        link = WriterLink(address, KEY)
        assert link.send(b"ours")
        assert _frames(inlet, 1) == [b"ours"]
        assert len(inlet.connections) == 1
        link.close()
    finally:
        inlet.close()


def _request_frames(req_id: int) -> tuple[bytes, bytes]:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = (7).to_bytes(16, "big")
    span.span_id = (1).to_bytes(8, "big")
    span.name = "chat gpt-4o"
    span.start_time_unix_nano, span.end_time_unix_nano = 1, 2
    return protocol.encode_request(req_id, "traces", json_body=False, gzipped=False, received_ns=1,
                                   body=request.SerializeToString())


def test_a_decoder_whose_writer_is_gone_fails_the_request_retryably(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    inbox_r, inbox_w = ctx.Pipe(duplex=False)
    outbox_r, outbox_w = ctx.Pipe(duplex=False)
    config = PipelineConfig(db_path=str(tmp_path / "x.db"),
                            batch_socket={"batch_address": str(tmp_path / "gone.sock"), "batch_authkey": KEY})
    decoder = ctx.Process(target=decoder_process.run, args=(inbox_r, outbox_w, config.decoder_options()))
    decoder.start()
    inbox_r.close()
    outbox_w.close()
    try:
        for frame in _request_frames(41):
            inbox_w.send_bytes(frame)
        assert outbox_r.poll(60)
        reply = outbox_r.recv_bytes()
        assert reply[:1] == protocol.TAG_UNDELIVERED
        assert pickle.loads(reply[1:]) == (41, "the writer process is not running")
    finally:
        inbox_w.close()
        decoder.join(30)
    assert decoder.exitcode == 0


def test_a_request_reaches_its_decoder_as_a_header_and_the_body_itself() -> None:
    """Not a copy: the main process holds every body until it is committed, and the copies joined to
    their headers, waiting for a busy decoder, were most of its memory under load."""
    body = bytes(3 << 20)
    header, sent = protocol.encode_request(7, "logs", json_body=True, gzipped=False, received_ns=99, body=body)
    assert sent is body
    assert protocol.is_request_header(header) and not protocol.is_request_header(body[:len(header)])
    assert protocol.decode_request_header(header) == (7, "logs", True, False, 99)
