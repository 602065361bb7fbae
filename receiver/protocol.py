"""The framing of messages between the receiver's main process, its decoders and the writer.

Kept tiny and explicit: a request to a decoder is two frames, a fixed header and then the raw body as
it came (no pickling of megabytes of bytes, and no copy of them either: joining the two copied every
body, and the copies of the requests waiting for a decoder were most of the main process's memory
under load); a decoded batch carries its request id ahead of the pickle, so that a decoder
can name a batch the writer did not take without unpickling it.
"""

from __future__ import annotations

import marshal
import pickle
import struct

SIGNALS = ("traces", "logs", "metrics")
SIGNAL_CODE = {name: i for i, name in enumerate(SIGNALS)}

FLAG_JSON = 1
FLAG_GZIP = 2

# main → decoder: TAG_REQUEST + (req_id, signal, flags, received_ns); the next frame is the body.
TAG_REQUEST = b"R"
REQUEST_HEADER = struct.Struct("<QBBQ")

# decoder → writer (store/batch_inlet.py): (req_id, spans, logs, resources, scopes, rejected, message, final),
# and for a metrics request a 9th item, its metric rows (receiver/metrics_normalize.py), serialized.
# A large request comes as several slices; only the last is final, and carries the rejections.
TAG_BATCH = b"B"
BATCH_HEADER = struct.Struct("<Q")  # after TAG_BATCH: the request id, readable without unpickling
# After the header, how the payload is serialized. marshal, when every value in it is a built-in type
# (rows are lists of None, int, float, str and bytes): it writes and reads an agent span's row in 2.5 + 2.8
# µs against pickle's 4.5 + 4.5 (pickle looks every object's type up in its dispatch tables and memoizes
# it). Both ends are the same interpreter (marshal's format changes between Python versions), and the pipe
# is the writer's own, as trusted as pickle's was. pickle for anything marshal refuses (a subclass of int
# or str, an object).
FORMAT_MARSHAL = b"m"
FORMAT_PICKLE = b"p"
TAG_DONE = b"D"  # decoder → main: pickled (req_id, accepted, rejected, message), nothing to store
TAG_INVALID = b"E"  # decoder → main: pickled (req_id, message): the body is not valid OTLP
TAG_UNDELIVERED = b"U"  # decoder → main: pickled (req_id, message): no writer took the request's batch
TAG_STOP = b"S"  # main → writer: drain, commit and exit


def encode_request(req_id: int, signal: str, *, json_body: bool, gzipped: bool, received_ns: int,
                   body: bytes) -> tuple[bytes, bytes]:
    """The two frames of a request, sent back to back on the decoder's pipe: its header, then the body
    itself (the same object, not a copy)."""
    flags = (FLAG_JSON if json_body else 0) | (FLAG_GZIP if gzipped else 0)
    return TAG_REQUEST + REQUEST_HEADER.pack(req_id, SIGNAL_CODE[signal], flags, received_ns), body


def is_request_header(frame: bytes) -> bool:
    return len(frame) == 1 + REQUEST_HEADER.size and frame[:1] == TAG_REQUEST


def decode_request_header(frame: bytes) -> tuple[int, str, bool, bool, int]:
    req_id, code, flags, received_ns = REQUEST_HEADER.unpack_from(frame, 1)
    return req_id, SIGNALS[code], bool(flags & FLAG_JSON), bool(flags & FLAG_GZIP), received_ns


def encode_batch(payload: tuple) -> bytes:
    """TAG_BATCH, the request id (readable without decoding megabytes), the format byte, then the
    serialized payload, whose first item is that id (store/writer_process.decode_batch reads it)."""
    header = TAG_BATCH + BATCH_HEADER.pack(payload[0])
    try:
        return header + FORMAT_MARSHAL + marshal.dumps(payload)
    except ValueError:  # "unmarshallable object": a type marshal does not write
        return header + FORMAT_PICKLE + pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def batch_request_id(frame: bytes) -> int:
    return BATCH_HEADER.unpack_from(frame, 1)[0]
