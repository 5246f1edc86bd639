"""The HTTP client for Airbnb's private GraphQL API: one instance per account sync.

``async with AirbnbClient(cookie=..., x_client_version=..., user_agent=...) as client:``
opens one ``aiohttp.ClientSession`` for the account and ``await client.post(query, body)``
sends ``POST {base_url}/api/v3/{operationName}/{sha256Hash}`` and returns the parsed
JSON body.

Headers, copied from what the host dashboard in a browser sends:

=====================================  ==============================================
``Cookie``                             the account's session (``_aat``,
                                       ``_user_attributes``...), given by the operator
``User-Agent``                         the browser the cookie was taken from; Airbnb
                                       ties sessions to it
``X-Client-Version``                   the web app build the cookie was taken with
``X-Airbnb-API-Key``                   the public key of Airbnb's web app (the same in
                                       every browser, not a secret); constructor arg
``X-Airbnb-GraphQL-Platform``          ``web``
``X-Airbnb-GraphQL-Platform-Client``   ``minimalist-niobe``, the dashboard's GraphQL
                                       client
``X-CSRF-Without-Token``               ``1``: how the web app opts out of CSRF tokens
                                       for GraphQL
``Content-Type``                       ``application/json``
``Origin`` / ``Referer``               the base URL and its performance dashboard page
``X-Request-Id``                       a fresh UUID per attempt, logged with retries so
                                       a request can be followed
=====================================  ==============================================

Behaviour:

- Pacing: at least ``min_interval_s`` between the starts of two requests of this
  client (retries included), plus a random ``[0, pacing_jitter * min_interval_s)``;
  ``min_interval_s=0`` turns pacing off.
- Retries, at most ``max_attempts`` attempts in all: timeouts, connection errors
  and 5xx back off exponentially with full jitter; 429 waits ``Retry-After``
  (seconds or HTTP date, capped at ``retry_after_cap_s``) or backs off when it is
  absent; a 2xx body that is not JSON (and not a login page) is retried as
  transient. Out of attempts: ``TransientError``, ``RateLimitedError`` or
  ``UnexpectedResponseError`` (malformed JSON).
- An expired session, in any of its four forms, raises ``AuthError`` at once.
  Any other 4xx, or a GraphQL error without data, raises ``UnexpectedResponseError``
  at once.
- Each attempt has its own deadline (``aiohttp.ClientTimeout(total=timeout_s)``).
- Metrics: every attempt in ``AIRBNB_REQUESTS{operation,status}`` (HTTP status, or
  ``timeout``/``connection_error``) and ``AIRBNB_REQUEST_SECONDS``; retries in
  ``AIRBNB_RETRIES{operation,reason}``; 429s in ``AIRBNB_RATE_LIMITED``; expired
  sessions in ``AIRBNB_AUTH_FAILURES``.

The cookie is never logged, never put in an exception message and never shown
by ``repr``; aiohttp's own exceptions (which can carry request headers) are not
chained into the errors raised here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson

from shared.airbnb.errors import (
    AuthError,
    RateLimitedError,
    TransientError,
    UnexpectedResponseError,
)
from shared.airbnb.http_policy import Kind, Verdict, backoff_delay, classify, parse_retry_after
from shared.airbnb.operations import PersistedQuery
from shared.metrics import (
    AIRBNB_AUTH_FAILURES,
    AIRBNB_RATE_LIMITED,
    AIRBNB_REQUEST_SECONDS,
    AIRBNB_REQUESTS,
    AIRBNB_RETRIES,
)

log = logging.getLogger("sync_airbnb.airbnb.client")

DEFAULT_BASE_URL = "https://www.airbnb.com"
# The key Airbnb's web app embeds in every page; public, identical for every visitor.
DEFAULT_API_KEY = "d306zoyjsyarp7ifhu67rjxn52tv0t20"
DASHBOARD_PATH = "/hosting/insights/conversion"

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


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
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min_interval_s < 0 or pacing_jitter < 0:
            raise ValueError("min_interval_s and pacing_jitter must be >= 0")
        self._cookie = cookie
        self._x_client_version = x_client_version
        self._user_agent = user_agent
        self.base_url = base_url.rstrip("/")
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
        self._session: aiohttp.ClientSession | None = None
        self._pace_lock = asyncio.Lock()
        self._next_start: float | None = None

    def __repr__(self) -> str:
        return f"AirbnbClient(base_url={self.base_url!r}, account_id={self.account_id!r})"

    def headers(self) -> dict[str, str]:
        """The headers every request carries (holds the cookie: never log this)."""
        return {
            "Cookie": self._cookie,
            "User-Agent": self._user_agent,
            "X-Client-Version": self._x_client_version,
            "X-Airbnb-API-Key": self._api_key,
            "X-Airbnb-GraphQL-Platform": "web",
            "X-Airbnb-GraphQL-Platform-Client": "minimalist-niobe",
            "X-CSRF-Without-Token": "1",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Origin": self.base_url,
            "Referer": f"{self.base_url}{DASHBOARD_PATH}",
        }

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            headers=self.headers(),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            # The cookie is the operator's, verbatim; Set-Cookie answers must not change it.
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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

    async def _attempt(
        self, query: PersistedQuery, data: bytes
    ) -> tuple[Verdict, str | None] | str:
        """One HTTP exchange: (verdict, Retry-After header) or an error kind for the metrics."""
        if self._session is None:
            raise RuntimeError("AirbnbClient.post outside 'async with AirbnbClient(...)'")
        op = query.operation_name
        url = f"{self.base_url}{query.path}"
        params = {"operationName": op, "locale": "en", "currency": "USD"}
        started = time.perf_counter()
        try:
            async with self._session.post(
                url, data=data, params=params, headers={"X-Request-Id": str(uuid.uuid4())}
            ) as response:
                body = await response.read()
                status = response.status
                content_type = response.headers.get("Content-Type")
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            AIRBNB_REQUESTS.labels(op, "timeout").inc()
            return "timeout"
        except aiohttp.ClientError:
            AIRBNB_REQUESTS.labels(op, "connection_error").inc()
            return "connection_error"
        finally:
            AIRBNB_REQUEST_SECONDS.labels(op).observe(time.perf_counter() - started)
        AIRBNB_REQUESTS.labels(op, str(status)).inc()
        return classify(status, content_type, body), retry_after

    async def post(self, query: PersistedQuery, body: dict[str, Any]) -> dict[str, Any]:
        """Send one persisted query and return Airbnb's JSON answer.

        Raises AuthError, RateLimitedError, TransientError or UnexpectedResponseError.
        """
        op = query.operation_name
        data = orjson.dumps(body)
        for attempt in range(1, self.max_attempts + 1):
            await self._pace()
            outcome = await self._attempt(query, data)
            retry_after: str | None = None
            if isinstance(outcome, str):
                kind, reason = Kind.TRANSIENT, outcome
            else:
                verdict, retry_after = outcome
                kind, reason = verdict.kind, verdict.reason
                if kind is Kind.OK:
                    assert verdict.payload is not None
                    return verdict.payload
            if kind is Kind.RATE_LIMITED:
                AIRBNB_RATE_LIMITED.labels(op).inc()
            if kind is Kind.AUTH:
                AIRBNB_AUTH_FAILURES.inc()
                log.warning(
                    "Airbnb rejected the session",
                    extra={"operation": op, "reason": reason, "account_id": self.account_id},
                )
                raise AuthError(f"{op}: Airbnb session expired or rejected ({reason})")
            if not kind.retryable:
                raise UnexpectedResponseError(f"{op}: {reason}")
            if attempt == self.max_attempts:
                raise self._exhausted(op, kind, reason)

            delay = backoff_delay(
                attempt, self.backoff_base_s, self.backoff_cap_s, self._rng.random
            )
            if kind is Kind.RATE_LIMITED:
                waited = parse_retry_after(retry_after, self._wall_clock(), self.retry_after_cap_s)
                delay = delay if waited is None else waited
            AIRBNB_RETRIES.labels(op, reason).inc()
            log.info(
                "retrying Airbnb request",
                extra={
                    "operation": op,
                    "reason": reason,
                    "attempt": attempt,
                    "delay_s": round(delay, 3),
                    "account_id": self.account_id,
                },
            )
            await self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _exhausted(self, op: str, kind: Kind, reason: str) -> Exception:
        message = f"{op}: gave up after {self.max_attempts} attempts, last: {reason}"
        if kind is Kind.RATE_LIMITED:
            return RateLimitedError(message)
        if kind is Kind.MALFORMED:
            return UnexpectedResponseError(message)
        return TransientError(message)
