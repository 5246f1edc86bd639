"""Credential checks (issue 16, item 3): the pure parts on both sides of the request.

The fetcher's verdicts (what a failure of the preflight or of ListingsSectionQuery says of
the credentials, the listings counted, another host's cookie), the admin's answer to each
verdict, the message round trip and the ``validate`` query parameter. The whole path
against real processes is tests/system/test_credential_check.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from services.admin.credential_check import answer
from services.admin.errors import ApiError
from services.admin.models import ErrorBody, ValidateQuery
from services.fetcher.credential_check import another_host, live, verdict_of_error
from shared import topology, wire
from shared.airbnb.errors import (
    AirbnbError,
    AuthError,
    MalformedResponseError,
    RateLimitedError,
    RejectedRequestError,
    TransientError,
    UnexpectedResponseError,
)
from shared.airbnb.flatteners import Listing, ListingsPage
from shared.messages import (
    CredentialCheck,
    CredentialCheckResult,
    EncryptedCredentials,
    decode,
    encode,
)
from tests.cookies import auth_cookies


def page(ids: list[str], total: int | None = None) -> ListingsPage:
    return ListingsPage([Listing(i, None, None) for i in ids], total, None)


# --- the fetcher's verdicts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (AuthError("preflight: login_redirect"), "expired"),
        (AuthError("ListingsSectionQuery: authentication failed (401)"), "expired"),
        (RejectedRequestError("ListingsSectionQuery: HTTP 431"), "rejected"),
        (TransientError("preflight: gave up after 5 attempts, last: HTTP 503"), "unavailable"),
        (RateLimitedError("ListingsSectionQuery: gave up after 5 attempts"), "unavailable"),
        (MalformedResponseError("data.porygon"), "unavailable"),
        (UnexpectedResponseError("preflight: redirected away from Airbnb"), "unavailable"),
    ],
)
def test_a_failure_says_expired_rejected_or_nothing(exc: AirbnbError, outcome: str) -> None:
    result = verdict_of_error(exc)
    assert result.outcome == outcome
    assert result.listings is None
    assert str(exc) in result.reason


def test_a_live_session_counts_its_listings_once_each() -> None:
    assert live(page(["1", "2", "2", "3"])).listings == 3
    assert live(page([])).listings == 0
    assert live(page(["1"])).reason == "the session is live: 1 listing"


def test_a_live_session_counts_what_airbnb_reports_when_it_returned_fewer() -> None:
    # As a sync's job does (ends partial, "N of M"): the host has M listings.
    assert live(page(["1", "2"], total=9)).listings == 9
    assert live(page(["1", "2"], total=1)).listings == 2


def test_another_hosts_cookie_is_other_host_before_any_request() -> None:
    assert another_host(auth_cookies("42"), "42") is None
    wrong = another_host(auth_cookies("43"), "42")
    assert wrong is not None and wrong.outcome == "other_host"
    assert "account 42" in wrong.reason
    none = another_host({"_aat": "x"}, "42")
    assert none is not None and none.outcome == "other_host"
    assert "names no host" in none.reason


def test_no_verdict_holds_a_cookie_value() -> None:
    cookie = auth_cookies("43", session="very-secret-session-value")
    results = [another_host(cookie, "42"), verdict_of_error(AuthError("preflight: x"))]
    for r in results:
        assert r is not None
        assert not any(v in encode(r).decode() for v in cookie.values() if len(v) > 8)


# --- the admin's answers ----------------------------------------------------------------------


def test_live_is_the_saved_answer_with_the_listing_count() -> None:
    out = answer(CredentialCheckResult(outcome="live", listings=4, reason="live"))
    assert out.model_dump() == {"outcome": "live", "listings": 4}


@pytest.mark.parametrize("outcome", ["expired", "other_host", "rejected"])
def test_a_refused_session_is_a_422_naming_the_reason_and_the_cookie(outcome: str) -> None:
    with pytest.raises(ApiError) as caught:
        answer(CredentialCheckResult(outcome=outcome, reason="why Airbnb said so"))  # type: ignore[arg-type]
    err = caught.value
    assert err.status == 422
    body = err.body().model_dump(mode="json", exclude_none=True)
    assert body["error"] == "credentials_rejected"
    assert body["reason"] == outcome
    assert "why Airbnb said so" in body["detail"] and "nothing was saved" in body["detail"]
    assert [f["field"] for f in body["fields"]] == ["airbnb_cookie"]
    assert body["fields"][0]["type"] == f"credentials_{outcome}"
    assert err.headers == {}


def test_no_verdict_is_a_503_with_retry_after() -> None:
    with pytest.raises(ApiError) as caught:
        answer(CredentialCheckResult(outcome="unavailable", reason="Airbnb did not answer"))
    err = caught.value
    assert err.status == 503
    assert err.code == "credentials_check_unavailable"
    assert int(err.headers["Retry-After"]) >= 1
    assert "Airbnb did not answer" in err.detail and "nothing was saved" in err.detail


def test_other_errors_have_no_reason_in_their_body() -> None:
    body = ErrorBody(error="not_found", detail="x").model_dump(mode="json", exclude_none=True)
    assert "reason" not in body


# --- the messages and the query ---------------------------------------------------------------


def test_the_check_and_its_result_round_trip_on_their_subject() -> None:
    check = CredentialCheck(
        account_id="42",
        credentials=EncryptedCredentials(
            cookie_token="gAAAA-token", x_client_version="web-1", user_agent="Mozilla/5.0"
        ),
        requested_at=dt.datetime(2025, 7, 11, 5, tzinfo=dt.UTC),
    )
    assert wire.model_for(topology.CREDENTIAL_CHECKS) is CredentialCheck
    assert wire.decode_on(topology.CREDENTIAL_CHECKS, encode(check)) == check
    result = CredentialCheckResult(outcome="live", listings=3, reason="ok")
    assert decode(CredentialCheckResult, encode(result)) == result


def test_a_result_is_one_of_the_outcomes_and_a_count_is_not_negative() -> None:
    with pytest.raises(ValidationError):
        CredentialCheckResult(outcome="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        CredentialCheckResult(outcome="live", listings=-1)


def test_validate_is_a_boolean_query_parameter_false_by_default() -> None:
    assert ValidateQuery.model_validate({}).validate_ is False
    assert ValidateQuery.model_validate({"validate": "true"}).validate_ is True
    assert ValidateQuery.model_validate({"validate": "false"}).validate_ is False
    with pytest.raises(ValidationError):
        ValidateQuery.model_validate({"validate": "perhaps"})
    with pytest.raises(ValidationError):
        ValidateQuery.model_validate({"validate": "true", "other": "1"})
