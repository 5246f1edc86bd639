"""Retention of the bookkeeping and of plain PostgreSQL's metrics (issue 14, item 9).

On real PostgreSQL (a database of this module's own, so that no other test's rows are
in reach of a cutoff), a scheduler process as leader, and a real writer for the replay.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from services.scheduler import retention
from services.scheduler.settings import SchedulerSettings
from shared.migrate import apply_migrations
from tests.infra import (
    PostgresServer,
    ServiceLauncher,
    create_database,
    drop_database,
    new_database_name,
    wait_until,
)
from tests.system.test_writer import (
    dump,
    new_job,
    publish_all,
    start_writer,
    sync_messages,
    wait_consumed,
    wait_job_final,
)

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
async def retention_db_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    name = new_database_name("sync_airbnb_retention")
    url = await create_database(postgres_server, name)
    apply_migrations(url)
    yield url
    await drop_database(postgres_server, name)


@pytest.fixture
async def rdb(retention_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(retention_db_url)
    yield conn
    await conn.close()


def settings(database_url: str, **env: str) -> SchedulerSettings:
    return SchedulerSettings(  # type: ignore[arg-type]
        DATABASE_URL=database_url, NATS_URL="nats://127.0.0.1:1", **env
    )


async def add_job(
    db: asyncpg.Connection, account_id: str, status: str, age: dt.timedelta, listings: int = 3
) -> uuid.UUID:
    job_id = uuid.uuid4()
    at = dt.datetime.now(dt.UTC) - age
    final = status in {"succeeded", "partial", "failed"}
    await db.execute(
        "INSERT INTO airbnb.sync_jobs (job_id, account_id, kind, trigger, dedup_key, scrape_day,"
        " window_start, window_end, status, created_at, finished_at, updated_at)"
        " VALUES ($1, $2, 'full', 'schedule', $3, $4, $4, $4, $5, $6, $7, $6)",
        job_id,
        account_id,
        str(job_id),
        at.date(),
        status,
        at,
        at if final else None,
    )
    await db.executemany(
        "INSERT INTO airbnb.sync_job_listings (job_id, airbnb_listing_id) VALUES ($1, $2)",
        [(job_id, f"L{i}") for i in range(listings)],
    )
    return job_id


async def add_ledger(
    db: asyncpg.Connection, job_id: uuid.UUID, n: int, age: dt.timedelta, first: int = 0
) -> None:
    await db.executemany(
        "INSERT INTO airbnb.sync_committed_chunks"
        " (job_id, airbnb_listing_id, table_name, chunk_no, row_count, committed_at)"
        " VALUES ($1, 'L0', 'chart_query', $2, 10, $3)",
        [(job_id, i, dt.datetime.now(dt.UTC) - age) for i in range(first, first + n)],
    )


async def add_metrics(db: asyncpg.Connection, account_id: str, n: int, age: dt.timedelta) -> None:
    at = dt.datetime.now(dt.UTC) - age
    await db.executemany(
        "INSERT INTO airbnb.chart_query (account_id, airbnb_listing_id, metric_date, time)"
        " VALUES ($1, $2, $3, $4)",
        [(account_id, f"L{i}", at.date(), at) for i in range(n)],
    )


async def new_account(db: asyncpg.Connection) -> str:
    account_id = str(uuid.uuid4().int % 10**15)
    await db.execute(
        "INSERT INTO airbnb.accounts (account_id, credentials_encrypted, x_client_version,"
        " user_agent) VALUES ($1, 'not-a-real-token', 'v1', 'test-agent')",
        account_id,
    )
    return account_id


async def counts(db: asyncpg.Connection, account_id: str) -> dict[str, int]:
    return {
        "jobs": await db.fetchval(
            "SELECT count(*) FROM airbnb.sync_jobs WHERE account_id = $1", account_id
        ),
        "job_listings": await db.fetchval(
            "SELECT count(*) FROM airbnb.sync_job_listings JOIN airbnb.sync_jobs USING (job_id)"
            " WHERE account_id = $1",
            account_id,
        ),
        "ledger": await db.fetchval(
            "SELECT count(*) FROM airbnb.sync_committed_chunks c JOIN airbnb.sync_jobs j"
            " USING (job_id) WHERE j.account_id = $1",
            account_id,
        ),
        "chart_query": await db.fetchval(
            "SELECT count(*) FROM airbnb.chart_query WHERE account_id = $1", account_id
        ),
    }


async def test_old_rows_go_in_batches_and_the_rest_stays(
    retention_db_url: str, rdb: asyncpg.Connection
) -> None:
    account_id = await new_account(rdb)
    old_final = [
        await add_job(rdb, account_id, status, 500 * DAY)
        for status in ("succeeded", "partial", "failed", "succeeded", "succeeded")
    ]
    # However old, a queued or running job stays: the fetcher and writer act on it.
    kept = [
        await add_job(rdb, account_id, "queued", 500 * DAY),
        await add_job(rdb, account_id, "running", 500 * DAY),
        await add_job(rdb, account_id, "succeeded", 399 * DAY),
    ]
    await add_ledger(rdb, kept[2], 7, 31 * DAY)
    await add_ledger(rdb, kept[1], 3, 29 * DAY)
    await add_metrics(rdb, account_id, 4, 5 * 366 * DAY)
    await add_metrics(rdb, account_id, 2, 4 * 365 * DAY)
    assert await counts(rdb, account_id) == {
        "jobs": 8,
        "job_listings": 24,
        "ledger": 10,
        "chart_query": 6,
    }

    pool = await asyncpg.create_pool(retention_db_url, min_size=1, max_size=2)
    try:
        report = await retention.run_pass(
            pool,
            settings(retention_db_url, RETENTION_BATCH_SIZE="2"),
            dt.datetime.now(dt.UTC),
            with_metrics=True,
        )
    finally:
        await pool.close()

    # (rows, statements): batches of 2 rows (a job's listings go with it, so one job a
    # statement), each its own transaction, until one comes back short.
    assert report == {
        "airbnb.sync_committed_chunks": (7, 4),
        "airbnb.sync_jobs": (5, 6),
        "airbnb.chart_query": (4, 3),
        "airbnb.chart_summary": (0, 1),
        "airbnb.list_of_metrics": (0, 1),
    }
    assert await counts(rdb, account_id) == {
        "jobs": 3,
        "job_listings": 9,
        "ledger": 3,
        "chart_query": 2,
    }
    left = {r["job_id"] for r in await rdb.fetch("SELECT job_id FROM airbnb.sync_jobs")}
    assert left >= set(kept) and not left & set(old_final)


async def test_the_leader_applies_retention(
    launcher: ServiceLauncher, retention_db_url: str, rdb: asyncpg.Connection
) -> None:
    account_id = await new_account(rdb)
    old = await add_job(rdb, account_id, "failed", 401 * DAY)
    young = await add_job(rdb, account_id, "succeeded", 2 * DAY)
    await add_ledger(rdb, young, 5, 45 * DAY)
    await add_ledger(rdb, young, 1, 0 * DAY, first=5)
    scheduler = launcher.start(
        ["scheduler"],
        env={
            "DATABASE_URL": retention_db_url,
            "SCHEDULE_CRON": "59 23 31 12 *",
            "RETENTION_INTERVAL_S": "0.5",
        },
    )
    scheduler.wait_for_log(r"leads the daily run", timeout=30)
    scheduler.wait_for_log(r"retention pass: ", timeout=30)

    async def expired_gone() -> bool:
        return await counts(rdb, account_id) == {
            "jobs": 1,
            "job_listings": 3,
            "ledger": 1,
            "chart_query": 0,
        }

    await wait_until(expired_gone, within=15, what="the leader to delete the expired rows")
    assert await rdb.fetchval("SELECT count(*) FROM airbnb.sync_jobs WHERE job_id = $1", old) == 0
    assert scheduler.terminate() == 0


async def test_a_replay_within_the_window_is_still_a_no_op(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection, database_url: str
) -> None:
    """A job synced 10 days ago: older than the results stream keeps (7 days), inside the
    ledger's 30. Retention runs, then the job's whole stream is replayed: nothing changes."""
    start_writer(launcher)
    js = nc.jetstream()
    account_id, job_id = await new_job(db)
    messages, _ = sync_messages(account_id, job_id)
    await publish_all(js, messages)
    assert (await wait_job_final(db, job_id))["status"] == "succeeded"
    gone_account, gone_id = await new_job(db)
    gone_messages, _ = sync_messages(gone_account, gone_id)
    await publish_all(js, gone_messages)
    await wait_job_final(db, gone_id)

    await db.execute(
        "UPDATE airbnb.sync_committed_chunks SET committed_at = now() - interval '10 days'"
        " WHERE job_id = $1",
        job_id,
    )
    await db.execute(
        "UPDATE airbnb.sync_committed_chunks SET committed_at = now() - interval '31 days'"
        " WHERE job_id = $1",
        gone_id,
    )
    gone_ledger = await db.fetchval(
        "SELECT count(*) FROM airbnb.sync_committed_chunks WHERE job_id = $1", gone_id
    )
    before = await dump(db, account_id, job_id)
    assert before["ledger"] and before["chart_query"] and gone_ledger

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        report = await retention.run_pass(
            pool, settings(database_url), dt.datetime.now(dt.UTC), with_metrics=False
        )
    finally:
        await pool.close()
    assert report["airbnb.sync_committed_chunks"][0] >= gone_ledger
    assert not await db.fetchval(
        "SELECT count(*) FROM airbnb.sync_committed_chunks WHERE job_id = $1", gone_id
    )

    seq = await publish_all(js, messages + messages[::-1], with_ids=False)
    await wait_consumed(js, seq)
    assert await dump(db, account_id, job_id) == before
