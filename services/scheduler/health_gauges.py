"""The leader's account gauges: how many accounts need new credentials, and how many
schedulable ones have gone 36 h without a sync (the alert rules in
deploy/prometheus/alerts.yml read them).

The leader counts, not every scheduler: one process exports the figures, so an alert
on them neither doubles nor disagrees with itself. A scheduler that stops leading sets
both to 0, leaving the figures to the new leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import asyncpg

from services.scheduler import store
from shared.metrics import ACCOUNTS_NEEDING_CREDENTIALS, ACCOUNTS_STALE

log = logging.getLogger("sync_airbnb.scheduler")

STALE_AFTER = dt.timedelta(hours=36)
INTERVAL_S = 60.0


async def update(pool: asyncpg.Pool, now: dt.datetime) -> tuple[int, int]:
    """Count once and set the gauges; (needing credentials, stale)."""
    async with pool.acquire() as conn:
        needing, stale = await store.account_health(conn, now - STALE_AFTER)
    ACCOUNTS_NEEDING_CREDENTIALS.set(needing)
    ACCOUNTS_STALE.set(stale)
    return needing, stale


async def run_health_gauges(
    pool: asyncpg.Pool, stopping: asyncio.Event, *, interval_s: float = INTERVAL_S
) -> None:
    """Count every ``interval_s`` until ``stopping`` (or cancellation, at the end of the
    lead); a failed count keeps the last figures and is tried next time."""
    try:
        while not stopping.is_set():
            try:
                await update(pool, dt.datetime.now(dt.UTC))
            except Exception as exc:
                log.warning("account gauges not updated (%r); again in %.0fs", exc, interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval_s)
    finally:
        ACCOUNTS_NEEDING_CREDENTIALS.set(0)
        ACCOUNTS_STALE.set(0)
