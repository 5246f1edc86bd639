"""Session-wide real infrastructure: NATS with JetStream, PostgreSQL with the schema applied,
a launcher for ``sync-airbnb`` subprocesses, and the one way to start the simulator as a
process (``start_simulator``). See tests/infra.py and tests/stack.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
from cryptography.fernet import Fernet
from nats.aio.client import Client as NatsClient

from shared.migrate import apply_migrations
from tests.infra import (
    NatsServer,
    PostgresServer,
    ServiceLauncher,
    create_database,
    drop_database,
    new_database_name,
    start_postgres,
)
from tests.stack import Simulator, StartSimulator


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="session")
def nats_server(workdir: Path) -> Iterator[NatsServer]:
    server = NatsServer(workdir / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(workdir: Path) -> Iterator[PostgresServer]:
    server = start_postgres(workdir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh database for this test session, migrated."""
    name = new_database_name()
    url = await create_database(postgres_server, name)
    apply_migrations(url)
    yield url
    await drop_database(postgres_server, name)


@pytest.fixture
async def empty_database(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh database with no schema, for tests of the migrations themselves."""
    name = new_database_name("sync_airbnb_empty")
    url = await create_database(postgres_server, name)
    yield url
    await drop_database(postgres_server, name)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    if client.is_connected:
        await client.drain()
    else:
        await client.close()


@pytest.fixture(scope="session")
def secret_keys() -> str:
    return ",".join(Fernet.generate_key().decode() for _ in range(2))


@pytest.fixture(scope="session")
def base_env(nats_server: NatsServer, database_url: str, secret_keys: str) -> dict[str, str]:
    return {
        "NATS_URL": nats_server.url,
        "DATABASE_URL": database_url,
        "SECRET_KEYS": secret_keys,
        "ADMIN_API_KEYS": "test-key-1,test-key-2",
        "AIRBNB_MIN_INTERVAL_S": "0",
        "HTTP_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def launcher(base_env: dict[str, str], tmp_path: Path) -> Iterator[ServiceLauncher]:
    launcher = ServiceLauncher(base_env=base_env, logdir=tmp_path)
    yield launcher
    launcher.cleanup()


@pytest.fixture
def bare_launcher(tmp_path: Path) -> Iterator[ServiceLauncher]:
    """A launcher whose processes see none of the project's settings but what a test gives."""
    scrub = ("DATABASE_URL", "NATS_URL", "SECRET_KEYS", "ADMIN_API_KEYS", "SYNC_AIRBNB_TODAY")
    launcher = ServiceLauncher(base_env={}, logdir=tmp_path, scrub=scrub)
    yield launcher
    launcher.cleanup()


@pytest.fixture
def start_simulator(bare_launcher: ServiceLauncher) -> StartSimulator:
    """Starts ``sync-airbnb simulator`` processes: ``sim = await start_simulator(seed=...)``,
    with :meth:`tests.stack.Simulator.start`'s options (accounts, listings, today, faults,
    port, tls_dir, more environment). They stop with the test's other processes."""

    async def start(*, seed: int, **options: Any) -> Simulator:
        return await Simulator.start(bare_launcher, seed=seed, **options)

    return start
