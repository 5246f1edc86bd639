"""The Airbnb client's behaviour against scripted answers (an in-process server), and the
client against the simulator as a real process with faults injected.

Its pure policy (classification, backoff, Retry-After) is in tests/unit/test_client.py."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from services.simulator import responses as sim_responses
from services.simulator.data import (
    build_world,
    expected_chart_points,
    expected_metric_values,
    expected_value_change,
)
from services.simulator.faults import AuthForm
from shared.airbnb.client import DEFAULT_API_KEY, AirbnbClient
from shared.airbnb.cookies import parse_cookie_header
from shared.airbnb.errors import (
    AuthError,
    RateLimitedError,
    TransientError,
    UnexpectedResponseError,
)
from shared.airbnb.operations import CHART, LIST_OF_METRICS, LISTINGS_SECTION, PersistedQuery
from shared.airbnb.payloads import chart_payload, list_of_metrics_payload, listings_section_payload
from shared.airbnb.windows import DateRange
from tests.infra import free_port
from tests.stack import StartSimulator
from tests.unit.test_client import CHROME_UA, GOOD, NOW, _json

COOKIE = (
    "_airbed_session_id=sess42; _aat=SECRET-SESSION-TOKEN-4242; _aaj=aaj-1;"
    " _user_attributes=%7B%22id_str%22%3A%2242%22%7D; bm_sv=STALE-BM; _ga=GA1.1"
)
SECRET = "SECRET-SESSION-TOKEN-4242"


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


# -- the client against scripted answers ----------------------------------------------------

Step = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answer(
    status: int,
    body: bytes = GOOD,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    delay_s: float = 0.0,
) -> Step:
    async def step(request: web.Request) -> web.StreamResponse:
        if delay_s:
            await asyncio.sleep(delay_s)
        return web.Response(
            status=status, body=body, content_type=content_type, headers=headers or {}
        )

    return step


@dataclass
class Scripted:
    """A stand-in Airbnb that plays ``steps`` in order and records what it was sent."""

    steps: list[Step]
    seen: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        self.bodies.append(await request.read())
        return await self.steps[min(len(self.seen), len(self.steps)) - 1](request)


def page(status: int, location: str | None = None, cookies: dict[str, str] | None = None) -> Step:
    """A page-load answer: a redirect (with Location) or an HTML page, setting cookies."""

    async def step(request: web.Request) -> web.StreamResponse:
        response = web.Response(
            status=status,
            text="<html><body>dashboard</body></html>",
            content_type="text/html",
            headers={"Location": location} if location else {},
        )
        for name, value in (cookies or {}).items():
            response.set_cookie(name, value, path="/", httponly=True)
        return response

    return step


def with_cookies(step: Step, cookies: dict[str, str]) -> Step:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        response = await step(request)
        for name, value in cookies.items():
            response.set_cookie(name, value, path="/")
        return response

    return wrapped


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[list[Step]], Awaitable[tuple[Scripted, str]]]]:
    servers: list[TestServer] = []

    async def start(steps: list[Step]) -> tuple[Scripted, str]:
        script = Scripted(steps)
        app = web.Application()
        app.router.add_post("/api/v3/{operation}/{sha256_hash}", script.handle)
        app.router.add_get("/{path:.*}", script.handle)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return script, str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


class FakeTime:
    """A clock that only moves when the client sleeps, and remembers every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(base_url: str, fake: FakeTime | None = None, **overrides: Any) -> AirbnbClient:
    fake = fake or FakeTime()
    options: dict[str, Any] = {
        "cookie": COOKIE,
        "x_client_version": "abc123",
        "user_agent": CHROME_UA,
        "base_url": base_url,
        "min_interval_s": 0,
        "max_attempts": 4,
        "backoff_base_s": 1.0,
        "backoff_cap_s": 8.0,
        "timeout_s": 5.0,
        "sleep": fake.sleep,
        "clock": fake.clock,
        "wall_clock": lambda: NOW,
        "rng": random.Random(0),
        **overrides,
    }
    return AirbnbClient(**options)


async def test_sends_the_dashboard_headers_and_the_body(scripted: Any) -> None:
    script, base = await scripted([answer(200)])
    body = listings_section_payload()
    async with make_client(base) as client:
        assert await client.post(LISTINGS_SECTION, body) == json.loads(GOOD)

    request = script.seen[0]
    assert request.path == LISTINGS_SECTION.path
    assert request.query["operationName"] == "ListingsSectionQuery"
    headers = request.headers
    # The jar sends the stored auth cookies only: the stale bot-manager and analytics
    # cookies of a pasted browser cookie never reach Airbnb.
    assert parse_cookie_header(headers["Cookie"]) == {
        "_airbed_session_id": "sess42",
        "_aat": SECRET,
        "_aaj": "aaj-1",
        "_user_attributes": "%7B%22id_str%22%3A%2242%22%7D",
    }
    assert headers["User-Agent"] == CHROME_UA
    assert headers["X-Client-Version"] == "abc123"
    assert headers["X-Airbnb-API-Key"] == DEFAULT_API_KEY
    assert headers["X-Airbnb-GraphQL-Platform"] == "web"
    assert headers["X-Airbnb-GraphQL-Platform-Client"] == "minimalist-niobe"
    assert headers["X-CSRF-Without-Token"] == "1"
    assert headers["Content-Type"] == "application/json"
    assert headers["Origin"] == base
    assert headers["Referer"].startswith(f"{base}/hosting/")
    assert headers["Sec-Fetch-Mode"] == "cors"
    assert headers["Sec-Fetch-Site"] == "same-origin"
    assert headers["Sec-Fetch-Dest"] == "empty"
    assert headers["Accept-Language"]
    assert headers["X-Airbnb-Supports-Airlock-V2"] == "true"
    assert headers["X-Niobe-Short-Circuited"] == "true"
    assert headers["X-Airbnb-Client-Trace-Id"] == client.trace_id
    assert headers["X-Client-Request-Id"]
    assert (
        headers["Sec-CH-UA"] == '"Chromium";v="146", "Google Chrome";v="146", "Not.A/Brand";v="99"'
    )
    assert headers["Sec-CH-UA-Platform"] == '"Windows"'
    assert "Upgrade-Insecure-Requests" not in headers  # a page load's, not a fetch's
    assert json.loads(script.bodies[0]) == body


async def test_trace_id_is_one_per_sync_and_request_id_one_per_request(scripted: Any) -> None:
    script, base = await scripted([answer(503), answer(200)])
    async with make_client(base) as client:
        await client.post(LISTINGS_SECTION, {})
        await client.post(CHART, {})
    async with make_client(base) as other:
        await other.post(CHART, {})
    traces = [r.headers["X-Airbnb-Client-Trace-Id"] for r in script.seen]
    requests = [r.headers["X-Client-Request-Id"] for r in script.seen]
    assert traces[0] == traces[1] == traces[2] != traces[3]
    assert len(set(requests)) == 4  # the retry of the 503 too


async def test_preflight_follows_the_redirect_and_the_jar_takes_every_set_cookie(
    scripted: Any,
) -> None:
    script, base = await scripted(
        [
            page(302, "/hosting/performance/conversion", {"_aaj": "aaj-2", "bm_sv": "fresh"}),
            page(200),
            with_cookies(answer(200), {"_aaj": "aaj-3"}),
            answer(200),
        ]
    )
    async with make_client(base) as client:
        landed = await client.preflight()
        assert landed == f"{base}/hosting/performance/conversion"
        await client.post(CHART, {})
        await client.post(CHART, {})
        assert client.auth_cookies()["_aaj"] == "aaj-3"
        assert set(client.auth_cookies()) == {
            "_airbed_session_id",
            "_aat",
            "_aaj",
            "_user_attributes",
        }

    first, second, graphql, after = script.seen
    assert (first.method, first.path) == ("GET", "/hosting/insights")
    assert first.headers["Sec-Fetch-Mode"] == "navigate"
    assert first.headers["Sec-Fetch-Dest"] == "document"
    assert first.headers["Upgrade-Insecure-Requests"] == "1"
    assert first.headers["Accept"].startswith("text/html")
    assert "bm_sv" not in parse_cookie_header(first.headers["Cookie"])
    assert second.path == "/hosting/performance/conversion"
    sent = parse_cookie_header(graphql.headers["Cookie"])
    assert (sent["_aaj"], sent["bm_sv"]) == ("aaj-2", "fresh")
    assert graphql.headers["Referer"] == landed
    assert parse_cookie_header(after.headers["Cookie"])["_aaj"] == "aaj-3"


@pytest.mark.parametrize("location", ["/login?redirect_url=%2Fhosting%2Finsights", "/authenticate"])
async def test_preflight_to_the_login_page_is_an_expired_session(
    scripted: Any, location: str
) -> None:
    script, base = await scripted([page(302, location)])
    failures_before = sample("sync_airbnb_airbnb_auth_failures_total")
    async with make_client(base) as client:
        with pytest.raises(AuthError, match="login_redirect"):
            await client.preflight()
    assert len(script.seen) == 1  # the login page itself is not loaded
    assert sample("sync_airbnb_airbnb_auth_failures_total") - failures_before == 1


async def test_preflight_retries_5xx_and_refuses_a_redirect_loop(scripted: Any) -> None:
    script, base = await scripted([answer(503), page(302, "/hosting/insights")])
    async with make_client(base) as client:
        with pytest.raises(UnexpectedResponseError, match="redirects"):
            await client.preflight()
    assert len(script.seen) == 1 + 6


async def test_replay_mode_sends_the_cookie_verbatim_and_ignores_set_cookie(
    scripted: Any,
) -> None:
    script, base = await scripted([with_cookies(answer(200), {"_aaj": "aaj-9"})])
    async with make_client(base, cookie_mode="replay") as client:
        await client.post(CHART, {})
        await client.post(CHART, {})
        assert client.auth_cookies()["_aaj"] == "aaj-1"
    assert [r.headers["Cookie"] for r in script.seen] == [COOKIE, COOKIE]


async def test_paces_requests_of_one_client(scripted: Any) -> None:
    _, base = await scripted([answer(200)])
    fake = FakeTime()
    async with make_client(base, fake, min_interval_s=2.0, pacing_jitter=0.5) as client:
        for _ in range(4):
            await client.post(LISTINGS_SECTION, {})
    assert len(fake.sleeps) == 3
    assert all(2.0 <= s <= 3.0 for s in fake.sleeps)


async def test_pacing_zero_never_waits(scripted: Any) -> None:
    _, base = await scripted([answer(200)])
    fake = FakeTime()
    async with make_client(base, fake, min_interval_s=0) as client:
        for _ in range(3):
            await client.post(LISTINGS_SECTION, {})
    assert fake.sleeps == []


async def test_retries_5xx_with_backoff_and_429_with_retry_after(scripted: Any) -> None:
    script, base = await scripted(
        [
            answer(503, b"<html>down</html>", "text/html"),
            answer(429, b"{}", headers={"Retry-After": "3"}),
            answer(200, GOOD[:10]),
            answer(200),
        ]
    )
    fake = FakeTime()
    op = LISTINGS_SECTION.operation_name
    before = {
        r: sample("sync_airbnb_airbnb_retries_total", {"operation": op, "reason": r})
        for r in ("http_5xx", "rate_limited", "malformed_json")
    }
    limited_before = sample("sync_airbnb_airbnb_rate_limited_total", {"operation": op})
    requests_before = sample(
        "sync_airbnb_airbnb_requests_total", {"operation": op, "status": "200"}
    )

    async with make_client(base, fake, max_attempts=4) as client:
        assert await client.post(LISTINGS_SECTION, {}) == json.loads(GOOD)

    assert len(script.seen) == 4
    backoff_1, retry_after, backoff_3 = fake.sleeps
    assert 0 <= backoff_1 <= 1.0
    assert retry_after == 3.0
    assert 0 <= backoff_3 <= 4.0
    for reason, old in before.items():
        now = sample("sync_airbnb_airbnb_retries_total", {"operation": op, "reason": reason})
        assert now - old == 1
    assert sample("sync_airbnb_airbnb_rate_limited_total", {"operation": op}) - limited_before == 1
    assert (
        sample("sync_airbnb_airbnb_requests_total", {"operation": op, "status": "200"})
        - requests_before
        == 2
    )


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (answer(503, b"<html>down</html>", "text/html"), TransientError),
        (answer(429, b"{}"), RateLimitedError),
        (answer(200, b'{"data": {"por'), UnexpectedResponseError),
    ],
)
async def test_gives_up_after_max_attempts(
    scripted: Any, step: Step, error: type[Exception]
) -> None:
    script, base = await scripted([step])
    fake = FakeTime()
    async with make_client(base, fake, max_attempts=3) as client:
        with pytest.raises(error):
            await client.post(CHART, {})
    assert len(script.seen) == 3
    assert len(fake.sleeps) == 2


async def test_other_4xx_fails_at_once(scripted: Any) -> None:
    body = _json({"errors": [{"message": "PersistedQueryNotFound"}], "data": None})
    script, base = await scripted([answer(400, body)])
    async with make_client(base) as client:
        with pytest.raises(UnexpectedResponseError, match="PersistedQueryNotFound"):
            await client.post(CHART, {})
    assert len(script.seen) == 1


async def test_timeouts_are_retried_then_transient(scripted: Any) -> None:
    script, base = await scripted([answer(200, delay_s=1.0)])
    op = CHART.operation_name
    before = sample("sync_airbnb_airbnb_requests_total", {"operation": op, "status": "timeout"})
    async with make_client(base, max_attempts=2, timeout_s=0.1) as client:
        with pytest.raises(TransientError, match="timeout"):
            await client.post(CHART, {})
    assert len(script.seen) == 2
    after = sample("sync_airbnb_airbnb_requests_total", {"operation": op, "status": "timeout"})
    assert after - before == 2


async def test_connection_errors_are_retried_then_transient() -> None:
    base = f"http://127.0.0.1:{free_port()}"
    fake = FakeTime()
    async with make_client(base, fake, max_attempts=3) as client:
        with pytest.raises(TransientError, match="connection_error") as raised:
            await client.post(CHART, {})
    assert len(fake.sleeps) == 2
    assert raised.value.__cause__ is None


@pytest.mark.parametrize("form", list(AuthForm))
async def test_expired_session_fails_at_once_without_leaking_the_cookie(
    scripted: Any, form: AuthForm, caplog: pytest.LogCaptureFixture
) -> None:
    reply = sim_responses.expired_session(form, "trace")
    script, base = await scripted(
        [answer(reply.status, reply.body, reply.content_type.split(";")[0])]
    )
    failures_before = sample("sync_airbnb_airbnb_auth_failures_total")
    caplog.set_level(logging.DEBUG)

    client = make_client(base)
    async with client:
        with pytest.raises(AuthError) as raised:
            await client.post(CHART, {})

    assert len(script.seen) == 1
    assert sample("sync_airbnb_airbnb_auth_failures_total") - failures_before == 1
    rendered = "".join(traceback.format_exception(raised.value))
    for text in (rendered, repr(client), str(client), caplog.text):
        assert SECRET not in text


async def test_retry_logs_and_errors_never_carry_the_cookie(
    scripted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, base = await scripted([answer(503, COOKIE.encode(), "text/html")])
    caplog.set_level(logging.DEBUG)
    async with make_client(base, max_attempts=2) as client:
        with pytest.raises(TransientError) as raised:
            await client.post(CHART, {})
    assert "retrying" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in "".join(traceback.format_exception(raised.value))


# -- the client against the simulator process -----------------------------------------------

TODAY = date(2025, 7, 11)
SIM_SEED = 21


async def simulated_cookie(base: str, account_id: str) -> str:
    """The browser cookie of the account's current login, as the simulator hands it out."""
    async with aiohttp.ClientSession(base) as http:
        accounts = await (await http.get("/_sim/accounts")).json()
    return next(a["cookie"] for a in accounts if a["account_id"] == account_id)


def unwrap(wrapper: dict[str, Any]) -> int | float:
    return int(wrapper["longValue"]) if "longValue" in wrapper else wrapper["doubleValue"]


def check_answer(
    doc: dict[str, Any], query: PersistedQuery, listing_id: str, metric: str, window: DateRange
) -> None:
    """``doc`` carries exactly the numbers the simulator's truth says it must."""
    comp = doc["data"]["porygon"]["getPerformanceComponents"]["components"][0]
    if query is CHART:
        expected = expected_chart_points(
            SIM_SEED, listing_id, metric, window.start, window.end, TODAY
        )
        your, similar = comp["metricLineCharts"]
        assert [p["ds"] for p in your["dataPoints"]] == [e.ds.isoformat() for e in expected]
        assert [unwrap(p["value"]) for p in your["dataPoints"]] == [e.your for e in expected]
        assert [unwrap(p["value"]) for p in similar["dataPoints"]] == [e.similar for e in expected]
        units = [comp["primaryMetric"], *comp["secondaryMetrics"]]
        change = comp["primaryMetric"]["valueChange"]
        assert change is not None
        assert change["doubleValue"] == pytest.approx(
            expected_value_change(SIM_SEED, listing_id, metric, window.start, window.end, TODAY)
        )
    else:
        units = comp["metrics"]
    names = [u["metricName"] for u in units]
    assert names[0] == metric
    assert {u["metricName"]: unwrap(u["value"]) for u in units} == expected_metric_values(
        SIM_SEED, listing_id, names, window.start, window.end, TODAY
    )


def request_plan(
    listing_ids: list[str], n: int
) -> list[tuple[PersistedQuery, str, str, DateRange]]:
    plan = []
    for i in range(n):
        listing_id = listing_ids[i % len(listing_ids)]
        metric = ("p3_impressions", "conversion_rate")[(i // len(listing_ids)) % 2]
        if i % 2 == 0:
            start = TODAY - timedelta(days=28 * (1 + i % 7))
            plan.append((CHART, listing_id, metric, DateRange(start, start + timedelta(days=27))))
        else:
            start = TODAY - timedelta(days=7 * (1 + i % 20))
            window = DateRange(start, start + timedelta(days=6))
            plan.append((LIST_OF_METRICS, listing_id, metric, window))
    return plan


async def test_hundred_requests_through_5xx_and_429_all_correct(
    start_simulator: StartSimulator,
) -> None:
    faults = {"server_error_rate": 0.2, "rate_limit_rate": 0.1, "retry_after_s": 0, "seed": 8}
    base = (await start_simulator(seed=SIM_SEED, today=TODAY, faults=faults)).url
    account = build_world(2, 3, SIM_SEED).accounts[0]
    cookie = await simulated_cookie(base, account.account_id)
    plan = request_plan(list(account.listing_ids), 100)
    ops = (CHART.operation_name, LIST_OF_METRICS.operation_name)

    def retries(reason: str) -> float:
        labels = [{"operation": op, "reason": reason} for op in ops]
        return sum(sample("sync_airbnb_airbnb_retries_total", lb) for lb in labels)

    def rate_limited() -> float:
        return sum(sample("sync_airbnb_airbnb_rate_limited_total", {"operation": op}) for op in ops)

    before = {"http_5xx": retries("http_5xx"), "rate_limited": retries("rate_limited")}
    limited_before = rate_limited()

    async with AirbnbClient(
        cookie=cookie,
        x_client_version="sim",
        user_agent=CHROME_UA,
        base_url=base,
        min_interval_s=0,
        max_attempts=10,
        backoff_base_s=0.005,
        backoff_cap_s=0.05,
        rng=random.Random(2),
    ) as client:
        await client.preflight()  # Airbnb's session rules are on: a browser loads the page
        for query, listing_id, metric, window in plan:
            if query is CHART:
                body = chart_payload(listing_id, window, TODAY, metric)
            else:
                body = list_of_metrics_payload(listing_id, window, TODAY, metric)
            check_answer(await client.post(query, body), query, listing_id, metric, window)

    server_errors = retries("http_5xx") - before["http_5xx"]
    limited = retries("rate_limited") - before["rate_limited"]
    assert server_errors >= 10
    assert limited >= 4
    assert rate_limited() - limited_before == limited

    async with aiohttp.ClientSession(base) as http:
        counts = await (await http.get("/_sim/requests")).json()
    # Every attempt reached the simulator; every retry is one of them.
    assert counts[account.account_id]["total"] == 100 + server_errors + limited
    assert sum(counts[account.account_id]["listings_ok"].values()) == 100
    assert counts[account.account_id]["strikes"] == 0


@pytest.mark.parametrize("form", list(AuthForm))
async def test_expired_session_stops_at_the_first_request(
    start_simulator: StartSimulator, form: AuthForm
) -> None:
    account = build_world(2, 3, SIM_SEED).accounts[1]
    faults = {"expired_sessions": {account.account_id: form.value}}
    base = (await start_simulator(seed=SIM_SEED, today=TODAY, faults=faults)).url
    cookie = await simulated_cookie(base, account.account_id)

    async with AirbnbClient(
        cookie=cookie,
        x_client_version="sim",
        user_agent=CHROME_UA,
        base_url=base,
        min_interval_s=0,
        max_attempts=5,
        backoff_base_s=0.01,
    ) as client:
        await client.preflight()
        with pytest.raises(AuthError):
            await client.post(LISTINGS_SECTION, listings_section_payload())

    async with aiohttp.ClientSession(base) as http:
        counts = await (await http.get("/_sim/requests")).json()
    assert counts[account.account_id]["total"] == 1
