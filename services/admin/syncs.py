"""Sync triggers (through the scheduler) and job status (from the database).

The admin never creates a job itself: the scheduler owns job records, windows
and de-duplication, and answers ``airbnb.sync.trigger``. The admin checks the
account first, so the common refusals (unknown, deleted, inactive, needs
credentials) are answered without a round trip and with the same codes the
scheduler would use; the scheduler's own refusal still wins when the state
changed in between.

The SQL is services/admin/store.py's, the account check services/admin/rules.py's.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import asyncpg
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from services.admin import rules, store
from services.admin.errors import ApiError, not_found, unavailable
from services.admin.models import (
    JobDetail,
    JobListingOut,
    JobListQuery,
    JobOut,
    JobPage,
    ListingError,
    SyncAccepted,
)
from shared.messages import MessageDecodeError, SyncTriggerReply, SyncTriggerRequest, decode, encode
from shared.topology import SYNC_TRIGGER

log = logging.getLogger("sync_airbnb.admin.syncs")


class SyncTrigger:
    def __init__(self, pool: asyncpg.Pool, nc: NatsClient, timeout_s: float) -> None:
        self._pool = pool
        self._nc = nc
        self._timeout_s = timeout_s

    async def trigger(self, account_id: str, *, full: bool) -> SyncAccepted:
        await self._precheck(account_id)
        request = SyncTriggerRequest(account_id=account_id, full=full)
        try:
            msg = await self._nc.request(SYNC_TRIGGER, encode(request), timeout=self._timeout_s)
        except NoRespondersError:
            raise unavailable(
                "scheduler_unavailable",
                "no scheduler is listening for sync triggers; is `sync-airbnb scheduler` running?",
            ) from None
        except (NatsTimeoutError, TimeoutError):
            raise unavailable(
                "scheduler_timeout",
                f"the scheduler did not answer within {self._timeout_s:g}s; the sync may "
                f"still start: see GET /api/v1/accounts/{account_id}/syncs",
            ) from None
        except (NatsError, OSError) as exc:
            log.warning("sync trigger for %s: NATS error %s", account_id, type(exc).__name__)
            raise unavailable("nats_unavailable", "NATS is not reachable") from None
        try:
            reply = decode(SyncTriggerReply, msg.data)
        except MessageDecodeError as exc:
            log.error("sync trigger for %s: unreadable scheduler reply: %s", account_id, exc)
            raise ApiError(
                502, "bad_scheduler_reply", "the scheduler's reply was unreadable"
            ) from None
        if reply.job_id is not None:
            log.info("sync of %s triggered: job %s (full=%s)", account_id, reply.job_id, full)
            return SyncAccepted(
                job_id=reply.job_id,
                account_id=account_id,
                full=full,
                status_url=f"/api/v1/syncs/{reply.job_id}",
            )
        if reply.error in rules.REFUSALS:
            raise rules.refusal(reply.error, account_id, reply.detail)
        log.error("sync trigger for %s: scheduler error %s", account_id, reply.error)
        if reply.error == "invalid_request":
            # Our request was valid by our own model: the two sides disagree on the contract.
            raise ApiError(502, "bad_scheduler_reply", "the scheduler refused the request")
        raise unavailable(
            "scheduler_error",
            f"the scheduler could not start the sync ({reply.error or 'no job id'}); retry later",
        )

    async def _precheck(self, account_id: str) -> None:
        state = await store.trigger_state(self._pool, account_id)
        refused = rules.trigger_refusal(account_id, state)
        if refused is not None:
            raise refused


# --- job status -----------------------------------------------------------------------------


def _job_out(row: asyncpg.Record, errors: list[ListingError], now: dt.datetime) -> JobOut:
    total = row["listings_total"]
    succeeded = max(row["listings_succeeded"], row["l_committed"])
    failed = max(row["listings_failed"], row["l_failed"])
    started, finished = row["started_at"], row["finished_at"]
    duration = None
    if started is not None:
        duration = ((finished or now) - started).total_seconds()
    return JobOut(
        job_id=row["job_id"],
        account_id=row["account_id"],
        kind=row["kind"],
        trigger=row["trigger"],
        status=row["status"],
        scrape_day=row["scrape_day"],
        window_start=row["window_start"],
        window_end=row["window_end"],
        listings_total=total,
        listings_succeeded=succeeded,
        listings_failed=failed,
        listings_pending=None if total is None else max(total - succeeded - failed, 0),
        rows_written=max(row["rows_written"], row["l_rows"]),
        error=row["error"],
        errors=errors,
        created_at=row["created_at"],
        started_at=started,
        finished_at=finished,
        updated_at=row["updated_at"],
        duration_s=duration,
    )


class JobQueries:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def for_account(self, account_id: str, q: JobListQuery) -> JobPage:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            if not await store.account_exists(conn, account_id):
                raise not_found("account", account_id)
            total = await store.count_jobs(conn, account_id)
            rows = await store.job_page(conn, account_id, q.limit, q.offset)
            errors = await store.listing_errors(conn, [r["job_id"] for r in rows])
            now = await store.now(conn)
        items = [_job_out(r, errors.get(r["job_id"], []), now) for r in rows]
        return JobPage(items=items, total=total, limit=q.limit, offset=q.offset)

    async def get(self, job_id: uuid.UUID) -> JobDetail:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            row = await store.job(conn, job_id)
            if row is None:
                raise not_found("sync job", job_id)
            listings = await store.job_listings(conn, job_id)
            now = await store.now(conn)
        errors = [
            ListingError(listing_id=r["airbnb_listing_id"], error=r["error"])
            for r in listings
            if r["status"] == "failed"
        ]
        job = _job_out(row, errors, now)
        return JobDetail(
            **job.model_dump(),
            listings=[
                JobListingOut(
                    listing_id=r["airbnb_listing_id"],
                    status=r["status"],
                    chunks_expected=r["chunks_expected"],
                    chunks_committed=r["chunks_committed"],
                    rows_written=r["rows_written"],
                    error=r["error"],
                    started_at=r["started_at"],
                    finished_at=r["finished_at"],
                )
                for r in listings
            ],
        )
