"""Keys with scopes (issue 16, item 1), against the session's PostgreSQL and NATS.

For every route of the table (iterated, so a route added without an example here fails
:func:`test_every_route_has_an_example`):

- a customer key of another customer: 404 for that customer's accounts, jobs, triggers
  and tokens (the same body as an account that does not exist), an empty page or
  portfolio for its lists, 403 where the route is not for customer keys; and nothing of
  the other customer changed (a snapshot of its rows, and the trigger stream, before and
  after);
- a read key: 403 insufficient_scope on every write, nothing changed; its reads answer;
- a revoked key: 401 everywhere.

Also: a customer key's own writes (its customer_id only), revocation seen on the very
next request, the cost of a database key per request, the slowing of failed
authentications (429 with Retry-After), the settings' start-up errors, and ``sync-airbnb
keys create/list/revoke`` as processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from nats.aio.client import Client as NatsClient

from services.admin import store
from services.admin.routes import all_operations
from services.admin.scopes import KEY_PATTERN, SCOPE_SENTENCES, admitted, key_hash, new_key
from services.admin.syncs import TRIGGERS_STREAM
from tests.infra import ServiceLauncher
from tests.system import test_admin
from tests.system.test_admin import (
    KEY,
    ClientFactory,
    account_body,
    admin_settings,
    new_account_id,
    seed_metrics,
)

ADMIN = KEY  # a bootstrap key (ADMIN_API_KEYS): bootstrap:1


@dataclass
class World:
    """Two customers, A and B, each with an account (listings, metrics, a job, a handled
    and a pending trigger, a connect token where the route exists), and keys."""

    customer_a: str
    customer_b: str
    a: str  # account of A
    b: str  # account of B
    b_job: uuid.UUID
    b_handled_trigger: uuid.UUID
    b_pending_trigger: uuid.UUID
    b_token: uuid.UUID | None
    keys: dict[str, str] = field(default_factory=dict)  # name -> key

    def h(self, name: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[name]}


async def add_key(db: asyncpg.Connection, scope: str, customer: str | None = None) -> str:
    key = new_key()
    name = f"t-{scope}-{uuid.uuid4().hex[:10]}"
    row = await store.insert_api_key(db, name, scope, customer, key_hash(key))
    assert row is not None
    return key


async def add_job(db: asyncpg.Connection, account_id: str) -> uuid.UUID:
    job_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO airbnb.sync_jobs (job_id, account_id, kind, trigger, dedup_key, scrape_day,"
        " window_start, window_end, status) VALUES ($1, $2, 'full', 'manual', $3,"
        " '2025-07-11', '2025-01-01', '2025-07-10', 'succeeded')",
        job_id,
        account_id,
        f"test-{job_id}",
    )
    await db.execute(
        "INSERT INTO airbnb.sync_job_listings (job_id, airbnb_listing_id, status)"
        " VALUES ($1, '111', 'committed')",
        job_id,
    )
    return job_id


async def make_world(client: TestClient, db: asyncpg.Connection) -> World:
    tag = uuid.uuid4().hex[:8]
    ca, cb = f"cust-a-{tag}", f"cust-b-{tag}"
    a, b = new_account_id(), new_account_id()
    for aid, cust in ((a, ca), (b, cb)):
        resp = await client.post(
            "/api/v1/accounts", json=account_body(aid, customer_id=cust), headers=ADMIN
        )
        assert resp.status == 201, await resp.text()
        await db.execute(
            "INSERT INTO airbnb.listings (account_id, airbnb_listing_id, listing_name)"
            " VALUES ($1, '111', 'one'), ($1, '222', 'two')",
            aid,
        )
        await seed_metrics(db, aid)
    b_job = await add_job(db, b)
    handled = uuid.uuid4()
    await db.execute(
        "INSERT INTO airbnb.sync_triggers (trigger_id, account_id, full_sync, requested_at,"
        " job_id) VALUES ($1, $2, false, now(), $3)",
        handled,
        b,
        b_job,
    )
    # No scheduler runs here: the trigger stays pending in JetStream.
    resp = await client.post(f"/api/v1/accounts/{b}/sync", headers=ADMIN)
    assert resp.status == 202, await resp.text()
    pending = uuid.UUID((await resp.json())["trigger_id"])
    token: uuid.UUID | None = None
    if "createConnectToken" in operation_ids():
        resp = await client.post(f"/api/v1/accounts/{b}/connect-tokens", headers=ADMIN)
        assert resp.status == 201, await resp.text()
        token = uuid.UUID((await resp.json())["token_id"])
    world = World(ca, cb, a, b, b_job, handled, pending, token)
    world.keys = {
        "customer_a": await add_key(db, "customer", ca),
        "customer_b": await add_key(db, "customer", cb),
        "read": await add_key(db, "read"),
        "admin_db": await add_key(db, "admin"),
    }
    revoked = await add_key(db, "admin")
    await db.execute(
        "UPDATE airbnb.api_keys SET revoked_at = now() WHERE key_hash = $1", key_hash(revoked)
    )
    world.keys["revoked"] = revoked
    return world


# --- one example call per route -------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, str] | None = None


INSIGHTS_QUERY = {"metric": "p3_impressions", "from": "2025-01-01", "to": "2025-01-10"}
FORWARD_QUERY = {"listing_id": "111", "stay_from": "2025-01-01", "stay_to": "2025-01-10"}
EXPORT_QUERY = {"start_date": "2025-01-01", "end_date": "2025-01-10"}

# Each route's call aimed at customer B's things: what a key of customer A must not reach.
# The bodies and queries are valid, so that only the key's scope can refuse the call.
EXAMPLES: dict[str, Callable[[World], Call]] = {
    "createOrUpdateAccount": lambda w: Call("POST", "/api/v1/accounts", json=account_body(w.b)),
    "listAccounts": lambda w: Call("GET", "/api/v1/accounts", params={"customer_id": w.customer_b}),
    "getAccount": lambda w: Call("GET", f"/api/v1/accounts/{w.b}"),
    "patchAccount": lambda w: Call("PATCH", f"/api/v1/accounts/{w.b}", json={"user_agent": "x"}),
    "deleteAccount": lambda w: Call("DELETE", f"/api/v1/accounts/{w.b}"),
    "restoreAccount": lambda w: Call("POST", f"/api/v1/accounts/{w.b}/restore"),
    "triggerSync": lambda w: Call("POST", f"/api/v1/accounts/{w.b}/sync", json={"full": True}),
    "listAccountSyncs": lambda w: Call("GET", f"/api/v1/accounts/{w.b}/syncs"),
    "getTrigger": lambda w: Call("GET", f"/api/v1/triggers/{w.b_handled_trigger}"),
    "getSync": lambda w: Call("GET", f"/api/v1/syncs/{w.b_job}"),
    "exportMetrics": lambda w: Call(
        "GET", f"/api/v1/accounts/{w.b}/metrics/export", params=EXPORT_QUERY
    ),
    "listListings": lambda w: Call("GET", f"/api/v1/accounts/{w.b}/listings"),
    "getInsights": lambda w: Call("GET", f"/api/v1/accounts/{w.b}/insights", params=INSIGHTS_QUERY),
    "getForwardInsights": lambda w: Call(
        "GET", f"/api/v1/accounts/{w.b}/insights/forward", params=FORWARD_QUERY
    ),
    "getPortfolio": lambda w: Call(
        "GET", "/api/v1/portfolio", params={"customer_id": w.customer_b}
    ),
    "listAudit": lambda w: Call("GET", "/api/v1/audit", params={"account_id": w.b}),
    "metrics": lambda w: Call("GET", "/metrics"),
    # connect tokens (issue 16, item 4)
    "createConnectToken": lambda w: Call("POST", f"/api/v1/accounts/{w.b}/connect-tokens"),
    "listConnectTokens": lambda w: Call("GET", f"/api/v1/accounts/{w.b}/connect-tokens"),
    "revokeAccountConnectToken": lambda w: Call(
        "DELETE", f"/api/v1/accounts/{w.b}/connect-tokens/{w.b_token}"
    ),
    "createNewAccountToken": lambda w: Call(
        "POST", "/api/v1/connect-tokens", json={"customer_id": w.customer_b}
    ),
    "revokeConnectToken": lambda w: Call("DELETE", f"/api/v1/connect-tokens/{w.b_token}"),
    "connect": lambda w: Call("POST", "/api/v1/connect", json={}),
}

# Lists: a customer key's answer is a 200 without customer B's rows (never a 404).
LISTS = {"listAccounts", "getPortfolio"}
# Creations whose body names customer B: refused on customer_id, nothing made.
OWN_CUSTOMER_ONLY = {"createNewAccountToken"}


def operation_ids() -> set[str]:
    return {op.operation_id for op in all_operations(_settings_for_table())}


def _settings_for_table() -> Any:
    return admin_settings(
        {
            "NATS_URL": "nats://127.0.0.1:1",
            "DATABASE_URL": "postgresql://localhost/x",
            "SECRET_KEYS": "x" * 43 + "=",
            "ADMIN_API_KEYS": "unused-key-1",
        }
    )


def keyed_operations() -> list[Any]:
    """Every route that takes a key (the public ones need none)."""
    return [op for op in all_operations(_settings_for_table()) if op.scope != "public"]


def test_every_route_has_an_example() -> None:
    missing = {op.operation_id for op in keyed_operations()} - set(EXAMPLES)
    assert not missing, f"routes without an example in EXAMPLES: {sorted(missing)}"


async def test_the_document_says_each_operations_scopes(client: TestClient) -> None:
    doc = await (await client.get("/api/v1/openapi.json")).json()
    ops = {op.operation_id: op for op in all_operations(_settings_for_table())}
    seen = set()
    for methods in doc["paths"].values():
        for item in methods.values():
            op = ops[item["operationId"]]
            seen.add(op.operation_id)
            assert item["x-scopes"] == ([] if op.public else admitted(op.scope)), op.operation_id
            assert SCOPE_SENTENCES[op.scope] in item["description"], op.operation_id
            if op.public:
                assert item["security"] == []
            elif op.scope == "connect":
                assert item["security"] == [{"ConnectToken": []}]
            else:
                assert item["security"] == [{"ApiKey": admitted(op.scope)}], op.operation_id
                responses = item["responses"]
                assert {"401", "403", "429"} <= set(responses), op.operation_id
                assert "Retry-After" in responses["429"]["headers"]
    assert seen == set(ops)
    write = doc["paths"]["/api/v1/accounts/{account_id}"]["patch"]
    assert write["x-scopes"] == ["admin", "customer"]
    assert "A read key is refused (403)" in write["description"]
    assert doc["paths"]["/api/v1/audit"]["get"]["x-scopes"] == ["admin"]
    assert doc["paths"]["/metrics"]["get"]["x-scopes"] == ["admin", "read"]


# --- the snapshot of customer B -------------------------------------------------------------

SNAPSHOT_QUERIES = (
    "SELECT * FROM airbnb.accounts WHERE account_id = $1",
    "SELECT id, event, payload FROM airbnb.account_outbox WHERE account_id = $1 ORDER BY id",
    "SELECT * FROM airbnb.sync_jobs WHERE account_id = $1 ORDER BY job_id",
    "SELECT * FROM airbnb.sync_job_listings WHERE job_id IN"
    " (SELECT job_id FROM airbnb.sync_jobs WHERE account_id = $1) ORDER BY job_id",
    "SELECT * FROM airbnb.sync_triggers WHERE account_id = $1 ORDER BY trigger_id",
    "SELECT * FROM airbnb.listings WHERE account_id = $1 ORDER BY airbnb_listing_id",
    "SELECT entry_id, action FROM airbnb.audit_log WHERE account_id = $1 ORDER BY entry_id",
)


async def snapshot(db: asyncpg.Connection, nc: NatsClient, w: World) -> list[Any]:
    rows: list[Any] = []
    for sql in SNAPSHOT_QUERIES:
        rows.append([dict(r) for r in await db.fetch(sql, w.b)])
    tokens = await db.fetchval("SELECT to_regclass('airbnb.connect_tokens') IS NOT NULL")
    if tokens:
        rows.append(
            [
                dict(r)
                for r in await db.fetch(
                    "SELECT * FROM airbnb.connect_tokens WHERE account_id = $1"
                    " OR customer_id = $2 ORDER BY token_id",
                    w.b,
                    w.customer_b,
                )
            ]
        )
    info = await nc.jetstream().stream_info(TRIGGERS_STREAM)
    rows.append(("trigger stream", info.state.messages, info.state.last_seq))
    return rows


async def call(client: TestClient, c: Call, headers: dict[str, str]) -> tuple[int, Any]:
    resp = await client.request(c.method, c.path, json=c.json, params=c.params, headers=headers)
    text = await resp.text()
    body = json.loads(text) if resp.content_type == "application/json" else text
    return resp.status, body


# The admin tests' client factory: an in-process admin on the session's database.
make_client = test_admin.make_client


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    # Many refused calls from one address in these tests: no slowing down but where tested.
    return await make_client(SYNC_TRIGGER_TIMEOUT_S="1", ADMIN_AUTH_FAILURES_BURST="100000")


@pytest.fixture
async def world(client: TestClient, db: asyncpg.Connection) -> World:
    return await make_world(client, db)


async def test_another_customers_key_finds_nothing_and_changes_nothing(
    client: TestClient, db: asyncpg.Connection, nc: NatsClient, world: World
) -> None:
    w = world
    before = await snapshot(db, nc, w)
    missing = new_account_id()  # what an account that does not exist answers
    _, absent = await call(client, Call("GET", f"/api/v1/accounts/{missing}"), ADMIN)
    seen: dict[str, int] = {}
    for op in keyed_operations():
        c = EXAMPLES[op.operation_id](w)
        status, body = await call(client, c, w.h("customer_a"))
        seen[op.operation_id] = status
        if op.scope == "connect":
            assert status == 401, (op.operation_id, body)  # an API key is no connect token
        elif op.scope in ("admin", "operator"):
            assert status == 403 and body["error"] == "insufficient_scope", (op.operation_id, body)
        elif op.operation_id in LISTS:
            assert status == 200, (op.operation_id, body)
            items = body.get("items", body.get("listings"))
            assert items == [], (op.operation_id, body)
        elif op.operation_id in OWN_CUSTOMER_ONLY:
            # a body naming customer B: a 422 on customer_id (scopes.own_customer)
            assert status == 422, (op.operation_id, body)
            assert body["fields"][0]["type"] == "customer_mismatch", body
        else:
            assert status == 404, (op.operation_id, body)
            assert body["error"] == "not_found", (op.operation_id, body)
            if body["detail"].startswith("account "):
                # the very body of an account that does not exist, but for its id
                assert body == {**absent, "detail": absent["detail"].replace(missing, w.b)}
    print(f"customer key of another customer: {seen}")
    # the lists without a customer filter hold none of B's either
    status, page = await call(client, Call("GET", "/api/v1/accounts"), w.h("customer_a"))
    assert status == 200 and {a["account_id"] for a in page["items"]} == {w.a}
    status, folio = await call(client, Call("GET", "/api/v1/portfolio"), w.h("customer_a"))
    assert status == 200 and {x["account_id"] for x in folio["listings"]} == {w.a}
    # a pending trigger (only in JetStream so far) is B's too
    pending = Call("GET", f"/api/v1/triggers/{w.b_pending_trigger}")
    assert (await call(client, pending, w.h("customer_a")))[0] == 404
    assert (await call(client, pending, w.h("customer_b")))[0] == 200
    assert await snapshot(db, nc, w) == before


async def test_a_read_key_writes_nothing(
    client: TestClient, db: asyncpg.Connection, nc: NatsClient, world: World
) -> None:
    w = world
    before = await snapshot(db, nc, w)
    writes = [op for op in keyed_operations() if op.scope in ("write", "admin")]
    assert {op.method for op in writes} >= {"POST", "PATCH", "DELETE"}
    for op in writes:
        status, body = await call(client, EXAMPLES[op.operation_id](w), w.h("read"))
        assert status == 403, (op.operation_id, body)
        assert body["error"] == "insufficient_scope"
        assert "needs one of: admin" in body["detail"]
    assert await snapshot(db, nc, w) == before
    # its reads answer, of every customer
    for op in keyed_operations():
        if op.scope in ("read", "operator"):
            status, body = await call(client, EXAMPLES[op.operation_id](w), w.h("read"))
            assert status == 200, (op.operation_id, body)


async def test_a_revoked_key_is_401_everywhere(
    client: TestClient, db: asyncpg.Connection, nc: NatsClient, world: World
) -> None:
    w = world
    before = await snapshot(db, nc, w)
    for op in keyed_operations():
        status, body = await call(client, EXAMPLES[op.operation_id](w), w.h("revoked"))
        assert status == 401, (op.operation_id, body)
        if op.scope != "connect":
            assert body["error"] == "invalid_api_key"
    assert await snapshot(db, nc, w) == before


async def test_a_customer_key_reaches_its_own_and_writes_for_its_customer_only(
    client: TestClient, db: asyncpg.Connection, world: World
) -> None:
    w = world
    mine = w.h("customer_a")
    for path, params in (
        (f"/api/v1/accounts/{w.a}", None),
        (f"/api/v1/accounts/{w.a}/syncs", None),
        (f"/api/v1/accounts/{w.a}/listings", None),
        (f"/api/v1/accounts/{w.a}/insights", INSIGHTS_QUERY),
        (f"/api/v1/accounts/{w.a}/insights/forward", FORWARD_QUERY),
        (f"/api/v1/accounts/{w.a}/metrics/export", EXPORT_QUERY),
        ("/api/v1/portfolio", {"customer_id": w.customer_a}),
    ):
        status, body = await call(client, Call("GET", path, params=params), mine)
        assert status == 200, (path, body)
    status, rows = await call(
        client,
        Call("GET", f"/api/v1/accounts/{w.a}/metrics/export", params={**EXPORT_QUERY}),
        mine,
    )
    assert rows.count("\n") == 1 + 20  # its own rows: two listings x ten days
    # a new account: the key's customer, given or left out
    new = new_account_id()
    status, body = await call(
        client, Call("POST", "/api/v1/accounts", json=account_body(new)), mine
    )
    assert status == 201 and body["customer_id"] == w.customer_a, body
    other = new_account_id()
    status, body = await call(
        client,
        Call("POST", "/api/v1/accounts", json=account_body(other, customer_id=w.customer_b)),
        mine,
    )
    assert status == 422 and [f["field"] for f in body["fields"]] == ["customer_id"], body
    assert await db.fetchval("SELECT 1 FROM airbnb.accounts WHERE account_id = $1", other) is None
    # an update of its own: it may not hand the account to another customer, nor drop it
    for moved in (w.customer_b, None):
        status, body = await call(
            client, Call("PATCH", f"/api/v1/accounts/{w.a}", json={"customer_id": moved}), mine
        )
        assert status == 422 and body["fields"][0]["type"] == "customer_mismatch", body
    status, body = await call(
        client, Call("PATCH", f"/api/v1/accounts/{w.a}", json={"user_agent": "Mine/1"}), mine
    )
    assert status == 200 and body["user_agent"] == "Mine/1"
    # POST of an update of its own account (customer_id left out): stays its customer's
    status, body = await call(
        client, Call("POST", "/api/v1/accounts", json=account_body(w.a)), mine
    )
    assert status == 200 and body["customer_id"] == w.customer_a
    # the audit trail names the key
    name = await db.fetchval(
        "SELECT actor FROM airbnb.audit_log WHERE account_id = $1 ORDER BY entry_id DESC LIMIT 1",
        w.a,
    )
    assert name.startswith("t-customer-")
    # a database admin key reaches both customers
    for aid in (w.a, w.b):
        assert (await call(client, Call("GET", f"/api/v1/accounts/{aid}"), w.h("admin_db")))[
            0
        ] == 200


async def test_revocation_holds_from_the_next_request_and_what_a_key_costs(
    make_client: ClientFactory, db: asyncpg.Connection
) -> None:
    client = await make_client(ADMIN_DOCS_PUBLIC="false")
    key = await add_key(db, "read")
    # /api/v1/openapi.json behind the key: the auth middleware and little else
    doc = Call("GET", "/api/v1/openapi.json")

    async def timed(headers: dict[str, str]) -> float:
        started = time.perf_counter()
        resp = await client.get(doc.path, headers=headers)
        await resp.read()
        assert resp.status == 200
        return time.perf_counter() - started

    for _ in range(30):  # warm up both
        await timed(ADMIN)
        await timed({"X-API-Key": key})
    # interleaved, so that a load elsewhere on the machine weighs on both alike
    pairs = [(await timed(ADMIN), await timed({"X-API-Key": key})) for _ in range(400)]
    bootstrap = statistics.median(b for b, _ in pairs)
    database = statistics.median(d for _, d in pairs)
    print(
        f"per request: bootstrap key {bootstrap * 1000:.2f} ms, database key"
        f" {database * 1000:.2f} ms (+{(database - bootstrap) * 1000:.2f} ms for the lookup)"
    )
    assert database - bootstrap < 0.005
    last_used = await db.fetchval(
        "SELECT last_used_at FROM airbnb.api_keys WHERE key_hash = $1", key_hash(key)
    )
    assert last_used is not None
    await db.execute(
        "UPDATE airbnb.api_keys SET revoked_at = now() WHERE key_hash = $1", key_hash(key)
    )
    resp = await client.get(doc.path, headers={"X-API-Key": key})
    assert resp.status == 401 and (await resp.json())["error"] == "invalid_api_key"


# --- failed authentications are slowed ------------------------------------------------------


async def test_repeated_failures_from_one_address_are_429_with_retry_after(
    make_client: ClientFactory,
) -> None:
    client = await make_client(ADMIN_AUTH_FAILURES_BURST="3", ADMIN_AUTH_FAILURES_PER_MINUTE="60")
    wrong = {"X-API-Key": "not-a-key-at-all"}
    for _ in range(3):
        assert (await client.get("/api/v1/accounts", headers=wrong)).status == 401
    refused = await client.get("/api/v1/accounts", headers=wrong)
    assert refused.status == 429
    body = await refused.json()
    assert body["error"] == "too_many_failed_authentications"
    retry = int(refused.headers["Retry-After"])
    assert 1 <= retry <= 1
    # the right key too waits: the address is slowed, not the key
    assert (await client.get("/api/v1/accounts", headers=ADMIN)).status == 429
    # no key at all guesses nothing and is not counted, but waits like the rest
    assert (await client.get("/api/v1/accounts")).status == 429
    # public routes are not slowed
    assert (await client.get("/health")).status == 200
    await asyncio.sleep(retry + 0.1)
    assert (await client.get("/api/v1/accounts", headers=ADMIN)).status == 200
    assert (await client.get("/api/v1/accounts", headers=wrong)).status == 401
    assert (await client.get("/api/v1/accounts", headers=wrong)).status == 429


def test_bad_failure_settings_stop_the_admin_at_start(launcher: ServiceLauncher) -> None:
    for name, value in (
        ("ADMIN_AUTH_FAILURES_BURST", "0"),
        ("ADMIN_AUTH_FAILURES_PER_MINUTE", "-1"),
        ("ADMIN_AUTH_FAILURES_MAX_CLIENTS", "many"),
    ):
        done = launcher.run(["admin"], env={name: value}, timeout=30)
        assert done.returncode == 2, done.stderr
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith("sync-airbnb admin: configuration error: " + name), line


# --- the command line -----------------------------------------------------------------------


async def test_keys_create_list_revoke_as_processes(
    launcher: ServiceLauncher, make_client: ClientFactory, db: asyncpg.Connection
) -> None:
    client = await make_client()
    name = f"cli-{uuid.uuid4().hex[:8]}"
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    made = launcher.run(["keys", "create", "--name", name, "--scope", f"customer:{customer}"])
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == key + "\n" and KEY_PATTERN.match(key), made.stdout
    assert key not in made.stderr and "shown only this once" in made.stderr
    # at rest: the hash only, which is not the key
    row = await db.fetchrow("SELECT * FROM airbnb.api_keys WHERE name = $1", name)
    assert row is not None
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest() != key
    assert row["scope"] == "customer" and row["customer_id"] == customer
    assert key not in " ".join(str(v) for v in row.values())
    # it works, for its customer
    resp = await client.get("/api/v1/accounts", headers={"X-API-Key": key})
    assert resp.status == 200 and (await resp.json())["items"] == []

    listed = launcher.run(["keys", "list"])
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == [
        "name", "scope", "customer_id", "created_at", "revoked_at", "last_used_at"
    ]  # fmt: skip
    mine = [ln.split() for ln in lines if ln.split()[0] == name]
    assert len(mine) == 1, listed.stdout
    # name, scope, customer, created (date time), revoked (-), last used (date time)
    assert mine[0][:3] == [name, "customer", customer] and mine[0][5] == "-", mine
    assert mine[0][4].endswith("Z") and mine[0][-1].endswith("Z")
    assert key not in listed.stdout and row["key_hash"] not in listed.stdout
    as_json = launcher.run(["keys", "list", "--json"])
    entry = next(e for e in map(json.loads, as_json.stdout.splitlines()) if e["name"] == name)
    assert entry["revoked_at"] is None and entry["last_used_at"] is not None
    assert set(entry) == {
        "name",
        "scope",
        "customer_id",
        "created_at",
        "revoked_at",
        "last_used_at",
    }

    # refusals: one line each, exit 1 (refused) or 2 (usage)
    again = launcher.run(["keys", "create", "--name", name, "--scope", "read"])
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.strip() == (
        f"sync-airbnb keys create: a key named '{name}' is in force already; revoke it first"
    )
    for bad in (["--scope", "owner"], ["--scope", "customer:"], ["--name", "bootstrap:9"]):
        args = {"--name": f"x-{uuid.uuid4().hex[:6]}", "--scope": "read"}
        args[bad[0]] = bad[1]
        done = launcher.run(["keys", "create", *[x for kv in args.items() for x in kv]])
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("sync-airbnb keys create: ") and done.stdout == ""
    missing = launcher.run(["keys", "revoke", f"nobody-{uuid.uuid4().hex[:6]}"])
    assert missing.returncode == 1 and "is in force" in missing.stderr
    unset = launcher.run(["keys", "list"], env={"DATABASE_URL": ""})
    assert unset.returncode == 2 and "DATABASE_URL" in unset.stderr
    away = launcher.run(["keys", "list"], env={"DATABASE_URL": "postgresql://127.0.0.1:9/x"})
    assert away.returncode == 1 and len(away.stderr.strip().splitlines()) == 1, away.stderr
    assert away.stderr.startswith("sync-airbnb keys list: PostgreSQL could not be reached")

    # revoke: refused on the very next request
    gone = launcher.run(["keys", "revoke", name])
    assert gone.returncode == 0, gone.stderr
    resp = await client.get("/api/v1/accounts", headers={"X-API-Key": key})
    assert resp.status == 401
    # the name may be given again; the audit trail has both, by the command line
    remade = launcher.run(["keys", "create", "--name", name, "--scope", "read"])
    assert remade.returncode == 0 and remade.stdout.strip() != key
    actions = await db.fetch(
        "SELECT action, actor FROM airbnb.audit_log WHERE key_name = $1 ORDER BY entry_id", name
    )
    assert [(a["action"], a["actor"]) for a in actions] == [
        ("key_created", "cli"),
        ("key_revoked", "cli"),
        ("key_created", "cli"),
    ]
    assert not re.search(r"sak_[A-Za-z0-9_-]{43}", made.stderr + listed.stdout + gone.stderr)
    await db.execute("UPDATE airbnb.api_keys SET revoked_at = now() WHERE name = $1", name)


@pytest.fixture(autouse=True)
def _no_leftover_processes(launcher: ServiceLauncher) -> Any:
    yield
    launcher.cleanup()
