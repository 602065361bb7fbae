"""receiver/allocator.py: the malloc arena cap reaches the ingest children, and a user's own setting wins."""

from __future__ import annotations

import multiprocessing
import sys

import pytest

from receiver import allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's MALLOC_ARENA_MAX")


def _report_arenas(queue) -> None:  # runs in a spawned child, as the decoders and the writer do
    import os

    queue.put(os.environ.get("MALLOC_ARENA_MAX"))


def _child_sees() -> str | None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_report_arenas, args=(queue,))
    child.start()
    try:
        return queue.get(timeout=60)
    finally:
        child.join(30)


def test_spawned_children_start_with_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    allocator.cap_malloc_arenas()
    assert _child_sees() == str(allocator.ARENAS)


def test_a_value_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "6")
    allocator.cap_malloc_arenas()
    assert _child_sees() == "6"


def test_a_nonsense_value_does_not_stop_ingest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "lots")
    allocator.cap_malloc_arenas()  # glibc ignores it in the children; this process gets the default cap
    assert _child_sees() == "lots"
