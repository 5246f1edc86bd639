"""Accounts: create-or-update, list, read, change, soft-delete, restore.

Plain classes over an asyncpg pool and a JetStream context, so tests can call
them without HTTP. The cookie is encrypted (:class:`CredentialCipher`) before it
reaches a query and is never read back here but to compare it: no path of this
module can return or log it.

Cookie intake (:func:`intake_cookie`): whichever form ``airbnb_cookie`` came in (a
Cookie header, or a browser's ``[{name, value}]`` list), only the auth group is
stored (shared/airbnb/cookies.py); a cookie without ``_airbed_session_id``,
``_aat`` or ``_user_attributes``, or whose ``_user_attributes`` names another host
than the account, is a 422 on ``airbnb_cookie`` that names cookies, never values.

Credentials version: every write that replaces ``credentials_encrypted`` bumps
``credentials_version`` in the same UPDATE (and clears the needs-credentials
mark). A sync carries the version it read; the writer saves the cookies Airbnb
rotated during it only while the account still has that version, so credentials
given here in between always win (docs/data-path.md, Writer).

Every change is announced on ``airbnb.accounts.{event}`` for the scheduler. The
event is published *inside* the database transaction and the transaction
commits only once JetStream has stored it: a change that cannot be announced is
rolled back (503), so none goes unannounced. The reverse (event stored, commit
failed) leaves an event for a state that does not exist; that is harmless
because the scheduler reads the account from the database when it handles an
event, and the database is the truth.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import asyncpg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from services.admin.errors import ApiError, conflict, field_error, not_found, unavailable
from services.admin.models import (
    MAX_COOKIE_HEADER,
    AccountCreate,
    AccountListQuery,
    AccountOut,
    AccountPage,
    AccountPatch,
    CookieItem,
)
from shared.airbnb import cookies
from shared.crypto import CredentialCipher, CredentialsError
from shared.messages import AccountEvent, AccountEventName, encode
from shared.topology import account_event_msg_id, account_event_subject

log = logging.getLogger("sync_airbnb.admin.accounts")

# Every column but credentials_encrypted: the token is not needed to answer, so not read.
_COLUMNS = """account_id, customer_id, x_client_version, user_agent, is_active,
    credentials_invalid_at, credentials_error, credentials_version, credentials_rotated_at,
    last_sync_at, created_at, updated_at, deleted_at"""


def intake_cookie(value: str | list[CookieItem], account_id: str) -> str:
    """The auth-group Cookie string to store for ``account_id``, or a 422 on airbnb_cookie.

    The message is the intake's own, which names cookies and never holds a value.
    """
    given: str | list[dict[str, str]] = (
        value if isinstance(value, str) else [{"name": c.name, "value": c.value} for c in value]
    )
    try:
        stored = cookies.intake(given, account_id)
    except cookies.CookieIntakeError as exc:
        raise field_error("airbnb_cookie", str(exc), "cookie_intake") from None
    if len(stored) > MAX_COOKIE_HEADER:
        # The list form's bounds are per cookie; what is stored and sent is one header.
        raise field_error(
            "airbnb_cookie",
            f"its auth cookies are longer than {MAX_COOKIE_HEADER} characters as a Cookie header",
            "cookie_intake",
        )
    return stored


def account_out(row: asyncpg.Record) -> AccountOut:
    return AccountOut(
        account_id=row["account_id"],
        customer_id=row["customer_id"],
        x_client_version=row["x_client_version"],
        user_agent=row["user_agent"],
        is_active=row["is_active"],
        needs_credentials=row["credentials_invalid_at"] is not None,
        credentials_invalid_at=row["credentials_invalid_at"],
        credentials_error=row["credentials_error"],
        credentials_version=row["credentials_version"],
        credentials_rotated_at=row["credentials_rotated_at"],
        last_sync_at=row["last_sync_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
    )


class AccountEvents:
    """Publishes AccountEvents to JetStream and waits for the stream to store them."""

    def __init__(self, js: JetStreamContext, timeout_s: float) -> None:
        self._js = js
        self._timeout_s = timeout_s

    async def publish(
        self,
        event: AccountEventName,
        account_id: str,
        at: dt.datetime,
        *,
        credentials_changed: bool = False,
        reactivated: bool = False,
    ) -> None:
        message = AccountEvent(
            event=event,
            account_id=account_id,
            credentials_changed=credentials_changed,
            reactivated=reactivated,
            at=at,
        )
        # The change's own timestamp names the message: a retried publish of the same change
        # is dropped by JetStream's duplicate window, a later change is a new message.
        msg_id = account_event_msg_id(account_id, event, at.isoformat())
        try:
            await self._js.publish(
                account_event_subject(event),
                encode(message),
                timeout=self._timeout_s,
                headers={"Nats-Msg-Id": msg_id},
            )
        except (NatsError, TimeoutError, OSError) as exc:
            log.warning(
                "account %s: %s event not stored (%s); change rolled back",
                account_id,
                event,
                type(exc).__name__,
            )
            raise unavailable(
                "events_unavailable",
                "NATS JetStream did not store the account event, so the change was not "
                "applied; retry when NATS is reachable",
            ) from None


class AccountService:
    def __init__(self, pool: asyncpg.Pool, cipher: CredentialCipher, events: AccountEvents) -> None:
        self._pool = pool
        self._cipher = cipher
        self._events = events

    # --- reads ----------------------------------------------------------------------------

    async def get(self, account_id: str) -> AccountOut:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM airbnb.accounts WHERE account_id = $1", account_id
        )
        if row is None:
            raise not_found("account", account_id)
        return account_out(row)

    async def list_page(self, q: AccountListQuery) -> AccountPage:
        where = ["(deleted_at IS NOT NULL) = $1"]
        args: list[Any] = [q.deleted]
        if q.active is not None:
            args.append(q.active)
            where.append(f"is_active = ${len(args)}")
        if q.customer_id is not None:
            args.append(q.customer_id)
            where.append(f"customer_id = ${len(args)}")
        cond = " AND ".join(where)
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            # One snapshot for the page and its total, so they agree.
            total = await conn.fetchval(f"SELECT count(*) FROM airbnb.accounts WHERE {cond}", *args)
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM airbnb.accounts WHERE {cond} "
                f"ORDER BY account_id LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
                *args,
                q.limit,
                q.offset,
            )
        return AccountPage(
            items=[account_out(r) for r in rows], total=total, limit=q.limit, offset=q.offset
        )

    # --- writes ---------------------------------------------------------------------------

    async def create_or_update(self, body: AccountCreate) -> tuple[AccountOut, bool]:
        """Returns the account and whether it was created (False: updated)."""
        cookie = intake_cookie(body.airbnb_cookie, body.account_id)
        token = self._cipher.encrypt(cookie)
        async with self._pool.acquire() as conn, conn.transaction():
            existing = await conn.fetchrow(
                "SELECT credentials_encrypted, is_active, deleted_at FROM airbnb.accounts "
                "WHERE account_id = $1 FOR UPDATE",
                body.account_id,
            )
            if existing is None:
                # ON CONFLICT: a concurrent create of the same id wins the insert; this one
                # then finds no row and reports the conflict instead of a 500.
                row = await conn.fetchrow(
                    "INSERT INTO airbnb.accounts (account_id, customer_id, credentials_encrypted,"
                    " x_client_version, user_agent, is_active) VALUES ($1, $2, $3, $4, $5, $6)"
                    f" ON CONFLICT (account_id) DO NOTHING RETURNING {_COLUMNS}",
                    body.account_id,
                    body.customer_id,
                    token,
                    body.x_client_version,
                    body.user_agent,
                    body.is_active,
                )
                if row is None:
                    raise conflict(
                        "concurrent_change", "the account was created concurrently; retry"
                    )
                await self._events.publish(
                    "created", body.account_id, row["created_at"], credentials_changed=True
                )
                log.info("account %s created", body.account_id)
                return account_out(row), True
            if existing["deleted_at"] is not None:
                raise _deleted(body.account_id)
            changed = self._cookie_changed(existing["credentials_encrypted"], cookie)
            row = await conn.fetchrow(
                "UPDATE airbnb.accounts SET customer_id = $2, x_client_version = $3,"
                " user_agent = $4, is_active = $5, updated_at = now(),"
                " credentials_encrypted = CASE WHEN $6 THEN $7 ELSE credentials_encrypted END,"
                " credentials_version = credentials_version + CASE WHEN $6 THEN 1 ELSE 0 END,"
                " credentials_invalid_at = CASE WHEN $6 THEN NULL"
                " ELSE credentials_invalid_at END,"
                " credentials_error = CASE WHEN $6 THEN NULL ELSE credentials_error END"
                f" WHERE account_id = $1 RETURNING {_COLUMNS}",
                body.account_id,
                body.customer_id,
                body.x_client_version,
                body.user_agent,
                body.is_active,
                changed,
                token,
            )
            assert row is not None  # the account is held FOR UPDATE above
            await self._events.publish(
                "updated",
                body.account_id,
                row["updated_at"],
                credentials_changed=changed,
                reactivated=body.is_active and not existing["is_active"],
            )
            log.info("account %s updated (credentials changed: %s)", body.account_id, changed)
            return account_out(row), False

    async def patch(self, account_id: str, body: AccountPatch) -> AccountOut:
        given = body.model_fields_set
        # Before any query: a cookie that is not this account's is a 422 whatever the state.
        cookie = (
            intake_cookie(body.airbnb_cookie, account_id)
            if "airbnb_cookie" in given and body.airbnb_cookie is not None
            else None
        )
        async with self._pool.acquire() as conn, conn.transaction():
            existing = await conn.fetchrow(
                "SELECT credentials_encrypted, is_active, deleted_at FROM airbnb.accounts "
                "WHERE account_id = $1 FOR UPDATE",
                account_id,
            )
            if existing is None:
                raise not_found("account", account_id)
            if existing["deleted_at"] is not None:
                raise _deleted(account_id)
            sets: list[str] = []
            args: list[Any] = [account_id]

            def put(column: str, value: object) -> None:
                args.append(value)
                sets.append(f"{column} = ${len(args)}")

            for name in ("x_client_version", "user_agent", "customer_id", "is_active"):
                if name in given:
                    put(name, getattr(body, name))
            changed = cookie is not None and self._cookie_changed(
                existing["credentials_encrypted"], cookie
            )
            if changed:
                assert cookie is not None
                put("credentials_encrypted", self._cipher.encrypt(cookie))
                sets += [
                    "credentials_version = credentials_version + 1",
                    "credentials_invalid_at = NULL",
                    "credentials_error = NULL",
                ]
            if not sets:
                # Nothing to change (an empty body, or the same cookie alone): no write, no
                # event, the account as it is.
                row = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM airbnb.accounts WHERE account_id = $1", account_id
                )
                assert row is not None  # the account is held FOR UPDATE above
                return account_out(row)
            row = await conn.fetchrow(
                f"UPDATE airbnb.accounts SET {', '.join(sets)}, updated_at = now()"
                f" WHERE account_id = $1 RETURNING {_COLUMNS}",
                *args,
            )
            assert row is not None  # the account is held FOR UPDATE above
            await self._events.publish(
                "updated",
                account_id,
                row["updated_at"],
                credentials_changed=changed,
                reactivated=bool(row["is_active"] and not existing["is_active"]),
            )
            log.info("account %s patched (%s)", account_id, ", ".join(sorted(given)) or "nothing")
            return account_out(row)

    async def delete(self, account_id: str) -> AccountOut:
        return await self._set_deleted(account_id, deleted=True)

    async def restore(self, account_id: str) -> AccountOut:
        return await self._set_deleted(account_id, deleted=False)

    async def _set_deleted(self, account_id: str, *, deleted: bool) -> AccountOut:
        async with self._pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT deleted_at IS NOT NULL FROM airbnb.accounts "
                "WHERE account_id = $1 FOR UPDATE",
                account_id,
            )
            if current is None:
                raise not_found("account", account_id)
            if current == deleted:
                raise (
                    conflict("already_deleted", f"account {account_id} is already deleted")
                    if deleted
                    else conflict("not_deleted", f"account {account_id} is not deleted")
                )
            row = await conn.fetchrow(
                "UPDATE airbnb.accounts SET"
                " deleted_at = CASE WHEN $2 THEN now() ELSE NULL END, updated_at = now()"
                f" WHERE account_id = $1 RETURNING {_COLUMNS}",
                account_id,
                deleted,
            )
            assert row is not None  # the account is held FOR UPDATE above
            event: AccountEventName = "deleted" if deleted else "restored"
            await self._events.publish(event, account_id, row["updated_at"])
            log.info("account %s %s", account_id, event)
            return account_out(row)

    def _cookie_changed(self, stored_token: str, cookie: str) -> bool:
        """True when ``cookie`` (the normalised auth string) differs from the stored one.

        Fernet tokens of one plaintext differ every time, so the stored token is decrypted
        to compare. A token that no key decrypts counts as changed: the new cookie
        replaces it.
        """
        try:
            return self._cipher.decrypt(stored_token) != cookie
        except CredentialsError:
            return True


def _deleted(account_id: str) -> ApiError:
    return conflict(
        "account_deleted",
        f"account {account_id} is deleted; POST /api/v1/accounts/{account_id}/restore first",
    )
