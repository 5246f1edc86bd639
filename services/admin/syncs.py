"""Sync triggers (durable, handled by the scheduler) and job status (from the database).

The admin never creates a job itself: the scheduler owns job records, windows and
de-duplication. A trigger is a ``SyncTriggered`` message on the JetStream stream
``AIRBNB_SYNC_TRIGGERS``; ``POST /accounts/{id}/sync`` answers 202 only once JetStream
stored it, so a trigger sent while no scheduler runs is handled when one starts. The
scheduler records what it made of it (``airbnb.sync_triggers``) and then acks it, so a
trigger is always in one of the two: ``GET /triggers/{id}`` reads the row, else the
stream (pending), and nothing else has to agree with anything. The POST waits a moment
for the scheduler's outcome (``airbnb.triggers.{id}``) and, when it comes, answers with
the job id (or the refusal) at once, as a running stack usually does.

The admin checks the account first, so the common refusals (unknown, deleted, inactive,
needs credentials) are answered without a trigger and with the same codes the
scheduler would use; the scheduler's own refusal still wins when the state changed in
between. When NATS or JetStream cannot store the trigger: 503 with ``Retry-After``.

The audit trail's ``sync_triggered`` entry is written in a transaction that commits only
once JetStream stored the trigger: a trigger NATS refused leaves no entry. A publish and a
commit cannot be one transaction, so one gap is left: PostgreSQL failing in the instant
between the two leaves a stored trigger without its entry (and the answer is a 503). The
price: a trigger holds one pooled connection while JetStream stores it, at most
``SYNC_TRIGGER_TIMEOUT_S``; triggers are an operator's (or a customer's) few, not a load.

The SQL is services/admin/store.py's, the account check services/admin/rules.py's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from typing import TYPE_CHECKING

import asyncpg
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from services.admin import rules, store
from services.admin.errors import ApiError, not_found, unavailable
from services.admin.models import (
    JobDetail,
    JobListingOut,
    JobListQuery,
    JobOut,
    JobPage,
    ListingError,
    TriggerLinks,
    TriggerOut,
)
from shared import topology
from shared.messages import (
    MessageDecodeError,
    SyncTriggered,
    SyncTriggerReply,
    decode,
)
from shared.sync_triggers import new_trigger, store_trigger

if TYPE_CHECKING:
    from services.admin.auth import Caller

log = logging.getLogger("sync_airbnb.admin.syncs")

# How long the POST waits for a running scheduler's outcome before answering "pending".
OUTCOME_WAIT_S = 2.0
# The stream of the scheduler's trigger consumer (named there, where it is defined).
TRIGGERS_STREAM = topology.SCHEDULER_TRIGGERS.stream


def nats_unavailable(detail: str) -> ApiError:
    return unavailable("nats_unavailable", detail)


def trigger_links(trigger_id: uuid.UUID, job_id: uuid.UUID | None) -> TriggerLinks:
    return TriggerLinks(
        trigger=f"/api/v1/triggers/{trigger_id}",
        job=f"/api/v1/syncs/{job_id}" if job_id is not None else None,
    )


def pending_trigger(trigger: SyncTriggered) -> TriggerOut:
    return TriggerOut(
        trigger_id=trigger.trigger_id,
        account_id=trigger.account_id,
        full=trigger.full,
        requested_at=trigger.requested_at,
        status="pending",
        links=trigger_links(trigger.trigger_id, None),
    )


def handled_trigger(row: asyncpg.Record) -> TriggerOut:
    job_id = row["job_id"]
    return TriggerOut(
        trigger_id=row["trigger_id"],
        account_id=row["account_id"],
        full=row["full_sync"],
        requested_at=row["requested_at"],
        # a job removed since (none are today) still shows it was queued
        status="refused" if job_id is None else (row["job_status"] or "queued"),
        handled_at=row["handled_at"],
        job_id=job_id,
        error=row["error"],
        detail=row["detail"],
        links=trigger_links(row["trigger_id"], job_id),
    )


class SyncTrigger:
    def __init__(self, pool: asyncpg.Pool, nc: NatsClient, timeout_s: float) -> None:
        self._pool = pool
        self._nc = nc
        self._js = nc.jetstream()
        self._timeout_s = timeout_s

    async def trigger(self, caller: Caller, account_id: str, *, full: bool) -> TriggerOut:
        await self._precheck(account_id, caller.customer_filter)
        trigger = new_trigger(account_id, full=full)
        tid = trigger.trigger_id
        try:
            # Before the publish, so an outcome that comes at once is not missed.
            sub = await self._nc.subscribe(topology.trigger_outcome_subject(tid), max_msgs=1)
        except (NatsError, OSError) as exc:
            log.warning("sync trigger for %s: NATS error %s", account_id, type(exc).__name__)
            raise nats_unavailable("NATS is not reachable; the sync was not triggered") from None
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await store.record(
                    conn,
                    caller,
                    "sync_triggered",
                    account_id=account_id,
                    detail={"trigger_id": str(tid), "full": full},
                )
                try:
                    await store_trigger(self._js, trigger, timeout_s=self._timeout_s)
                except (NatsError, OSError, TimeoutError) as exc:
                    log.warning(
                        "sync trigger for %s not stored: %s", account_id, type(exc).__name__
                    )
                    # the entry goes with the transaction
                    raise nats_unavailable(
                        f"JetStream did not store the trigger within {self._timeout_s:g}s; "
                        "the sync was not triggered"
                    ) from None
            log.info("sync of %s triggered: trigger %s (full=%s)", account_id, tid, full)
            reply = await _outcome(sub, min(OUTCOME_WAIT_S, self._timeout_s))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if reply is None:
            return pending_trigger(trigger)
        if reply.job_id is not None:
            log.info("trigger %s: job %s", tid, reply.job_id)
            return pending_trigger(trigger).model_copy(
                update={
                    "status": reply.status or "queued",
                    "job_id": reply.job_id,
                    "links": trigger_links(tid, reply.job_id),
                }
            )
        if reply.error in rules.REFUSALS:
            raise rules.refusal(reply.error, account_id, reply.detail)
        log.error("trigger %s: the scheduler refused it: %s", tid, reply.error)
        # Our request was valid by our own model: the two sides disagree on the contract.
        raise ApiError(502, "bad_scheduler_reply", "the scheduler refused the request")

    async def get(self, trigger_id: uuid.UUID, scope_customer: str | None = None) -> TriggerOut:
        """The trigger; one of an account not of ``scope_customer`` is not found."""
        row = await store.handled_trigger(self._pool, trigger_id, scope_customer)
        if row is not None:
            return handled_trigger(row)
        try:
            raw = await self._js.get_last_msg(
                TRIGGERS_STREAM, topology.sync_trigger_subject(trigger_id)
            )
        except NotFoundError:
            raw = None
        except (NatsError, OSError, TimeoutError) as exc:
            log.warning("trigger %s: NATS error %s", trigger_id, type(exc).__name__)
            raise nats_unavailable("NATS is not reachable to look the trigger up") from None
        if raw is not None and raw.data:
            with contextlib.suppress(MessageDecodeError):
                pending = decode(SyncTriggered, raw.data)
                # A pending trigger is only in JetStream: its account is looked up in SQL.
                if scope_customer is None or await store.account_exists(
                    self._pool, pending.account_id, scope_customer
                ):
                    return pending_trigger(pending)
                raise not_found("sync trigger", trigger_id)
        # The scheduler records a trigger before it acks it: one gone from the stream
        # since the first read is in the table now.
        row = await store.handled_trigger(self._pool, trigger_id, scope_customer)
        if row is not None:
            return handled_trigger(row)
        raise not_found("sync trigger", trigger_id)

    async def _precheck(self, account_id: str, scope_customer: str | None) -> None:
        # An account not of the customer key's customer is not found, as a missing one.
        state = await store.trigger_state(self._pool, account_id, scope_customer)
        refused = rules.trigger_refusal(account_id, state)
        if refused is not None:
            raise refused


async def _outcome(sub: Subscription, wait_s: float) -> SyncTriggerReply | None:
    """The scheduler's outcome if it comes within ``wait_s``; None: still pending."""
    try:
        msg = await sub.next_msg(timeout=wait_s)
    except (NatsError, TimeoutError):  # nats' TimeoutError is one of its errors
        return None
    try:
        return decode(SyncTriggerReply, msg.data)
    except MessageDecodeError as exc:
        log.error("unreadable trigger outcome: %s", exc)
        return None


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

    async def for_account(
        self, account_id: str, q: JobListQuery, scope_customer: str | None = None
    ) -> JobPage:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            if not await store.account_exists(conn, account_id, scope_customer):
                raise not_found("account", account_id)
            total = await store.count_jobs(conn, account_id)
            rows = await store.job_page(conn, account_id, q.limit, q.offset)
            errors = await store.listing_errors(conn, [r["job_id"] for r in rows])
            now = await store.now(conn)
        items = [_job_out(r, errors.get(r["job_id"], []), now) for r in rows]
        return JobPage(items=items, total=total, limit=q.limit, offset=q.offset)

    async def get(self, job_id: uuid.UUID, scope_customer: str | None = None) -> JobDetail:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            row = await store.job(conn, job_id, scope_customer)
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
