"""The HTTP server under every stand-in provider (tests/stand_in_*.py): a real server on a free
loopback port, in a thread, that records the requests it answered."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandInServer:
    handler: type[BaseHTTPRequestHandler]
    path = ""  # appended to the address in base_url (what the provider SDK takes)

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self.server.daemon_threads = True
        self.server.requests = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"

    @property
    def requests(self) -> list[tuple[str, dict]]:
        return self.server.requests  # type: ignore[attr-defined]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
