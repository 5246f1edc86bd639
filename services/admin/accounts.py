"""Accounts: create-or-update, list, read, change, soft-delete, restore.

Plain classes over an asyncpg pool and a JetStream context, so tests can call
them without HTTP. The cookie is encrypted (:class:`CredentialCipher`) before it
reaches a query and is never read back here but to compare it: no path of this
module can return or log it.

Thin orchestration: each write opens the transaction, reads and writes through
services/admin/store.py (all the SQL), asks services/admin/rules.py what to do
(the rules, pure) and publishes the event.

Cookie intake (:func:`rules.intake_cookie`): whichever form ``airbnb_cookie`` came in (a
Cookie header, or a browser's ``[{name, value}]`` list), only the auth group is
stored (shared/airbnb/cookies.py); a cookie without ``_airbed_session_id``,
``_aat`` or ``_user_attributes``, or whose ``_user_attributes`` names another host
than the account, is a 422 on ``airbnb_cookie`` that names cookies, never values.

Credentials version: every write that replaces ``credentials_encrypted`` bumps
``credentials_version`` in the same UPDATE (and clears the needs-credentials
mark). A sync carries the version it read; the writer saves the cookies Airbnb
rotated during it only while the account still has that version, so credentials
given here in between always win (docs/data-path.md, Writer).

Every change is announced on ``airbnb.accounts.{event}`` for the scheduler, through
a transactional outbox: the event is a row written in the change's own transaction
(:func:`announce`), and the relay (services/admin/outbox.py) publishes committed rows.
So a change is announced if and only if it commits, and the scheduler, which reads
the account when it handles the event, always finds the change it announces. With
NATS away a change still commits; its event goes out when NATS is back.

Every change is also recorded in the audit trail in the same transaction, with the caller
that made it (:func:`audit_entries`; services/admin/audit.py says which entries a change
makes): an entry exists if and only if its change (and its event) committed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import asyncpg

from services.admin import audit, rules, store
from services.admin.errors import conflict, not_found
from services.admin.models import (
    AccountCreate,
    AccountListQuery,
    AccountOut,
    AccountPage,
    AccountPatch,
)
from services.admin.scopes import own_customer
from shared.crypto import CredentialCipher
from shared.db import Conn
from shared.messages import AccountEvent, AccountEventName, encode

if TYPE_CHECKING:
    from services.admin.auth import Caller

log = logging.getLogger("sync_airbnb.admin.accounts")


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


async def announce(
    conn: Conn,
    event: AccountEventName,
    account_id: str,
    at: dt.datetime,
    *,
    credentials_changed: bool = False,
    reactivated: bool = False,
) -> None:
    """The AccountEvent of a change, written in the change's own transaction; the outbox
    relay (services/admin/outbox.py) publishes it once, and only if, it commits."""
    message = AccountEvent(
        event=event,
        account_id=account_id,
        credentials_changed=credentials_changed,
        reactivated=reactivated,
        at=at,
    )
    await store.enqueue_event(conn, account_id, event, encode(message))


async def audit_entries(
    conn: Conn, caller: Caller, account_id: str, entries: Iterable[audit.Entry]
) -> None:
    """The audit trail's entries of a change of ``account_id``, in the change's transaction."""
    for entry in entries:
        await store.record(
            conn,
            caller,
            entry.action,
            account_id=account_id,
            fields=entry.fields,
            detail=entry.detail,
        )


class AccountService:
    def __init__(self, pool: asyncpg.Pool, cipher: CredentialCipher) -> None:
        self._pool = pool
        self._cipher = cipher

    # --- reads ----------------------------------------------------------------------------

    # ``scope_customer``: the one customer a customer key sees (Caller.customer_filter);
    # the store's SQL applies it, and another customer's account is not found.

    async def get(self, account_id: str, scope_customer: str | None = None) -> AccountOut:
        row = await store.account(self._pool, account_id, scope_customer)
        if row is None:
            raise not_found("account", account_id)
        return account_out(row)

    async def list_page(
        self, q: AccountListQuery, scope_customer: str | None = None
    ) -> AccountPage:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            # One snapshot for the page and its total, so they agree.
            total = await store.count_accounts(conn, q, scope_customer)
            rows = await store.account_page(conn, q, scope_customer)
        return AccountPage(
            items=[account_out(r) for r in rows], total=total, limit=q.limit, offset=q.offset
        )

    # --- writes ---------------------------------------------------------------------------

    async def create_or_update(
        self, caller: Caller, body: AccountCreate
    ) -> tuple[AccountOut, bool]:
        """Returns the account and whether it was created (False: updated).

        A customer key writes its own customer's accounts only: the body's customer_id is
        its own (given or not; another is a 422), and an account of another customer is
        not found (404), as for every other route."""
        scope = caller.customer_filter
        body = body.model_copy(
            update={"customer_id": own_customer(scope, body.customer_id, required=False)}
        )
        cookie = rules.intake_cookie(body.airbnb_cookie, body.account_id)
        token = self._cipher.encrypt(cookie)
        async with self._pool.acquire() as conn, conn.transaction():
            held = await store.hold_account(conn, body.account_id, scope)
            if held is None:
                # ON CONFLICT: a concurrent create of the same id wins the insert; this one
                # then finds no row and reports the conflict instead of a 500. For a
                # customer key the row found may be another customer's: not found.
                row = await store.insert_account(conn, body, token)
                if row is None:
                    if not await store.account_exists(conn, body.account_id, scope):
                        raise not_found("account", body.account_id)
                    raise conflict(
                        "concurrent_change", "the account was created concurrently; retry"
                    )
                await announce(
                    conn, "created", body.account_id, row["created_at"], credentials_changed=True
                )
                created = account_out(row)
                await audit_entries(conn, caller, body.account_id, [audit.created(created)])
                log.info("account %s created", body.account_id)
                return created, True
            plan = rules.plan_replace(
                body.account_id, held, cookie=cookie, is_active=body.is_active, cipher=self._cipher
            )
            row = await store.replace_account(
                conn, body, token, credentials_changed=plan.credentials_changed
            )
            assert row is not None  # the account is held FOR UPDATE above
            await announce(
                conn,
                "updated",
                body.account_id,
                row["updated_at"],
                credentials_changed=plan.credentials_changed,
                reactivated=plan.reactivated,
            )
            updated = account_out(row)
            await audit_entries(
                conn,
                caller,
                body.account_id,
                audit.updated(
                    held,
                    updated,
                    credentials_changed=plan.credentials_changed,
                    credentials_version=updated.credentials_version,
                ),
            )
            log.info(
                "account %s updated (credentials changed: %s)",
                body.account_id,
                plan.credentials_changed,
            )
            return updated, False

    async def patch(self, caller: Caller, account_id: str, body: AccountPatch) -> AccountOut:
        given = body.model_fields_set
        # Before any query: a cookie that is not this account's is a 422 whatever the state.
        cookie = (
            rules.intake_cookie(body.airbnb_cookie, account_id)
            if "airbnb_cookie" in given and body.airbnb_cookie is not None
            else None
        )
        scope = caller.customer_filter
        if "customer_id" in given:
            own_customer(scope, body.customer_id, required=True)
        async with self._pool.acquire() as conn, conn.transaction():
            held = await store.hold_account(conn, account_id, scope)
            if held is None:
                raise not_found("account", account_id)
            write = rules.plan_patch(account_id, held, body, cookie=cookie, cipher=self._cipher)
            if write is None:
                # Nothing to change (an empty body, or the same cookie alone): no write, no
                # event, the account as it is.
                row = await store.account(conn, account_id)
                assert row is not None  # the account is held FOR UPDATE above
                return account_out(row)
            token = None
            if write.credentials_changed:
                assert cookie is not None
                token = self._cipher.encrypt(cookie)
            row = await store.patch_account(conn, account_id, write.fields, token)
            assert row is not None  # the account is held FOR UPDATE above
            await announce(
                conn,
                "updated",
                account_id,
                row["updated_at"],
                credentials_changed=write.credentials_changed,
                reactivated=write.reactivated,
            )
            patched = account_out(row)
            await audit_entries(
                conn,
                caller,
                account_id,
                audit.updated(
                    held,
                    patched,
                    credentials_changed=write.credentials_changed,
                    credentials_version=patched.credentials_version,
                ),
            )
            log.info("account %s patched (%s)", account_id, ", ".join(sorted(given)) or "nothing")
            return patched

    async def delete(self, caller: Caller, account_id: str) -> AccountOut:
        return await self._set_deleted(caller, account_id, deleted=True)

    async def restore(self, caller: Caller, account_id: str) -> AccountOut:
        return await self._set_deleted(caller, account_id, deleted=False)

    async def _set_deleted(self, caller: Caller, account_id: str, *, deleted: bool) -> AccountOut:
        async with self._pool.acquire() as conn, conn.transaction():
            current = await store.hold_deleted(conn, account_id, caller.customer_filter)
            if current is None:
                raise not_found("account", account_id)
            event = rules.deletion_event(account_id, is_deleted=current, delete=deleted)
            row = await store.set_deleted(conn, account_id, deleted=deleted)
            assert row is not None  # the account is held FOR UPDATE above
            await announce(conn, event, account_id, row["updated_at"])
            await audit_entries(conn, caller, account_id, [audit.deletion(event)])
            log.info("account %s %s", account_id, event)
            return account_out(row)
