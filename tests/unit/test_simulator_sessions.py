"""The simulator's session lifecycle: the pure rules of ``services.simulator.sessions``.

The app in-process and the HTTPS process are in tests/system/test_simulator_sessions.py."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from services.simulator import sessions
from services.simulator.data import build_world
from shared.airbnb.cookies import (
    AUTH_COOKIES,
    BOT_MANAGER_COOKIES,
    CookieGroup,
    group_of,
    intake,
    parse_cookie_header,
)

TODAY = date(2025, 7, 11)
SEED = 7
KEY = sessions.session_key(SEED)

UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
DASHBOARD_HEADERS = {
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Site": "same-origin",
    "Sec-Fetch-Dest": "empty",
    "Accept-Language": "en-US,en;q=0.9",
    "Referer": "https://www.airbnb.com/hosting/performance/conversion",
    "X-Airbnb-Client-Trace-Id": "trace-1",
    "X-Client-Request-Id": "request-1",
    "X-Airbnb-Supports-Airlock-V2": "true",
    "X-Niobe-Short-Circuited": "true",
    "X-Airbnb-API-Key": "d306zoyjsyarp7ifhu67rjxn52tv0t20",
    "User-Agent": UA,
    "Sec-CH-UA": '"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"',
}


def test_a_token_is_valid_only_for_what_it_was_signed_for() -> None:
    token = sessions.sign_token(KEY, "123", "sess", "aaj", TODAY, "n0nce")
    assert sessions.token_issue_day(KEY, token, "123", "sess", "aaj") == TODAY
    assert sessions.token_issue_day(KEY, token, "124", "sess", "aaj") is None
    assert sessions.token_issue_day(KEY, token, "123", "other", "aaj") is None
    assert sessions.token_issue_day(KEY, token, "123", "sess", "bm_sv") is None
    assert (
        sessions.token_issue_day(sessions.session_key(SEED + 1), token, "123", "sess", "aaj")
        is None
    )
    # Moving the day forward breaks the signature: nobody can refresh a token by hand.
    forged = "20250712" + token[8:]
    assert sessions.token_issue_day(KEY, forged, "123", "sess", "aaj") is None
    for junk in (None, "", "x", "a.b", "notaday.n.m", token + "0"):
        assert sessions.token_issue_day(KEY, junk, "123", "sess", "aaj") is None


@pytest.mark.parametrize(("age", "fresh"), [(-1, False), (0, True), (1, True), (2, False)])
def test_an_aaj_is_valid_on_its_issue_day_and_the_next(age: int, fresh: bool) -> None:
    assert sessions.aaj_fresh(TODAY - timedelta(days=age), TODAY) is fresh


def test_the_dashboards_headers_pass_whatever_the_case_of_their_names() -> None:
    assert sessions.header_problem(DASHBOARD_HEADERS) is None
    assert sessions.header_problem({k.lower(): v for k, v in DASHBOARD_HEADERS.items()}) is None
    # Not Chrome: no client hints needed.
    firefox = {k: v for k, v in DASHBOARD_HEADERS.items() if k != "Sec-CH-UA"}
    firefox["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
    assert sessions.header_problem(firefox) is None


@pytest.mark.parametrize("missing", sorted(DASHBOARD_HEADERS))
def test_each_missing_dashboard_header_is_a_problem(missing: str) -> None:
    headers = {k: v for k, v in DASHBOARD_HEADERS.items() if k != missing}
    assert sessions.header_problem(headers) == missing.lower()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Sec-Fetch-Mode", "navigate"),
        ("X-Airbnb-Supports-Airlock-V2", "false"),
        ("Accept-Language", " "),
        ("Referer", "https://www.airbnb.com/rooms/1"),
        ("Sec-CH-UA", '"Google Chrome";v="130", "Chromium";v="130"'),
    ],
)
def test_a_wrong_dashboard_header_is_a_problem(name: str, value: str) -> None:
    assert sessions.header_problem({**DASHBOARD_HEADERS, name: value}) == name.lower()


def test_strike_reasons() -> None:
    sid = sessions.airbed_session_id(KEY, "123", 0)
    bm_sv = sessions.bot_manager_cookies(KEY, "123", sid, TODAY, 1)["bm_sv"]
    yesterdays = sessions.bot_manager_cookies(KEY, "123", sid, TODAY - timedelta(days=1), 1)
    ok = {"bm_sv": bm_sv}
    assert sessions.strike_reason(KEY, "123", sid, ok, DASHBOARD_HEADERS, TODAY) is None
    no_bm = sessions.StrikeReason.NO_BM_SV
    assert sessions.strike_reason(KEY, "123", sid, {}, DASHBOARD_HEADERS, TODAY) is no_bm
    stale = {"bm_sv": yesterdays["bm_sv"]}
    assert sessions.strike_reason(KEY, "123", sid, stale, DASHBOARD_HEADERS, TODAY) is no_bm
    other_session = sessions.airbed_session_id(KEY, "123", 1)
    assert sessions.strike_reason(KEY, "123", other_session, ok, DASHBOARD_HEADERS, TODAY) is no_bm
    bare = {"User-Agent": UA}
    assert sessions.strike_reason(KEY, "123", sid, ok, bare, TODAY) is sessions.StrikeReason.HEADERS


def test_rotation_every_nth() -> None:
    assert [n for n in range(1, 16) if sessions.rotates(n, 5)] == [5, 10, 15]
    assert not any(sessions.rotates(n, 0) for n in range(1, 20))


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("127.0.0.1:8081", None),
        ("[::1]:8081", None),
        ("::1", None),
        ("localhost:8081", None),
        ("simulator:8081", None),
        ("www.airbnb.com", ".airbnb.com"),
        ("sim.example.test:443", ".example.test"),
        (None, None),
    ],
)
def test_cookie_domain(host: str | None, domain: str | None) -> None:
    assert sessions.cookie_domain(host) == domain


def test_set_cookie_attributes() -> None:
    aaj = sessions.set_cookie_header("_aaj", "v", None, secure=False)
    assert aaj == f"_aaj=v; Path=/; Max-Age={sessions.COOKIE_MAX_AGE_S}; HttpOnly"
    bm = sessions.set_cookie_header("bm_sv", "v", ".airbnb.com", secure=True)
    assert bm == f"bm_sv=v; Path=/; Max-Age={sessions.COOKIE_MAX_AGE_S}; Domain=.airbnb.com; Secure"


def test_the_browser_cookie_holds_all_three_groups_and_passes_intake() -> None:
    account = build_world(1, 2, SEED).accounts[0]
    cookies = parse_cookie_header(account.cookie_on(TODAY))
    assert set(AUTH_COOKIES) | set(BOT_MANAGER_COOKIES) <= cookies.keys()
    assert {"_ga", "_gcl_au", "muxData"} <= cookies.keys()
    assert all(group_of(n) is CookieGroup.ANALYTICS for n in ("_ga", "_gcl_au", "muxData"))
    assert cookies["_aat"] == account.session_token
    stored = parse_cookie_header(intake(account.cookie_on(TODAY), account.account_id))
    assert list(stored) == list(AUTH_COOKIES)
    sid = cookies["_airbed_session_id"]
    assert sessions.token_issue_day(KEY, cookies["_aaj"], account.account_id, sid, "aaj") == TODAY
    assert (
        sessions.token_issue_day(KEY, cookies["bm_sv"], account.account_id, sid, "bm_sv") == TODAY
    )
    # A new login is a new session id; the same login on the same day is the same cookie.
    assert account.cookie_on(TODAY) == account.cookie_on(TODAY)
    assert parse_cookie_header(account.cookie_on(TODAY, 1))["_airbed_session_id"] != sid


def test_dead_reasons() -> None:
    account = build_world(1, 1, SEED).accounts[0]
    live = parse_cookie_header(account.cookie_on(TODAY))
    view = sessions.SessionView()
    aid = account.account_id

    def reason(
        cookies: dict[str, str], v: sessions.SessionView = view, today: date = TODAY
    ) -> sessions.Dead | None:
        return sessions.dead_reason(KEY, aid, cookies, v, today)

    assert reason(live) is None
    assert reason(live, today=TODAY + timedelta(days=1)) is None
    assert reason(live, today=TODAY + timedelta(days=2)) is sessions.Dead.STALE_AAJ
    assert reason(live, sessions.SessionView(revoked=True)) is sessions.Dead.REVOKED
    assert reason(live, sessions.SessionView(strikes=3)) is sessions.Dead.STRUCK_OUT
    assert reason(live, sessions.SessionView(strikes=2)) is None
    assert reason(live, sessions.SessionView(generation=1)) is sessions.Dead.OLD_LOGIN
    assert reason({**live, "_aaj": "x"}) is sessions.Dead.NO_AAJ


def test_the_store_survives_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sessions.json"
    store = sessions.SessionStore(path)
    rec = store.get("1")
    rec.generation, rec.strikes, rec.preflights = 2, 1, 4
    store.update("1", rec)
    again = sessions.SessionStore(path)
    assert again.get("1") == rec
    assert again.get("2") == sessions.SessionRecord()
    assert [p.name for p in path.parent.iterdir()] == ["sessions.json"]
