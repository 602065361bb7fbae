"""`llmobs-tui attach HOST:PORT`: the TUI on a remote `serve` (through a port-forward, say).

A child process pulls from the remote query port (receiver/query_server.py) into a local cache
store, through the same normalizer and writer as local ingest, and the TUI reads that store as it
reads any other. The cursor of the last committed frame is kept in the cache store's meta table:
when the connection drops, the child says so, reconnects with backoff and resumes from it, so no
span is lost or stored twice. It runs in its own process because decoding and writing are CPU work
that must not share a GIL with the UI.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATUS_BYTES = 240
STOPPED = -1  # counts[3] when the child gave up for good (the remote refused the token)


@dataclass(frozen=True, slots=True)
class AttachPlan:
    target: str  # host:port of the remote query service
    db_path: str  # the local cache store
    window_s: float = 3600  # the backfill on first attach
    token: str | None = None
    ca_file: str | None = None  # PEM: the remote's certificate (or its CA); None: plaintext
    prices_file: str | None = None  # `--prices`, already checked by Settings; None: the shipped table
    max_backoff_s: float = 10.0


class AttachState:
    """What the child reports to the TUI, in shared memory."""

    def __init__(self, ctx: Any) -> None:
        self.text = ctx.Array("c", STATUS_BYTES)
        self.counts = ctx.Array("q", 4)  # spans, logs, reconnects, connected (0/1; STOPPED: given up)

    def say(self, text: str) -> None:
        self.text.value = text.encode("utf-8", "replace")[: STATUS_BYTES - 1]

    def read(self) -> tuple[str, int, int, int, bool]:
        spans, logs, reconnects, connected = self.counts[:]
        return self.text.value.decode("utf-8", "replace"), spans, logs, reconnects, connected == 1

    @property
    def stopped(self) -> bool:
        return self.counts[3] == STOPPED


def cursor_key(target: str) -> str:
    return f"attach_cursor:{target}"


def run(plan: AttachPlan, state: AttachState) -> None:
    """The child: connect, backfill, follow; on any break, back off and resume from the cursor."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop: dict[str, Any] = {"now": False, "stream": None}

    def on_term(*_: Any) -> None:
        # Quit must not wait for the remote's next frame: cancel the open stream (on a thread, as
        # the handler may run while grpc holds the call's lock).
        import threading

        stop["now"] = True
        stream = stop["stream"]
        if stream is not None:
            threading.Thread(target=stream.cancel, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    from llmobs_tui.logfile import child_logs_to_file

    child_logs_to_file()  # the terminal belongs to the TUI

    import grpc
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from receiver.normalize import IngestOptions, Normalizer
    from receiver.prices import PriceTable
    from receiver.query_server import TAIL_METHOD, decode_frame
    from store.connection import WriterLock, open_writer
    from store.meta import get_meta, set_meta
    from store.pricing import record_price_rows
    from store.writer import SpanWriter

    # The remote already redacted (or chose not to); redacting again would only cost CPU.
    prices = PriceTable.load(plan.prices_file)
    normalizer = Normalizer(prices, IngestOptions(redact=False))
    lock = WriterLock(Path(plan.db_path))
    lock.acquire()
    db = open_writer(plan.db_path)
    writer = SpanWriter(db)
    record_price_rows(db, prices.records(), time.time_ns())
    saved_text = get_meta(db, cursor_key(plan.target))
    saved = json.loads(saved_text) if saved_text is not None else {}
    cursor = (int(saved.get("span", 0)), int(saved.get("log", 0)))
    since_ns = int(saved.get("since_ns", time.time_ns() - int(plan.window_s * 1e9)))
    metadata = (("authorization", f"Bearer {plan.token}"),) if plan.token else None
    backoff = 0.5
    parent = multiprocessing.parent_process()
    try:
        while not stop["now"] and (parent is None or parent.is_alive()):
            # Keepalive pings: a port-forward that dies silently shows up as a broken stream in seconds.
            options = [("grpc.keepalive_time_ms", 5000), ("grpc.keepalive_timeout_ms", 5000),
                       ("grpc.max_receive_message_length", 64 << 20)]
            if plan.ca_file:
                credentials = grpc.ssl_channel_credentials(Path(plan.ca_file).read_bytes())
                channel = grpc.secure_channel(plan.target, credentials, options=options)
            else:
                channel = grpc.insecure_channel(plan.target, options=options)
            state.say(f"connecting to {plan.target}…")
            state.counts[3] = 0
            request = json.dumps({"after_span": cursor[0], "after_log": cursor[1], "since_ns": since_ns}).encode()
            try:
                stream = channel.unary_stream(TAIL_METHOD)(request, metadata=metadata)
                stop["stream"] = stream
                for frame in stream:
                    if stop["now"]:
                        stream.cancel()
                        break
                    kind, new_cursor, payload = decode_frame(frame)
                    if kind == "traces":
                        rows, resources, scopes, _ = normalizer.decode_traces(
                            ExportTraceServiceRequest.FromString(payload))
                        writer.write(rows, [], resources, scopes)
                        state.counts[0] += len(rows)
                    elif kind == "logs":
                        rows, resources, scopes, _ = normalizer.decode_logs(
                            ExportLogsServiceRequest.FromString(payload))
                        writer.write([], rows, resources, scopes)
                        state.counts[1] += len(rows)
                    cursor = new_cursor
                    set_meta(db, cursor_key(plan.target), json.dumps(
                        {"span": cursor[0], "log": cursor[1], "since_ns": since_ns}))
                    if not state.counts[3] or kind == "caught_up":  # the first frame of this connection, or live
                        state.counts[3] = 1
                        state.say(f"attached to {plan.target}"
                                  + (" · live" if kind == "caught_up" else " · backfilling"))
                    backoff = 0.5
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                state.counts[3] = 0
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    # Retrying cannot help: the same token is refused every time. Stop, and say so.
                    state.say(f"{plan.target} refused the token: stopped. Restart with the right --token or "
                              f"LLMOBS_TOKEN ({exc.details()})")
                    state.counts[3] = STOPPED
                    stop["now"] = True
                elif code != grpc.StatusCode.CANCELLED:
                    details = (exc.details() or "") if hasattr(exc, "details") else str(exc)
                    state.say(f"disconnected from {plan.target} ({code.name if code else 'error'}: {details[:80]}); "
                              f"reconnecting in {backoff:.0f}s, resuming where it stopped")
                state.counts[2] += 1
            finally:
                stop["stream"] = None
                channel.close()
            deadline = time.monotonic() + backoff
            while time.monotonic() < deadline and not stop["now"]:
                time.sleep(0.05)
            backoff = min(plan.max_backoff_s, backoff * 2)
    finally:
        db.close()
        lock.release()


class AttachFeed:
    """Owns the child process (as DemoFeed owns the demo's)."""

    def __init__(self, plan: AttachPlan) -> None:
        self.plan = plan
        self._ctx = multiprocessing.get_context("spawn")
        self.state = AttachState(self._ctx)
        self._last: tuple[float, int] | None = None
        self._process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> None:
        self._process = self._ctx.Process(target=run, args=(self.plan, self.state), name="llmobs-attach", daemon=True)
        self._process.start()

    def status(self) -> Any:
        """The TUI's status line: where we are attached, whether the link is up, and the pull rate."""
        from llmobs_tui.widgets.chrome import IngestStatus

        text, spans, _logs, reconnects, connected = self.state.read()
        now = time.monotonic()
        rate = None
        if self._last is not None and now > self._last[0]:
            rate = (spans - self._last[1]) / (now - self._last[0])
        if self._last is None or now - self._last[0] >= 1.0:
            self._last = (now, spans)
        # The header's link state, truthfully: "live" only while frames flow from a caught-up stream.
        if self.state.stopped:
            link = "stopped"
        elif self._process is not None and not self._process.is_alive():
            link, text = "stopped", f"the attach process for {self.plan.target} exited: see the log file"
        elif connected:
            link = "live" if text.endswith("· live") else "backfilling"
        elif text.startswith("disconnected"):
            link = "disconnected"
        else:
            link = "connecting"
        broken = link in ("stopped", "disconnected")
        mode = f"attach {self.plan.target}" if broken else (text or f"attaching to {self.plan.target}…")
        if reconnects and link != "stopped":
            mode += f" · {reconnects} reconnect{'s' if reconnects > 1 else ''}"
        return IngestStatus(mode=mode, spans_per_s=rate, error=text if broken else None, link=link)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(2)
        self._process = None
