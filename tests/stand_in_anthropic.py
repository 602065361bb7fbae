"""A local stand-in for the Anthropic Messages API, deterministic, for end-to-end tests with the real SDK.

Every call reports the same usage (USAGE, the API's own shape: `input_tokens` EXCLUDES cache reads and
cache writes). `stream: true` answers with the API's server-sent events (usage in `message_start`,
final output tokens in `message_delta`). A request whose text contains FORCE_429 (or whose
`metadata.user_id` is "force-429") gets the API's rate-limit error, with a `retry-after` header.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.stand_in_server import StandInServer

FORCE_429 = "[force-429]"
# The API answers with the dated snapshot of the alias asked for.
MODELS = {"claude-sonnet-4-5": "claude-sonnet-4-5-20250929", "claude-haiku-4-5": "claude-haiku-4-5-20251001"}
# The provider's own numbers: uncached input, cache read, cache write (5 min), output.
USAGE = {"input_tokens": 1000, "cache_read_input_tokens": 200, "cache_creation_input_tokens": 34, "output_tokens": 56}
TEXT = ["Your refund ", "was issued ", "today."]


def request_text(body: Any) -> str:
    """Every string in a request body, joined: where the 429 marker is looked for."""
    if isinstance(body, str):
        return body
    if isinstance(body, dict):
        return " ".join(request_text(v) for v in body.values())
    if isinstance(body, list):
        return " ".join(request_text(v) for v in body)
    return ""


class _Handler(BaseHTTPRequestHandler):
    server_version = "stand-in-anthropic/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", f"req_standin_{len(self.server.requests)}")  # type: ignore[attr-defined]
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append((self.path, request))  # type: ignore[attr-defined]
        if not self.path.rstrip("/").endswith("/messages"):
            self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})
            return
        if FORCE_429 in request_text(request.get("messages")) or (request.get("metadata") or {}).get("user_id") == "force-429":
            self._json(429, {"type": "error", "error": {"type": "rate_limit_error",
                                                        "message": "Number of request tokens has exceeded your per-minute rate limit"}},
                       {"retry-after": "30", "x-should-retry": "false"})
            return
        n = len(self.server.requests)  # type: ignore[attr-defined]
        message_id = f"msg_standin_{n:04d}"
        model = MODELS.get(request.get("model"), request.get("model"))
        if request.get("stream"):
            self._stream(message_id, model)
            return
        self._json(200, {"id": message_id, "type": "message", "role": "assistant", "model": model,
                         "content": [{"type": "text", "text": "".join(TEXT)}],
                         "stop_reason": "end_turn", "stop_sequence": None,
                         "usage": {**USAGE, "service_tier": "standard"}})

    def _stream(self, message_id: str, model: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("request-id", f"req_standin_{message_id}")
        self.end_headers()
        self.close_connection = True

        def event(kind: str, data: dict) -> None:
            self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()

        start_usage = {**USAGE, "output_tokens": 1, "service_tier": "standard"}
        event("message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}})
        time.sleep(0.05)  # a measurable time to first token
        event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        event("ping", {"type": "ping"})
        for piece in TEXT:
            event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})
            time.sleep(0.01)
        event("content_block_stop", {"type": "content_block_stop", "index": 0})
        event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": USAGE["output_tokens"]}})
        event("message_stop", {"type": "message_stop"})


class StandInAnthropic(StandInServer):
    """What `anthropic.Anthropic(base_url=...)` takes: the SDK appends /v1/messages."""

    handler = _Handler
    path = ""
