"""The daily fan-out and the start-up reconciliation: create jobs in PostgreSQL, then
publish their requests.

Order is the whole trick: a job row is committed (status ``queued``) before its
``SyncRequest`` is published, so a scheduler that dies in between loses nothing (the
next start re-publishes queued jobs), and publishing the same request twice is
harmless (``Nats-Msg-Id`` = ``topology.sync_request_msg_id(dedup_key)``, deduplicated
by JetStream for 26 h; the job row is unique by dedup key in any case).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg
from nats.aio.client import Client as NatsClient

from services.scheduler import store
from services.scheduler.job_log import log_jobs_queued
from services.scheduler.plan import (
    Account,
    JobPlan,
    Windows,
    chunked,
    in_key_order,
    plan_jobs,
    unschedulable_reason,
)
from services.scheduler.publisher import PublishReport, RequestPublisher
from services.scheduler.settings import SchedulerSettings
from shared.messages import SyncTriggerSource
from shared.metrics import JOBS

log = logging.getLogger("sync_airbnb.scheduler")


@dataclass
class FanOutReport:
    planned: int = 0
    created: int = 0
    republished_existing: int = 0
    publish: PublishReport = field(default_factory=PublishReport)


async def _insert_chunk(
    pool: asyncpg.Pool, chunk: Sequence[JobPlan]
) -> tuple[list[JobPlan], list[JobPlan]]:
    """Insert one chunk's jobs: (the plans created, the queued jobs others created)."""
    async with pool.acquire() as conn:
        created_ids = await store.insert_jobs(conn, chunk)
        lost = [p.dedup_key for p in chunk if p.job_id not in created_ids]
        existing = await store.queued_jobs_by_key(conn, lost)
    return [p for p in chunk if p.job_id in created_ids], existing


async def _each(chunks: Iterable[Sequence[JobPlan]]) -> AsyncIterator[Sequence[JobPlan]]:
    for chunk in chunks:
        yield chunk


async def emit_jobs(
    pool: asyncpg.Pool,
    nc: NatsClient,
    chunks: AsyncIterator[Sequence[JobPlan]],
    *,
    publish_timeout_s: float,
) -> FanOutReport:
    """Create the planned jobs that do not exist yet and publish what is still queued.

    Per chunk (each in dedup-key order, one chunk after the other): one INSERT; the
    keys someone else created (another scheduler, an earlier run) are read back and
    re-published if still queued, which JetStream drops if it already has them.
    PostgreSQL's work and ours overlap: while a chunk is inserted, the next one is
    read and planned (``chunks`` may read pages of accounts and plan them) and the
    previous one's requests are published. Sequential, the inserts alone were a third
    of a 100,000-account run's wall time (benchmarks/bench_scheduler.py).

    Memory is bounded whatever the number of accounts: one chunk being inserted, one
    being planned, and at most the publisher's ``max_in_flight`` requests awaiting
    their ack (``submit`` waits for room).
    """
    report = FanOutReport()
    pending = chunks
    first = await anext(pending, None)
    async with RequestPublisher(nc, timeout_s=publish_timeout_s) as publisher:
        inserting = asyncio.create_task(_insert_chunk(pool, first)) if first else None
        try:
            while inserting is not None:
                await asyncio.sleep(0)  # the INSERT on its way before we plan the next chunk
                upcoming = await anext(pending, None)
                created, existing = await inserting
                inserting = asyncio.create_task(_insert_chunk(pool, upcoming)) if upcoming else None
                log_jobs_queued(created)
                if created:
                    JOBS.labels(status="queued").inc(len(created))
                report.created += len(created)
                report.republished_existing += len(existing)
                await publisher.submit([*created, *existing])
        finally:
            # A failure while a chunk is being inserted: its jobs, if committed, stay
            # queued and are published at the next start, as after a crash.
            if inserting is not None:
                inserting.cancel()
                # Never raises: what propagates is the failure that brought us here.
                await asyncio.wait([inserting])
                if not inserting.cancelled():
                    inserting.exception()  # retrieved, so asyncio does not report it lost
        report.publish = await publisher.finish()
    for plan in report.publish.failed:
        log.error(
            "sync request not published; the job stays queued and is re-published at the "
            "next start or trigger",
            extra={"job_id": str(plan.job_id), "account_id": plan.account_id},
        )
    return report


async def _fan_out(
    pool: asyncpg.Pool,
    nc: NatsClient,
    settings: SchedulerSettings,
    accounts: Sequence[Account],
    *,
    today: dt.date,
    trigger: SyncTriggerSource,
    full: bool = False,
) -> FanOutReport:
    """Plan and emit one job per account for the scrape day ``today``."""
    windows = Windows.for_day(today, settings.window_settings())
    now = dt.datetime.now(dt.UTC)
    ordered = in_key_order(accounts, scrape_day=today, full=full)
    chunks = (
        plan_jobs(chunk, trigger=trigger, scrape_day=today, windows=windows, now=now, full=full)
        for chunk in chunked(ordered, settings.scheduler_chunk_size)
    )
    report = await emit_jobs(
        pool, nc, _each(chunks), publish_timeout_s=settings.scheduler_publish_timeout_s
    )
    report.planned = len(ordered)
    return report


async def _planned_pages(
    pool: asyncpg.Pool,
    settings: SchedulerSettings,
    report: FanOutReport,
    *,
    today: dt.date,
    trigger: SyncTriggerSource,
) -> AsyncIterator[Sequence[JobPlan]]:
    """The schedulable accounts a page at a time (keyset on ``account_id``), each page
    planned as it arrives: a million accounts are never all in memory.

    Each page's plans are in dedup-key order (``plan_jobs``): every INSERT takes its
    rows' locks in the one order, which is what keeps two schedulers from deadlocking;
    the pages need not follow each other in that order.
    """
    windows = Windows.for_day(today, settings.window_settings())
    now = dt.datetime.now(dt.UTC)
    after = ""
    while True:
        async with pool.acquire() as conn:
            page = await store.schedulable_accounts_page(
                conn, after=after, limit=settings.scheduler_chunk_size
            )
        if not page:
            return
        report.planned += len(page)
        yield plan_jobs(page, trigger=trigger, scrape_day=today, windows=windows, now=now)
        if len(page) < settings.scheduler_chunk_size:
            return
        after = page[-1].account_id


async def run_daily(
    pool: asyncpg.Pool, nc: NatsClient, settings: SchedulerSettings, *, leader: str | None = None
) -> FanOutReport | None:
    """The leader's daily run: one sync request per schedulable account for today's
    scrape day; None when the day's run already finished (it is never repeated).

    The run is recorded (``scheduler_runs``) before its first job, and finished only
    once every request is published. A run left unfinished (a leader killed mid-way,
    a publish that failed) is run again by the next attempt or leader: the dedup keys
    make that harmless, every account still gets exactly one job and one request.
    """
    today = settings.today()
    async with pool.acquire() as conn:
        run = await store.begin_daily_run(conn, today, leader or settings.scheduler_name)
        if run is None:
            return None
        if run.attempts > 1:
            log.warning(
                "resuming the daily run of %s, begun at %s and not finished (attempt %d)",
                today,
                run.started_at.isoformat(),
                run.attempts,
                extra={"scrape_day": today.isoformat(), "attempt": run.attempts},
            )
    await end_unschedulable_queued(pool)
    planned = FanOutReport()
    pages = _planned_pages(pool, settings, planned, today=today, trigger="schedule")
    report = await emit_jobs(
        pool, nc, pages, publish_timeout_s=settings.scheduler_publish_timeout_s
    )
    report.planned = planned.planned
    if not report.publish.failed:
        async with pool.acquire() as conn:
            await store.finish_daily_run(
                conn, today, accounts=report.planned, jobs_created=report.created
            )
    return report


async def end_unschedulable_queued(pool: asyncpg.Pool) -> int:
    """End the queued jobs of accounts that may no longer be synced (deleted,
    deactivated, credentials rejected): ``failed``, their reason as the error.

    They would otherwise wait forever: no start re-publishes them and no fetcher
    would be right to run them.
    """
    async with pool.acquire() as conn:
        found = await store.unschedulable_queued(conn)
        ended = [
            (job_id, unschedulable_reason(acct) or "account unschedulable")
            for job_id, acct in found
        ]
        n = await store.end_queued_jobs(conn, ended)
    if n:
        JOBS.labels(status="failed").inc(n)
        reasons = sorted({reason for _, reason in ended})
        log.warning(
            "%d queued job(s) ended failed: their account may no longer be synced (%s)",
            n,
            ", ".join(reasons),
            extra={"jobs_ended": n},
        )
    return n


async def republish_queued(
    pool: asyncpg.Pool, nc: NatsClient, settings: SchedulerSettings
) -> PublishReport:
    """At start: end the queued jobs that can never run, then publish again every job
    still queued (a crash between INSERT and publish)."""
    await end_unschedulable_queued(pool)
    async with pool.acquire() as conn:
        plans = await store.queued_jobs(conn)
    async with RequestPublisher(nc, timeout_s=settings.scheduler_publish_timeout_s) as publisher:
        await publisher.submit(plans)
        report = await publisher.finish()
    log.info(
        "re-published %d queued job(s): %d new in the stream, %d already there, %d failed",
        len(plans),
        report.published,
        report.duplicates,
        len(report.failed),
    )
    return report


async def backfill_missed(
    pool: asyncpg.Pool, nc: NatsClient, settings: SchedulerSettings
) -> FanOutReport:
    """At start: the first-run backfill of accounts that never synced and have no job."""
    async with pool.acquire() as conn:
        accounts = await store.accounts_awaiting_backfill(conn)
    return await _fan_out(
        pool, nc, settings, accounts, today=settings.today(), trigger="startup", full=True
    )
