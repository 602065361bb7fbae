"""receiver/allocator.py: the malloc settings reach the ingest children, a user's own setting wins, and
with them large blocks freed in a child go back to the system."""

from __future__ import annotations

import multiprocessing
import sys

import pytest

from receiver import allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")

SETTINGS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _report_settings(queue) -> None:  # runs in a spawned child, as the decoders and the writer do
    import os

    queue.put(tuple(os.environ.get(name) for name in SETTINGS))


def _retained_mb(queue) -> None:
    """What a decoder does with request bodies: multi-megabyte blocks, freed while smaller ones made
    between them live on. The MB still mapped after the big ones are freed."""
    import os

    def rss_mb() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20

    first = b"a" * (4 << 20)
    del first  # the first free of a big block: by default glibc raises its mmap threshold to its size
    before = rss_mb()
    bodies, survivors = [], []
    for i in range(40):
        bodies.append(bytes([i]) * (2 << 20))
        survivors.append(bytes([i]) * 2048)  # above pymalloc's 512 bytes: from malloc's heap
    del bodies
    queue.put(rss_mb() - before)


def _in_child(target) -> object:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(queue,))
    child.start()
    try:
        return queue.get(timeout=60)
    finally:
        child.join(30)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_spawned_children_start_with_the_settings(clean_env: pytest.MonkeyPatch) -> None:
    allocator.tune_malloc()
    assert _in_child(_report_settings) == (
        str(allocator.ARENAS), str(allocator.MMAP_THRESHOLD), str(allocator.TRIM_THRESHOLD))


def test_a_value_the_user_set_is_kept(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MALLOC_ARENA_MAX", "6")
    clean_env.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    allocator.tune_malloc()
    assert _in_child(_report_settings) == ("6", "65536", str(allocator.TRIM_THRESHOLD))


def test_a_nonsense_value_does_not_stop_ingest(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MALLOC_ARENA_MAX", "lots")
    allocator.tune_malloc()  # glibc ignores it in the children; this process gets the default cap
    assert _in_child(_report_settings)[0] == "lots"


def test_freed_request_bodies_leave_a_tuned_child(clean_env: pytest.MonkeyPatch) -> None:
    untuned = _in_child(_retained_mb)
    allocator.tune_malloc()
    tuned = _in_child(_retained_mb)
    assert isinstance(untuned, int) and isinstance(tuned, int)
    assert untuned >= 40, f"glibc kept only {untuned} MB without the settings: this test shows nothing here"
    assert tuned <= 8, f"{tuned} MB of freed 2 MB blocks still mapped"
