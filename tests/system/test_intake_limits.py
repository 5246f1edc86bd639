"""Bad input at the boundaries: a cookie too large to send, an account id with leading
zeros, and an Airbnb that refuses a request with a 4xx (issue 14, items 5 and 7).

The admin runs in process (``aiohttp_client`` over ``create_app``) against the session's
real PostgreSQL and NATS; the fetcher and the simulator are real processes. The
simulator's header limit is aiohttp's own parser (``SIM_MAX_FIELD_SIZE``), set below the
size of the account's cookie, so every request of the sync is answered 400 before any
handler runs: the same refusal as a cookie of 8 KB meets at Airbnb's 8,190-byte limit.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from services.admin.app import create_app
from services.admin.models import MAX_COOKIE_HEADER, ErrorBody
from services.admin.settings import AdminSettings
from shared import topology
from shared.airbnb.cookies import MAX_STORED_COOKIE
from tests.cookies import auth_cookies, browser_cookie, header
from tests.infra import ServiceLauncher, wait_until
from tests.stack import StartSimulator
from tests.system.test_fetcher import (
    LISTINGS,
    TODAY,
    Results,
    publish_request,
    request_gone,
    start_fetcher,
    sync_request,
)

KEY = {"X-API-Key": "test-key-1"}
SECRET = "secret-session"  # in every cookie of tests.cookies: no answer may hold it


def new_account_id() -> str:
    return str(random.randint(10**14, 10**15 - 1))


def account_body(account_id: str, cookie: str) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "airbnb_cookie": cookie,
        "x_client_version": "c8a5b1f0",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    }


def cookie_of_length(account_id: str, length: int) -> str:
    """A logged-in host's auth cookies with ``hli`` padded so the header is ``length`` long."""
    base = header(auth_cookies(account_id))
    pad = length - len(base) - len("; hli=")
    return header({**auth_cookies(account_id), "hli": "h" * pad})


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], base_env: dict[str, str]
) -> TestClient:
    settings = AdminSettings(**base_env)  # type: ignore[arg-type]
    return await aiohttp_client(create_app(settings))


async def error_of(resp: Any, status: int) -> ErrorBody:
    text = await resp.text()
    assert resp.status == status, text
    assert "Traceback" not in text and SECRET not in text and "hhhhhhhh" not in text
    return ErrorBody.model_validate_json(text)


# --- item 5: the stored cookie fits in one request -------------------------------------------


async def test_a_cookie_too_large_to_send_is_refused_with_a_422_naming_airbnb_cookie(
    client: TestClient,
) -> None:
    account_id = new_account_id()
    # The incident's size: 8,192 characters, the most a Cookie header may be here.
    too_large = cookie_of_length(account_id, MAX_COOKIE_HEADER)
    resp = await client.post(
        "/api/v1/accounts", json=account_body(account_id, too_large), headers=KEY
    )
    err = await error_of(resp, 422)
    [field] = err.fields or []
    assert field.field == "airbnb_cookie"
    assert f"limit of {MAX_STORED_COOKIE}" in field.message
    assert (await client.get(f"/api/v1/accounts/{account_id}", headers=KEY)).status == 404

    # The largest that fits is taken; a new cookie one character over it is refused too.
    fits = cookie_of_length(account_id, MAX_STORED_COOKIE)
    resp = await client.post("/api/v1/accounts", json=account_body(account_id, fits), headers=KEY)
    assert resp.status == 201, await resp.text()
    over = cookie_of_length(account_id, MAX_STORED_COOKIE + 1)
    resp = await client.patch(
        f"/api/v1/accounts/{account_id}", json={"airbnb_cookie": over}, headers=KEY
    )
    [field] = (await error_of(resp, 422)).fields or []
    assert field.field == "airbnb_cookie"


# --- item 7: one account per Airbnb id --------------------------------------------------------


async def test_an_account_id_with_leading_zeros_is_a_422_naming_account_id(
    client: TestClient,
) -> None:
    account_id = new_account_id()
    for bad in ("000" + account_id, "0"):
        resp = await client.post(
            "/api/v1/accounts", json=account_body(bad, header(auth_cookies(bad))), headers=KEY
        )
        [field] = (await error_of(resp, 422)).fields or []
        assert field.field == "account_id"
        assert "not starting with 0" in field.message
    resp = await client.post(
        "/api/v1/accounts",
        json=account_body(account_id, browser_cookie(account_id)),
        headers=KEY,
    )
    assert resp.status == 201, await resp.text()
    # The path parameter keeps the same rule: no second spelling reaches the account (a
    # path that cannot be an account id names no account, 404).
    resp = await client.get(f"/api/v1/accounts/000{account_id}", headers=KEY)
    assert (await error_of(resp, 404)).error == "not_found"
    assert (await client.get(f"/api/v1/accounts/{account_id}", headers=KEY)).status == 200


# --- item 5: a 4xx from Airbnb fails at once ---------------------------------------------------


@pytest.fixture
async def watch(nc: NatsClient) -> AsyncIterator[Callable[[uuid.UUID], Awaitable[Results]]]:
    js = nc.jetstream()
    subs = []

    async def start(job_id: uuid.UUID) -> Results:
        results = Results(job_id)

        async def cb(msg: Msg) -> None:
            results.on_message(msg)

        for subject in (
            topology.SYNC_EVENTS,
            topology.SYNC_PROGRESS,
            topology.dead_letter_subject("fetcher"),
        ):
            subs.append(
                await js.subscribe(
                    subject, cb=cb, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
                )
            )
        return results

    yield start
    for sub in subs:
        await sub.unsubscribe()


@pytest.mark.parametrize(
    ("session_mode", "refused"),
    [("browser", "preflight"), ("replay", "ListingsSectionQuery")],
)
async def test_a_sync_airbnb_answers_400_fails_at_the_first_delivery(
    launcher: ServiceLauncher,
    start_simulator: StartSimulator,
    nc: NatsClient,
    secret_keys: str,
    watch: Callable[[uuid.UUID], Awaitable[Results]],
    session_mode: str,
    refused: str,
) -> None:
    """The first request of the sync (the preflight, or the listings query in replay mode)
    meets a header limit below the cookie: one delivery, the status in the reason."""
    js = nc.jetstream()
    seed = uuid.uuid4().int % 1_000_000
    sim = await start_simulator(seed=seed, listings=LISTINGS, today=TODAY, SIM_MAX_FIELD_SIZE="256")
    account = sim.accounts[0]
    # Default retry settings: a sync retried as transient would still be pending long after
    # this test's deadline (5 s, then 10 s, ... between its ten deliveries).
    fetcher = start_fetcher(launcher, sim, AIRBNB_SESSION_MODE=session_mode)
    job_id = uuid.uuid4()
    results = await watch(job_id)
    seq = await publish_request(js, sync_request(account, secret_keys, job_id))

    await wait_until(lambda: request_gone(js, seq), within=15, what="the request to be termed")
    await wait_until(
        lambda: results.events and results.dead_letters, within=5, what="event and dead letter"
    )
    (event,) = results.events
    assert event.event == "failed"
    assert event.reason is not None
    assert f"{refused}: Airbnb refused the request (" in event.reason
    assert "http_400" in event.reason
    assert "gave up after" not in event.reason
    (letter,) = results.dead_letters
    assert letter.deliveries == 1
    assert "http_400" in letter.reason
    assert results.results == []
    # aiohttp's parser answered before any handler: Airbnb's side saw no request it served.
    assert (await sim.requests(account["account_id"]))["total"] == 0
    output = fetcher.output()
    assert output.count("sync started") == 1
    assert account["cookie"] not in output
