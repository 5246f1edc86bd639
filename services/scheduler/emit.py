"""The scheduler's imperative shell: create jobs in PostgreSQL, then publish their requests.

Order is the whole trick: a job row is committed (status ``queued``) before its
``SyncRequest`` is published, so a scheduler that dies in between loses nothing (the
next start re-publishes queued jobs), and publishing the same request twice is
harmless (``Nats-Msg-Id`` = ``topology.sync_request_msg_id(dedup_key)``, deduplicated
by JetStream for 26 h; the job row is unique by dedup key in any case).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.scheduler import store
from services.scheduler.plan import (
    Account,
    ExistingJob,
    JobPlan,
    Windows,
    check_account_id,
    choose_attempt,
    chunked,
    dedup_key,
    in_key_order,
    plan_from_existing,
    plan_job,
    plan_jobs,
    refusal,
    sync_kind,
    sync_request,
)
from services.scheduler.settings import SchedulerSettings
from shared import topology
from shared.backoff import retry_until
from shared.messages import SyncTriggerReply, SyncTriggerSource, encode
from shared.metrics import JOBS, SYNC_REQUESTS_EMITTED

log = logging.getLogger("sync_airbnb.scheduler")

PUBLISH_ATTEMPTS = 3
# The waits before the 2nd and 3rd attempt: 0.5 s, then 1 s.
PUBLISH_RETRY_BASE_S = 0.5
PUBLISH_RETRY_MAX_S = 1.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def log_job_queued(plan: JobPlan, level: int = logging.INFO) -> None:
    """The one log line of a job's creation (it is born queued)."""
    log.log(
        level,
        "sync job queued",
        extra={
            "job_id": str(plan.job_id),
            "account_id": plan.account_id,
            "status": "queued",
            "kind": plan.kind,
            "trigger": plan.trigger,
            "scrape_day": plan.scrape_day.isoformat(),
            "window_start": plan.window_start.isoformat(),
            "window_end": plan.window_end.isoformat(),
            "dedup_key": plan.dedup_key,
        },
    )


def log_jobs_queued(plans: Sequence[JobPlan]) -> None:
    """A fan-out's jobs: one INFO line per chunk, the line of each job at DEBUG.

    A line per job was over a third of a 100,000-account daily run's CPU (py-spy,
    benchmarks/bench_scheduler.py); the jobs themselves are rows in ``sync_jobs``.
    """
    if not plans:
        return
    if log.isEnabledFor(logging.DEBUG):
        for plan in plans:
            log_job_queued(plan, logging.DEBUG)
    first = plans[0]
    kinds: dict[str, int] = {}
    for plan in plans:
        kinds[plan.kind] = kinds.get(plan.kind, 0) + 1
    log.info(
        "sync jobs queued",
        extra={
            "jobs": len(plans),
            "kinds": kinds,
            "status": "queued",
            "trigger": first.trigger,
            "scrape_day": first.scrape_day.isoformat(),
            "first_account_id": first.account_id,
            "last_account_id": plans[-1].account_id,
        },
    )


@dataclass
class PublishReport:
    published: int = 0  # new messages in the stream
    duplicates: int = 0  # dropped by JetStream: someone published this request already
    failed: list[JobPlan] = field(default_factory=list)


class PublishUnacked(Exception):
    """A publishing round ended with requests that JetStream did not ack."""


class RequestPublisher:
    """Pipelined JetStream publishes: send everything, collect the acks as they come.

    A publish-and-wait per message costs a round trip each (100,000 in a daily run).
    nats-py's ``publish_async`` pipelines, but its per-message bookkeeping (a task for
    the stall timeout, a future, random tokens) made it 3x slower than this: plain
    publishes whose reply subject is one inbox of ours, ``{inbox}.{n}``, and one
    subscription that reads the acks. At most ``max_in_flight`` wait for their ack.
    Use as ``async with RequestPublisher(nc, ...) as pub``.
    """

    def __init__(self, nc: NatsClient, *, timeout_s: float, max_in_flight: int = 20_000) -> None:
        self._nc = nc
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._seq = 0
        self._waiting: dict[str, JobPlan] = {}
        self._room = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._failed: list[JobPlan] = []
        self.report = PublishReport()

    async def __aenter__(self) -> RequestPublisher:
        self._sub = await self._nc.subscribe(
            f"{self._inbox}.*", cb=self._on_ack, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_ack(self, msg: Msg) -> None:
        plan = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if plan is None:
            return  # an ack after we gave up on it: the job is retried or stays queued
        ok = False
        if not (msg.headers and msg.headers.get("Status")):  # 503: no stream listens
            with contextlib.suppress(orjson.JSONDecodeError):
                ack = orjson.loads(msg.data)
                ok = isinstance(ack, dict) and "error" not in ack
        if not ok:
            self._failed.append(plan)
        elif ack.get("duplicate"):
            self.report.duplicates += 1
        else:
            self.report.published += 1
            SYNC_REQUESTS_EMITTED.labels(trigger=plan.trigger).inc()
        if len(self._waiting) < self._max_in_flight:
            self._room.set()
        if not self._waiting:
            self._idle.set()

    async def submit(self, plans: Sequence[JobPlan]) -> None:
        assert self._sub is not None, "use RequestPublisher as an async context manager"
        for i, plan in enumerate(plans):
            if len(self._waiting) >= self._max_in_flight:
                self._room.clear()
                try:
                    await asyncio.wait_for(self._room.wait(), timeout=self._timeout_s)
                except TimeoutError:
                    log.warning(
                        "JetStream stopped acknowledging; %d publish(es) left", len(plans) - i
                    )
                    self._failed.extend(plans[i:])
                    return
            elif i % 1000 == 999:
                await asyncio.sleep(0)  # let the client flush and read acks
            token = str(self._seq)
            self._seq += 1
            self._waiting[token] = plan
            self._idle.clear()
            try:
                await self._nc.publish(
                    topology.SYNC_REQUESTED,
                    encode(sync_request(plan)),
                    reply=f"{self._inbox}.{token}",
                    headers={"Nats-Msg-Id": topology.sync_request_msg_id(plan.dedup_key)},
                )
            except Exception as exc:  # disconnected, buffer full: retried in finish()
                log.warning("publish of job %s failed: %r", plan.job_id, exc)
                self._waiting.pop(token, None)
                self._failed.append(plan)
        if not self._waiting:
            self._idle.set()

    async def finish(self) -> PublishReport:
        """Wait for the acks; publish again, a few times, what failed; report."""
        unacked: list[JobPlan] = []

        async def publish_round() -> None:
            nonlocal unacked
            if unacked:
                await self.submit(unacked)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=self._timeout_s)
            # No ack in time counts as failed; a late one is ignored (and harmless).
            unacked = [*self._failed, *self._waiting.values()]
            self._failed, self._waiting = [], {}
            self._idle.set()
            if unacked:
                raise PublishUnacked(f"{len(unacked)} request(s) not acked")

        try:
            await retry_until(
                publish_round,
                base_s=PUBLISH_RETRY_BASE_S,
                cap_s=PUBLISH_RETRY_MAX_S,
                retry_if=lambda exc: isinstance(exc, PublishUnacked),
                attempts=PUBLISH_ATTEMPTS,
            )
        except PublishUnacked:
            self.report.failed = unacked
        return self.report


async def publish_one(nc: NatsClient, plan: JobPlan, *, timeout_s: float) -> PublishReport:
    async with RequestPublisher(nc, timeout_s=timeout_s) as publisher:
        await publisher.submit([plan])
        return await publisher.finish()


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


async def emit_jobs(
    pool: asyncpg.Pool,
    nc: NatsClient,
    chunks: Iterable[Sequence[JobPlan]],
    *,
    publish_timeout_s: float,
) -> FanOutReport:
    """Create the planned jobs that do not exist yet and publish what is still queued.

    Per chunk (in dedup-key order, one chunk after the other): one INSERT; the keys
    someone else created (another scheduler, an earlier run) are read back and
    re-published if still queued, which JetStream drops if it already has them.
    PostgreSQL's work and ours overlap: while a chunk is inserted, the next one is
    planned (``chunks`` may be a generator that plans it) and the previous one's
    requests are published. Sequential, the inserts alone were a third of a
    100,000-account run's wall time (benchmarks/bench_scheduler.py).
    """
    report = FanOutReport()
    pending = iter(chunks)
    first = next(pending, None)
    async with RequestPublisher(nc, timeout_s=publish_timeout_s) as publisher:
        inserting = asyncio.create_task(_insert_chunk(pool, first)) if first else None
        try:
            while inserting is not None:
                await asyncio.sleep(0)  # the INSERT on its way before we plan the next chunk
                upcoming = next(pending, None)
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


# --- the triggers -------------------------------------------------------------------------


async def _fan_out(
    pool: asyncpg.Pool,
    nc: NatsClient,
    settings: SchedulerSettings,
    accounts: Sequence[Account],
    *,
    trigger: SyncTriggerSource,
    full: bool = False,
) -> FanOutReport:
    """Plan and emit one job per account for today's scrape day."""
    today = settings.today()
    windows = Windows.for_day(today, settings.window_settings())
    now = utcnow()
    ordered = in_key_order(accounts, scrape_day=today, full=full)
    chunks = (
        plan_jobs(chunk, trigger=trigger, scrape_day=today, windows=windows, now=now, full=full)
        for chunk in chunked(ordered, settings.scheduler_chunk_size)
    )
    report = await emit_jobs(
        pool, nc, chunks, publish_timeout_s=settings.scheduler_publish_timeout_s
    )
    report.planned = len(ordered)
    return report


async def run_daily(
    pool: asyncpg.Pool, nc: NatsClient, settings: SchedulerSettings
) -> FanOutReport:
    """The cron's job: one sync request per schedulable account for today's scrape day."""
    async with pool.acquire() as conn:
        accounts = await store.schedulable_accounts(conn)
    return await _fan_out(pool, nc, settings, accounts, trigger="schedule")


async def republish_queued(
    pool: asyncpg.Pool, nc: NatsClient, settings: SchedulerSettings
) -> PublishReport:
    """At start: publish again every job still queued (a crash between INSERT and publish)."""
    async with pool.acquire() as conn:
        plans = await store.queued_jobs(conn)
        skipped = await store.count_unschedulable_queued(conn)
    if skipped:
        log.warning(
            "%d queued job(s) belong to accounts that may no longer be synced; not re-published",
            skipped,
        )
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
    return await _fan_out(pool, nc, settings, accounts, trigger="startup", full=True)


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
                now=utcnow(),
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
