"""Who is calling: the :class:`Caller` of every authenticated request, and the middleware
that sets it.

The middleware (:func:`authenticate`) runs for every route that is not public, in order:

1. A client address whose failed authentications used up its bucket
   (scopes.FailureBuckets, ``ADMIN_AUTH_FAILURES_*``) gets 429
   ``too_many_failed_authentications`` with ``Retry-After``, before its key is looked at.
2. No ``X-API-Key``: 401 ``missing_api_key`` (not counted as a failure: it guesses
   nothing).
3. The key is one of ``ADMIN_API_KEYS`` (the bootstrap admin keys, named bootstrap:<n>),
   or a key in force in ``airbnb.api_keys``, found by its sha256. Neither: 401
   ``invalid_api_key``, counted. A revoked key is refused on the very next request: there
   is no cache to outlive a revocation, since one index probe costs less than a
   millisecond (the figure measured is in tests/system/test_admin_scopes.py's output).
4. The route's scope (services/admin/routes.py) does not admit the key's: 403
   ``insufficient_scope`` naming the scopes the route needs.

Comparisons: the bootstrap keys' sha256 digests are compared with the given key's with
``hmac.compare_digest``, every one of them whatever the earlier results, so the time
taken says nothing of how close a guess was or which key matched. A database key is found
by an index probe on its hash: what its timing could tell is something of the hash of a
guess, which says nothing of any key (sha256 is preimage resistant), and the row found is
compared again in constant time.

Handlers read the caller with :func:`caller`; a customer key's customer id is the filter
every store query of an account takes (:attr:`Caller.customer_filter`).
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web

from services.admin import store
from services.admin.errors import ApiError
from services.admin.openapi import API_KEY_HEADER
from services.admin.scopes import (
    FailureBuckets,
    KeyScope,
    RouteScope,
    admits,
    admitted,
    bootstrap_name,
    key_hash,
    looks_like_key,
)
from shared.runtime import DB_POOL

log = logging.getLogger("sync_airbnb.admin.auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made the request, as the audit trail records it and the rules decide by it."""

    # The key's name: bootstrap:<n> for ADMIN_API_KEYS, connect-token:<id> for a token.
    name: str
    scope: KeyScope
    # The one customer a customer key (or a connect token) acts for; None otherwise.
    customer_id: str | None
    # The remote address (request.remote): no X-Forwarded-For is trusted.
    client: str
    # The connect token's id, for a connect token.
    token_id: uuid.UUID | None = None

    @property
    def customer_filter(self) -> str | None:
        """The customer id every account query is limited to; None: every customer."""
        return self.customer_id if self.scope in ("customer", "connect") else None


CALLER = web.RequestKey("caller", Caller)
FAILURES = web.AppKey("auth_failures", FailureBuckets)


def caller(request: web.Request) -> Caller:
    """The request's caller (set by the auth middleware on every non-public route)."""
    return request[CALLER]


def set_caller(request: web.Request, who: Caller) -> None:
    """For a route that authenticates by other means (a connect token)."""
    request[CALLER] = who


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def too_many(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "too_many_failed_authentications",
        f"too many failed authentications from this address; retry in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


def invalid_key() -> ApiError:
    return ApiError(401, "invalid_api_key", f"the {API_KEY_HEADER} is not a valid key")


def insufficient_scope(route: RouteScope) -> ApiError:
    needed = ", ".join(admitted(route))
    return ApiError(
        403,
        "insufficient_scope",
        f"this key's scope does not allow this operation; it needs one of: {needed}",
    )


class KeyCheck:
    """The keys: the bootstrap set in memory, the rest in PostgreSQL by hash."""

    def __init__(self, bootstrap_keys: Iterable[str]) -> None:
        self._bootstrap = [bytes.fromhex(key_hash(k)) for k in bootstrap_keys]

    def bootstrap(self, given: str) -> int | None:
        """The index of the bootstrap key ``given`` is, tried against all of them."""
        digest = bytes.fromhex(key_hash(given))
        found = -1
        for i, known in enumerate(self._bootstrap):
            if hmac.compare_digest(digest, known):
                found = i
        return None if found < 0 else found

    async def caller(self, request: web.Request, given: str) -> Caller | None:
        client = client_address(request)
        index = self.bootstrap(given)
        if index is not None:
            return Caller(bootstrap_name(index), "admin", None, client)
        if not looks_like_key(given):
            return None
        digest = key_hash(given)
        row = await store.api_key_in_force(request.app[DB_POOL], digest)
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            return None
        return Caller(row["name"], row["scope"], row["customer_id"], client)


def authenticate(
    bootstrap_keys: Iterable[str],
    route_scopes: Mapping[tuple[str, str], RouteScope],
    public_paths: Iterable[str],
) -> Middleware:
    """The auth middleware. ``route_scopes``: each (method, path template)'s scope (the
    route table, routes.route_scopes); ``public_paths``: files served outside the table
    that need no key (/docs' and /ui's assets)."""
    keys = KeyCheck(bootstrap_keys)
    public = frozenset(public_paths)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else None
        route = route_scopes.get((request.method, template)) if template else None
        if route == "public" or (route is None and request.path in public):
            return await handler(request)
        if route == "connect":
            # A connect token, not an X-API-Key: the route authenticates it (set_caller)
            # and counts its failures in request.app[FAILURES].
            return await handler(request)
        buckets = request.app[FAILURES]
        client = client_address(request)
        wait = buckets.retry_after(client)
        if wait is not None:
            raise too_many(wait)
        given = request.headers.get(API_KEY_HEADER)
        if not given:
            raise ApiError(
                401, "missing_api_key", f"send an API key in the {API_KEY_HEADER} header"
            )
        who = await keys.caller(request, given)
        if who is None:
            buckets.failed(client)
            log.info("refused an invalid API key from %s", client)
            raise invalid_key()
        if not admits(route, who.scope):
            raise insufficient_scope(route)  # type: ignore[arg-type]  # None admits all
        request[CALLER] = who
        return await handler(request)

    return middleware
