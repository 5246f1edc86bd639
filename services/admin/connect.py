"""Connect tokens and ``POST /api/v1/connect``: a host sends their own Airbnb session.

An operator (an admin key) or a customer (its customer key) creates a connect token for
one account, or for "a new account of this customer", and sends the host the connect
link ``<server>/connect#token=...``. The browser extension (extension/) posts the host's
airbnb.com cookies with that token as ``Authorization: Bearer <token>``; nothing else
authenticates the call, and the token can do nothing else.

The rules, all enforced here (and shown by tests/system/test_connect_tokens.py):

- A token is 32 random bytes, shown once; the database keeps its SHA-256 only
  (:func:`token_digest`). It expires (``ADMIN_CONNECT_TOKEN_DAYS``, 7 by default) and can
  be revoked; an unknown, expired or revoked token is a 401 and nothing is read or
  written past the token itself.
- A token works for its account only: cookies of another Airbnb host are a 403 and
  nothing changes. A new-account token creates the account at its first use (with the
  token's customer) and is bound to it from then on, so it creates one account at most.
- The cookies go through the same intake as ``POST /accounts`` (the auth group only,
  ``_user_attributes`` naming the host) and are checked by a fetcher first unless the body
  says ``"validate": false``; a refused session saves nothing. A changed cookie replaces
  the stored one, bumps ``credentials_version`` and clears the needs-new-credentials mark.

The token is checked twice: once before the (slow) credential check, which must not run
for a caller without a usable token, and again under ``FOR UPDATE`` in the transaction that
writes, so a token revoked meanwhile, or two first uses of a new-account token at once,
cannot both go through.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import uuid
from dataclasses import dataclass

import asyncpg

from services.admin import rules, store
from services.admin.accounts import announce
from services.admin.audit import CREDENTIALS
from services.admin.auth import Caller
from services.admin.credential_check import CredentialChecker
from services.admin.errors import ApiError, conflict, field_error, not_found
from services.admin.models import (
    ACCOUNT_ID_PATTERN,
    AccountCreate,
    ConnectBody,
    ConnectOut,
    ConnectTokenCreated,
    ConnectTokenOut,
)
from services.admin.scopes import own_customer
from shared.airbnb import cookies
from shared.crypto import CredentialCipher
from shared.db import Conn

log = logging.getLogger("sync_airbnb.admin.connect")

# A recognisable prefix, so a token pasted somewhere it should not be (a log, a ticket) can
# be found by a scanner, as tests/system/test_connect_tokens.py's leak check does.
TOKEN_PREFIX = "sact_"
CONNECT_PATH = "/connect"
# The route the extension posts to (services/admin/routes.py).
CONNECT_ROUTE = "/api/v1/connect"
BEARER = "Bearer "
_ACCOUNT_ID = re.compile(ACCOUNT_ID_PATTERN)
# What a connect writes besides the cookie, as the audit entry names them.
_FIELDS = ("user_agent", "x_client_version")


def new_token() -> tuple[str, str]:
    """(the token to show once, the digest to store)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    # SHA-256 without salt: the token is 256 random bits, so no dictionary reaches it and
    # a slow hash would only slow every connect down.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header, or a 401."""
    if not header or not header.startswith(BEARER) or not header[len(BEARER) :].strip():
        raise ApiError(
            401,
            "missing_connect_token",
            "send the connect token as Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="connect"'},
        )
    return header[len(BEARER) :].strip()


def _invalid(detail: str) -> ApiError:
    return ApiError(
        401,
        "invalid_connect_token",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="connect", error="invalid_token"'},
    )


def usable(row: asyncpg.Record | None) -> asyncpg.Record:
    """The token's row when it may be used, else the 401 that says why."""
    if row is None:
        raise _invalid("the connect token is not valid")
    if row["status"] == "revoked":
        raise _invalid("the connect token was revoked; ask for a new connect link")
    if row["status"] == "expired":
        raise _invalid("the connect token has expired; ask for a new connect link")
    return row


@dataclass(frozen=True, slots=True)
class Target:
    account_id: str
    cookie: str


def target(bound_account: str | None, body: ConnectBody) -> Target:
    """Which account the cookies connect, and the auth group to store (pure).

    The account is the host the cookies' ``_user_attributes`` names; it must be the
    token's account (403 otherwise), and the body's ``account_id``, when given, must
    agree with the cookies (422).
    """
    given = [{"name": c.name, "value": c.value} for c in body.cookies]
    owner = cookies.user_id(cookies.from_objects(given))
    if owner is None or not _ACCOUNT_ID.match(owner):
        raise field_error(
            "cookies", "has no _user_attributes cookie naming an Airbnb host", "cookie_intake"
        )
    if body.account_id is not None and body.account_id != owner:
        raise field_error(
            "account_id", "is not the host the cookies' _user_attributes names", "cookie_intake"
        )
    if bound_account is not None and owner != bound_account:
        raise ApiError(
            403,
            "wrong_account",
            f"this connect token connects Airbnb account {bound_account}; the session sent "
            "is another host's (log in to Airbnb as that host and try again)",
        )
    try:
        cookie = cookies.intake(given, owner)
    except cookies.CookieIntakeError as exc:
        raise field_error("cookies", str(exc), "cookie_intake") from None
    return Target(owner, cookie)


def token_out(row: asyncpg.Record) -> ConnectTokenOut:
    return ConnectTokenOut(
        token_id=row["token_id"],
        account_id=row["account_id"],
        for_new_account=row["for_new_account"],
        customer_id=row["customer_id"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        used_at=row["used_at"],
        uses=row["uses"],
        status=row["status"],
    )


class ConnectTokens:
    """Create, list and revoke connect tokens; connect an account with one."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        cipher: CredentialCipher,
        *,
        default_days: int,
        default_client_version: str,
        check: CredentialChecker | None,
    ) -> None:
        self._pool = pool
        self._cipher = cipher
        self._default_days = default_days
        self._default_client_version = default_client_version
        self._check = check

    # --- tokens -----------------------------------------------------------------------------

    async def create(
        self,
        who: Caller,
        *,
        account_id: str | None,
        customer_id: str | None,
        days: int | None,
        server: str,
    ) -> ConnectTokenCreated:
        """A token for ``account_id``, or (None) for a new account of ``customer_id``.

        A customer key's account must be its customer's (404 otherwise, as for a missing
        one), and a new account it makes a token for is its customer's (naming another is
        a 422 on ``customer_id``, as for an account write).
        """
        scope_customer = who.customer_filter
        token, digest = new_token()
        async with self._pool.acquire() as conn, conn.transaction():
            if account_id is not None:
                row = await store.connectable_account(conn, account_id, scope_customer)
                if row is None:
                    raise not_found("account", account_id)
                if row["deleted_at"] is not None:
                    raise rules.deleted_conflict(account_id)
                customer_id = row["customer_id"]
            else:
                # A customer key's new account is its own customer's (another is a 422).
                customer_id = own_customer(scope_customer, customer_id, required=False)
            saved = await store.insert_connect_token(
                conn,
                uuid.uuid4(),
                digest,
                account_id=account_id,
                customer_id=customer_id,
                created_by=who.name,
                days=days or self._default_days,
            )
            await store.record(
                conn,
                who,
                "connect_token_created",
                account_id=account_id,
                detail={
                    "token_id": str(saved["token_id"]),
                    "for_new_account": account_id is None,
                    "customer_id": customer_id,
                    "expires_at": saved["expires_at"].isoformat(),
                },
            )
        log.info(
            "connect token %s created for %s",
            saved["token_id"],
            f"account {account_id}" if account_id else "a new account",
        )
        return ConnectTokenCreated(
            **token_out(saved).model_dump(),
            token=token,
            connect_link=f"{server}{CONNECT_PATH}#token={token}",
        )

    async def list_for(self, who: Caller, account_id: str) -> list[ConnectTokenOut]:
        async with self._pool.acquire() as conn:
            row = await store.connectable_account(conn, account_id, who.customer_filter)
            if row is None:
                raise not_found("account", account_id)
            return [token_out(r) for r in await store.connect_tokens_of(conn, account_id)]

    async def revoke(
        self, who: Caller, token_id: uuid.UUID, account_id: str | None
    ) -> ConnectTokenOut:
        """Revoke the token (of ``account_id`` when given); revoking a revoked one is a
        no-op that answers it as it is."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await store.revoke_connect_token(conn, token_id, account_id, who.customer_filter)
            if row is None:
                raise not_found("connect token", token_id)
            await store.record(
                conn,
                who,
                "connect_token_revoked",
                account_id=row["account_id"],
                detail={"token_id": str(token_id)},
            )
        log.info("connect token %s revoked", token_id)
        return token_out(row)

    # --- POST /connect ----------------------------------------------------------------------

    async def token_caller(self, presented: str, client: str) -> Caller:
        """The caller a usable token is (named ``connect-token:<id>``), or the 401."""
        row = usable(await store.connect_token(self._pool, token_digest(presented)))
        return Caller(
            f"connect-token:{row['token_id']}",
            "connect",
            row["customer_id"],
            client,
            token_id=row["token_id"],
        )

    async def connect(self, who: Caller, presented: str, body: ConnectBody) -> ConnectOut:
        """``who``: the :meth:`token_caller` of ``presented``."""
        digest = token_digest(presented)
        first = usable(await store.connect_token(self._pool, digest))
        aim = target(first["account_id"], body)
        listings: int | None = None
        validated = False
        if body.validate_ and self._check is not None:
            checked = await self._check.check(
                account_id=aim.account_id,
                cookie=aim.cookie,
                x_client_version=body.x_client_version or self._default_client_version,
                user_agent=body.user_agent,
            )
            listings = checked.listings
            validated = True
        async with self._pool.acquire() as conn, conn.transaction():
            row = usable(await store.hold_connect_token(conn, digest))
            if row["account_id"] != first["account_id"]:
                # Bound meanwhile by a concurrent first use: only that account now.
                aim = target(row["account_id"], body)
            if row["account_id"] is None:
                created, version, fields = await self._create(conn, row, aim, body)
            else:
                created, version, fields = await self._update(conn, aim, body)
            await store.mark_connect_token_used(conn, row["token_id"], aim.account_id)
            await store.record(
                conn,
                who,
                "account_connected",
                account_id=aim.account_id,
                fields=fields,
                detail={
                    "token_id": str(row["token_id"]),
                    "created": created,
                    "validated": validated,
                    "credentials_version": version,
                },
            )
        log.info(
            "account %s connected with connect token %s (created: %s)",
            aim.account_id,
            row["token_id"],
            created,
        )
        return ConnectOut(
            account_id=aim.account_id,
            created=created,
            validated=validated,
            listings=listings,
            credentials_version=version,
        )

    async def _create(
        self, conn: Conn, token: asyncpg.Record, aim: Target, body: ConnectBody
    ) -> tuple[bool, int, tuple[str, ...]]:
        if await store.account_exists(conn, aim.account_id):
            raise conflict(
                "account_exists",
                f"Airbnb account {aim.account_id} is already connected; ask for a connect "
                "link of that account",
            )
        # Built without validation: every field was validated as the connect body, and the
        # cookie is already the intake's auth group.
        account = AccountCreate.model_construct(
            account_id=aim.account_id,
            airbnb_cookie=aim.cookie,
            x_client_version=body.x_client_version or self._default_client_version,
            user_agent=body.user_agent,
            customer_id=token["customer_id"],
            is_active=True,
        )
        row = await store.insert_account(conn, account, self._cipher.encrypt(aim.cookie))
        if row is None:
            raise conflict("concurrent_change", "the account was created concurrently; retry")
        await announce(conn, "created", aim.account_id, row["created_at"], credentials_changed=True)
        return True, row["credentials_version"], (*_FIELDS, "customer_id", CREDENTIALS)

    async def _update(
        self, conn: Conn, aim: Target, body: ConnectBody
    ) -> tuple[bool, int, tuple[str, ...]]:
        held = await store.hold_account(conn, aim.account_id)
        if held is None:
            raise not_found("account", aim.account_id)
        if held.deleted:
            raise rules.deleted_conflict(aim.account_id)
        changed = rules.cookie_changed(self._cipher, held.credentials_encrypted, aim.cookie)
        fields: list[tuple[str, object]] = [("user_agent", body.user_agent)]
        if body.x_client_version is not None:
            fields.append(("x_client_version", body.x_client_version))
        token = self._cipher.encrypt(aim.cookie) if changed else None
        row = await store.patch_account(conn, aim.account_id, fields, token)
        assert row is not None  # held FOR UPDATE above
        await announce(
            conn, "updated", aim.account_id, row["updated_at"], credentials_changed=changed
        )
        names = tuple(name for name, _ in fields) + ((CREDENTIALS,) if changed else ())
        return False, row["credentials_version"], names
