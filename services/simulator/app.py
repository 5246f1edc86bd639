"""The simulator's HTTP shell: routes, request counting, fault state, and ``main``.

``sync-airbnb simulator [--host H] [--port P] [--accounts N] [--listings M] [--seed S]``

Routes (all in :func:`setup_routes`):

=====================================  =====================================================
``POST /api/v3/{operation}/{hash}``    Airbnb's persisted GraphQL queries (ListingsSection-,
                                       Chart-, ListOfMetricsQuery)
``GET /_sim/accounts``                 ``[{account_id, cookie, listings: [{listing_id,
                                       internal_name, listing_name}]}]``
``GET /_sim/requests``                 request counts, see :class:`RequestCounts`
``DELETE /_sim/requests``              reset the counts
``GET|PUT|POST|DELETE /_sim/faults``   fault control, see :mod:`services.simulator.faults`
``GET /_sim/health``                   ``{"status": "ok"}``
=====================================  =====================================================

A GraphQL request is handled in this order: unknown operation or hash -> 400
``PersistedQueryNotFound``; unknown session -> 401 ``authentication_required``;
bad body -> 400; then it is counted, the fault dice are rolled (latency, expired
session, 429, 5xx, malformed JSON), and the answer is built from the seed.

Environment: ``SYNC_AIRBNB_TODAY`` pins "today" (else the UTC date, read per
request); ``SIM_FAULTS`` holds the starting fault configuration as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import socket
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from services.simulator import responses
from services.simulator.data import World, build_world
from services.simulator.faults import FaultConfig, FaultState
from services.simulator.protocol import BadRequest, parse_request
from services.simulator.sessions import SessionStore
from shared.airbnb.operations import PERSISTED_QUERIES
from shared.logs import setup_logging
from shared.settings import BaseServiceSettings, die, load_settings

log = logging.getLogger("sync_airbnb.simulator")

Today = Callable[[], date]


class RequestCounts:
    """What each account asked for; ``GET /_sim/requests`` shows :meth:`snapshot`::

        {"<account_id>": {"total": 7, "ChartQuery": 4, "ListOfMetricsQuery": 2,
                          "ListingsSectionQuery": 1,
                          "listings": {"<listing_id>": 6},
                          "listings_ok": {"<listing_id>": 5}}}

    Every request of a known session with a well-formed body counts, faulted or
    not (it is what Airbnb would have seen); ``listings`` counts a request once
    for each listing it names, ``listings_ok`` only requests answered with data.
    """

    def __init__(self) -> None:
        self._ops: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._listings: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._listings_ok: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def record(self, account_id: str, operation: str, listing_ids: tuple[str, ...]) -> None:
        self._ops[account_id][operation] += 1
        self._listings[account_id].update(listing_ids)

    def record_ok(self, account_id: str, listing_ids: tuple[str, ...]) -> None:
        self._listings_ok[account_id].update(listing_ids)

    def reset(self) -> None:
        self._ops.clear()
        self._listings.clear()
        self._listings_ok.clear()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            account_id: {
                "total": ops.total(),
                **ops,
                "listings": dict(self._listings[account_id]),
                "listings_ok": dict(self._listings_ok[account_id]),
            }
            for account_id, ops in self._ops.items()
        }


WORLD = web.AppKey("world", World)
FAULTS = web.AppKey("faults", FaultState)
COUNTS = web.AppKey("counts", RequestCounts)
SESSIONS = web.AppKey("sessions", SessionStore)
TODAY = web.AppKey("today", Callable[[], date])
TRACE_RNG = web.AppKey("trace_rng", Callable[[int], bytes])
TRACE_ID = web.RequestKey("trace_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _reply(reply: responses.Reply) -> web.Response:
    return web.Response(
        status=reply.status,
        body=reply.body,
        content_type=reply.content_type,
        headers=dict(reply.headers),
    )


def _trace_id(request: web.Request) -> str:
    return request[TRACE_ID]


@web.middleware
async def trace_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Airbnb puts a trace id on every response; one per request, shared by body and header.
    request[TRACE_ID] = base64.b64encode(request.app[TRACE_RNG](16)).decode()
    response = await handler(request)
    response.headers["X-Trace-Id"] = request[TRACE_ID]
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A bug in the simulator answers like an Airbnb 500, not with aiohttp's text page."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("simulator handler failed", extra={"path": request.path})
        body = responses.graphql_error("Internal server error", "internal", _trace_id(request))
        return _reply(responses.json_reply(500, body))


async def graphql(request: web.Request) -> web.Response:
    trace_id = _trace_id(request)
    operation = request.match_info["operation"]
    query = PERSISTED_QUERIES.get(operation)
    if query is None or query.sha256_hash != request.match_info["sha256_hash"]:
        return _reply(responses.persisted_query_not_found(trace_id))

    world = request.app[WORLD]
    account = world.account_for_cookie(request.headers.get("Cookie"))
    if account is None:
        return _reply(responses.unknown_session(trace_id))

    try:
        parsed = parse_request(operation, await request.read())
    except BadRequest as exc:
        return _reply(responses.bad_request(str(exc), trace_id))

    counts = request.app[COUNTS]
    listing_ids = parsed.listing_ids or ()
    counts.record(account.account_id, operation, listing_ids)
    faults = request.app[FAULTS]
    decision = faults.next_decision(account.account_id)
    if decision.latency_s > 0:
        await asyncio.sleep(decision.latency_s)

    config = faults.config
    match decision.outcome:
        case "expired":
            assert decision.auth_form is not None
            return _reply(responses.expired_session(decision.auth_form, trace_id))
        case "rate_limited":
            return _reply(responses.rate_limited(config.retry_after_s))
        case "server_error":
            return _reply(responses.server_error(config.server_error_status))

    if not set(listing_ids) <= set(account.listing_ids):
        return _reply(responses.forbidden_listing(trace_id))
    body = responses.build_response(world.seed, account, parsed, request.app[TODAY](), trace_id)
    if config.malformed_listings.intersection(listing_ids):
        return _reply(responses.json_reply(200, responses.malformed_component(body)))
    reply = responses.json_reply(200, body)
    if decision.outcome == "malformed_json":
        return _reply(responses.malformed_json(reply))
    counts.record_ok(account.account_id, listing_ids)
    return _reply(reply)


async def list_accounts(request: web.Request) -> web.Response:
    today = request.app[TODAY]()
    return web.json_response(
        [
            {
                "account_id": account.account_id,
                "cookie": account.cookie_on(
                    today, request.app[SESSIONS].get(account.account_id).generation
                ),
                "listings": [
                    {
                        "listing_id": listing.listing_id,
                        "internal_name": listing.internal_name,
                        "listing_name": listing.listing_name,
                    }
                    for listing in account.listings
                ],
            }
            for account in request.app[WORLD].accounts
        ],
        dumps=_dumps,
    )


async def get_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[COUNTS].snapshot(), dumps=_dumps)


async def reset_requests(request: web.Request) -> web.Response:
    request.app[COUNTS].reset()
    return web.json_response({}, dumps=_dumps)


def _faults_response(state: FaultState) -> web.Response:
    return web.json_response(state.config.model_dump(mode="json"), dumps=_dumps)


async def get_faults(request: web.Request) -> web.Response:
    return _faults_response(request.app[FAULTS])


async def _read_fault_patch(request: web.Request) -> dict[str, Any]:
    try:
        patch = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise _problem("body is not JSON") from None
    if not isinstance(patch, dict):
        raise _problem("body must be a JSON object")
    return patch


def _problem(detail: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=orjson.dumps({"error": detail}).decode(), content_type="application/json"
    )


async def put_faults(request: web.Request) -> web.Response:
    state = request.app[FAULTS]
    patch = await _read_fault_patch(request)
    try:
        config = (
            state.config.merged(patch)
            if request.method == "POST"
            else FaultConfig.model_validate(patch)
        )
    except ValidationError as exc:
        raise _problem(str(exc)) from None
    state.replace(config)
    log.info("faults set", extra={"faults": config.model_dump(mode="json")})
    return _faults_response(state)


async def reset_faults(request: web.Request) -> web.Response:
    state = request.app[FAULTS]
    state.reset()
    return _faults_response(state)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/v3/{operation}/{sha256_hash}", graphql)
    app.router.add_get("/_sim/accounts", list_accounts)
    app.router.add_get("/_sim/requests", get_requests)
    app.router.add_delete("/_sim/requests", reset_requests)
    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_put("/_sim/faults", put_faults)
    app.router.add_post("/_sim/faults", put_faults)
    app.router.add_delete("/_sim/faults", reset_faults)
    app.router.add_get("/_sim/health", health)


def create_app(
    world: World,
    faults: FaultConfig | None = None,
    today: Today | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> web.Application:
    """The simulator application; ``today`` defaults to the UTC date at each request."""
    app = web.Application(middlewares=[trace_id_middleware, error_middleware])
    app[WORLD] = world
    app[FAULTS] = FaultState(faults or FaultConfig(), default_seed=world.seed)
    app[COUNTS] = RequestCounts()
    app[SESSIONS] = SessionStore()
    app[TODAY] = today or (lambda: datetime.now(UTC).date())
    app[TRACE_RNG] = random_bytes
    setup_routes(app)
    return app


def _bound_socket(host: str, port: int) -> socket.socket:
    # Binding here rather than in run_app lets --port 0 report the port the OS chose.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def main(args: argparse.Namespace) -> int:
    settings = load_settings(BaseServiceSettings, "simulator")
    setup_logging("simulator", settings.log_level)
    if args.accounts < 0 or args.listings < 0:
        die("sync-airbnb simulator: --accounts and --listings must be >= 0")
    faults = FaultConfig()
    if raw := os.environ.get("SIM_FAULTS"):
        try:
            faults = FaultConfig.model_validate_json(raw)
        except ValidationError as exc:
            die(f"sync-airbnb simulator: configuration error: SIM_FAULTS {exc}")

    pinned = settings.sync_airbnb_today
    app = create_app(
        build_world(args.accounts, args.listings, args.seed),
        faults,
        today=(lambda: pinned) if pinned else None,
    )
    try:
        sock = _bound_socket(args.host, args.port)
    except OSError as exc:
        die(f"sync-airbnb simulator: cannot listen on {args.host}:{args.port}: {exc}")
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host

    async def announce(_: web.Application) -> None:
        # The socket is already listening; tests wait for exactly this line on stdout.
        print(f"simulator listening on http://{url_host}:{port}", flush=True)

    app.on_startup.append(announce)
    web.run_app(app, sock=sock, print=None, access_log=None)
    return 0
