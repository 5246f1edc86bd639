"""The service runtime every process uses.

A service is an aiohttp application: its resources (NATS, the asyncpg pool, its
background workers) are ``cleanup_ctx`` contexts, and it always serves
``/health``, ``/health/ready`` and ``/metrics``. :func:`serve` runs it until
SIGTERM or SIGINT, then shuts down in reverse order of start: workers stop
taking work and finish or nak what is in flight, the pool closes, NATS drains,
all within ``SHUTDOWN_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import nats
import orjson
from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

# Imported for its side effect: every project metric is registered, so /metrics lists
# them all (at zero) in every process.
import shared.metrics  # noqa: F401
from shared import topology
from shared.backoff import RetryStopped, retry_until
from shared.db import ConnectionInit, create_pool
from shared.settings import NatsSettings

log = logging.getLogger("sync_airbnb.runtime")

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
T = TypeVar("T")
# An async def (a coroutine function): worker_context runs it as a task.
Worker = Callable[[web.Application, asyncio.Event], Coroutine[Any, Any, None]]


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


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


# --- health, readiness, metrics -----------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "service": request.app[RUNTIME].service})


async def ready(request: web.Request) -> web.Response:
    checks = request.app[RUNTIME].readiness
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            ok = await asyncio.wait_for(check(), timeout=2)
        except Exception:
            ok = False
        results[name] = "ok" if ok else "down"
    healthy = all(v == "ok" for v in results.values())
    body = {"status": "ready" if healthy else "not ready", "checks": results}
    return json_response(body, status=200 if healthy else 503)


async def metrics(_: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def add_operational_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """No stack trace ever leaves the process: unexpected errors become a JSON 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_response(
            {"error": "internal_error", "detail": "unexpected error; see the service log"},
            status=500,
        )


# --- resources as cleanup contexts --------------------------------------------------------


class StoppedDuringStartup(Exception):
    """SIGTERM/SIGINT arrived while a dependency was still being waited for."""


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
    url = settings.nats_url

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
                url,
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
                lambda: topology.provision(js, ack_wait_s=settings.jetstream_ack_wait_s),
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


def db_context(
    url: str, *, min_size: int = 1, max_size: int = 10, init: ConnectionInit | None = None
) -> CleanupCtx:
    """The asyncpg pool as ``app[DB_POOL]``; ``init`` adds a service's per-connection setup."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        state = app[RUNTIME]
        pool = await _retry_until_stopped(
            state,
            "PostgreSQL",
            lambda: create_pool(url, min_size=min_size, max_size=max_size, init=init),
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


def service_app(
    service: str,
    *,
    shutdown_timeout_s: float,
    middlewares: tuple = (),
    client_max_size: int = 1024**2,
) -> web.Application:
    # client_max_size: aiohttp refuses (413) a request body larger than this while reading
    # it, chunked or not; 1 MiB is aiohttp's own default.
    app = web.Application(
        middlewares=[error_middleware, *middlewares], client_max_size=client_max_size
    )
    app[RUNTIME] = RuntimeState(service=service, shutdown_timeout_s=shutdown_timeout_s)
    add_operational_routes(app)
    return app


# --- the process --------------------------------------------------------------------------


def serve(app: web.Application, host: str, port: int) -> int:
    """Run the app until SIGTERM/SIGINT; return the process exit code."""
    return asyncio.run(_serve(app, host, port))


async def _serve(app: web.Application, host: str, port: int) -> int:
    state = app[RUNTIME]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, state.stopping.set)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=state.shutdown_timeout_s)
    setup = asyncio.create_task(runner.setup())
    stop_wait = asyncio.create_task(state.stopping.wait())
    await asyncio.wait({setup, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if not setup.done():
        # Stopped while still starting: the start-up loops watch `stopping` and give up.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(setup, timeout=state.shutdown_timeout_s / 2)
        await runner.cleanup()
        log.info("%s stopped during start-up", state.service)
        return 0
    try:
        setup.result()
    except StoppedDuringStartup:
        await runner.cleanup()
        log.info("%s stopped during start-up", state.service)
        return 0
    except Exception as exc:
        log.error("%s failed to start: %s", state.service, exc)
        stop_wait.cancel()
        await runner.cleanup()
        return 1
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        log.error("%s cannot listen on %s:%s: %s", state.service, host, port, exc.strerror)
        stop_wait.cancel()
        await runner.cleanup()
        return 1
    bound = runner.addresses[0] if runner.addresses else (host, port)
    log.info(
        "%s ready, listening on http://%s:%s",
        state.service,
        bound[0],
        bound[1],
        extra={"port": bound[1]},
    )
    await stop_wait
    log.info("%s stopping", state.service)
    try:
        await asyncio.wait_for(runner.cleanup(), timeout=state.shutdown_timeout_s)
    except TimeoutError:
        log.error("%s shutdown exceeded %.0fs", state.service, state.shutdown_timeout_s)
        return 1
    log.info("%s stopped", state.service)
    return 1 if state.failed else 0
