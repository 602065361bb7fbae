"""`reprice --store clickhouse://…` (store/clickhouse/reprice.py) leaves ClickHouse holding what SQLite's reprice
leaves in the store it was copied from: every span's cost, price row and tier, the trace summaries, and the
rollups moved by the exact deltas; a second run changes nothing; a run stopped between its deltas and its
rows finishes on the next without moving the rollups twice.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from llmobs_tui.cli import main
from receiver.prices import PriceTable
from store.clickhouse.client import ChdbClient, ClickHouseError, HttpClient
from store.clickhouse.reprice import reprice
from store.clickhouse.sink import copy_store
from store.clickhouse.url import PASSWORD_ENV, ClickHouseUrl
from tests.clickhouse_fixtures import PASSWORD
from tests.test_clickhouse_sink import assert_clickhouse_equals_sqlite, write_store

# gpt-4o-mini (the billed call of every trace of the traffic) at ten times its price.
PRICES = ('[[price]]\nid = "openai/gpt-4o-mini"\nprovider = "openai"\nnames = ["gpt-4o-mini"]\nkind = "chat"\n'
          'input = 1.5\noutput = 6.0\ncache_read = 0.75\nchecked = "2026-12-01"\nsource = "test"\n')


@pytest.fixture
def stores(tmp_path: Path, http: HttpClient) -> tuple[Path, Path]:
    """(a SQLite store of the traffic, the prices file); ClickHouse holds a copy of the store."""
    path = tmp_path / "replica.db"
    write_store(path, time.time_ns())
    db = sqlite3.connect(path)
    try:
        copy_store(db, http)
    finally:
        db.close()
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    return path, prices


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _sqlite_repriced(path: Path, prices: Path, capsys: pytest.CaptureFixture[str]) -> sqlite3.Connection:
    copy = path.with_name("repriced.db")
    shutil.copy(path, copy)
    code, out, err = _cli(capsys, "reprice", "--db", str(copy), "--prices", str(prices))
    assert code == 0 and "repriced 6 of 12" in out, (out, err)
    return sqlite3.connect(copy)


def test_reprice_on_clickhouse_leaves_what_sqlites_reprice_leaves(stores, url: ClickHouseUrl, engine: ChdbClient,
                                                                 capsys, monkeypatch) -> None:
    path, prices = stores
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    before = engine.query("SELECT sum(cost_nusd) FROM rollups WHERE res = 60")[0][0]
    code, out, err = _cli(capsys, "reprice", "--store", url.display(), "--prices", str(prices))
    assert code == 0 and out.startswith("repriced 6 of 12 stored LLM calls") and err == "", (out, err)
    assert engine.query("SELECT sum(cost_nusd) FROM rollups WHERE res = 60")[0][0] > 5 * before
    db = _sqlite_repriced(path, prices, capsys)
    try:
        assert_clickhouse_equals_sqlite(db, engine, same_clock=False, markers=False)
        code, out, _ = _cli(capsys, "reprice", "--store", url.display(), "--prices", str(prices))
        assert code == 0 and out.startswith("repriced 0 of 12")
        assert_clickhouse_equals_sqlite(db, engine, same_clock=False, markers=False)
    finally:
        db.close()


class _StopsBeforeRows:
    """The network client, until the first span rows: then the run stops (a crash after its deltas)."""

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        self.stopped = False

    def query(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.query(*args, **kwargs)

    def insert(self, table: str, *args: Any, **kwargs: Any) -> int:
        if table == "spans" and not self.stopped:
            self.stopped = True
            raise ClickHouseError("Connection reset by peer")
        return self.client.insert(table, *args, **kwargs)


def test_a_reprice_stopped_after_its_deltas_finishes_without_moving_the_rollups_twice(
        stores, http: HttpClient, engine: ChdbClient, capsys) -> None:
    path, prices = stores
    table = PriceTable.load(prices)
    stopping = _StopsBeforeRows(http)
    with pytest.raises(ClickHouseError):
        reprice(stopping, table.price_call, table.digest)  # type: ignore[arg-type]
    done = reprice(http, table.price_call, table.digest)
    assert (done.scanned, done.changed, done.traces) == (12, 6, 6)
    db = _sqlite_repriced(path, prices, capsys)
    try:
        assert_clickhouse_equals_sqlite(db, engine, same_clock=False, markers=False)
    finally:
        db.close()


def test_reprice_on_an_unreachable_clickhouse_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    code, out, err = _cli(capsys, "reprice", "--store", "clickhouse://llmobs@127.0.0.1:1/llmobs")
    assert code == 1 and out == "" and err.startswith("llmobs-tui: cannot reach ClickHouse at") \
        and err.count("\n") == 1, err
