"""Credentials checked before they are saved (issue 16, item 3).

The admin never talks to Airbnb. A write with ``validate=true`` (and ``POST /connect``)
asks a fetcher over NATS request/reply (``airbnb.credentials.check``, one fetcher of the
queue group answers; services/fetcher/credential_check.py) to run the preflight and one
ListingsSectionQuery with the credentials, encrypted as in a sync request, and saves
only when the answer is ``live``:

========================  =================================================================
the fetcher's answer      the API's
========================  =================================================================
live                      the write goes on; the answer says ``credentials_check:
                          {"outcome": "live", "listings": N}``
expired, other_host,      422 ``credentials_rejected``, ``reason`` the outcome, ``detail``
rejected                  the fetcher's reason, ``fields`` naming ``airbnb_cookie``
unavailable               503 (Retry-After): Airbnb failed or was slow, the fetchers were
                          busy; nothing is said about the credentials
no fetcher, no answer     503 (Retry-After) after at most ADMIN_VALIDATE_TIMEOUT_S
within the timeout
========================  =================================================================

The check runs before the write's transaction opens: no row is locked while a fetcher
talks to Airbnb, and nothing is written unless it says ``live``.

:func:`answer` is the pure rule. :class:`CredentialChecker` does the asking: ``check``
is the one call (``POST /connect`` makes it); ``check_create`` and ``check_patch`` put
the account writes' bodies into it.
"""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg
from nats.aio.client import Client as NATS
from nats.errors import ConnectionClosedError, NoRespondersError, StaleConnectionError
from nats.errors import TimeoutError as NatsTimeoutError

from services.admin import rules, store
from services.admin.errors import ApiError, not_found, unavailable
from services.admin.models import AccountCreate, AccountPatch, CredentialsCheckOut, FieldError
from shared import topology
from shared.crypto import CredentialCipher
from shared.messages import (
    CredentialCheck,
    CredentialCheckResult,
    EncryptedCredentials,
    MessageDecodeError,
    decode,
    encode,
)

log = logging.getLogger("sync_airbnb.admin.credential_check")

COOKIE_FIELD = "airbnb_cookie"
UNAVAILABLE = "credentials_check_unavailable"
NOTHING_SAVED = "nothing was saved"

_REJECTED_WHY = {
    "expired": "Airbnb sent the session to its login page (logged out, revoked or too old)",
    "other_host": "the session is another host's",
    "rejected": "Airbnb refused the request",
}


def credentials_rejected(outcome: str, reason: str) -> ApiError:
    why = _REJECTED_WHY.get(outcome, outcome)
    return ApiError(
        422,
        "credentials_rejected",
        f"{why}: {reason}; {NOTHING_SAVED}" if reason else f"{why}; {NOTHING_SAVED}",
        reason=outcome,
        fields=[FieldError(field=COOKIE_FIELD, message=why, type=f"credentials_{outcome}")],
    )


def check_unavailable(detail: str) -> ApiError:
    return unavailable(UNAVAILABLE, f"{detail}; {NOTHING_SAVED}, try again")


def answer(result: CredentialCheckResult) -> CredentialsCheckOut:
    """The live answer, or the ApiError of any other (the pure rule of the table above)."""
    if result.outcome == "live":
        return CredentialsCheckOut(outcome="live", listings=result.listings or 0)
    if result.outcome == "unavailable":
        raise check_unavailable(f"the credentials could not be checked: {result.reason}")
    raise credentials_rejected(result.outcome, result.reason)


class CredentialChecker:
    """Asks one fetcher whether credentials hold a live session of their host."""

    def __init__(
        self, nc: NATS, pool: asyncpg.Pool, cipher: CredentialCipher, timeout_s: float
    ) -> None:
        self._nc = nc
        self._pool = pool
        self._cipher = cipher
        self.timeout_s = timeout_s

    async def check_create(
        self, body: AccountCreate, scope_customer: str | None = None
    ) -> CredentialsCheckOut:
        """createOrUpdateAccount with validate=true, before the write (which takes the
        cookie in again: intake is pure, and its 422 comes first either way).

        ``scope_customer`` (a customer key's customer): another customer's account is the
        write's 404 before any check, so no check runs for an account the caller may not
        see."""
        cookie = rules.intake_cookie(body.airbnb_cookie, body.account_id)
        if scope_customer is not None and (
            await store.account_exists(self._pool, body.account_id)
            and not await store.account_exists(self._pool, body.account_id, scope_customer)
        ):
            raise not_found("account", body.account_id)
        return await self.check(
            account_id=body.account_id,
            cookie=cookie,
            x_client_version=body.x_client_version,
            user_agent=body.user_agent,
        )

    async def check_patch(
        self, account_id: str, body: AccountPatch, scope_customer: str | None = None
    ) -> CredentialsCheckOut | None:
        """patchAccount with validate=true: None when there is nothing to check (no cookie,
        or an account the write refuses anyway: missing, or another customer's for a
        customer key, is 404 here; deleted is the write's 409). The browser the cookie goes
        with is the body's, else the stored one."""
        if "airbnb_cookie" not in body.model_fields_set or body.airbnb_cookie is None:
            return None
        cookie = rules.intake_cookie(body.airbnb_cookie, account_id)
        current = await store.account(self._pool, account_id, scope_customer)
        if current is None:
            raise not_found("account", account_id)
        if current["deleted_at"] is not None:
            return None
        return await self.check(
            account_id=account_id,
            cookie=cookie,
            x_client_version=body.x_client_version or current["x_client_version"],
            user_agent=body.user_agent or current["user_agent"],
        )

    async def check(
        self, *, account_id: str, cookie: str, x_client_version: str, user_agent: str
    ) -> CredentialsCheckOut:
        """``cookie`` as intake left it (the auth group, a Cookie header). Raises the 422
        or the 503 of :func:`answer`; the cookie is encrypted before it leaves."""
        request = CredentialCheck(
            account_id=account_id,
            credentials=EncryptedCredentials(
                cookie_token=self._cipher.encrypt(cookie),
                x_client_version=x_client_version,
                user_agent=user_agent,
            ),
            requested_at=dt.datetime.now(dt.UTC),
        )
        try:
            reply = await self._nc.request(
                topology.CREDENTIAL_CHECKS, encode(request), timeout=self.timeout_s
            )
        except NoRespondersError:
            raise check_unavailable("no fetcher is running to check the credentials") from None
        except (NatsTimeoutError, TimeoutError):
            raise check_unavailable(
                f"no fetcher answered the credential check within {self.timeout_s:g} s"
            ) from None
        except (ConnectionClosedError, StaleConnectionError, OSError):
            raise check_unavailable("NATS is not reachable to check the credentials") from None
        try:
            result = decode(CredentialCheckResult, reply.data)
        except MessageDecodeError as exc:
            log.error("undecodable credential check reply: %s", exc)
            raise check_unavailable("a fetcher's answer was not understood") from None
        log.info(
            "credentials of account %s checked: %s",
            account_id,
            result.outcome,
            extra={"outcome": result.outcome, "listings": result.listings},
        )
        return answer(result)
