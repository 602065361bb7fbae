"""Loading the store's compiled helpers (hatch_build.py builds them where a C compiler is found).

Each is an optional C module beside its source, `store/_NAME.c`, with a Python fallback that gives the
same results: `store._span_walk` (the decoder's attribute walk, store/span_walk.py) and
`store._histogram` (the histogram blob's encode and decode, store/histogram.py). A module is used only
if it was built from the source beside it: an editable install keeps the module it built, and once that
C changes, the Python path runs instead of older C. `LLMOBS_PURE_PYTHON=1` turns them all off (the
tests run both ways).
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from types import ModuleType


def source_hash(source: Path) -> str:
    """What hatch_build.py compiles into a module as its SOURCE_HASH."""
    return hashlib.sha256(source.read_bytes()).hexdigest()[:16]


def load(name: str, source: Path) -> ModuleType | None:
    """`store.<name>` if it was built from `source`; None without it, with another build, or when
    LLMOBS_PURE_PYTHON is set."""
    if os.environ.get("LLMOBS_PURE_PYTHON"):
        return None
    try:
        module = importlib.import_module(f"store.{name}")
    except ImportError:
        return None
    built_from = getattr(module, "SOURCE_HASH", "")
    try:
        current = source_hash(source)
    except OSError:  # an install without the C source beside the module: it was built from that install's
        current = built_from
    return module if built_from and built_from == current else None
