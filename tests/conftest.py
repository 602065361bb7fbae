"""Shared fixtures: a real SQLite store on tmp_path, the real normalizer and price table."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store.connection import WriterLock, open_writer
from store.writer import SpanWriter

# The chdb server, database and URL fixtures of the ClickHouse tests.
pytest_plugins = ("tests.clickhouse_fixtures",)


@pytest.fixture(scope="session")
def prices() -> PriceTable:
    return PriceTable.load()


@pytest.fixture
def normalizer(prices: PriceTable) -> Normalizer:
    return Normalizer(prices, IngestOptions())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def writer_db(db_path: Path) -> Iterator[sqlite3.Connection]:
    lock = WriterLock(db_path)
    lock.acquire()
    db = open_writer(db_path)
    yield db
    db.close()
    lock.release()


@pytest.fixture
def writer(writer_db: sqlite3.Connection) -> SpanWriter:
    return SpanWriter(writer_db)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # aiosqlite and grpc.aio are asyncio-only (style §0.4).
    return "asyncio"


@pytest.fixture
async def backend(tmp_path: Path):
    """A real receiver (gRPC and HTTP on free ports), one decoder process and a SQLite file."""
    from llmobs_tui.backend import Backend, BackendConfig
    from receiver.pipeline import PipelineConfig

    b = Backend(BackendConfig(PipelineConfig(db_path=str(tmp_path / "recv.db"), decoders=1, retention_s=None),
                              grpc_port=0, http_port=0))
    await b.start()
    try:
        yield b
    finally:
        await b.aclose()
