"""The pure rules of connect tokens and POST /connect (services/admin/connect.py): the
token and its digest, the Authorization header, which tokens may be used, and which account
a session connects. The routes themselves are tests/system/test_connect_tokens.py's."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from services.admin.connect import (
    TOKEN_PREFIX,
    bearer_token,
    new_token,
    target,
    token_digest,
    usable,
)
from services.admin.errors import ApiError
from services.admin.models import ConnectBody
from tests.cookies import as_objects, auth_cookie, browser_cookie

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/146.0.0.0"


def body(cookie: str, **over: Any) -> ConnectBody:
    return ConnectBody.model_validate({"cookies": as_objects(cookie), "user_agent": UA, **over})


def refusal(exc: pytest.ExceptionInfo[ApiError]) -> tuple[int, str]:
    return exc.value.status, exc.value.code


def test_a_token_is_random_prefixed_and_only_its_sha256_is_kept() -> None:
    token, digest = new_token()
    assert re.fullmatch(rf"{TOKEN_PREFIX}[A-Za-z0-9_-]{{43}}", token)
    assert digest == hashlib.sha256(token.encode()).hexdigest() == token_digest(token)
    assert token not in digest and new_token()[0] != token


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "bearer sact_x", "Basic dXNlcjpwYXNz", "sact_x"],
)
def test_no_bearer_token_is_a_401(header: str | None) -> None:
    with pytest.raises(ApiError) as exc:
        bearer_token(header)
    assert refusal(exc) == (401, "missing_connect_token")
    assert "Bearer" in exc.value.headers["WWW-Authenticate"]


def test_the_bearer_token_is_taken_as_given() -> None:
    assert bearer_token("Bearer sact_abc ") == "sact_abc"


@pytest.mark.parametrize(
    ("row", "word"),
    [(None, "not valid"), ({"status": "revoked"}, "revoked"), ({"status": "expired"}, "expired")],
)
def test_only_an_active_token_may_be_used(row: dict[str, str] | None, word: str) -> None:
    with pytest.raises(ApiError) as exc:
        usable(row)  # type: ignore[arg-type]
    assert refusal(exc) == (401, "invalid_connect_token") and word in exc.value.detail
    active = {"status": "active"}
    assert usable(active) is active  # type: ignore[arg-type]


def test_the_session_connects_its_own_host_and_keeps_the_auth_group() -> None:
    aim = target(None, body(browser_cookie("4242", "s1")))
    assert aim.account_id == "4242" and aim.cookie == auth_cookie("4242", "s1")
    assert target("4242", body(browser_cookie("4242"), account_id="4242")).account_id == "4242"


def test_another_hosts_session_is_refused_for_a_bound_token() -> None:
    with pytest.raises(ApiError) as exc:
        target("4242", body(browser_cookie("777")))
    assert refusal(exc) == (403, "wrong_account")
    assert "4242" in exc.value.detail and "secret-session" not in exc.value.detail


def test_the_body_account_id_must_be_the_sessions_host() -> None:
    with pytest.raises(ApiError) as exc:
        target(None, body(browser_cookie("4242"), account_id="777"))
    assert refusal(exc) == (422, "validation_error")
    assert [f.field for f in exc.value.fields or []] == ["account_id"]


@pytest.mark.parametrize(
    "cookie",
    [
        "_ga=GA1.1.1; _aat=x",  # no _user_attributes
        "_user_attributes=%7B%7D; _aat=x",  # no id in it
        "_user_attributes=%7B%22id_str%22%3A%220042%22%7D; _aat=x",  # not an account id
    ],
)
def test_a_session_naming_no_host_is_a_422_on_cookies(cookie: str) -> None:
    with pytest.raises(ApiError) as exc:
        target(None, body(cookie))
    assert refusal(exc) == (422, "validation_error")
    assert [f.field for f in exc.value.fields or []] == ["cookies"]


def test_a_session_without_the_required_auth_cookies_is_a_422_on_cookies() -> None:
    cookie = "_user_attributes=%7B%22id_str%22%3A%224242%22%7D; _ga=GA1"
    with pytest.raises(ApiError) as exc:
        target(None, body(cookie))
    (field,) = exc.value.fields or []
    assert field.field == "cookies" and "_airbed_session_id" in field.message
