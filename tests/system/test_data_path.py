"""The data path end to end: scheduler, fetchers and writers as real processes, the
simulator as Airbnb, a NATS server and a database of the test's own.

Each test gets a fresh nats-server and a fresh database, so the daily runs and
start-up backfills of its scheduler see only its own accounts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nats
import pytest

from shared import topology
from shared.airbnb.payloads import plan_listing_requests
from shared.airbnb.windows import DateRange, sync_window
from shared.messages import EncryptedCredentials, SyncRequest, encode
from tests.expected import differences, expected_tables
from tests.infra import (
    NatsServer,
    PostgresServer,
    ServiceLauncher,
    ServiceProcess,
    start_embedded_postgres,
    wait_until,
)
from tests.stack import (
    FAST_RECOVERY_ENV,
    Simulator,
    Stack,
    dump_rows,
    isolated_stack,
    wait_for_jobs,
)

pytestmark = pytest.mark.slow

TODAY = dt.date(2025, 7, 11)  # the scrape day of the captures, a Friday
SEED = 7


@dataclass
class Infra:
    nats: NatsServer
    postgres: PostgresServer
    database_url: str
    launcher: ServiceLauncher
    secret_keys: str

    def stack(self, today: dt.date = TODAY) -> Stack:
        return Stack(self.launcher, self.database_url, self.secret_keys, today)


@pytest.fixture
async def infra(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_server: PostgresServer,
    secret_keys: str,
) -> AsyncIterator[Infra]:
    own_postgres = request.node.get_closest_marker("own_postgres") is not None
    pg = start_embedded_postgres(tmp_path / "pg") if own_postgres else postgres_server
    try:
        async with isolated_stack(
            tmp_path,
            pg,
            secret_keys,
            TODAY,
            database_prefix="sync_airbnb_e2e",
            env=FAST_RECOVERY_ENV,
        ) as stack:
            assert stack.nats is not None
            yield Infra(stack.nats, pg, stack.database_url, stack.launcher, secret_keys)
    finally:
        if own_postgres:
            pg.stop()


@pytest.fixture
async def db(infra: Infra) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(infra.database_url)
    yield conn
    await conn.close()


def listing_ids(account: dict[str, Any]) -> list[str]:
    return [listing["listing_id"] for listing in account["listings"]]


def plan_size(account: dict[str, Any], window: DateRange, today: dt.date) -> int:
    """Requests one sync of the account makes: the listings query plus every slice."""
    return 1 + sum(len(plan_listing_requests(lid, window, today)) for lid in listing_ids(account))


async def assert_rows_as_simulated(
    db: asyncpg.Connection,
    sim: Simulator,
    accounts: list[dict[str, Any]],
    scrape_day: dt.date,
    window: DateRange,
    skip_listings: frozenset[str] = frozenset(),
) -> None:
    scraped = dt.datetime(scrape_day.year, scrape_day.month, scrape_day.day, tzinfo=dt.UTC)
    rows = await dump_rows(db, [a["account_id"] for a in accounts])
    for table, actual in rows.items():
        actual = {k: v for k, v in actual.items() if k[-1] == scraped}
        expected: dict[Any, Any] = {}
        for account in accounts:
            ids = [lid for lid in listing_ids(account) if lid not in skip_listings]
            expected |= expected_tables(sim.seed, account["account_id"], ids, scrape_day, window)[
                table
            ]
        assert expected, table
        assert differences(expected, actual) == [], table


async def wait_until_idle(nats_url: str, timeout: float = 60) -> None:
    """Until no request and no result has waited for a fetcher or a writer for 1.5 s."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        quiet_since: float | None = None

        async def quiet_for_a_while() -> bool:
            nonlocal quiet_since
            busy = 0
            for consumer in (topology.FETCHER_REQUESTS, topology.WRITER_RESULTS):
                info = await js.consumer_info(consumer.stream, consumer.durable)
                busy += info.num_pending + info.num_ack_pending
            if busy:
                quiet_since = None
                return False
            quiet_since = quiet_since or time.monotonic()
            return time.monotonic() - quiet_since > 1.5

        await wait_until(quiet_for_a_while, within=timeout, what="the data path to go idle")
    finally:
        await nc.close()


async def dead_letters(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(topology.DEAD_LETTER_STREAM.name)
        return info.state.messages
    finally:
        await nc.close()


async def table_snapshot(db: asyncpg.Connection, account_ids: list[str]) -> dict[str, Any]:
    rows = await dump_rows(db, account_ids)
    jobs = await db.fetch(
        "SELECT * FROM airbnb.sync_jobs WHERE account_id = ANY($1) ORDER BY job_id", account_ids
    )
    listings = await db.fetch(
        "SELECT l.* FROM airbnb.sync_job_listings l JOIN airbnb.sync_jobs j USING (job_id) "
        "WHERE j.account_id = ANY($1) ORDER BY l.job_id, l.airbnb_listing_id",
        account_ids,
    )
    accounts = await db.fetch(
        "SELECT * FROM airbnb.accounts WHERE account_id = ANY($1) ORDER BY account_id",
        account_ids,
    )
    return {
        "rows": rows,
        "jobs": [dict(r) for r in jobs],
        "job_listings": [dict(r) for r in listings],
        "accounts": [dict(r) for r in accounts],
    }


async def replay_everything(infra: Infra, db: asyncpg.Connection) -> int:
    """Publish every message of the results stream again, and every sync request again,
    without message ids so that JetStream cannot drop them as duplicates."""
    nc = await nats.connect(infra.nats.url)
    replayed = 0
    try:
        js = nc.jetstream()
        info = await js.stream_info(topology.SYNC_RESULTS_STREAM.name)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(topology.SYNC_RESULTS_STREAM.name, seq)
            await js.publish(msg.subject, msg.data)
            replayed += 1
        # The request stream is a work queue (acked requests are gone): rebuild them.
        for job in await db.fetch(
            "SELECT j.*, a.credentials_encrypted, a.x_client_version, a.user_agent "
            "FROM airbnb.sync_jobs j JOIN airbnb.accounts a USING (account_id)"
        ):
            request = SyncRequest(
                job_id=job["job_id"],
                account_id=job["account_id"],
                kind=job["kind"],
                trigger=job["trigger"],
                scrape_day=job["scrape_day"],
                window_start=job["window_start"],
                window_end=job["window_end"],
                credentials=EncryptedCredentials(
                    cookie_token=job["credentials_encrypted"],
                    x_client_version=job["x_client_version"],
                    user_agent=job["user_agent"],
                ),
                requested_at=job["created_at"],
            )
            await js.publish(topology.SYNC_REQUESTED, encode(request))
            replayed += 1
    finally:
        await nc.close()
    return replayed


async def test_first_sync_then_replay_then_incremental_next_day(
    infra: Infra, db: asyncpg.Connection
) -> None:
    stack = infra.stack()
    sim = await stack.start_simulator(accounts=3, listings=4, seed=SEED)
    accounts = sim.accounts
    ids = [a["account_id"] for a in accounts]
    await stack.register(db, accounts)
    stack.start("writer")
    stack.start("fetcher")
    stack.start("fetcher")
    scheduler = stack.start("scheduler")  # backfills never-synced accounts at start

    jobs = await wait_for_jobs(db, ids, scrape_day=TODAY)
    first_window = sync_window(TODAY, first_run=True)
    assert [j["status"] for j in jobs] == ["succeeded"] * 3, jobs
    for job in jobs:
        assert (job["kind"], job["listings_total"], job["listings_succeeded"]) == ("full", 4, 4)
        assert (job["window_start"], job["window_end"]) == (first_window.start, first_window.end)
        assert job["rows_written"] > 0
    await assert_rows_as_simulated(db, sim, accounts, TODAY, first_window)
    synced = await db.fetch(
        "SELECT last_sync_at FROM airbnb.accounts WHERE account_id = ANY($1)", ids
    )
    assert all(r["last_sync_at"] is not None for r in synced)
    counts = await sim.requests()
    for account in accounts:
        assert counts[account["account_id"]]["total"] == plan_size(account, first_window, TODAY)

    # Replaying every message a second time changes nothing at all.
    await wait_until_idle(infra.nats.url)
    before = await table_snapshot(db, ids)
    assert await replay_everything(infra, db) > 0
    await wait_until_idle(infra.nats.url)
    assert await table_snapshot(db, ids) == before
    assert (await sim.requests()) == counts  # the replayed requests fetched nothing again

    # The next day: an incremental sync, whose rows carry the new scrape day.
    assert scheduler.terminate() == 0
    assert sim.proc.terminate() == 0
    next_day = TODAY + dt.timedelta(days=1)
    stack.today = next_day
    port = int(sim.url.rsplit(":", 1)[1])
    sim2 = await stack.start_simulator(accounts=3, listings=4, seed=SEED, port=port)
    stack.start("scheduler", SCHEDULE_CRON="*/2 * * * * *")
    jobs2 = await wait_for_jobs(db, ids, scrape_day=next_day)
    incremental = sync_window(next_day, first_run=False)
    for job in jobs2:
        assert (job["status"], job["kind"]) == ("succeeded", "incremental")
        assert (job["window_start"], job["window_end"]) == (incremental.start, incremental.end)
    counts2 = await sim2.requests()
    for account in accounts:
        assert counts2[account["account_id"]]["total"] == plan_size(account, incremental, next_day)
    await assert_rows_as_simulated(db, sim2, accounts, next_day, incremental)
    after = await dump_rows(db, ids)
    scraped_first = dt.datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=dt.UTC)
    for table, rows in before["rows"].items():
        kept = {k: v for k, v in after[table].items() if k[-1] == scraped_first}
        assert kept == rows, f"{table}: the first day's rows changed"
    assert await dead_letters(infra.nats.url) == 0


async def _rows_committed(db: asyncpg.Connection) -> int:
    return await db.fetchval("SELECT count(*) FROM airbnb.chart_query")


async def _wait_mid_sync(db: asyncpg.Connection, ids: list[str], timeout: float = 60) -> None:
    """Until some rows are committed and the jobs are still running."""

    async def some_rows() -> bool:
        return await _rows_committed(db) > 0

    await wait_until(some_rows, within=timeout, what="some rows to be committed")
    unfinished = await db.fetchval(
        "SELECT count(*) FROM airbnb.sync_jobs WHERE account_id = ANY($1) "
        "AND status IN ('queued', 'running')",
        ids,
    )
    assert unfinished > 0, "the sync finished before it could be disturbed"


@pytest.mark.parametrize(
    "disruption",
    [
        "kill_fetcher",
        "kill_writer",
        pytest.param("stop_postgres", marks=pytest.mark.own_postgres),
        "restart_nats",
    ],
)
async def test_disruption_mid_sync_converges_to_an_undisturbed_run(
    infra: Infra, db: asyncpg.Connection, disruption: str
) -> None:
    stack = infra.stack()
    # Latency stretches the sync over seconds, so there is a "middle" to disturb.
    sim = await stack.start_simulator(
        accounts=2, listings=4, seed=SEED, faults={"latency_ms": {"mean": 6, "jitter": 2}}
    )
    accounts = sim.accounts
    ids = [a["account_id"] for a in accounts]
    await stack.register(db, accounts)
    writer = stack.start("writer")
    fetcher = stack.start("fetcher")
    stack.start("scheduler")
    await _wait_mid_sync(db, ids)

    published_before_kill: set[str] = set()
    if disruption == "kill_fetcher":
        fetcher.kill()
        nc = await nats.connect(infra.nats.url)
        try:
            kv = await nc.jetstream().key_value(topology.FETCH_PROGRESS_BUCKET.bucket)
            keys = await kv.keys()
        finally:
            await nc.close()
        published_before_kill = {k.split(".", 1)[1] for k in keys if not k.endswith("_listings")}
        stack.start("fetcher")
    elif disruption == "kill_writer":
        writer.kill()
        await asyncio.sleep(1)
        stack.start("writer")
    elif disruption == "stop_postgres":
        await db.close()
        infra.postgres.pause()
        await asyncio.sleep(20)
        infra.postgres.resume()
        db = await asyncpg.connect(infra.database_url)
    elif disruption == "restart_nats":
        infra.nats.restart()

    try:
        jobs = await wait_for_jobs(db, ids, scrape_day=TODAY, timeout=180)
        assert [j["status"] for j in jobs] == ["succeeded"] * len(ids), jobs
        window = sync_window(TODAY, first_run=True)
        await assert_rows_as_simulated(db, sim, accounts, TODAY, window)
        assert await dead_letters(infra.nats.url) == 0
        if disruption == "kill_fetcher":
            assert published_before_kill, "no listing was published before the kill"
            counts = await sim.requests()
            per_listing = {
                lid: n for acc in counts.values() for lid, n in acc.get("listings", {}).items()
            }
            for lid in published_before_kill:
                listing_plan = len(plan_listing_requests(lid, window, TODAY))
                assert per_listing[lid] == listing_plan, f"listing {lid} was fetched again"
    finally:
        if disruption == "stop_postgres":
            await db.close()


async def test_one_malformed_listing_is_partial_and_an_expired_session_is_failed(
    infra: Infra, db: asyncpg.Connection
) -> None:
    stack = infra.stack()
    sim = await stack.start_simulator(accounts=2, listings=3, seed=SEED)
    healthy, expired = sim.accounts
    bad_listing = healthy["listings"][1]["listing_id"]
    await sim.send(
        "PUT",
        "/_sim/faults",
        {
            "malformed_listings": [bad_listing],
            "expired_sessions": {expired["account_id"]: "authentication_required"},
        },
    )
    await stack.register(db, sim.accounts)
    stack.start("writer")
    stack.start("fetcher")
    scheduler = stack.start("scheduler")
    jobs = {
        j["account_id"]: j
        for j in await wait_for_jobs(
            db, [healthy["account_id"], expired["account_id"]], scrape_day=TODAY
        )
    }

    partial = jobs[healthy["account_id"]]
    assert (partial["status"], partial["listings_succeeded"], partial["listings_failed"]) == (
        "partial",
        2,
        1,
    )
    failed_listing = await db.fetchrow(
        "SELECT * FROM airbnb.sync_job_listings WHERE job_id = $1 AND status = 'failed'",
        partial["job_id"],
    )
    assert failed_listing["airbnb_listing_id"] == bad_listing
    assert "malformed" in failed_listing["error"]
    window = sync_window(TODAY, first_run=True)
    await assert_rows_as_simulated(
        db, sim, [healthy], TODAY, window, skip_listings=frozenset({bad_listing})
    )

    failed = jobs[expired["account_id"]]
    assert failed["status"] == "failed"
    assert "auth" in (failed["error"] or "").lower()
    assert expired["cookie"] not in (failed["error"] or "")
    account = await db.fetchrow(
        "SELECT * FROM airbnb.accounts WHERE account_id = $1", expired["account_id"]
    )
    assert account["credentials_invalid_at"] is not None
    counts = await sim.requests()
    assert counts[expired["account_id"]]["total"] == 1

    # The next daily run skips the marked account and syncs the other.
    assert scheduler.terminate() == 0
    next_day = TODAY + dt.timedelta(days=1)
    stack.today = next_day
    stack.start("scheduler", SCHEDULE_CRON="*/2 * * * * *")
    await wait_for_jobs(
        db,
        [healthy["account_id"]],
        scrape_day=next_day,
        statuses=("queued", "running", "succeeded", "partial", "failed"),
    )
    await asyncio.sleep(3)  # two more cron ticks
    assert (
        await db.fetchval(
            "SELECT count(*) FROM airbnb.sync_jobs WHERE account_id = $1 AND scrape_day = $2",
            expired["account_id"],
            next_day,
        )
        == 0
    )


async def fetcher_counter(proc: ServiceProcess, name: str) -> float:
    """A label-less counter on the fetcher's /metrics (0 when it was never touched)."""
    base = proc.wait_for_log(r"ready, listening on (http://[\d.]+:\d+)").group(1)
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    m = re.search(rf"^{re.escape(name)} ([\d.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_listings_cut_short_by_airbnb_make_the_job_partial_named_and_counted(
    infra: Infra, db: asyncpg.Connection
) -> None:
    """ListingsSectionQuery answers 2 rows with totalCount 3 (it takes no paging argument,
    docs/data-path.md): the two are synced in full, the job says what it is missing."""
    stack = infra.stack()
    sim = await stack.start_simulator(
        accounts=1, listings=3, seed=SEED, faults={"listings_page_size": 2}
    )
    (account,) = sim.accounts
    account_id = account["account_id"]
    await stack.register(db, sim.accounts)
    stack.start("writer")
    fetcher = stack.start("fetcher")
    stack.start("scheduler")
    (job,) = await wait_for_jobs(db, [account_id], scrape_day=TODAY)

    assert job["status"] == "partial"
    assert job["error"] == "2 of 3 listings returned"
    assert (job["listings_total"], job["listings_succeeded"], job["listings_failed"]) == (2, 2, 0)
    listings = await db.fetch(
        "SELECT airbnb_listing_id, status FROM airbnb.sync_job_listings WHERE job_id = $1",
        job["job_id"],
    )
    assert [r["status"] for r in listings] == ["committed", "committed"]
    returned = {r["airbnb_listing_id"] for r in listings}
    left_out = set(listing_ids(account)) - returned
    assert len(left_out) == 1
    # Every row of the two returned listings, and none of the one Airbnb left out.
    window = sync_window(TODAY, first_run=True)
    await assert_rows_as_simulated(
        db, sim, [account], TODAY, window, skip_listings=frozenset(left_out)
    )
    counts = await sim.requests(account_id)
    assert set(counts["listings"]) == returned
    # A partial job still moves last_sync_at (invariant 3): something was synced.
    assert await db.fetchval(
        "SELECT last_sync_at IS NOT NULL FROM airbnb.accounts WHERE account_id = $1", account_id
    )
    assert await fetcher_counter(fetcher, "sync_airbnb_listings_truncated_total") == 1.0


async def test_three_fetchers_share_thirty_accounts(infra: Infra, db: asyncpg.Connection) -> None:
    stack = infra.stack()
    sim = await stack.start_simulator(
        accounts=30, listings=1, seed=SEED, faults={"latency_ms": {"mean": 2, "jitter": 1}}
    )
    ids = [a["account_id"] for a in sim.accounts]
    await stack.register(db, sim.accounts)
    stack.start("writer")
    fetchers = [stack.start("fetcher", FETCHER_CONCURRENCY="2") for _ in range(3)]
    stack.start("scheduler")
    jobs = await wait_for_jobs(db, ids, scrape_day=TODAY, timeout=180)
    assert {j["status"] for j in jobs} == {"succeeded"}
    counts = await sim.requests()
    # Each account's listings were asked for once: no account was synced twice.
    assert all(counts[i]["ListingsSectionQuery"] == 1 for i in ids)
    job_ids = {str(j["job_id"]) for j in jobs}
    per_fetcher = [
        {m for m in re.findall(r'"job_id":"([0-9a-f-]{36})"', f.output()) if m in job_ids}
        for f in fetchers
    ]
    assert all(per_fetcher), [len(s) for s in per_fetcher]
    assert set().union(*per_fetcher) == job_ids
