"""Credentials checked before they are saved (issue 16, item 3), against real processes.

A nats-server and a database of the test's own (tests/system/test_data_path's fixtures),
the simulator as Airbnb (its session rules on), a fetcher and the admin as
``sync-airbnb`` processes. The admin asks the fetcher over NATS request/reply
(``airbnb.credentials.check``); the fetcher runs the preflight and one
ListingsSectionQuery against the simulator.

- a live simulator cookie is saved with its listing count (POST, and PATCH), and what is
  saved is the cookie given: the _aaj the check's preflight rotated is dropped;
- a revoked session (``POST /_sim/faults/revoke/{id}``) is a 422 ``credentials_rejected``
  (reason ``expired``, field ``airbnb_cookie``) and nothing is saved: no account created,
  and an existing account's row is unchanged;
- another host's session: the admin's intake refuses it before any check (422
  ``validation_error`` on ``airbnb_cookie``, as before this item), so the fetcher's own
  ``other_host`` verdict is shown by asking it directly over NATS: the answer, and no
  request to the simulator;
- no fetcher running: 503 with Retry-After at once (NATS says no responders), nothing
  saved; a fetcher that never answers: 503 after ADMIN_VALIDATE_TIMEOUT_S, not later;
- no cookie value in any process's log or in any NATS message (the cookie travels as a
  Fernet token), and the fetcher's counter of checks by outcome.

Then Airbnb's other answers (a 401 of the listings query is ``expired``, a 400 of the page
load ``rejected``, 5xx past the retries a 503), a check during a running sync of the same
account (the sync keeps its session and saves its own rotation), and the bounds (one slot,
a deadline, a refusal at once when too many wait).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nats
import pytest
from nats.aio.msg import Msg

from shared import topology
from shared.airbnb import cookies
from shared.crypto import CredentialCipher
from shared.messages import (
    CredentialCheck,
    CredentialCheckResult,
    EncryptedCredentials,
    decode,
    encode,
)
from tests.infra import free_port
from tests.stack import CHROME_UA, Simulator, Stack, wait_for_jobs
from tests.system import test_data_path
from tests.system.test_data_path import Infra
from tests.system.test_sessions import API_KEY, Admin, counter, metrics_url, secret_values

infra = test_data_path.infra
db = test_data_path.db

pytestmark = pytest.mark.slow

DAY = dt.date(2025, 7, 11)
SEED = 77
VALIDATE_TIMEOUT_S = 3.0
CHECKS = "sync_airbnb_credential_checks_total"


def start_admin(stack: Stack) -> Admin:
    port = free_port()
    proc = stack.start(
        "admin",
        ADMIN_PORT=str(port),
        ADMIN_API_KEYS=API_KEY,
        ADMIN_VALIDATE_TIMEOUT_S=str(VALIDATE_TIMEOUT_S),
    )
    return Admin(proc, f"http://127.0.0.1:{port}")


def account_body(account: dict[str, Any], cookie: str | None = None) -> dict[str, Any]:
    return {
        "account_id": account["account_id"],
        # What the host's browser holds: auth, bot-manager and analytics cookies.
        "airbnb_cookie": cookie or account["cookie"],
        "x_client_version": "sim-web-1",
        "user_agent": CHROME_UA,
    }


async def account_row(db: asyncpg.Connection, account_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM airbnb.accounts WHERE account_id = $1", account_id)


async def graphql_requests(sim: Simulator, account_id: str) -> int:
    counts = await sim.requests(account_id)
    return int(counts.get("ListingsSectionQuery", 0))


class Tap:
    """Every message on the NATS server while open (requests and replies included)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[bytes] = []

    async def __aenter__(self) -> Tap:
        self.nc = await nats.connect(self.url)

        async def keep(msg: Msg) -> None:
            self.messages.append(msg.subject.encode() + b"\n" + msg.data)

        self._sub = await self.nc.subscribe(">", cb=keep)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.flush()
        await self._sub.unsubscribe()
        await self.nc.close()


async def test_credentials_are_checked_by_a_fetcher_before_they_are_saved(
    infra: Infra, db: asyncpg.Connection, tmp_path: Path
) -> None:
    stack = infra.stack(DAY)
    sim = await stack.start_simulator(accounts=3, listings=2, seed=SEED)
    live_acct, revoked_acct, other_acct = sim.accounts
    fetcher = stack.start("fetcher")
    fetcher_metrics = metrics_url(fetcher)
    admin = start_admin(stack)
    given = [a["cookie"] for a in sim.accounts]

    async with Tap(infra.nats.url) as tap:
        # --- live: saved, with the listing count --------------------------------------------
        lid = live_acct["account_id"]
        started = time.monotonic()
        status, body = await admin.call("POST", "/accounts?validate=true", account_body(live_acct))
        timings = {"live check and save": time.monotonic() - started}
        assert status == 201, body
        assert body["credentials_check"] == {
            "outcome": "live",
            "listings": len(live_acct["listings"]),
        }
        counts = await sim.requests(lid)
        assert counts["preflights"] == 1 and counts["ListingsSectionQuery"] == 1, counts
        assert counts.get("strikes", 0) == 0, counts
        row = await account_row(db, lid)
        assert row is not None and row["credentials_version"] == 1
        # The cookie given is saved (its auth group), not the _aaj the check's preflight
        # rotated: the account did not exist while the check ran, and nothing is saved back.
        cipher = CredentialCipher(infra.secret_keys.split(","))
        assert cipher.decrypt(row["credentials_encrypted"]) == cookies.intake(
            live_acct["cookie"], lid
        )
        # Without validate (the default), no check: no request to Airbnb.
        started = time.monotonic()
        status, body = await admin.call("POST", "/accounts", account_body(live_acct))
        timings["save without check"] = time.monotonic() - started
        assert status == 200 and body["credentials_check"] is None, body
        assert (await sim.requests(lid))["preflights"] == 1
        # PATCH with validate=true checks the new cookie (with the stored browser).
        status, body = await admin.call(
            "PATCH", f"/accounts/{lid}?validate=true", {"airbnb_cookie": live_acct["cookie"]}
        )
        assert status == 200, body
        assert body["credentials_check"]["outcome"] == "live"
        # validate=true without a cookie in the body checks nothing.
        status, body = await admin.call(
            "PATCH", f"/accounts/{lid}?validate=true", {"is_active": True}
        )
        assert status == 200 and body["credentials_check"] is None, body
        assert (await sim.requests(lid))["preflights"] == 2

        # --- revoked: 422 credentials_rejected, nothing saved ------------------------------
        rid = revoked_acct["account_id"]
        await sim.send("POST", f"/_sim/faults/revoke/{rid}")
        status, body = await admin.call(
            "POST", "/accounts?validate=true", account_body(revoked_acct)
        )
        assert status == 422, body
        assert body["error"] == "credentials_rejected"
        assert body["reason"] == "expired"
        assert "login" in body["detail"] and "nothing was saved" in body["detail"]
        assert [f["field"] for f in body["fields"]] == ["airbnb_cookie"]
        assert await account_row(db, rid) is None
        assert await graphql_requests(sim, rid) == 0  # the preflight stopped it
        # An existing account whose host logged out: a PATCH with the dead cookie changes
        # nothing (the row is the same, column for column).
        await sim.send("POST", f"/_sim/faults/revoke/{lid}")
        before = await account_row(db, lid)
        status, body = await admin.call(
            "PATCH",
            f"/accounts/{lid}?validate=true",
            {"airbnb_cookie": live_acct["cookie"], "user_agent": CHROME_UA + " x"},
        )
        assert status == 422 and body["reason"] == "expired", body
        assert await account_row(db, lid) == before
        events = await db.fetchval(
            "SELECT count(*) FROM airbnb.account_outbox WHERE account_id = $1", rid
        )
        assert events == 0

        # --- another host's session -------------------------------------------------------
        oid = other_acct["account_id"]
        # The admin's intake refuses it before any check (its _user_attributes).
        status, body = await admin.call(
            "POST",
            "/accounts?validate=true",
            account_body(other_acct, cookie=live_acct["cookie"]),
        )
        assert status == 422 and body["error"] == "validation_error", body
        assert [f["field"] for f in body["fields"]] == ["airbnb_cookie"]
        # The fetcher's own check, asked directly: other_host, and Airbnb is not asked.
        before_counts = {a["account_id"]: await sim.requests(a["account_id"]) for a in sim.accounts}
        nc = await nats.connect(infra.nats.url)
        try:
            request = CredentialCheck(
                account_id=oid,
                credentials=EncryptedCredentials(
                    cookie_token=cipher.encrypt(cookies.intake(live_acct["cookie"], lid)),
                    x_client_version="sim-web-1",
                    user_agent=CHROME_UA,
                ),
                requested_at=dt.datetime.now(dt.UTC),
            )
            reply = await nc.request(topology.CREDENTIAL_CHECKS, encode(request), timeout=10)
        finally:
            await nc.close()
        result = decode(CredentialCheckResult, reply.data)
        assert result.outcome == "other_host", result
        assert f"account {oid}" in result.reason
        after_counts = {a["account_id"]: await sim.requests(a["account_id"]) for a in sim.accounts}
        assert after_counts == before_counts
        assert await account_row(db, oid) is None

        # --- the counter, by outcome ---------------------------------------------------------
        assert await counter(fetcher_metrics, CHECKS, 'outcome="live"') == 2
        assert await counter(fetcher_metrics, CHECKS, 'outcome="expired"') == 2
        assert await counter(fetcher_metrics, CHECKS, 'outcome="other_host"') == 1

    # --- no fetcher: 503 with Retry-After at once, nothing saved ---------------------------
    # (after the tap: a subscriber of ">" would be a responder to NATS)
    assert fetcher.terminate() == 0
    started = time.monotonic()
    status, body = await admin.call("POST", "/accounts?validate=true", account_body(other_acct))
    elapsed = time.monotonic() - started
    assert status == 503, body
    assert body["error"] == "credentials_check_unavailable"
    assert "no fetcher is running" in body["detail"], body
    assert "nothing was saved" in body["detail"]
    timings["no fetcher, 503"] = elapsed
    assert elapsed < VALIDATE_TIMEOUT_S, elapsed  # NATS answers "no responders"
    assert await account_row(db, oid) is None

    # Headers are read through a raw request: Retry-After on the 503.
    async with (
        aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as http,
        http.post(
            f"{admin.base}/api/v1/accounts?validate=true", json=account_body(other_acct)
        ) as resp,
    ):
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) >= 1

    # --- a fetcher that takes the check and never answers: 503 after the timeout --------------
    hung = await nats.connect(infra.nats.url)
    try:
        taken: list[Msg] = []

        async def swallow(msg: Msg) -> None:
            taken.append(msg)

        await hung.subscribe(
            topology.CREDENTIAL_CHECKS, queue=topology.CREDENTIAL_CHECKS_QUEUE, cb=swallow
        )
        await hung.flush()
        started = time.monotonic()
        status, body = await admin.call("POST", "/accounts?validate=true", account_body(other_acct))
        elapsed = time.monotonic() - started
    finally:
        await hung.close()
    assert status == 503 and body["error"] == "credentials_check_unavailable", body
    assert f"within {VALIDATE_TIMEOUT_S:g} s" in body["detail"]
    timings[f"silent fetcher, 503 (timeout {VALIDATE_TIMEOUT_S:g} s)"] = elapsed
    print("credential check timings:", {k: f"{v:.3f}s" for k, v in timings.items()})
    assert VALIDATE_TIMEOUT_S - 0.5 <= elapsed < VALIDATE_TIMEOUT_S + 2, elapsed
    assert len(taken) == 1
    # What the admin sent holds the cookie only as a token.
    sent = decode(CredentialCheck, taken[0].data)
    assert sent.account_id == other_acct["account_id"]
    assert cookies.intake(other_acct["cookie"], other_acct["account_id"]) == cipher.decrypt(
        sent.credentials.cookie_token
    )
    assert await account_row(db, other_acct["account_id"]) is None

    # --- no cookie value anywhere in plaintext ------------------------------------------------
    hidden: set[str] = set()
    for cookie in given:
        hidden |= secret_values(cookie)
    assert len(hidden) >= 3 * len(given)
    logs = "".join(p.output() for p in stack.launcher.started)
    bodies = b"".join(tap.messages)
    assert topology.CREDENTIAL_CHECKS.encode() in bodies  # the tap saw the checks
    for value in hidden:
        assert value not in logs, "a cookie value is in a process's log"
        assert value.encode() not in bodies, "a cookie value is in a NATS message"
    assert "Traceback" not in admin.proc.output() + fetcher.output()


async def test_airbnbs_other_answers_are_rejected_expired_or_no_verdict(
    infra: Infra, db: asyncpg.Connection
) -> None:
    """What Airbnb answers past a live preflight: a 401 of the listings query is
    ``expired``; a 4xx of the page load (here a Cookie header longer than the simulator
    reads, as Airbnb's front refuses one) ``rejected``; 5xx past the retries no verdict
    (503, not 422). Nothing is saved in any of the three."""
    stack = infra.stack(DAY)
    sim = await stack.start_simulator(
        accounts=3, listings=1, seed=SEED + 1, SIM_MAX_FIELD_SIZE="2048"
    )
    expired, too_large, failing = sim.accounts
    await sim.faults({"expired_sessions": {expired["account_id"]: "http_401"}})
    stack.start("fetcher", AIRBNB_MAX_ATTEMPTS="2")
    admin = start_admin(stack)

    status, body = await admin.call("POST", "/accounts?validate=true", account_body(expired))
    assert status == 422 and body["reason"] == "expired", body
    assert (await sim.requests(expired["account_id"]))["preflights"] == 1  # it was live

    big = cookies.parse_cookie_header(too_large["cookie"])
    big["bev"] = "b" * 2500  # an auth cookie, so kept: the Cookie header passes 2,048 bytes
    status, body = await admin.call(
        "POST",
        "/accounts?validate=true",
        account_body(too_large, cookies.format_cookie_header(big)),
    )
    assert status == 422 and body["reason"] == "rejected", body
    assert "400" in body["detail"], body

    await sim.faults({"server_error_rate": 1.0})
    started = time.monotonic()
    status, body = await admin.call("POST", "/accounts?validate=true", account_body(failing))
    assert status == 503 and body["error"] == "credentials_check_unavailable", body
    assert "Airbnb did not give an answer" in body["detail"], body
    assert time.monotonic() - started < VALIDATE_TIMEOUT_S + 1
    ids = [a["account_id"] for a in sim.accounts]
    assert (
        await db.fetchval("SELECT count(*) FROM airbnb.accounts WHERE account_id = ANY($1)", ids)
        == 0
    )


async def test_a_check_during_a_sync_of_the_account_leaves_the_sync_alone(
    infra: Infra, db: asyncpg.Connection
) -> None:
    """A check has a jar of its own: a sync of the same account running meanwhile keeps
    its session (no strike), succeeds, and saves its own rotated cookies."""
    stack = infra.stack(DAY)
    sim = await stack.start_simulator(
        accounts=1, listings=3, seed=SEED + 2, faults={"latency_ms": {"mean": 40, "jitter": 10}}
    )
    (account,) = sim.accounts
    aid = account["account_id"]
    stack.start("writer")
    stack.start("fetcher")
    admin = start_admin(stack)
    status, body = await admin.call("POST", "/accounts?validate=true", account_body(account))
    assert status == 201 and body["credentials_check"]["listings"] == 3, body
    stack.start("scheduler")  # backfills the new account at once

    deadline = time.monotonic() + 30
    while (
        await db.fetchval(
            "SELECT count(*) FROM airbnb.sync_jobs WHERE account_id = $1 AND status = 'running'",
            aid,
        )
        == 0
    ):
        assert time.monotonic() < deadline, "the backfill never ran"
        await asyncio.sleep(0.05)
    status, body = await admin.call(
        "PATCH", f"/accounts/{aid}?validate=true", {"airbnb_cookie": account["cookie"]}
    )
    assert status == 200 and body["credentials_check"]["outcome"] == "live", body
    running = await db.fetchval("SELECT status FROM airbnb.sync_jobs WHERE account_id = $1", aid)
    assert running == "running"  # the check ran while the sync did

    (job,) = await wait_for_jobs(db, [aid], scrape_day=DAY)
    assert job["status"] == "succeeded", job
    counts = await sim.requests(aid)
    assert counts["strikes"] == 0 and counts["preflights"] == 3, counts  # create, sync, check
    deadline = time.monotonic() + 20
    while (row := await account_row(db, aid)) is not None and row["credentials_version"] < 2:
        assert time.monotonic() < deadline, "the sync's rotation was not saved"
        await asyncio.sleep(0.2)


def check_request(account: dict[str, Any], cipher: CredentialCipher) -> bytes:
    """A CredentialCheck as the admin sends it, for a test that asks the fetcher itself."""
    return encode(
        CredentialCheck(
            account_id=account["account_id"],
            credentials=EncryptedCredentials(
                cookie_token=cipher.encrypt(
                    cookies.intake(account["cookie"], account["account_id"])
                ),
                x_client_version="sim-web-1",
                user_agent=CHROME_UA,
            ),
            requested_at=dt.datetime.now(dt.UTC),
        )
    )


async def test_checks_are_bounded_in_number_and_in_time(infra: Infra) -> None:
    """One slot (FETCHER_CHECK_CONCURRENCY=1) and four waiting per slot: of six checks at
    once the sixth is refused at once; Airbnb slow past FETCHER_CHECK_TIMEOUT_S is an
    ``unavailable`` answer within it (the listings query is cut off, not waited for)."""
    stack = infra.stack(DAY)
    sim = await stack.start_simulator(
        accounts=1, listings=1, seed=SEED + 3, faults={"latency_ms": {"mean": 700, "jitter": 0}}
    )
    (account,) = sim.accounts
    stack.start("fetcher", FETCHER_CHECK_CONCURRENCY="1", FETCHER_CHECK_TIMEOUT_S="2")
    cipher = CredentialCipher(infra.secret_keys.split(","))
    nc = await nats.connect(infra.nats.url)
    try:

        async def ask() -> tuple[CredentialCheckResult, float]:
            started = time.monotonic()
            reply = await nc.request(
                topology.CREDENTIAL_CHECKS, check_request(account, cipher), timeout=10
            )
            return decode(CredentialCheckResult, reply.data), time.monotonic() - started

        answers = await asyncio.gather(*(ask() for _ in range(6)))
    finally:
        await nc.close()
    outcomes = [r.outcome for r, _ in answers]
    busy = [(r, s) for r, s in answers if "busy" in r.reason]
    print(
        "six checks at once, one slot:",
        [(r.outcome, r.reason[:40], f"{s:.2f}s") for r, s in answers],
    )
    assert len(busy) == 1 and busy[0][0].outcome == "unavailable" and busy[0][1] < 0.5, answers
    # One at a time, 0.7 s each: two or three fit in the 2 s deadline, the others do not.
    assert 1 <= outcomes.count("live") <= 3, answers
    late = [
        (r, s) for r, s in answers if r.outcome == "unavailable" and r not in [b for b, _ in busy]
    ]
    assert late and all("within 2 s" in r.reason for r, _ in late), answers
    assert all(s < 2 + 1 for _, s in answers), answers
    # Never two at once at Airbnb: the simulator saw the live ones and the cut-off one(s).
    counts = await sim.requests(account["account_id"])
    assert counts["ListingsSectionQuery"] <= outcomes.count("live") + 2, counts


async def test_a_customer_key_gets_no_check_of_another_customers_account(
    infra: Infra, db: asyncpg.Connection
) -> None:
    """validate=true with a customer key on an account of another customer is the write's
    404, before any check: the fetcher is not asked and Airbnb sees nothing. Its own
    customer's new account is checked and saved."""
    stack = infra.stack(DAY)
    sim = await stack.start_simulator(accounts=2, listings=1, seed=SEED + 4)
    account, own = sim.accounts
    aid = account["account_id"]
    stack.start("fetcher")
    admin = start_admin(stack)
    status, body = await admin.call(
        "POST", "/accounts", {**account_body(account), "customer_id": "theirs"}
    )
    assert status == 201, body
    made = stack.launcher.run(["keys", "create", "--name", "mine", "--scope", "customer:mine"])
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()

    async def call(method: str, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(headers={"X-API-Key": key}) as http,
            http.request(method, f"{admin.base}/api/v1{path}", json=payload) as resp,
        ):
            return resp.status, await resp.json()

    before = await account_row(db, aid)
    status, body = await call(
        "PATCH", f"/accounts/{aid}?validate=true", {"airbnb_cookie": account["cookie"]}
    )
    assert status == 404 and body["error"] == "not_found", body
    status, body = await call("POST", "/accounts?validate=true", account_body(account))
    assert status == 404 and body["error"] == "not_found", body
    assert (await sim.requests(aid)).get("preflights", 0) == 0
    assert await account_row(db, aid) == before
    # Its own customer's new account is checked as with an admin key.
    status, body = await call("POST", "/accounts?validate=true", account_body(own))
    assert status == 201, body
    assert body["customer_id"] == "mine" and body["credentials_check"]["outcome"] == "live"
    assert key not in admin.proc.output()
