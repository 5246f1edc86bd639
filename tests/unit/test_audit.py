"""The audit trail's pure part (services/admin/audit.py): which entries a change makes, and
that none of them can hold a credential."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from pydantic import ValidationError

from services.admin import audit
from services.admin.audit import CREDENTIALS, Entry
from services.admin.models import AuditQuery


@dataclass(frozen=True)
class Fields:
    x_client_version: str = "v1"
    user_agent: str = "UA"
    customer_id: str | None = None
    is_active: bool = True


BEFORE = Fields()


def test_nothing_changed_is_no_entry() -> None:
    assert audit.changed_fields(BEFORE, Fields()) == ()
    assert audit.updated(BEFORE, Fields(), credentials_changed=False, credentials_version=1) == []


def test_changed_fields_names_only_what_differs_in_a_fixed_order() -> None:
    after = Fields(x_client_version="v2", customer_id="c1", is_active=False)
    assert audit.changed_fields(BEFORE, after) == ("x_client_version", "customer_id", "is_active")
    assert audit.changed_fields(BEFORE, replace(BEFORE, user_agent="UA2")) == ("user_agent",)
    # null and a value differ; a value set to the same is no change
    assert audit.changed_fields(Fields(customer_id="c1"), Fields()) == ("customer_id",)
    assert audit.changed_fields(Fields(customer_id="c1"), Fields(customer_id="c1")) == ()


def test_plain_fields_are_one_update_with_old_and_new_values() -> None:
    after = Fields(user_agent="UA2", customer_id="c1")
    assert audit.updated(BEFORE, after, credentials_changed=False, credentials_version=1) == [
        Entry(
            "account_updated",
            ("user_agent", "customer_id"),
            {"user_agent": {"from": "UA", "to": "UA2"}, "customer_id": {"from": None, "to": "c1"}},
        )
    ]


def test_a_new_cookie_is_the_field_credentials_and_its_version_only() -> None:
    [entry] = audit.updated(BEFORE, Fields(), credentials_changed=True, credentials_version=3)
    assert entry == Entry("credentials_replaced", (CREDENTIALS,), {"credentials_version": 3})


@pytest.mark.parametrize(
    ("was", "now", "action"),
    [(True, False, "account_deactivated"), (False, True, "account_reactivated")],
)
def test_is_active_is_its_own_action(was: bool, now: bool, action: str) -> None:
    assert audit.updated(
        Fields(is_active=was),
        Fields(is_active=now),
        credentials_changed=False,
        credentials_version=1,
    ) == [Entry(action, ("is_active",))]  # type: ignore[arg-type]


def test_one_write_of_everything_is_one_entry_per_action_in_order() -> None:
    after = Fields(x_client_version="v9", is_active=False)
    entries = audit.updated(BEFORE, after, credentials_changed=True, credentials_version=2)
    assert [(e.action, e.fields) for e in entries] == [
        ("credentials_replaced", ("credentials",)),
        ("account_updated", ("x_client_version",)),
        ("account_deactivated", ("is_active",)),
    ]


def test_created_names_every_field_given_and_the_credentials() -> None:
    assert audit.created(Fields()) == Entry(
        "account_created",
        ("x_client_version", "user_agent", "is_active", CREDENTIALS),
        {"x_client_version": "v1", "user_agent": "UA", "is_active": True},
    )
    with_customer = audit.created(Fields(customer_id="c1", is_active=False))
    assert with_customer.fields == (
        "x_client_version",
        "user_agent",
        "customer_id",
        "is_active",
        CREDENTIALS,
    )
    assert with_customer.detail == {
        "x_client_version": "v1",
        "user_agent": "UA",
        "customer_id": "c1",
        "is_active": False,
    }


def test_deletion_and_restore() -> None:
    assert audit.deletion("deleted") == Entry("account_deleted")
    assert audit.deletion("restored") == Entry("account_restored")


def test_no_entry_can_hold_a_credential() -> None:
    """Whatever changes, an entry is made of the plain fields and the version: the cookie
    is not an input of any of these functions, so it cannot reach an entry."""
    after = Fields(x_client_version="v2", user_agent="UA2", customer_id="c", is_active=False)
    entries = [
        audit.created(after),
        *audit.updated(BEFORE, after, credentials_changed=True, credentials_version=7),
    ]
    for entry in entries:
        assert set(entry.fields) <= {*audit.PLAIN_FIELDS, "is_active", CREDENTIALS}
        assert "airbnb_cookie" not in repr(entry)
        assert "credentials_encrypted" not in repr(entry)


def test_the_query_bounds_since_and_wants_an_offset() -> None:
    assert AuditQuery.model_validate({"since": "2026-12-01T21:00:00Z"}).since is not None
    # "0" and "86400.5": what pydantic alone takes for a Unix timestamp.
    for bad in (
        "2026-12-01T21:00:00",
        "0001-01-01T00:00:00+05:00",
        "3000-01-01T00:00:00Z",
        "0",
        "86400.5",
    ):
        with pytest.raises(ValidationError):
            AuditQuery.model_validate({"since": bad})
    with pytest.raises(ValidationError):
        AuditQuery.model_validate({"action": "account_exploded"})
    with pytest.raises(ValidationError):
        AuditQuery.model_validate({"account_id": "007"})
