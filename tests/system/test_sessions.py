"""Airbnb sessions that stay alive: the whole stack against the simulator's session rules.

The simulator plays Airbnb's lifecycle (services/simulator, docs/sessions.md): an
``_aaj`` lives for the day it was issued and the next, a GraphQL request without a
``bm_sv`` from that day's page load or without the dashboard's headers is a strike,
three strikes end the session. Each test runs the real admin, scheduler, fetcher and
writer processes; days pass by restarting the simulator (with its state directory)
and the scheduler with the next ``SYNC_AIRBNB_TODAY``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nats
import pytest
from nats.js.api import StreamInfo

from shared import topology
from shared.airbnb import cookies
from shared.crypto import CredentialCipher
from shared.messages import CredentialsRotated, decode
from tests.infra import ServiceProcess, free_port
from tests.stack import CHROME_UA, Simulator, Stack, wait_for_jobs
from tests.system import test_data_path
from tests.system.test_data_path import Infra

# The data-path tests' fixtures: a nats-server and a database of each test's own.
infra = test_data_path.infra
db = test_data_path.db

pytestmark = pytest.mark.slow

DAY_1 = dt.date(2025, 7, 11)
DAYS = 30
SEED = 41
API_KEY = "sessions-test-key"
# Every request of a day's sync is fast: the session rules, not pacing, are under test.
SMALL_WINDOWS = {"FIRST_RUN_WEEKS_BACK": "2", "INCREMENTAL_WEEKS_BACK": "0", "WEEKS_AHEAD": "1"}
DAILY_RUN_NOW = {"SCHEDULE_CRON": "*/2 * * * * *"}


@dataclass
class Admin:
    proc: ServiceProcess
    base: str

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as http,
            http.request(method, f"{self.base}/api/v1{path}", json=body) as resp,
        ):
            return resp.status, await resp.json(content_type=None)


def start_admin(stack: Stack) -> Admin:
    port = free_port()
    proc = stack.start("admin", ADMIN_PORT=str(port), ADMIN_API_KEYS=API_KEY)
    return Admin(proc, f"http://127.0.0.1:{port}")


def metrics_url(proc: ServiceProcess) -> str:
    m = proc.wait_for_log(r"ready, listening on (http://[\d.]+:\d+)")
    return f"{m.group(1)}/metrics"


async def counter(url: str, name: str, labels: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        text = await resp.text()
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} ([\d.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def create_accounts(admin: Admin, sim: Simulator) -> None:
    for account in sim.accounts:
        status, body = await admin.call(
            "POST",
            "/accounts",
            {
                "account_id": account["account_id"],
                # What the host's browser holds: auth, bot-manager and analytics cookies.
                "airbnb_cookie": account["cookie"],
                "x_client_version": "sim-web-1",
                "user_agent": CHROME_UA,
            },
        )
        assert status == 201, body


async def daily_stack(
    infra: Infra, tmp_path: Path, **fetcher_env: str
) -> tuple[Stack, Simulator, Admin, ServiceProcess, Path]:
    """Day 1: the simulator (keeping its sessions in a state dir), a writer, a fetcher, the
    admin, the accounts created through it with the hosts' browser cookies, a scheduler."""
    stack = infra.stack(DAY_1)
    state_dir = tmp_path / "sim-state"
    sim = await stack.start_simulator(
        accounts=2, listings=2, seed=SEED, SIM_STATE_DIR=str(state_dir)
    )
    stack.start("writer")
    stack.start("fetcher", **fetcher_env)
    admin = start_admin(stack)
    await create_accounts(admin, sim)
    scheduler = stack.start("scheduler", **SMALL_WINDOWS)
    return stack, sim, admin, scheduler, state_dir


async def next_day(
    stack: Stack, sim: Simulator, scheduler: ServiceProcess, state_dir: Path
) -> tuple[Simulator, ServiceProcess]:
    """Stop the simulator and the scheduler, and start both again on the following day."""
    assert scheduler.terminate() == 0
    assert sim.proc.terminate() == 0
    stack.today += dt.timedelta(days=1)
    port = int(sim.url.rsplit(":", 1)[1])
    sim = await stack.start_simulator(
        accounts=2, listings=2, seed=SEED, port=port, SIM_STATE_DIR=str(state_dir)
    )
    scheduler = stack.start("scheduler", **SMALL_WINDOWS, **DAILY_RUN_NOW)
    return sim, scheduler


async def accounts_row(db: asyncpg.Connection, ids: list[str]) -> dict[str, asyncpg.Record]:
    rows = await db.fetch(
        "SELECT * FROM airbnb.accounts WHERE account_id = ANY($1) ORDER BY account_id", ids
    )
    return {r["account_id"]: r for r in rows}


async def stream_payloads(nats_url: str) -> list[tuple[str, bytes]]:
    """Every message of every stream, raw: (subject, body)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        out: list[tuple[str, bytes]] = []
        streams: list[StreamInfo] = await js.streams_info()
        for info in streams:
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(info.config.name, seq)
                except Exception:  # deleted (work queue acked) or purged
                    continue
                out.append((msg.subject or "", msg.data or b""))
        return out
    finally:
        await nc.close()


def secret_values(cookie_header: str) -> set[str]:
    """The values of a cookie worth hiding: every auth cookie long enough to be a token."""
    return {
        v
        for v in cookies.auth_only(cookies.parse_cookie_header(cookie_header)).values()
        if len(v) >= 12
    }


async def test_thirty_days_of_daily_syncs_keep_every_session_alive(
    infra: Infra, db: asyncpg.Connection, tmp_path: Path
) -> None:
    stack, sim, admin, scheduler, state_dir = await daily_stack(infra, tmp_path)
    ids = [a["account_id"] for a in sim.accounts]
    given = {a["account_id"]: a["cookie"] for a in sim.accounts}  # the only cookies given

    versions: list[int] = []
    statuses: dict[dt.date, list[str]] = {}
    for day_no in range(1, DAYS + 1):
        if day_no > 1:
            sim, scheduler = await next_day(stack, sim, scheduler, state_dir)
        jobs = await wait_for_jobs(db, ids, scrape_day=stack.today, timeout=90)
        statuses[stack.today] = [j["status"] for j in jobs]
        assert statuses[stack.today] == ["succeeded"] * len(ids), (day_no, jobs)
        counts = await sim.requests()
        for aid in ids:
            assert counts[aid]["strikes"] == 0, (day_no, aid, counts[aid])
            assert counts[aid]["preflights"] >= 1, (day_no, aid, counts[aid])
        # The rotation is saved after the job's last listing, so wait for it to land.
        deadline = time.monotonic() + 20
        while True:
            rows = await accounts_row(db, ids)
            if all(r["credentials_rotated_at"] is not None for r in rows.values()) and (
                not versions or min(r["credentials_version"] for r in rows.values()) > versions[-1]
            ):
                break
            assert time.monotonic() < deadline, f"day {day_no}: no rotation saved"
            await asyncio.sleep(0.2)
        assert all(r["credentials_invalid_at"] is None for r in rows.values())
        versions.append(min(r["credentials_version"] for r in rows.values()))

    assert len(statuses) == DAYS
    # Every day's preflight rotated _aaj, and every rotation was saved: the version grew
    # each day, from 1 when the operator gave the cookie.
    assert versions == sorted(versions) and versions[-1] >= DAYS, versions

    # --- no leaks: no cookie value, given or rotated, anywhere in plaintext ---------------
    cipher = CredentialCipher(infra.secret_keys.split(","))
    messages = await stream_payloads(infra.nats.url)
    rotated = [
        cipher.decrypt(decode(CredentialsRotated, body).cookie_token)
        for subject, body in messages
        if subject == topology.SYNC_CREDENTIALS
    ]
    assert len(rotated) >= DAYS * len(ids) - 2  # every day's, bar a redelivery's duplicate
    stored = {aid: cipher.decrypt(r["credentials_encrypted"]) for aid, r in rows.items()}
    hidden: set[str] = set()
    for cookie in [*given.values(), *rotated, *stored.values()]:
        hidden |= secret_values(cookie)
    assert len(hidden) > DAYS  # the rotated _aaj of every day, at least
    for aid in ids:
        # What is stored is the auth group only, and it is no longer the given cookie.
        assert set(cookies.parse_cookie_header(stored[aid])) <= set(cookies.AUTH_COOKIES)
        assert stored[aid] != cookies.intake(given[aid], aid)

    logs = "".join(p.output() for p in stack.launcher.started if p.args[0] != "simulator")
    logs += "".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*.log")))  # noqa: ASYNC240
    bodies = b"".join(body for _, body in messages)
    encoded = base64.b64encode(bodies)  # dead letters carry payloads as base64
    api = ""
    for path in ["/accounts", *(f"/accounts/{aid}" for aid in ids)]:
        for aid in ids:
            api += repr(await admin.call("GET", path))
            api += repr(await admin.call("GET", f"/accounts/{aid}/syncs"))
    for value in hidden:
        assert value not in logs, "a cookie value is in a log"
        assert value.encode() not in bodies, "a cookie value is in a NATS message"
        assert value.encode() not in encoded
        assert value not in api, "a cookie value is in an API response"


async def test_the_cookie_replayed_verbatim_loses_the_session_by_day_two(
    infra: Infra, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # The old client, test-only: the stored cookie verbatim, no preflight, nothing saved.
    stack, sim, admin, scheduler, state_dir = await daily_stack(
        infra, tmp_path, AIRBNB_SESSION_MODE="replay"
    )
    ids = [a["account_id"] for a in sim.accounts]

    failed: dict[str, asyncpg.Record] = {}
    for day_no in (1, 2):
        if day_no > 1:
            sim, scheduler = await next_day(stack, sim, scheduler, state_dir)
            await asyncio.sleep(5)  # a daily run or two: marked accounts get no job
        pending = [aid for aid in ids if aid not in failed]
        if pending:
            for job in await wait_for_jobs(db, pending, scrape_day=stack.today, timeout=90):
                if job["status"] == "failed":
                    failed[job["account_id"]] = job
        counts = await sim.requests()
        assert any(counts.get(aid, {}).get("strikes", 0) > 0 for aid in ids), counts

    assert set(failed) == set(ids), "every replayed session ends by day 2"
    for job in failed.values():
        assert job["scrape_day"] <= DAY_1 + dt.timedelta(days=1)
        assert "authentication failed" in job["error"], job["error"]
    rows = await accounts_row(db, ids)
    assert all(r["credentials_invalid_at"] is not None for r in rows.values())
    assert all(r["credentials_version"] == 1 for r in rows.values())  # nothing saved back
    for aid in ids:
        status, body = await admin.call("GET", f"/accounts/{aid}")
        assert status == 200 and body["needs_credentials"] is True


async def wait_job(
    db: asyncpg.Connection, account_id: str, after: dt.datetime, timeout: float = 60
) -> asyncpg.Record:
    """The first job of the account created after ``after``, once it is final."""
    deadline = time.monotonic() + timeout
    while True:
        job = await db.fetchrow(
            "SELECT * FROM airbnb.sync_jobs WHERE account_id = $1 AND created_at > $2 "
            "ORDER BY created_at LIMIT 1",
            account_id,
            after,
        )
        if job is not None and job["status"] in ("succeeded", "partial", "failed"):
            return job
        assert time.monotonic() < deadline, f"no final job after {after}: {job}"
        await asyncio.sleep(0.2)


async def trigger(admin: Admin, account_id: str) -> None:
    """POST /sync, retried while the scheduler is not there yet (503)."""
    deadline = time.monotonic() + 30
    while True:
        status, body = await admin.call("POST", f"/accounts/{account_id}/sync", {"full": False})
        if status == 202:
            return
        assert status == 503 and time.monotonic() < deadline, (status, body)
        await asyncio.sleep(0.5)


async def test_a_revoked_session_fails_at_the_preflight_and_a_new_cookie_brings_it_back(
    infra: Infra, db: asyncpg.Connection
) -> None:
    stack = infra.stack(DAY_1)
    sim = await stack.start_simulator(accounts=1, listings=2, seed=SEED)
    (account,) = sim.accounts
    aid = account["account_id"]
    stack.start("writer")
    stack.start("fetcher")
    admin = start_admin(stack)
    await create_accounts(admin, sim)
    stack.start("scheduler", **SMALL_WINDOWS)
    (backfill,) = await wait_for_jobs(db, [aid], scrape_day=DAY_1)
    assert backfill["status"] == "succeeded"

    # The host logs out everywhere; the next sync meets a dead session.
    await sim.send("POST", f"/_sim/faults/revoke/{aid}")
    await sim.send("DELETE", "/_sim/requests")
    before = await db.fetchval("SELECT now()")
    await trigger(admin, aid)
    job = await wait_job(db, aid, before)
    assert job["status"] == "failed"
    assert "authentication failed" in job["error"] and "login_redirect" in job["error"]
    counts = (await sim.requests())[aid]
    assert counts["preflights"] == 1
    graphql = sum(
        counts.get(op, 0) for op in ("ListingsSectionQuery", "ChartQuery", "ListOfMetricsQuery")
    )
    assert graphql == 0
    status, body = await admin.call("GET", f"/accounts/{aid}")
    assert body["needs_credentials"] is True

    # The host logs in again; the operator gives the new cookie; the mark is cleared.
    fresh = await sim.send("POST", f"/_sim/accounts/{aid}/login")
    status, body = await admin.call("PATCH", f"/accounts/{aid}", {"airbnb_cookie": fresh["cookie"]})
    assert status == 200, body
    assert body["needs_credentials"] is False
    after_patch = await db.fetchval("SELECT now()")
    await trigger(admin, aid)
    job = await wait_job(db, aid, after_patch)
    assert job["status"] == "succeeded", job


async def test_credentials_given_during_a_rotating_sync_win_and_the_rotation_is_dropped(
    infra: Infra, db: asyncpg.Connection
) -> None:
    stack = infra.stack(DAY_1)
    sim = await stack.start_simulator(accounts=1, listings=1, seed=SEED)
    (account,) = sim.accounts
    aid = account["account_id"]
    writer = stack.start("writer")
    # Paced, so the sync is still running when the operator acts.
    stack.start("fetcher", AIRBNB_MIN_INTERVAL_S="0.25", AIRBNB_PACING_JITTER="0")
    admin = start_admin(stack)
    await create_accounts(admin, sim)
    dropped_before = await counter(
        metrics_url(writer), "sync_airbnb_credential_rotations_total", 'outcome="dropped"'
    )
    stack.start("scheduler", **SMALL_WINDOWS)
    await wait_for_jobs(db, [aid], scrape_day=DAY_1, statuses=("running",), timeout=30)

    # The operator pastes the cookie again from the host's browser (the same session, a
    # different cookie: its bev was renewed), while the sync runs on the old version.
    given = cookies.parse_cookie_header(account["cookie"])
    given["bev"] = f"1750000000_{secrets.token_hex(8)}"
    operators = "; ".join(f"{k}={v}" for k, v in given.items())
    status, body = await admin.call("PATCH", f"/accounts/{aid}", {"airbnb_cookie": operators})
    assert status == 200 and body["credentials_version"] == 2, body

    (job,) = await wait_for_jobs(db, [aid], scrape_day=DAY_1)
    assert job["status"] == "succeeded", job
    url = metrics_url(writer)
    deadline = time.monotonic() + 20
    while await counter(url, "sync_airbnb_credential_rotations_total", 'outcome="dropped"') == (
        dropped_before
    ):
        assert time.monotonic() < deadline, "the sync's rotation was never handled"
        await asyncio.sleep(0.2)
    assert (
        await counter(url, "sync_airbnb_credential_rotations_total", 'outcome="dropped"')
        == dropped_before + 1
    )
    row = (await accounts_row(db, [aid]))[aid]
    cipher = CredentialCipher(infra.secret_keys.split(","))
    assert row["credentials_version"] == 2
    assert cipher.decrypt(row["credentials_encrypted"]) == cookies.intake(operators, aid)
    assert row["credentials_rotated_at"] is None
