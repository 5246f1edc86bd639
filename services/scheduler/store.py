"""The scheduler's SQL: reading accounts and jobs, creating jobs set-based.

Every query here is one round trip, whatever the number of rows: the daily fan-out
reads the schedulable accounts a keyset page at a time and creates each page's jobs
with one ``INSERT ... SELECT FROM unnest(...)``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg

from services.scheduler.plan import (
    FINAL_JOB_STATUSES,
    Account,
    DailyRun,
    ExistingJob,
    JobPlan,
    RetentionTarget,
    plan_from_existing,
)
from shared.db import Conn
from shared.messages import EncryptedCredentials, SyncTriggered, SyncTriggerReply

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


async def schedulable_accounts_page(conn: Conn, *, after: str, limit: int) -> list[Account]:
    """The next ``limit`` accounts the daily run syncs, after ``after`` ('' to begin).

    A keyset page, read by the partial index accounts_schedulable_idx: each page is one
    short statement (no cursor holding a snapshot or a connection for the whole run),
    and the last page costs what the first does. Every string sorts after ''.
    """
    rows = await conn.fetch(
        f"SELECT {_ACCOUNT_COLUMNS} FROM airbnb.accounts a"
        f" WHERE {SCHEDULABLE} AND a.account_id > $1 ORDER BY a.account_id LIMIT $2",
        after,
        limit,
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


async def unschedulable_queued(conn: Conn) -> list[tuple[uuid.UUID, Account]]:
    """Jobs still queued whose account may no longer be synced, with that account."""
    rows = await conn.fetch(
        f"""
        SELECT j.job_id, {_ACCOUNT_COLUMNS}
        FROM airbnb.sync_jobs j JOIN airbnb.accounts a USING (account_id)
        WHERE j.status = 'queued' AND NOT ({SCHEDULABLE})
        ORDER BY j.job_id
        """
    )
    return [(r["job_id"], _account(r)) for r in rows]


async def end_queued_jobs(conn: Conn, ended: Sequence[tuple[uuid.UUID, str]]) -> int:
    """Mark these jobs ``failed`` with their reason; only those still queued change.

    A job a fetcher has started (``running``) is left to the writer, which finishes it;
    a final one never changes again (docs/data-path.md, writer, 3).
    """
    if not ended:
        return 0
    done = await conn.fetch(
        """
        UPDATE airbnb.sync_jobs j
        SET status = 'failed', error = u.reason, finished_at = now(), updated_at = now()
        FROM unnest($1::uuid[], $2::text[]) AS u(job_id, reason)
        WHERE j.job_id = u.job_id AND j.status = 'queued'
        RETURNING j.job_id
        """,
        [job_id for job_id, _ in ended],
        [reason for _, reason in ended],
    )
    return len(done)


# --- the daily run and its leader ---------------------------------------------------------

# The advisory lock the leader holds (pg_try_advisory_lock(int, int)): a pair no other
# lock of this database uses. Advisory locks are per database, so schedulers of two
# databases on one server never compete.
LEAD_LOCK = (0x5A1B, 1)


def _daily_run(row: asyncpg.Record) -> DailyRun:
    return DailyRun(
        scrape_day=row["scrape_day"],
        leader=row["leader"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
    )


async def try_lead(conn: Conn) -> bool:
    """Take the lead if no other session holds it; held until this session ends."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *LEAD_LOCK))


async def holds_lead(conn: Conn) -> bool:
    return bool(
        await conn.fetchval(
            """
            SELECT EXISTS (
                SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                  AND classid = $1 AND objid = $2 AND objsubid = 2)
            """,
            *LEAD_LOCK,
        )
    )


async def lead_holder(conn: Conn) -> str | None:
    """The application_name of the session that holds the lead, if one does."""
    name = await conn.fetchval(
        """
        SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2
          AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        """,
        *LEAD_LOCK,
    )
    return str(name) if name else None


async def end_silent_session_after(conn: Conn, seconds: float) -> None:
    """Have PostgreSQL end this session if it stays idle that long (PostgreSQL 14+)."""
    await conn.execute(
        "SELECT set_config('idle_session_timeout', $1, false)", f"{int(seconds * 1000)}ms"
    )


async def daily_run(conn: Conn, scrape_day: dt.date) -> DailyRun | None:
    row = await conn.fetchrow(
        "SELECT * FROM airbnb.scheduler_runs WHERE scrape_day = $1", scrape_day
    )
    return _daily_run(row) if row else None


async def begin_daily_run(conn: Conn, scrape_day: dt.date, leader: str) -> DailyRun | None:
    """Record that ``leader`` begins (or resumes) the day's run; None if it is done.

    The row is committed before the fan-out creates a job, so a second start finds it.
    """
    row = await conn.fetchrow(
        """
        INSERT INTO airbnb.scheduler_runs AS r (scrape_day, leader) VALUES ($1, $2)
        ON CONFLICT (scrape_day) DO UPDATE
            SET leader = EXCLUDED.leader, attempts = r.attempts + 1
            WHERE r.finished_at IS NULL
        RETURNING *
        """,
        scrape_day,
        leader,
    )
    return _daily_run(row) if row else None


async def finish_daily_run(
    conn: Conn, scrape_day: dt.date, *, accounts: int, jobs_created: int
) -> None:
    await conn.execute(
        """
        UPDATE airbnb.scheduler_runs
        SET finished_at = now(), accounts = $2, jobs_created = jobs_created + $3
        WHERE scrape_day = $1
        """,
        scrape_day,
        accounts,
        jobs_created,
    )


# --- manual triggers (migrations/0008_sync_triggers.sql) ----------------------------------


async def trigger_outcome(conn: Conn, trigger_id: uuid.UUID) -> SyncTriggerReply | None:
    """What this trigger ended in, if a scheduler handled it already (a redelivery)."""
    row = await conn.fetchrow(
        "SELECT t.job_id, t.error, t.detail, j.status FROM airbnb.sync_triggers t"
        " LEFT JOIN airbnb.sync_jobs j USING (job_id) WHERE t.trigger_id = $1",
        trigger_id,
    )
    if row is None:
        return None
    return SyncTriggerReply(
        trigger_id=trigger_id,
        job_id=row["job_id"],
        status=row["status"],
        error=row["error"],
        detail=row["detail"],
    )


async def record_trigger(conn: Conn, trigger: SyncTriggered, reply: SyncTriggerReply) -> None:
    """The first outcome stays: it is the one a client may already have been told."""
    await conn.execute(
        """
        INSERT INTO airbnb.sync_triggers
            (trigger_id, account_id, full_sync, requested_at, job_id, error, detail)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (trigger_id) DO NOTHING
        """,
        trigger.trigger_id,
        trigger.account_id,
        trigger.full,
        trigger.requested_at,
        reply.job_id,
        reply.error,
        reply.detail,
    )


# --- retention ----------------------------------------------------------------------------


async def plain_metric_tables(conn: Conn, tables: Sequence[str]) -> list[str]:
    """Those of ``tables`` that are no TimescaleDB hypertable (no retention policy)."""
    if not await conn.fetchval(
        "SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL"
    ):
        return list(tables)
    hyper = await conn.fetch(
        "SELECT hypertable_schema || '.' || hypertable_name AS name "
        "FROM timescaledb_information.hypertables"
    )
    return [t for t in tables if t not in {r["name"] for r in hyper}]


async def delete_expired(conn: Conn, target: RetentionTarget) -> int:
    """Delete one batch of ``target``'s expired rows, in one short transaction.

    By ctid, so that the subselect stops at the batch's last row and the DELETE reads
    no more than it deletes (``ctid = ANY(ARRAY(...))`` is a TID scan, ``IN`` a join).
    Table and column come from plan.retention_plan, never from input.
    """
    where = f"{target.age_column} < $1"
    if target.final_jobs_only:
        where += f" AND status = ANY('{{{','.join(FINAL_JOB_STATUSES)}}}'::text[])"
    status = await conn.execute(
        f"DELETE FROM {target.table} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {target.table} WHERE {where} LIMIT $2))",
        target.cutoff,
        target.batch,
    )
    return int(status.split()[-1])


async def account_health(conn: Conn, stale_before: dt.datetime) -> tuple[int, int]:
    """(active accounts needing new credentials, schedulable accounts not synced since
    ``stale_before``; one never synced counts from its creation)."""
    row = await conn.fetchrow(
        f"""
        SELECT count(*) FILTER (WHERE a.is_active AND a.deleted_at IS NULL
                                  AND a.credentials_invalid_at IS NOT NULL) AS needing,
               count(*) FILTER (WHERE {SCHEDULABLE}
                                  AND coalesce(a.last_sync_at, a.created_at) < $1) AS stale
        FROM airbnb.accounts a
        """,
        stale_before,
    )
    assert row is not None  # an aggregate always answers one row
    return int(row["needing"]), int(row["stale"])
