"""Connect tokens and POST /api/v1/connect (issue 16, item 4), against the session's real
PostgreSQL and NATS, the admin in process (services/admin/connect.py holds the rules).

- A new-account token creates its account once (with the token's customer); after that it
  updates that account only, and another host's session is refused with nothing changed.
- An account's token connects that account only; it replaces the cookie with the auth group
  alone, bumps credentials_version and clears the needs-new-credentials mark.
- Expired, revoked, unknown or missing tokens are 401 and change nothing (the account row,
  the token's use count, no audit entry); an X-API-Key is no connect token and a connect
  token no X-API-Key.
- Tokens are hashed at rest and never logged; the audit trail names them, never a cookie.
- ADMIN_CONNECT_ORIGINS lets the extension's origin call POST /connect and nothing else.
- A customer key makes, lists and revokes tokens of its own customer's accounts only (404
  for another's); a read key lists them only. Repeated bad tokens from one address are a
  429 with Retry-After, as bad API keys are.
- validate is the default: with no fetcher to ask, 503 with Retry-After, nothing saved.
  (A live check through a real fetcher is tests/system/test_extension_browser.py's.)
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from services.admin import keys
from shared.airbnb.cookies import AUTH_COOKIES
from shared.crypto import CredentialCipher
from tests.cookies import ANALYTICS, BOT_MANAGER, auth_cookies, browser_cookie
from tests.cookies import as_objects as cookie_objects
from tests.system.test_admin import (  # noqa: F401  (make_client is a fixture)
    KEY,
    ClientFactory,
    admin_settings,
    create,
    error_of,
    make_client,
    new_account_id,
)

EXTENSION = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/146.0.0.0"


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:  # noqa: F811
    return await make_client(ADMIN_CONNECT_ORIGINS=EXTENSION, ADMIN_VALIDATE_TIMEOUT_S="2")


def connect_body(account_id: str, session: str = "fresh-session", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "cookies": cookie_objects(browser_cookie(account_id, session)),
        "user_agent": UA,
        "account_id": account_id,
        "validate": False,
    }
    body.update(over)
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_token(client: TestClient, account_id: str | None = None, **body: Any) -> Any:
    path = (
        f"/api/v1/accounts/{account_id}/connect-tokens" if account_id else "/api/v1/connect-tokens"
    )
    resp = await client.post(path, json=body, headers=KEY)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def snapshot(db: asyncpg.Connection, account_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow("SELECT * FROM airbnb.accounts WHERE account_id = $1", account_id)
    return dict(row) if row else None


async def stored_cookie(db: asyncpg.Connection, secret_keys: str, account_id: str) -> str:
    token = await db.fetchval(
        "SELECT credentials_encrypted FROM airbnb.accounts WHERE account_id = $1", account_id
    )
    return CredentialCipher(secret_keys.split(",")).decrypt(token)


def auth_header(account_id: str, session: str) -> str:
    """The auth group intake keeps of browser_cookie(account_id, session), in Airbnb's order."""
    cookies = auth_cookies(account_id, session)
    return "; ".join(f"{n}={cookies[n]}" for n in AUTH_COOKIES if n in cookies)


async def test_a_new_account_token_creates_its_account_once_then_updates_only_it(
    client: TestClient, db: asyncpg.Connection, secret_keys: str
) -> None:
    made = await new_token(client, customer_id="cust-connect", expires_in_days=3)
    assert made["for_new_account"] and made["account_id"] is None and made["status"] == "active"
    assert made["customer_id"] == "cust-connect" and made["created_by"] == "bootstrap:1"
    assert made["connect_link"].endswith(f"/connect#token={made['token']}")
    host = new_account_id()

    resp = await client.post(
        "/api/v1/connect", json=connect_body(host), headers=bearer(made["token"])
    )
    assert resp.status == 200, await resp.text()
    first = await resp.json()
    assert first == {
        "account_id": host,
        "created": True,
        "validated": False,
        "listings": None,
        "credentials_version": 1,
    }
    account = await snapshot(db, host)
    assert account is not None and account["customer_id"] == "cust-connect"
    assert account["user_agent"] == UA and account["x_client_version"] == "connect"
    # Exactly the auth group, the bot-manager and analytics cookies dropped.
    stored = await stored_cookie(db, secret_keys, host)
    assert stored == auth_header(host, "fresh-session")
    assert not any(name in stored for name in (*BOT_MANAGER, *ANALYTICS))

    # Used again with another host's session: refused, no second account, nothing changed.
    other = new_account_id()
    again = await client.post(
        "/api/v1/connect", json=connect_body(other), headers=bearer(made["token"])
    )
    assert (await error_of(again, 403)).error == "wrong_account"
    assert await snapshot(db, other) is None
    assert await snapshot(db, host) == account

    # Used again with its host's new session: the same account, updated.
    resp = await client.post(
        "/api/v1/connect",
        json=connect_body(host, "second-login", x_client_version="build-42"),
        headers=bearer(made["token"]),
    )
    assert resp.status == 200, await resp.text()
    second = await resp.json()
    assert second["created"] is False and second["credentials_version"] == 2
    assert await stored_cookie(db, secret_keys, host) == auth_header(host, "second-login")
    assert (await snapshot(db, host) or {})["x_client_version"] == "build-42"
    token_row = await db.fetchrow(
        "SELECT * FROM airbnb.connect_tokens WHERE token_id = $1::uuid", made["token_id"]
    )
    assert token_row["account_id"] == host and token_row["uses"] == 2
    count = await db.fetchval(
        "SELECT count(*) FROM airbnb.accounts WHERE customer_id = 'cust-connect'"
        " AND account_id = ANY($1)",
        [host, other],
    )
    assert count == 1


async def test_an_account_token_connects_that_account_only_and_clears_the_mark(
    client: TestClient, db: asyncpg.Connection, secret_keys: str
) -> None:
    account = await create(client, customer_id="cust-a")
    aid = account["account_id"]
    await db.execute(
        "UPDATE airbnb.accounts SET credentials_invalid_at = now(),"
        " credentials_error = 'login redirect' WHERE account_id = $1",
        aid,
    )
    made = await new_token(client, aid)
    assert made["account_id"] == aid and not made["for_new_account"]
    assert made["customer_id"] == "cust-a"

    other = new_account_id()
    before = await snapshot(db, aid)
    resp = await client.post(
        "/api/v1/connect", json=connect_body(other), headers=bearer(made["token"])
    )
    assert (await error_of(resp, 403)).error == "wrong_account"
    assert await snapshot(db, other) is None and await snapshot(db, aid) == before

    # The body's account_id must be the cookies' host.
    mismatch = {**connect_body(aid), "account_id": other}
    resp = await client.post("/api/v1/connect", json=mismatch, headers=bearer(made["token"]))
    assert (await error_of(resp, 422)).fields[0].field == "account_id"  # type: ignore[index]

    resp = await client.post(
        "/api/v1/connect", json=connect_body(aid), headers=bearer(made["token"])
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["credentials_version"] == 2
    after = await snapshot(db, aid)
    assert after is not None
    assert after["credentials_invalid_at"] is None and after["credentials_error"] is None
    assert after["user_agent"] == UA
    assert after["x_client_version"] == before["x_client_version"]  # absent: kept
    assert await stored_cookie(db, secret_keys, aid) == auth_header(aid, "fresh-session")
    got = await (await client.get(f"/api/v1/accounts/{aid}", headers=KEY)).json()
    assert got["needs_credentials"] is False

    listed = await (await client.get(f"/api/v1/accounts/{aid}/connect-tokens", headers=KEY)).json()
    assert [t["token_id"] for t in listed["items"]] == [made["token_id"]]
    assert listed["items"][0]["uses"] == 1 and "token" not in listed["items"][0]


async def test_expired_revoked_and_unknown_tokens_are_401_and_change_nothing(
    client: TestClient, db: asyncpg.Connection
) -> None:
    aid = (await create(client))["account_id"]
    expiring = await new_token(client, aid)
    revoked = await new_token(client, aid)
    await db.execute(
        "UPDATE airbnb.connect_tokens SET expires_at = now() - interval '1 second'"
        " WHERE token_id = $1::uuid",
        expiring["token_id"],
    )
    resp = await client.delete(
        f"/api/v1/accounts/{aid}/connect-tokens/{revoked['token_id']}", headers=KEY
    )
    assert resp.status == 200 and (await resp.json())["status"] == "revoked"
    # Revoking again is a no-op; another account's path does not reach it.
    assert (
        await client.delete(
            f"/api/v1/accounts/{aid}/connect-tokens/{revoked['token_id']}", headers=KEY
        )
    ).status == 200
    elsewhere = await client.delete(
        f"/api/v1/accounts/{new_account_id()}/connect-tokens/{revoked['token_id']}", headers=KEY
    )
    assert (await error_of(elsewhere, 404)).error == "not_found"

    before = await snapshot(db, aid)
    entries = await db.fetchval("SELECT count(*) FROM airbnb.audit_log WHERE account_id = $1", aid)
    body = connect_body(aid)
    for headers, code in (
        (bearer(expiring["token"]), "invalid_connect_token"),
        (bearer(revoked["token"]), "invalid_connect_token"),
        (bearer("sact_" + "x" * 43), "invalid_connect_token"),
        ({}, "missing_connect_token"),
        (KEY, "missing_connect_token"),  # an API key is not a connect token
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_connect_token"),
    ):
        resp = await client.post("/api/v1/connect", json=body, headers=headers)
        err = await error_of(resp, 401)
        assert err.error == code, (headers, err)
        assert "Bearer" in resp.headers["WWW-Authenticate"]
    assert (
        "expired"
        in (
            await (
                await client.post("/api/v1/connect", json=body, headers=bearer(expiring["token"]))
            ).json()
        )["detail"]
    )
    assert await snapshot(db, aid) == before
    assert (
        await db.fetchval("SELECT count(*) FROM airbnb.audit_log WHERE account_id = $1", aid)
        == entries
    )
    uses = await db.fetch(
        "SELECT uses, used_at FROM airbnb.connect_tokens WHERE account_id = $1", aid
    )
    assert all(r["uses"] == 0 and r["used_at"] is None for r in uses)
    statuses = {
        t["token_id"]: t["status"]
        for t in (
            await (await client.get(f"/api/v1/accounts/{aid}/connect-tokens", headers=KEY)).json()
        )["items"]
    }
    assert statuses == {expiring["token_id"]: "expired", revoked["token_id"]: "revoked"}

    # A connect token is no X-API-Key either.
    live = await new_token(client, aid)
    resp = await client.get(f"/api/v1/accounts/{aid}", headers={"X-API-Key": live["token"]})
    assert resp.status == 401
    resp = await client.get(f"/api/v1/accounts/{aid}", headers=bearer(live["token"]))
    assert (await error_of(resp, 401)).error == "missing_api_key"


async def test_a_new_account_token_is_revocable_and_a_deleted_account_gets_none(
    client: TestClient,
) -> None:
    made = await new_token(client, customer_id="cust-r")
    resp = await client.delete(f"/api/v1/connect-tokens/{made['token_id']}", headers=KEY)
    assert resp.status == 200 and (await resp.json())["status"] == "revoked"
    resp = await client.post(
        "/api/v1/connect", json=connect_body(new_account_id()), headers=bearer(made["token"])
    )
    assert "revoked" in (await error_of(resp, 401)).detail
    missing = await client.delete(f"/api/v1/connect-tokens/{made['token_id'][:-1]}0", headers=KEY)
    assert missing.status in (200, 404)  # another id: 404 unless it happens to be ours
    assert (
        await client.post(f"/api/v1/accounts/{new_account_id()}/connect-tokens", headers=KEY)
    ).status == 404
    aid = (await create(client))["account_id"]
    assert (await client.delete(f"/api/v1/accounts/{aid}", headers=KEY)).status == 200
    resp = await client.post(f"/api/v1/accounts/{aid}/connect-tokens", headers=KEY)
    assert (await error_of(resp, 409)).error == "account_deleted"
    for days in (0, 91):
        resp = await client.post(
            "/api/v1/connect-tokens", json={"expires_in_days": days}, headers=KEY
        )
        assert (await error_of(resp, 422)).fields[0].field == "expires_in_days"  # type: ignore[index]


async def test_tokens_are_hashed_at_rest_never_logged_and_audited_without_cookies(
    client: TestClient, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    made = await new_token(client)
    host = new_account_id()
    resp = await client.post(
        "/api/v1/connect", json=connect_body(host, "leak-check"), headers=bearer(made["token"])
    )
    assert resp.status == 200, await resp.text()
    row = await db.fetchrow(
        "SELECT token_hash, created_at, expires_at FROM airbnb.connect_tokens"
        " WHERE token_id = $1::uuid",
        made["token_id"],
    )
    assert row["token_hash"] == hashlib.sha256(made["token"].encode()).hexdigest()
    assert made["token"] not in str(dict(row))
    # ADMIN_CONNECT_TOKEN_DAYS (7) by default.
    assert (row["expires_at"] - row["created_at"]).days == 7
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert made["token"] not in logged and "leak-check" not in logged
    entries = await db.fetch(
        "SELECT actor, actor_scope, action, fields, detail::text AS detail FROM airbnb.audit_log"
        " WHERE action LIKE 'connect%' AND detail->>'token_id' = $1"
        " OR (action = 'account_connected' AND account_id = $2) ORDER BY entry_id",
        made["token_id"],
        host,
    )
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("connect_token_created", "bootstrap:1"),
        ("account_connected", f"connect-token:{made['token_id']}"),
    ]
    assert entries[1]["actor_scope"] == "connect"
    assert "credentials" in entries[1]["fields"]
    text = str([dict(e) for e in entries])
    assert made["token"] not in text and "leak-check" not in text


async def test_validate_is_the_default_and_without_a_fetcher_nothing_is_saved(
    client: TestClient, db: asyncpg.Connection
) -> None:
    made = await new_token(client)
    host = new_account_id()
    body = connect_body(host)
    del body["validate"]
    resp = await client.post("/api/v1/connect", json=body, headers=bearer(made["token"]))
    await error_of(resp, 503)
    assert int(resp.headers["Retry-After"]) >= 1
    assert await snapshot(db, host) is None
    token_row = await db.fetchrow(
        "SELECT account_id, uses FROM airbnb.connect_tokens WHERE token_id = $1::uuid",
        made["token_id"],
    )
    assert token_row["account_id"] is None and token_row["uses"] == 0


async def test_cors_lets_the_extension_call_connect_and_nothing_else(client: TestClient) -> None:
    preflight = {"Origin": EXTENSION, "Access-Control-Request-Method": "POST"}
    ok = await client.options(
        "/api/v1/connect",
        headers={**preflight, "Access-Control-Request-Headers": "authorization, content-type"},
    )
    assert ok.status == 204
    assert ok.headers["Access-Control-Allow-Origin"] == EXTENSION
    assert ok.headers["Access-Control-Allow-Methods"] == "POST"
    assert "Authorization" in ok.headers["Access-Control-Allow-Headers"]
    for path in ("/api/v1/accounts", "/api/v1/connect-tokens", "/api/v1/openapi.json"):
        refused = await client.options(path, headers=preflight)
        assert "Access-Control-Allow-Origin" not in refused.headers, path
        got = await client.get(path, headers={"Origin": EXTENSION, **KEY})
        assert "Access-Control-Allow-Origin" not in got.headers, path
    # Another origin gets nothing, on /connect too.
    other = await client.options(
        "/api/v1/connect", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    # The answer of POST /connect itself carries it, a refusal too (the extension reads it).
    made = await new_token(client)
    resp = await client.post(
        "/api/v1/connect",
        json=connect_body(new_account_id()),
        headers={"Origin": EXTENSION, **bearer(made["token"])},
    )
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == EXTENSION
    refused = await client.post(
        "/api/v1/connect", json=connect_body(new_account_id()), headers={"Origin": EXTENSION}
    )
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == EXTENSION


async def test_the_openapi_document_says_how_connect_authenticates(client: TestClient) -> None:
    doc = await (await client.get("/api/v1/openapi.json")).json()
    op = doc["paths"]["/api/v1/connect"]["post"]
    assert op["x-scopes"] == ["connect"]
    assert {"ConnectToken": []} in op["security"]
    assert doc["components"]["securitySchemes"]["ConnectToken"]["scheme"] == "bearer"
    for path, method in (
        ("/api/v1/accounts/{account_id}/connect-tokens", "post"),
        ("/api/v1/accounts/{account_id}/connect-tokens", "get"),
        ("/api/v1/accounts/{account_id}/connect-tokens/{token_id}", "delete"),
        ("/api/v1/connect-tokens", "post"),
        ("/api/v1/connect-tokens/{token_id}", "delete"),
    ):
        assert "admin" in doc["paths"][path][method]["x-scopes"]


async def test_the_connect_link_leads_to_a_page_that_says_what_to_do(client: TestClient) -> None:
    made = await new_token(client)
    link = made["connect_link"]
    assert link.startswith(str(client.make_url("/connect#token=")))
    # A browser sends the path only, never the fragment (the token).
    resp = await client.get("/connect")
    assert resp.status == 200 and resp.content_type == "text/html"
    text = await resp.text()
    assert "extension" in text and "<script" not in text
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert resp.headers["Referrer-Policy"] == "no-referrer"


async def test_a_customer_key_makes_tokens_for_its_own_accounts_only(
    client: TestClient, db: asyncpg.Connection, database_url: str
) -> None:
    suffix = new_account_id()[-6:]
    mine, theirs = f"cust-own-{suffix}", f"cust-other-{suffix}"
    key, _ = await keys.create(database_url, f"connect-{suffix}", f"customer:{mine}")
    reader, _ = await keys.create(database_url, f"connect-read-{suffix}", "read")
    own = {"X-API-Key": key}
    my_account = (await create(client, customer_id=mine))["account_id"]
    their_account = (await create(client, customer_id=theirs))["account_id"]

    resp = await client.post(f"/api/v1/accounts/{my_account}/connect-tokens", headers=own)
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    assert made["customer_id"] == mine and made["created_by"] == f"connect-{suffix}"

    # Another customer's account is answered as a missing one, and gets no token.
    before = await db.fetchval("SELECT count(*) FROM airbnb.connect_tokens")
    for method, path in (
        ("POST", f"/api/v1/accounts/{their_account}/connect-tokens"),
        ("GET", f"/api/v1/accounts/{their_account}/connect-tokens"),
    ):
        resp = await client.request(method, path, headers=own)
        assert (await error_of(resp, 404)).detail == f"account {their_account} does not exist"
    theirs_token = await new_token(client, their_account)
    for path in (
        f"/api/v1/accounts/{their_account}/connect-tokens/{theirs_token['token_id']}",
        f"/api/v1/connect-tokens/{theirs_token['token_id']}",
    ):
        assert (await client.delete(path, headers=own)).status == 404
    assert await db.fetchval("SELECT count(*) FROM airbnb.connect_tokens") == before + 1
    assert await db.fetchval(
        "SELECT revoked_at IS NULL FROM airbnb.connect_tokens WHERE token_id = $1::uuid",
        theirs_token["token_id"],
    )

    # A new account's token is its own customer's; naming another is a 422.
    resp = await client.post("/api/v1/connect-tokens", json={}, headers=own)
    assert resp.status == 201 and (await resp.json())["customer_id"] == mine
    resp = await client.post("/api/v1/connect-tokens", json={"customer_id": theirs}, headers=own)
    assert (await error_of(resp, 422)).fields[0].field == "customer_id"  # type: ignore[index]

    # A read key makes and revokes none; it may list them.
    read = {"X-API-Key": reader}
    resp = await client.post(f"/api/v1/accounts/{my_account}/connect-tokens", headers=read)
    assert (await error_of(resp, 403)).error == "insufficient_scope"
    resp = await client.delete(f"/api/v1/connect-tokens/{made['token_id']}", headers=read)
    assert (await error_of(resp, 403)).error == "insufficient_scope"
    resp = await client.get(f"/api/v1/accounts/{my_account}/connect-tokens", headers=read)
    assert resp.status == 200


async def test_repeated_bad_tokens_from_one_address_are_slowed(
    make_client: ClientFactory,  # noqa: F811
) -> None:
    client = await make_client(ADMIN_AUTH_FAILURES_BURST="2", ADMIN_AUTH_FAILURES_PER_MINUTE="1")
    made = await new_token(client)
    body = connect_body(new_account_id())
    for _ in range(2):
        resp = await client.post("/api/v1/connect", json=body, headers=bearer("sact_guess"))
        assert (await error_of(resp, 401)).error == "invalid_connect_token"
    # The bucket is empty: a guess is refused before its token is looked at, a good token too.
    for token in ("sact_guess", made["token"]):
        resp = await client.post("/api/v1/connect", json=body, headers=bearer(token))
        assert (await error_of(resp, 429)).error == "too_many_failed_authentications"
        assert int(resp.headers["Retry-After"]) >= 1
