"""The admin's SQL: accounts read, written, soft-deleted; sync jobs read; the read API's
listings, insights and portfolio (each date's latest scrape on or before as_of).

Every function is one query on the connection it is given; the caller owns the
transaction (and its isolation) and the rules (services/admin/rules.py). An
account's ``credentials_encrypted`` is read only to compare a new cookie with
(:func:`hold_account`), never for an answer: :data:`ACCOUNT_COLUMNS` leaves it out.

Customer scoping (services/admin/scopes.py): every query that reads or holds an account,
or what belongs to one (jobs, triggers, listings, the portfolio), takes ``scope_customer``,
the one customer a customer key may see (None: every customer), as a condition of its own
SQL (:func:`_of_customer`). An account of another customer is not found, exactly as one
that does not exist, so the rows a customer key reaches are decided here and nowhere else.

The metrics export keeps its own streaming query and cursor (services/admin/export.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from services.admin.insights import DayRow, ListingInfo, WindowRow
from services.admin.models import (
    AccountCreate,
    AccountListQuery,
    AuditAction,
    AuditQuery,
    ListingError,
)
from services.admin.rules import HeldAccount, TriggerState
from shared.db import Conn

if TYPE_CHECKING:
    # only a type here: auth.py reads keys through this module
    from services.admin.auth import Caller

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


def _of_customer(param: int, column: str = "customer_id") -> str:
    """The condition "the account is of the scope's customer" on parameter ``param`` (null:
    every account, a customer-less one too)."""
    return f"(${param}::text IS NULL OR {column} = ${param})"


async def account(
    db: Conn | asyncpg.Pool, account_id: str, scope_customer: str | None = None
) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {ACCOUNT_COLUMNS} FROM airbnb.accounts WHERE account_id = $1"
        f" AND {_of_customer(2)}",
        account_id,
        scope_customer,
    )


async def account_exists(
    conn: Conn | asyncpg.Pool, account_id: str, scope_customer: str | None = None
) -> bool:
    exists = await conn.fetchval(
        f"SELECT 1 FROM airbnb.accounts WHERE account_id = $1 AND {_of_customer(2)}",
        account_id,
        scope_customer,
    )
    return exists is not None


def _account_filter(q: AccountListQuery, scope_customer: str | None) -> tuple[str, list[Any]]:
    where = ["(deleted_at IS NOT NULL) = $1"]
    args: list[Any] = [q.deleted]
    if q.active is not None:
        args.append(q.active)
        where.append(f"is_active = ${len(args)}")
    if q.customer_id is not None:
        args.append(q.customer_id)
        where.append(f"customer_id = ${len(args)}")
    # A customer key's list is its customer's whatever customer_id it asks for: another
    # customer's is an empty page.
    args.append(scope_customer)
    where.append(_of_customer(len(args)))
    return " AND ".join(where), args


async def count_accounts(conn: Conn, q: AccountListQuery, scope_customer: str | None = None) -> int:
    cond, args = _account_filter(q, scope_customer)
    total: int = await conn.fetchval(f"SELECT count(*) FROM airbnb.accounts WHERE {cond}", *args)
    return total


async def account_page(
    conn: Conn, q: AccountListQuery, scope_customer: str | None = None
) -> list[asyncpg.Record]:
    cond, args = _account_filter(q, scope_customer)
    return await conn.fetch(
        f"SELECT {ACCOUNT_COLUMNS} FROM airbnb.accounts WHERE {cond} "
        f"ORDER BY account_id LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
        *args,
        q.limit,
        q.offset,
    )


async def trigger_state(
    db: Conn | asyncpg.Pool, account_id: str, scope_customer: str | None = None
) -> TriggerState | None:
    row = await db.fetchrow(
        "SELECT is_active, deleted_at, credentials_invalid_at FROM airbnb.accounts"
        f" WHERE account_id = $1 AND {_of_customer(2)}",
        account_id,
        scope_customer,
    )
    if row is None:
        return None
    return TriggerState(
        is_active=row["is_active"],
        deleted=row["deleted_at"] is not None,
        needs_credentials=row["credentials_invalid_at"] is not None,
    )


# --- accounts: writes -----------------------------------------------------------------------


async def hold_account(
    conn: Conn, account_id: str, scope_customer: str | None = None
) -> HeldAccount | None:
    """The account's row, locked FOR UPDATE until the transaction ends (None: no such
    account, or not of ``scope_customer``)."""
    row = await conn.fetchrow(
        "SELECT credentials_encrypted, is_active, deleted_at, x_client_version, user_agent,"
        f" customer_id FROM airbnb.accounts WHERE account_id = $1 AND {_of_customer(2)}"
        " FOR UPDATE",
        account_id,
        scope_customer,
    )
    if row is None:
        return None
    return HeldAccount(
        credentials_encrypted=row["credentials_encrypted"],
        is_active=row["is_active"],
        deleted=row["deleted_at"] is not None,
        x_client_version=row["x_client_version"],
        user_agent=row["user_agent"],
        customer_id=row["customer_id"],
    )


async def hold_deleted(
    conn: Conn, account_id: str, scope_customer: str | None = None
) -> bool | None:
    """Whether the account is deleted (None: no such account, or not of
    ``scope_customer``), locked FOR UPDATE."""
    deleted: bool | None = await conn.fetchval(
        "SELECT deleted_at IS NOT NULL FROM airbnb.accounts"
        f" WHERE account_id = $1 AND {_of_customer(2)} FOR UPDATE",
        account_id,
        scope_customer,
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


async def job(
    conn: Conn, job_id: uuid.UUID, scope_customer: str | None = None
) -> asyncpg.Record | None:
    """The job (None: no such job, or of an account not of ``scope_customer``)."""
    return await conn.fetchrow(
        _JOB_SELECT + " WHERE j.job_id = $1 AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM"
        " airbnb.accounts a WHERE a.account_id = j.account_id AND a.customer_id = $2))",
        job_id,
        scope_customer,
    )


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


# --- connect tokens (migrations/0012_connect_tokens.sql) ----------------------------------

_TOKEN_COLUMNS = """token_id, account_id, for_new_account, customer_id, created_by, created_at,
    expires_at, revoked_at, used_at, uses,
    CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired'
         ELSE 'active' END AS status"""


async def insert_connect_token(
    conn: Conn,
    token_id: uuid.UUID,
    token_hash: str,
    *,
    account_id: str | None,
    customer_id: str | None,
    created_by: str,
    days: int,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "INSERT INTO airbnb.connect_tokens (token_id, token_hash, account_id, for_new_account,"
        " customer_id, created_by, expires_at)"
        " VALUES ($1, $2, $3, $3::text IS NULL, $4, $5, now() + make_interval(days => $6))"
        f" RETURNING {_TOKEN_COLUMNS}",
        token_id,
        token_hash,
        account_id,
        customer_id,
        created_by,
        days,
    )
    assert row is not None
    return row


async def connectable_account(
    conn: Conn, account_id: str, customer_id: str | None
) -> asyncpg.Record | None:
    """The account's customer and deletion, when it exists and (``customer_id`` given) is
    that customer's."""
    return await conn.fetchrow(
        "SELECT customer_id, deleted_at FROM airbnb.accounts"
        " WHERE account_id = $1 AND ($2::text IS NULL OR customer_id = $2)",
        account_id,
        customer_id,
    )


async def connect_tokens_of(conn: Conn | asyncpg.Pool, account_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {_TOKEN_COLUMNS} FROM airbnb.connect_tokens WHERE account_id = $1"
        " ORDER BY created_at DESC, token_id",
        account_id,
    )


async def revoke_connect_token(
    conn: Conn, token_id: uuid.UUID, account_id: str | None, customer_id: str | None
) -> asyncpg.Record | None:
    """Revoke it (a revoked one stays as it was); None when no such token is in reach: of
    ``account_id`` when given, of ``customer_id``'s accounts or new accounts when given."""
    return await conn.fetchrow(
        "UPDATE airbnb.connect_tokens SET revoked_at = coalesce(revoked_at, now())"
        " WHERE token_id = $1 AND ($2::text IS NULL OR account_id = $2)"
        " AND ($3::text IS NULL OR customer_id = $3 OR account_id IN"
        " (SELECT account_id FROM airbnb.accounts WHERE customer_id = $3))"
        f" RETURNING {_TOKEN_COLUMNS}",
        token_id,
        account_id,
        customer_id,
    )


async def hold_connect_token(conn: Conn, token_hash: str) -> asyncpg.Record | None:
    """The token with this hash, locked FOR UPDATE: two uses of a new-account token at once
    must not both create an account."""
    return await conn.fetchrow(
        f"SELECT {_TOKEN_COLUMNS} FROM airbnb.connect_tokens WHERE token_hash = $1 FOR UPDATE",
        token_hash,
    )


async def connect_token(conn: Conn | asyncpg.Pool, token_hash: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_TOKEN_COLUMNS} FROM airbnb.connect_tokens WHERE token_hash = $1", token_hash
    )


async def mark_connect_token_used(conn: Conn, token_id: uuid.UUID, account_id: str) -> None:
    """An accepted use; binds a new-account token to the account its first use created."""
    await conn.execute(
        "UPDATE airbnb.connect_tokens SET account_id = $2, used_at = now(), uses = uses + 1"
        " WHERE token_id = $1",
        token_id,
        account_id,
    )


# --- manual triggers (migrations/0008_sync_triggers.sql) ----------------------------------


async def handled_trigger(
    db: Conn | asyncpg.Pool, trigger_id: uuid.UUID, scope_customer: str | None = None
) -> asyncpg.Record | None:
    """The trigger as the scheduler recorded it, with its job's status now (None: not
    handled, or of an account not of ``scope_customer``)."""
    return await db.fetchrow(
        "SELECT t.trigger_id, t.account_id, t.full_sync, t.requested_at, t.handled_at,"
        " t.job_id, t.error, t.detail, j.status AS job_status"
        " FROM airbnb.sync_triggers t LEFT JOIN airbnb.sync_jobs j USING (job_id)"
        " WHERE t.trigger_id = $1 AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM"
        " airbnb.accounts a WHERE a.account_id = t.account_id AND a.customer_id = $2))",
        trigger_id,
        scope_customer,
    )


# --- the read API: listings, insights, portfolio (docs/insights.md) -----------------------
# Every date of a listing is scraped again on later days; a date's value is the row of
# the newest scrape on or before as_of (migrations/0009_insights_views.sql has the same
# rule as views, for the latest scrape). One shape serves both, built by _latest_row: per
# listing and date, the primary key (account_id, airbnb_listing_id, date, time) scanned
# backwards from the bound, LIMIT 1. That reads one row per key where DISTINCT ON reads
# every scrape of it (~49 a date) and sorts them: on 1,000 listings x 56 days of ~49
# scrapes each it is 0.65 s against 4.7 s through the DISTINCT ON view (docs/insights.md).


def _rate(column: str) -> str:
    """A stored rate, or null where Airbnb showed "-": it sends doubleValue 0.0 with
    valueString "-" when the rate has no denominator (no first-page impressions that day),
    and the pivots store both as sent; that 0.0 is no rate and must not read as 0 %."""
    return f"CASE WHEN m.{column}_string = '-' THEN NULL ELSE m.{column} END AS {column}"


# What the lateral probe reads (_CHART_READ) and what the query above it selects from it.
_CHART_COLUMNS = (
    "m.time, m.p3_impressions_your_value, m.p3_impressions_similar_value,"
    " m.conversion_rate_your_value, m.conversion_rate_similar_value"
)
_CHART_READ = (
    "m.time, m.p3_impressions_your_value, m.p3_impressions_similar_value, "
    + _rate("conversion_rate_your_value")
    + ", "
    + _rate("conversion_rate_similar_value")
)


def _scrape_bound(param: int) -> str:
    """``time::date <= as_of`` (time is the scrape day's midnight UTC) as a bound the key
    can seek on: ``time < as_of + 1 day``, at UTC whatever the session's TimeZone; a null
    as_of is no bound."""
    return f"coalesce((${param}::date + 1)::timestamp AT TIME ZONE 'UTC', 'infinity')"


def _latest_row(table: str, key_date: str, columns: str, date: str, bound_param: int) -> str:
    """The one builder of "latest scrape on or before as_of": a LATERAL join giving, for the
    listing ``l`` and the date ``date``, the row of ``table`` with the greatest ``time``
    under the bound (none when the date has no row)."""
    return (
        f" CROSS JOIN LATERAL (SELECT {columns} FROM airbnb.{table} m"
        " WHERE m.account_id = l.account_id AND m.airbnb_listing_id = l.airbnb_listing_id"
        f" AND m.{key_date} = {date} AND m.time < {_scrape_bound(bound_param)}"
        " ORDER BY m.time DESC LIMIT 1) m"
    )


def _day_rows(rows: Sequence[asyncpg.Record]) -> list[DayRow]:
    return [
        DayRow(
            account_id=r["account_id"],
            listing_id=r["airbnb_listing_id"],
            day=r["day"],
            scraped_at=r["time"],
            own_views=r["p3_impressions_your_value"],
            similar_views=r["p3_impressions_similar_value"],
            own_rate=r["conversion_rate_your_value"],
            similar_rate=r["conversion_rate_similar_value"],
        )
        for r in rows
    ]


# $1 account, $2..$3 the dates, $4 one listing or null (all), $5 as_of or null.
_ACCOUNT_DAYS_SQL = (
    f"SELECT l.account_id, l.airbnb_listing_id, d.day::date AS day, {_CHART_COLUMNS}"
    " FROM airbnb.listings l"
    " CROSS JOIN generate_series($2::date, $3::date, interval '1 day') AS d(day)"
    + _latest_row("chart_query", "metric_date", _CHART_READ, "d.day::date", 5)
    + " WHERE l.account_id = $1 AND ($4::text IS NULL OR l.airbnb_listing_id = $4)"
)


async def latest_days(
    conn: Conn,
    account_id: str,
    start: dt.date,
    end: dt.date,
    listing_id: str | None,
    as_of: dt.date | None,
) -> list[DayRow]:
    """Each listing-date's row of the latest scrape on or before ``as_of`` (one listing,
    or every listing of the account)."""
    return _day_rows(await conn.fetch(_ACCOUNT_DAYS_SQL, account_id, start, end, listing_id, as_of))


_WINDOW_COLUMNS = "m.window_end, m.time, m.conversion_rate_value"
_WINDOW_READ = "m.window_end, m.time, " + _rate("conversion_rate_value")
# $1 account, $2 listing, $3 the window starts, $4 as_of or null.
_WINDOWS_SQL = " UNION ALL ".join(
    f"SELECT '{table}' AS table_name, w.start AS window_start, {_WINDOW_COLUMNS}"
    " FROM airbnb.listings l CROSS JOIN unnest($3::date[]) AS w(start)"
    + _latest_row(table, "window_start", _WINDOW_READ, "w.start", 4)
    + " WHERE l.account_id = $1 AND l.airbnb_listing_id = $2"
    for table in ("list_of_metrics", "chart_summary")
)


async def latest_windows(
    conn: Conn,
    account_id: str,
    listing_id: str,
    starts: Sequence[dt.date],
    as_of: dt.date | None,
) -> list[WindowRow]:
    """The latest list_of_metrics and chart_summary rows on or before ``as_of`` of the
    windows starting on ``starts`` (no query for none)."""
    if not starts:
        return []
    rows = await conn.fetch(_WINDOWS_SQL, account_id, listing_id, list(starts), as_of)
    return [
        WindowRow(
            table=r["table_name"],
            window_start=r["window_start"],
            window_end=r["window_end"],
            scraped_at=r["time"],
            conversion_rate=r["conversion_rate_value"],
        )
        for r in rows
    ]


async def every_scrape(
    conn: Conn, account_id: str, listing_id: str, start: dt.date, end: dt.date
) -> list[DayRow]:
    """Every scrape's row of the listing's dates in [start, end]: forward demand."""
    rows = await conn.fetch(
        "SELECT account_id, airbnb_listing_id, metric_date AS day, "
        + _CHART_READ
        + " FROM airbnb.chart_query m WHERE account_id = $1 AND airbnb_listing_id = $2"
        " AND metric_date BETWEEN $3 AND $4 ORDER BY metric_date, time",
        account_id,
        listing_id,
        start,
        end,
    )
    return _day_rows(rows)


async def listing_exists(conn: Conn, account_id: str, listing_id: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM airbnb.listings WHERE account_id = $1 AND airbnb_listing_id = $2",
        account_id,
        listing_id,
    )
    return found is not None


async def account_listings(conn: Conn, account_id: str) -> list[asyncpg.Record]:
    """The account's listings with their last commit and their last job (newest job by
    created_at that included the listing)."""
    return await conn.fetch(
        "SELECT l.airbnb_listing_id, l.airbnb_internal_name, l.listing_name,"
        " c.finished_at AS last_synced_at, r.status AS last_job_status, r.job_id AS last_job_id"
        " FROM airbnb.listings l"
        " LEFT JOIN LATERAL (SELECT jl.job_id, jl.status FROM airbnb.sync_jobs j"
        " JOIN airbnb.sync_job_listings jl ON jl.job_id = j.job_id"
        " AND jl.airbnb_listing_id = l.airbnb_listing_id WHERE j.account_id = l.account_id"
        " ORDER BY j.created_at DESC, j.job_id DESC LIMIT 1) r ON true"
        # the listing's own commit time, which comes before the job's end
        " LEFT JOIN LATERAL (SELECT coalesce(jl.finished_at, j.finished_at) AS finished_at"
        " FROM airbnb.sync_jobs j JOIN airbnb.sync_job_listings jl ON jl.job_id = j.job_id"
        " AND jl.airbnb_listing_id = l.airbnb_listing_id"
        " WHERE j.account_id = l.account_id AND jl.status = 'committed'"
        " ORDER BY j.created_at DESC, j.job_id DESC LIMIT 1) c ON true"
        " WHERE l.account_id = $1 ORDER BY l.airbnb_listing_id",
        account_id,
    )


# The portfolio's listings: those of accounts not soft-deleted, of customer $1 (null:
# every customer) and of the scope's customer (a customer key's portfolio is its own
# customer's whatever customer_id it asks for: another's is an empty list).
_PORTFOLIO_FROM = " FROM airbnb.listings l JOIN airbnb.accounts a ON a.account_id = l.account_id"


def _portfolio_where(scope_param: int) -> str:
    return (
        " WHERE a.deleted_at IS NULL AND ($1::text IS NULL OR a.customer_id = $1)"
        f" AND {_of_customer(scope_param, 'a.customer_id')}"
    )


async def portfolio_listings(
    conn: Conn, customer_id: str | None, scope_customer: str | None = None
) -> list[ListingInfo]:
    rows = await conn.fetch(
        "SELECT l.account_id, a.customer_id, l.airbnb_listing_id, l.airbnb_internal_name,"
        " l.listing_name"
        + _PORTFOLIO_FROM
        + _portfolio_where(2)
        + " ORDER BY l.account_id, l.airbnb_listing_id",
        customer_id,
        scope_customer,
    )
    return [
        ListingInfo(
            account_id=r["account_id"],
            customer_id=r["customer_id"],
            listing_id=r["airbnb_listing_id"],
            internal_name=r["airbnb_internal_name"],
            listing_name=r["listing_name"],
        )
        for r in rows
    ]


async def portfolio_days(
    conn: Conn,
    customer_id: str | None,
    start: dt.date,
    end: dt.date,
    as_of: dt.date | None,
    scope_customer: str | None = None,
) -> list[DayRow]:
    """Each portfolio listing-date's row of the latest scrape on or before ``as_of``.

    Called inside a transaction (the snapshot of the answer). asyncpg prepares every
    statement and, after five runs, PostgreSQL's generic plan of this one does not know the
    series' length and loops over the days outermost: 1.1-1.2 s on 1,000 listings against
    0.8-1.0 s planned per call (benchmarks/RESULTS.md), for 0.3 ms of planning."""
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    rows = await conn.fetch(
        f"SELECT l.account_id, l.airbnb_listing_id, d.day::date AS day, {_CHART_COLUMNS}"
        + _PORTFOLIO_FROM
        + " CROSS JOIN generate_series($2::date, $3::date, interval '1 day') AS d(day)"
        + _latest_row("chart_query", "metric_date", _CHART_READ, "d.day::date", 4)
        + _portfolio_where(5),
        customer_id,
        start,
        end,
        as_of,
        scope_customer,
    )
    return _day_rows(rows)


# --- the audit trail (migrations/0011_audit_log.sql, services/admin/audit.py) -------------


async def record(
    conn: Conn,
    caller: Caller,
    action: AuditAction,
    *,
    account_id: str | None = None,
    key_name: str | None = None,
    fields: Sequence[str] = (),
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Append an audit entry in the caller's transaction (it is kept only if that commits);
    its id. ``fields`` are names and ``detail`` never holds a credential's value: the caller
    says "credentials" and nothing of the cookie.

    The detail goes as JSON text, so that a connection without the pool's jsonb codec
    (the command line's) writes the same entry."""
    entry_id: int = await conn.fetchval(
        "INSERT INTO airbnb.audit_log (actor, actor_scope, client, action, account_id,"
        " key_name, fields, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb)"
        " RETURNING entry_id",
        caller.name,
        caller.scope,
        caller.client,
        action,
        account_id,
        key_name,
        list(fields),
        None if detail is None else orjson.dumps(dict(detail)).decode(),
    )
    return entry_id


def _audit_filter(q: AuditQuery) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for column, value, op in (
        ("account_id", q.account_id, "="),
        ("action", q.action, "="),
        ("at", q.since, ">="),
    ):
        if value is not None:
            args.append(value)
            where.append(f"{column} {op} ${len(args)}")
    return (" WHERE " + " AND ".join(where)) if where else "", args


async def count_audit(conn: Conn, q: AuditQuery) -> int:
    cond, args = _audit_filter(q)
    total: int = await conn.fetchval(f"SELECT count(*) FROM airbnb.audit_log{cond}", *args)
    return total


async def audit_page(conn: Conn, q: AuditQuery) -> list[asyncpg.Record]:
    """A page of entries, newest first."""
    cond, args = _audit_filter(q)
    return await conn.fetch(
        "SELECT entry_id, at, actor, actor_scope, client, action, account_id, key_name,"
        f" fields, detail FROM airbnb.audit_log{cond}"
        f" ORDER BY entry_id DESC LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
        *args,
        q.limit,
        q.offset,
    )


# --- API keys (migrations/0010_api_keys.sql, services/admin/auth.py) ------------------------

# The key in force with this hash, its last use stamped at most once a minute (a write per
# request would cost a row version and WAL on every call): one round trip.
_KEY_BY_HASH_SQL = """
WITH k AS (
    SELECT key_id, name, scope, customer_id, key_hash, last_used_at FROM airbnb.api_keys
    WHERE key_hash = $1 AND revoked_at IS NULL
), touched AS (
    UPDATE airbnb.api_keys a SET last_used_at = now() FROM k
    WHERE a.key_id = k.key_id
      AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')
    RETURNING a.key_id
)
SELECT key_id, name, scope, customer_id, key_hash FROM k
"""


async def api_key_in_force(db: Conn | asyncpg.Pool, key_hash: str) -> asyncpg.Record | None:
    return await db.fetchrow(_KEY_BY_HASH_SQL, key_hash)


async def insert_api_key(
    conn: Conn, name: str, scope: str, customer_id: str | None, key_hash: str
) -> asyncpg.Record | None:
    """The new key's row; None when a key in force already has the name."""
    return await conn.fetchrow(
        "INSERT INTO airbnb.api_keys (name, scope, customer_id, key_hash)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING"
        " RETURNING key_id, name, scope, customer_id, created_at",
        name,
        scope,
        customer_id,
        key_hash,
    )


async def api_keys(conn: Conn) -> list[asyncpg.Record]:
    """Every key, revoked ones too, without its hash."""
    return await conn.fetch(
        "SELECT key_id, name, scope, customer_id, created_at, revoked_at, last_used_at"
        " FROM airbnb.api_keys ORDER BY name, created_at"
    )


async def revoke_api_key(conn: Conn, name: str) -> asyncpg.Record | None:
    """Revoke the key in force with this name; None when there is none."""
    return await conn.fetchrow(
        "UPDATE airbnb.api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL"
        " RETURNING key_id, name, scope, customer_id, revoked_at",
        name,
    )
