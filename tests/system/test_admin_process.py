"""``sync-airbnb admin`` as a real process, against the session's PostgreSQL and NATS:

- schemathesis fuzzes every documented operation (>= 1,000 cases) and finds no 5xx and
  no response that breaks the document;
- a known cookie, given as a Cookie header and as a list of objects, accepted or refused
  by intake, is found nowhere in plaintext: not in the database (the audit trail of those
  changes included), not in any log line of the process (at DEBUG), not in any NATS
  message of the run, not in any response (GET /audit's included); nor are the API keys
  used (made by ``sync-airbnb keys create``, revoked, or wrong by one character), of which
  the database holds the hashes alone;
- schemathesis runs again with a customer key (issue 16, scoped keys): no 5xx either;
- a 1,000,000-row export streams in flat memory;
- ``sync-airbnb rotate-keys`` re-encrypts every credential under the first key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import psutil
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from services.admin import store
from services.admin.scopes import key_hash, new_key
from shared.crypto import CredentialCipher
from shared.migrate import apply_migrations
from tests.cookies import as_objects, auth_cookie, browser_cookie
from tests.infra import (
    PostgresServer,
    ServiceLauncher,
    ServiceProcess,
    free_port,
    new_database_name,
)

KEY = {"X-API-Key": "test-key-2"}
JSON = "application/json"


def new_account_id() -> str:
    return str(random.randint(10**14, 10**15 - 1))


@dataclass
class Admin:
    proc: ServiceProcess
    base: str


def start_admin(launcher: ServiceLauncher, **env: str) -> Admin:
    port = free_port()
    proc = launcher.start(
        ["admin"],
        env={
            "ADMIN_HOST": "127.0.0.1",
            "ADMIN_PORT": str(port),
            "SYNC_TRIGGER_TIMEOUT_S": "2",
            # Fuzzing and outage runs send many wrong keys from one address on purpose: the
            # slowing of failed authentications (429) is tests/system/test_admin_scopes.py's.
            "ADMIN_AUTH_FAILURES_BURST": "1000000",
            **env,
        },
    )
    proc.wait_for_log(r"admin ready, listening", timeout=30)
    return Admin(proc, f"http://127.0.0.1:{port}")


# --- schemathesis -----------------------------------------------------------------------------


@dataclass
class FuzzResult:
    cases: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)


BOUND_FIELD_PATHS = ("/metrics/export", "/insights", "/insights/forward", "/portfolio", "/audit")
CUSTOMER_BOUND_WRITES = (("POST", "/api/v1/connect-tokens"), ("POST", "/api/v1/connect"))


def run_schemathesis(
    base: str,
    examples_per_strategy: int,
    *,
    database_down: bool = False,
    key: str = KEY["X-API-Key"],
) -> FuzzResult:
    """Every operation, positive and negative data, every default check of schemathesis.

    ``database_down``: PostgreSQL is away, so a 503 is the right answer wherever the
    database is used; the checks that want no 5xx or an accepted positive case are left
    out, and every answer must still be one the document lists for its operation.

    Blocking (requests under the hood): the caller runs it in a thread so that the event
    loop keeps serving the trigger responder.
    """
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    session = requests.Session()
    doc = session.get(f"{base}/api/v1/openapi.json", headers={"X-API-Key": key}, timeout=10).json()
    # The key goes through schemathesis' own auth config (not as a fixed header), so its
    # negative cases can leave it out or spoil it and expect the 401/403 they get.
    # A negative case may also be a body over ADMIN_MAX_BODY_BYTES (a cookie list past its
    # maxItems easily is): its 413, documented on every operation with a body, is the
    # right refusal, so it counts as one beside schemathesis' own list.
    rejections = [
        *("400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"),
        "413",  # schemathesis' own list (4.x) above, plus this
    ]
    config = schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"ApiKey": {"api_key": key}}},
            "checks": {"negative_data_rejection": {"expected-statuses": rejections}},
        }
    )
    # from_dict, not from_url: from_url leaves out the operation that serves the document.
    schema = schemathesis.openapi.from_dict(doc, config=config)
    result = FuzzResult()
    for op_result in schema.get_all_operations():
        op = op_result.ok()
        # The export's date range rules (start_date not after end_date, a bounded span) bind
        # two parameters together, which JSON Schema cannot say: schema-valid dates may get
        # a 422 there, so only that check is left out for that operation. Likewise a cookie
        # is accepted only when its _user_attributes names the account (the body's or the
        # path's account_id) and it holds the auth cookies intake needs, which a generated
        # cookie never does: the two account writes leave that check out too.
        # The read API's ranges bind from and to (stay_from and stay_to) the same way, and
        # its dates are bounded (1970..2999, so that no period steps outside Python's
        # dates), which JSON Schema's format date cannot say either.
        binds_fields = (
            op.path.endswith(BOUND_FIELD_PATHS)
            or (
                op.path.startswith("/api/v1/accounts")
                and (op.method.upper(), op.path.count("{")) in (("POST", 0), ("PATCH", 1))
            )
            # A new-account connect token's customer_id must be a customer key's own (another
            # is a 422, as for an account write), and POST /connect's cookies must name the
            # token's host: schema-valid bodies are refused there too.
            or (op.method.upper(), op.path) in CUSTOMER_BOUND_WRITES
        )
        excluded = [positive_data_acceptance] if binds_fields else []
        if database_down:
            excluded = [positive_data_acceptance, not_a_server_error]
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            strategy: st.SearchStrategy[Any] = op.as_strategy(generation_mode=mode)

            @given(case=strategy, op=st.just(op), excluded=st.just(excluded))
            @settings(
                max_examples=examples_per_strategy,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def check(
                case: schemathesis.Case, op: schemathesis.APIOperation, excluded: list[Any]
            ) -> None:
                resp = case.call_and_validate(
                    session=session, base_url=base, excluded_checks=excluded
                )
                result.cases += 1
                result.by_operation[op.label] = result.by_operation.get(op.label, 0) + 1
                result.statuses[resp.status_code] = result.statuses.get(resp.status_code, 0) + 1

            try:
                check()
            except Unsatisfiable:
                # Negative mode of an operation with nothing to negate (no parameter, no
                # body): there is no invalid request to make.
                if mode is not schemathesis.GenerationMode.NEGATIVE:
                    raise
    return result


async def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection
) -> None:
    admin = start_admin(launcher)
    started = time.monotonic()
    # No scheduler: a trigger of an account that exists is stored and answered 202 pending.
    result = await asyncio.to_thread(run_schemathesis, admin.base, 45)
    elapsed = time.monotonic() - started
    print(
        f"schemathesis: {result.cases} cases in {elapsed:.1f}s, statuses {result.statuses}, "
        f"per operation {result.by_operation}"
    )
    assert result.cases >= 1000
    # every operation of the document was exercised
    doc_ops = await _document_operations(admin.base)
    assert set(result.by_operation) == doc_ops
    assert not [s for s in result.statuses if s >= 500]
    # A customer key, of a customer with an account: every operation again, no 5xx (its
    # 403s and 404s are documented answers, checked by schemathesis like the rest).
    customer = f"fuzz-{uuid.uuid4().hex[:8]}"
    key = new_key()
    await store.insert_api_key(db, f"fuzz-{customer}", "customer", customer, key_hash(key))
    await db.execute(
        "INSERT INTO airbnb.accounts (account_id, customer_id, credentials_encrypted,"
        " x_client_version, user_agent) VALUES ($1, $2, 'x', 'v', 'ua')",
        new_account_id(),
        customer,
    )
    started = time.monotonic()
    scoped = await asyncio.to_thread(run_schemathesis, admin.base, 15, key=key)
    print(
        f"schemathesis with a customer key: {scoped.cases} cases in"
        f" {time.monotonic() - started:.1f}s, statuses {scoped.statuses}"
    )
    assert set(scoped.by_operation) == doc_ops
    assert not [s for s in scoped.statuses if s >= 500]
    assert scoped.statuses.get(429, 0) == 0
    assert "Traceback" not in admin.proc.output()


async def _document_operations(base: str) -> set[str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/v1/openapi.json", headers=KEY) as resp,
    ):
        doc = await resp.json()
    return {f"{m.upper()} {p}" for p, ms in doc["paths"].items() for m in ms}


# --- the cookie is nowhere in plaintext -------------------------------------------------------


@dataclass
class NatsTap:
    """Every message on the NATS server while open: a core subscription to ``>`` sees
    JetStream publishes, API calls, requests and replies alike."""

    nc: NatsClient
    messages: list[bytes] = field(default_factory=list)

    async def __aenter__(self) -> NatsTap:
        async def handle(msg: Msg) -> None:
            headers = "".join(f"{k}:{v}\n" for k, v in (msg.headers or {}).items())
            self.messages.append(msg.subject.encode() + b"\n" + headers.encode() + msg.data)

        self._sub = await self.nc.subscribe(">", cb=handle)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.flush()
        await self._sub.unsubscribe()


async def database_text(db: asyncpg.Connection) -> str:
    tables = await db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'airbnb'"
        " AND table_type = 'BASE TABLE'"
    )
    parts = []
    for t in tables:
        parts.append(
            await db.fetchval(
                f"SELECT coalesce(string_agg(x::text, E'\\n'), '') FROM airbnb.\"{t[0]}\" x"
            )
        )
    return "\n".join(parts)


async def test_cookie_never_in_plaintext(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection, secret_keys: str
) -> None:
    marker = f"plaintext-{uuid.uuid4().hex}"
    aid = new_account_id()
    # A browser's whole cookie: the marker is in the auth cookies that are stored and in
    # the bot-manager ones that are dropped; the list form carries the same values.
    cookie = browser_cookie(aid, f"session-{marker}") + f"; bm_sv=bm-{marker}"
    new_cookie = browser_cookie(aid, f"renewed-{marker}")
    listed = as_objects(browser_cookie(aid, f"listed-{marker}"))
    not_mine = as_objects(browser_cookie(new_account_id(), f"other-{marker}"))
    incomplete = [c for c in listed if c["name"] != "_aat"]
    # API keys made by the command line (the key alone on its stdout), one revoked.
    keys: dict[str, str] = {}
    cli_output: list[str] = []
    for name, scope in (("customer", "customer:leak-test"), ("admin", "admin"), ("gone", "read")):
        made = launcher.run(
            ["keys", "create", "--name", f"leak-{name}-{marker[-8:]}", "--scope", scope]
        )
        assert made.returncode == 0, made.stderr
        keys[name] = made.stdout.strip()
        cli_output.append(made.stderr)
    revoking = launcher.run(["keys", "revoke", f"leak-gone-{marker[-8:]}"])
    assert revoking.returncode == 0, revoking.stderr
    key_list = launcher.run(["keys", "list"])
    cli_output += [revoking.stdout, revoking.stderr, key_list.stdout, key_list.stderr]
    # one character off: what a guess close to a key looks like
    near = keys["admin"][:-1] + ("A" if keys["admin"][-1] != "A" else "B")
    admin = start_admin(launcher, LOG_LEVEL="DEBUG", ADMIN_MAX_BODY_BYTES="8192")
    url = f"{admin.base}/api/v1/accounts"
    seen: list[str] = []

    async def call(http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> int:
        async with http.request(method, f"{url}{path}", headers=KEY, **kw) as resp:
            seen.append(f"{resp.status} {dict(resp.headers)}\n{await resp.text()}")
            return resp.status

    body = {
        "account_id": aid,
        "airbnb_cookie": cookie,
        "x_client_version": "v1",
        "user_agent": "UA",
    }
    async with NatsTap(nc) as tap, aiohttp.ClientSession() as http:
        assert await call(http, "POST", "", json=body) == 201
        assert await call(http, "POST", "", json=body) == 200
        assert await call(http, "GET", f"/{aid}") == 200
        assert await call(http, "GET", "") == 200
        assert await call(http, "PATCH", f"/{aid}", json={"airbnb_cookie": listed}) == 200
        assert await call(http, "POST", "", json={**body, "airbnb_cookie": listed}) == 200
        assert await call(http, "PATCH", f"/{aid}", json={"airbnb_cookie": new_cookie}) == 200
        # cookies intake refuses, in either form: not echoed, not logged
        for refused in (not_mine, incomplete, [*listed, {"name": "x", "value": f";{marker}"}]):
            assert await call(http, "PATCH", f"/{aid}", json={"airbnb_cookie": refused}) == 422
            assert await call(http, "POST", "", json={**body, "airbnb_cookie": refused}) == 422
        # rejected bodies holding the cookie: not echoed, not logged
        assert await call(http, "POST", "", json={**body, "account_id": "x"}) == 422
        assert await call(http, "POST", "", json={**body, "airbnb_cookie": marker}) == 422
        assert await call(http, "PATCH", f"/{aid}", json={"airbnb_cookie": cookie, "x": 1}) == 422
        broken = aiohttp.StringPayload(f'{{"airbnb_cookie": "{cookie}"', content_type=JSON)
        assert await call(http, "POST", "", data=broken) == 422
        assert await call(http, "POST", "", json={**body, "user_agent": "u" * 9000}) == 413
        assert await call(http, "POST", f"/{aid}/sync", json={"full": True}) == 202
        assert await call(http, "GET", f"/{aid}/syncs") == 200
        assert await call(http, "DELETE", f"/{aid}") == 200
        assert await call(http, "POST", f"/{aid}/restore") == 200
        assert (
            await call(
                http,
                "GET",
                f"/{aid}/metrics/export",
                params={"start_date": "2025-01-01", "end_date": "2025-01-02"},
            )
            == 200
        )
        # The keys: accepted, refused for another customer's account, revoked, one off.
        for key, path, status in (
            (keys["admin"], f"/{aid}", 200),
            (keys["customer"], "", 200),
            (keys["customer"], f"/{aid}", 404),
            (keys["gone"], "", 401),
            (near, "", 401),
        ):
            async with http.get(f"{url}{path}", headers={"X-API-Key": key}) as resp:
                seen.append(f"{resp.status} {dict(resp.headers)}\n{await resp.text()}")
                assert resp.status == status, (path, status)
        # The audit trail of all of it, as the API answers it.
        async with http.get(
            f"{admin.base}/api/v1/audit", params={"account_id": aid}, headers=KEY
        ) as resp:
            assert resp.status == 200
            trail = await resp.json()
            seen.append(json.dumps(trail))
    assert admin.proc.terminate() == 0  # flushes and closes the log
    logs = admin.proc.output()

    # The capture really captured: the account's id is in the logs and in NATS messages,
    # and the database holds the cookie, encrypted.
    assert aid in logs and len(logs.splitlines()) > 10
    assert any(aid.encode() in m for m in tap.messages) and len(tap.messages) > 10
    token = await db.fetchval(
        "SELECT credentials_encrypted FROM airbnb.accounts WHERE account_id = $1", aid
    )
    assert CredentialCipher(secret_keys.split(",")).decrypt(token) == auth_cookie(
        aid, f"renewed-{marker}"
    )

    # The trail recorded the changes (the two new cookies by name alone), and the table is in
    # what database_text reads.
    actions = [e["action"] for e in trail["items"]]
    assert actions.count("credentials_replaced") == 2 and "account_created" in actions
    assert ["credentials"] in [e["fields"] for e in trail["items"]]
    entries = await db.fetchval(
        "SELECT string_agg(a::text, E'\\n') FROM airbnb.audit_log a WHERE account_id = $1", aid
    )
    assert aid in entries and marker not in entries

    assert marker not in await database_text(db)
    assert marker not in logs
    assert not [m for m in tap.messages if marker.encode() in m]
    assert not [r for r in seen if marker in r]
    # No key, nor the near miss, anywhere: the database holds their hashes only.
    stored = await database_text(db)
    for secret in (*keys.values(), near):
        assert secret not in stored
        assert secret not in logs
        assert not [m for m in tap.messages if secret.encode() in m]
        assert not [r for r in seen if secret in r]
        assert not [o for o in cli_output if secret in o]
    assert key_hash(keys["admin"]) in stored  # the capture reads the keys' table


# --- export memory ------------------------------------------------------------------------------


async def test_million_row_export_streams_in_flat_memory(
    launcher: ServiceLauncher, db: asyncpg.Connection, secret_keys: str
) -> None:
    aid = new_account_id()
    listings, days = 2500, 400  # 1,000,000 chart_query rows
    await db.execute(
        "INSERT INTO airbnb.accounts (account_id, credentials_encrypted, x_client_version,"
        " user_agent) VALUES ($1, $2, 'v', 'ua')",
        aid,
        CredentialCipher(secret_keys.split(",")).encrypt("_user_attributes=1"),
    )
    await db.execute(
        "INSERT INTO airbnb.chart_query (account_id, airbnb_listing_id, metric_date, time,"
        " airbnb_internal_name, conversion_rate_your_value, conversion_rate_your_value_string,"
        " p3_impressions_your_value, p3_impressions_similar_value)"
        " SELECT $1, l::text, date '2024-01-01' + d, timestamptz '2025-07-11 00:00Z',"
        " 'listing ' || l, d / 1000.0, (d / 10.0)::text || '%', l * d, l + d"
        " FROM generate_series(1, $2) l, generate_series(0, $3 - 1) d",
        aid,
        listings,
        days,
    )
    admin = start_admin(launcher)
    proc = psutil.Process(admin.proc.pid)
    base_rss = proc.memory_info().rss
    peak = base_rss
    lines = size = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=240)) as http,
            http.get(
                f"{admin.base}/api/v1/accounts/{aid}/metrics/export",
                params={
                    "start_date": "2024-01-01",
                    "end_date": "2025-02-03",
                    "table": "chart_query",
                },
                headers=KEY,
            ) as resp,
        ):
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1 << 16):
                size += len(chunk)
                lines += chunk.count(b"\n")
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await db.execute("DELETE FROM airbnb.chart_query WHERE account_id = $1", aid)
    elapsed = time.monotonic() - started
    growth = (peak - base_rss) / 2**20
    print(
        f"export: {lines - 1} rows, {size / 2**20:.0f} MiB in {elapsed:.1f}s, "
        f"RSS {base_rss / 2**20:.0f} MiB -> peak {peak / 2**20:.0f} MiB (+{growth:.1f} MiB)"
    )
    assert lines == 1 + listings * days
    # The body is far larger than what the process ever held: it streamed.
    assert size > 100 * 2**20
    assert growth < 40, f"RSS grew by {growth:.1f} MiB during the export"


# --- rotate-keys --------------------------------------------------------------------------------


@pytest.fixture
async def private_db(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A migrated database of this test's own: rotate-keys walks every account, and the
    session database holds other tests' accounts, some with deliberately bad tokens."""
    name = new_database_name("sync_airbnb_rotate")
    conn = await asyncpg.connect(postgres_server.admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = postgres_server.database_url(name)
    await asyncio.to_thread(apply_migrations, url)
    yield url
    conn = await asyncpg.connect(postgres_server.admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_rotate_keys_reencrypts_under_the_first_key(
    launcher: ServiceLauncher, private_db: str, secret_keys: str
) -> None:
    db = await asyncpg.connect(private_db)
    try:
        await _rotate_keys(launcher, db, {"DATABASE_URL": private_db}, secret_keys)
    finally:
        await db.close()


async def _rotate_keys(
    launcher: ServiceLauncher, db: asyncpg.Connection, env: dict[str, str], secret_keys: str
) -> None:
    first, second = secret_keys.split(",")
    old = CredentialCipher([second])  # tokens made before `first` was put in front
    cookies = {new_account_id(): f"_user_attributes={uuid.uuid4().hex}" for _ in range(3)}
    for aid, cookie in cookies.items():
        await db.execute(
            "INSERT INTO airbnb.accounts (account_id, credentials_encrypted, x_client_version,"
            " user_agent) VALUES ($1, $2, 'v', 'ua')",
            aid,
            old.encrypt(cookie),
        )
    done = launcher.run(["rotate-keys"], env=env)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts == {"rotated": len(cookies), "failed": 0}
    only_first = CredentialCipher([first])
    for aid, cookie in cookies.items():
        token = await db.fetchval(
            "SELECT credentials_encrypted FROM airbnb.accounts WHERE account_id = $1", aid
        )
        assert only_first.decrypt(token) == cookie  # readable without the old key
    assert cookies.keys().isdisjoint(done.stderr.split())  # no per-account noise on success

    # A token no key decrypts is left alone, counted, named in the log, and exit code 1.
    broken = new_account_id()
    await db.execute(
        "INSERT INTO airbnb.accounts (account_id, credentials_encrypted, x_client_version,"
        " user_agent) VALUES ($1, 'not-a-token', 'v', 'ua')",
        broken,
    )
    try:
        failed = launcher.run(["rotate-keys"], env=env)
        assert failed.returncode == 1
        assert json.loads(failed.stdout.strip().splitlines()[-1])["failed"] == 1
        assert broken in failed.stderr and "not-a-token" not in failed.stderr
    finally:
        await db.execute("DELETE FROM airbnb.accounts WHERE account_id = $1", broken)


@pytest.fixture(autouse=True)
def _no_leftover_processes(launcher: ServiceLauncher) -> Iterator[None]:
    yield
    launcher.cleanup()
