"""The audit trail (issue 16, item 2) against the session's PostgreSQL and NATS, through the
admin in process (``aiohttp_client`` over ``create_app``):

- a scripted sequence of changes (create, fields, cookie, deactivate, reactivate, refused
  writes, a write that changes nothing, delete, restore, a sync trigger, a connect token
  made, used and revoked) leaves exactly the expected trail: actors by key name, actions,
  fields, the client's address;
- each entry is written in its change's transaction (the same ``now()`` as the outbox event);
- ``GET /api/v1/audit`` pages and filters (account_id, action, since), admin keys only (a
  read or a customer key: 403), and a key of the database is recorded by its name;
- keys created and revoked with ``sync-airbnb keys`` are recorded with the actor ``cli``;
- a sync trigger JetStream did not store leaves no entry;
- the table refuses UPDATE, DELETE and TRUNCATE;
- no credential value is in any entry, in the table or in the API's answers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
from aiohttp.test_utils import TestClient
from nats.aio.client import Client as NatsClient

from services.admin import store
from services.admin.app import create_app
from services.admin.scopes import key_hash, new_key
from shared import topology
from tests.cookies import as_objects, auth_cookie, browser_cookie
from tests.infra import VENV_BIN, NatsServer
from tests.system.test_admin import KEY, KEY2, SECRET, account_body, admin_settings, new_account_id

AUDIT = "/api/v1/audit"
ACCOUNTS = "/api/v1/accounts"
# The bootstrap keys' names: test-key-1 and test-key-2 of ADMIN_API_KEYS.
ONE, TWO = "bootstrap:1", "bootstrap:2"


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    base_env: dict[str, str],
    nc: NatsClient,
) -> TestClient:
    # The trigger stream exists whether or not a scheduler ever ran in this session.
    await topology.provision(nc.jetstream())
    return await aiohttp_client(create_app(admin_settings(base_env, SYNC_TRIGGER_TIMEOUT_S="1")))


async def call(
    client: TestClient, method: str, path: str, status: int, key: dict[str, str] = KEY, **kw: Any
) -> Any:
    resp = await client.request(method, path, headers=key, **kw)
    text = await resp.text()
    assert resp.status == status, text
    assert SECRET not in text
    return await resp.json()


async def trail(client: TestClient, **query: str) -> list[dict[str, Any]]:
    """Every entry matching ``query``, oldest first, read page by page."""
    items: list[dict[str, Any]] = []
    while True:
        page = await call(
            client, "GET", AUDIT, 200, params={**query, "limit": "100", "offset": str(len(items))}
        )
        items += page["items"]
        if len(items) >= page["total"]:
            return items[::-1]


def summary(entries: list[dict[str, Any]]) -> list[tuple[str, str, str, list[str]]]:
    return [(e["actor"], e["actor_scope"], e["action"], e["fields"]) for e in entries]


async def test_a_scripted_sequence_leaves_the_expected_trail(
    client: TestClient, db: asyncpg.Connection
) -> None:
    aid = new_account_id()
    one = f"{ACCOUNTS}/{aid}"
    started = await db.fetchval("SELECT now()")

    await call(client, "POST", ACCOUNTS, 201, json=account_body(aid))
    await call(
        client,
        "PATCH",
        one,
        200,
        KEY2,
        json={"user_agent": "Mozilla/5.0 (audit)", "customer_id": "cust-audit"},
    )
    await call(client, "PATCH", one, 200, json={"airbnb_cookie": auth_cookie(aid, "renewed")})
    await call(client, "PATCH", one, 200, json={"is_active": False})
    await call(client, "PATCH", one, 200, KEY2, json={"is_active": True})
    # Nothing changes: the same value, or the same cookie again. No entry.
    await call(client, "PATCH", one, 200, json={"user_agent": "Mozilla/5.0 (audit)"})
    await call(client, "PATCH", one, 200, json={"airbnb_cookie": auth_cookie(aid, "renewed")})
    # A create-or-update of the existing account: the cookie and a field together.
    await call(
        client,
        "POST",
        ACCOUNTS,
        200,
        json=account_body(
            aid, user_agent="Mozilla/5.0 (audit)", customer_id="cust-audit", x_client_version="v2"
        ),
    )
    # Refused writes change nothing and leave no entry.
    await call(client, "PATCH", one, 422, json={"airbnb_cookie": auth_cookie("999")})
    await call(client, "PATCH", one, 422, json={"is_active": None})
    await call(client, "DELETE", one, 200, KEY2)
    await call(client, "PATCH", one, 409, json={"is_active": False})
    await call(client, "DELETE", one, 409)
    await call(client, "POST", f"{one}/restore", 200)
    # A sync with no scheduler running: stored, pending, and recorded.
    trigger = await call(client, "POST", f"{one}/sync", 202, KEY2, json={"full": True})
    # A connect token, the host's browser session sent with it (no fetcher here: not
    # validated), and the token revoked; a use after that is refused and no entry.
    token = await call(client, "POST", f"{one}/connect-tokens", 201)
    connect = {
        "cookies": as_objects(browser_cookie(aid, "via-extension-7f3")),
        "user_agent": "Mozilla/5.0 (connected)",
        "account_id": aid,
        "validate": False,
    }
    bearer = {"Authorization": f"Bearer {token['token']}"}
    await call(client, "POST", "/api/v1/connect", 200, bearer, json=connect)
    await call(client, "DELETE", f"{one}/connect-tokens/{token['token_id']}", 200, KEY2)
    await call(client, "POST", "/api/v1/connect", 401, bearer, json=connect)

    entries = await trail(client, account_id=aid)
    assert summary(entries) == [
        (
            ONE,
            "admin",
            "account_created",
            ["x_client_version", "user_agent", "is_active", "credentials"],
        ),
        (TWO, "admin", "account_updated", ["user_agent", "customer_id"]),
        (ONE, "admin", "credentials_replaced", ["credentials"]),
        (ONE, "admin", "account_deactivated", ["is_active"]),
        (TWO, "admin", "account_reactivated", ["is_active"]),
        # one write, one entry per kind of change, both at the same time
        (ONE, "admin", "credentials_replaced", ["credentials"]),
        (ONE, "admin", "account_updated", ["x_client_version"]),
        (TWO, "admin", "account_deleted", []),
        (ONE, "admin", "account_restored", []),
        (TWO, "admin", "sync_triggered", []),
        (ONE, "admin", "connect_token_created", []),
        (
            f"connect-token:{token['token_id']}",
            "connect",
            "account_connected",
            ["user_agent", "credentials"],
        ),
        (TWO, "admin", "connect_token_revoked", []),
    ]
    assert all(e["account_id"] == aid and e["key_name"] is None for e in entries)
    assert all(e["detail"]["token_id"] == token["token_id"] for e in entries[10:])
    # aiohttp's test client connects from the loopback: the address is the remote's
    assert {e["client"] for e in entries} == {"127.0.0.1"}
    ids = [e["entry_id"] for e in entries]
    assert ids == sorted(ids)
    times = [dt.datetime.fromisoformat(e["at"]) for e in entries]
    assert times == sorted(times) and times[0] >= started
    assert times[5] == times[6]  # the create-or-update's two entries: one transaction

    details = [e["detail"] for e in entries]
    assert details[0] == {
        "x_client_version": "c8a5b1f0",
        "user_agent": account_body(aid)["user_agent"],
        "is_active": True,
    }
    assert details[1] == {
        "user_agent": {"from": account_body(aid)["user_agent"], "to": "Mozilla/5.0 (audit)"},
        "customer_id": {"from": None, "to": "cust-audit"},
    }
    assert details[2] == {"credentials_version": 2}
    assert details[5] == {"credentials_version": 3}
    assert details[6] == {"x_client_version": {"from": "c8a5b1f0", "to": "v2"}}
    assert details[3] is details[4] is details[7] is details[8] is None
    assert details[9] == {"trigger_id": trigger["trigger_id"], "full": True}

    # Each account change's entry is in the transaction of its outbox event: now() is the
    # transaction's start, and every event's time is one of the entries' times.
    events = await db.fetch(
        "SELECT event, created_at FROM airbnb.account_outbox WHERE account_id = $1 ORDER BY id",
        aid,
    )
    assert [e["event"] for e in events] == [
        "created",
        "updated",
        "updated",
        "updated",
        "updated",
        "updated",  # the PATCH of the same user_agent writes (and announces) all the same
        "updated",
        "deleted",
        "restored",
        "updated",  # the connect
    ]
    # every event but that one's has its entries, at the same now() (the trigger goes to
    # JetStream, not through the outbox; the tokens' own entries announce nothing)
    announced = sorted({*times[:9], times[11]})
    assert [e["created_at"] for i, e in enumerate(events) if i != 5] == announced

    # No credential value anywhere in the account's entries, stored or answered.
    stored = await db.fetchval(
        "SELECT string_agg(a::text, E'\\n') FROM airbnb.audit_log a WHERE account_id = $1", aid
    )
    assert SECRET not in stored and "renewed" not in stored and "via-extension-7f3" not in stored
    assert token["token"] not in stored and aid in stored


async def test_pages_and_filters(client: TestClient) -> None:
    aids = [new_account_id() for _ in range(3)]
    for aid in aids:
        await call(client, "POST", ACCOUNTS, 201, json=account_body(aid))
        await call(client, "PATCH", f"{ACCOUNTS}/{aid}", 200, json={"is_active": False})
        await call(client, "DELETE", f"{ACCOUNTS}/{aid}", 200)
    mine = await trail(client, account_id=aids[1])
    assert [e["action"] for e in mine] == [
        "account_created",
        "account_deactivated",
        "account_deleted",
    ]

    # Pages of one: newest first, the total the same on each, and together the whole.
    pages = []
    for offset in range(4):
        page = await call(
            client,
            "GET",
            AUDIT,
            200,
            params={"account_id": aids[1], "limit": "1", "offset": str(offset)},
        )
        assert (page["total"], page["limit"], page["offset"]) == (3, 1, offset)
        pages += page["items"]
    assert pages == mine[::-1]

    deleted = await call(client, "GET", AUDIT, 200, params={"action": "account_deleted"})
    assert {aid for aid in aids} <= {e["account_id"] for e in deleted["items"]}
    assert {e["action"] for e in deleted["items"]} == {"account_deleted"}
    both = await call(
        client, "GET", AUDIT, 200, params={"action": "account_created", "account_id": aids[2]}
    )
    assert [e["action"] for e in both["items"]] == ["account_created"] and both["total"] == 1

    # since: inclusive, the entry's own time onwards
    at = mine[1]["at"]
    later = await trail(client, account_id=aids[1], since=at)
    assert [e["action"] for e in later] == ["account_deactivated", "account_deleted"]
    future = await call(client, "GET", AUDIT, 200, params={"since": "2999-12-31T23:59:59Z"})
    assert future == {"items": [], "total": 0, "limit": 50, "offset": 0}

    # The query is validated like the other lists'.
    for bad in (
        {"limit": "0"},
        {"limit": "501"},
        {"offset": "-1"},
        {"action": "account_exploded"},
        {"account_id": "007"},
        {"since": "yesterday"},
        {"since": "2026-01-01T00:00:00"},  # no offset: which time is it?
        {"since": "0001-01-01T00:00:00+05:00"},
        {"unknown": "1"},
    ):
        resp = await client.get(AUDIT, params=bad, headers=KEY)
        assert resp.status == 422, (bad, await resp.text())


async def test_the_route_is_documented_and_needs_a_key(client: TestClient) -> None:
    assert (await client.get(AUDIT)).status == 401
    doc = await call(client, "GET", "/api/v1/openapi.json", 200)
    op = doc["paths"][AUDIT]["get"]
    assert op["operationId"] == "listAudit"
    assert {p["name"] for p in op["parameters"]} == {
        "limit",
        "offset",
        "account_id",
        "action",
        "since",
    }
    assert "200" in op["responses"] and "401" in op["responses"] and "403" in op["responses"]
    assert op["x-scopes"] == ["admin"]


async def test_the_table_is_append_only(client: TestClient, db: asyncpg.Connection) -> None:
    aid = new_account_id()
    await call(client, "POST", ACCOUNTS, 201, json=account_body(aid))
    before = await db.fetch("SELECT * FROM airbnb.audit_log WHERE account_id = $1", aid)
    assert len(before) == 1
    for statement in (
        "UPDATE airbnb.audit_log SET actor = 'someone else' WHERE account_id = $1",
        "UPDATE airbnb.audit_log SET fields = '{}' WHERE account_id = $1",
        "DELETE FROM airbnb.audit_log WHERE account_id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement, aid)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only: TRUNCATE"):
        await db.execute("TRUNCATE airbnb.audit_log")
    after = await db.fetch("SELECT * FROM airbnb.audit_log WHERE account_id = $1", aid)
    assert after == before
    # and an insert still goes in: the API's only write
    await call(client, "DELETE", f"{ACCOUNTS}/{aid}", 200)
    assert len(await trail(client, account_id=aid)) == 2


async def test_only_admin_keys_read_the_trail_and_a_key_is_recorded_by_its_name(
    client: TestClient, db: asyncpg.Connection
) -> None:
    suffix = uuid.uuid4().hex[:8]
    keys = {scope: new_key() for scope in ("admin", "read", "customer")}
    names = {scope: f"audit-{scope}-{suffix}" for scope in keys}
    for scope, key in keys.items():
        customer = "cust-audit" if scope == "customer" else None
        assert await store.insert_api_key(db, names[scope], scope, customer, key_hash(key))
    for scope in ("read", "customer"):
        resp = await client.get(AUDIT, headers={"X-API-Key": keys[scope]})
        assert resp.status == 403, await resp.text()
        assert (await resp.json())["error"] == "insufficient_scope"

    # A key of the database writes under its own name and scope.
    aid = new_account_id()
    admin = {"X-API-Key": keys["admin"]}
    await call(client, "POST", ACCOUNTS, 201, admin, json=account_body(aid))
    await call(client, "DELETE", f"{ACCOUNTS}/{aid}", 200, admin)
    entries = await trail(client, account_id=aid)
    assert summary(entries) == [
        (
            names["admin"],
            "admin",
            "account_created",
            ["x_client_version", "user_agent", "is_active", "credentials"],
        ),
        (names["admin"], "admin", "account_deleted", []),
    ]
    # A customer key's writes are its name and scope; its refused ones (another customer's
    # account: 404) are none.
    customer = {"X-API-Key": keys["customer"]}
    theirs = new_account_id()
    await call(client, "POST", ACCOUNTS, 201, customer, json=account_body(theirs))
    await call(client, "PATCH", f"{ACCOUNTS}/{theirs}", 200, customer, json={"is_active": False})
    await call(client, "PATCH", f"{ACCOUNTS}/{aid}", 404, customer, json={"is_active": False})
    await call(client, "POST", f"{ACCOUNTS}/{aid}/restore", 404, customer)
    assert summary(await trail(client, account_id=theirs)) == [
        (
            names["customer"],
            "customer",
            "account_created",
            ["x_client_version", "user_agent", "customer_id", "is_active", "credentials"],
        ),
        (names["customer"], "customer", "account_deactivated", ["is_active"]),
    ]
    assert len(await trail(client, account_id=aid)) == 2

    # ...and reads the trail, until it is revoked.
    assert (await client.get(AUDIT, headers=admin)).status == 200
    assert await store.revoke_api_key(db, names["admin"])
    assert (await client.get(AUDIT, headers=admin)).status == 401


def sync_airbnb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "sync-airbnb"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


async def test_keys_created_and_revoked_on_the_command_line_are_recorded(
    client: TestClient, base_env: dict[str, str]
) -> None:
    name = f"audit-cli-{uuid.uuid4().hex[:8]}"
    made = sync_airbnb(base_env, "keys", "create", "--name", name, "--scope", "customer:c-cli")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    # a created key writes nothing here; it is refused the trail (not admin)
    assert (await client.get(AUDIT, headers={"X-API-Key": key})).status == 403
    # a refused create (the name is in force) is no entry
    again = sync_airbnb(base_env, "keys", "create", "--name", name, "--scope", "read")
    assert again.returncode == 1, again.stderr
    gone = sync_airbnb(base_env, "keys", "revoke", name)
    assert gone.returncode == 0, gone.stderr
    assert sync_airbnb(base_env, "keys", "revoke", name).returncode == 1
    assert (await client.get(AUDIT, headers={"X-API-Key": key})).status == 401

    entries = [
        e
        for action in ("key_created", "key_revoked")
        for e in await trail(client, action=action)
        if e["key_name"] == name
    ]
    assert [(e["actor"], e["actor_scope"], e["action"], e["account_id"]) for e in entries] == [
        ("cli", "admin", "key_created", None),
        ("cli", "admin", "key_revoked", None),
    ]
    assert all(e["client"].startswith("local:") and e["fields"] == [] for e in entries)
    assert [e["detail"] for e in entries] == [{"scope": "customer", "customer_id": "c-cli"}] * 2
    # the key itself, nor its hash, is in any entry
    text = json.dumps(await trail(client))
    assert key not in text and key_hash(key) not in text


async def test_a_trigger_jetstream_did_not_store_leaves_no_entry(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    base_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The trigger's entry commits only once JetStream stored the trigger: on a NATS server
    of this test's own, whose trigger stream is removed under the running admin, the
    trigger is a 503 and the entry goes with the transaction."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    nc = await nats.connect(server.url)
    try:
        client = await aiohttp_client(
            create_app(admin_settings(base_env, NATS_URL=server.url, SYNC_TRIGGER_TIMEOUT_S="1"))
        )
        aid = new_account_id()
        await call(client, "POST", ACCOUNTS, 201, json=account_body(aid))
        await call(client, "POST", f"{ACCOUNTS}/{aid}/sync", 202)
        await nc.jetstream().delete_stream(topology.SCHEDULER_TRIGGERS.stream)
        refused = await client.post(f"{ACCOUNTS}/{aid}/sync", headers=KEY)
        assert refused.status == 503, await refused.text()
        body = await refused.json()
        # the publish failed, inside the transaction that holds the entry
        assert body["error"] == "nats_unavailable" and "did not store" in body["detail"]
        actions = [e["action"] for e in await trail(client, account_id=aid)]
        assert actions == ["account_created", "sync_triggered"]
    finally:
        await nc.close()
        server.stop()
