"""shared/airbnb/cookie_jar.py: RFC 6265 for one host, as the client uses it."""

from __future__ import annotations

import pytest

from shared.airbnb.cookie_jar import (
    CookieJar,
    default_path,
    domain_matches,
    jar_of,
    path_matches,
)

NOW = 1_800_000_000.0
HOST = "www.airbnb.com"


def test_stored_cookies_are_sent_in_the_order_given() -> None:
    jar = jar_of(HOST, {"_airbed_session_id": "s1", "_aat": "t1", "_aaj": "j1"}, ".airbnb.com")
    assert (
        jar.header("/api/v3/Q/h", secure=True, now=NOW) == "_airbed_session_id=s1; _aat=t1; _aaj=j1"
    )
    assert jar.values(NOW) == {"_airbed_session_id": "s1", "_aat": "t1", "_aaj": "j1"}


def test_a_set_cookie_replaces_the_value_in_place_and_adds_new_ones_last() -> None:
    jar = jar_of(HOST, {"a": "1", "_aaj": "old"}, ".airbnb.com")
    jar.absorb(
        [
            "_aaj=new; Path=/; Max-Age=3600; Domain=.airbnb.com; Secure; HttpOnly",
            "bm_sv=abc; Domain=airbnb.com; Path=/",
        ],
        "/hosting/insights",
        NOW,
    )
    assert jar.header("/", secure=True, now=NOW) == "a=1; _aaj=new; bm_sv=abc"


def test_max_age_zero_and_a_past_expires_delete_and_max_age_wins_over_expires() -> None:
    jar = jar_of(HOST, {"a": "1", "b": "2", "c": "3"}, ".airbnb.com")
    jar.absorb(
        [
            "a=; Max-Age=0; Domain=.airbnb.com; Path=/",
            "b=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Domain=.airbnb.com; Path=/",
            # a past Expires, but Max-Age says an hour: kept
            "c=y; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=3600; Domain=.airbnb.com",
        ],
        "/",
        NOW,
    )
    assert jar.values(NOW) == {"c": "y"}


def test_a_cookie_expires_when_its_time_comes() -> None:
    jar = CookieJar(HOST)
    jar.absorb(["short=1; Max-Age=10", "long=2; Max-Age=1000"], "/", NOW)
    assert jar.header("/", secure=False, now=NOW + 9) == "short=1; long=2"
    assert jar.header("/", secure=False, now=NOW + 10) == "long=2"
    assert jar.values(NOW + 1000) == {}


def test_another_sites_domain_is_ignored_and_no_domain_is_host_only() -> None:
    jar = CookieJar(HOST)
    jar.absorb(
        ["evil=1; Domain=example.com", "sub=2; Domain=api.www.airbnb.com", "host=3"],
        "/",
        NOW,
    )
    assert jar.values(NOW) == {"host": "3"}


def test_secure_cookies_only_over_https() -> None:
    jar = CookieJar(HOST)
    jar.absorb(["s=1; Secure", "p=2"], "/", NOW)
    assert jar.header("/", secure=False, now=NOW) == "p=2"
    assert jar.header("/", secure=True, now=NOW) == "s=1; p=2"


def test_paths_scope_cookies_and_longer_paths_go_first() -> None:
    jar = CookieJar(HOST)
    jar.absorb(["root=1; Path=/", "deep=2; Path=/api/v3", "other=3; Path=/hosting"], "/", NOW)
    assert jar.header("/api/v3/Q/h", secure=True, now=NOW) == "deep=2; root=1"
    assert jar.header("/hosting/insights", secure=True, now=NOW) == "other=3; root=1"
    # no Path: the request's directory
    jar.absorb(["dir=4"], "/hosting/insights", NOW)
    assert "dir=4" in jar.header("/hosting/x", secure=True, now=NOW)
    assert "dir=4" not in jar.header("/api/v3/Q/h", secure=True, now=NOW)


def test_the_same_name_on_two_paths_is_two_cookies() -> None:
    jar = CookieJar(HOST)
    jar.absorb(["n=root; Path=/", "n=deep; Path=/api"], "/", NOW)
    assert jar.header("/api/x", secure=True, now=NOW) == "n=deep; n=root"


@pytest.mark.parametrize(
    "line",
    ["novalue", "=nameless", "", ";;", "a=1; Max-Age=soon; Expires=not a date"],
)
def test_malformed_lines_are_ignored_or_read_leniently(line: str) -> None:
    jar = CookieJar(HOST)
    jar.absorb([line], "/", NOW)
    # only the last one is a cookie: an unreadable Max-Age and Expires are ignored
    assert jar.values(NOW) == ({"a": "1"} if line.startswith("a=") else {})


def test_the_header_is_rebuilt_after_a_change() -> None:
    jar = jar_of(HOST, {"a": "1"}, HOST)
    assert jar.header("/", secure=True, now=NOW) == "a=1"
    jar.absorb(["a=2"], "/", NOW)
    assert jar.header("/", secure=True, now=NOW) == "a=2"
    assert "=2" not in repr(jar)  # repr holds no value


def test_rfc_6265_matching_rules() -> None:
    assert domain_matches("www.airbnb.com", "airbnb.com")
    assert not domain_matches("notairbnb.com", "airbnb.com")
    assert path_matches("/api/v3", "/api")
    assert path_matches("/api/", "/api/")
    assert not path_matches("/apiv3", "/api")
    assert default_path("/hosting/insights") == "/hosting"
    assert default_path("/insights") == "/"
    assert default_path("") == "/"
