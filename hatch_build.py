"""Build hook: compiles store/_span_walk.c, the decoder's attribute walk (store/span_walk.py),
when the machine has a C compiler, and leaves it out when it has none: the decoder then walks the
same attributes in Python (the same result, about 25 µs more CPU per span; issue 15).

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

SOURCE = Path("store") / "_span_walk.c"


def compile_extension(root: Path) -> Path | None:
    """store/_span_walk<EXT_SUFFIX> built in place from its C source; None if it could not be."""
    if os.environ.get("LLMOBS_PURE_PYTHON"):
        return None
    source = root / SOURCE
    target = source.with_name("_span_walk" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    linker = shlex.split(sysconfig.get_config_var("LDSHARED") or "cc -shared")
    include = sysconfig.get_paths()["include"]
    # store/span_walk.py uses the module only if this matches its source (see WALK_SOURCE_HASH there).
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    with tempfile.TemporaryDirectory() as work:
        obj = Path(work) / "_span_walk.o"
        built = Path(work) / target.name
        steps = [
            [*compiler, "-O2", "-fPIC", "-fwrapv", "-DNDEBUG", f'-DWALK_SOURCE_HASH="{digest}"', f"-I{include}",
             "-c", str(source), "-o", str(obj)],
            [*linker, str(obj), "-o", str(built)],
        ]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as error:
                print(f"llmobs-tui: not compiling {SOURCE} ({error}); the decoder walks attributes in Python",
                      file=sys.stderr)
                return None
            if done.returncode != 0:
                print(f"llmobs-tui: compiling {SOURCE} failed; the decoder walks attributes in Python:\n"
                      f"{done.stderr[-2000:]}", file=sys.stderr)
                return None
        os.replace(built, target)
    return target


class CompiledWalkHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        built = compile_extension(Path(self.root))
        if built is None:
            return
        if version != "editable":
            build_data["force_include"][str(built)] = str(SOURCE.with_name(built.name))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
