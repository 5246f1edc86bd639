"""The gauges the alert rules read that are not counters of the services' own work: the
scheduler leader's account counts (from PostgreSQL) and the writer's pending count
(from its JetStream consumer). Against a real PostgreSQL and nats-server."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest

from services.scheduler import health_gauges
from services.writer.consumer import report_pending
from shared import topology
from shared.metrics import ACCOUNTS_NEEDING_CREDENTIALS, ACCOUNTS_STALE, WRITER_PENDING
from shared.migrate import apply_migrations
from tests.infra import NatsServer, wait_until

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


@pytest.fixture
async def pool(empty_database: str) -> AsyncIterator[asyncpg.Pool]:
    # A database of its own: the counts are over every account in it.
    apply_migrations(empty_database)
    async with asyncpg.create_pool(empty_database, min_size=1, max_size=2) as pool:
        yield pool


async def add_account(
    pool: asyncpg.Pool,
    account_id: str,
    *,
    created: dt.datetime,
    last_sync: dt.datetime | None = None,
    active: bool = True,
    invalid: bool = False,
    deleted: bool = False,
) -> None:
    await pool.execute(
        """
        INSERT INTO airbnb.accounts (account_id, credentials_encrypted, x_client_version,
            user_agent, is_active, credentials_invalid_at, last_sync_at, created_at,
            deleted_at)
        VALUES ($1, 'token', 'test-client', 'test-agent', $2, $3, $4, $5, $6)
        """,
        account_id,
        active,
        created if invalid else None,
        last_sync,
        created,
        created if deleted else None,
    )


async def test_the_leader_counts_accounts_needing_credentials_and_stale_ones(
    pool: asyncpg.Pool,
) -> None:
    old = NOW - 40 * HOUR
    await add_account(pool, "1", created=old, last_sync=NOW - 2 * HOUR)  # healthy
    await add_account(pool, "2", created=old, last_sync=NOW - 37 * HOUR)  # stale
    await add_account(pool, "3", created=old)  # never synced in 40 h: stale
    await add_account(pool, "4", created=NOW - HOUR)  # new, not yet due
    await add_account(pool, "5", created=old, invalid=True)  # needs credentials only
    await add_account(pool, "6", created=old, active=False)  # paused: neither
    await add_account(pool, "7", created=old, invalid=True, deleted=True)  # deleted: neither

    assert await health_gauges.update(pool, NOW) == (1, 2)
    assert ACCOUNTS_NEEDING_CREDENTIALS._value.get() == 1
    assert ACCOUNTS_STALE._value.get() == 2


async def test_the_gauges_loop_counts_until_the_lead_ends_then_leaves_zero(
    pool: asyncpg.Pool,
) -> None:
    await add_account(pool, "1", created=NOW - 40 * HOUR, invalid=True)
    ACCOUNTS_NEEDING_CREDENTIALS.set(0)
    stopping = asyncio.Event()
    task = asyncio.create_task(health_gauges.run_health_gauges(pool, stopping, interval_s=0.1))
    await wait_until(
        lambda: ACCOUNTS_NEEDING_CREDENTIALS._value.get() == 1,
        within=10,
        what="the leader's count of accounts needing credentials",
    )
    stopping.set()
    await asyncio.wait_for(task, timeout=5)
    assert ACCOUNTS_NEEDING_CREDENTIALS._value.get() == 0
    assert ACCOUNTS_STALE._value.get() == 0


async def test_the_writer_reports_its_consumers_pending_count(tmp_path: Path) -> None:
    # A nats-server of its own: the messages published here are for no writer to read.
    server = NatsServer(tmp_path / "nats")
    server.start()
    nc = await nats.connect(server.url)
    stopping = asyncio.Event()
    try:
        js = nc.jetstream()
        await topology.provision(js)
        for _ in range(5):
            await js.publish(topology.SYNC_PROGRESS, b"{}")
        task = asyncio.create_task(
            report_pending(js, topology.WRITER_RESULTS, stopping, interval_s=0.1)
        )
        await wait_until(
            lambda: WRITER_PENDING._value.get() == 5, within=10, what="the writer's pending gauge"
        )
        stopping.set()
        await asyncio.wait_for(task, timeout=5)
    finally:
        stopping.set()
        await nc.close()
        server.stop()
