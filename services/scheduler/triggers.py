"""One account's sync now, for a manual trigger or an account event: the job that exists
for today, or a new one, created before its request is published (as in the fan-out,
``services/scheduler/fanout.py``), or a refusal.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import asyncpg
from nats.aio.client import Client as NatsClient

from services.scheduler import store
from services.scheduler.job_log import log_job_queued
from services.scheduler.plan import (
    Account,
    ExistingJob,
    JobPlan,
    Windows,
    check_account_id,
    choose_attempt,
    dedup_key,
    plan_from_existing,
    plan_job,
    refusal,
    sync_kind,
)
from services.scheduler.publisher import publish_one
from services.scheduler.settings import SchedulerSettings
from shared.messages import SyncTriggered, SyncTriggerReply, SyncTriggerSource
from shared.metrics import JOBS

log = logging.getLogger("sync_airbnb.scheduler")


@dataclass(frozen=True, slots=True)
class TriggerOutcome:
    reply: SyncTriggerReply
    created: bool = False
    account: Account | None = None


async def trigger_sync(
    pool: asyncpg.Pool,
    nc: NatsClient,
    settings: SchedulerSettings,
    account_id: str,
    *,
    full: bool,
    trigger: SyncTriggerSource,
    allow_retry: bool,
) -> TriggerOutcome:
    """One account's sync now (manual trigger or account event): a job id or a refusal."""
    invalid = check_account_id(account_id)
    if invalid:
        return TriggerOutcome(invalid)
    today = settings.today()
    async with pool.acquire() as conn:
        acct = await store.account(conn, account_id)
        refused = refusal(acct, account_id)
        if refused or acct is None:
            return TriggerOutcome(refused.reply() if refused else SyncTriggerReply(), account=acct)
        kind = sync_kind(full_requested=full, never_synced=acct.never_synced)
        base = dedup_key(account_id, today, kind)
        choice = choose_attempt(
            base, await store.attempts(conn, account_id, today, kind), allow_retry=allow_retry
        )
        created = False
        if isinstance(choice, ExistingJob):
            job: ExistingJob | JobPlan = choice
        else:
            plan = plan_job(
                acct,
                kind=kind,
                trigger=trigger,
                scrape_day=today,
                windows=Windows.for_day(today, settings.window_settings()),
                now=dt.datetime.now(dt.UTC),
                key=choice,
            )
            if await store.insert_jobs(conn, [plan]):
                job, created = plan, True
            else:
                # Lost a race (a double click, another scheduler): the winner's job it is.
                winner = await store.job_by_key(conn, choice)
                assert winner is not None, "ON CONFLICT hit a row that is not there"
                job = winner
    if created:
        assert isinstance(job, JobPlan)
        log_job_queued(job)
        JOBS.labels(status="queued").inc()
        to_publish: JobPlan | None = job
    elif isinstance(job, ExistingJob) and job.status == "queued":
        # Possibly never published (its creator died, or NATS failed): publish again;
        # JetStream drops it if it is there.
        to_publish = plan_from_existing(job, account_id, acct.credentials)
    else:
        to_publish = None
    if to_publish is not None:
        # Short: someone waits for the reply.
        timeout_s = min(settings.scheduler_publish_timeout_s, 3.0)
        report = await publish_one(nc, to_publish, timeout_s=timeout_s)
        if report.failed:
            raise RuntimeError(f"sync request of job {to_publish.job_id} could not be published")
    status = job.status if isinstance(job, ExistingJob) else "queued"
    return TriggerOutcome(
        SyncTriggerReply(job_id=job.job_id, status=status), created=created, account=acct
    )


async def handle_trigger(
    pool: asyncpg.Pool, nc: NatsClient, settings: SchedulerSettings, trigger: SyncTriggered
) -> SyncTriggerReply:
    """One durable manual trigger: its job or refusal, recorded before the message is acked.

    A redelivered trigger (this scheduler died between the record and the ack) answers
    what it was recorded as, and never makes a second attempt of a job that ended since.
    Raises when PostgreSQL or JetStream failed: the caller redelivers the trigger.
    """
    async with pool.acquire() as conn:
        handled = await store.trigger_outcome(conn, trigger.trigger_id)
    if handled is not None:
        return handled
    outcome = await trigger_sync(
        pool,
        nc,
        settings,
        trigger.account_id,
        full=trigger.full,
        trigger="manual",
        allow_retry=True,
    )
    reply = outcome.reply.model_copy(update={"trigger_id": trigger.trigger_id})
    if reply.job_id is None and reply.error is None:
        reply = reply.model_copy(update={"error": "not_found"})
    async with pool.acquire() as conn:
        await store.record_trigger(conn, trigger, reply)
    return reply
