"""The admin's rules (services/admin/rules.py) alone: plain functions, no database, no NATS."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from services.admin import rules
from services.admin.errors import ApiError
from services.admin.models import AccountPatch, CookieItem
from services.admin.rules import HeldAccount, TriggerState
from shared.airbnb import cookies
from shared.crypto import CredentialCipher
from tests.cookies import auth_cookie, browser_cookie

AID = "4242"


@pytest.fixture
def cipher() -> CredentialCipher:
    return CredentialCipher([Fernet.generate_key().decode()])


def held(
    cipher: CredentialCipher, cookie: str, *, active: bool = True, deleted: bool = False
) -> HeldAccount:
    return HeldAccount(
        credentials_encrypted=cipher.encrypt(cookie),
        is_active=active,
        deleted=deleted,
        x_client_version="v1",
        user_agent="UA",
        customer_id=None,
    )


# --- cookie intake and comparison -----------------------------------------------------------


def test_intake_keeps_the_auth_group_of_either_form() -> None:
    stored = auth_cookie(AID)
    assert rules.intake_cookie(browser_cookie(AID), AID) == stored
    items = [CookieItem(name=n, value=v) for n, v in (p.split("=", 1) for p in stored.split("; "))]
    assert rules.intake_cookie(items, AID) == stored


def test_intake_of_another_hosts_cookie_is_a_422_on_airbnb_cookie() -> None:
    with pytest.raises(ApiError) as exc:
        rules.intake_cookie(auth_cookie("999"), AID)
    assert exc.value.status == 422
    assert exc.value.fields is not None
    [field] = exc.value.fields
    assert (field.field, field.type) == ("airbnb_cookie", "cookie_intake")
    assert "secret-session" not in exc.value.body().model_dump_json()


def test_intake_of_auth_cookies_too_long_to_send_is_a_422_naming_the_limit() -> None:
    # Each cookie within the list form's per-cookie bound; together over the stored limit.
    filler = "A" * 2500
    items = [
        CookieItem(name=n, value=v)
        for n, v in (p.split("=", 1) for p in auth_cookie(AID).split("; "))
    ]
    items += [CookieItem(name="_aat", value=filler), CookieItem(name="hli", value=filler)]
    with pytest.raises(ApiError) as exc:
        rules.intake_cookie(items, AID)
    assert exc.value.status == 422
    assert exc.value.fields is not None
    [field] = exc.value.fields
    assert (field.field, field.type) == ("airbnb_cookie", "cookie_intake")
    assert str(cookies.MAX_STORED_COOKIE) in field.message
    assert filler not in exc.value.body().model_dump_json()


def test_cookie_changed_compares_plaintexts_and_an_undecryptable_token_counts_as_changed(
    cipher: CredentialCipher,
) -> None:
    a, b = auth_cookie(AID, "one"), auth_cookie(AID, "two")
    token = cipher.encrypt(a)
    assert rules.cookie_changed(cipher, token, a) is False
    assert rules.cookie_changed(cipher, token, b) is True
    other = CredentialCipher([Fernet.generate_key().decode()])
    assert rules.cookie_changed(other, token, a) is True


@pytest.mark.parametrize(
    ("was", "now", "expected"),
    [(False, True, True), (True, True, False), (True, False, False), (False, False, False)],
)
def test_reactivated_only_from_inactive_to_active(was: bool, now: bool, expected: bool) -> None:
    assert rules.reactivated(was, now) is expected


# --- create-or-update of an existing account ------------------------------------------------


def test_replace_of_a_deleted_account_is_a_409_naming_restore(cipher: CredentialCipher) -> None:
    cookie = auth_cookie(AID)
    with pytest.raises(ApiError) as exc:
        rules.plan_replace(
            AID, held(cipher, cookie, deleted=True), cookie=cookie, is_active=True, cipher=cipher
        )
    assert (exc.value.status, exc.value.code) == (409, "account_deleted")
    assert f"/api/v1/accounts/{AID}/restore" in exc.value.detail


def test_replace_with_the_same_cookie_changes_no_credentials(cipher: CredentialCipher) -> None:
    cookie = auth_cookie(AID)
    plan = rules.plan_replace(
        AID, held(cipher, cookie), cookie=cookie, is_active=True, cipher=cipher
    )
    assert plan == rules.Replace(credentials_changed=False, reactivated=False)


def test_replace_with_a_new_cookie_reactivating(cipher: CredentialCipher) -> None:
    plan = rules.plan_replace(
        AID,
        held(cipher, auth_cookie(AID, "old"), active=False),
        cookie=auth_cookie(AID, "new"),
        is_active=True,
        cipher=cipher,
    )
    assert plan == rules.Replace(credentials_changed=True, reactivated=True)


# --- patch ----------------------------------------------------------------------------------


def test_patch_of_a_deleted_account_is_a_409(cipher: CredentialCipher) -> None:
    with pytest.raises(ApiError) as exc:
        rules.plan_patch(
            AID,
            held(cipher, auth_cookie(AID), deleted=True),
            AccountPatch(),
            cookie=None,
            cipher=cipher,
        )
    assert (exc.value.status, exc.value.code) == (409, "account_deleted")


def test_an_empty_patch_or_the_same_cookie_alone_writes_nothing(cipher: CredentialCipher) -> None:
    cookie = auth_cookie(AID)
    h = held(cipher, cookie)
    assert rules.plan_patch(AID, h, AccountPatch(), cookie=None, cipher=cipher) is None
    body = AccountPatch(airbnb_cookie=cookie)
    assert rules.plan_patch(AID, h, body, cookie=cookie, cipher=cipher) is None


def test_patch_sets_only_the_given_fields_in_column_order(cipher: CredentialCipher) -> None:
    body = AccountPatch.model_validate(
        {"is_active": False, "customer_id": None, "user_agent": "UA/2"}
    )
    write = rules.plan_patch(AID, held(cipher, auth_cookie(AID)), body, cookie=None, cipher=cipher)
    assert write == rules.PatchWrite(
        fields=(("user_agent", "UA/2"), ("customer_id", None), ("is_active", False)),
        credentials_changed=False,
        reactivated=False,
    )


def test_patch_with_a_new_cookie_replaces_the_credentials(cipher: CredentialCipher) -> None:
    new = auth_cookie(AID, "new")
    body = AccountPatch(airbnb_cookie=new)
    write = rules.plan_patch(
        AID, held(cipher, auth_cookie(AID, "old")), body, cookie=new, cipher=cipher
    )
    assert write == rules.PatchWrite(fields=(), credentials_changed=True, reactivated=False)


@pytest.mark.parametrize(
    ("was_active", "patch", "expected"),
    [
        (False, {"is_active": True}, True),
        (True, {"is_active": True}, False),
        (False, {"is_active": False}, False),
        # is_active not given: the account stays as it was, so no reactivation.
        (False, {"user_agent": "UA/3"}, False),
    ],
)
def test_patch_reactivation(
    cipher: CredentialCipher, was_active: bool, patch: dict[str, object], expected: bool
) -> None:
    write = rules.plan_patch(
        AID,
        held(cipher, auth_cookie(AID), active=was_active),
        AccountPatch.model_validate(patch),
        cookie=None,
        cipher=cipher,
    )
    assert write is not None
    assert write.reactivated is expected


# --- delete and restore ---------------------------------------------------------------------


def test_deletion_events_and_conflicts() -> None:
    assert rules.deletion_event(AID, is_deleted=False, delete=True) == "deleted"
    assert rules.deletion_event(AID, is_deleted=True, delete=False) == "restored"
    with pytest.raises(ApiError) as exc:
        rules.deletion_event(AID, is_deleted=True, delete=True)
    assert (exc.value.status, exc.value.code) == (409, "already_deleted")
    with pytest.raises(ApiError) as exc:
        rules.deletion_event(AID, is_deleted=False, delete=False)
    assert (exc.value.status, exc.value.code) == (409, "not_deleted")


# --- sync triggers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, (404, "not_found")),
        # deleted wins over inactive and needs-credentials: the scheduler's order
        (TriggerState(is_active=False, deleted=True, needs_credentials=True), (409, "deleted")),
        (TriggerState(is_active=False, deleted=False, needs_credentials=True), (409, "inactive")),
        (
            TriggerState(is_active=True, deleted=False, needs_credentials=True),
            (409, "needs_credentials"),
        ),
    ],
)
def test_trigger_refusals(state: TriggerState | None, expected: tuple[int, str]) -> None:
    refused = rules.trigger_refusal(AID, state)
    assert refused is not None
    assert (refused.status, refused.code) == expected
    assert AID in refused.detail


def test_a_triggerable_account_is_not_refused() -> None:
    state = TriggerState(is_active=True, deleted=False, needs_credentials=False)
    assert rules.trigger_refusal(AID, state) is None


def test_a_scheduler_refusal_keeps_its_detail_but_for_not_found() -> None:
    assert rules.refusal("inactive", AID, "paused").detail == f"account {AID} is inactive: paused"
    assert rules.refusal("not_found", AID, "gone").detail == f"account {AID} does not exist"
