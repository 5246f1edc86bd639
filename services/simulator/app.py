"""The simulator's HTTP shell: routes, request counting, fault and session state, and ``main``.

``sync-airbnb simulator [--host H] [--port P] [--accounts N] [--listings M] [--seed S]
[--state-dir DIR] [--tls-dir DIR]``

Routes (all in :func:`setup_routes`):

========================================  ==================================================
``POST /api/v3/{operation}/{hash}``       Airbnb's persisted GraphQL queries (ListingsSection-,
                                          Chart-, ListOfMetricsQuery)
``GET /hosting/insights``                 the preflight page load: a live session is sent
                                          302 to ``/hosting/performance/conversion`` with
                                          fresh bot-manager cookies and a new ``_aaj``, a
                                          dead one 302 to ``/login?redirect_url=...``
``GET /hosting/performance/{tail}``       the dashboard page (200 HTML; dead: 302 to /login);
                                          ``?sim_login=<account_id>`` logs the browser in as
                                          that host: 200 with Set-Cookie for every cookie of
                                          the three groups (a browser test's hosting page)
``GET /login``                            the login page (200 HTML)
``GET /_sim/accounts``                    ``[{account_id, cookie, session: {generation,
                                          strikes, revoked}, listings: [{listing_id,
                                          internal_name, listing_name}]}]``; ``cookie`` is the
                                          full browser cookie of the current login, its
                                          ``_aaj`` and ``bm_sv`` issued today
``POST /_sim/accounts/{id}/login``        the host logs in again: a new login generation
                                          (new ``_airbed_session_id``), strikes and
                                          revocation cleared; ``{account_id, cookie}``
``GET /_sim/requests``                    request counts, see :class:`RequestCounts`
``DELETE /_sim/requests``                 reset the counts (not the sessions)
``GET|PUT|POST|DELETE /_sim/faults``      fault control, see :mod:`services.simulator.faults`
``POST /_sim/faults/revoke/{id}``         revoke the account's current session (the host
                                          logged out everywhere)
``GET /_sim/health``                      ``{"status": "ok"}``
========================================  ==================================================

Unknown accounts on the two per-account ``/_sim`` routes are 404 JSON.

A GraphQL request is handled in this order: unknown operation or hash -> 400
``PersistedQueryNotFound``; unknown account or wrong ``_aat`` -> 401
``authentication_required``; a dead session (lifecycle on) or a revoked one (either
way) -> counted (Airbnb saw it), then 401 ``authentication_required``; bad body ->
400; then it is counted, judged for a strike and for rotation
(lifecycle on), the fault dice are rolled (latency, expired session, 429, 5xx,
malformed JSON), and the answer is built from the seed. The session rules
(live, preflight, strikes, rotation, cookie attributes) are in
:mod:`services.simulator.sessions`.

Environment: ``SYNC_AIRBNB_TODAY`` pins "today" (else the UTC date, read per
request); ``SIM_FAULTS`` holds the starting fault configuration as JSON;
``SIM_SESSION_LIFECYCLE`` ``on`` (default) or ``off``; ``SIM_STATE_DIR`` where the
session state is kept across restarts (``--state-dir`` wins; unset: memory);
``SIM_AAJ_ROTATE_EVERY`` (default 5; 0 never rotates on GraphQL answers);
``SIM_MAX_FIELD_SIZE`` the longest header line it reads, in bytes (default aiohttp's
8,190, about what Airbnb's front takes): a longer one is answered 400 by aiohttp's own
parser before any handler runs, as a real server refuses a cookie too large to send.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import socket
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web
from pydantic import ValidationError

from services.simulator import responses, sessions, tls
from services.simulator.data import Account, World, build_world
from services.simulator.faults import FaultConfig, FaultState
from services.simulator.protocol import BadRequest, parse_request
from services.simulator.sessions import SessionRecord, SessionStore
from shared.airbnb.cookies import parse_cookie_header, user_id
from shared.airbnb.operations import PERSISTED_QUERIES
from shared.logs import setup_logging
from shared.settings import BaseServiceSettings, die, load_settings

log = logging.getLogger("sync_airbnb.simulator")

Today = Callable[[], date]
# ``GET /hosting/performance/...?sim_login=<account_id>``: the browser is logged in as that
# host (every cookie of the three groups set); simulator only.
BROWSER_LOGIN = "sim_login"
STATE_FILE = "sessions.json"


class RequestCounts:
    """What each account asked for; ``GET /_sim/requests`` shows :meth:`snapshot`::

        {"<account_id>": {"total": 7, "ChartQuery": 4, "ListOfMetricsQuery": 2,
                          "ListingsSectionQuery": 1,
                          "listings": {"<listing_id>": 6},
                          "listings_ok": {"<listing_id>": 5},
                          "preflights": 1, "strikes": 0,
                          "strike_reasons": {"no_bm_sv": 0, "headers": 0}}}

    Every GraphQL request of a live session with a well-formed body counts,
    faulted or not (it is what Airbnb would have seen); ``total`` counts only
    those; ``listings`` counts a request once for each listing it names,
    ``listings_ok`` only requests answered with data. ``preflights`` (every
    ``GET /hosting/insights`` naming a known account, live or dead) and
    ``strikes`` come from the :class:`SessionStore`, so they survive a restart
    with a state dir.
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

    def snapshot(self, sessions: SessionStore) -> dict[str, dict[str, Any]]:
        records = sessions.records()
        counted = {
            account_id
            for account_id, rec in records.items()
            if rec.preflights or any(rec.strike_reasons.values())
        }
        out: dict[str, dict[str, Any]] = {}
        for account_id in sorted(self._ops.keys() | counted):
            ops = self._ops.get(account_id, Counter())
            rec = sessions.get(account_id)
            out[account_id] = {
                "total": ops.total(),
                **ops,
                "listings": dict(self._listings.get(account_id, {})),
                "listings_ok": dict(self._listings_ok.get(account_id, {})),
                "preflights": rec.preflights,
                "strikes": sum(rec.strike_reasons.values()),
                "strike_reasons": dict(rec.strike_reasons),
            }
        return out


WORLD = web.AppKey("world", World)
# aiohttp's own default, named so the setting's error and the docs agree.
DEFAULT_MAX_FIELD_SIZE = 8190
FAULTS = web.AppKey("faults", FaultState)
COUNTS = web.AppKey("counts", RequestCounts)
SESSIONS = web.AppKey("sessions", SessionStore)
LIFECYCLE = web.AppKey("lifecycle", bool)
ROTATE_EVERY = web.AppKey("rotate_every", int)
TODAY = web.AppKey[Callable[[], date]]("today")
TRACE_RNG = web.AppKey[Callable[[int], bytes]]("trace_rng")
TRACE_ID = web.RequestKey("trace_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _reply(
    reply: responses.Reply,
    request: web.Request | None = None,
    cookies: Mapping[str, str] | None = None,
) -> web.Response:
    response = web.Response(
        status=reply.status,
        body=reply.body,
        content_type=reply.content_type,
        headers=dict(reply.headers),
    )
    if request is not None and cookies:
        set_cookies(response, request, cookies)
    return response


def set_cookies(
    response: web.StreamResponse, request: web.Request, cookies: Mapping[str, str]
) -> None:
    # Written by hand (not response.set_cookie) so the attributes follow the pure rule
    # in sessions.set_cookie_header, which the tests read too.
    domain = sessions.cookie_domain(request.host)
    for name, value in cookies.items():
        response.headers.add(
            "Set-Cookie", sessions.set_cookie_header(name, value, domain, request.secure)
        )


def _redirect(
    request: web.Request, location: str, cookies: Mapping[str, str] | None = None
) -> web.Response:
    response = web.Response(
        status=302, headers={"Location": location}, text="", content_type="text/html"
    )
    if cookies:
        set_cookies(response, request, cookies)
    return response


def _request_cookies(request: web.Request) -> dict[str, str]:
    return parse_cookie_header(request.headers.get("Cookie", ""))


def _dead_reason(
    request: web.Request, account: Account, cookies: Mapping[str, str]
) -> sessions.Dead | None:
    """Why this account's session is not live, by the rules the app runs under."""
    view = request.app[SESSIONS].get(account.account_id).view()
    if not request.app[LIFECYCLE]:
        return sessions.Dead.REVOKED if view.revoked else None
    key = sessions.session_key(account.seed)
    return sessions.dead_reason(key, account.account_id, cookies, view, request.app[TODAY]())


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
    cookies = _request_cookies(request)
    account = world.account_for_cookies(cookies)
    if account is None:
        return _reply(responses.unknown_session(trace_id))
    dead = _dead_reason(request, account, cookies)

    try:
        parsed = parse_request(operation, await request.read())
    except BadRequest as exc:
        if dead is not None:
            return _reply(responses.unknown_session(trace_id))
        return _reply(responses.bad_request(str(exc), trace_id))

    counts = request.app[COUNTS]
    listing_ids = parsed.listing_ids or ()
    # Counted even for a dead session: Airbnb saw the request, and a test that says "no
    # GraphQL request after the login redirect" must be able to fail.
    counts.record(account.account_id, operation, listing_ids)
    if dead is not None:
        return _reply(responses.unknown_session(trace_id))
    rotated = _judge(request, account, cookies) if request.app[LIFECYCLE] else {}

    def reply(r: responses.Reply) -> web.Response:
        return _reply(r, request, rotated)

    faults = request.app[FAULTS]
    decision = faults.next_decision(account.account_id)
    if decision.latency_s > 0:
        await asyncio.sleep(decision.latency_s)

    config = faults.config
    match decision.outcome:
        case "expired":
            assert decision.auth_form is not None
            return reply(responses.expired_session(decision.auth_form, trace_id))
        case "rate_limited":
            return reply(responses.rate_limited(config.retry_after_s))
        case "server_error":
            return reply(responses.server_error(config.server_error_status))

    if not set(listing_ids) <= set(account.listing_ids):
        return reply(responses.forbidden_listing(trace_id))
    body = responses.build_response(
        world.seed,
        account,
        parsed,
        request.app[TODAY](),
        trace_id,
        listings_page_size=config.listings_page_size,
    )
    if config.malformed_listings.intersection(listing_ids):
        return reply(responses.json_reply(200, responses.malformed_component(body)))
    answer = responses.json_reply(200, body)
    if decision.outcome == "malformed_json":
        return reply(responses.malformed_json(answer))
    counts.record_ok(account.account_id, listing_ids)
    return reply(answer)


def _judge(request: web.Request, account: Account, cookies: Mapping[str, str]) -> dict[str, str]:
    """Strike and rotation for one GraphQL request of a live session; the cookies to set."""
    store = request.app[SESSIONS]
    rec = store.get(account.account_id)
    key = sessions.session_key(account.seed)
    today = request.app[TODAY]()
    session_id = sessions.airbed_session_id(key, account.account_id, rec.generation)
    reason = sessions.strike_reason(
        key, account.account_id, session_id, cookies, request.headers, today
    )
    rec.requests += 1
    if reason is not None:
        rec.strikes += 1
        rec.strike_reasons[reason.value] = rec.strike_reasons.get(reason.value, 0) + 1
        # Never the cookie: only which rule the request broke.
        log.info(
            "strike",
            extra={"account_id": account.account_id, "reason": reason.value, "n": rec.strikes},
        )
    rotated: dict[str, str] = {}
    if sessions.rotates(rec.requests, request.app[ROTATE_EVERY]):
        rec.issued += 1
        rotated[sessions.AAJ] = _new_aaj(key, account.account_id, rec, session_id, today)
    store.update(account.account_id, rec)
    return rotated


def _new_aaj(key: bytes, account_id: str, rec: SessionRecord, session_id: str, today: date) -> str:
    token_nonce = sessions.nonce(key, account_id, rec.generation, rec.issued)
    return sessions.sign_token(key, account_id, session_id, "aaj", today, token_nonce)


async def preflight(request: web.Request) -> web.Response:
    world = request.app[WORLD]
    cookies = _request_cookies(request)
    owner = user_id(cookies)
    store = request.app[SESSIONS]
    if owner is None or world.account(owner) is None:
        return _redirect(request, sessions.LOGIN_REDIRECT)
    # Counted live or dead, and the state written once per preflight.
    rec = store.get(owner)
    rec.preflights += 1
    account = world.account_for_cookies(cookies)
    if account is None or _dead_reason(request, account, cookies) is not None:
        store.update(owner, rec)
        return _redirect(request, sessions.LOGIN_REDIRECT)

    key = sessions.session_key(account.seed)
    today = request.app[TODAY]()
    session_id = sessions.airbed_session_id(key, account.account_id, rec.generation)
    rec.issued += 1
    fresh = sessions.bot_manager_cookies(key, account.account_id, session_id, today, rec.issued)
    fresh[sessions.AAJ] = _new_aaj(key, account.account_id, rec, session_id, today)
    store.update(account.account_id, rec)
    return _redirect(request, sessions.LIVE_LANDING, fresh)


async def performance_page(request: web.Request) -> web.Response:
    if (login := request.query.get(BROWSER_LOGIN)) is not None:
        return _browser_login(request, login)
    cookies = _request_cookies(request)
    account = request.app[WORLD].account_for_cookies(cookies)
    if account is None or _dead_reason(request, account, cookies) is not None:
        return _redirect(request, "/login?redirect_url=" + quote(request.path_qs, safe=""))
    return web.Response(body=responses.dashboard_page(account), content_type="text/html")


def _browser_login(request: web.Request, account_id: str) -> web.Response:
    """A browser logs in as the account (its current login) and lands on the dashboard:
    the page sets every cookie of the three groups (auth, bot manager, analytics) through
    Set-Cookie, as airbnb.com leaves them in a host's browser. For a browser test of the
    extension, which then reads them with chrome.cookies."""
    account = request.app[WORLD].account(account_id)
    if account is None:
        return _redirect(request, "/login?redirect_url=" + quote(request.path, safe=""))
    generation = request.app[SESSIONS].get(account.account_id).generation
    response = web.Response(body=responses.dashboard_page(account), content_type="text/html")
    set_cookies(response, request, account.browser_cookies(request.app[TODAY](), generation))
    return response


async def login_page(request: web.Request) -> web.Response:
    return web.Response(body=responses.LOGIN_PAGE, content_type="text/html")


def _known_account(request: web.Request) -> Account:
    account = request.app[WORLD].account(request.match_info["account_id"])
    if account is None:
        raise web.HTTPNotFound(
            text=orjson.dumps({"error": "unknown account"}).decode(),
            content_type="application/json",
        )
    return account


async def revoke_session(request: web.Request) -> web.Response:
    account = _known_account(request)
    store = request.app[SESSIONS]
    rec = store.get(account.account_id)
    rec.revoked = True
    store.update(account.account_id, rec)
    log.info("session revoked", extra={"account_id": account.account_id})
    return web.json_response({"account_id": account.account_id, "revoked": True}, dumps=_dumps)


async def log_in_again(request: web.Request) -> web.Response:
    account = _known_account(request)
    store = request.app[SESSIONS]
    old = store.get(account.account_id)
    # A new login: a new session id; its strikes, revocation and counters start over,
    # while what /_sim/requests shows keeps counting.
    new = SessionRecord(
        generation=old.generation + 1,
        preflights=old.preflights,
        strike_reasons=dict(old.strike_reasons),
    )
    store.update(account.account_id, new)
    cookie = account.cookie_on(request.app[TODAY](), new.generation)
    log.info("logged in again", extra={"account_id": account.account_id, "login": new.generation})
    return web.json_response({"account_id": account.account_id, "cookie": cookie}, dumps=_dumps)


def _session_summary(rec: SessionRecord) -> dict[str, Any]:
    return {"generation": rec.generation, "strikes": rec.strikes, "revoked": rec.revoked}


async def list_accounts(request: web.Request) -> web.Response:
    today = request.app[TODAY]()
    sessions_ = request.app[SESSIONS]
    return web.json_response(
        [
            {
                "account_id": account.account_id,
                "cookie": account.cookie_on(today, sessions_.get(account.account_id).generation),
                "session": _session_summary(sessions_.get(account.account_id)),
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
    return web.json_response(request.app[COUNTS].snapshot(request.app[SESSIONS]), dumps=_dumps)


async def reset_requests(request: web.Request) -> web.Response:
    request.app[COUNTS].reset()
    request.app[SESSIONS].reset_counts()
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
    app.router.add_get("/hosting/insights", preflight)
    app.router.add_get("/hosting/performance/{tail:.*}", performance_page)
    app.router.add_get("/login", login_page)
    app.router.add_get("/_sim/accounts", list_accounts)
    app.router.add_post("/_sim/accounts/{account_id}/login", log_in_again)
    app.router.add_get("/_sim/requests", get_requests)
    app.router.add_delete("/_sim/requests", reset_requests)
    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_put("/_sim/faults", put_faults)
    app.router.add_post("/_sim/faults", put_faults)
    app.router.add_delete("/_sim/faults", reset_faults)
    app.router.add_post("/_sim/faults/revoke/{account_id}", revoke_session)
    app.router.add_get("/_sim/health", health)


def create_app(
    world: World,
    faults: FaultConfig | None = None,
    today: Today | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
    *,
    lifecycle: bool = True,
    state_dir: Path | None = None,
    rotate_every: int = sessions.DEFAULT_ROTATE_EVERY,
) -> web.Application:
    """The simulator application; ``today`` defaults to the UTC date at each request.

    ``lifecycle`` turns Airbnb's session rules on (:mod:`services.simulator.sessions`);
    ``state_dir`` keeps the session state in ``state_dir/sessions.json`` across
    restarts; ``rotate_every`` is N of "every Nth GraphQL answer rotates ``_aaj``".
    """
    app = web.Application(middlewares=[trace_id_middleware, error_middleware])
    app[WORLD] = world
    app[FAULTS] = FaultState(faults or FaultConfig(), default_seed=world.seed)
    app[COUNTS] = RequestCounts()
    app[SESSIONS] = SessionStore(state_dir / STATE_FILE if state_dir is not None else None)
    app[LIFECYCLE] = lifecycle
    app[ROTATE_EVERY] = rotate_every
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


def _lifecycle_setting() -> bool:
    raw = os.environ.get("SIM_SESSION_LIFECYCLE", "on").strip().lower()
    if raw not in {"on", "off"}:
        die("sync-airbnb simulator: configuration error: SIM_SESSION_LIFECYCLE must be on or off")
    return raw == "on"


def _rotate_every_setting() -> int:
    raw = os.environ.get("SIM_AAJ_ROTATE_EVERY", str(sessions.DEFAULT_ROTATE_EVERY))
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        die("sync-airbnb simulator: configuration error: SIM_AAJ_ROTATE_EVERY must be an int >= 0")
    return value


def _max_field_size_setting() -> int:
    raw = os.environ.get("SIM_MAX_FIELD_SIZE", str(DEFAULT_MAX_FIELD_SIZE))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        die("sync-airbnb simulator: configuration error: SIM_MAX_FIELD_SIZE must be an int >= 1")
    return value


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
    lifecycle = _lifecycle_setting()
    rotate_every = _rotate_every_setting()
    max_field_size = _max_field_size_setting()
    state_dir: Path | None = args.state_dir or (
        Path(raw_dir) if (raw_dir := os.environ.get("SIM_STATE_DIR")) else None
    )

    pinned = settings.sync_airbnb_today
    app = create_app(
        build_world(args.accounts, args.listings, args.seed),
        faults,
        today=(lambda: pinned) if pinned else None,
        lifecycle=lifecycle,
        state_dir=state_dir,
        rotate_every=rotate_every,
    )
    ssl_context = None
    if args.tls_dir is not None:
        try:
            ssl_context = tls.server_context(*tls.write_certificate(args.tls_dir))
        except OSError as exc:
            die(f"sync-airbnb simulator: cannot write a certificate to {args.tls_dir}: {exc}")
    try:
        sock = _bound_socket(args.host, args.port)
    except OSError as exc:
        die(f"sync-airbnb simulator: cannot listen on {args.host}:{args.port}: {exc}")
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    scheme = "https" if ssl_context is not None else "http"

    async def announce(_: web.Application) -> None:
        # The socket is already listening; tests wait for exactly this line on stdout.
        print(f"simulator listening on {scheme}://{url_host}:{port}", flush=True)

    app.on_startup.append(announce)
    log.info(
        "simulator settings",
        extra={"lifecycle": lifecycle, "rotate_every": rotate_every, "state_dir": str(state_dir)},
    )
    web.run_app(
        app,
        sock=sock,
        print=None,
        access_log=None,
        ssl_context=ssl_context,
        max_field_size=max_field_size,
    )
    return 0
