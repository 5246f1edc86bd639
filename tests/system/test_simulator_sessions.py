"""The simulator's session lifecycle: the app in-process (a browser-like client over
aiohttp's test server), then HTTPS served by the real ``sync-airbnb simulator --tls-dir``
process. The pure rules of ``services.simulator.sessions`` are in
tests/unit/test_simulator_sessions.py."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.simulator import sessions
from services.simulator.app import create_app
from services.simulator.data import Account, World, build_world
from shared.airbnb.cookies import (
    AUTH_COOKIES,
    BOT_MANAGER_COOKIES,
    intake,
    parse_cookie_header,
)
from shared.airbnb.operations import CHART, LISTINGS_SECTION
from shared.airbnb.payloads import chart_payload, listings_section_payload
from shared.airbnb.windows import DateRange
from tests.stack import StartSimulator
from tests.unit.test_simulator_sessions import DASHBOARD_HEADERS, KEY, SEED, TODAY

Client = TestClient[Any, Any]


# -- the app, in-process --------------------------------------------------------------------


@dataclass
class Clock:
    """The simulator's today, moved by the test."""

    day: date = TODAY

    def __call__(self) -> date:
        return self.day


@dataclass
class Browser:
    """A host's browser against the simulator: a cookie jar we can read, the dashboard's headers."""

    client: Client
    cookies: dict[str, str]
    headers: dict[str, str] = field(default_factory=lambda: dict(DASHBOARD_HEADERS))

    def take(self, response: aiohttp.ClientResponse) -> dict[str, str]:
        """The cookies a response set (taken into the jar), by name."""
        got = {}
        for header in response.headers.getall("Set-Cookie", []):
            name, _, rest = header.partition("=")
            got[name] = rest.split(";", 1)[0]
        self.cookies.update(got)
        return got

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    async def preflight(self) -> aiohttp.ClientResponse:
        response = await self.client.get(
            "/hosting/insights?tab=conversion",
            headers={"Cookie": self.cookie_header()},
            allow_redirects=False,
        )
        self.take(response)
        return response

    async def graphql(self, account: Account) -> aiohttp.ClientResponse:
        response = await self.client.post(
            LISTINGS_SECTION.path,
            json=listings_section_payload(),
            headers={**self.headers, "Cookie": self.cookie_header()},
        )
        self.take(response)
        return response


def auth_only(account: Account, day: date = TODAY, generation: int = 0) -> dict[str, str]:
    """What the system stores: the auth group of the browser cookie, nothing else."""
    cookie = account.cookie_on(day, generation)
    return parse_cookie_header(intake(cookie, account.account_id))


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(2, 2, SEED)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def serve(world: World, clock: Clock, **kwargs: Any) -> Client:
    # No cookie jar in the client: each test says exactly which cookies go out.
    client = TestClient(
        TestServer(create_app(world, today=clock, **kwargs)), cookie_jar=aiohttp.DummyCookieJar()
    )
    await client.start_server()
    return client


@pytest.fixture
async def sim(world: World, clock: Clock) -> AsyncIterator[Client]:
    client = await serve(world, clock)
    yield client
    await client.close()


async def counts_of(sim: Client, account: Account) -> dict[str, Any]:
    return (await (await sim.get("/_sim/requests")).json()).get(account.account_id, {})


async def test_a_live_preflight_lands_on_the_dashboard_with_fresh_cookies(
    sim: Client, world: World
) -> None:
    account = world.accounts[0]
    browser = Browser(sim, auth_only(account, TODAY - timedelta(days=1)))
    old_aaj = browser.cookies["_aaj"]

    response = await browser.preflight()

    assert response.status == 302
    assert response.headers["Location"] == "/hosting/performance/conversion"
    set_cookies = response.headers.getall("Set-Cookie")
    assert {h.split("=", 1)[0] for h in set_cookies} == {*BOT_MANAGER_COOKIES, "_aaj"}
    for header in set_cookies:
        attrs = [a.strip() for a in header.split(";")[1:]]
        assert "Path=/" in attrs
        assert not any(a.startswith("Domain=") for a in attrs)  # the host is an IP
        assert "Secure" not in attrs  # plain http
        assert ("HttpOnly" in attrs) == header.startswith("_aaj=")
    sid = browser.cookies["_airbed_session_id"]
    aid = account.account_id
    assert browser.cookies["_aaj"] != old_aaj
    assert sessions.token_issue_day(KEY, browser.cookies["_aaj"], aid, sid, "aaj") == TODAY
    assert sessions.token_issue_day(KEY, browser.cookies["bm_sv"], aid, sid, "bm_sv") == TODAY

    page = await sim.get(response.headers["Location"], headers={"Cookie": browser.cookie_header()})
    assert page.status == 200
    assert page.content_type == "text/html"
    assert (await counts_of(sim, account))["preflights"] == 1


@pytest.mark.parametrize("why", ["stale _aaj", "no _aaj", "wrong _aat", "unknown host"])
async def test_a_dead_preflight_is_sent_to_login(sim: Client, world: World, why: str) -> None:
    account = world.accounts[0]
    cookies = auth_only(account)
    match why:
        case "stale _aaj":
            cookies = auth_only(account, TODAY - timedelta(days=2))
        case "no _aaj":
            del cookies["_aaj"]
        case "wrong _aat":
            cookies["_aat"] = "0" * 48
        case "unknown host":
            cookies["_user_attributes"] = "%7B%22id_str%22%3A%22999%22%7D"
    browser = Browser(sim, cookies)

    response = await browser.preflight()

    assert response.status == 302
    assert response.headers["Location"] == "/login?redirect_url=%2Fhosting%2Finsights"
    assert "Set-Cookie" not in response.headers
    login = await sim.get(response.headers["Location"])
    assert (login.status, login.content_type) == (200, "text/html")
    dashboard = await sim.get(
        "/hosting/performance/conversion",
        headers={"Cookie": browser.cookie_header()},
        allow_redirects=False,
    )
    assert dashboard.status == 302
    assert dashboard.headers["Location"].startswith("/login")
    graphql = await browser.graphql(account)
    assert graphql.status == 401
    body = await graphql.json()
    assert body["errors"][0]["extensions"]["errorType"] == "authentication_required"
    # A preflight naming a known host counts, live or dead.
    expected = {} if why == "unknown host" else {"preflights": 1}
    counts = await counts_of(sim, account)
    assert {k: counts[k] for k in expected} == expected


async def test_a_browser_that_preflights_daily_stays_live_for_thirty_days(
    world: World, clock: Clock
) -> None:
    sim = await serve(world, clock, rotate_every=4)
    try:
        account = world.accounts[1]
        browser = Browser(sim, auth_only(account))
        for _day in range(30):
            assert (await browser.preflight()).headers["Location"].startswith("/hosting/")
            for _ in range(6):
                assert (await browser.graphql(account)).status == 200
            # What the fetcher saves back: the auth group only; the next day starts from it.
            browser.cookies = {k: v for k, v in browser.cookies.items() if k in AUTH_COOKIES}
            clock.day += timedelta(days=1)
        counts = await counts_of(sim, account)
        assert (counts["preflights"], counts["strikes"], counts["total"]) == (30, 0, 180)
    finally:
        await sim.close()


async def test_a_cookie_replayed_without_preflight_dies(world: World, clock: Clock) -> None:
    """Day 1 every request lacks bm_sv (a strike); three of them end the session."""
    sim = await serve(world, clock)
    try:
        account = world.accounts[0]
        browser = Browser(sim, auth_only(account))
        statuses = [(await browser.graphql(account)).status for _ in range(4)]
        # Struck requests are answered normally; the one after the third finds it dead.
        assert statuses == [200, 200, 200, 401]
        counts = await counts_of(sim, account)
        assert counts["strikes"] == 3
        assert counts["strike_reasons"] == {"no_bm_sv": 3, "headers": 0}
        assert (await browser.preflight()).headers["Location"].startswith("/login")
        accounts = await (await sim.get("/_sim/accounts")).json()
        assert accounts[0]["session"] == {"generation": 0, "strikes": 3, "revoked": False}
    finally:
        await sim.close()


async def test_missing_headers_are_strikes_and_three_end_the_session(
    sim: Client, world: World
) -> None:
    account = world.accounts[0]
    browser = Browser(sim, auth_only(account))
    await browser.preflight()
    assert (await browser.graphql(account)).status == 200
    browser.headers.pop("X-Niobe-Short-Circuited")
    for _ in range(3):
        assert (await browser.graphql(account)).status == 200
    assert (await browser.graphql(account)).status == 401
    counts = await counts_of(sim, account)
    assert counts["strike_reasons"] == {"no_bm_sv": 0, "headers": 3}
    # The other host's session is untouched.
    other = Browser(sim, auth_only(world.accounts[1]))
    await other.preflight()
    assert (await other.graphql(world.accounts[1])).status == 200


async def test_every_nth_answer_rotates_the_aaj(world: World, clock: Clock) -> None:
    sim = await serve(world, clock, rotate_every=3)
    try:
        account = world.accounts[0]
        browser = Browser(sim, auth_only(account))
        await browser.preflight()
        seen: list[str] = [browser.cookies["_aaj"]]
        rotated_at = []
        for n in range(1, 10):
            set_now = browser.take(await browser.graphql(account))
            if set_now:
                assert list(set_now) == ["_aaj"]
                rotated_at.append(n)
                seen.append(set_now["_aaj"])
        assert rotated_at == [3, 6, 9]
        assert len(set(seen)) == len(seen)
        sid = browser.cookies["_airbed_session_id"]
        for token in seen:
            assert sessions.token_issue_day(KEY, token, account.account_id, sid, "aaj") == TODAY
    finally:
        await sim.close()


async def test_revoke_then_log_in_again(sim: Client, world: World) -> None:
    account = world.accounts[0]
    browser = Browser(sim, auth_only(account))
    await browser.preflight()
    assert (await browser.graphql(account)).status == 200

    revoked = await sim.post(f"/_sim/faults/revoke/{account.account_id}")
    assert revoked.status == 200
    assert (await browser.graphql(account)).status == 401
    assert (await browser.preflight()).headers["Location"].startswith("/login")
    assert (await sim.post("/_sim/faults/revoke/999")).status == 404
    assert (await sim.post("/_sim/accounts/999/login")).status == 404

    login = await (await sim.post(f"/_sim/accounts/{account.account_id}/login")).json()
    assert login["account_id"] == account.account_id
    fresh = parse_cookie_header(login["cookie"])
    assert fresh["_airbed_session_id"] != browser.cookies["_airbed_session_id"]
    assert login["cookie"] == account.cookie_on(TODAY, 1)
    listed = await (await sim.get("/_sim/accounts")).json()
    assert listed[0]["cookie"] == login["cookie"]
    assert listed[0]["session"] == {"generation": 1, "strikes": 0, "revoked": False}

    # The old login stays dead; the new one lives.
    assert (await browser.preflight()).headers["Location"].startswith("/login")
    again = Browser(sim, parse_cookie_header(intake(login["cookie"], account.account_id)))
    assert (await again.preflight()).headers["Location"].startswith("/hosting/performance")
    assert (await again.graphql(account)).status == 200


async def test_the_state_dir_keeps_sessions_across_a_restart(
    world: World, clock: Clock, tmp_path: Path
) -> None:
    account = world.accounts[0]
    first = await serve(world, clock, state_dir=tmp_path)
    try:
        login = await (await first.post(f"/_sim/accounts/{account.account_id}/login")).json()
        browser = Browser(first, parse_cookie_header(intake(login["cookie"], account.account_id)))
        await browser.preflight()
        browser.headers.pop("Referer")
        for _ in range(2):
            assert (await browser.graphql(account)).status == 200
    finally:
        await first.close()
    assert (tmp_path / "sessions.json").is_file()

    second = await serve(world, clock, state_dir=tmp_path)
    try:
        browser.client = second
        listed = await (await second.get("/_sim/accounts")).json()
        assert listed[0]["session"] == {"generation": 1, "strikes": 2, "revoked": False}
        counts = await counts_of(second, account)
        assert (counts["preflights"], counts["strikes"]) == (1, 2)
        # The cookies the first process issued are still its own, and one more strike ends it.
        assert (await browser.graphql(account)).status == 200
        assert (await browser.graphql(account)).status == 401
    finally:
        await second.close()


async def test_tokens_outlive_a_restart_without_state_dir(world: World, clock: Clock) -> None:
    """The data-path tests restart the simulator for "the next day"; signed tokens still count."""
    account = world.accounts[1]
    first = await serve(world, clock)
    browser = Browser(first, auth_only(account))
    await browser.preflight()
    await first.close()

    clock.day += timedelta(days=1)
    second = await serve(world, clock)
    try:
        browser.client = second
        assert (await browser.preflight()).headers["Location"].startswith("/hosting/performance")
        assert (await browser.graphql(account)).status == 200
        assert (await counts_of(second, account))["strikes"] == 0
    finally:
        await second.close()


async def test_lifecycle_off_accepts_the_plain_cookie_but_still_revokes(
    world: World, clock: Clock
) -> None:
    sim = await serve(world, clock, lifecycle=False, rotate_every=1)
    try:
        account = world.accounts[0]
        # A stale, bare cookie with no browser headers: fine with the lifecycle off.
        browser = Browser(sim, auth_only(account, TODAY - timedelta(days=40)), headers={})
        preflight = await browser.preflight()
        assert preflight.headers["Location"].startswith("/hosting/performance")
        assert "bm_sv" in browser.take(preflight) or "bm_sv" in browser.cookies
        for _ in range(5):
            response = await browser.graphql(account)
            assert response.status == 200
            assert "Set-Cookie" not in response.headers
        assert (await counts_of(sim, account))["strikes"] == 0
        window = DateRange(TODAY - timedelta(days=27), TODAY)
        body = chart_payload(account.listings[0].listing_id, window, TODAY, "p3_impressions")
        chart = await sim.post(CHART.path, json=body, headers={"Cookie": account.cookie})
        assert chart.status == 200

        await sim.post(f"/_sim/faults/revoke/{account.account_id}")
        assert (await browser.graphql(account)).status == 401
        assert (await browser.preflight()).headers["Location"].startswith("/login")
    finally:
        await sim.close()


# -- HTTPS, the real process ----------------------------------------------------------------


async def test_https_with_a_throwaway_certificate(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    tls_dir = tmp_path / "tls"
    sim = await start_simulator(seed=SEED, accounts=1, listings=1, today=TODAY, tls_dir=tls_dir)
    assert sim.url.startswith("https://127.0.0.1:")
    port = int(sim.url.rsplit(":", 1)[1])
    assert (tls_dir / "cert.pem").is_file()
    assert (tls_dir / "key.pem").stat().st_mode & 0o077 == 0

    trusting = ssl.create_default_context(cafile=tls_dir / "cert.pem")
    base = f"https://127.0.0.1:{port}"
    async with aiohttp.ClientSession(base, cookie_jar=aiohttp.DummyCookieJar()) as http:
        accounts = await (await http.get("/_sim/accounts", ssl=trusting)).json()
        cookies = parse_cookie_header(intake(accounts[0]["cookie"], accounts[0]["account_id"]))
        response = await http.get(
            "/hosting/insights",
            headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
            allow_redirects=False,
            ssl=trusting,
        )
        assert response.status == 302
        # Over HTTPS the cookies are Secure.
        assert all("; Secure" in h for h in response.headers.getall("Set-Cookie"))

        # Without the certificate as CA the handshake is refused; by name it verifies too.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get("/_sim/health", ssl=ssl.create_default_context())
    async with aiohttp.ClientSession() as http:
        health = await http.get(f"https://localhost:{port}/_sim/health", ssl=trusting)
        assert await health.json() == {"status": "ok"}

    assert sim.proc.terminate() == 0
