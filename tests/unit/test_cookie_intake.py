"""shared/airbnb/cookies.py: what intake keeps of a cookie, and what it refuses (pure)."""

from __future__ import annotations

from urllib.parse import quote

import orjson
import pytest

from shared.airbnb import cookies
from shared.airbnb.cookies import CookieGroup, CookieIntakeError
from tests.cookies import (
    ANALYTICS,
    BOT_MANAGER,
    as_objects,
    auth_cookie,
    auth_cookies,
    browser_cookie,
    header,
)

HOST = "123456789"


def test_groups() -> None:
    assert {cookies.group_of(n) for n in cookies.AUTH_COOKIES} == {CookieGroup.AUTH}
    assert {cookies.group_of(n) for n in BOT_MANAGER} == {CookieGroup.BOT_MANAGER}
    assert {cookies.group_of(n) for n in ANALYTICS} == {CookieGroup.ANALYTICS}


def test_parse_keeps_odd_characters_and_the_last_of_a_repeated_name() -> None:
    parsed = cookies.parse_cookie_header(' a=1; b="x,y"; novalue; =nameless; a=2 ; c=')
    assert parsed == {"a": "2", "b": '"x,y"', "c": ""}


def test_intake_keeps_the_auth_group_in_airbnbs_order() -> None:
    shuffled = header(dict(reversed(list(auth_cookies(HOST).items()))) | BOT_MANAGER)
    assert cookies.intake(shuffled, HOST) == auth_cookie(HOST)
    assert cookies.intake(browser_cookie(HOST), HOST) == auth_cookie(HOST)
    assert cookies.intake(as_objects(browser_cookie(HOST)), HOST) == auth_cookie(HOST)


@pytest.mark.parametrize("missing", cookies.REQUIRED_AUTH_COOKIES)
def test_intake_needs_the_three_required_cookies(missing: str) -> None:
    full = auth_cookies(HOST)
    for cookie in (
        header({k: v for k, v in full.items() if k != missing}),
        header({**full, missing: ""}),
    ):
        with pytest.raises(CookieIntakeError, match=missing) as caught:
            cookies.intake(cookie, HOST)
        assert "secret-session" not in str(caught.value)


def test_intake_refuses_another_hosts_cookie_without_saying_whose() -> None:
    with pytest.raises(CookieIntakeError, match="another Airbnb host") as caught:
        cookies.intake(browser_cookie("987"), HOST)
    assert "987" not in str(caught.value) and "secret-session" not in str(caught.value)


@pytest.mark.parametrize(
    "attrs",
    ["not-json", quote("[1, 2]"), quote('{"curr": "USD"}'), quote('{"id_str": true}')],
)
def test_intake_refuses_an_unreadable_user_attributes(attrs: str) -> None:
    with pytest.raises(CookieIntakeError, match="id_str"):
        cookies.intake(header({**auth_cookies(HOST), "_user_attributes": attrs}), HOST)


def test_user_id_reads_id_str_or_a_numeric_id() -> None:
    assert cookies.user_id({"_user_attributes": quote(orjson.dumps({"id": 42}).decode())}) == "42"
    assert cookies.user_id(auth_cookies(HOST)) == HOST
    assert cookies.user_id({}) is None


def test_list_items_need_string_names_and_values() -> None:
    with pytest.raises(CookieIntakeError, match="item 1") as caught:
        cookies.intake([{"name": "_aat", "value": "v"}, {"name": "x", "value": 5}], HOST)
    assert "'v'" not in str(caught.value)


def test_auth_cookies_of_a_jar() -> None:
    pairs = [("_ga", "1"), ("_aaj", "old"), ("bm_sv", "2"), ("_aat", "t"), ("_aaj", "new")]
    assert cookies.auth_cookies_of(pairs) == {"_aaj": "new", "_aat": "t"}


def test_intake_bounds_the_stored_auth_group_but_not_what_it_drops() -> None:
    base = auth_cookie(HOST)
    # "; hli=" and the value: exactly at the limit is kept, one character more is refused.
    room = cookies.MAX_STORED_COOKIE - len(base) - len("; hli=")
    at_limit = header({**auth_cookies(HOST), "hli": "h" * room})
    assert len(cookies.intake(at_limit, HOST)) == cookies.MAX_STORED_COOKIE
    # Analytics and bot-manager cookies are dropped first: only what is stored counts.
    assert cookies.intake(header({"_ga": "g" * 6000, **auth_cookies(HOST)}), HOST) == base
    over = header({**auth_cookies(HOST), "hli": "h" * (room + 1)})
    with pytest.raises(CookieIntakeError) as caught:
        cookies.intake(over, HOST)
    message = str(caught.value)
    assert f"{cookies.MAX_STORED_COOKIE + 1} characters" in message
    assert f"limit of {cookies.MAX_STORED_COOKIE}" in message and "hli" in message
    assert "hhhh" not in message and "secret-session" not in message
