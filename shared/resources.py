"""A service's resources as aiohttp ``cleanup_ctx`` contexts: NATS (and JetStream,
provisioned), the asyncpg pool, and background workers. Each waits for its dependency
at start (``shared.backoff.retry_until``, until a stop signal), registers a readiness
check, and closes within the shutdown budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import nats
from aiohttp import web
from nats.aio.client import Client as NatsClient

from shared import topology
from shared.backoff import RetryStopped, retry_until
from shared.db import ConnectionInit, create_pool
from shared.runtime import DB_POOL, JETSTREAM, NATS, RUNTIME, RuntimeState, StoppedDuringStartup
from shared.settings import DatabaseSettings, NatsSettings

log = logging.getLogger("sync_airbnb.runtime")

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
T = TypeVar("T")
# An async def (a coroutine function): worker_context runs it as a task.
Worker = Callable[[web.Application, asyncio.Event], Coroutine[Any, Any, None]]


async def _retry_until_stopped(
    state: RuntimeState,
    what: str,
    attempt: Callable[[], Awaitable[T]],
    attempt_timeout: float = 5.0,
) -> T:
    """Try ``attempt`` until it succeeds, backing off, and give up only on a stop signal."""

    def report(exc: BaseException, delay: float) -> None:
        reason = str(exc) or type(exc).__name__
        log.warning("%s unavailable (%s); retrying in %.1fs", what, reason, delay)

    try:
        return await retry_until(
            attempt,
            base_s=0.5,
            cap_s=10,
            stop=state.stopping,
            interrupt_attempt=True,
            attempt_timeout_s=attempt_timeout,
            on_retry=report,
        )
    except RetryStopped:
        raise StoppedDuringStartup(f"stopped while waiting for {what}") from None


def nats_context(settings: NatsSettings, *, provision: bool = True) -> CleanupCtx:
    servers = settings.nats_servers

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        state = app[RUNTIME]

        connected = False

        async def on_error(exc: Exception) -> None:
            # Before the first connection the retry loop reports; nats-py would repeat it.
            if connected:
                log.warning("NATS error: %s", exc)

        async def on_disconnect() -> None:
            if not state.stopping.is_set():
                log.warning("NATS disconnected; reconnecting")

        async def on_reconnect() -> None:
            log.info("NATS reconnected")

        async def connect() -> NatsClient:
            return await nats.connect(
                servers,
                name=f"sync-airbnb-{state.service}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=3,
                pending_size=settings.nats_reconnect_buffer_bytes,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )

        nc = await _retry_until_stopped(state, "NATS", connect)
        connected = True
        js = nc.jetstream()
        if provision:
            await _retry_until_stopped(
                state,
                "JetStream",
                lambda: topology.provision(
                    js,
                    ack_wait_s=settings.jetstream_ack_wait_s,
                    replicas=settings.jetstream_replicas,
                ),
            )
        app[NATS] = nc
        app[JETSTREAM] = js

        async def nats_ready() -> bool:
            return nc.is_connected

        state.readiness["nats"] = nats_ready
        yield
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), timeout=state.shutdown_timeout_s / 2)
        if not nc.is_closed:
            # nats-py's close can raise while it is reconnecting (ConnectionResetError from
            # its transport); the process is on its way out either way.
            with contextlib.suppress(Exception):
                await nc.close()

    return ctx


def db_context(settings: DatabaseSettings, *, init: ConnectionInit | None = None) -> CleanupCtx:
    """The asyncpg pool as ``app[DB_POOL]``, sized and bounded in time by ``settings``;
    ``init`` adds a service's per-connection setup."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        state = app[RUNTIME]
        pool = await _retry_until_stopped(
            state,
            "PostgreSQL",
            lambda: create_pool(
                settings.database_url,
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
                init=init,
                statement_timeout_s=settings.db_statement_timeout_s,
                acquire_timeout_s=settings.db_acquire_timeout_s,
            ),
        )
        app[DB_POOL] = pool

        async def db_ready() -> bool:
            async with pool.acquire(timeout=2) as conn:
                return bool(await conn.fetchval("SELECT 1"))

        state.readiness["postgres"] = db_ready
        yield
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), timeout=state.shutdown_timeout_s / 2)
        pool.terminate()

    return ctx


def worker_context(name: str, worker: Worker) -> CleanupCtx:
    """Run ``worker(app, stopping)`` in the background for the life of the app.

    On shutdown ``stopping`` is set and the worker gets the shutdown budget to
    finish or nak what it holds; after that it is cancelled. A worker that dies
    on its own takes the process down (exit code 1), so a supervisor restarts it.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        state = app[RUNTIME]
        stopping = asyncio.Event()
        task = asyncio.create_task(worker(app, stopping), name=name)

        def on_done(t: asyncio.Task[None]) -> None:
            if t.cancelled() or stopping.is_set():
                return
            exc = t.exception()
            log.error("worker %s ended unexpectedly: %r", name, exc, exc_info=exc)
            state.failed = True
            state.stopping.set()

        task.add_done_callback(on_done)
        yield
        stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=state.shutdown_timeout_s / 2)
        except TimeoutError:
            log.warning("worker %s did not stop in time; cancelling", name)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except Exception:
            pass  # already logged by on_done

    return ctx
