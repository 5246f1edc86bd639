"""The service runtime every process uses: its state and typed app keys, and the serve
loop.

A service is an aiohttp application (``shared/service_http.py`` builds it): its
resources (NATS, the asyncpg pool, its background workers) are ``cleanup_ctx``
contexts (``shared/resources.py``). :func:`serve` runs it until SIGTERM or SIGINT,
then shuts down in reverse order of start: workers stop taking work and finish or nak
what is in flight, the pool closes, NATS drains, all within ``SHUTDOWN_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from shared.http_protocol import JsonErrorRunner

log = logging.getLogger("sync_airbnb.runtime")


@dataclass
class RuntimeState:
    service: str
    shutdown_timeout_s: float
    # Set by SIGTERM/SIGINT; start-up loops (waiting for NATS or PostgreSQL) watch it too.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    failed: bool = False
    readiness: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)


RUNTIME = web.AppKey("runtime", RuntimeState)
NATS = web.AppKey("nats", NatsClient)
JETSTREAM = web.AppKey("jetstream", JetStreamContext)
DB_POOL = web.AppKey("db_pool", asyncpg.Pool)


class StoppedDuringStartup(Exception):
    """SIGTERM/SIGINT arrived while a dependency was still being waited for."""


def serve(app: web.Application, host: str, port: int) -> int:
    """Run the app until SIGTERM/SIGINT; return the process exit code."""
    return asyncio.run(_serve(app, host, port))


async def _serve(app: web.Application, host: str, port: int) -> int:
    state = app[RUNTIME]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, state.stopping.set)
    runner = JsonErrorRunner(app, handle_signals=False, shutdown_timeout=state.shutdown_timeout_s)
    not_served = await _start(runner, state, host, port)
    if not_served is not None:
        await runner.cleanup()
        return not_served
    await state.stopping.wait()
    log.info("%s stopping", state.service)
    try:
        await asyncio.wait_for(runner.cleanup(), timeout=state.shutdown_timeout_s)
    except TimeoutError:
        log.error("%s shutdown exceeded %.0fs", state.service, state.shutdown_timeout_s)
        return 1
    log.info("%s stopped", state.service)
    return 1 if state.failed else 0


async def _start(runner: web.AppRunner, state: RuntimeState, host: str, port: int) -> int | None:
    """Set the app up and listen: None once it serves, else the exit code it ends with
    (0: stopped during start-up, 1: it could not start)."""
    setup = asyncio.create_task(runner.setup())
    stop_wait = asyncio.create_task(state.stopping.wait())
    try:
        await asyncio.wait({setup, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not setup.done():
            # Stopped while still starting: the start-up loops watch `stopping` and give up.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(setup, timeout=state.shutdown_timeout_s / 2)
            log.info("%s stopped during start-up", state.service)
            return 0
        try:
            setup.result()
        except StoppedDuringStartup:
            log.info("%s stopped during start-up", state.service)
            return 0
        except Exception as exc:
            log.error("%s failed to start: %s", state.service, exc)
            return 1
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            log.error("%s cannot listen on %s:%s: %s", state.service, host, port, exc.strerror)
            return 1
    finally:
        stop_wait.cancel()
    bound = runner.addresses[0] if runner.addresses else (host, port)
    log.info(
        "%s ready, listening on http://%s:%s",
        state.service,
        bound[0],
        bound[1],
        extra={"port": bound[1]},
    )
    return None
