"""``sync-airbnb sync ACCOUNT_ID [--full] [--wait]``: the command against a running stack
(scheduler, fetcher, writer and the simulator as real processes, on a NATS server and a
database of this module's own). Merging job snapshots is in tests/unit/test_sync_command.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.infra import (
    PostgresServer,
    ServiceLauncher,
)
from tests.stack import Simulator, Stack, isolated_stack, wait_for_jobs

TODAY = dt.date(2025, 7, 11)


def test_settings_error_is_one_line_and_exit_2(bare_launcher: ServiceLauncher) -> None:
    result = bare_launcher.run(["sync", "123"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sync-airbnb sync: configuration error: NATS_URL is required but not set"
    ]


def test_unreachable_nats_exits_1(bare_launcher: ServiceLauncher) -> None:
    result = bare_launcher.run(["sync", "123", "--wait"], {"NATS_URL": "nats://127.0.0.1:1"})
    assert result.returncode == 1
    assert "cannot reach NATS at nats://127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


# --- against a running stack --------------------------------------------------------------


@pytest.fixture
async def stack(
    tmp_path: Path, postgres_server: PostgresServer, secret_keys: str
) -> AsyncIterator[Stack]:
    """Its own NATS and database: its scheduler's start-up backfill sees only its accounts."""
    async with isolated_stack(
        tmp_path, postgres_server, secret_keys, TODAY, database_prefix="sync_airbnb_sync_cmd"
    ) as stack:
        yield stack


async def sync(stack: Stack, *args: str, **env: str) -> tuple[int, str, str]:
    result = await asyncio.to_thread(
        stack.launcher.run, ["sync", *args], stack.service_env(**env), 120
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.slow
async def test_sync_wait_succeeds_and_an_expired_session_fails_with_the_reason(
    stack: Stack,
) -> None:
    sim: Simulator = await stack.start_simulator(accounts=3, listings=2, seed=23)
    healthy, rejected, expiring = (a["account_id"] for a in sim.accounts)
    await sim.send("PUT", "/_sim/faults", {"expired_sessions": {rejected: "http_401"}})
    conn = await asyncpg.connect(stack.database_url)
    try:
        await stack.register(conn, sim.accounts)
        stack.start("writer")
        stack.start("fetcher")
        stack.start("scheduler")
        # The scheduler's start-up backfills first, so what follows is deterministic.
        await wait_for_jobs(conn, [healthy, rejected, expiring], scrape_day=TODAY)
    finally:
        await conn.close()

    # A new (incremental) job, followed to its end.
    code, out, err = await sync(stack, healthy, "--wait")
    assert code == 0, err
    job_id, summary = out.strip().splitlines()
    uuid.UUID(job_id)
    assert re.fullmatch(rf"job {job_id} succeeded: 2 of 2 listings, [\d,]+ rows written", summary)

    # Again the same day: the same job, already ended, read from DATABASE_URL at once.
    code, out, _ = await sync(stack, healthy, "--wait")
    assert code == 0
    assert out.splitlines()[0] == job_id

    # And without DATABASE_URL: the scheduler's reply says the job already ended, so there
    # is nothing to wait for (no notification would ever come).
    started = time.monotonic()
    code, out, err = await sync(stack, healthy, "--wait", DATABASE_URL="")
    assert code == 0, err
    assert out.splitlines() == [job_id, f"job {job_id} already ended today: succeeded"]
    assert time.monotonic() - started < 10

    # A session that expired since the backfill: Airbnb refuses it, the job fails, and the
    # reason is printed (never the cookie).
    await sim.send(
        "PUT", "/_sim/faults", {"expired_sessions": {rejected: "http_401", expiring: "http_401"}}
    )
    code, out, err = await sync(stack, expiring, "--wait")
    assert code == 1, out + err
    assert re.search(r"job \S+ failed: .*authentication failed", err), err
    assert sim.accounts[2]["cookie"] not in out + err

    # The account whose backfill already failed so: the scheduler refuses it, saying why.
    code, out, err = await sync(stack, rejected, "--wait")
    assert (code, out) == (1, "")
    assert "refused (needs_credentials)" in err

    # An unknown account: refused, with the scheduler's detail.
    code, out, err = await sync(stack, "987654321")
    assert (code, out) == (1, "")
    assert "refused (not_found)" in err


@pytest.mark.slow
async def test_sync_wait_sent_while_the_scheduler_is_stopped_ends_in_its_job_after_restart(
    stack: Stack,
) -> None:
    """Issue 13, item 2: `sync --wait` stores a durable trigger; the scheduler stopped when
    it was sent and started 20 s later queues its job, which the command follows to the end."""
    sim: Simulator = await stack.start_simulator(accounts=1, listings=2, seed=29)
    (account,) = (a["account_id"] for a in sim.accounts)
    conn = await asyncpg.connect(stack.database_url)
    try:
        await stack.register(conn, sim.accounts)
        stack.start("writer")
        stack.start("fetcher")
        scheduler = stack.start("scheduler")
        (backfill,) = await wait_for_jobs(conn, [account], scrape_day=TODAY)
        assert backfill["status"] == "succeeded"
        assert scheduler.terminate(timeout=10) == 0  # stopped: nothing handles triggers now

        waiting = asyncio.create_task(sync(stack, account, "--wait"))
        await asyncio.sleep(20)
        assert not waiting.done()
        assert [
            j["job_id"]
            for j in await conn.fetch(
                "SELECT job_id FROM airbnb.sync_jobs WHERE account_id = $1", account
            )
        ] == [backfill["job_id"]]
        stack.start("scheduler")
        code, out, err = await asyncio.wait_for(waiting, timeout=90)
        assert code == 0, err
        job_id, summary = out.strip().splitlines()
        assert re.fullmatch(
            rf"job {job_id} succeeded: 2 of 2 listings, [\d,]+ rows written", summary
        )
        assert "no scheduler has handled trigger" in err  # it said why it was waiting
        job = await conn.fetchrow(
            "SELECT * FROM airbnb.sync_jobs WHERE job_id = $1", uuid.UUID(job_id)
        )
        assert (job["trigger"], job["kind"]) == ("manual", "incremental")
        recorded = await conn.fetchval(
            "SELECT job_id FROM airbnb.sync_triggers WHERE account_id = $1", account
        )
        assert str(recorded) == job_id
    finally:
        await conn.close()
