"""Module boundaries (design §1, issue 12): the import contracts between the packages.

- ``store`` imports no ``receiver``, ``llmobs_tui``, grpc, Textual or aiohttp;
- ``receiver`` imports no Textual and no ``llmobs_tui`` (its pure parsing modules no grpc/aiohttp either);
- ``llmobs_tui.alerting``, ``llmobs_tui.config`` and ``llmobs_tui.backend`` import no Textual,
  so the headless backend and the alert engine run without it;
- the TUI's read side (``llmobs_tui.reader``, ``.widgets``, ``.screens``, ``.app``) imports no ``receiver``.

Each contract is checked in a fresh interpreter: import the modules, then inspect ``sys.modules``.
A name ending in ``.*`` means the package and every module under it (found with pkgutil, so a module
added later is covered without editing this list)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = [
    pytest.param("store.*", ("receiver", "llmobs_tui", "grpc", "textual", "aiohttp"), id="store"),
    pytest.param("receiver.*", ("textual", "llmobs_tui"), id="receiver"),
    pytest.param("receiver.normalize, receiver.otlp, receiver.prices, receiver.redact, "
                 "receiver.decoder_process", ("textual", "llmobs_tui", "grpc", "aiohttp"), id="receiver-pure"),
    pytest.param("llmobs_tui.alerting, llmobs_tui.alerting.engine, llmobs_tui.alerting.burn", ("textual",),
                 id="llmobs_tui.alerting"),
    # live.py is the glue between the engine and the app: AlertSource/AlertView live in alerting/source.py.
    pytest.param("llmobs_tui.alerting.*", ("textual",), id="llmobs_tui.alerting.live"),
    # The read side never reaches into ingest: span details, conversations and prices are decoded
    # from what the store keeps (store.span_detail, store.content, store.pricing), not by receiver/.
    pytest.param("llmobs_tui.reader, llmobs_tui.widgets.*, llmobs_tui.screens.*, llmobs_tui.app", ("receiver",),
                 id="llmobs_tui.read-side"),
    pytest.param("llmobs_tui.config", ("textual",), id="llmobs_tui.config"),
    pytest.param("llmobs_tui.backend", ("textual",), id="llmobs_tui.backend"),
    pytest.param("llmobs_tui, llmobs_tui.backend, llmobs_tui.settings, llmobs_tui.cli.*", ("textual",),
                 id="llmobs_tui.cli"),
]

_PROBE = """\
import importlib, pkgutil, sys
imported = []
for name in {names!r}:
    if name.endswith(".*"):
        package = importlib.import_module(name[:-2])
        imported.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            imported.append(importlib.import_module(info.name).__name__)
    else:
        imported.append(importlib.import_module(name).__name__)
assert imported, "nothing imported"
bad = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
print(",".join(bad[:10]))
"""


@pytest.mark.parametrize("modules,forbidden", CASES)
def test_module_does_not_import(modules, forbidden):
    names = [m.strip() for m in modules.split(",")]
    code = _PROBE.format(names=names, forbidden=forbidden)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{modules} imported {result.stdout.strip()}"
