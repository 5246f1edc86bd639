"""Account events, committed if and only if announced (services/admin/outbox.py).

The admin and the scheduler run as real processes on a database of their own, with a
real nats-server. The first test reproduces the race the outbox ends: a commit made
slow by a deferred trigger (a real one, in the real database) leaves a long gap
between the change and its commit. An event published inside that gap, as the admin
did before the outbox, reaches a subscriber that then reads the account and finds
the old state, every time; with the outbox the event can only follow the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from shared import topology
from shared.messages import AccountEvent, decode
from shared.migrate import apply_migrations
from tests.cookies import auth_cookie
from tests.infra import (
    PostgresServer,
    ServiceLauncher,
    ServiceProcess,
    create_database,
    drop_database,
    new_database_name,
    wait_until,
)
from tests.system.test_admin_process import Admin, start_admin

pytestmark = pytest.mark.slow

KEY = {"X-API-Key": "test-key-2"}
TODAY = dt.date(2025, 7, 11)
# A deferred constraint trigger runs at COMMIT: this one makes every commit that
# touched an account wait, so "published, not yet committed" lasts long enough to see.
SLOW_COMMIT = """
CREATE FUNCTION airbnb.test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER test_slow_commit AFTER INSERT OR UPDATE ON airbnb.accounts
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION airbnb.test_slow_commit();
"""


def new_account_id() -> str:
    return str(random.randint(10**14, 10**15 - 1))


def account_body(account_id: str, **over: Any) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "airbnb_cookie": auth_cookie(account_id),
        "x_client_version": "c8a5b1f0",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        **over,
    }


@pytest.fixture
async def outbox_db(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A migrated database of this test alone: its accounts are the only ones."""
    name = new_database_name("sync_airbnb_outbox")
    url = await create_database(postgres_server, name)
    apply_migrations(url)
    yield url
    await drop_database(postgres_server, name)


@pytest.fixture
async def odb(outbox_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(outbox_db)
    yield conn
    await conn.close()


def admin_on(launcher: ServiceLauncher, url: str, **env: str) -> Admin:
    return start_admin(launcher, DATABASE_URL=url, **env)


def scheduler_on(launcher: ServiceLauncher, url: str) -> ServiceProcess:
    proc = launcher.start(
        ["scheduler"],
        env={
            "DATABASE_URL": url,
            "SYNC_AIRBNB_TODAY": TODAY.isoformat(),
            # Never during the test: only account events make jobs here.
            "SCHEDULE_CRON": "0 0 1 1 *",
        },
    )
    proc.wait_for_log(r"start-up reconciliation done", timeout=30)
    return proc


class Watcher:
    """Reads the account each AccountEvent names the moment the event arrives."""

    def __init__(self, nc: NatsClient, conn: asyncpg.Connection) -> None:
        self.nc = nc
        self.conn = conn
        self.seen: list[tuple[AccountEvent, asyncpg.Record | None]] = []
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Watcher:
        async def handle(msg: Msg) -> None:
            event = decode(AccountEvent, msg.data)
            async with self._lock:  # one connection, one query at a time
                row = await self.conn.fetchrow(
                    "SELECT user_agent, updated_at FROM airbnb.accounts WHERE account_id = $1",
                    event.account_id,
                )
            self.seen.append((event, row))

        self._sub = await self.nc.subscribe(topology.ACCOUNT_EVENTS, cb=handle)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sub.unsubscribe()


async def send(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> dict[str, Any]:
    async with http.request(method, url, json=body, headers=KEY) as resp:
        text = await resp.text()
        assert resp.status in (200, 201), f"{method} {url}: {resp.status} {text}"
        return dict(await resp.json())


async def test_an_event_reaches_its_subscriber_only_after_its_change_is_committed(
    launcher: ServiceLauncher, nc: NatsClient, outbox_db: str, odb: asyncpg.Connection
) -> None:
    await odb.execute(SLOW_COMMIT.format(seconds=1))
    admin = admin_on(launcher, outbox_db)
    reader = await asyncpg.connect(outbox_db)
    ids = [new_account_id() for _ in range(3)]
    try:
        async with Watcher(nc, reader) as watcher, aiohttp.ClientSession() as http:
            for aid in ids:
                await send(http, "POST", f"{admin.base}/api/v1/accounts", account_body(aid))
                await send(
                    http, "PATCH", f"{admin.base}/api/v1/accounts/{aid}", {"user_agent": "UA/2"}
                )
            await wait_until(lambda: len(watcher.seen) >= 6, within=20, what="6 account events")
    finally:
        await reader.close()
    for event, row in watcher.seen:
        where = f"{event.event} of {event.account_id}"
        assert row is not None, f"{where}: announced before its commit (no account yet)"
        assert row["updated_at"] >= event.at, f"{where}: announced before its commit (old row)"
        if event.event == "updated":
            assert row["user_agent"] == "UA/2", f"{where}: the subscriber read the old row"
    assert sorted((e.account_id, e.event) for e, _ in watcher.seen) == sorted(
        (aid, ev) for aid in ids for ev in ("created", "updated")
    )
    assert (
        await odb.fetchval("SELECT count(*) FROM airbnb.account_outbox WHERE published_at IS NULL")
        == 0
    )


@pytest.fixture
def both_cores_busy() -> Iterator[None]:
    """Another process on each core, spinning, for the length of the test."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


async def jobs_of(conn: asyncpg.Connection, ids: list[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT account_id, count(*) AS n FROM airbnb.sync_jobs WHERE account_id = ANY($1)"
        " GROUP BY account_id",
        ids,
    )
    return {r["account_id"]: r["n"] for r in rows}


async def test_two_hundred_accounts_created_under_load_all_get_their_backfill(
    launcher: ServiceLauncher, outbox_db: str, odb: asyncpg.Connection, both_cores_busy: None
) -> None:
    scheduler_on(launcher, outbox_db)
    admin = admin_on(launcher, outbox_db)
    ids = [new_account_id() for _ in range(200)]
    created_at = asyncio.get_running_loop().time()
    async with aiohttp.ClientSession() as http:
        limit = asyncio.Semaphore(8)

        async def create(aid: str) -> None:
            async with limit:
                await send(http, "POST", f"{admin.base}/api/v1/accounts", account_body(aid))

        await asyncio.gather(*(create(aid) for aid in ids))

    async def all_have_a_job() -> bool:
        return len(await jobs_of(odb, ids)) == len(ids)

    await wait_until(all_have_a_job, within=60, what="a backfill job for each of 200 accounts")
    took = asyncio.get_running_loop().time() - created_at
    jobs = await jobs_of(odb, ids)
    assert set(jobs.values()) == {1}, "an account got more than one job"
    triggers = await odb.fetch(
        "SELECT DISTINCT trigger, kind FROM airbnb.sync_jobs WHERE account_id = ANY($1)", ids
    )
    assert [(r["trigger"], r["kind"]) for r in triggers] == [("account_created", "full")]
    print(f"200 accounts under load: every backfill job within {took:.1f} s of the first create")


async def fail_the_jobs(conn: asyncpg.Connection, ids: list[str], *, auth: bool) -> None:
    """As the writer ends a job Airbnb refused: failed, and the account marked."""
    await conn.execute(
        "UPDATE airbnb.sync_jobs SET status = 'failed', error = 'session expired',"
        " finished_at = now() WHERE account_id = ANY($1)",
        ids,
    )
    if auth:
        await conn.execute(
            "UPDATE airbnb.accounts SET credentials_invalid_at = now(),"
            " credentials_error = 'session expired' WHERE account_id = ANY($1)",
            ids,
        )


async def test_fifty_reactivations_and_fifty_new_cookies_each_take_effect(
    launcher: ServiceLauncher, outbox_db: str, odb: asyncpg.Connection, both_cores_busy: None
) -> None:
    scheduler_on(launcher, outbox_db)
    admin = admin_on(launcher, outbox_db)
    inactive = [new_account_id() for _ in range(50)]
    refused = [new_account_id() for _ in range(50)]
    url = f"{admin.base}/api/v1/accounts"
    async with aiohttp.ClientSession() as http:
        for aid in inactive:
            await send(http, "POST", url, account_body(aid, is_active=False))
        for aid in refused:
            await send(http, "POST", url, account_body(aid))

        async def backfilled() -> bool:
            return len(await jobs_of(odb, refused)) == len(refused)

        await wait_until(backfilled, within=60, what="the 50 accounts' first backfill")
        assert await jobs_of(odb, inactive) == {}  # inactive: nothing to sync yet
        await fail_the_jobs(odb, refused, auth=True)
        for aid in inactive:
            await send(http, "PATCH", f"{url}/{aid}", {"is_active": True})
        for aid in refused:
            cookie = auth_cookie(aid, session="renewed")
            await send(http, "PATCH", f"{url}/{aid}", {"airbnb_cookie": cookie})

    async def every_change_took_effect() -> bool:
        return await jobs_of(odb, inactive) == dict.fromkeys(inactive, 1) and await jobs_of(
            odb, refused
        ) == dict.fromkeys(refused, 2)

    await wait_until(every_change_took_effect, within=60, what="100 updates to take effect")


class StreamCount:
    """AccountEvents per account as the stream stored them (what the scheduler gets):
    a publish JetStream dropped as a duplicate is not counted, as it is not delivered."""

    def __init__(self, nc: NatsClient) -> None:
        self.js = nc.jetstream()
        self.per_account: dict[str, int] = {}

    async def __aenter__(self) -> StreamCount:
        async def count(msg: Msg) -> None:
            event = decode(AccountEvent, msg.data)
            self.per_account[event.account_id] = self.per_account.get(event.account_id, 0) + 1

        self._sub = await self.js.subscribe(
            topology.ACCOUNT_EVENTS,
            cb=count,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sub.unsubscribe()


async def test_kill_9_of_the_admin_and_its_relay_loses_no_event_and_doubles_none(
    launcher: ServiceLauncher, nc: NatsClient, outbox_db: str, odb: asyncpg.Connection
) -> None:
    scheduler_on(launcher, outbox_db)
    admin = admin_on(launcher, outbox_db)
    ids = [new_account_id() for _ in range(80)]

    async def accounts_in_db() -> set[str]:
        rows = await odb.fetch(
            "SELECT account_id FROM airbnb.accounts WHERE account_id = ANY($1)", ids
        )
        return {r["account_id"] for r in rows}

    async with StreamCount(nc) as stream, aiohttp.ClientSession() as http:
        limit = asyncio.Semaphore(8)
        base = admin.base

        async def create(aid: str) -> None:
            async with limit:
                # cut short by the kill: committed or not, the database says
                with contextlib.suppress(aiohttp.ClientError, AssertionError):
                    await send(http, "POST", f"{base}/api/v1/accounts", account_body(aid))

        first = [asyncio.ensure_future(create(aid)) for aid in ids[:40]]
        await wait_until(
            lambda: sum(f.done() for f in first) >= 15, within=30, what="15 creates answered"
        )
        admin.proc.kill()  # kill -9 mid-way: requests in flight, events maybe unrelayed
        await asyncio.gather(*first)
        admin = admin_on(launcher, outbox_db)
        base = admin.base
        await asyncio.gather(*(create(aid) for aid in ids[40:]))

        async def all_relayed() -> bool:
            return set(stream.per_account) == await accounts_in_db()

        await wait_until(all_relayed, within=30, what="an event for every committed account")

        # A relay killed between its publish and its mark leaves rows it did publish
        # unmarked; the next pass publishes them again with the same Nats-Msg-Id.
        republish = await odb.fetch(
            "UPDATE airbnb.account_outbox SET published_at = NULL WHERE id IN"
            " (SELECT id FROM airbnb.account_outbox ORDER BY id LIMIT 20) RETURNING id"
        )
        assert len(republish) == 20
        admin.proc.kill()
        admin = admin_on(launcher, outbox_db)

        async def outbox_drained() -> bool:
            pending = await odb.fetchval(
                "SELECT count(*) FROM airbnb.account_outbox WHERE published_at IS NULL"
            )
            return pending == 0

        await wait_until(outbox_drained, within=30, what="the unmarked rows relayed again")
        await asyncio.sleep(1)  # room for a double to reach the count, if there were one
    in_db = await accounts_in_db()
    assert len(in_db) >= 60, f"only {len(in_db)} of 80 creates committed"
    assert set(stream.per_account) == in_db, "a change without its event, or the reverse"
    assert set(stream.per_account.values()) == {1}, "an event stored twice"

    async def one_job_each() -> bool:
        return await jobs_of(odb, sorted(in_db)) == dict.fromkeys(in_db, 1)

    await wait_until(one_job_each, within=30, what="one backfill job per committed account")
