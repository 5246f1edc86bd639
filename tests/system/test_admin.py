"""The admin API in process (``aiohttp_client`` over ``create_app``), against the session's
real PostgreSQL and NATS: every route, its success and each of its error paths.

The scheduler's side of the durable sync triggers is a small real JetStream consumer
(:class:`TriggerResponder`, on the scheduler's durable, with the scheduler's own SQL to
record outcomes) on the session's server, never a mock. A real scheduler process that
starts after the trigger was sent is tests/system/test_scheduler.py's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import TypeAdapter

from services.admin.app import create_app
from services.admin.auth import Caller
from services.admin.dashboard import UI_ASSETS, UI_STATIC
from services.admin.models import AccountCreate, AccountPatch, ErrorBody
from services.admin.openapi import DOCS_STATIC
from services.admin.outbox import OutboxRelay
from services.admin.routes import api_operations
from services.admin.settings import AdminSettings
from services.admin.state import ACCOUNTS
from services.scheduler.store import record_trigger
from shared import topology
from shared.airbnb.cookies import MAX_STORED_COOKIE, parse_cookie_header
from shared.crypto import CredentialCipher
from shared.jetstream import Delivery, PullWorker
from shared.messages import AccountEvent, SyncTriggered, SyncTriggerReply, decode, encode
from shared.metric_tables import METRIC_TABLES
from shared.runtime import DB_POOL, NATS
from shared.topology import ACCOUNT_EVENTS
from tests.cookies import (
    ANALYTICS,
    BOT_MANAGER,
    as_objects,
    auth_cookie,
    auth_cookies,
    browser_cookie,
    header,
)
from tests.infra import ServiceLauncher, wait_until
from tests.system.test_admin_process import start_admin

KEY = {"X-API-Key": "test-key-1"}
KEY2 = {"X-API-Key": "test-key-2"}
# Every cookie of auth_cookie() holds it: no response, log or error may.
SECRET = "secret-session"

ClientFactory = Callable[..., Awaitable[TestClient]]


def new_account_id() -> str:
    return str(random.randint(10**14, 10**15 - 1))


def account_body(account_id: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account_id": account_id,
        "airbnb_cookie": auth_cookie(account_id),
        "x_client_version": "c8a5b1f0",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    }
    body.update(over)
    return body


def admin_settings(base_env: dict[str, str], **extra: str) -> AdminSettings:
    # Built from the session's environment only (init values win over os.environ).
    return AdminSettings(**{**base_env, **extra})  # type: ignore[arg-type]


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], base_env: dict[str, str]
) -> ClientFactory:
    async def make(**extra: str) -> TestClient:
        return await aiohttp_client(create_app(admin_settings(base_env, **extra)))

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    return await make_client(SYNC_TRIGGER_TIMEOUT_S="1")


class TriggerResponder:
    """Handles the durable triggers like the scheduler does: records the outcome (the
    scheduler's own SQL), announces it on airbnb.triggers.{id}, acks; and records what it
    was asked. ``reply`` returning None leaves the trigger unhandled (a scheduler failing)."""

    def __init__(self, nc: NatsClient, pool: asyncpg.Pool) -> None:
        self.nc = nc
        self.pool = pool
        self.requests: list[SyncTriggered] = []
        self.reply: Callable[[SyncTriggered], SyncTriggerReply | None] = lambda r: SyncTriggerReply(
            job_id=uuid.uuid4(), status="queued"
        )
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def asked(self, account_id: str) -> list[SyncTriggered]:
        # The session's stream may still hold other tests' triggers: they come too.
        return [r for r in self.requests if r.account_id == account_id]

    async def _handle(self, batch: Any) -> None:
        for msg in batch:
            assert isinstance(msg, Delivery)
            trigger = decode(SyncTriggered, msg.data)
            self.requests.append(trigger)
            answer = self.reply(trigger)
            if answer is None:
                await msg.nak(30)
                continue
            answer = answer.model_copy(update={"trigger_id": trigger.trigger_id})
            async with self.pool.acquire() as conn:
                await record_trigger(conn, trigger, answer)
            await self.nc.publish(
                topology.trigger_outcome_subject(trigger.trigger_id), encode(answer)
            )
            await msg.ack()

    async def __aenter__(self) -> TriggerResponder:
        js = self.nc.jetstream()
        await topology.provision(js)
        worker = PullWorker(
            js,
            topology.SCHEDULER_TRIGGERS,
            self._handle,
            service="test-scheduler",
            max_in_flight=4,
            batch_max=1,
            heartbeat_s=5,
            on_stop="finish",
            what="test triggers",
        )
        self._task = asyncio.create_task(worker.run(self._stopping))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, timeout=10)


class EventTap:
    """Collects every AccountEvent published while it is open (core subscription)."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.events: list[AccountEvent] = []
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> EventTap:
        async def handle(msg: Msg) -> None:
            self.events.append(decode(AccountEvent, msg.data))
            self._arrived.set()

        self._sub = await self.nc.subscribe(ACCOUNT_EVENTS, cb=handle)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sub.unsubscribe()

    async def wait_for(self, n: int) -> list[AccountEvent]:
        async with asyncio.timeout(3):
            while len(self.events) < n:
                self._arrived.clear()
                await self._arrived.wait()
        return self.events

    def for_account(self, account_id: str) -> list[tuple[str, bool]]:
        return [(e.event, e.credentials_changed) for e in self.events if e.account_id == account_id]


async def create(client: TestClient, account_id: str | None = None, **over: Any) -> dict[str, Any]:
    aid = account_id or new_account_id()
    resp = await client.post("/api/v1/accounts", json=account_body(aid, **over), headers=KEY)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def announced(db: asyncpg.Connection, account_id: str) -> None:
    """Until the outbox relay has published every event of the account so far: they go
    out after their commit, so a tap opened now sees only what comes next."""

    async def none_waiting() -> bool:
        waiting = await db.fetchval(
            "SELECT count(*) FROM airbnb.account_outbox"
            " WHERE account_id = $1 AND published_at IS NULL",
            account_id,
        )
        return waiting == 0

    await wait_until(none_waiting, within=10, what=f"the events of account {account_id}")


async def error_of(resp: Any, status: int) -> ErrorBody:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json"
    assert "Traceback" not in text and SECRET not in text
    return ErrorBody.model_validate_json(text)


# --- security ---------------------------------------------------------------------------------


async def test_api_key_is_required_everywhere_but_health(make_client: ClientFactory) -> None:
    # Ten wrong keys below: more than the default burst of failed authentications
    # (tests/system/test_admin_scopes.py tests that limit).
    client = await make_client(ADMIN_AUTH_FAILURES_BURST="100")
    aid = new_account_id()
    for path in (
        "/api/v1/accounts",
        f"/api/v1/accounts/{aid}",
        f"/api/v1/accounts/{aid}/syncs",
        f"/api/v1/syncs/{uuid.uuid4()}",
        "/no/such/route",
    ):
        assert (await error_of(await client.get(path), 401)).error == "missing_api_key"
        wrong = await client.get(path, headers={"X-API-Key": "test-key-3"})
        assert (await error_of(wrong, 401)).error == "invalid_api_key"
        # a key that is not valid UTF-8 / not ASCII is a 401, not a crash
        odd = await client.get(path, headers={"X-API-Key": "clé-ünïcode"})
        assert odd.status == 401
    for method, path in (("POST", "/api/v1/accounts"), ("DELETE", f"/api/v1/accounts/{aid}")):
        assert (await client.request(method, path)).status == 401
    for headers in (KEY, KEY2):
        assert (await client.get("/api/v1/accounts", headers=headers)).status == 200
    health = await client.get("/health")
    assert health.status == 200 and (await health.json())["status"] == "ok"
    ready = await client.get("/health/ready")
    assert ready.status == 200
    assert (await ready.json()) == {"status": "ready", "checks": {"nats": "ok", "postgres": "ok"}}
    # /metrics sits behind the key by default (ADMIN_METRICS_PUBLIC=false)
    assert (await error_of(await client.get("/metrics"), 401)).error == "missing_api_key"
    resp = await client.get("/metrics", headers=KEY)
    assert resp.status == 200 and "python_info" in await resp.text()


async def test_metrics_public_when_configured(make_client: ClientFactory) -> None:
    client = await make_client(ADMIN_METRICS_PUBLIC="true")
    resp = await client.get("/metrics")
    assert resp.status == 200 and "python_info" in await resp.text()
    doc = await (await client.get("/api/v1/openapi.json", headers=KEY)).json()
    assert doc["paths"]["/metrics"]["get"]["security"] == []  # the document says so too


async def test_docs_public_by_default_and_behind_the_key_when_configured(
    client: TestClient, make_client: ClientFactory
) -> None:
    paths = ("/docs", "/api/v1/openapi.json", "/docs/static/swagger-ui-bundle.js")
    for path in paths:
        assert (await client.get(path)).status == 200
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc["paths"]["/docs"]["get"]["security"] == []
    assert doc["paths"]["/api/v1/openapi.json"]["get"]["security"] == []
    closed = await make_client(ADMIN_DOCS_PUBLIC="false")
    for path in paths:
        assert (await error_of(await closed.get(path), 401)).error == "missing_api_key"
        assert (await closed.get(path, headers=KEY)).status == 200
    doc = await (await closed.get("/api/v1/openapi.json", headers=KEY)).json()
    # any key (the document holds no data): every key scope but a connect token
    assert doc["paths"]["/docs"]["get"]["security"] == [{"ApiKey": ["admin", "read", "customer"]}]


async def test_body_size_limit(make_client: ClientFactory) -> None:
    client = await make_client(ADMIN_MAX_BODY_BYTES="2048")
    big = account_body(new_account_id(), user_agent="x" * 900, customer_id="y" * 150)
    big["airbnb_cookie"] = "_user_attributes=" + "z" * 4000
    # declared length over the limit: refused before reading
    err = await error_of(await client.post("/api/v1/accounts", json=big, headers=KEY), 413)
    assert err.error == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        data = json.dumps(big).encode()
        for i in range(0, len(data), 512):
            yield data[i : i + 512]

    # chunked, no length: stopped while reading by client_max_size
    resp = await client.post("/api/v1/accounts", data=chunks(), headers=KEY)
    assert (await error_of(resp, 413)).error == "body_too_large"


async def test_cors_off_by_default_and_on_when_configured(make_client: ClientFactory) -> None:
    origin = {"Origin": "https://ops.example.com"}
    off = await make_client()
    resp = await off.get("/api/v1/accounts", headers={**KEY, **origin})
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
    pre = await off.options(
        "/api/v1/accounts", headers={**origin, "Access-Control-Request-Method": "GET"}
    )
    assert pre.status in (401, 405) and "Access-Control-Allow-Origin" not in pre.headers

    on = await make_client(ADMIN_CORS_ORIGINS="https://ops.example.com")
    pre = await on.options(
        "/api/v1/accounts", headers={**origin, "Access-Control-Request-Method": "GET"}
    )
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "https://ops.example.com"
    assert "X-API-Key" in pre.headers["Access-Control-Allow-Headers"]
    resp = await on.get("/api/v1/accounts", headers={**KEY, **origin})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://ops.example.com"
    other = await on.get("/api/v1/accounts", headers={**KEY, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_errors_are_json_without_trace(client: TestClient) -> None:
    resp = await client.put("/api/v1/accounts", headers=KEY)
    err = await error_of(resp, 405)
    assert err.error == "method_not_allowed" and "GET" in resp.headers["Allow"]
    assert (await error_of(await client.get("/api/v1/nothing", headers=KEY), 404)).error == (
        "not_found"
    )
    other = await client.post(
        "/api/v1/accounts", data=b"{}", headers={**KEY, "Content-Type": "x/y"}
    )
    assert (await error_of(other, 415)).error == "unsupported_media_type"
    bad = await client.post(
        "/api/v1/accounts",
        data=b"\xff\xfe{not json",
        headers={**KEY, "Content-Type": "application/json"},
    )
    err = await error_of(bad, 422)
    assert err.fields and err.fields[0].field == "body" and err.fields[0].type == "json_invalid"


# --- accounts -----------------------------------------------------------------------------------


async def test_create_update_and_credentials_encrypted(
    client: TestClient, db: asyncpg.Connection, nc: NatsClient, secret_keys: str
) -> None:
    aid = new_account_id()
    async with EventTap(nc) as tap:
        resp = await client.post(
            "/api/v1/accounts", json=account_body(aid, customer_id="cust-1"), headers=KEY
        )
        text = await resp.text()
        assert resp.status == 201, text
        assert resp.headers["Location"] == f"/api/v1/accounts/{aid}"
        body = json.loads(text)
        assert "airbnb_cookie" not in body and SECRET not in text and "_aat" not in text
        assert body["account_id"] == aid and body["customer_id"] == "cust-1"
        assert body["is_active"] is True and body["needs_credentials"] is False
        assert body["deleted_at"] is None and body["last_sync_at"] is None

        row = await db.fetchrow("SELECT * FROM airbnb.accounts WHERE account_id = $1", aid)
        assert SECRET not in str(dict(row))
        cipher = CredentialCipher(secret_keys.split(","))
        assert cipher.decrypt(row["credentials_encrypted"]) == auth_cookie(aid)

        # the same id again: an update (200), a new user agent, is_active off
        again = await client.post(
            "/api/v1/accounts",
            json=account_body(aid, user_agent="UA/2", is_active=False),
            headers=KEY,
        )
        assert again.status == 200
        updated = await again.json()
        assert updated["user_agent"] == "UA/2" and updated["is_active"] is False
        assert updated["customer_id"] is None  # create-or-update replaces the whole account
        assert updated["created_at"] == body["created_at"]
        token = await db.fetchval(
            "SELECT credentials_encrypted FROM airbnb.accounts WHERE account_id = $1", aid
        )
        assert token == row["credentials_encrypted"]  # same cookie: the token is kept
        await tap.wait_for(2)
    assert tap.for_account(aid) == [("created", True), ("updated", False)]


async def test_create_validation_names_each_field(client: TestClient) -> None:
    bad = {
        "account_id": "12ab",
        "airbnb_cookie": "session=only; other=1",
        "x_client_version": "",
        "user_agent": "bad\r\nInjected: header",
        "customer_id": "x" * 201,
        "is_active": "maybe",
        "cookie": "typo",
    }
    err = await error_of(await client.post("/api/v1/accounts", json=bad, headers=KEY), 422)
    assert err.error == "validation_error"
    fields = {f.field: f for f in err.fields or []}
    assert set(fields) == {
        "account_id",
        "airbnb_cookie",
        "x_client_version",
        "user_agent",
        "customer_id",
        "is_active",
        "cookie",
    }
    assert fields["account_id"].message == (
        "must be Airbnb's numeric user id: 1 to 32 digits, not starting with 0"
    )
    assert "_user_attributes" in fields["airbnb_cookie"].message
    assert fields["cookie"].type == "extra_forbidden"
    assert "session=only" not in err.model_dump_json()  # the rejected cookie is not echoed

    missing = await client.post("/api/v1/accounts", json={}, headers=KEY)
    err = await error_of(missing, 422)
    assert {f.field for f in err.fields or []} == {
        "account_id",
        "airbnb_cookie",
        "x_client_version",
        "user_agent",
    }
    empty_cookie = await client.post(
        "/api/v1/accounts", json=account_body(new_account_id(), airbnb_cookie=""), headers=KEY
    )
    assert [f.field for f in (await error_of(empty_cookie, 422)).fields or []] == ["airbnb_cookie"]
    not_object = await client.post("/api/v1/accounts", json=[1, 2], headers=KEY)
    assert (await error_of(not_object, 422)).error == "validation_error"


async def test_get_and_list_with_filters(client: TestClient) -> None:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    ids = sorted(new_account_id() for _ in range(5))
    for i, aid in enumerate(ids):
        await create(client, aid, customer_id=customer, is_active=i % 2 == 0)
    assert (await client.delete(f"/api/v1/accounts/{ids[4]}", headers=KEY)).status == 200

    got = await client.get(f"/api/v1/accounts/{ids[0]}", headers=KEY)
    assert got.status == 200 and (await got.json())["account_id"] == ids[0]
    err = await error_of(await client.get(f"/api/v1/accounts/{new_account_id()}", headers=KEY), 404)
    assert err.error == "not_found"
    # a path that cannot be an account id names no account
    assert (await client.get("/api/v1/accounts/not-digits", headers=KEY)).status == 404

    async def page(**params: Any) -> dict[str, Any]:
        resp = await client.get(
            "/api/v1/accounts", params={"customer_id": customer, **params}, headers=KEY
        )
        assert resp.status == 200, await resp.text()
        return await resp.json()

    live = await page()
    assert [a["account_id"] for a in live["items"]] == ids[:4] and live["total"] == 4
    first = await page(limit=3)
    second = await page(limit=3, offset=3)
    assert [a["account_id"] for a in first["items"] + second["items"]] == ids[:4]
    assert first["limit"] == 3 and second["offset"] == 3 and second["total"] == 4
    active = await page(active="true")
    assert [a["account_id"] for a in active["items"]] == [ids[0], ids[2]]
    inactive = await page(active="false")
    assert [a["account_id"] for a in inactive["items"]] == [ids[1], ids[3]]
    deleted = await page(deleted="true")
    assert [a["account_id"] for a in deleted["items"]] == [ids[4]]
    assert deleted["items"][0]["deleted_at"] is not None
    for bad in ({"limit": "0"}, {"limit": "501"}, {"offset": "-1"}, {"active": "perhaps"}):
        err = await error_of(await client.get("/api/v1/accounts", params=bad, headers=KEY), 422)
        assert [f.field for f in err.fields or []] == list(bad)
    unknown = await client.get("/api/v1/accounts", params={"sort": "x"}, headers=KEY)
    assert [f.field for f in (await error_of(unknown, 422)).fields or []] == ["sort"]


async def test_patch_account(client: TestClient, db: asyncpg.Connection, nc: NatsClient) -> None:
    aid = (await create(client, customer_id="c1"))["account_id"]
    await db.execute(
        "UPDATE airbnb.accounts SET credentials_invalid_at = now(), credentials_error = 'expired'"
        " WHERE account_id = $1",
        aid,
    )
    got = await (await client.get(f"/api/v1/accounts/{aid}", headers=KEY)).json()
    assert got["needs_credentials"] is True and got["credentials_error"] == "expired"
    url = f"/api/v1/accounts/{aid}"
    await announced(db, aid)
    async with EventTap(nc) as tap:
        # the same cookie again changes nothing: the mark stays, no event
        same = await client.patch(url, json={"airbnb_cookie": auth_cookie(aid)}, headers=KEY)
        assert (await same.json())["needs_credentials"] is True
        # other fields leave the mark alone
        resp = await client.patch(
            url, json={"user_agent": "UA/3", "customer_id": None}, headers=KEY
        )
        body = await resp.json()
        assert resp.status == 200 and body["user_agent"] == "UA/3"
        assert body["customer_id"] is None and body["needs_credentials"] is True
        # a new cookie clears it
        new_cookie = auth_cookie(aid, "fresh-session")
        resp = await client.patch(url, json={"airbnb_cookie": new_cookie}, headers=KEY)
        body = await resp.json()
        assert resp.status == 200 and "fresh-session" not in await resp.text()
        assert body["needs_credentials"] is False and body["credentials_error"] is None
        assert body["credentials_invalid_at"] is None
        # reactivation
        await client.patch(url, json={"is_active": False}, headers=KEY)
        await client.patch(url, json={"is_active": True}, headers=KEY)
        await tap.wait_for(4)
    assert tap.for_account(aid) == [
        ("updated", False),
        ("updated", True),
        ("updated", False),
        ("updated", False),
    ]
    if "reactivated" in AccountEvent.model_fields:
        assert [e.reactivated for e in tap.events if e.account_id == aid] == [
            False,
            False,
            False,
            True,
        ]

    err = await error_of(await client.patch(url, json={"x_client_version": None}, headers=KEY), 422)
    assert [f.field for f in err.fields or []] == ["x_client_version"]
    err = await error_of(await client.patch(url, json={"account_id": "1"}, headers=KEY), 422)
    assert err.fields and err.fields[0].type == "extra_forbidden"
    missing = await client.patch(f"/api/v1/accounts/{new_account_id()}", json={}, headers=KEY)
    assert (await error_of(missing, 404)).error == "not_found"
    await client.delete(url, headers=KEY)
    err = await error_of(await client.patch(url, json={"is_active": True}, headers=KEY), 409)
    assert err.error == "account_deleted"
    # the create-or-update of a deleted account is refused the same way
    err = await error_of(
        await client.post("/api/v1/accounts", json=account_body(aid), headers=KEY), 409
    )
    assert err.error == "account_deleted"


async def test_delete_and_restore(
    client: TestClient, nc: NatsClient, db: asyncpg.Connection
) -> None:
    aid = (await create(client))["account_id"]
    url = f"/api/v1/accounts/{aid}"
    await announced(db, aid)
    async with EventTap(nc) as tap:
        resp = await client.delete(url, headers=KEY)
        assert resp.status == 200 and (await resp.json())["deleted_at"] is not None
        assert (await error_of(await client.delete(url, headers=KEY), 409)).error == (
            "already_deleted"
        )
        # still readable, with its deletion shown
        assert (await (await client.get(url, headers=KEY)).json())["deleted_at"] is not None
        resp = await client.post(f"{url}/restore", headers=KEY)
        assert resp.status == 200 and (await resp.json())["deleted_at"] is None
        err = await error_of(await client.post(f"{url}/restore", headers=KEY), 409)
        assert err.error == "not_deleted"
        await tap.wait_for(2)
    assert tap.for_account(aid) == [("deleted", False), ("restored", False)]
    other = new_account_id()
    for method, path in (("DELETE", ""), ("POST", "/restore")):
        resp = await client.request(method, f"/api/v1/accounts/{other}{path}", headers=KEY)
        assert (await error_of(resp, 404)).error == "not_found"


async def test_account_changes_commit_while_nats_is_down_and_are_announced_after(
    make_client: ClientFactory, db: asyncpg.Connection, nc: NatsClient
) -> None:
    client = await make_client(EVENT_PUBLISH_TIMEOUT_S="0.5", SYNC_TRIGGER_TIMEOUT_S="0.5")
    aid = (await create(client))["account_id"]
    await announced(db, aid)
    await client.app[NATS].close()  # the app's own connection, gone for good
    other = new_account_id()
    resp = await client.post("/api/v1/accounts", json=account_body(other), headers=KEY)
    assert resp.status == 201, await resp.text()
    patch = await client.patch(f"/api/v1/accounts/{aid}", json={"user_agent": "UA/9"}, headers=KEY)
    assert patch.status == 200, await patch.text()
    # committed: the database is the truth, NATS or not
    assert (
        await db.fetchval("SELECT user_agent FROM airbnb.accounts WHERE account_id = $1", aid)
        == "UA/9"
    )
    waiting = await db.fetch(
        "SELECT account_id, event FROM airbnb.account_outbox WHERE published_at IS NULL"
        " AND account_id = ANY($1) ORDER BY id",
        [aid, other],
    )
    assert [(r["account_id"], r["event"]) for r in waiting] == [
        (other, "created"),
        (aid, "updated"),
    ]
    sync = await client.post(f"/api/v1/accounts/{aid}/sync", headers=KEY)
    assert (await error_of(sync, 503)).error == "nats_unavailable"
    assert int(sync.headers["Retry-After"]) > 0
    ready = await client.get("/health/ready")
    assert ready.status == 503 and (await ready.json())["checks"]["nats"] == "down"
    # NATS back (here: a relay with a connection of its own): the two go out, in order.
    relay = OutboxRelay(client.app[DB_POOL], nc.jetstream(), publish_timeout_s=5, poll_s=1)

    async def relayed() -> bool:
        # The app's own relay keeps trying (and failing) too: a pass may find the turn taken.
        await relay.relay_pass()
        pending = await db.fetchval(
            "SELECT count(*) FROM airbnb.account_outbox WHERE published_at IS NULL"
            " AND account_id = ANY($1)",
            [aid, other],
        )
        return pending == 0

    async with EventTap(nc) as tap:
        await wait_until(relayed, within=10, what="the two events relayed")
        await tap.wait_for(2)
    assert tap.for_account(other) == [("created", True)]
    assert tap.for_account(aid) == [("updated", False)]


async def test_service_object_is_callable_without_http(
    client: TestClient, db: asyncpg.Connection
) -> None:
    """The logic sits in plain classes; the handlers only parse and answer."""
    accounts = client.app[ACCOUNTS]
    aid = new_account_id()
    # The caller each write records in the audit trail, as the auth middleware makes it.
    who = Caller("bootstrap:1", "admin", None, "in-process")
    body = AccountCreate.model_validate(account_body(aid))
    out, created = await accounts.create_or_update(who, body)
    assert created and out.account_id == aid
    patched = await accounts.patch(who, aid, AccountPatch(is_active=False))
    assert patched.is_active is False
    assert "airbnb_cookie" not in repr(AccountCreate.model_validate(account_body(aid)))
    assert SECRET not in repr(AccountCreate.model_validate(account_body(aid)))
    listed = AccountCreate.model_validate(
        account_body(aid, airbnb_cookie=as_objects(auth_cookie(aid)))
    )
    assert SECRET not in repr(listed) and SECRET not in str(listed.model_dump())


# --- cookie intake and the credentials version -------------------------------------------------


async def stored_cookie(db: asyncpg.Connection, secret_keys: str, account_id: str) -> str:
    token = await db.fetchval(
        "SELECT credentials_encrypted FROM airbnb.accounts WHERE account_id = $1", account_id
    )
    return CredentialCipher(secret_keys.split(",")).decrypt(token)


async def test_intake_stores_the_auth_group_only_in_either_form(
    client: TestClient, db: asyncpg.Connection, secret_keys: str
) -> None:
    as_header, as_list = new_account_id(), new_account_id()
    await create(client, as_header, airbnb_cookie=browser_cookie(as_header))
    await create(client, as_list, airbnb_cookie=as_objects(browser_cookie(as_list)))
    for aid in (as_header, as_list):
        stored = await stored_cookie(db, secret_keys, aid)
        assert stored == auth_cookie(aid)  # exactly the auth group, in Airbnb's order
        assert set(parse_cookie_header(stored)) == {
            "_airbed_session_id",
            "_aaj",
            "_aat",
            "_user_attributes",
            "bev",
        }
        for dropped in (*BOT_MANAGER, *ANALYTICS):
            assert dropped not in stored
    # The same cookies again, in the other form and with other groups around them, are no
    # change: the normalised auth string is what is compared.
    again = await client.post(
        "/api/v1/accounts",
        json=account_body(as_header, airbnb_cookie=as_objects(auth_cookie(as_header))),
        headers=KEY,
    )
    assert again.status == 200 and (await again.json())["credentials_version"] == 1


async def test_intake_refuses_another_hosts_or_an_incomplete_cookie(
    client: TestClient, db: asyncpg.Connection, secret_keys: str
) -> None:
    aid, other = new_account_id(), new_account_id()
    url = f"/api/v1/accounts/{aid}"

    async def refused(resp: Any, *names: str) -> None:
        err = await error_of(resp, 422)  # no cookie value in the body, no trace
        assert [f.field for f in err.fields or []] == ["airbnb_cookie"], err
        message = (err.fields or [])[0].message
        for name in names:
            assert name in message
        body = err.model_dump_json()
        assert "aat-" not in body and "airbed-" not in body and other not in body

    # another host's cookie, in either form, on create and on change
    for cookie in (auth_cookie(other), as_objects(browser_cookie(other))):
        resp = await client.post(
            "/api/v1/accounts", json=account_body(aid, airbnb_cookie=cookie), headers=KEY
        )
        await refused(resp, "another Airbnb host")
    assert await db.fetchval("SELECT count(*) FROM airbnb.accounts WHERE account_id = $1", aid) == 0
    await create(client, aid)
    for cookie in (auth_cookie(other), as_objects(auth_cookie(other))):
        await refused(
            await client.patch(url, json={"airbnb_cookie": cookie}, headers=KEY),
            "another Airbnb host",
        )
    # a required auth cookie missing (or empty), in either form
    for name in ("_airbed_session_id", "_aat", "_user_attributes"):
        full = auth_cookies(aid, "fresh-session")
        without = header({k: v for k, v in full.items() if k != name})
        empty = header({**full, name: ""})
        for cookie in (without, empty, as_objects(without)):
            if name == "_user_attributes" and isinstance(cookie, str):
                # the Cookie header form's pattern already asks for it (a model 422)
                resp = await client.patch(url, json={"airbnb_cookie": cookie}, headers=KEY)
                await refused(resp)
                continue
            resp = await client.patch(url, json={"airbnb_cookie": cookie}, headers=KEY)
            await refused(resp, name)
            resp = await client.post(
                "/api/v1/accounts", json=account_body(aid, airbnb_cookie=cookie), headers=KEY
            )
            await refused(resp, name)
    # a _user_attributes that names no one
    unreadable = header({**auth_cookies(aid), "_user_attributes": "not-json"})
    await refused(
        await client.patch(url, json={"airbnb_cookie": unreadable}, headers=KEY), "id_str"
    )
    # nothing of it was stored
    assert await stored_cookie(db, secret_keys, aid) == auth_cookie(aid)
    got = await (await client.get(url, headers=KEY)).json()
    assert got["credentials_version"] == 1


async def test_list_form_is_bounded_and_typed(client: TestClient) -> None:
    aid = (await create(client))["account_id"]
    url = f"/api/v1/accounts/{aid}"
    good = as_objects(auth_cookie(aid))
    cases: list[tuple[Any, str]] = [
        ([], "at least 1"),
        (good + [{"name": f"c{i}", "value": "x"} for i in range(200)], "at most 200"),
        ([*good, {"name": "bad name", "value": "x"}], "item 5 name"),
        ([*good, {"name": "a=b", "value": "x"}], "item 5 name"),
        ([*good, {"name": "ok", "value": "has;semicolon"}], "item 5 value"),
        ([*good, {"name": "ok", "value": " edge"}], "item 5 value"),
        ([*good, {"name": "ok", "value": "x" * 4097}], "item 5 value"),
        ([*good, {"name": "ok"}], "item 5 value"),
        ([*good, {"name": "ok", "value": 5}], "item 5 value"),
        ([*good, "_aat=x"], "item 5"),
        ([*good, None], "item 5"),
        ({"name": "_aat", "value": "x"}, "a Cookie header string or a list"),
        (5, "a Cookie header string or a list"),
        (None, "a Cookie header string or a list"),
    ]
    for cookie, says in cases:
        err = await error_of(
            await client.patch(url, json={"airbnb_cookie": cookie}, headers=KEY), 422
        )
        assert [f.field for f in err.fields or []] == ["airbnb_cookie"], cookie
        assert says in (err.fields or [])[0].message, (says, err)
    # auth cookies longer than the stored limit, once joined
    huge = [{**c, "value": "v" * 4000} if c["name"] in ("_aaj", "bev") else c for c in good]
    huge += [{"name": "_aat", "value": "w" * 4000}]
    err = await error_of(await client.patch(url, json={"airbnb_cookie": huge}, headers=KEY), 422)
    assert [f.field for f in err.fields or []] == ["airbnb_cookie"]
    assert f"limit of {MAX_STORED_COOKIE}" in (err.fields or [])[0].message


async def test_credentials_version_counts_credential_changes_only(
    client: TestClient, db: asyncpg.Connection, secret_keys: str
) -> None:
    aid = new_account_id()
    url = f"/api/v1/accounts/{aid}"

    async def version() -> int:
        got = await (await client.get(url, headers=KEY)).json()
        assert got["credentials_rotated_at"] is None  # only a sync's rotation sets it
        return got["credentials_version"]

    created = await create(client, aid)
    assert created["credentials_version"] == 1 and created["credentials_rotated_at"] is None
    steps: list[tuple[str, dict[str, Any], int]] = [
        ("POST", account_body(aid, user_agent="UA/2"), 1),  # same cookie: no change
        ("POST", account_body(aid, airbnb_cookie=auth_cookie(aid, "second")), 2),
        ("PATCH", {"user_agent": "UA/3", "is_active": False}, 2),
        ("PATCH", {"airbnb_cookie": browser_cookie(aid, "second")}, 2),  # same auth group
        ("PATCH", {"airbnb_cookie": as_objects(auth_cookie(aid, "third"))}, 3),
        ("PATCH", {"airbnb_cookie": auth_cookie(aid, "fourth"), "customer_id": "c"}, 4),
        ("PATCH", {}, 4),
    ]
    for method, body, expected in steps:
        path = "/api/v1/accounts" if method == "POST" else url
        resp = await client.request(method, path, json=body, headers=KEY)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["credentials_version"] == expected, (method, body)
        assert await version() == expected
    assert await stored_cookie(db, secret_keys, aid) == auth_cookie(aid, "fourth")
    listed = await (await client.get("/api/v1/accounts", headers=KEY)).json()
    assert {a["account_id"]: a["credentials_version"] for a in listed["items"]}.get(aid) in (
        4,
        None,  # on a later page of a busy session database
    )


# --- sync triggers ------------------------------------------------------------------------------


async def test_sync_trigger(client: TestClient, nc: NatsClient, db: asyncpg.Connection) -> None:
    aid = (await create(client))["account_id"]
    url = f"/api/v1/accounts/{aid}/sync"

    # No scheduler at all: the trigger is stored all the same, and pending.
    started = asyncio.get_running_loop().time()
    resp = await client.post(url, headers=KEY)  # no body at all
    assert resp.status == 202, await resp.text()
    assert asyncio.get_running_loop().time() - started < 3
    waiting = await resp.json()
    tid = waiting["trigger_id"]
    assert resp.headers["Location"] == f"/api/v1/triggers/{tid}"
    assert {k: waiting[k] for k in ("account_id", "full", "status", "job_id", "links")} == {
        "account_id": aid,
        "full": False,
        "status": "pending",
        "job_id": None,
        "links": {"trigger": f"/api/v1/triggers/{tid}", "job": None},
    }
    got = await client.get(f"/api/v1/triggers/{tid}", headers=KEY)
    assert got.status == 200 and await got.json() == waiting
    for unknown in (uuid.uuid4(), "not-a-uuid"):
        err = await error_of(await client.get(f"/api/v1/triggers/{unknown}", headers=KEY), 404)
        assert err.error == "not_found"

    async with TriggerResponder(nc, client.app[DB_POOL]) as sched:
        # The stored trigger is handled once a scheduler runs, and leads to its job.
        async def handled() -> bool:
            return (await (await client.get(f"/api/v1/triggers/{tid}", headers=KEY)).json())[
                "status"
            ] != "pending"

        await wait_until(handled, within=10, what="the stored trigger handled")
        later = await (await client.get(f"/api/v1/triggers/{tid}", headers=KEY)).json()
        # "queued": this responder's jobs have no row, and a job not found reads queued
        assert later["status"] == "queued"
        assert later["job_id"] and later["links"]["job"] == f"/api/v1/syncs/{later['job_id']}"
        assert later["handled_at"] is not None

        # A running scheduler answers at once: the job id is in the 202 already.
        job = uuid.uuid4()
        sched.reply = lambda r: SyncTriggerReply(job_id=job, status="queued")
        resp = await client.post(url, headers=KEY)
        assert resp.status == 202, await resp.text()
        body = await resp.json()
        assert {k: body[k] for k in ("account_id", "full", "status", "job_id", "links")} == {
            "account_id": aid,
            "full": False,
            "status": "queued",
            "job_id": str(job),
            "links": {
                "trigger": f"/api/v1/triggers/{body['trigger_id']}",
                "job": f"/api/v1/syncs/{job}",
            },
        }
        assert resp.headers["Location"] == f"/api/v1/triggers/{body['trigger_id']}"
        resp = await client.post(url, json={"full": True}, headers=KEY)
        assert resp.status == 202 and (await resp.json())["full"] is True
        assert [(r.account_id, r.full) for r in sched.asked(aid)] == [
            (aid, False),
            (aid, False),
            (aid, True),
        ]
        assert len({r.trigger_id for r in sched.asked(aid)}) == 3
        err = await error_of(await client.post(url, json={"full": "yes please"}, headers=KEY), 422)
        assert [f.field for f in err.fields or []] == ["full"]
        err = await error_of(await client.post(url, json={"fulll": True}, headers=KEY), 422)
        assert [f.field for f in err.fields or []] == ["fulll"]

        # the scheduler's refusals, when the state changed under the admin's check
        for code, status in (("needs_credentials", 409), ("not_found", 404), ("inactive", 409)):
            sched.reply = lambda r, code=code: SyncTriggerReply(error=code, detail="changed")
            assert (await error_of(await client.post(url, headers=KEY), status)).error == code
        refused = sched.asked(aid)[-1].trigger_id
        got = await (await client.get(f"/api/v1/triggers/{refused}", headers=KEY)).json()
        assert (got["status"], got["error"], got["job_id"]) == ("refused", "inactive", None)

        # a scheduler that fails (PostgreSQL away...): the trigger stays pending, not lost
        sched.reply = lambda r: None
        resp = await client.post(url, headers=KEY)
        assert resp.status == 202 and (await resp.json())["status"] == "pending"

        # the admin's own checks answer without sending a trigger
        asked = len(sched.asked(aid))
        unknown = await client.post(f"/api/v1/accounts/{new_account_id()}/sync", headers=KEY)
        assert (await error_of(unknown, 404)).error == "not_found"
        await db.execute(
            "UPDATE airbnb.accounts SET credentials_invalid_at = now() WHERE account_id = $1", aid
        )
        assert (await error_of(await client.post(url, headers=KEY), 409)).error == (
            "needs_credentials"
        )
        await db.execute(
            "UPDATE airbnb.accounts SET credentials_invalid_at = NULL, is_active = false"
            " WHERE account_id = $1",
            aid,
        )
        assert (await error_of(await client.post(url, headers=KEY), 409)).error == "inactive"
        await db.execute(
            "UPDATE airbnb.accounts SET is_active = true, deleted_at = now() WHERE account_id = $1",
            aid,
        )
        assert (await error_of(await client.post(url, headers=KEY), 409)).error == "deleted"
        await asyncio.sleep(0.5)
        assert len(sched.asked(aid)) == asked
        await db.execute("UPDATE airbnb.accounts SET deleted_at = NULL WHERE account_id = $1", aid)


# --- jobs ---------------------------------------------------------------------------------------


async def insert_job(
    db: asyncpg.Connection,
    account_id: str,
    *,
    created: dt.datetime,
    status: str = "running",
    listings: dict[str, tuple[str, str | None]] | None = None,
) -> uuid.UUID:
    job_id = uuid.uuid4()
    started = created + dt.timedelta(seconds=1)
    finished = started + dt.timedelta(seconds=30) if status not in ("queued", "running") else None
    await db.execute(
        "INSERT INTO airbnb.sync_jobs (job_id, account_id, kind, trigger, dedup_key, scrape_day,"
        " window_start, window_end, status, listings_total, rows_written, created_at,"
        " started_at, finished_at) VALUES ($1, $2, 'full', 'manual', $3, $4, $5, $6, $7, $8,"
        " $9, $10, $11, $12)",
        job_id,
        account_id,
        f"{account_id}:{job_id}",
        dt.date(2025, 7, 11),
        dt.date(2025, 1, 12),
        dt.date(2025, 8, 16),
        status,
        len(listings or {}) or None,
        0,
        created,
        started if status != "queued" else None,
        finished,
    )
    for lid, (lstatus, error) in (listings or {}).items():
        await db.execute(
            "INSERT INTO airbnb.sync_job_listings (job_id, airbnb_listing_id, status,"
            " chunks_expected, chunks_committed, rows_written, error) VALUES"
            " ($1, $2, $3, 2, $4, $5, $6)",
            job_id,
            lid,
            lstatus,
            2 if lstatus == "committed" else 0,
            100 if lstatus == "committed" else 0,
            error,
        )
    return job_id


async def test_jobs(client: TestClient, db: asyncpg.Connection) -> None:
    aid = (await create(client))["account_id"]
    t0 = dt.datetime(2025, 7, 11, 5, tzinfo=dt.UTC)
    old = await insert_job(
        db, aid, created=t0, status="succeeded", listings={"1": ("committed", None)}
    )
    mid = await insert_job(
        db,
        aid,
        created=t0 + dt.timedelta(hours=1),
        status="partial",
        listings={
            "1": ("committed", None),
            "2": ("failed", "malformed ChartQuery"),
            "3": ("committed", None),
        },
    )
    new = await insert_job(
        db,
        aid,
        created=t0 + dt.timedelta(hours=2),
        status="running",
        listings={"1": ("committed", None), "2": ("pending", None)},
    )
    queued = await insert_job(db, aid, created=t0 + dt.timedelta(hours=3), status="queued")

    resp = await client.get(f"/api/v1/accounts/{aid}/syncs", headers=KEY)
    assert resp.status == 200
    page = await resp.json()
    assert [j["job_id"] for j in page["items"]] == [str(queued), str(new), str(mid), str(old)]
    assert page["total"] == 4
    by_id = {j["job_id"]: j for j in page["items"]}
    partial = by_id[str(mid)]
    assert partial["status"] == "partial" and partial["listings_total"] == 3
    assert partial["listings_succeeded"] == 2 and partial["listings_failed"] == 1
    assert partial["listings_pending"] == 0 and partial["rows_written"] == 200
    assert partial["errors"] == [{"listing_id": "2", "error": "malformed ChartQuery"}]
    assert partial["duration_s"] == 30.0
    running = by_id[str(new)]
    assert running["listings_pending"] == 1 and running["finished_at"] is None
    assert running["duration_s"] > 30
    q = by_id[str(queued)]
    assert q["status"] == "queued" and q["listings_total"] is None and q["duration_s"] is None

    second = await (
        await client.get(f"/api/v1/accounts/{aid}/syncs?limit=2&offset=2", headers=KEY)
    ).json()
    assert [j["job_id"] for j in second["items"]] == [str(mid), str(old)]

    detail = await (await client.get(f"/api/v1/syncs/{mid}", headers=KEY)).json()
    assert [(listing["listing_id"], listing["status"]) for listing in detail["listings"]] == [
        ("1", "committed"),
        ("2", "failed"),
        ("3", "committed"),
    ]
    assert detail["listings"][1]["error"] == "malformed ChartQuery"
    assert detail["errors"] == partial["errors"] and detail["kind"] == "full"

    assert await error_of(await client.get(f"/api/v1/syncs/{uuid.uuid4()}", headers=KEY), 404)
    assert (await client.get("/api/v1/syncs/not-a-uuid", headers=KEY)).status == 404
    unknown = await client.get(f"/api/v1/accounts/{new_account_id()}/syncs", headers=KEY)
    assert (await error_of(unknown, 404)).error == "not_found"
    bad = await client.get(f"/api/v1/accounts/{aid}/syncs?limit=abc", headers=KEY)
    assert [f.field for f in (await error_of(bad, 422)).fields or []] == ["limit"]


# --- export -------------------------------------------------------------------------------------


async def seed_metrics(db: asyncpg.Connection, account_id: str) -> None:
    scraped = dt.datetime(2025, 7, 11, tzinfo=dt.UTC)
    for day in range(10):  # 2025-01-01 .. 2025-01-10, two listings
        for lid in ("111", "222"):
            await db.execute(
                "INSERT INTO airbnb.chart_query (account_id, airbnb_listing_id, metric_date, time,"
                " airbnb_internal_name, conversion_rate_your_value, p3_impressions_your_value,"
                " p3_impressions_your_value_string, extra_metrics)"
                " VALUES ($1, $2, $3, $4, 'Flat, \"Seaside\"', $5, $6, $7, $8)",
                account_id,
                lid,
                dt.date(2025, 1, 1) + dt.timedelta(days=day),
                scraped,
                0.01 * day,
                day * 10,
                f"{day * 10}",
                orjson.dumps({"new_metric": day}).decode(),
            )
    for table in ("chart_summary", "list_of_metrics"):
        for week in range(3):
            start = dt.date(2025, 1, 5) + dt.timedelta(weeks=week)
            await db.execute(
                f"INSERT INTO airbnb.{table} (account_id, airbnb_listing_id, window_start, time,"
                " window_end, conversion_rate_value) VALUES ($1, '111', $2, $3, $4, 0.5)",
                account_id,
                start,
                scraped,
                start + dt.timedelta(days=6),
            )


async def test_export_csv_and_json(client: TestClient, db: asyncpg.Connection) -> None:
    aid = (await create(client))["account_id"]
    await seed_metrics(db, aid)
    url = f"/api/v1/accounts/{aid}/metrics/export"
    params = {"start_date": "2025-01-03", "end_date": "2025-01-07"}

    resp = await client.get(url, params=params, headers=KEY)  # csv and chart_query by default
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/csv"
    assert resp.headers.get("Transfer-Encoding") == "chunked"  # streamed, not buffered
    assert (
        f'filename="{aid}_chart_query_2025-01-03_2025-01-07.csv"'
        in resp.headers["Content-Disposition"]
    )
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(rows) == 10  # 5 days x 2 listings, both ends included
    assert list(rows[0]) == list(METRIC_TABLES["chart_query"].column_names)
    assert [(r["metric_date"], r["airbnb_listing_id"]) for r in rows[:3]] == [
        ("2025-01-03", "111"),
        ("2025-01-03", "222"),
        ("2025-01-04", "111"),
    ]
    assert rows[0]["airbnb_internal_name"] == 'Flat, "Seaside"'
    assert rows[0]["time"] == "2025-07-11T00:00:00+00:00"
    assert json.loads(rows[0]["extra_metrics"]) == {"new_metric": 2}
    assert rows[0]["conversion_rate_similar_value"] == ""  # NULL is an empty field

    resp = await client.get(url, params={**params, "format": "json"}, headers=KEY)
    assert resp.status == 200 and resp.content_type == "application/json"
    data = json.loads(await resp.text())
    assert len(data) == 10 and data[0]["metric_date"] == "2025-01-03"
    assert data[0]["extra_metrics"] == {"new_metric": 2}
    assert data[0]["conversion_rate_similar_value"] is None
    assert data[0]["p3_impressions_your_value"] == 20

    for table in ("chart_summary", "list_of_metrics"):
        resp = await client.get(
            url,
            params={"start_date": "2025-01-06", "end_date": "2025-01-31", "table": table},
            headers=KEY,
        )
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
        assert [r["window_start"] for r in rows] == ["2025-01-12", "2025-01-19"]
        assert list(rows[0]) == list(METRIC_TABLES[table].column_names)

    empty = await client.get(
        url,
        params={"start_date": "2024-01-01", "end_date": "2024-01-31", "format": "json"},
        headers=KEY,
    )
    assert json.loads(await empty.text()) == []
    same_day = await client.get(
        url, params={"start_date": "2025-01-05", "end_date": "2025-01-05"}, headers=KEY
    )
    assert len((await same_day.text()).splitlines()) == 3


async def test_export_rejects_bad_queries(client: TestClient) -> None:
    aid = (await create(client))["account_id"]
    url = f"/api/v1/accounts/{aid}/metrics/export"
    ok = {"start_date": "2025-01-01", "end_date": "2025-01-31"}
    cases: list[tuple[dict[str, str], list[str]]] = [
        ({"start_date": "2025-02-01", "end_date": "2025-01-01"}, ["end_date"]),
        ({"start_date": "2020-01-01", "end_date": "2025-01-01"}, ["end_date"]),  # > 400 days
        ({**ok, "table": "accounts"}, ["table"]),
        ({**ok, "table": "chart_query; DROP TABLE airbnb.accounts"}, ["table"]),
        ({**ok, "format": "xml"}, ["format"]),
        ({"end_date": "2025-01-01"}, ["start_date"]),
        ({"start_date": "yesterday", "end_date": "2025-13-01"}, ["start_date", "end_date"]),
    ]
    for params, fields in cases:
        err = await error_of(await client.get(url, params=params, headers=KEY), 422)
        assert [f.field for f in err.fields or []] == fields, params
    err = await error_of(
        await client.get(
            f"/api/v1/accounts/{new_account_id()}/metrics/export", params=ok, headers=KEY
        ),
        404,
    )
    assert err.error == "not_found"


# --- the document -------------------------------------------------------------------------------


async def test_openapi_document_matches_routes_and_models(client: TestClient) -> None:
    resp = await client.get("/api/v1/openapi.json", headers=KEY)
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    # every registered route is documented, with the method it is registered under (but
    # Swagger UI's own files for /docs and the dashboard's for /ui/, no operations of the API)
    assets = {DOCS_STATIC, "/ui", *(f"{UI_STATIC}/{name}" for name in UI_ASSETS)}
    registered = {
        (r.method.lower(), r.resource.canonical)  # type: ignore[union-attr]
        for r in client.app.router.routes()
        if r.method != "HEAD" and r.resource.canonical not in assets  # type: ignore[union-attr]
    }
    documented = {(m, p) for p, ms in doc["paths"].items() for m in ms}
    assert registered == documented
    for path in ("/health", "/health/ready"):
        assert doc["paths"][path]["get"]["security"] == []
    # the body schemas are the validating models' own
    create_op = doc["paths"]["/api/v1/accounts"]["post"]
    ref = create_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    own = AccountCreate.model_json_schema(ref_template="#/components/schemas/{model}")
    # nested models (the list form's CookieItem) are components of their own
    for name, nested in own.pop("$defs").items():
        assert doc["components"]["schemas"][name] == nested
    assert schema == own
    # both forms of the cookie are documented, each with its bounds
    forms = {f["type"]: f for f in schema["properties"]["airbnb_cookie"]["anyOf"]}
    assert forms["string"]["maxLength"] == 8192 and forms["array"]["maxItems"] == 200
    item = doc["components"]["schemas"][forms["array"]["items"]["$ref"].rsplit("/", 1)[-1]]
    assert item["required"] == ["name", "value"] and "additionalProperties" not in item
    assert schema["additionalProperties"] is False
    assert "airbnb_cookie" in schema["required"]
    assert not any(
        "airbnb_cookie" in json.dumps(s)
        for n, s in doc["components"]["schemas"].items()
        if n.endswith("Out")
    )
    export_params = {
        p["name"]: p
        for p in doc["paths"]["/api/v1/accounts/{account_id}/metrics/export"]["get"]["parameters"]
    }
    assert set(export_params) == {"account_id", "start_date", "end_date", "format", "table"}
    assert export_params["table"]["schema"]["enum"] == list(METRIC_TABLES)
    assert len(api_operations()) == len({op.operation_id for op in api_operations()})
    # documented path params are the handlers' validators
    assert export_params["account_id"]["schema"] == TypeAdapter(
        AccountCreate.model_fields["account_id"].annotation
    ).json_schema() | {"pattern": "^[1-9][0-9]{0,31}$"}

    # /docs is Swagger UI over the document (tests/system/test_docs_browser.py renders it)
    page = await client.get("/docs")
    html = await page.text()
    assert page.status == 200 and page.content_type == "text/html"
    assert '"url":"/api/v1/openapi.json"' in html
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js"):
        resp = await client.get(f"/docs/static/{asset}")
        assert resp.status == 200 and len(await resp.read()) > 1000
    # /ui/ and its files need no key (tests/system/test_ui_browser.py drives the page)
    page = await client.get("/ui/")
    assert page.status == 200 and page.content_type == "text/html"
    assert "script-src 'self';" in page.headers["Content-Security-Policy"]
    assert doc["paths"]["/ui/"]["get"]["security"] == []
    for asset in UI_ASSETS:
        resp = await client.get(f"{UI_STATIC}/{asset}")
        assert resp.status == 200 and len(await resp.read()) > 1000, asset
    redirect = await client.get("/ui", allow_redirects=False)
    assert redirect.status == 308 and redirect.headers["Location"] == "/ui/"


async def test_handlers_are_thin(client: TestClient) -> None:
    """No route is registered outside the route table."""
    assert isinstance(client.app, web.Application)
    names = {r.name for r in client.app.router.routes() if r.name}
    assert names == {op.operation_id for op in api_operations()}


# --- HTTP details: HEAD, media type, duplicate keys, what the parser refuses ---------------------


async def test_head_answers_every_get_route_as_get_does(
    client: TestClient, db: asyncpg.Connection
) -> None:
    aid = (await create(client))["account_id"]
    await seed_metrics(db, aid)
    # the query each route with required parameters needs, by the end of its path
    required = {
        "/metrics/export": {"start_date": "2025-01-03", "end_date": "2025-01-07"},
        "/insights": {"metric": "p3_impressions", "from": "2025-01-01", "to": "2025-01-10"},
        "/insights/forward": {
            "listing_id": "111",
            "stay_from": "2025-01-01",
            "stay_to": "2025-01-10",
        },
    }
    concrete = {
        "{account_id}": aid,
        "{job_id}": str(uuid.uuid4()),
        "{trigger_id}": str(uuid.uuid4()),
    }
    gets = [op for op in api_operations() if op.method == "GET"]
    paths = ["/health", "/health/ready", "/metrics"]
    for op in gets:
        path = op.path
        for name, value in concrete.items():
            path = path.replace(name, value)
        paths.append(path)
    assert len(paths) == len(gets) + 3
    for path in paths:
        params = next((q for end, q in required.items() if path.endswith(end)), None)
        got = await client.get(path, params=params, headers=KEY)
        body = await got.read()
        head = await client.head(path, params=params, headers=KEY)
        assert head.status == got.status, (path, head.status, got.status)
        assert head.status in (200, 404), path
        assert head.content_type == got.content_type, path
        assert await head.read() == b"" and body, path
    # the key is checked on HEAD as on GET
    assert (await client.head("/api/v1/accounts")).status == 401
    # and HEAD is only ever GET's: not documented apart, not on the other methods' routes
    resp = await client.head(f"/api/v1/accounts/{aid}/restore", headers=KEY)
    assert resp.status == 405 and "HEAD" not in resp.headers["Allow"]


async def test_a_body_that_is_not_application_json_is_415(client: TestClient) -> None:
    aid = new_account_id()
    text = json.dumps(account_body(aid))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**KEY, **({"Content-Type": content_type} if content_type else {})}
        for method, path in (
            ("POST", "/api/v1/accounts"),
            ("PATCH", f"/api/v1/accounts/{aid}"),
            ("POST", f"/api/v1/accounts/{aid}/sync"),
        ):
            resp = await client.request(method, path, data=text.encode(), headers=headers)
            err = await error_of(resp, 415)
            assert err.error == "unsupported_media_type" and "application/json" in err.detail
    # nothing was created by the refused bodies
    assert (await client.get(f"/api/v1/accounts/{aid}", headers=KEY)).status == 404
    # the media type's parameters do not matter; the sync trigger's body is optional
    ok = await client.post(
        "/api/v1/accounts",
        data=text.encode(),
        headers={**KEY, "Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status == 201, await ok.text()
    doc = await (await client.get("/api/v1/openapi.json", headers=KEY)).json()
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            assert ("415" in op["responses"]) == ("requestBody" in op), (method, path)


async def test_a_key_given_twice_is_422_naming_it(client: TestClient) -> None:
    aid = new_account_id()
    one = json.dumps(account_body(aid))
    headers = {**KEY, "Content-Type": "application/json"}
    # the last value would win in pydantic's parser, orjson's and json's default alike
    twice = one[:-1] + ', "account_id": "12345"}'
    err = await error_of(await client.post("/api/v1/accounts", data=twice, headers=headers), 422)
    assert err.error == "validation_error" and err.detail == "invalid body: account_id"
    assert err.fields and [(f.field, f.type) for f in err.fields] == [
        ("account_id", "duplicate_key")
    ]
    assert "12345" not in err.model_dump_json()
    # nested (the cookie's list form), each duplicate named by its path
    items = [json.dumps(i) for i in as_objects(auth_cookie(aid))]
    items[0] = items[0][:-1] + ', "value": "again"}'
    nested = json.dumps({"airbnb_cookie": "C"}).replace('"C"', f"[{','.join(items)}]")
    nested = nested[:-1] + ', "user_agent": "a", "user_agent": "b"}'
    resp = await client.patch(f"/api/v1/accounts/{aid}", data=nested, headers=headers)
    err = await error_of(resp, 422)
    assert err.fields and [f.field for f in err.fields] == ["airbnb_cookie.0.value", "user_agent"]
    assert SECRET not in err.model_dump_json()
    assert (await client.get(f"/api/v1/accounts/{aid}", headers=KEY)).status == 404
    # the one parser still refuses what is not JSON, and what JSON does not allow
    for raw in (b'{"full": NaN}', b'{"full": true', b"[" * 20_000, b"\xff\xfe{}"):
        resp = await client.post(f"/api/v1/accounts/{aid}/sync", data=raw, headers=headers)
        err = await error_of(resp, 422)
        assert err.fields and [(f.field, f.type) for f in err.fields] == [("body", "json_invalid")]


async def _raw_http(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request as raw bytes (what aiohttp's own client would refuse to send), read to
    the connection's end (each request says Connection: close; an error closes it anyway)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def test_what_the_parser_refuses_is_answered_as_json(
    launcher: ServiceLauncher,
) -> None:
    """A real process: the protocol that serve() runs is the one answering here."""
    admin = start_admin(launcher)
    key = KEY["X-API-Key"].encode()

    def request(line: bytes, *headers: bytes) -> bytes:
        close = b"Connection: close"
        return b"\r\n".join([line, b"Host: x", b"X-API-Key: " + key, close, *headers, b"", b""])

    # an unknown method: 501 (RFC 9110 9.1), and so is a method in lower case
    for method in (b"BREW", b"get", b"FOO-BAR"):
        status, headers, body = await _raw_http(
            admin.base, request(method + b" /api/v1/accounts HTTP/1.1")
        )
        assert status == 501, (method, body)
        assert headers["content-type"].startswith("application/json")
        assert ErrorBody.model_validate_json(body).error == "not_implemented"
    # a method the parser knows but no route has: the router's 405, with Allow
    status, headers, body = await _raw_http(admin.base, request(b"PURGE /api/v1/accounts HTTP/1.1"))
    assert status == 405 and "GET" in headers["allow"]
    assert ErrorBody.model_validate_json(body).error == "method_not_allowed"
    # a malformed header: 400, JSON, and the request's bytes are not quoted back nor logged
    status, headers, body = await _raw_http(
        admin.base,
        request(b"GET /api/v1/accounts HTTP/1.1", b"Cookie: " + SECRET.encode() + b"\x01x"),
    )
    assert status == 400 and headers["content-type"].startswith("application/json")
    err = ErrorBody.model_validate_json(body)
    assert err.error == "bad_request" and SECRET not in err.detail
    # HEAD through the real protocol too
    status, headers, body = await _raw_http(admin.base, request(b"HEAD /api/v1/accounts HTTP/1.1"))
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert body == b""
    assert admin.proc.terminate() == 0
    logs = admin.proc.output()
    assert "refused a request" in logs and SECRET not in logs and "Traceback" not in logs
