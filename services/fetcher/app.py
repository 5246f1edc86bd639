"""``sync-airbnb fetcher``: one replica of the stateless Airbnb fetcher (docs/data-path.md).

One background worker pulls ``SyncRequest``\\ s from the durable ``fetcher`` consumer,
never more than it has free slots (``FETCHER_CONCURRENCY``), so any number of
replicas share the queue and each account is synced by one of them at a time.
Each request runs as its own task (:mod:`services.fetcher.sync`) while a heartbeat
sends in-progress acks; the request is then acked, nak'ed with backoff, or, once
``MAX_DELIVER`` deliveries have failed, reported (``JobEvent(failed)``), sent to the
dead letters and termed.

A second worker answers the admin's credential checks (``airbnb.credentials.check``, core
request/reply in the queue group ``fetchers``; services/fetcher/credential_check.py) beside
the syncs, with slots of its own (``FETCHER_CHECK_CONCURRENCY``).

On SIGTERM the worker stops pulling, cancels the syncs in flight and naks their
requests without delay: another replica picks them up at once, and the KV progress
keys spare it every listing that was already published.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

from aiohttp import web

from services.fetcher import pipeline
from services.fetcher.credential_check import serve_checks
from services.fetcher.settings import FetcherSettings
from services.fetcher.sync import (
    PUBLISH_SLOTS,
    PermanentSyncError,
    SyncDeps,
    now,
    publish_job_event,
    run_sync,
)
from shared import topology
from shared.backoff import capped_backoff
from shared.crypto import CredentialCipher
from shared.dead_letters import send_to_dead_letters
from shared.jetstream import Delivery, PullWorker, describe_error
from shared.logs import log_context, setup_logging
from shared.messages import JobEvent, MessageDecodeError, SyncRequest, decode
from shared.metrics import SYNCS_IN_FLIGHT
from shared.resources import nats_context, worker_context
from shared.runtime import JETSTREAM, NATS, serve
from shared.service_http import service_app
from shared.settings import load_settings

log = logging.getLogger("sync_airbnb.fetcher")

SERVICE = "fetcher"
SETTINGS = web.AppKey("settings", FetcherSettings)
# How long one pull waits for requests; also the longest a stop waits for a pull to end.
FETCH_WAIT_S = 1.0
# NATS counts the Nats-Msg-Id header against max_payload too.
HEADER_ROOM_BYTES = 4 * 1024


def chunk_limit(setting: int, max_payload: int) -> int:
    """The RowBatch size limit: the setting, or less if the server's max_payload is smaller."""
    return max(1024, min(setting, max_payload - HEADER_ROOM_BYTES))


async def give_up(deps: SyncDeps, flight: Delivery, req: SyncRequest, reason: str) -> None:
    """Report a sync that will never succeed: JobEvent(failed), a dead letter, term."""
    reason = pipeline.clip_reason(reason)
    log.error("sync failed for good: %s", reason)
    flight.settled = True
    try:
        await publish_job_event(
            deps.js,
            JobEvent(
                job_id=req.job_id,
                account_id=req.account_id,
                event="failed",
                reason=reason,
                at=now(),
            ),
        )
        await send_to_dead_letters(deps.js, SERVICE, flight.msg, reason, category="sync_failed")
    except Exception as exc:
        log.error("could not report the failed sync: %s", describe_error(exc))
        # Not lost: the next delivery fails again and tries to report it again. After the
        # last one JetStream offers it no more, and the nak (not a term) keeps it in the
        # work queue, where an operator still finds it.
        await flight.nak(redelivery_delay(deps.settings, flight.deliveries))


def redelivery_delay(settings: FetcherSettings, deliveries: int) -> float:
    """Seconds before a failed sync is offered again: the one curve, in its deliveries."""
    return capped_backoff(deliveries, settings.fetcher_retry_base_s, settings.fetcher_retry_cap_s)


async def process(deps: SyncDeps, flight: Delivery, req: SyncRequest) -> None:
    deliveries = flight.deliveries
    log.info(
        "sync started",
        extra={
            "delivery": deliveries,
            "kind": req.kind,
            "scrape_day": req.scrape_day.isoformat(),
            "window": f"{req.window_start}..{req.window_end}",
        },
    )
    try:
        outcome = await run_sync(deps, req)
    except PermanentSyncError as exc:
        await give_up(deps, flight, req, str(exc))
        return
    except Exception as exc:  # a transient failure of the whole sync
        reason = describe_error(exc)
        if deliveries >= topology.MAX_DELIVER:
            await give_up(deps, flight, req, f"gave up after {deliveries} deliveries: {reason}")
            return
        delay = redelivery_delay(deps.settings, deliveries)
        log.warning(
            "sync failed (delivery %d of %d); offered again in %.1fs: %s",
            deliveries,
            topology.MAX_DELIVER,
            delay,
            reason,
        )
        await flight.nak(delay)
        return
    await flight.ack()
    log.info("sync request done: %s", outcome, extra={"outcome": outcome})


async def handle(deps: SyncDeps, flight: Delivery) -> None:
    """One sync request, start to settle (the worker sends its heartbeats)."""
    try:
        req = decode(SyncRequest, flight.msg.data)
    except MessageDecodeError as exc:
        await flight.dead_letter(
            f"undecodable SyncRequest: {exc}",
            category="undecodable",
            nak_delay=deps.settings.fetcher_retry_base_s,
        )
        return
    with log_context(job_id=str(req.job_id), account_id=req.account_id):
        SYNCS_IN_FLIGHT.inc()
        try:
            await process(deps, flight, req)
        finally:
            SYNCS_IN_FLIGHT.dec()


async def fetch_worker(app: web.Application, stopping: asyncio.Event) -> None:
    settings = app[SETTINGS]
    nc = app[NATS]
    js = app[JETSTREAM]
    deps = SyncDeps(
        js=js,
        kv=await js.key_value(topology.FETCH_PROGRESS_BUCKET.bucket),
        cipher=CredentialCipher(settings.secret_keys),
        settings=settings,
        chunk_max_bytes=chunk_limit(settings.fetcher_chunk_max_bytes, nc.max_payload),
        publish_slots=asyncio.Semaphore(PUBLISH_SLOTS),
    )

    async def handle_one(batch: Sequence[Delivery]) -> None:
        (flight,) = batch
        await handle(deps, flight)

    worker = PullWorker(
        js,
        topology.FETCHER_REQUESTS,
        handle_one,
        service=SERVICE,
        max_in_flight=settings.fetcher_concurrency,
        # Never slower than ack_wait allows, whatever FETCHER_HEARTBEAT_S says.
        heartbeat_s=min(
            settings.fetcher_heartbeat_s,
            topology.heartbeat_interval(settings.jetstream_ack_wait_s),
        ),
        # SIGTERM: cancel the syncs and nak their requests at once; another replica
        # resumes them, skipping the listings already published (the KV keys).
        on_stop="cancel",
        fetch_wait_s=FETCH_WAIT_S,
        what="sync requests",
        logger=log,
    )
    await worker.bind()
    log.info(
        "pulling sync requests (up to %d at once, chunks <= %d bytes)",
        settings.fetcher_concurrency,
        deps.chunk_max_bytes,
    )
    await worker.run(stopping)


async def check_worker(app: web.Application, stopping: asyncio.Event) -> None:
    """Answer credential checks (services/fetcher/credential_check.py) for the app's life."""
    settings = app[SETTINGS]
    await serve_checks(app[NATS], settings, CredentialCipher(settings.secret_keys), stopping)


def create_app(settings: FetcherSettings) -> web.Application:
    app = service_app(SERVICE, shutdown_timeout_s=settings.shutdown_timeout_s)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(nats_context(settings))
    app.cleanup_ctx.append(worker_context("fetch-requests", fetch_worker))
    app.cleanup_ctx.append(worker_context("credential-checks", check_worker))
    return app


def main(args: argparse.Namespace) -> int:
    settings = load_settings(FetcherSettings, SERVICE)
    setup_logging(SERVICE, settings.log_level)
    return serve(create_app(settings), settings.http_host, settings.http_port)
