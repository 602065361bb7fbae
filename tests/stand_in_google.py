"""A local stand-in for the Gemini API (generativelanguage, v1beta), for end-to-end tests with google-genai.

`models/{model}:generateContent` and `:streamGenerateContent?alt=sse` answer with fixed usageMetadata
(USAGE, the API's own shape: `promptTokenCount` INCLUDES `cachedContentTokenCount`;
`candidatesTokenCount` EXCLUDES `thoughtsTokenCount`). A request whose text contains FORCE_429 gets
the API's RESOURCE_EXHAUSTED error.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.stand_in_anthropic import request_text
from tests.stand_in_server import StandInServer

FORCE_429 = "[force-429]"
MODEL_VERSION = "gemini-2.5-flash"
USAGE = {"promptTokenCount": 1234, "cachedContentTokenCount": 200, "candidatesTokenCount": 56,
         "thoughtsTokenCount": 44, "totalTokenCount": 1334}
TEXT = ["Your refund ", "was issued today."]


class _Handler(BaseHTTPRequestHandler):
    server_version = "stand-in-gemini/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append((self.path, request))  # type: ignore[attr-defined]
        path = self.path.split("?")[0]
        if FORCE_429 in request_text(request.get("contents")):
            self._json(429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                       "message": "Resource has been exhausted (e.g. check quota)."}})
            return
        response_id = f"standin-{len(self.server.requests):04d}"  # type: ignore[attr-defined]
        if path.endswith(":streamGenerateContent"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for i, piece in enumerate(TEXT):
                last = i == len(TEXT) - 1
                candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0}
                chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": MODEL_VERSION, "responseId": response_id}
                if last:
                    candidate["finishReason"] = "STOP"
                    chunk["usageMetadata"] = USAGE
                else:
                    chunk["usageMetadata"] = {"promptTokenCount": USAGE["promptTokenCount"], "totalTokenCount": USAGE["promptTokenCount"]}
                self.wfile.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
                self.wfile.flush()
                time.sleep(0.05 if i == 0 else 0.01)
            return
        if path.endswith(":generateContent"):
            self._json(200, {"candidates": [{"content": {"role": "model", "parts": [{"text": "".join(TEXT)}]},
                                             "finishReason": "STOP", "index": 0}],
                             "usageMetadata": USAGE, "modelVersion": MODEL_VERSION, "responseId": response_id})
            return
        self._json(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": path}})


class StandInGoogle(StandInServer):
    """What `genai.Client(http_options={"base_url": ...})` takes: the SDK appends /v1beta/models/..."""

    handler = _Handler
    path = "/"
