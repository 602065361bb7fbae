"""Lint and type checks as tests, so that CI (which runs pytest) runs them: ruff over the tree and
mypy over store/ and receiver/, both configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What ruff checks: the whole tree, with no exclusions (rules and per-file ignores are in pyproject.toml).
RUFF_PATHS = ["."]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "--no-cache", *RUFF_PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing_in_store_and_receiver():
    # Files and settings come from [tool.mypy]; the cache lives in .mypy_cache (git ignores it).
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
