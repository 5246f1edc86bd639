"""``sync-airbnb scheduler``: when and which window (see docs/data-path.md, "Scheduler").

Three background workers share the process:

* ``triggers``: answers ``airbnb.sync.trigger`` requests (queue group ``scheduler``, so
  replicas share them); every request gets a reply, a job id or an error.
* ``accounts``: the durable ``scheduler-accounts`` consumer; an account that appears
  (created, restored, credentials changed, reactivated) gets its backfill at once.
* ``schedule``: at start, re-publishes jobs still queued and backfills accounts that
  never synced and have no job; then fans out the daily run at ``SCHEDULE_CRON`` (UTC).

Any number of schedulers may run at once: job rows are unique by dedup key and
requests carry it as ``Nats-Msg-Id``, so each account gets one job and one message
per scrape day and kind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Sequence

import aiocron
from aiohttp import web
from cronsim import CronSim
from nats.aio.msg import Msg

from services.scheduler import fanout, triggers
from services.scheduler.plan import event_wants_backfill
from services.scheduler.settings import SchedulerSettings
from services.scheduler.store import account as read_account
from shared import topology
from shared.backoff import RetryStopped, retry_until
from shared.jetstream import Delivery, PullWorker
from shared.logs import log_context, setup_logging
from shared.messages import (
    AccountEvent,
    MessageDecodeError,
    SyncTriggerReply,
    SyncTriggerRequest,
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
TRIGGER_QUEUE = "scheduler"
EVENTS_BATCH = 64
# Redelivery delay of an account event whose handling failed (PostgreSQL away...).
EVENT_RETRY_DELAY_S = 5.0


# --- manual triggers ----------------------------------------------------------------------


async def answer_trigger(app: web.Application, msg: Msg) -> SyncTriggerReply:
    """The reply to one ``SyncTriggerRequest``; never raises."""
    try:
        req = decode(SyncTriggerRequest, msg.data)
    except MessageDecodeError as exc:
        return SyncTriggerReply(error="invalid_request", detail=f"Malformed request: {exc}")
    with log_context(account_id=req.account_id):
        try:
            outcome = await triggers.trigger_sync(
                app[DB_POOL],
                app[NATS],
                app[SETTINGS],
                req.account_id,
                full=req.full,
                trigger="manual",
                allow_retry=True,
            )
        except Exception:
            log.exception("manual trigger failed")
            return SyncTriggerReply(
                error="internal",
                detail="The scheduler could not queue the sync now; try again shortly.",
            )
        if outcome.reply.error:
            log.info("manual trigger refused: %s", outcome.reply.error)
        return outcome.reply


async def trigger_worker(app: web.Application, stopping: asyncio.Event) -> None:
    nc = app[NATS]
    in_flight: set[asyncio.Task[None]] = set()

    async def handle(msg: Msg) -> None:
        reply = await answer_trigger(app, msg)
        if msg.reply:
            await msg.respond(encode(reply))

    async def on_request(msg: Msg) -> None:
        # One task per request: a slow one (a big account's INSERT) never holds up others.
        task = asyncio.create_task(handle(msg))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    sub = await nc.subscribe(topology.SYNC_TRIGGER, queue=TRIGGER_QUEUE, cb=on_request)
    log.info("answering %s (queue group %s)", topology.SYNC_TRIGGER, TRIGGER_QUEUE)
    await stopping.wait()
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    if in_flight:
        await asyncio.wait(in_flight, timeout=5)


# --- account events -----------------------------------------------------------------------


async def dead_letter(event: Delivery, reason: str) -> None:
    """Park a message that cannot be handled, with its reason, and stop its redelivery.

    A failure to dead-letter is logged and the event nak'ed: it comes back and tries again.
    """
    if await event.dead_letter(
        reason, category=reason.split(":", 1)[0], nak_delay=EVENT_RETRY_DELAY_S
    ):
        log.error("account event sent to the dead-letter stream: %s", reason)


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


async def daily_run(app: web.Application) -> None:
    started = time.monotonic()
    try:
        report = await fanout.run_daily(app[DB_POOL], app[NATS], app[SETTINGS])
    except Exception:
        log.exception("scheduled run failed; the next run (or a restart) catches up")
        return
    log.info(
        "scheduled run done: %d account(s), %d job(s) created, %d request(s) published, "
        "%d already published, %d failed, in %.2fs",
        report.planned,
        report.created,
        report.publish.published,
        report.publish.duplicates,
        len(report.publish.failed),
        time.monotonic() - started,
        extra={
            "accounts": report.planned,
            "jobs_created": report.created,
            "published": report.publish.published,
            "duplicates": report.publish.duplicates,
            "publish_failed": len(report.publish.failed),
        },
    )


def next_fire(expr: str) -> dt.datetime:
    return next(CronSim(expr, dt.datetime.now(dt.UTC)))


async def schedule_worker(app: web.Application, stopping: asyncio.Event) -> None:
    settings = app[SETTINGS]
    await reconcile_at_start(app, stopping)
    if stopping.is_set():
        return
    current: asyncio.Task[None] | None = None

    def fire() -> None:
        nonlocal current
        if current is not None and not current.done():
            # A fan-out that outlasts the interval: the next tick would only redo it.
            log.warning("scheduled run still in progress; this tick is skipped")
            return
        current = asyncio.create_task(daily_run(app), name="scheduled-run")

    cron = aiocron.crontab(settings.schedule_cron, func=fire, start=True, tz=dt.UTC)
    log.info(
        "schedule %r (UTC); next run at %s",
        settings.schedule_cron,
        next_fire(settings.schedule_cron).isoformat(),
    )
    try:
        await stopping.wait()
    finally:
        cron.stop()
        if current is not None and not current.done():
            # Jobs inserted but not yet published stay queued: the next start publishes them.
            await asyncio.wait({current}, timeout=app[SETTINGS].shutdown_timeout_s / 4)
            current.cancel()


# --- the service --------------------------------------------------------------------------


def create_app(settings: SchedulerSettings) -> web.Application:
    app = service_app(SERVICE, shutdown_timeout_s=settings.shutdown_timeout_s)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(nats_context(settings))
    app.cleanup_ctx.append(
        db_context(
            settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
        )
    )
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


def main(args: argparse.Namespace) -> int:
    settings = load_settings(SchedulerSettings, SERVICE)
    setup_logging(SERVICE, settings.log_level)
    cheap_log_records()
    return serve(create_app(settings), settings.http_host, settings.http_port)
