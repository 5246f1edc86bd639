"""The audit trail: what each change records, and the trail read back (GET /api/v1/audit).

Every change of an account or a key, every sync trigger and every connect-token action is
an entry of ``airbnb.audit_log`` (migrations/0011_audit_log.sql), written by
``store.record`` in the change's own transaction: the entry exists if and only if the
change committed, and where the change is announced through the outbox the event and the
entry are the same transaction. An entry says who (the caller's key name, scope and
address), when (the transaction's start), what (an action, the account or key, the names of
the fields that changed) and a detail that never holds a credential: a cookie that changed
is the field name ``credentials`` and its new ``credentials_version``, nothing of its value.

The top of this module is pure (which entries a change makes, from the account before and
after); :class:`AuditTrail` at the bottom reads pages of the trail.

One account write can change several things; it makes one entry per kind of change, in
this order, all with the same time: ``credentials_replaced`` (the cookie),
``account_updated`` (the plain fields, with their old and new values in ``detail``), and
``account_deactivated`` or ``account_reactivated`` (``is_active``). A write that changes
nothing (a create-or-update with the same values) makes no entry: the trail is of changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from services.admin import store
from services.admin.models import AuditAction, AuditEntryOut, AuditPage, AuditQuery

# The name a cookie goes by in an entry's fields; its value is never recorded.
CREDENTIALS = "credentials"
# An account's plain fields, in the order entries name them; is_active is its own action.
PLAIN_FIELDS = ("x_client_version", "user_agent", "customer_id")


class AccountFields(Protocol):
    """What an entry compares of an account, before a change and after it (the held row,
    the answered AccountOut)."""

    @property
    def x_client_version(self) -> str: ...
    @property
    def user_agent(self) -> str: ...
    @property
    def customer_id(self) -> str | None: ...
    @property
    def is_active(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry a change makes, without its actor (the caller) and time (the database's)."""

    action: AuditAction
    fields: tuple[str, ...] = ()
    detail: dict[str, Any] | None = None


def changed_fields(before: AccountFields, after: AccountFields) -> tuple[str, ...]:
    """The plain fields (and ``is_active``) whose value differs, in :data:`PLAIN_FIELDS`
    order then ``is_active``; credentials are compared elsewhere (they are encrypted)."""
    names = (*PLAIN_FIELDS, "is_active")
    return tuple(n for n in names if getattr(before, n) != getattr(after, n))


def created(after: AccountFields) -> Entry:
    """A new account: every field it was given a value (the cookie by name)."""
    given = tuple(n for n in PLAIN_FIELDS if getattr(after, n) is not None)
    detail: dict[str, Any] = {n: getattr(after, n) for n in given}
    detail["is_active"] = after.is_active
    return Entry("account_created", (*given, "is_active", CREDENTIALS), detail)


def updated(
    before: AccountFields,
    after: AccountFields,
    *,
    credentials_changed: bool,
    credentials_version: int,
) -> list[Entry]:
    """The entries of one update of an existing account (create-or-update, PATCH, connect):
    none when nothing changed."""
    entries: list[Entry] = []
    if credentials_changed:
        entries.append(
            Entry(
                "credentials_replaced",
                (CREDENTIALS,),
                {"credentials_version": credentials_version},
            )
        )
    changed = changed_fields(before, after)
    plain = tuple(n for n in changed if n != "is_active")
    if plain:
        changes = {n: {"from": getattr(before, n), "to": getattr(after, n)} for n in plain}
        entries.append(Entry("account_updated", plain, changes))
    if "is_active" in changed:
        entries.append(
            Entry(
                "account_reactivated" if after.is_active else "account_deactivated", ("is_active",)
            )
        )
    return entries


def deletion(event: str) -> Entry:
    """A soft delete (``deleted``) or a restore (``restored``): the account events' names."""
    return Entry("account_deleted" if event == "deleted" else "account_restored")


# --- reading the trail ------------------------------------------------------------------------


def entry_out(row: asyncpg.Record) -> AuditEntryOut:
    return AuditEntryOut(
        entry_id=row["entry_id"],
        at=row["at"],
        actor=row["actor"],
        actor_scope=row["actor_scope"],
        client=row["client"],
        action=row["action"],
        account_id=row["account_id"],
        key_name=row["key_name"],
        fields=list(row["fields"]),
        detail=row["detail"],  # the pool's jsonb codec decodes it
    )


class AuditTrail:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def page(self, q: AuditQuery) -> AuditPage:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            # One snapshot for the page and its total, so they agree.
            total = await store.count_audit(conn, q)
            rows: Sequence[asyncpg.Record] = await store.audit_page(conn, q)
        return AuditPage(
            items=[entry_out(r) for r in rows], total=total, limit=q.limit, offset=q.offset
        )
