"""A local stand-in for the OpenAI HTTP API, deterministic, for end-to-end tests with the real SDK.

Usage per model is fixed (USAGE), so a test knows exactly what the provider reported. A request
whose `user` is "force-429", or whose messages contain FORCE_429 (for frameworks that do not pass
`user` through), gets a rate-limit error; "force-500" a server error.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.stand_in_server import StandInServer

# model asked for → (response model, prompt tokens incl. cached, cached, completion incl. reasoning, reasoning)
USAGE = {
    "gpt-4o": ("gpt-4o-2024-08-06", 1200, 400, 150, 0),
    "gpt-4o-mini": ("gpt-4o-mini-2024-07-18", 800, 0, 60, 0),
    "o3-mini": ("o3-mini-2025-01-31", 500, 0, 900, 700),
    "local-llama": ("local-llama", 100, 0, 20, 0),
}
EMBEDDING_TOKENS = 42
FORCE_429 = "[force-429]"


def _has_marker(body: object) -> bool:
    if isinstance(body, str):
        return FORCE_429 in body
    if isinstance(body, dict):
        return any(_has_marker(v) for v in body.values())
    if isinstance(body, list):
        return any(_has_marker(v) for v in body)
    return False


class _Handler(BaseHTTPRequestHandler):
    server_version = "stand-in-openai/1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append((self.path, request))  # type: ignore[attr-defined]
        if request.get("user") == "force-429" or _has_marker(request.get("messages")):
            self._json(429, {"error": {"message": "Rate limit reached for requests", "type": "requests",
                                       "code": "rate_limit_exceeded"}})
            return
        if request.get("user") == "force-500":
            self._json(500, {"error": {"message": "The server had an error", "type": "server_error"}})
            return
        if self.path.endswith("/embeddings"):
            inputs = request.get("input")
            n = len(inputs) if isinstance(inputs, list) else 1
            self._json(200, {"object": "list", "model": request["model"],
                             "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(n)],
                             "usage": {"prompt_tokens": EMBEDDING_TOKENS, "total_tokens": EMBEDDING_TOKENS}})
            return
        # Unique per call, as the API's are: a span's response id names one provider call.
        call_id = f"chatcmpl-standin-{len(self.server.requests):04d}"  # type: ignore[attr-defined]
        model, prompt, cached, completion, reasoning = USAGE[request["model"]]
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                 "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        created = int(time.time())
        if request.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunks = [{"role": "assistant", "content": ""}, {"content": "Parcels ship "}, {"content": "within 2 days."}]
            for i, delta in enumerate(chunks):
                event = {"id": call_id, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.05 if i == 0 else 0.01)  # a measurable time to first token
            final = {"id": call_id, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            self.wfile.write(f"data: {json.dumps(final)}\n\n".encode())
            if (request.get("stream_options") or {}).get("include_usage"):
                tail = {"id": call_id, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [], "usage": usage}
                self.wfile.write(f"data: {json.dumps(tail)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            return
        self._json(200, {"id": call_id, "object": "chat.completion", "created": created, "model": model,
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": "Parcels ship within 2 days."}}],
                         "usage": usage, "system_fingerprint": "fp_test"})


class StandInOpenAI(StandInServer):
    """The OpenAI API: the SDK appends /chat/completions and /embeddings."""

    handler = _Handler
    path = "/v1"
