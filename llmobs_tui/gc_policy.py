"""Garbage-collector settings for the TUI, whose pauses a user feels as a key that does nothing.

Measured touring every screen twice on a 4.4M-span store (40 s, no ingest): with CPython's default
thresholds the collector took 1,007 ms, 717 of them in 9 full collections of 33–126 ms, each walking
every object the app holds (Textual's DOM, the screens' rows, the alert engine's caches) and landing
in front of whatever key came next. The objects alive once the first screen is painted (modules,
the installed screens, Textual's machinery) are now frozen out of collection, so a full collection
walks only what was allocated since, and young collections run every 20,000 allocations instead of
700 (the UI allocates short-lived Text and Segment objects by the hundred thousand per refresh):
the same tour took 189 ms of collection, the longest pause 39 ms."""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
_DEFAULT_YOUNG = gc.get_threshold()[0]


def tune_for_interaction() -> None:
    # No gc.collect() first: on a big store's first screen that full collection took up to 0.8 s of
    # the UI thread. What start-up left as garbage stays frozen (bounded, once) until the app ends.
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def restore_collection() -> None:
    """Undo tune_for_interaction when the app ends: a process that runs several apps (the tests)
    would otherwise never collect the cycles of those that ended."""
    if gc.get_freeze_count():
        gc.unfreeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(_DEFAULT_YOUNG, middle, old)
