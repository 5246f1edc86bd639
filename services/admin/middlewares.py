"""Cross-cutting concerns of the admin API: errors as JSON, body size, CORS (API keys and
scopes: services/admin/auth.py).

Order (outermost first, after the runtime's own last-resort ``error_middleware``):
``cors_preflight`` → ``json_errors`` → ``auth.authenticate`` → ``body_limit`` → handler.
Preflight is answered before authentication (browsers send no custom header on
it); every error, including the auth middleware's, is rendered as JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

import asyncpg
from aiohttp import web
from nats.errors import ConnectionClosedError, NoServersError
from nats.errors import TimeoutError as NatsTimeoutError

from services.admin.errors import ApiError, unavailable
from services.admin.openapi import API_KEY_HEADER
from shared.service_http import json_response

log = logging.getLogger("sync_airbnb.admin.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

# What a database that cannot be reached, or that no longer answers, raises; answered
# 503, not 500. OSError covers the socket (FileNotFoundError on a unix socket whose server
# is stopped, ConnectionRefusedError on TCP) and TimeoutError, which is what the pool's
# acquire and command timeouts raise (shared.db.create_pool) on a hung server; class 57
# (operator intervention) covers a server shutting down and statement_timeout.
_DB_DOWN = (
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    OSError,
)
# NATS errors a handler left to the middleware; caught first, as nats' TimeoutError is
# also an OSError.
_NATS_DOWN = (ConnectionClosedError, NatsTimeoutError, NoServersError)


def _code(status: int) -> str:
    return {
        400: "bad_request",
        404: "not_found",
        405: "method_not_allowed",
        413: "body_too_large",
        415: "unsupported_media_type",
    }.get(status, f"http_{status}")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is an ErrorBody, and none carries a stack trace."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _render(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.reason
        if exc.status == 413:
            detail = "the request body is too large"
        resp = json_response({"error": _code(exc.status), "detail": detail}, exc.status)
        if "Allow" in exc.headers:  # 405 must say what is allowed
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except _NATS_DOWN:
        return _render(unavailable("nats_unavailable", "NATS is not reachable"))
    except _DB_DOWN as exc:
        # DataError is asyncpg's refusal of a query argument, not an outage.
        if isinstance(exc, asyncpg.DataError):
            raise
        log.warning(
            "%s %s: database unavailable (%s)", request.method, request.path, type(exc).__name__
        )
        return _render(unavailable("database_unavailable", "PostgreSQL is not reachable"))


def _render(exc: ApiError) -> web.StreamResponse:
    resp = json_response(exc.body().model_dump(mode="json", exclude_none=True), exc.status)
    resp.headers.update(exc.headers)
    return resp


def body_limit(max_bytes: int) -> Middleware:
    """413 for a declared Content-Length over the limit, before anything is read.

    A chunked body has no length up front; the application's ``client_max_size`` (the
    same limit) stops it while it is read.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > max_bytes:
            raise ApiError(
                413, "body_too_large", f"the request body is larger than {max_bytes} bytes"
            )
        return await handler(request)

    return middleware


class Cors:
    """CORS for the listed origins only; with none listed it adds nothing (off).

    Preflight (OPTIONS with Access-Control-Request-Method) is answered by the
    middleware; the Allow-Origin header goes on every response through
    ``on_response_prepare``, so streamed responses get it too. ``paths``, when given,
    limits it to those paths (ADMIN_CONNECT_ORIGINS: POST /api/v1/connect and nothing
    else), with their own allowed methods and headers.
    """

    def __init__(
        self,
        origins: Iterable[str],
        *,
        paths: Iterable[str] | None = None,
        methods: str = "GET, POST, PATCH, DELETE",
        headers: str = f"{API_KEY_HEADER}, Content-Type",
    ) -> None:
        self.origins = frozenset(origins)
        self.paths = frozenset(paths) if paths is not None else None
        self.methods = methods
        self.headers = headers

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    def _allowed(self, origin: str | None, path: str) -> str | None:
        if origin is None or (self.paths is not None and path not in self.paths):
            return None
        if "*" in self.origins:
            return "*"
        return origin if origin in self.origins else None

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and (origin := self._allowed(request.headers.get("Origin"), request.path))
        ):
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": self.methods,
                    "Access-Control-Allow-Headers": self.headers,
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                },
            )
        return await handler(request)

    async def on_response_prepare(self, request: web.Request, resp: web.StreamResponse) -> None:
        origin = self._allowed(request.headers.get("Origin"), request.path)
        if origin is not None:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Vary"] = "Origin"


async def security_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """on_response_prepare: answers are not to be sniffed, framed or cached."""
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/api/"):
        resp.headers.setdefault("Cache-Control", "no-store")
