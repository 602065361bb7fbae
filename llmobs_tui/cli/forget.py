"""`llmobs-tui forget --user ID | --conversation ID | --tenant ID`: deletion on request.

Every trace of that user, conversation or tenant is deleted with its spans, log records and search
index rows, and the rollups, tool rollups and conversation and user summaries move by the exact
deltas (store/forget.py, SpanWriter.forget). It writes the store, so `serve` must be stopped first,
like `reprice`. It prints what it removed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from llmobs_tui.cli.common import EXIT_OK, CannotWrite, fail, rewriting_store
from llmobs_tui.format import clean
from llmobs_tui.settings import Settings


def cmd_forget(settings: Settings) -> int:
    from store.connection import DatabaseError, describe_error
    from store.forget import forget
    from store.writer import SpanWriter

    assert settings.forget is not None, "the parser requires one of --user, --conversation, --tenant"
    kind, value = settings.forget

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r  {done:,} of {total:,} traces", end="", file=sys.stderr, flush=True)

    def erasing() -> None:
        if sys.stderr.isatty():
            print("\r  merging the search index and emptying the WAL, so that no copy is left in the files",
                  end="", file=sys.stderr, flush=True)

    if settings.store_url is not None:
        return _forget_on_clickhouse(settings, kind, value, progress)
    try:
        with rewriting_store(settings.db_path, "forget") as db:
            done = forget(db, SpanWriter(db), kind, value, progress, erasing)
    except CannotWrite as exc:
        return fail(str(exc))
    except DatabaseError as exc:
        return fail(f"forget stopped: {describe_error(settings.db_path, exc)}; what it had removed stays removed "
                    f"(each step is one transaction); run it again to finish")
    if sys.stderr.isatty():
        print(file=sys.stderr)
    r = done.removed
    who = f"{kind} {clean(value, limit=200)!r}"
    if not r.traces:
        print(f"nothing stored for {who}")
    else:
        print(f"forgot {who}: {r.traces:,} traces, {r.spans:,} spans, {r.logs:,} log records, "
              f"{r.index_rows:,} search-index rows; {r.calls:,} billed calls (${r.cost_nusd / 1e9:,.4f}) taken out "
              f"of the rollups{rebilled_note(r.rebilled_traces)}; {r.conversations:,} conversations recomputed")
    if not done.erased:
        # Deleted from every table, but pages written before may still be read off the WAL file.
        print(f"warning: {settings.db_path}-wal could not be emptied (a reader, such as the TUI, has the store "
              f"open): earlier copies of what was deleted may remain in it; close the readers and run the same "
              f"command again to empty it", file=sys.stderr)
    return EXIT_OK


def _forget_on_clickhouse(settings: Settings, kind: str, value: str, progress: Callable[[int, int], None]) -> int:
    """On a ClickHouse store: from ClickHouse's own rows (store/clickhouse/forget.py), while the replicas
    keep running (deletion rows and negative deltas are inserts like any other)."""
    from store.backends import ClickHouseReader, describe_clickhouse_error
    from store.clickhouse.client import ClickHouseError
    from store.clickhouse.forget import forget
    from store.connection import StoreError

    assert settings.store_url is not None
    try:
        reader = ClickHouseReader(settings.store_url)
    except StoreError as exc:
        return fail(str(exc))
    try:
        done = forget(reader.client, kind, value, progress)
    except ClickHouseError as exc:
        return fail(f"forget stopped: {describe_clickhouse_error(settings.store_url, exc)}; what it had removed "
                    f"stays removed; run it again to finish")
    finally:
        reader.close()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    who = f"{kind} {clean(value, limit=200)!r}"
    if not done.traces:
        print(f"nothing stored for {who}")
        return EXIT_OK
    print(f"forgot {who}: {done.traces:,} traces, {done.spans:,} spans, {done.logs:,} log records; "
          f"{done.calls:,} billed calls (${done.cost_nusd / 1e9:,.4f}) taken out of the rollups"
          f"{rebilled_note(done.rebilled_traces)}. "
          f"Replicas' working stores drop their copies with their own retention (a day at most).")
    return EXIT_OK


def rebilled_note(traces: int) -> str:
    """A call seen by two instrumentations in two traces is billed in the kept one when its billed span goes."""
    return f" ({traces:,} kept traces that also saw some of those calls are billed for them now)" if traces else ""
