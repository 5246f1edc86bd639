"""``sync-airbnb scheduler``: when and which window (see docs/data-path.md, "Scheduler").

Three background workers share the process:

* ``triggers``: the durable ``scheduler-triggers`` consumer of manual triggers (stream
  ``AIRBNB_SYNC_TRIGGERS``, which keeps them while no scheduler runs); each one ends in
  a job or a refusal, recorded in ``airbnb.sync_triggers`` and announced on
  ``airbnb.triggers.{trigger_id}`` before it is acked.
* ``accounts``: the durable ``scheduler-accounts`` consumer; an account that appears
  (created, restored, credentials changed, reactivated) gets its backfill at once.
* ``schedule``: at start, ends the queued jobs of accounts that may no longer be
  synced, re-publishes the other queued jobs and backfills accounts that never synced
  and have no job; then tries for the lead (``leader.py``). The leader alone runs the
  daily fan-out at ``SCHEDULE_CRON`` (UTC), and at once if today's time has passed
  with no run recorded (``airbnb.scheduler_runs``), or a run was left unfinished.

Any number of schedulers may run at once: every replica answers triggers and account
events, one leads the daily run, and a standby takes the lead when it goes. Job rows
are unique by dedup key and requests carry it as ``Nats-Msg-Id``, so each account
gets one job and one message per scrape day and kind even when a run is resumed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import logging
import time
from collections.abc import Sequence

import asyncpg
from aiohttp import web
from cronsim import CronSim

from services.scheduler import fanout, health_gauges, leader, retention, store, triggers
from services.scheduler.plan import (
    DailyRun,
    event_wants_backfill,
    run_is_due,
    seconds_to_next_fire,
    todays_run_time,
)
from services.scheduler.settings import SchedulerSettings
from services.scheduler.store import account as read_account
from shared import topology
from shared.backoff import RetryStopped, retry_until
from shared.jetstream import Delivery, PullWorker
from shared.logs import log_context, setup_logging
from shared.messages import (
    AccountEvent,
    MessageDecodeError,
    SyncTriggered,
    decode,
    encode,
)
from shared.resources import db_context, nats_context, worker_context
from shared.runtime import DB_POOL, JETSTREAM, NATS, serve
from shared.service_http import service_app
from shared.settings import load_settings

log = logging.getLogger("sync_airbnb.scheduler")

SERVICE = "scheduler"
SETTINGS = web.AppKey("settings", SchedulerSettings)
TRIGGERS_IN_FLIGHT = 16
EVENTS_BATCH = 64
# Redelivery delay of an account event whose handling failed (PostgreSQL away...).
EVENT_RETRY_DELAY_S = 5.0
# A daily run that failed (PostgreSQL away) or left requests unpublished is resumed
# along this curve, for as long as this replica leads.
RUN_RETRY_BASE_S = 5.0
RUN_RETRY_CAP_S = 300.0
# The leader looks at the clock and the day's run at least this often, whatever the cron.
LOOK_AGAIN_S = 60.0
# A run begun this long after its time is a catch-up (a scheduler down at its time).
CATCH_UP_AFTER = dt.timedelta(seconds=60)


# --- manual triggers ----------------------------------------------------------------------


async def handle_triggers(app: web.Application, batch: Sequence[Delivery]) -> None:
    """Handle durable triggers; each is recorded and announced, then acked. None raises."""
    for msg in batch:
        try:
            trigger = decode(SyncTriggered, msg.data)
        except MessageDecodeError as exc:
            await dead_letter(msg, f"undecodable: {exc}", what="sync trigger")
            continue
        with log_context(account_id=trigger.account_id):
            try:
                reply = await triggers.handle_trigger(
                    app[DB_POOL], app[NATS], app[SETTINGS], trigger
                )
            except Exception as exc:
                if msg.deliveries >= topology.MAX_DELIVER:
                    await dead_letter(msg, f"failed: {exc!r}", what="sync trigger")
                else:
                    log.warning("manual trigger not handled (%r); redelivered later", exc)
                    await msg.nak(EVENT_RETRY_DELAY_S)
                continue
            if reply.error:
                log.info("manual trigger %s refused: %s", trigger.trigger_id, reply.error)
            else:
                log.info("manual trigger %s: job %s", trigger.trigger_id, reply.job_id)
        # Best effort: whoever waits for it also finds it in airbnb.sync_triggers.
        with contextlib.suppress(Exception):
            await app[NATS].publish(
                topology.trigger_outcome_subject(trigger.trigger_id), encode(reply)
            )
        await msg.ack()


async def trigger_worker(app: web.Application, stopping: asyncio.Event) -> None:
    async def handle(batch: Sequence[Delivery]) -> None:
        await handle_triggers(app, batch)

    worker = PullWorker(
        app[JETSTREAM],
        topology.SCHEDULER_TRIGGERS,
        handle,
        service=SERVICE,
        # Batches of one, handled concurrently: a big account's INSERT holds up no other.
        max_in_flight=TRIGGERS_IN_FLIGHT,
        batch_max=1,
        heartbeat_s=topology.heartbeat_interval(app[SETTINGS].jetstream_ack_wait_s),
        on_stop="finish",
        what="sync triggers",
        logger=log,
    )
    await worker.run(stopping)


# --- account events -----------------------------------------------------------------------


async def dead_letter(event: Delivery, reason: str, *, what: str = "account event") -> None:
    """Park a message that cannot be handled, with its reason, and stop its redelivery.

    A failure to dead-letter is logged and the event nak'ed: it comes back and tries again.
    """
    if await event.dead_letter(
        reason, category=reason.split(":", 1)[0], nak_delay=EVENT_RETRY_DELAY_S
    ):
        log.error("%s sent to the dead-letter stream: %s", what, reason)


async def handle_account_event(app: web.Application, event: AccountEvent) -> None:
    if event.event == "deleted":
        return
    async with app[DB_POOL].acquire() as conn:
        acct = await read_account(conn, event.account_id)
    if acct is None or not event_wants_backfill(event, never_synced=acct.never_synced):
        return
    outcome = await triggers.trigger_sync(
        app[DB_POOL],
        app[NATS],
        app[SETTINGS],
        event.account_id,
        full=True,
        trigger="account_created",
        # The event is why a failed attempt is worth repeating (new credentials...).
        allow_retry=True,
    )
    if outcome.reply.error:
        log.info("account %s event: no backfill (%s)", event.event, outcome.reply.error)


async def handle_account_events(app: web.Application, batch: Sequence[Delivery]) -> None:
    """Handle a batch of account events in order; each one is settled, none raises."""
    for msg in batch:
        try:
            event = decode(AccountEvent, msg.data)
        except MessageDecodeError as exc:
            await dead_letter(msg, f"undecodable: {exc}")
            continue
        with log_context(account_id=event.account_id):
            try:
                await handle_account_event(app, event)
            except Exception as exc:
                if msg.deliveries >= topology.MAX_DELIVER:
                    await dead_letter(msg, f"failed: {exc!r}")
                else:
                    log.warning("account event not handled (%r); redelivered later", exc)
                    await msg.nak(EVENT_RETRY_DELAY_S)
                continue
        await msg.ack()


async def accounts_worker(app: web.Application, stopping: asyncio.Event) -> None:
    async def handle(batch: Sequence[Delivery]) -> None:
        await handle_account_events(app, batch)

    worker = PullWorker(
        app[JETSTREAM],
        topology.SCHEDULER_ACCOUNTS,
        handle,
        service=SERVICE,
        max_in_flight=EVENTS_BATCH,
        batch_max=EVENTS_BATCH,
        heartbeat_s=topology.heartbeat_interval(app[SETTINGS].jetstream_ack_wait_s),
        on_stop="finish",
        what="account events",
        logger=log,
    )
    await worker.run(stopping)


# --- start-up and the daily run -----------------------------------------------------------


async def reconcile_at_start(app: web.Application, stopping: asyncio.Event) -> None:
    """Re-publish queued jobs and backfill missed accounts; retried until it works."""

    async def reconcile() -> fanout.FanOutReport:
        await fanout.republish_queued(app[DB_POOL], app[NATS], app[SETTINGS])
        return await fanout.backfill_missed(app[DB_POOL], app[NATS], app[SETTINGS])

    def report_failure(exc: BaseException, delay: float) -> None:
        log.error("start-up reconciliation failed; retrying in %.0fs", delay, exc_info=exc)

    try:
        report = await retry_until(
            reconcile, base_s=1.0, cap_s=30, stop=stopping, on_retry=report_failure
        )
    except RetryStopped:
        return
    log.info(
        "start-up reconciliation done: %d backfill job(s) created",
        report.created,
        extra={"backfills_created": report.created},
    )


def next_fire(expr: str) -> dt.datetime:
    return next(CronSim(expr, dt.datetime.now(dt.UTC)))


class RunIncomplete(Exception):
    """The daily run created its jobs but some requests are not published yet."""


async def daily_run(app: web.Application) -> None:
    """The day's fan-out, once; raises if it failed or is incomplete (retried, resumed)."""
    settings = app[SETTINGS]
    started = time.monotonic()
    report = await fanout.run_daily(
        app[DB_POOL], app[NATS], settings, leader=settings.scheduler_name
    )
    if report is None:
        log.info("the daily run of %s is already done", settings.today())
        return
    log.info(
        "scheduled run done: %d account(s), %d job(s) created, %d request(s) published, "
        "%d already published, %d failed, in %.2fs (leader %s)",
        report.planned,
        report.created,
        report.publish.published,
        report.publish.duplicates,
        len(report.publish.failed),
        time.monotonic() - started,
        settings.scheduler_name,
        extra={
            "accounts": report.planned,
            "jobs_created": report.created,
            "published": report.publish.published,
            "duplicates": report.publish.duplicates,
            "publish_failed": len(report.publish.failed),
            "leader": settings.scheduler_name,
        },
    )
    if report.publish.failed:
        raise RunIncomplete(f"{len(report.publish.failed)} sync request(s) not published")


def not_due_because(
    settings: SchedulerSettings, today: dt.date, now: dt.datetime, run: DailyRun | None
) -> str:
    if run is not None:
        finished = run.finished_at.isoformat() if run.finished_at else "?"
        return f"the daily run of {today} is done (by {run.leader}, finished at {finished})"
    due_at = todays_run_time(settings.schedule_cron, now)
    if due_at is not None:
        return f"the daily run of {today} is due at {due_at:%H:%M:%S} UTC"
    return f"no daily run today: {settings.schedule_cron!r} does not fire on {now:%Y-%m-%d}"


async def run_if_due(app: web.Application, *, report_state: bool = False) -> None:
    """Run (or resume) today's fan-out if it is due now: see :func:`plan.run_is_due`.

    ``report_state``: when nothing is due, say why (once, on taking the lead).
    """
    settings = app[SETTINGS]
    now = dt.datetime.now(dt.UTC)
    today = settings.today()
    async with app[DB_POOL].acquire() as conn:
        run = await store.daily_run(conn, today)
    due_at = todays_run_time(settings.schedule_cron, now)
    if not run_is_due(settings.schedule_cron, now, run):
        if report_state:
            log.info("%s", not_due_because(settings, today, now, run))
        return
    if run is None and due_at is not None and now - due_at > CATCH_UP_AFTER:
        log.info(
            "catching up: the daily run of %s was due at %s UTC and has not happened; "
            "running it now",
            today,
            due_at.strftime("%H:%M:%S"),
            extra={"scrape_day": today.isoformat()},
        )
    await daily_run(app)


async def run_daily_runs(app: web.Application, stopping: asyncio.Event) -> None:
    """The leader's loop: run the day when it is due, then sleep to the next fire."""
    settings = app[SETTINGS]

    first = True

    async def attempt() -> None:
        nonlocal first
        await run_if_due(app, report_state=first)
        first = False

    def report_failure(exc: BaseException, delay: float) -> None:
        log.error("scheduled run failed or is incomplete; resumed in %.0fs", delay, exc_info=exc)

    while not stopping.is_set():
        try:
            await retry_until(
                attempt,
                base_s=RUN_RETRY_BASE_S,
                cap_s=RUN_RETRY_CAP_S,
                stop=stopping,
                on_retry=report_failure,
            )
        except RetryStopped:
            return
        delay = seconds_to_next_fire(
            settings.schedule_cron, dt.datetime.now(dt.UTC), cap_s=LOOK_AGAIN_S
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=delay)


async def lead(app: web.Application, conn: asyncpg.Connection, stopping: asyncio.Event) -> None:
    """Run the daily runs, retention (``retention.py``) and the account gauges
    (``health_gauges.py``) while this scheduler holds the lead (``conn``'s lock)."""
    settings = app[SETTINGS]
    runs = asyncio.create_task(run_daily_runs(app, stopping), name="daily-runs")
    watch = asyncio.create_task(leader.watch_lead(conn, settings, stopping), name="lead-watch")
    expire = asyncio.create_task(
        retention.run_retention(app[DB_POOL], settings, stopping), name="retention"
    )
    gauges = asyncio.create_task(
        health_gauges.run_health_gauges(app[DB_POOL], stopping), name="account-gauges"
    )
    try:
        await asyncio.wait({runs, watch}, return_when=asyncio.FIRST_COMPLETED)
        if runs.done():
            runs.result()  # it returns only once stopping is set; a bug propagates
            return
        if stopping.is_set():
            # Jobs inserted but not yet published stay queued, the run unfinished: the
            # next start re-publishes them, the next leader resumes the run.
            await asyncio.wait({runs}, timeout=settings.shutdown_timeout_s / 4)
        else:
            log.warning(
                "scheduler %s no longer leads; a run in progress stops here and the next "
                "leader resumes it",
                settings.scheduler_name,
            )
    finally:
        for task in (runs, watch, expire, gauges):
            task.cancel()
        await asyncio.gather(runs, watch, expire, gauges, return_exceptions=True)


async def schedule_worker(app: web.Application, stopping: asyncio.Event) -> None:
    """Start-up reconciliation on every replica; then the daily run, by the leader only."""
    settings = app[SETTINGS]
    await reconcile_at_start(app, stopping)
    if stopping.is_set():
        return
    log.info(
        "schedule %r (UTC); next run at %s",
        settings.schedule_cron,
        next_fire(settings.schedule_cron).isoformat(),
    )
    while not stopping.is_set():
        try:
            conn = await leader.take_lead(settings, stopping)
        except RetryStopped:
            return
        try:
            log.info(
                "scheduler %s leads the daily run",
                settings.scheduler_name,
                extra={"leader": settings.scheduler_name},
            )
            await lead(app, conn, stopping)
        finally:
            await leader.release(conn)


# --- the service --------------------------------------------------------------------------


def create_app(settings: SchedulerSettings) -> web.Application:
    app = service_app(SERVICE, shutdown_timeout_s=settings.shutdown_timeout_s)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(nats_context(settings))
    app.cleanup_ctx.append(db_context(settings))
    app.cleanup_ctx.append(worker_context("triggers", trigger_worker))
    app.cleanup_ctx.append(worker_context("accounts", accounts_worker))
    app.cleanup_ctx.append(worker_context("schedule", schedule_worker))
    return app


def cheap_log_records() -> None:
    """Skip what JsonFormatter never prints (caller frame, thread, process names).

    A daily run logs one line per job, 100,000 for as many accounts; looking up the
    caller's frame for each was a fifth of the cost (see the Logging HOWTO,
    "Optimization"). This process only: nothing else reads those fields.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


# Objects allocated between two young collections of the cyclic garbage collector
# (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def fewer_gc_passes() -> None:
    """Let the cyclic garbage collector run about 70 times less often.

    A daily run keeps tens of thousands of plans alive at once (a page being planned,
    one being inserted, up to 20,000 awaiting their ack), and at CPython's default
    every 700 allocations the collector walked them again, its older generations over
    and over: a fifth of planning's time (py-spy charged it to whatever line allocated,
    mostly the job id's), 1 % at this threshold (benchmarks/RESULTS.md, issue 17 item
    3). Memory is freed by reference counting as before; only garbage in cycles, which
    this process makes little of, waits longer. This process only.
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def main(args: argparse.Namespace) -> int:
    settings = load_settings(SchedulerSettings, SERVICE)
    setup_logging(SERVICE, settings.log_level)
    cheap_log_records()
    fewer_gc_passes()
    return serve(create_app(settings), settings.http_host, settings.http_port)
