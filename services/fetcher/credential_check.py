"""Credential checks: is this cookie a live session of this host? (issue 16, item 3)

The admin asks before it saves credentials (``validate=true``) with a core NATS request
on ``airbnb.credentials.check``; the fetchers answer as one queue group, so exactly one
of them takes each check. The admin never talks to Airbnb itself.

A check is what a sync starts with, through the same client and the same code path:
the preflight (a page load of the dashboard; a login redirect is an expired session),
then one ListingsSectionQuery, whose listings are counted. Nothing else: no KV, no
JetStream, no rows.

* The client is a fresh one (its own curl session and cookie jar), so a check never
  touches the jar of a sync of the same account that runs meanwhile.
* Cookies Airbnb rotates during the check stay in that jar and are dropped with it:
  the account may not even exist yet (nothing may be saved for it), and the cookie the
  admin then saves is the one it was given, still valid for a day or more
  (docs/sessions.md).
* Bounded: at most ``FETCHER_CHECK_CONCURRENCY`` at once per process, each within
  ``FETCHER_CHECK_TIMEOUT_S`` (slot wait included), and at most
  :data:`QUEUED_PER_SLOT` times as many waiting; beyond that the check is answered
  ``unavailable`` at once rather than after the admin stopped waiting.
* The cookie is decrypted in this process's memory only, goes into the client's jar
  and nowhere else; no reason built here holds it, and nothing is logged of it.

The mapping from what happened to an answer (:func:`verdict_of_error`,
:func:`live`, :func:`another_host`) is pure; :func:`check` and
:class:`CheckResponder` do the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.fetcher.pipeline import clip_reason, listings_reported
from services.fetcher.settings import FetcherSettings
from services.fetcher.sync import airbnb_client
from shared import topology
from shared.airbnb import cookies
from shared.airbnb.errors import AirbnbError, AuthError, RejectedRequestError
from shared.airbnb.flatteners import ListingsPage, flatten_listings_page
from shared.airbnb.operations import LISTINGS_SECTION
from shared.airbnb.payloads import listings_section_payload
from shared.crypto import CredentialCipher, CredentialsError
from shared.jetstream import describe_error
from shared.logs import log_context
from shared.messages import (
    CredentialCheck,
    CredentialCheckResult,
    MessageDecodeError,
    decode,
    encode,
)
from shared.metrics import CREDENTIAL_CHECKS

log = logging.getLogger("sync_airbnb.fetcher.credential_check")

# Checks waiting for a slot, per slot, before more are refused at once.
QUEUED_PER_SLOT = 4

UNDECRYPTABLE = (
    "the fetcher cannot decrypt the credentials with any key in SECRET_KEYS: the admin "
    "and the fetchers disagree on SECRET_KEYS"
)


# --- the answers (pure) ---------------------------------------------------------------------


def unavailable(reason: str) -> CredentialCheckResult:
    return CredentialCheckResult(outcome="unavailable", reason=clip_reason(reason))


def another_host(cookie: dict[str, str], account_id: str) -> CredentialCheckResult | None:
    """``other_host`` when the cookie's ``_user_attributes`` names another host (or none).

    The admin's intake refuses such a cookie already; this is the fetcher's own check, so
    that no check ever loads Airbnb's pages with one host's session for another account.
    """
    uid = cookies.user_id(cookie)
    if uid == account_id:
        return None
    named = "names no host" if uid is None else "is another host's"
    return CredentialCheckResult(
        outcome="other_host",
        reason=f"the session's _user_attributes {named}, not account {account_id}'s",
    )


def verdict_of_error(exc: AirbnbError) -> CredentialCheckResult:
    """What a failure of the preflight or of ListingsSectionQuery says of the credentials."""
    reason = clip_reason(str(exc))
    if isinstance(exc, AuthError):
        return CredentialCheckResult(outcome="expired", reason=reason)
    if isinstance(exc, RejectedRequestError):
        return CredentialCheckResult(outcome="rejected", reason=reason)
    # 5xx, 429, timeouts, a malformed answer: Airbnb said nothing about the session.
    return unavailable(f"Airbnb did not give an answer: {reason}")


def live(page: ListingsPage) -> CredentialCheckResult:
    """The listings Airbnb reports (its count when it returned fewer, as a sync's job does)."""
    returned = len({listing.listing_id for listing in page.listings})
    count = listings_reported(page) or returned
    noun = "listing" if count == 1 else "listings"
    return CredentialCheckResult(
        outcome="live", listings=count, reason=f"the session is live: {count} {noun}"
    )


# --- the check (I/O) ------------------------------------------------------------------------


async def check(
    settings: FetcherSettings, cipher: CredentialCipher, req: CredentialCheck
) -> CredentialCheckResult:
    """The preflight and one ListingsSectionQuery with the request's credentials."""
    try:
        cookie = cipher.decrypt(req.credentials.cookie_token)
    except CredentialsError:
        return unavailable(UNDECRYPTABLE)
    auth = cookies.auth_only(cookies.parse_cookie_header(cookie))
    wrong = another_host(auth, req.account_id)
    if wrong is not None:
        return wrong
    client = airbnb_client(
        settings, req.account_id, cookies.format_cookie_header(auth), req.credentials
    )
    async with client:
        try:
            await client.preflight()
            page = flatten_listings_page(
                await client.post(LISTINGS_SECTION, listings_section_payload())
            )
        except AirbnbError as exc:  # MalformedResponseError included
            return verdict_of_error(exc)
    # The jar (with whatever Airbnb rotated) is closed with the client, unsaved.
    return live(page)


class CheckResponder:
    """Answers ``CredentialCheck`` requests, each as its own task, within the bounds."""

    def __init__(self, nc: NATS, settings: FetcherSettings, cipher: CredentialCipher) -> None:
        self._nc = nc
        self._settings = settings
        self._cipher = cipher
        self._slots = asyncio.Semaphore(settings.fetcher_check_concurrency)
        self._limit = settings.fetcher_check_concurrency * (1 + QUEUED_PER_SLOT)
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_request(self, msg: Msg) -> None:
        """The subscription's callback: it must return at once (NATS runs them in turn)."""
        if len(self._tasks) >= self._limit:
            await self._reply(msg, unavailable("every fetcher slot for checks is busy; retry"))
            return
        task = asyncio.create_task(self._answer(msg), name="credential-check")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish(self) -> None:
        """Wait for the checks in flight (each bounded by its timeout) to be answered."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _answer(self, msg: Msg) -> None:
        try:
            req = decode(CredentialCheck, msg.data)
        except MessageDecodeError as exc:
            log.error("undecodable credential check: %s", exc)
            await self._reply(msg, unavailable(f"undecodable CredentialCheck: {exc}"))
            return
        timeout_s = self._settings.fetcher_check_timeout_s
        with log_context(account_id=req.account_id):
            started = time.monotonic()
            try:
                async with asyncio.timeout(timeout_s):
                    async with self._slots:
                        result = await check(self._settings, self._cipher, req)
            except TimeoutError:
                result = unavailable(f"no answer from Airbnb within {timeout_s:g} s")
            except Exception as exc:
                log.exception("credential check failed")
                result = unavailable(f"the check failed: {describe_error(exc)}")
            CREDENTIAL_CHECKS.labels(result.outcome).inc()
            log.info(
                "credentials checked: %s",
                result.outcome,
                extra={
                    "outcome": result.outcome,
                    "listings": result.listings,
                    "reason": result.reason,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
            await self._reply(msg, result)

    async def _reply(self, msg: Msg, result: CredentialCheckResult) -> None:
        if not msg.reply:
            return  # a publish, not a request: nobody waits for the answer
        try:
            await msg.respond(encode(result))
        except Exception as exc:  # NATS away: the admin's request times out (its 503)
            log.warning("could not answer a credential check: %s", describe_error(exc))


async def serve_checks(
    nc: NATS, settings: FetcherSettings, cipher: CredentialCipher, stopping: asyncio.Event
) -> None:
    """Answer checks until ``stopping``; then take no more and answer those in flight."""
    responder = CheckResponder(nc, settings, cipher)
    sub = await nc.subscribe(
        topology.CREDENTIAL_CHECKS,
        queue=topology.CREDENTIAL_CHECKS_QUEUE,
        cb=responder.on_request,
    )
    log.info(
        "answering credential checks (up to %d at once, %g s each)",
        settings.fetcher_check_concurrency,
        settings.fetcher_check_timeout_s,
    )
    try:
        await stopping.wait()
    finally:
        await sub.unsubscribe()
        await responder.finish()
