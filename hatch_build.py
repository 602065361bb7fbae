"""Build hook: compiles the store's C helpers when the machine has a C compiler, and leaves them out
when it has none (store/compiled.py; each has a Python fallback with the same results):
- store/_span_walk.c, the decoder's attribute walk (store/span_walk.py; without it about 25 µs more CPU
  per span, issue 15);
- store/_histogram.c, the histogram blob's encode and decode (store/histogram.py; the writer encodes
  about 1.4 histograms per span it stores).

Editable installs (`pip install -e .`, the README's commands) import from the source tree, so the
module is built there, next to its source (ignored by git); a wheel carries it and is tagged for
this interpreter and platform. Nothing here can fail an install: any error is printed and skipped.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# Each C source, the macro its SOURCE_HASH comes in by, and what runs without it.
SOURCES = (
    (Path("store") / "_span_walk.c", "WALK_SOURCE_HASH", "the decoder walks attributes in Python"),
    (Path("store") / "_histogram.c", "HISTOGRAM_SOURCE_HASH", "histograms are encoded in Python"),
)


def compile_extension(root: Path, source_path: Path, hash_macro: str, fallback: str) -> Path | None:
    """store/_NAME<EXT_SUFFIX> built in place from its C source; None if it could not be."""
    if os.environ.get("LLMOBS_PURE_PYTHON"):
        return None
    source = root / source_path
    target = source.with_name(source.stem + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    linker = shlex.split(sysconfig.get_config_var("LDSHARED") or "cc -shared")
    include = sysconfig.get_paths()["include"]
    # store/compiled.py uses the module only if this matches its source.
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    with tempfile.TemporaryDirectory() as work:
        obj = Path(work) / f"{source.stem}.o"
        built = Path(work) / target.name
        steps = [
            [*compiler, "-O2", "-fPIC", "-fwrapv", "-DNDEBUG", f'-D{hash_macro}="{digest}"', f"-I{include}",
             "-c", str(source), "-o", str(obj)],
            [*linker, str(obj), "-o", str(built)],
        ]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as error:
                print(f"llmobs-tui: not compiling {source_path} ({error}); {fallback}", file=sys.stderr)
                return None
            if done.returncode != 0:
                print(f"llmobs-tui: compiling {source_path} failed; {fallback}:\n{done.stderr[-2000:]}",
                      file=sys.stderr)
                return None
        os.replace(built, target)
    return target


class CompiledHelpersHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        any_built = False
        for source, hash_macro, fallback in SOURCES:
            built = compile_extension(Path(self.root), source, hash_macro, fallback)
            if built is None:
                continue
            any_built = True
            if version != "editable":
                build_data["force_include"][str(built)] = str(source.with_name(built.name))
        if any_built:
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
