"""Fixtures shared by the ClickHouse tests (registered for every test in tests/conftest.py): the chdb HTTP
front (tests/chdb_http_server.py) for a module, a fresh database name per test (dropped afterwards), its
store URL, the real network client on it (the schema migrated) and the engine read directly. The engine is
imported only when a test asks for one of them. A ClickHouse a test ran in a process of its own
(PROCESSES) is stopped after the test, whether or not the test got to stop it."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from store.clickhouse.client import ChdbClient, HttpClient
    from store.clickhouse.url import ClickHouseUrl
    from tests.chdb_http_server import ChdbHttpServer

# A quote in the password: it must travel as data through every layer (HTTP auth, the server's check).
USER, PASSWORD = "llmobs", "s3cret'pw"
PROCESSES: list[subprocess.Popen] = []  # the chdb HTTP fronts started as processes (test_clickhouse_sink)


@pytest.fixture(autouse=True)
def _no_clickhouse_process_left() -> Iterator[None]:
    """A test that fails between starting a ClickHouse process and stopping it leaves none running."""
    yield
    while PROCESSES:
        proc = PROCESSES.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server() -> Iterator[ChdbHttpServer]:
    from tests.chdb_http_server import ChdbHttpServer, engine_path

    server = ChdbHttpServer(engine_path(), {USER: PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture
def database() -> Iterator[str]:
    from store.clickhouse.client import ChdbClient
    from tests.chdb_http_server import engine_path

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    admin = ChdbClient(engine_path(), "default")
    admin.command("DROP DATABASE IF EXISTS {db:Identifier} SYNC", {"db": name})
    admin.close()


@pytest.fixture
def url(server: ChdbHttpServer, database: str) -> ClickHouseUrl:
    from store.clickhouse.url import PASSWORD_ENV, parse_store_url

    return parse_store_url(f"clickhouse://{USER}@127.0.0.1:{server.port}/{database}", {PASSWORD_ENV: PASSWORD})


@pytest.fixture
def http(url: ClickHouseUrl) -> Iterator[HttpClient]:
    from store.clickhouse import schema
    from store.clickhouse.client import HttpClient

    client = HttpClient(url)
    assert schema.migrate(client) == list(range(1, len(schema.MIGRATIONS) + 1))
    yield client
    client.close()


@pytest.fixture
def engine(database: str, http: HttpClient) -> Iterator[ChdbClient]:
    """The same database read on the engine directly: what the server really stored."""
    from store.clickhouse.client import ChdbClient
    from tests.chdb_http_server import engine_path

    client = ChdbClient(engine_path(), database)
    client.use_database()
    yield client
    client.close()
