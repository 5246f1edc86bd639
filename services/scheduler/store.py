"""The scheduler's SQL: reading accounts and jobs, creating jobs set-based.

Every query here is one round trip, whatever the number of accounts: the daily
fan-out reads all schedulable accounts with one SELECT and creates their jobs with
one ``INSERT ... SELECT FROM unnest(...)`` per chunk.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from services.scheduler.plan import Account, ExistingJob, JobPlan, plan_from_existing
from shared.db import Conn
from shared.messages import EncryptedCredentials

# Matches the partial index accounts_schedulable_idx and docs/data-path.md.
SCHEDULABLE = "a.is_active AND a.deleted_at IS NULL AND a.credentials_invalid_at IS NULL"

_ACCOUNT_COLUMNS = """
    a.account_id, a.credentials_encrypted, a.credentials_version, a.x_client_version,
    a.user_agent, a.is_active,
    a.deleted_at IS NOT NULL AS deleted,
    a.credentials_invalid_at IS NOT NULL AS credentials_invalid,
    a.last_sync_at IS NULL AS never_synced
"""

_JOB_COLUMNS = """
    j.job_id, j.dedup_key, j.status, j.kind, j.trigger, j.scrape_day, j.window_start,
    j.window_end, j.created_at
"""


def _account(row: asyncpg.Record) -> Account:
    return Account(
        account_id=row["account_id"],
        cookie_token=row["credentials_encrypted"],
        x_client_version=row["x_client_version"],
        user_agent=row["user_agent"],
        is_active=row["is_active"],
        deleted=row["deleted"],
        credentials_invalid=row["credentials_invalid"],
        never_synced=row["never_synced"],
        credentials_version=row["credentials_version"],
    )


def _job(row: asyncpg.Record) -> ExistingJob:
    return ExistingJob(
        job_id=row["job_id"],
        dedup_key=row["dedup_key"],
        status=row["status"],
        kind=row["kind"],
        trigger=row["trigger"],
        scrape_day=row["scrape_day"],
        window_start=row["window_start"],
        window_end=row["window_end"],
        created_at=row["created_at"],
    )


def _job_plan(row: asyncpg.Record) -> JobPlan:
    creds = EncryptedCredentials(
        cookie_token=row["credentials_encrypted"],
        x_client_version=row["x_client_version"],
        user_agent=row["user_agent"],
        version=row["credentials_version"],
    )
    return plan_from_existing(_job(row), row["account_id"], creds)


async def schedulable_accounts(conn: Conn) -> list[Account]:
    """Every account the daily run syncs."""
    rows = await conn.fetch(
        f"SELECT {_ACCOUNT_COLUMNS} FROM airbnb.accounts a WHERE {SCHEDULABLE}"
        " ORDER BY a.account_id"
    )
    return [_account(r) for r in rows]


async def accounts_awaiting_backfill(conn: Conn) -> list[Account]:
    """Schedulable accounts that never synced and have no job at all: missed backfills."""
    rows = await conn.fetch(
        f"""
        SELECT {_ACCOUNT_COLUMNS} FROM airbnb.accounts a
        WHERE {SCHEDULABLE} AND a.last_sync_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM airbnb.sync_jobs j WHERE j.account_id = a.account_id)
        ORDER BY a.account_id
        """
    )
    return [_account(r) for r in rows]


async def account(conn: Conn, account_id: str) -> Account | None:
    row = await conn.fetchrow(
        f"SELECT {_ACCOUNT_COLUMNS} FROM airbnb.accounts a WHERE a.account_id = $1", account_id
    )
    return _account(row) if row else None


async def attempts(conn: Conn, account_id: str, scrape_day: object, kind: str) -> list[ExistingJob]:
    """Every attempt (first and retries) of one account, scrape day and kind."""
    rows = await conn.fetch(
        f"""
        SELECT {_JOB_COLUMNS} FROM airbnb.sync_jobs j
        WHERE j.account_id = $1 AND j.scrape_day = $2 AND j.kind = $3
        """,
        account_id,
        scrape_day,
        kind,
    )
    return [_job(r) for r in rows]


async def job_by_key(conn: Conn, key: str) -> ExistingJob | None:
    row = await conn.fetchrow(
        f"SELECT {_JOB_COLUMNS} FROM airbnb.sync_jobs j WHERE j.dedup_key = $1", key
    )
    return _job(row) if row else None


async def insert_jobs(conn: Conn, plans: Sequence[JobPlan]) -> set[uuid.UUID]:
    """Create the jobs that do not exist yet (by dedup key); return the ids created.

    ``ON CONFLICT (dedup_key) DO NOTHING`` is what makes two schedulers, a restart
    or a double click create one job: whoever loses simply gets nothing back.
    """
    if not plans:
        return set()
    rows = await conn.fetch(
        """
        INSERT INTO airbnb.sync_jobs (
            job_id, account_id, kind, trigger, dedup_key, scrape_day,
            window_start, window_end, status, created_at, updated_at)
        SELECT j, a, k, t, d, s, ws, we, 'queued', c, c
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::date[],
                    $7::date[], $8::date[], $9::timestamptz[])
             AS u(j, a, k, t, d, s, ws, we, c)
        ON CONFLICT (dedup_key) DO NOTHING
        RETURNING job_id
        """,
        [p.job_id for p in plans],
        [p.account_id for p in plans],
        [p.kind for p in plans],
        [p.trigger for p in plans],
        [p.dedup_key for p in plans],
        [p.scrape_day for p in plans],
        [p.window_start for p in plans],
        [p.window_end for p in plans],
        [p.requested_at for p in plans],
    )
    return {r["job_id"] for r in rows}


async def queued_jobs_by_key(conn: Conn, keys: Sequence[str]) -> list[JobPlan]:
    """Jobs that someone else created under these keys and that still wait to be fetched."""
    if not keys:
        return []
    rows = await conn.fetch(
        f"""
        SELECT {_JOB_COLUMNS}, a.account_id, a.credentials_encrypted, a.credentials_version,
               a.x_client_version, a.user_agent
        FROM airbnb.sync_jobs j JOIN airbnb.accounts a USING (account_id)
        WHERE j.dedup_key = ANY($1::text[]) AND j.status = 'queued'
        ORDER BY j.dedup_key
        """,
        list(keys),
    )
    return [_job_plan(r) for r in rows]


async def queued_jobs(conn: Conn) -> list[JobPlan]:
    """Every job still queued whose account may still be synced: re-published at start."""
    rows = await conn.fetch(
        f"""
        SELECT {_JOB_COLUMNS}, a.account_id, a.credentials_encrypted, a.credentials_version,
               a.x_client_version, a.user_agent
        FROM airbnb.sync_jobs j JOIN airbnb.accounts a USING (account_id)
        WHERE j.status = 'queued' AND {SCHEDULABLE}
        ORDER BY j.dedup_key
        """
    )
    return [_job_plan(r) for r in rows]


async def count_unschedulable_queued(conn: Conn) -> int:
    return int(
        await conn.fetchval(
            f"""
            SELECT count(*) FROM airbnb.sync_jobs j JOIN airbnb.accounts a USING (account_id)
            WHERE j.status = 'queued' AND NOT ({SCHEDULABLE})
            """
        )
    )
