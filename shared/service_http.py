"""Every service's HTTP side: the app factory, JSON responses, the last-resort error
middleware, and the operational routes ``/health``, ``/health/ready`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

# Imported for its side effect: every project metric is registered, so /metrics lists
# them all (at zero) in every process.
import shared.metrics  # noqa: F401
from shared.runtime import RUNTIME, RuntimeState

log = logging.getLogger("sync_airbnb.runtime")


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
    resp = json_response(body, status=200 if healthy else 503)
    if not healthy:
        resp.headers["Retry-After"] = "5"  # like every 503: ask again later, not at once
    return resp


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
