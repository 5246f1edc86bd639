"""The one scheduler that runs the daily fan-out: the holder of a PostgreSQL advisory lock.

The lock is session-level (``pg_try_advisory_lock``) and held on a connection of its
own, outside the pool, for as long as this replica leads. It was chosen over a NATS KV
lease because it is simpler to make correct here:

* it ends with its session: a leader killed outright (kill -9, OOM) closes its socket
  and PostgreSQL frees the lock at once, so a standby leads at its next try (a third
  of ``SCHEDULER_LEASE_S``), with no lease to expire and no renewal to race;
* a leader that is alive but silent (hung, cut off from PostgreSQL) loses it too:
  ``idle_session_timeout`` ends its session after ``SCHEDULER_LEASE_S``, which is the
  lease, and the leader itself gives up as soon as its check of the lock fails;
* the fan-out writes every job to the same PostgreSQL: a leader that cannot reach it
  could not run the day anyway, and one that can always knows whether it leads.

(It needs a session that stays one server session: PgBouncer in transaction mode
would break it; a direct connection or session pooling is what it takes.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from services.scheduler import store
from services.scheduler.settings import SchedulerSettings
from shared.backoff import retry_until

log = logging.getLogger("sync_airbnb.scheduler")

APP_NAME_PREFIX = "sync-airbnb scheduler "
# PostgreSQL keeps the first NAMEDATALEN-1 bytes of application_name.
_APP_NAME_MAX = 63
# idle_session_timeout exists from PostgreSQL 14 on; older servers rely on TCP alone.
_IDLE_TIMEOUT_SINCE = (14,)
_UNSEEN = object()


class NotLeading(Exception):
    """Another scheduler holds the lead (its name, when PostgreSQL shows it)."""

    def __init__(self, holder: str | None) -> None:
        super().__init__(holder or "another scheduler")
        self.holder = holder


def application_name(scheduler_name: str) -> str:
    return (APP_NAME_PREFIX + scheduler_name)[:_APP_NAME_MAX]


def holder_name(app_name: str | None) -> str | None:
    """The scheduler name inside a lock holder's application_name."""
    if app_name and app_name.startswith(APP_NAME_PREFIX):
        return app_name[len(APP_NAME_PREFIX) :]
    return app_name


def check_interval_s(settings: SchedulerSettings) -> float:
    return settings.scheduler_lease_s / 3


async def _connect(settings: SchedulerSettings) -> asyncpg.Connection:
    conn = await asyncpg.connect(
        settings.database_url,
        server_settings={"application_name": application_name(settings.scheduler_name)},
        timeout=settings.scheduler_lease_s,
    )
    try:
        if conn.get_server_version()[:1] >= _IDLE_TIMEOUT_SINCE:
            await store.end_silent_session_after(conn, settings.scheduler_lease_s)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def take_lead(settings: SchedulerSettings, stopping: asyncio.Event) -> asyncpg.Connection:
    """Wait until this scheduler leads; returns the connection that holds the lock.

    Tried every third of the lease until it works or ``stopping`` is set
    (:class:`shared.backoff.RetryStopped`). Standing by is logged once per leader seen.
    """
    conn: asyncpg.Connection | None = None
    last_seen: object = _UNSEEN

    async def attempt() -> asyncpg.Connection:
        nonlocal conn
        try:
            if conn is None or conn.is_closed():
                conn = await _connect(settings)
            if await store.try_lead(conn):
                return conn
            holder = holder_name(await store.lead_holder(conn))
        except BaseException as exc:
            if not isinstance(exc, NotLeading) and conn is not None:
                conn.terminate()
                conn = None
            raise
        raise NotLeading(holder)

    def report(exc: BaseException, delay: float) -> None:
        nonlocal last_seen
        if isinstance(exc, NotLeading):
            if exc.holder != last_seen:
                log.info(
                    "scheduler %s stands by: %s leads the daily run",
                    settings.scheduler_name,
                    exc.holder or "another scheduler",
                    extra={"leader": exc.holder},
                )
                last_seen = exc.holder
            return
        log.warning("could not try for the lead of the daily run (%r); again in %.1fs", exc, delay)

    every = check_interval_s(settings)
    try:
        return await retry_until(
            attempt,
            base_s=every,
            cap_s=every,
            stop=stopping,
            interrupt_attempt=True,
            attempt_timeout_s=settings.scheduler_lease_s,
            on_retry=report,
        )
    except BaseException:
        if conn is not None:
            conn.terminate()
        raise


async def watch_lead(
    conn: asyncpg.Connection, settings: SchedulerSettings, stopping: asyncio.Event
) -> bool:
    """Check every third of the lease that ``conn`` still holds the lock.

    Returns True when ``stopping`` is set, False as soon as the lead is lost (the
    session ended, PostgreSQL unreachable, the lock gone).
    """
    every = check_interval_s(settings)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=every)
        if stopping.is_set():
            return True
        try:
            held = await asyncio.wait_for(store.holds_lead(conn), timeout=every)
        except Exception as exc:
            log.warning("scheduler %s lost the lead: %r", settings.scheduler_name, exc)
            return False
        if not held:
            log.warning("scheduler %s lost the lead: its lock is gone", settings.scheduler_name)
            return False


async def release(conn: asyncpg.Connection) -> None:
    """Close the lock's session, which frees the lock (a standby leads at its next try)."""
    try:
        await asyncio.wait_for(conn.close(), timeout=2)
    except Exception:
        conn.terminate()
