"""Retention: the leader deletes what has aged out, in small batches, every hour or so.

The bookkeeping (``sync_jobs`` with ``sync_job_listings``, the ledger
``sync_committed_chunks``) is only ever inserted into by the writer and the scheduler;
on plain PostgreSQL the metrics are too, where TimescaleDB's retention policy would
drop their old chunks. The scheduler's leader does it, not the writer: there is one
leader at a time (writers are many, with no lead among them), it already holds a
session of its own, and a pass that fails or is cut short by a change of leader is
simply done again by the next one. Each DELETE takes at most ``RETENTION_BATCH_SIZE``
rows in its own transaction, so no lock is held for long and the writer's COPY never
waits on more than one batch.

What goes and when is :func:`services.scheduler.plan.retention_plan`; the SQL is in
``store.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import asyncpg

from services.scheduler import plan, store
from services.scheduler.settings import SchedulerSettings
from shared.metric_tables import METRIC_TABLES

log = logging.getLogger("sync_airbnb.scheduler")


async def run_pass(
    pool: asyncpg.Pool,
    settings: SchedulerSettings,
    now: dt.datetime,
    *,
    with_metrics: bool,
    stopping: asyncio.Event | None = None,
) -> dict[str, tuple[int, int]]:
    """One pass: per table, (rows deleted, DELETE statements run)."""
    metrics: list[str] = []
    if with_metrics:
        async with pool.acquire() as conn:
            metrics = await store.plain_metric_tables(
                conn, [t.qualified_name for t in METRIC_TABLES.values()]
            )
    targets = plan.retention_plan(
        now,
        jobs_days=settings.retention_jobs_days,
        ledger_days=settings.retention_ledger_days,
        metrics_retention=settings.retention_metrics,
        batch=settings.retention_batch_size,
        metrics_tables=metrics,
    )
    report: dict[str, tuple[int, int]] = {}
    for target in targets:
        deleted = statements = 0
        while stopping is None or not stopping.is_set():
            async with pool.acquire() as conn:
                n = await store.delete_expired(conn, target)
            deleted += n
            statements += 1
            if n < target.batch:
                break
        report[target.table] = (deleted, statements)
    return report


async def run_retention(
    pool: asyncpg.Pool, settings: SchedulerSettings, stopping: asyncio.Event
) -> None:
    """The leader's retention loop, until ``stopping``; a failed pass is tried next time."""
    last_metrics: dt.datetime | None = None
    while not stopping.is_set():
        now = dt.datetime.now(dt.UTC)
        with_metrics = plan.metrics_pass_due(last_metrics, now)
        try:
            report = await run_pass(
                pool, settings, now, with_metrics=with_metrics, stopping=stopping
            )
        except Exception as exc:
            log.warning(
                "retention pass failed (%r); again in %.0fs", exc, settings.retention_interval_s
            )
        else:
            if with_metrics:
                last_metrics = now
            deleted = {table: n for table, (n, _) in report.items()}
            log.info(
                "retention pass: %s",
                ", ".join(f"{n} from {table}" for table, n in deleted.items()),
                extra={"retention_deleted": deleted},
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=settings.retention_interval_s)
