"""Module boundaries (design §1): the receiver never imports Textual; the store never imports grpc
or Textual; the headless backend runs without Textual. Checked in a fresh interpreter each."""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = [
    ("store, store.writer, store.queries, store.retention, store.writer_process, store.connection",
     ("textual", "grpc", "receiver", "llmobs_tui", "aiohttp")),
    ("receiver.normalize, receiver.otlp, receiver.prices, receiver.content, receiver.redact, "
     "receiver.decoder_process", ("textual", "llmobs_tui", "grpc", "aiohttp")),
    ("receiver.pipeline, receiver.grpc_server, receiver.http_server, receiver.query_server, receiver.forward, "
     "receiver.auth, receiver.tls", ("textual", "llmobs_tui")),
    ("llmobs_tui, llmobs_tui.backend, llmobs_tui.cli", ("textual",)),
]


@pytest.mark.parametrize("modules,forbidden", CASES, ids=[c[0].split(",")[0] for c in CASES])
def test_module_does_not_import(modules, forbidden):
    code = (
        f"import sys\nimport {modules}\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})\n"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{modules} imported {result.stdout.strip()}"
