"""The HTTP client for Airbnb: one instance per account sync, a browser's session in small.

``async with AirbnbClient(cookie=..., x_client_version=..., user_agent=...) as client:``
opens one :class:`~shared.airbnb.transport.CurlTransport`, a curl handle that
impersonates Chrome: its TLS ClientHello, HTTP/2 settings and header order are
Chrome's (docs/tls-handshake.md), because Airbnb's bot manager flags requests that are
not a browser's. aiohttp stays for every server of the project; only requests to
Airbnb go through curl.

``await client.preflight()`` loads ``GET {base}/hosting/insights`` as a page
navigation, once per sync, before any GraphQL request (docs/sessions.md). A live
session is redirected to a page under ``/hosting/``, which answers 200 HTML and
sets fresh bot-manager cookies (``bm_sv``...) and often a new ``_aaj``; a dead one
is redirected to ``/login``, which raises ``AuthError`` (an expired session).

``await client.post(query, body)`` sends ``POST {base}/api/v3/{operationName}/{sha256Hash}``
with the dashboard's headers (:mod:`shared.airbnb.browser` lists each and why) and
returns the parsed JSON body.

Cookies: the client's jar (:mod:`shared.airbnb.cookie_jar`) starts from the stored
auth cookies, scoped to Airbnb's domain, and takes in every ``Set-Cookie`` of the
preflight and of each later answer, as a browser does. :meth:`auth_cookies` gives the
auth group as it is now, so the fetcher can save rotated cookies back.
``cookie_mode="replay"`` is the old behaviour, for tests only: the stored cookie sent
verbatim, every ``Set-Cookie`` ignored (it is what loses a host's session within a day
or two).

Behaviour:

- Pacing: at least ``min_interval_s`` between the starts of two requests of this
  client (preflight and retries included), plus a random
  ``[0, pacing_jitter * min_interval_s)``; ``min_interval_s=0`` turns pacing off.
- Retries, at most ``max_attempts`` attempts per request (and per preflight hop):
  timeouts, connection errors and 5xx back off exponentially with full jitter; 429
  waits ``Retry-After`` (seconds or HTTP date, capped at ``retry_after_cap_s``) or
  backs off when it is absent; a 2xx body that is not JSON (and not a login page)
  is retried as transient. Out of attempts: ``TransientError``, ``RateLimitedError``
  or ``UnexpectedResponseError`` (malformed JSON).
- An expired session, in any of its four forms (and a login redirect of the
  preflight), raises ``AuthError`` at once. Any other 4xx raises
  ``RejectedRequestError`` at once (the same request would be refused again); a
  GraphQL error without data raises ``UnexpectedResponseError`` at once.
- Each attempt has its own deadline (``timeout_s``).
- Metrics: every attempt in ``AIRBNB_REQUESTS{operation,status}`` (HTTP status, or
  ``timeout``/``connection_error``; the preflight's operation is ``preflight``) and
  ``AIRBNB_REQUEST_SECONDS``; retries in ``AIRBNB_RETRIES{operation,reason}``; 429s
  in ``AIRBNB_RATE_LIMITED``; expired sessions in ``AIRBNB_AUTH_FAILURES``;
  preflights in ``AIRBNB_PREFLIGHTS{outcome}``.

The cookie is never logged, never put in an exception message and never shown
by ``repr``; curl's own exceptions are not chained into the errors raised here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlencode, urlsplit

import orjson
from curl_cffi.requests import BrowserType

from shared.airbnb import browser, cookies
from shared.airbnb.cookie_jar import CookieJar, jar_of
from shared.airbnb.errors import (
    AuthError,
    RateLimitedError,
    RejectedRequestError,
    TransientError,
    UnexpectedResponseError,
)
from shared.airbnb.http_policy import (
    MAX_PREFLIGHT_REDIRECTS,
    Kind,
    PreflightStep,
    backoff_delay,
    classify,
    classify_preflight,
    parse_retry_after,
)
from shared.airbnb.operations import PersistedQuery
from shared.airbnb.transport import CurlTransport, TransportError, TransportTimeout
from shared.metrics import (
    AIRBNB_AUTH_FAILURES,
    AIRBNB_PREFLIGHTS,
    AIRBNB_RATE_LIMITED,
    AIRBNB_REQUEST_SECONDS,
    AIRBNB_REQUESTS,
    AIRBNB_RETRIES,
)

log = logging.getLogger("sync_airbnb.airbnb.client")

DEFAULT_BASE_URL = "https://www.airbnb.com"
# The key Airbnb's web app embeds in every page; public, identical for every visitor.
DEFAULT_API_KEY = "d306zoyjsyarp7ifhu67rjxn52tv0t20"
PREFLIGHT_PATH = "/hosting/insights"
# The Referer until the preflight has landed somewhere (replay mode never loads a page).
DASHBOARD_PATH = "/hosting/insights/conversion"
PREFLIGHT = "preflight"
IMPERSONATE_TARGETS: tuple[str, ...] = tuple(b.value for b in BrowserType)

CookieMode = Literal["jar", "replay"]
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


def cookie_domain(base_url: str) -> str:
    """The domain the auth cookies are scoped to: Airbnb sets them on ``.airbnb.<tld>``.

    Any other host (the simulator, an IP address) takes host-only cookies, as a
    browser would.
    """
    host = urlsplit(base_url).hostname or ""
    labels = host.split(".")
    if "airbnb" in labels[:-1]:
        return "." + ".".join(labels[labels.index("airbnb") :])
    return host


@dataclass(frozen=True, slots=True)
class _Answer:
    url: str
    status: int
    content_type: str | None
    location: str | None
    retry_after: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class _Outcome:
    kind: Kind
    reason: str
    retry_after: str | None = None
    result: Any = None


class AirbnbClient:
    def __init__(
        self,
        *,
        cookie: str,
        x_client_version: str,
        user_agent: str,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str = DEFAULT_API_KEY,
        min_interval_s: float = 2.0,
        pacing_jitter: float = 0.5,
        max_attempts: int = 5,
        timeout_s: float = 30.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        retry_after_cap_s: float = 120.0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        account_id: str | None = None,
        ca_file: str | None = None,
        cookie_mode: CookieMode = "jar",
        accept_language: str = browser.DEFAULT_ACCEPT_LANGUAGE,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min_interval_s < 0 or pacing_jitter < 0:
            raise ValueError("min_interval_s and pacing_jitter must be >= 0")
        self._cookie = cookie
        self._x_client_version = x_client_version
        self._user_agent = user_agent
        self.base_url = base_url.rstrip("/")
        self._host = urlsplit(self.base_url).hostname or ""
        self._api_key = api_key
        self.min_interval_s = min_interval_s
        self.pacing_jitter = pacing_jitter
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.retry_after_cap_s = retry_after_cap_s
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self.account_id = account_id
        self._ca_file = ca_file
        self.cookie_mode: CookieMode = cookie_mode
        self._accept_language = accept_language
        self.impersonate = browser.impersonate_target(user_agent, IMPERSONATE_TARGETS)
        # One per sync, as the web app keeps one per page view.
        self.trace_id = uuid.uuid4().hex[:28]
        self.referer = f"{self.base_url}{DASHBOARD_PATH}"
        self._transport: CurlTransport | None = None
        self._jar: CookieJar | None = None
        self._secure = urlsplit(self.base_url).scheme == "https"
        self._pace_lock = asyncio.Lock()
        self._next_start: float | None = None

    def __repr__(self) -> str:
        return f"AirbnbClient(base_url={self.base_url!r}, account_id={self.account_id!r})"

    def graphql_headers(self) -> dict[str, str]:
        """The headers of a GraphQL request, but the per-request id (and the jar's cookie)."""
        headers = browser.graphql_headers(
            base_url=self.base_url,
            referer=self.referer,
            user_agent=self._user_agent,
            x_client_version=self._x_client_version,
            api_key=self._api_key,
            trace_id=self.trace_id,
            accept_language=self._accept_language,
        )
        return self._with_replayed_cookie(headers)

    def navigation_headers(self) -> dict[str, str]:
        headers = browser.navigation_headers(
            user_agent=self._user_agent, accept_language=self._accept_language
        )
        return self._with_replayed_cookie(headers)

    def _with_replayed_cookie(self, headers: dict[str, str]) -> dict[str, str]:
        # Holds the cookie: never log the result.
        if self.cookie_mode == "replay":
            headers["Cookie"] = self._cookie
        return headers

    async def __aenter__(self) -> Self:
        transport = CurlTransport(
            impersonate=self.impersonate, timeout_s=self.timeout_s, ca_file=self._ca_file
        )
        await transport.__aenter__()
        if self.cookie_mode == "jar":
            stored = cookies.auth_only(cookies.parse_cookie_header(self._cookie))
            self._jar = jar_of(self._host, stored, cookie_domain(self.base_url))
        self._transport = transport
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._transport is not None:
            await self._transport.__aexit__(exc_type, exc, tb)
            self._transport = None
        self._jar = None

    def auth_cookies(self) -> dict[str, str]:
        """The auth group in the jar now (rotated by Airbnb or not). Holds secrets."""
        if self._jar is None:
            return cookies.auth_only(cookies.parse_cookie_header(self._cookie))
        return cookies.auth_cookies_of(self._jar.values(self._wall_clock().timestamp()).items())

    async def _pace(self) -> None:
        """Wait for this client's turn; concurrent callers queue one behind the other."""
        if self.min_interval_s <= 0:
            return
        async with self._pace_lock:
            now = self._clock()
            if self._next_start is not None and now < self._next_start:
                await self._sleep(self._next_start - now)
                now = self._clock()
            jitter = self._rng.random() * self.pacing_jitter * self.min_interval_s
            self._next_start = now + self.min_interval_s + jitter

    async def _exchange(
        self,
        op: str,
        method: Literal["GET", "POST"],
        url: str,
        headers: dict[str, str],
        data: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> _Answer | str:
        """One HTTP exchange: the answer, or an error kind for the metrics."""
        if self._transport is None:
            raise RuntimeError("AirbnbClient used outside 'async with AirbnbClient(...)'")
        if params:
            url = f"{url}?{urlencode(params)}"
        jar, path = self._jar, urlsplit(url).path or "/"
        if jar is not None:
            cookie = jar.header(path, self._secure, self._wall_clock().timestamp())
            if cookie:
                headers["Cookie"] = cookie  # last, where the replayed cookie goes too
        started = time.perf_counter()
        try:
            answer = await self._transport.request(method, url, headers, data)
        except TransportTimeout:
            AIRBNB_REQUESTS.labels(op, "timeout").inc()
            return "timeout"
        except TransportError:
            AIRBNB_REQUESTS.labels(op, "connection_error").inc()
            return "connection_error"
        finally:
            AIRBNB_REQUEST_SECONDS.labels(op).observe(time.perf_counter() - started)
        AIRBNB_REQUESTS.labels(op, str(answer.status)).inc()
        if jar is not None:
            jar.absorb(answer.set_cookies, path, self._wall_clock().timestamp())
        return _Answer(
            url=answer.url,
            status=answer.status,
            content_type=answer.headers.get("content-type"),
            location=answer.headers.get("location"),
            retry_after=answer.headers.get("retry-after"),
            body=answer.body,
        )

    async def _retrying(self, op: str, attempt: Callable[[], Awaitable[_Outcome]]) -> Any:
        """Run ``attempt`` until it is OK, paced, with the retry policy of the module doc."""
        for n in range(1, self.max_attempts + 1):
            await self._pace()
            outcome = await attempt()
            kind, reason = outcome.kind, outcome.reason
            if kind is Kind.OK:
                return outcome.result
            if kind is Kind.RATE_LIMITED:
                AIRBNB_RATE_LIMITED.labels(op).inc()
            if kind is Kind.AUTH:
                AIRBNB_AUTH_FAILURES.inc()
                log.warning(
                    "Airbnb rejected the session",
                    extra={"operation": op, "reason": reason, "account_id": self.account_id},
                )
                raise AuthError(f"{op}: Airbnb session expired or rejected ({reason})")
            if kind is Kind.REJECTED:
                raise RejectedRequestError(f"{op}: Airbnb refused the request ({reason})")
            if not kind.retryable:
                raise UnexpectedResponseError(f"{op}: {reason}")
            if n == self.max_attempts:
                raise self._exhausted(op, kind, reason)
            delay = backoff_delay(n, self.backoff_base_s, self.backoff_cap_s, self._rng.random)
            if kind is Kind.RATE_LIMITED:
                waited = parse_retry_after(
                    outcome.retry_after, self._wall_clock(), self.retry_after_cap_s
                )
                delay = delay if waited is None else waited
            AIRBNB_RETRIES.labels(op, reason).inc()
            log.info(
                "retrying Airbnb request",
                extra={
                    "operation": op,
                    "reason": reason,
                    "attempt": n,
                    "delay_s": round(delay, 3),
                    "account_id": self.account_id,
                },
            )
            await self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    async def preflight(self) -> str:
        """Load the insights page as a browser does; return the URL the session landed on.

        Raises AuthError for a login redirect (a dead session), and the retry policy's
        errors for an Airbnb that keeps failing.
        """
        url = f"{self.base_url}{PREFLIGHT_PATH}"
        for _hop in range(MAX_PREFLIGHT_REDIRECTS + 1):
            try:
                step: PreflightStep = await self._retrying(
                    PREFLIGHT, functools.partial(self._preflight_hop, url)
                )
            except AuthError:
                AIRBNB_PREFLIGHTS.labels("login_redirect").inc()
                raise
            except Exception:
                AIRBNB_PREFLIGHTS.labels("error").inc()
                raise
            if step.next_url is None:
                AIRBNB_PREFLIGHTS.labels("live").inc()
                self.referer = url
                return url
            if urlsplit(step.next_url).hostname != self._host:
                AIRBNB_PREFLIGHTS.labels("error").inc()
                raise UnexpectedResponseError(f"{PREFLIGHT}: redirected away from Airbnb")
            url = step.next_url
        AIRBNB_PREFLIGHTS.labels("error").inc()
        raise UnexpectedResponseError(f"{PREFLIGHT}: more than {MAX_PREFLIGHT_REDIRECTS} redirects")

    async def _preflight_hop(self, url: str) -> _Outcome:
        answer = await self._exchange(PREFLIGHT, "GET", url, self.navigation_headers())
        if isinstance(answer, str):
            return _Outcome(Kind.TRANSIENT, answer)
        step = classify_preflight(answer.url, answer.status, answer.location)
        return _Outcome(step.kind, step.reason, answer.retry_after, step)

    async def post(self, query: PersistedQuery, body: dict[str, Any]) -> dict[str, Any]:
        """Send one persisted query and return Airbnb's JSON answer.

        Raises AuthError, RateLimitedError, TransientError or UnexpectedResponseError.
        """
        data = orjson.dumps(body)
        result: dict[str, Any] = await self._retrying(
            query.operation_name, lambda: self._graphql_attempt(query, data)
        )
        return result

    async def _graphql_attempt(self, query: PersistedQuery, data: bytes) -> _Outcome:
        op = query.operation_name
        headers = self.graphql_headers()
        headers["X-Client-Request-Id"] = str(uuid.uuid4())
        answer = await self._exchange(
            op,
            "POST",
            f"{self.base_url}{query.path}",
            headers,
            data=data,
            params={"operationName": op, "locale": "en", "currency": "USD"},
        )
        if isinstance(answer, str):
            return _Outcome(Kind.TRANSIENT, answer)
        verdict = classify(answer.status, answer.content_type, answer.body)
        return _Outcome(verdict.kind, verdict.reason, answer.retry_after, verdict.payload)

    def _exhausted(self, op: str, kind: Kind, reason: str) -> Exception:
        message = f"{op}: gave up after {self.max_attempts} attempts, last: {reason}"
        if kind is Kind.RATE_LIMITED:
            return RateLimitedError(message)
        if kind is Kind.MALFORMED:
            return UnexpectedResponseError(message)
        return TransientError(message)
