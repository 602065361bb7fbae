"""malloc settings for the ingest processes (glibc only; elsewhere nothing is changed).

Arenas: glibc gives each thread that allocates its own arena, up to eight per core, and memory freed
in one arena is not reused by another. The process that owns the sockets has gRPC's threads plus a
sender and a reader thread per child, all handling multi-megabyte request bodies and batches: memory
freed by one thread stayed mapped in its arena while another thread grew its own. Two arenas cut that
process's peak RSS under bench.ingest --workload heavy from 149 to 120 MB at the same CPU per span.

Large blocks: glibc serves a block of 128 KiB or more with its own mmap, returned to the system when
freed, but the first such free raises that threshold to the block's size (up to 32 MiB). From then on
every request body, decoded batch and compressed blob of a few megabytes is carved from the heap, and
the heap cannot shrink past the small objects allocated after them: the memory stays mapped. Fixing
the threshold (which also fixes the trim threshold) keeps them mmapped: serve's peak RSS under
bench.ingest --workload heavy 338 → 311 MB in one pair of runs; with the copy of every request body also
gone (receiver/protocol.py), 334 · 345 → 298 · 298 MB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ARENAS = 2
MMAP_THRESHOLD = 128 << 10  # glibc's own starting value, kept from moving
TRIM_THRESHOLD = 1 << 20  # free memory at the heap's top beyond this goes back to the system
_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

# What glibc reads from the environment at a process's start (spawned children inherit it).
_SETTINGS = (("MALLOC_ARENA_MAX", _M_ARENA_MAX, ARENAS),
             ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
             ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def tune_malloc() -> None:
    """Apply the settings to this process now (mallopt) and to its children from their start (the
    environment variables glibc reads). A value the user set is kept; a nonsense one is left to glibc
    (which ignores it) in the children, and this process takes the default."""
    if not sys.platform.startswith("linux"):
        return
    chosen = [(option, os.environ.setdefault(name, str(default)), default) for name, option, default in _SETTINGS]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt: nothing to tune
        return
    for option, value, default in chosen:
        mallopt(option, int(value) if value.isdigit() else default)
