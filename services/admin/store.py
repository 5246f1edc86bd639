"""The admin's SQL: accounts read, written, soft-deleted; sync jobs read.

Every function is one query on the connection it is given; the caller owns the
transaction (and its isolation) and the rules (services/admin/rules.py). An
account's ``credentials_encrypted`` is read only to compare a new cookie with
(:func:`hold_account`), never for an answer: :data:`ACCOUNT_COLUMNS` leaves it out.

The metrics export keeps its own streaming query and cursor (services/admin/export.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from services.admin.models import AccountCreate, AccountListQuery, ListingError
from services.admin.rules import HeldAccount, TriggerState
from shared.db import Conn

# Every column but credentials_encrypted: the token is not needed to answer, so not read.
ACCOUNT_COLUMNS = """account_id, customer_id, x_client_version, user_agent, is_active,
    credentials_invalid_at, credentials_error, credentials_version, credentials_rotated_at,
    last_sync_at, created_at, updated_at, deleted_at"""

# Listing counts from sync_job_listings, which the writer fills as listings finish; the
# job's own counters may only be set at completion, so the larger of the two is shown.
_JOB_SELECT = """
SELECT j.*, coalesce(l.committed, 0) AS l_committed, coalesce(l.failed, 0) AS l_failed,
       coalesce(l.rows, 0) AS l_rows
FROM airbnb.sync_jobs j
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE status = 'committed') AS committed,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           sum(rows_written) AS rows
    FROM airbnb.sync_job_listings WHERE job_id = j.job_id
) l ON true
"""


# --- accounts: reads ------------------------------------------------------------------------


async def account(db: Conn | asyncpg.Pool, account_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {ACCOUNT_COLUMNS} FROM airbnb.accounts WHERE account_id = $1", account_id
    )


async def account_exists(conn: Conn, account_id: str) -> bool:
    exists = await conn.fetchval("SELECT 1 FROM airbnb.accounts WHERE account_id = $1", account_id)
    return exists is not None


def _account_filter(q: AccountListQuery) -> tuple[str, list[Any]]:
    where = ["(deleted_at IS NOT NULL) = $1"]
    args: list[Any] = [q.deleted]
    if q.active is not None:
        args.append(q.active)
        where.append(f"is_active = ${len(args)}")
    if q.customer_id is not None:
        args.append(q.customer_id)
        where.append(f"customer_id = ${len(args)}")
    return " AND ".join(where), args


async def count_accounts(conn: Conn, q: AccountListQuery) -> int:
    cond, args = _account_filter(q)
    total: int = await conn.fetchval(f"SELECT count(*) FROM airbnb.accounts WHERE {cond}", *args)
    return total


async def account_page(conn: Conn, q: AccountListQuery) -> list[asyncpg.Record]:
    cond, args = _account_filter(q)
    return await conn.fetch(
        f"SELECT {ACCOUNT_COLUMNS} FROM airbnb.accounts WHERE {cond} "
        f"ORDER BY account_id LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
        *args,
        q.limit,
        q.offset,
    )


async def trigger_state(db: Conn | asyncpg.Pool, account_id: str) -> TriggerState | None:
    row = await db.fetchrow(
        "SELECT is_active, deleted_at, credentials_invalid_at FROM airbnb.accounts"
        " WHERE account_id = $1",
        account_id,
    )
    if row is None:
        return None
    return TriggerState(
        is_active=row["is_active"],
        deleted=row["deleted_at"] is not None,
        needs_credentials=row["credentials_invalid_at"] is not None,
    )


# --- accounts: writes -----------------------------------------------------------------------


async def hold_account(conn: Conn, account_id: str) -> HeldAccount | None:
    """The account's row, locked FOR UPDATE until the transaction ends."""
    row = await conn.fetchrow(
        "SELECT credentials_encrypted, is_active, deleted_at FROM airbnb.accounts "
        "WHERE account_id = $1 FOR UPDATE",
        account_id,
    )
    if row is None:
        return None
    return HeldAccount(
        credentials_encrypted=row["credentials_encrypted"],
        is_active=row["is_active"],
        deleted=row["deleted_at"] is not None,
    )


async def hold_deleted(conn: Conn, account_id: str) -> bool | None:
    """Whether the account is deleted (None: no such account), locked FOR UPDATE."""
    deleted: bool | None = await conn.fetchval(
        "SELECT deleted_at IS NOT NULL FROM airbnb.accounts WHERE account_id = $1 FOR UPDATE",
        account_id,
    )
    return deleted


async def insert_account(conn: Conn, body: AccountCreate, token: str) -> asyncpg.Record | None:
    """The new account's row; None when a concurrent create of the same id won the insert."""
    return await conn.fetchrow(
        "INSERT INTO airbnb.accounts (account_id, customer_id, credentials_encrypted,"
        " x_client_version, user_agent, is_active) VALUES ($1, $2, $3, $4, $5, $6)"
        f" ON CONFLICT (account_id) DO NOTHING RETURNING {ACCOUNT_COLUMNS}",
        body.account_id,
        body.customer_id,
        token,
        body.x_client_version,
        body.user_agent,
        body.is_active,
    )


async def replace_account(
    conn: Conn, body: AccountCreate, token: str, *, credentials_changed: bool
) -> asyncpg.Record | None:
    """Every field of ``body``; the token (with the version bump and the needs-credentials
    mark cleared) only when ``credentials_changed``."""
    return await conn.fetchrow(
        "UPDATE airbnb.accounts SET customer_id = $2, x_client_version = $3,"
        " user_agent = $4, is_active = $5, updated_at = now(),"
        " credentials_encrypted = CASE WHEN $6 THEN $7 ELSE credentials_encrypted END,"
        " credentials_version = credentials_version + CASE WHEN $6 THEN 1 ELSE 0 END,"
        " credentials_invalid_at = CASE WHEN $6 THEN NULL"
        " ELSE credentials_invalid_at END,"
        " credentials_error = CASE WHEN $6 THEN NULL ELSE credentials_error END"
        f" WHERE account_id = $1 RETURNING {ACCOUNT_COLUMNS}",
        body.account_id,
        body.customer_id,
        body.x_client_version,
        body.user_agent,
        body.is_active,
        credentials_changed,
        token,
    )


async def patch_account(
    conn: Conn, account_id: str, fields: Sequence[tuple[str, object]], token: str | None
) -> asyncpg.Record | None:
    """The given ``fields`` (column, value), in order; a ``token`` replaces the stored one,
    bumps the version and clears the needs-credentials mark. At least one of the two."""
    sets: list[str] = []
    args: list[Any] = [account_id]
    for column, value in fields:
        args.append(value)
        sets.append(f"{column} = ${len(args)}")
    if token is not None:
        args.append(token)
        sets += [
            f"credentials_encrypted = ${len(args)}",
            "credentials_version = credentials_version + 1",
            "credentials_invalid_at = NULL",
            "credentials_error = NULL",
        ]
    return await conn.fetchrow(
        f"UPDATE airbnb.accounts SET {', '.join(sets)}, updated_at = now()"
        f" WHERE account_id = $1 RETURNING {ACCOUNT_COLUMNS}",
        *args,
    )


async def set_deleted(conn: Conn, account_id: str, *, deleted: bool) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE airbnb.accounts SET"
        " deleted_at = CASE WHEN $2 THEN now() ELSE NULL END, updated_at = now()"
        f" WHERE account_id = $1 RETURNING {ACCOUNT_COLUMNS}",
        account_id,
        deleted,
    )


# --- sync jobs ------------------------------------------------------------------------------


async def count_jobs(conn: Conn, account_id: str) -> int:
    total: int = await conn.fetchval(
        "SELECT count(*) FROM airbnb.sync_jobs WHERE account_id = $1", account_id
    )
    return total


async def job_page(conn: Conn, account_id: str, limit: int, offset: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        _JOB_SELECT + " WHERE j.account_id = $1"
        " ORDER BY j.created_at DESC, j.job_id DESC LIMIT $2 OFFSET $3",
        account_id,
        limit,
        offset,
    )


async def job(conn: Conn, job_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(_JOB_SELECT + " WHERE j.job_id = $1", job_id)


async def job_listings(conn: Conn, job_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM airbnb.sync_job_listings WHERE job_id = $1 ORDER BY airbnb_listing_id",
        job_id,
    )


async def listing_errors(
    conn: Conn, job_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[ListingError]]:
    """The failed listings of each job, by listing id (no query for no jobs)."""
    if not job_ids:
        return {}
    rows = await conn.fetch(
        "SELECT job_id, airbnb_listing_id, error FROM airbnb.sync_job_listings"
        " WHERE job_id = ANY($1::uuid[]) AND status = 'failed' ORDER BY airbnb_listing_id",
        job_ids,
    )
    out: dict[uuid.UUID, list[ListingError]] = {}
    for r in rows:
        out.setdefault(r["job_id"], []).append(
            ListingError(listing_id=r["airbnb_listing_id"], error=r["error"])
        )
    return out


async def now(conn: Conn) -> dt.datetime:
    """The database's now(): the transaction's start, the clock of its snapshot."""
    at: dt.datetime = await conn.fetchval("SELECT now()")
    return at


# --- the account events outbox (migrations/0005_account_outbox.sql) -----------------------

# The PostgreSQL channel the relay listens on; NOTIFY is delivered at commit, so a relay
# woken by it finds the row committed.
OUTBOX_CHANNEL = "airbnb_account_outbox"
# Any fixed 64-bit number: "the relay's turn". One relay publishes at a time, so events
# go out in id order whatever the number of admin replicas.
OUTBOX_LOCK_KEY = 0x5A1B_0B0C


async def enqueue_event(conn: Conn, account_id: str, event: str, payload: bytes) -> int:
    """Write an AccountEvent in the caller's transaction; the relay publishes it once the
    transaction commits (and never if it does not)."""
    outbox_id: int = await conn.fetchval(
        "INSERT INTO airbnb.account_outbox (account_id, event, payload) VALUES ($1, $2, $3)"
        " RETURNING id",
        account_id,
        event,
        payload,
    )
    await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
    return outbox_id


async def take_relay_turn(conn: Conn) -> bool:
    """True when this transaction may publish (no other relay holds the turn); the turn
    ends with the transaction."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", OUTBOX_LOCK_KEY))


async def unpublished_events(conn: Conn, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, event_id, account_id, event, payload FROM airbnb.account_outbox"
        " WHERE published_at IS NULL ORDER BY id LIMIT $1",
        limit,
    )


async def mark_published(conn: Conn, ids: Sequence[int]) -> None:
    await conn.execute(
        "UPDATE airbnb.account_outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
        list(ids),
    )


async def prune_published(conn: Conn, older_than: dt.timedelta) -> int:
    status = await conn.execute(
        "DELETE FROM airbnb.account_outbox WHERE published_at < now() - $1::interval",
        older_than,
    )
    return int(status.split()[-1])


async def unpublished_count(conn: Conn | asyncpg.Pool) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM airbnb.account_outbox WHERE published_at IS NULL")
    )


# --- manual triggers (migrations/0008_sync_triggers.sql) ----------------------------------


async def handled_trigger(db: Conn | asyncpg.Pool, trigger_id: uuid.UUID) -> asyncpg.Record | None:
    """The trigger as the scheduler recorded it, with its job's status now."""
    return await db.fetchrow(
        "SELECT t.trigger_id, t.account_id, t.full_sync, t.requested_at, t.handled_at,"
        " t.job_id, t.error, t.detail, j.status AS job_status"
        " FROM airbnb.sync_triggers t LEFT JOIN airbnb.sync_jobs j USING (job_id)"
        " WHERE t.trigger_id = $1",
        trigger_id,
    )
