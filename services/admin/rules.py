"""The admin's rules, as plain functions: inputs in, decision out, no I/O.

What the account and sync endpoints decide, apart from the SQL that reads and writes
(services/admin/store.py) and the orchestration that opens the transaction and
publishes the event (services/admin/accounts.py, services/admin/syncs.py):

- cookie intake: only the auth group of the given cookies is stored (:func:`intake_cookie`);
- a deleted account is not written but to restore it (:func:`deleted_conflict`);
- a cookie that differs from the stored one replaces it, bumps ``credentials_version``
  and clears the needs-credentials mark (:func:`cookie_changed`, :class:`Replace`,
  :class:`PatchWrite`);
- which fields a PATCH sets, and whether it writes at all (:func:`plan_patch`);
- whether an update is a reactivation (:func:`reactivated`);
- delete and restore each apply to an account in the other state (:func:`deletion_event`);
- a sync is triggered only for an active account that exists, is not deleted and has
  usable credentials (:func:`trigger_refusal`), with the scheduler's refusal codes
  (:func:`refusal`).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.admin.errors import ApiError, conflict, field_error
from services.admin.models import AccountPatch, CookieItem
from shared.airbnb import cookies
from shared.crypto import CredentialCipher, CredentialsError
from shared.messages import AccountEventName

# The fields a PATCH sets when given, in the order the UPDATE names them.
PATCH_FIELDS = ("x_client_version", "user_agent", "customer_id", "is_active")


@dataclass(frozen=True, slots=True)
class HeldAccount:
    """The fields of an account row, held FOR UPDATE, that the write rules read (and the
    audit trail compares with the row written: services/admin/audit.py)."""

    credentials_encrypted: str
    is_active: bool
    deleted: bool
    x_client_version: str
    user_agent: str
    customer_id: str | None


@dataclass(frozen=True, slots=True)
class TriggerState:
    """The fields of an account row that say whether a sync may be triggered."""

    is_active: bool
    deleted: bool
    needs_credentials: bool


@dataclass(frozen=True, slots=True)
class Replace:
    """A create-or-update of an existing account: the full UPDATE and its ``updated`` event.

    ``credentials_changed``: the stored token is replaced, ``credentials_version`` bumped
    and the needs-credentials mark cleared (in the same UPDATE); the event says so.
    """

    credentials_changed: bool
    reactivated: bool


@dataclass(frozen=True, slots=True)
class PatchWrite:
    """What a PATCH writes: the given fields, in order, and whether the cookie is replaced.

    ``credentials_changed``: the new cookie replaces the stored token, bumps
    ``credentials_version`` and clears the needs-credentials mark (in the same UPDATE).
    The ``updated`` event carries ``credentials_changed`` and ``reactivated``.
    """

    fields: tuple[tuple[str, object], ...]
    credentials_changed: bool
    reactivated: bool


def intake_cookie(value: str | list[CookieItem], account_id: str) -> str:
    """The auth-group Cookie string to store for ``account_id``, or a 422 on airbnb_cookie.

    The message is the intake's own, which names cookies and never holds a value.
    """
    given: str | list[dict[str, str]] = (
        value if isinstance(value, str) else [{"name": c.name, "value": c.value} for c in value]
    )
    # The intake also bounds what is stored (cookies.MAX_STORED_COOKIE), whichever form
    # the cookies came in: the list form's bounds are per cookie.
    try:
        return cookies.intake(given, account_id)
    except cookies.CookieIntakeError as exc:
        raise field_error("airbnb_cookie", str(exc), "cookie_intake") from None


def cookie_changed(cipher: CredentialCipher, stored_token: str, cookie: str) -> bool:
    """True when ``cookie`` (the normalised auth string) differs from the stored one.

    Fernet tokens of one plaintext differ every time, so the stored token is decrypted
    to compare. A token that no key decrypts counts as changed: the new cookie
    replaces it.
    """
    try:
        return cipher.decrypt(stored_token) != cookie
    except CredentialsError:
        return True


def reactivated(was_active: bool, is_active: bool) -> bool:
    """An update that turns an inactive account active (the scheduler may catch it up)."""
    return bool(is_active and not was_active)


def deleted_conflict(account_id: str) -> ApiError:
    """The 409 for a write to a deleted account, whatever the write."""
    return conflict(
        "account_deleted",
        f"account {account_id} is deleted; POST /api/v1/accounts/{account_id}/restore first",
    )


def plan_replace(
    account_id: str, held: HeldAccount, *, cookie: str, is_active: bool, cipher: CredentialCipher
) -> Replace:
    """A create-or-update of an existing account with ``cookie`` and ``is_active``.

    A 409 when the account is deleted (before the cookie is compared).
    """
    if held.deleted:
        raise deleted_conflict(account_id)
    return Replace(
        credentials_changed=cookie_changed(cipher, held.credentials_encrypted, cookie),
        reactivated=reactivated(held.is_active, is_active),
    )


def plan_patch(
    account_id: str,
    held: HeldAccount,
    body: AccountPatch,
    *,
    cookie: str | None,
    cipher: CredentialCipher,
) -> PatchWrite | None:
    """What a PATCH writes, or None when it writes nothing (no UPDATE, no event).

    A 409 when the account is deleted. Only the fields given are set (``customer_id``
    given as null clears it); ``cookie`` (the intake of the given one, None when none
    was given) only when it differs from the stored one.
    """
    if held.deleted:
        raise deleted_conflict(account_id)
    given = body.model_fields_set
    fields = tuple((name, getattr(body, name)) for name in PATCH_FIELDS if name in given)
    changed = cookie is not None and cookie_changed(cipher, held.credentials_encrypted, cookie)
    if not fields and not changed:
        # Nothing to change (an empty body, or the same cookie alone).
        return None
    is_active = dict(fields).get("is_active", held.is_active)
    return PatchWrite(
        fields=fields,
        credentials_changed=changed,
        reactivated=reactivated(held.is_active, bool(is_active)),
    )


def deletion_event(account_id: str, *, is_deleted: bool, delete: bool) -> AccountEventName:
    """The event of a delete (``delete``) or restore; a 409 when the account is already so."""
    if is_deleted == delete:
        raise (
            conflict("already_deleted", f"account {account_id} is already deleted")
            if delete
            else conflict("not_deleted", f"account {account_id} is not deleted")
        )
    return "deleted" if delete else "restored"


# The scheduler's refusals, as HTTP answers.
REFUSALS: dict[str, tuple[int, str]] = {
    "not_found": (404, "account {id} does not exist"),
    "deleted": (409, "account {id} is deleted"),
    "inactive": (409, "account {id} is inactive"),
    "needs_credentials": (
        409,
        "account {id} needs new credentials (Airbnb rejected its session); "
        "update its airbnb_cookie",
    ),
}


def refusal(code: str, account_id: str, detail: str | None = None) -> ApiError:
    status, text = REFUSALS[code]
    message = text.format(id=account_id)
    if detail and status != 404:
        message = f"{message}: {detail}"
    return ApiError(status, code, message)


def trigger_refusal(account_id: str, state: TriggerState | None) -> ApiError | None:
    """The refusal the scheduler would give for this account's state, or None (go ahead).

    Checked in the scheduler's order: unknown, deleted, inactive, needs credentials.
    """
    if state is None:
        return refusal("not_found", account_id)
    if state.deleted:
        return refusal("deleted", account_id)
    if not state.is_active:
        return refusal("inactive", account_id)
    if state.needs_credentials:
        return refusal("needs_credentials", account_id)
    return None
