"""The price table's commands: `prices` lists the table in effect (shipped rows plus `--prices`),
`reprice` applies it to the stored history (a changed price re-prices the calls it priced, and a
new row prices calls that had none). The table itself is loaded and checked by `Settings`."""

from __future__ import annotations

import json
import time

from llmobs_tui.cli.common import EXIT_OK, CannotWrite, fail, rewriting_store
from llmobs_tui.settings import Settings


def cmd_prices(settings: Settings) -> int:
    table = settings.prices
    assert table is not None, "Settings loads the price table for `prices`"
    rows = sorted(table.rows, key=lambda r: (r.provider, r.id))
    if settings.output_format == "json":
        print(json.dumps({"digest": table.digest, "rows": [
            {"id": r.id, "provider": r.provider, "kind": r.kind, "names": list(r.names),
             "pattern": r.pattern.pattern if r.pattern else None, "input": r.input, "output": r.output,
             "cache_read": r.cache_read, "cache_write": r.cache_write, "reasoning": r.reasoning,
             "long_context_threshold": r.long_context_threshold, "long_input": r.long_input,
             "long_output": r.long_output, "checked": r.checked, "source": r.source} for r in rows]}, indent=2))
        return EXIT_OK
    print("USD per 1M tokens. Input includes cached tokens; output includes reasoning.\n")
    print("| provider | id | models | kind | input | output | cache read | cache write | reasoning | checked |")
    print("|---|---|---|---|--:|--:|--:|--:|--:|---|")
    for r in rows:
        models = ", ".join(r.names) + (f" /{r.pattern.pattern}/" if r.pattern else "")
        long = (f" (>{r.long_context_threshold:,}: {r.long_input:g}/{r.long_output:g})"
                if r.long_context_threshold else "")
        print(f"| {r.provider} | {r.id} | {models} | {r.kind} | {r.input:g}{long} | {r.output:g} | "
              f"{r.cache_read:g} | {r.cache_write:g} | {r.reasoning:g} | {r.checked} |")
    print(f"\n{len(rows)} rows; table digest {table.digest}")
    return EXIT_OK


def cmd_reprice(settings: Settings) -> int:
    from store.meta import set_prices_digest
    from store.pricing import record_price_rows
    from store.writer import SpanWriter

    table = settings.prices
    assert table is not None, "Settings loads the price table for `reprice`"
    if settings.store_url is not None:
        return _reprice_on_clickhouse(settings)
    try:
        with rewriting_store(settings.db_path, "reprice") as db:
            writer = SpanWriter(db)
            # The rows first: each repriced span then names the stored row (and tier) that priced it.
            record_price_rows(db, table.records(), time.time_ns())
            scanned, changed = writer.reprice(table.price_call)
            set_prices_digest(db, table.digest)
    except CannotWrite as exc:
        return fail(str(exc))
    print(f"repriced {changed:,} of {scanned:,} stored LLM calls with price table {table.digest}")
    return EXIT_OK


def _reprice_on_clickhouse(settings: Settings) -> int:
    """On a ClickHouse store: from ClickHouse's own rows (store/clickhouse/reprice.py), while the replicas keep
    serving; they price new spans with their own table, so they are restarted with the same `--prices`."""
    from store.backends import ClickHouseReader, describe_clickhouse_error
    from store.clickhouse.client import ClickHouseError
    from store.clickhouse.reprice import reprice
    from store.connection import StoreError

    table = settings.prices
    assert table is not None and settings.store_url is not None
    try:
        reader = ClickHouseReader(settings.store_url)
    except StoreError as exc:
        return fail(str(exc))
    try:
        done = reprice(reader.client, table.price_call, table.digest)
    except ClickHouseError as exc:
        return fail(f"reprice stopped: {describe_clickhouse_error(settings.store_url, exc)}; the calls it had "
                    f"repriced stay repriced; run it again to finish")
    finally:
        reader.close()
    print(f"repriced {done.changed:,} of {done.scanned:,} stored LLM calls with price table {table.digest} "
          f"({done.traces:,} traces). Replicas price new calls with their own table: restart them with the same "
          f"--prices.")
    return EXIT_OK
