"""``sync-airbnb scheduler`` as real processes against real NATS and PostgreSQL.

The scheduler's daily run and start-up touch every account of its database, so these
tests give it a database of its own (migrated like the session's): other tests'
accounts are never scheduled by it, and it never sees theirs. NATS is the session's;
the requests these tests leave in the AIRBNB_SYNC_REQUESTS work queue are deleted
at the end, so no later fetcher picks them up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared import topology
from shared.crypto import CredentialCipher
from shared.messages import (
    AccountEvent,
    DeadLetter,
    MessageDecodeError,
    SyncRequest,
    SyncTriggered,
    SyncTriggerReply,
    decode,
    encode,
)
from shared.migrate import apply_migrations
from tests.infra import (
    NatsServer,
    PostgresServer,
    ServiceLauncher,
    ServiceProcess,
    blocked_on_a_lock,
    create_database,
    drop_database,
    free_port,
    new_database_name,
    wait_ready,
    wait_until,
)

TODAY = dt.date(2025, 7, 11)  # a Friday: the week runs Sunday 07-06 .. Saturday 07-12
FULL_WINDOW = (dt.date(2025, 1, 12), dt.date(2025, 8, 16))  # 25 weeks back, 5 ahead
INCREMENTAL_WINDOW = (dt.date(2025, 6, 29), dt.date(2025, 8, 16))  # 1 week back

_ids = itertools.count(1)


def new_account_id() -> str:
    # Unique within the session and across sessions sharing a NATS store.
    return f"7{os.getpid() % 100_000:05d}{int(time.time()) % 1_000_000:06d}{next(_ids):04d}"


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def sched_db_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    name = new_database_name("sync_airbnb_sched")
    url = await create_database(postgres_server, name)
    apply_migrations(url)
    yield url
    await drop_database(postgres_server, name)


@pytest.fixture
async def sdb(sched_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(sched_db_url)
    yield conn
    await conn.close()


@pytest.fixture
def cipher(secret_keys: str) -> CredentialCipher:
    return CredentialCipher(secret_keys.split(","))


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    js = nc.jetstream()
    await topology.provision(js)
    return js


@pytest.fixture(scope="module", autouse=True)
async def _remove_our_requests(sched_db_url: str, nats_server: Any) -> AsyncIterator[None]:
    """Delete this module's sync requests from the shared work queue afterwards."""
    yield
    import nats

    conn = await asyncpg.connect(sched_db_url)
    nc = await nats.connect(nats_server.url)
    try:
        ours = {str(r["job_id"]) for r in await conn.fetch("SELECT job_id FROM airbnb.sync_jobs")}
        js = nc.jetstream()
        for seq, _, req in await stream_requests(js):
            if req is not None and str(req.job_id) in ours:
                await js.delete_msg(topology.SYNC_REQUESTS_STREAM.name, seq)
    finally:
        await conn.close()
        await nc.drain()


@pytest.fixture
def start_scheduler(launcher: ServiceLauncher, sched_db_url: str) -> Callable[..., ServiceProcess]:
    def start(today: dt.date = TODAY, **env: str) -> ServiceProcess:
        proc = launcher.start(
            ["scheduler"],
            env={
                "DATABASE_URL": sched_db_url,
                "SYNC_AIRBNB_TODAY": today.isoformat(),
                "LOG_LEVEL": "INFO",
                # Never during a test run unless a test asks: the daily run would take
                # every account of the database. Not a time already passed today either,
                # or the start would catch the day's run up: 23:59 on 31 December.
                "SCHEDULE_CRON": "59 23 31 12 *",
                **env,
            },
        )
        proc.wait_for_log(r"start-up reconciliation done", timeout=30)
        return proc

    return start


# --- helpers ------------------------------------------------------------------------------


async def insert_account(
    conn: asyncpg.Connection,
    cipher: CredentialCipher,
    *,
    last_sync_at: dt.datetime | None = None,
    is_active: bool = True,
    deleted: bool = False,
    marked: bool = False,
) -> str:
    account_id = new_account_id()
    now = dt.datetime.now(dt.UTC)
    await conn.execute(
        """
        INSERT INTO airbnb.accounts (account_id, credentials_encrypted, x_client_version,
            user_agent, is_active, last_sync_at, deleted_at, credentials_invalid_at)
        VALUES ($1, $2, 'client-v1', 'test-agent', $3, $4, $5, $6)
        """,
        account_id,
        cipher.encrypt(f"session-cookie-of-{account_id}"),
        is_active,
        last_sync_at,
        now if deleted else None,
        now if marked else None,
    )
    return account_id


def new_trigger(account_id: str, *, full: bool = False) -> SyncTriggered:
    return SyncTriggered(
        trigger_id=uuid.uuid4(),
        account_id=account_id,
        full=full,
        requested_at=dt.datetime.now(dt.UTC),
    )


async def send_trigger(nc: NatsClient, trigger: SyncTriggered | bytes, trigger_id: object) -> None:
    """Store a trigger (or any bytes) in JetStream, as the admin and `sync` do; a second
    send of one trigger gets a message id of its own, so JetStream keeps it too."""
    await nc.jetstream().publish(
        topology.sync_trigger_subject(trigger_id),
        trigger if isinstance(trigger, bytes) else encode(trigger),
        timeout=5,
        headers={"Nats-Msg-Id": f"{topology.sync_trigger_msg_id(trigger_id)}:{uuid.uuid4()}"},
    )


async def trigger(
    nc: NatsClient, account_id: str, *, full: bool = False, again: SyncTriggered | None = None
) -> SyncTriggerReply:
    """A durable trigger (``again``: this one, once more), and the scheduler's outcome as
    announced on airbnb.triggers.{id}."""
    sent = again or new_trigger(account_id, full=full)
    sub = await nc.subscribe(topology.trigger_outcome_subject(sent.trigger_id), max_msgs=1)
    await nc.flush()
    await send_trigger(nc, sent, sent.trigger_id)
    msg = await sub.next_msg(timeout=10)
    reply = decode(SyncTriggerReply, msg.data)
    assert reply.trigger_id == sent.trigger_id
    return reply


async def recorded_trigger(conn: asyncpg.Connection, trigger_id: object) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM airbnb.sync_triggers WHERE trigger_id = $1", trigger_id
    )


async def stream_requests(
    js: JetStreamContext,
) -> list[tuple[int, str | None, SyncRequest | None]]:
    """(sequence, Nats-Msg-Id, request) of every message now in the sync request stream."""
    out: list[tuple[int, str | None, SyncRequest | None]] = []
    stream = topology.SYNC_REQUESTS_STREAM.name
    seq = 1
    while True:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=topology.SYNC_REQUESTED, next=True)
        except NotFoundError:
            return out
        try:
            req: SyncRequest | None = decode(SyncRequest, msg.data or b"")
        except MessageDecodeError:
            req = None
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        assert msg.seq is not None
        out.append((msg.seq, msg_id, req))
        seq = msg.seq + 1


async def requests_for(js: JetStreamContext, accounts: set[str]) -> list[tuple[str, SyncRequest]]:
    return [
        (msg_id or "", req)
        for _, msg_id, req in await stream_requests(js)
        if req is not None and req.account_id in accounts
    ]


async def jobs_of(conn: asyncpg.Connection, account_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM airbnb.sync_jobs WHERE account_id = $1 ORDER BY created_at", account_id
    )


# --- tests --------------------------------------------------------------------------------


async def test_manual_trigger_queues_one_job_and_publishes_its_request(
    start_scheduler: Callable[..., ServiceProcess],
    nc: NatsClient,
    js: JetStreamContext,
    sdb: asyncpg.Connection,
    cipher: CredentialCipher,
) -> None:
    # Accounts inserted after the start: the start-up backfill does not take `new`.
    proc = start_scheduler()
    new = await insert_account(sdb, cipher)
    synced = await insert_account(sdb, cipher, last_sync_at=dt.datetime(2025, 7, 10, tzinfo=dt.UTC))

    # First run of an account: the 25-week backfill window, kind full.
    reply = await trigger(nc, new)
    assert reply.error is None and reply.job_id is not None
    (row,) = await jobs_of(sdb, new)
    assert row["job_id"] == reply.job_id
    assert (row["status"], row["kind"], row["trigger"]) == ("queued", "full", "manual")
    assert row["scrape_day"] == TODAY
    assert (row["window_start"], row["window_end"]) == FULL_WINDOW
    assert row["dedup_key"] == f"{new}:{TODAY}:full"

    # The request is in the stream, under the dedup key's message id, with the token.
    (msg_id, req) = (await requests_for(js, {new}))[0]
    assert msg_id == topology.sync_request_msg_id(row["dedup_key"])
    assert req.job_id == reply.job_id and req.kind == "full" and req.trigger == "manual"
    assert (req.scrape_day, req.window_start, req.window_end) == (TODAY, *FULL_WINDOW)
    token = await sdb.fetchval(
        "SELECT credentials_encrypted FROM airbnb.accounts WHERE account_id = $1", new
    )
    assert req.credentials.cookie_token == token
    assert cipher.decrypt(req.credentials.cookie_token) == f"session-cookie-of-{new}"
    assert req.credentials.x_client_version == "client-v1"
    assert req.credentials.version == 1  # a new account's credentials_version

    # A double trigger, sequential or at once, is the same job and the same message.
    again = await trigger(nc, new)
    both = await asyncio.gather(trigger(nc, new), trigger(nc, new))
    assert {again.job_id, *(r.job_id for r in both)} == {reply.job_id}
    assert len(await jobs_of(sdb, new)) == 1
    assert len(await requests_for(js, {new})) == 1

    # After a sync (last_sync_at set): the incremental window.
    inc = await trigger(nc, synced)
    (row,) = await jobs_of(sdb, synced)
    assert row["job_id"] == inc.job_id
    assert (row["kind"], row["window_start"], row["window_end"]) == (
        "incremental",
        *INCREMENTAL_WINDOW,
    )
    # 'full' is its own kind: a second job for the same day, with the long window.
    full = await trigger(nc, synced, full=True)
    assert full.job_id not in (None, inc.job_id)
    rows = {r["kind"]: r for r in await jobs_of(sdb, synced)}
    assert (rows["full"]["window_start"], rows["full"]["window_end"]) == FULL_WINDOW
    ids = sorted(m for m, _ in await requests_for(js, {synced}))
    assert ids == sorted(
        topology.sync_request_msg_id(f"{synced}:{TODAY}:{k}") for k in ("full", "incremental")
    )

    assert "session-cookie-of" not in proc.output()
    assert proc.output().count('"msg":"sync job queued"') >= 3
    assert proc.terminate(timeout=10) == 0


async def test_refusals_and_malformed_requests_are_answered(
    start_scheduler: Callable[..., ServiceProcess],
    nc: NatsClient,
    js: JetStreamContext,
    sdb: asyncpg.Connection,
    cipher: CredentialCipher,
) -> None:
    synced_at = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)
    deleted = await insert_account(sdb, cipher, last_sync_at=synced_at, deleted=True)
    inactive = await insert_account(sdb, cipher, last_sync_at=synced_at, is_active=False)
    marked = await insert_account(sdb, cipher, last_sync_at=synced_at, marked=True)
    proc = start_scheduler()

    expected = {
        new_account_id(): "not_found",
        deleted: "deleted",
        inactive: "inactive",
        marked: "needs_credentials",
        "12ab": "invalid_request",
    }
    for account_id, error in expected.items():
        reply = await trigger(nc, account_id)
        assert (reply.job_id, reply.error) == (None, error), account_id
        assert reply.detail and reply.detail.endswith(".")
        # recorded, so GET /api/v1/triggers/{id} answers it after the stream let it go
        row = await recorded_trigger(sdb, reply.trigger_id)
        assert row is not None and (row["account_id"], row["error"]) == (account_id, error)
    # Malformed triggers go to the dead letters, and the next good one is handled.
    parked: list[DeadLetter] = []

    async def on_dead_letter(msg: Any) -> None:
        parked.append(decode(DeadLetter, msg.data))

    dl_sub = await nc.subscribe(topology.dead_letter_subject("scheduler"), cb=on_dead_letter)
    await nc.flush()
    bodies = (b"not json", b'{"full": true}', b'{"account_id": "1", "extra": 1}')
    malformed = [uuid.uuid4() for _ in bodies]
    for body, tid in zip(bodies, malformed, strict=True):
        await send_trigger(nc, body, tid)
    assert (await trigger(nc, new_account_id())).error == "not_found"

    async def all_parked() -> bool:
        subjects = {d.subject for d in parked}
        return all(topology.sync_trigger_subject(t) in subjects for t in malformed)

    await wait_until(all_parked, within=10, what="the malformed triggers dead-lettered")
    await dl_sub.unsubscribe()
    assert all(d.reason.startswith("undecodable") for d in parked)
    for account_id in (deleted, inactive, marked):
        assert await jobs_of(sdb, account_id) == []
    assert await requests_for(js, {deleted, inactive, marked}) == []
    assert proc.terminate(timeout=10) == 0


async def test_manual_trigger_after_a_failed_day_gets_a_new_attempt(
    start_scheduler: Callable[..., ServiceProcess],
    nc: NatsClient,
    js: JetStreamContext,
    sdb: asyncpg.Connection,
    cipher: CredentialCipher,
) -> None:
    account = await insert_account(sdb, cipher, last_sync_at=dt.datetime(2025, 7, 1, tzinfo=dt.UTC))
    proc = start_scheduler()
    first_sent = new_trigger(account)
    first = await trigger(nc, account, again=first_sent)
    await sdb.execute(
        "UPDATE airbnb.sync_jobs SET status = 'failed' WHERE job_id = $1", first.job_id
    )
    # The same trigger delivered again (its scheduler died before the ack): what it was
    # recorded as, not a new attempt of the day that failed since.
    again = await trigger(nc, account, again=first_sent)
    assert (again.job_id, again.status) == (first.job_id, "failed")
    retries = await asyncio.gather(trigger(nc, account), trigger(nc, account))
    assert len({r.job_id for r in retries}) == 1
    retry = retries[0].job_id
    assert retry not in (None, first.job_id)
    await sdb.execute("UPDATE airbnb.sync_jobs SET status = 'partial' WHERE job_id = $1", retry)
    second_retry = await trigger(nc, account)
    await sdb.execute(
        "UPDATE airbnb.sync_jobs SET status = 'succeeded' WHERE job_id = $1", second_retry.job_id
    )
    assert (await trigger(nc, account)).job_id == second_retry.job_id  # a good day stays done
    keys = [r["dedup_key"] for r in await jobs_of(sdb, account)]
    base = f"{account}:{TODAY}:incremental"
    assert keys == [base, f"{base}:retry-1", f"{base}:retry-2"]
    msg_ids = sorted(m for m, _ in await requests_for(js, {account}))
    assert msg_ids == sorted(topology.sync_request_msg_id(k) for k in keys)
    assert proc.terminate(timeout=10) == 0


async def test_new_account_event_triggers_a_backfill(
    start_scheduler: Callable[..., ServiceProcess],
    nc: NatsClient,
    js: JetStreamContext,
    sdb: asyncpg.Connection,
    cipher: CredentialCipher,
) -> None:
    proc = start_scheduler()
    account = await insert_account(sdb, cipher)
    event = AccountEvent(event="created", account_id=account, at=dt.datetime.now(dt.UTC))
    await js.publish(topology.account_event_subject("created"), encode(event))

    async def queued() -> bool:
        return len(await jobs_of(sdb, account)) == 1

    await wait_until(queued, within=15, what="the backfill job")
    (row,) = await jobs_of(sdb, account)
    assert (row["kind"], row["trigger"], row["status"]) == ("full", "account_created", "queued")
    assert (row["window_start"], row["window_end"]) == FULL_WINDOW
    await wait_until(
        lambda: _has_requests(js, {account}, 1),
        within=10,
        what="the backfill request in the stream",
    )
    # The same event again (a redelivery, an admin retry) adds nothing.
    await js.publish(topology.account_event_subject("created"), encode(event))
    await wait_until(lambda: _events_drained(js), within=10, what="the account events handled")
    assert len(await jobs_of(sdb, account)) == 1

    # Airbnb rejected the cookie, the backfill failed; new credentials: a new attempt.
    await sdb.execute("UPDATE airbnb.sync_jobs SET status = 'failed' WHERE job_id = $1", row[0])
    changed = AccountEvent(
        event="updated", account_id=account, credentials_changed=True, at=event.at
    )
    await js.publish(topology.account_event_subject("updated"), encode(changed))

    async def retried() -> bool:
        return len(await jobs_of(sdb, account)) == 2

    await wait_until(retried, within=15, what="the new attempt")
    assert (await jobs_of(sdb, account))[1]["dedup_key"] == f"{row['dedup_key']}:retry-1"
    # An update that changes nothing that matters (account synced, no flag): no job.
    await sdb.execute(
        "UPDATE airbnb.accounts SET last_sync_at = now() WHERE account_id = $1", account
    )
    other = AccountEvent(event="updated", account_id=account, at=event.at)
    await js.publish(topology.account_event_subject("updated"), encode(other))
    await wait_until(lambda: _events_drained(js), within=10, what="the account events handled")
    assert len(await jobs_of(sdb, account)) == 2
    assert proc.terminate(timeout=10) == 0


async def _events_drained(js: JetStreamContext) -> bool:
    c = topology.SCHEDULER_ACCOUNTS
    info = await js.consumer_info(c.stream, c.durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def _has_requests(js: JetStreamContext, accounts: set[str], n: int) -> bool:
    return len(await requests_for(js, accounts)) == n


async def test_start_up_backfills_new_accounts_and_republishes_queued_jobs(
    start_scheduler: Callable[..., ServiceProcess],
    js: JetStreamContext,
    sdb: asyncpg.Connection,
    cipher: CredentialCipher,
) -> None:
    never_synced = await insert_account(sdb, cipher)
    marked = await insert_account(sdb, cipher, marked=True)
    # A scheduler that died between its INSERT and its publish left this job queued.
    orphan_account = await insert_account(
        sdb, cipher, last_sync_at=dt.datetime(2025, 7, 1, tzinfo=dt.UTC)
    )
    orphan_key = f"{orphan_account}:{TODAY}:incremental"
    orphan_id = uuid.uuid4()
    await sdb.execute(
        """
        INSERT INTO airbnb.sync_jobs (job_id, account_id, kind, trigger, dedup_key, scrape_day,
            window_start, window_end)
        VALUES ($1, $2, 'incremental', 'schedule', $3, $4, $5, $6)
        """,
        orphan_id,
        orphan_account,
        orphan_key,
        TODAY,
        *INCREMENTAL_WINDOW,
    )
    # Credentials replaced twice since: the re-published request carries the version now.
    await sdb.execute(
        "UPDATE airbnb.accounts SET credentials_version = 3 WHERE account_id = $1", orphan_account
    )
    proc = start_scheduler()

    (row,) = await jobs_of(sdb, never_synced)
    assert (row["kind"], row["trigger"], row["status"]) == ("full", "startup", "queued")
    assert await jobs_of(sdb, marked) == []
    found = dict(await requests_for(js, {orphan_account, never_synced}))
    assert found[topology.sync_request_msg_id(orphan_key)].job_id == orphan_id
    assert found[topology.sync_request_msg_id(orphan_key)].credentials.version == 3
    assert found[topology.sync_request_msg_id(row["dedup_key"])].job_id == row["job_id"]
    assert proc.terminate(timeout=10) == 0

    # A restart publishes the queued jobs again: JetStream drops the copies.
    proc = start_scheduler()
    proc.wait_for_log(r"re-published \d+ queued job\(s\): 0 new in the stream")
    assert len(await requests_for(js, {orphan_account, never_synced})) == 2
    assert len(await jobs_of(sdb, never_synced)) == 1
    assert proc.terminate(timeout=10) == 0


async def insert_synced_accounts(
    conn: asyncpg.Connection, cipher: CredentialCipher, n: int
) -> list[str]:
    """``n`` accounts synced before (incremental jobs), in one statement, in key order."""
    prefix = new_account_id()
    ids = [f"{prefix}{i:05d}" for i in range(n)]  # one length: id order is key order
    await conn.execute(
        """
        INSERT INTO airbnb.accounts (account_id, credentials_encrypted, x_client_version,
            user_agent, last_sync_at)
        SELECT id, $2, 'client-v1', 'test-agent', '2025-07-01' FROM unnest($1::text[]) AS id
        """,
        ids,
        cipher.encrypt("session-cookie-of-many"),
    )
    return ids


def daily_at(when: dt.datetime) -> str:
    """A cron (seconds first) that fires every day at ``when``'s time of day."""
    return f"{when.second} {when.minute} {when.hour} * * *"


async def scheduler_run(conn: asyncpg.Connection, day: dt.date) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM airbnb.scheduler_runs WHERE scrape_day = $1", day)


async def jobs_by_account(
    conn: asyncpg.Connection, day: dt.date, accounts: list[str]
) -> dict[str, list[asyncpg.Record]]:
    rows = await conn.fetch(
        "SELECT * FROM airbnb.sync_jobs WHERE scrape_day = $1 AND account_id = ANY($2::text[])",
        day,
        accounts,
    )
    out: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        out.setdefault(r["account_id"], []).append(r)
    return out


async def assert_one_job_and_one_request_each(
    conn: asyncpg.Connection, js: JetStreamContext, day: dt.date, accounts: list[str]
) -> None:
    jobs = await jobs_by_account(conn, day, accounts)
    assert sorted(jobs) == sorted(accounts)
    assert {len(v) for v in jobs.values()} == {1}
    assert {(j["kind"], j["trigger"]) for (j,) in jobs.values()} == {("incremental", "schedule")}
    msgs = [(m, r) for m, r in await requests_for(js, set(accounts)) if r.scrape_day == day]
    assert len(msgs) == len({m for m, _ in msgs}) == len(accounts)
    assert {r.job_id for _, r in msgs} == {j["job_id"] for (j,) in jobs.values()}
    assert all(
        m == topology.sync_request_msg_id(f"{r.account_id}:{day}:incremental") for m, r in msgs
    )


async def test_two_schedulers_at_the_run_time_make_one_fan_out_by_the_named_leader(
    start_scheduler: Callable[..., ServiceProcess],
    js: JetStreamContext,
    sdb: asyncpg.Connection,
    cipher: CredentialCipher,
) -> None:
    day = dt.date(2025, 8, 1)  # a day no other test of this module uses
    synced_at = dt.datetime(2025, 7, 20, tzinfo=dt.UTC)
    synced = [await insert_account(sdb, cipher, last_sync_at=synced_at) for _ in range(30)]
    skipped = [
        await insert_account(sdb, cipher, last_sync_at=synced_at, marked=True),
        await insert_account(sdb, cipher, last_sync_at=synced_at, is_active=False),
        await insert_account(sdb, cipher, last_sync_at=synced_at, deleted=True),
    ]
    # The run time ("05:00") a little after both have started.
    run_at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=12)
    env = {"SCHEDULE_CRON": daily_at(run_at), "SCHEDULER_LEASE_S": "3"}
    a = start_scheduler(day, SCHEDULER_NAME="sched-a", **env)
    a.wait_for_log(r"scheduler sched-a leads the daily run")
    b = start_scheduler(day, SCHEDULER_NAME="sched-b", **env)
    b.wait_for_log(r"scheduler sched-b stands by: sched-a leads the daily run")

    # The fan-out takes every schedulable account of the module's database: ours among them.
    a.wait_for_log(r"scheduled run done: \d+ account\(s\)", timeout=40)
    await asyncio.sleep(3)  # the standby's tries, the leader's next looks
    assert "scheduled run done" not in b.output()
    assert "leads the daily run" not in b.output().replace("sched-a leads", "")
    assert a.output().count("scheduled run done") == 1
    run = await scheduler_run(sdb, day)
    assert run is not None and run["finished_at"] is not None
    assert (run["leader"], run["attempts"]) == ("sched-a", 1)
    assert run["accounts"] >= len(synced)
    assert run["started_at"] >= run_at - dt.timedelta(seconds=1)  # at its time, not before

    await assert_one_job_and_one_request_each(sdb, js, day, synced)
    assert await jobs_by_account(sdb, day, skipped) == {}
    jobs = await sdb.fetch(
        "SELECT * FROM airbnb.sync_jobs WHERE scrape_day = $1 AND account_id = ANY($2::text[])",
        day,
        synced,
    )
    assert {(j["window_start"], j["window_end"]) for j in jobs} == {
        (dt.date(2025, 7, 20), dt.date(2025, 9, 6))
    }
    assert a.terminate(timeout=10) == 0
    assert b.terminate(timeout=10) == 0


async def test_kill_9_of_the_leader_mid_fan_out_leaves_every_account_exactly_one_job(
    start_scheduler: Callable[..., ServiceProcess],
    js: JetStreamContext,
    sdb: asyncpg.Connection,
    sched_db_url: str,
    cipher: CredentialCipher,
) -> None:
    """The leader is killed with ~150 of 300 jobs created and the next chunk's INSERT in
    PostgreSQL (held there by a row this test has inserted, uncommitted, under the
    151st key). The standby leads within the lease and resumes the day's run."""
    day = dt.date(2025, 8, 2)
    accounts = await insert_synced_accounts(sdb, cipher, 300)
    lease_s = 6.0
    env = {
        "SCHEDULE_CRON": "0 0 * * *",  # midnight UTC: passed, so the run is due at start
        "SCHEDULER_CHUNK_SIZE": "25",
        "SCHEDULER_LEASE_S": str(lease_s),
    }
    holder = await asyncpg.connect(sched_db_url)
    blocking = holder.transaction()
    await blocking.start()
    try:
        await holder.execute(
            """
            INSERT INTO airbnb.sync_jobs (job_id, account_id, kind, trigger, dedup_key,
                scrape_day, window_start, window_end)
            VALUES ($1, $2, 'incremental', 'schedule', $3, $4, $4, $4)
            """,
            uuid.uuid4(),
            accounts[150],
            f"{accounts[150]}:{day}:incremental",
            day,
        )
        a = start_scheduler(day, SCHEDULER_NAME="sched-a", **env)
        a.wait_for_log(r"scheduler sched-a leads the daily run")

        async def mid_fan_out() -> bool:
            # Our accounts are contiguous in key order, but the module's other accounts
            # shift the chunks: the blocked one holds the 151st and up to 24 before it.
            made = await sdb.fetchval(
                "SELECT count(*) FROM airbnb.sync_jobs"
                " WHERE scrape_day = $1 AND account_id = ANY($2::text[])",
                day,
                accounts,
            )
            return 126 <= made <= 150 and await blocked_on_a_lock(holder)

        await wait_until(mid_fan_out, within=30, what="the leader mid-fan-out, ~150 jobs in")
        b = start_scheduler(day, SCHEDULER_NAME="sched-b", **env)
        b.wait_for_log(r"scheduler sched-b stands by: sched-a leads the daily run")

        killed = time.monotonic()
        a.kill()
        await asyncio.to_thread(
            b.wait_for_log, r"scheduler sched-b leads the daily run", timeout=lease_s * 2
        )
        took = time.monotonic() - killed
        assert took < lease_s, f"the standby took the lead {took:.1f}s after the kill"
        b.wait_for_log(r"resuming the daily run of 2025-08-02")
    finally:
        await blocking.rollback()  # the 151st key is free: the resumed run creates it
        await holder.close()

    b.wait_for_log(r"scheduled run done", timeout=30)
    await assert_one_job_and_one_request_each(sdb, js, day, accounts)
    run = await scheduler_run(sdb, day)
    assert run is not None and run["finished_at"] is not None
    assert (run["leader"], run["attempts"]) == ("sched-b", 2)
    print(f"standby led {took:.2f}s after kill -9 of the leader (lease {lease_s:.0f}s)")
    assert b.terminate(timeout=10) == 0


async def test_a_scheduler_started_after_the_run_time_catches_the_day_up_once(
    start_scheduler: Callable[..., ServiceProcess],
    js: JetStreamContext,
    sdb: asyncpg.Connection,
    cipher: CredentialCipher,
) -> None:
    """Down at "05:00", started at "09:00": the day's run at start; a second start: none.

    The run time is midnight UTC here (already passed whenever the test runs), as 05:00
    is at 09:00; tests/unit/test_scheduler_plan.py has the rule at those very hours.
    """
    day = dt.date(2025, 8, 3)
    synced_at = dt.datetime(2025, 7, 20, tzinfo=dt.UTC)
    synced = [await insert_account(sdb, cipher, last_sync_at=synced_at) for _ in range(5)]
    marked = await insert_account(sdb, cipher, last_sync_at=synced_at, marked=True)

    now = dt.datetime.now(dt.UTC)
    if now.time() < dt.time(23, 58):
        # A run time later today: the start creates nothing, the cron will.
        early = start_scheduler(day, SCHEDULE_CRON="59 23 * * *", SCHEDULER_NAME="early")
        early.wait_for_log(r"the daily run of 2025-08-03 is due at 23:59:00 UTC")
        assert await jobs_by_account(sdb, day, [*synced, marked]) == {}
        assert await scheduler_run(sdb, day) is None
        assert early.terminate(timeout=10) == 0

    late = start_scheduler(day, SCHEDULE_CRON="0 0 * * *", SCHEDULER_NAME="late")
    late.wait_for_log(r"scheduler late leads the daily run")
    late.wait_for_log(r"catching up: the daily run of 2025-08-03 was due at 00:00:00 UTC")
    late.wait_for_log(r"scheduled run done: \d+ account\(s\)")
    await assert_one_job_and_one_request_each(sdb, js, day, synced)
    assert await jobs_by_account(sdb, day, [marked]) == {}
    run = await scheduler_run(sdb, day)
    assert run is not None and run["finished_at"] is not None
    assert (run["leader"], run["attempts"]) == ("late", 1)
    assert run["jobs_created"] >= len(synced)
    jobs_before = await sdb.fetch("SELECT job_id FROM airbnb.sync_jobs WHERE scrape_day = $1", day)
    assert late.terminate(timeout=10) == 0

    again = start_scheduler(day, SCHEDULE_CRON="0 0 * * *", SCHEDULER_NAME="again")
    again.wait_for_log(r"the daily run of 2025-08-03 is done \(by late, finished at")
    assert "scheduled run done" not in again.output()
    jobs_after = await sdb.fetch("SELECT job_id FROM airbnb.sync_jobs WHERE scrape_day = $1", day)
    assert {r["job_id"] for r in jobs_after} == {r["job_id"] for r in jobs_before}
    assert await scheduler_run(sdb, day) == run
    await assert_one_job_and_one_request_each(sdb, js, day, synced)
    assert again.terminate(timeout=10) == 0


async def test_queued_jobs_of_unschedulable_accounts_end_failed_with_the_reason(
    start_scheduler: Callable[..., ServiceProcess],
    js: JetStreamContext,
    sdb: asyncpg.Connection,
    cipher: CredentialCipher,
) -> None:
    day = dt.date(2025, 8, 4)
    synced_at = dt.datetime(2025, 7, 20, tzinfo=dt.UTC)
    deleted = await insert_account(sdb, cipher, last_sync_at=synced_at, deleted=True)
    inactive = await insert_account(sdb, cipher, last_sync_at=synced_at, is_active=False)
    marked = await insert_account(sdb, cipher, last_sync_at=synced_at, marked=True)
    # Deleted and inactive both: deleted is the reason, as a trigger's refusal says.
    both = await insert_account(sdb, cipher, last_sync_at=synced_at, deleted=True, is_active=False)
    healthy = await insert_account(sdb, cipher, last_sync_at=synced_at)
    jobs: dict[str, uuid.UUID] = {}
    for account_id, status in (
        (deleted, "queued"),
        (inactive, "queued"),
        (marked, "queued"),
        (both, "queued"),
        (healthy, "queued"),
    ):
        jobs[account_id] = uuid.uuid4()
        await sdb.execute(
            """
            INSERT INTO airbnb.sync_jobs (job_id, account_id, kind, trigger, dedup_key,
                scrape_day, window_start, window_end, status)
            VALUES ($1, $2, 'incremental', 'schedule', $3, $4, $5, $6, $7)
            """,
            jobs[account_id],
            account_id,
            f"{account_id}:{day}:incremental",
            day,
            *INCREMENTAL_WINDOW,
            status,
        )
    # A fetcher already runs this one: the writer finishes it, not the scheduler.
    running = uuid.uuid4()
    await sdb.execute(
        """
        INSERT INTO airbnb.sync_jobs (job_id, account_id, kind, trigger, dedup_key,
            scrape_day, window_start, window_end, status)
        VALUES ($1, $2, 'full', 'manual', $3, $4, $5, $6, 'running')
        """,
        running,
        deleted,
        f"{deleted}:{day}:full",
        day,
        *FULL_WINDOW,
    )
    proc = start_scheduler(day)
    proc.wait_for_log(r"\d+ queued job\(s\) ended failed: their account may no longer be synced")

    rows = {
        r["job_id"]: r
        for r in await sdb.fetch(
            "SELECT * FROM airbnb.sync_jobs WHERE job_id = ANY($1::uuid[])",
            [*jobs.values(), running],
        )
    }
    expected = {
        deleted: "account deleted",
        inactive: "account inactive",
        marked: "credentials invalid",
        both: "account deleted",
    }
    for account_id, reason in expected.items():
        row = rows[jobs[account_id]]
        assert (row["status"], row["error"]) == ("failed", reason), account_id
        assert row["finished_at"] is not None
    assert (rows[jobs[healthy]]["status"], rows[jobs[healthy]]["error"]) == ("queued", None)
    assert rows[running]["status"] == "running"
    # The healthy job's request is published; the ended jobs' never are.
    found = {r.job_id for _, r in await requests_for(js, set(expected) | {healthy})}
    assert found == {jobs[healthy]}
    assert proc.terminate(timeout=10) == 0

    # A final job never changes again: a second start leaves them as they are.
    proc = start_scheduler(day)
    assert "ended failed" not in proc.output()
    assert proc.terminate(timeout=10) == 0


async def test_sigterm_exits_zero_quickly(
    start_scheduler: Callable[..., ServiceProcess],
) -> None:
    proc = start_scheduler()
    started = time.monotonic()
    assert proc.terminate(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert "scheduler stopped" in proc.output()


def test_bad_cron_expression_is_a_configuration_error(
    launcher: ServiceLauncher, sched_db_url: str
) -> None:
    result = launcher.run(
        ["scheduler"], env={"DATABASE_URL": sched_db_url, "SCHEDULE_CRON": "at five"}
    )
    assert result.returncode == 2
    assert "SCHEDULE_CRON" in result.stderr
    assert "Traceback" not in result.stderr


async def test_an_account_event_whose_ack_fails_is_redelivered_and_the_scheduler_stays_up(
    start_scheduler: Callable[..., ServiceProcess],
    nats_server: NatsServer,
    js: JetStreamContext,
    sched_db_url: str,
) -> None:
    """The crash of issue 12: an ack that raised ended the accounts worker and the process.

    The fault is real: the event is in hand (its handler waits on a lock this test holds on
    airbnb.accounts) when nats-server stops; with the reconnect buffer off, the ack after
    the handler raises at once. The scheduler must keep serving, and the event come back.
    """
    port = free_port()
    c = topology.SCHEDULER_ACCOUNTS
    await wait_until(lambda: _events_drained(js), within=15, what="earlier account events handled")
    proc = start_scheduler(
        NATS_RECONNECT_BUFFER_BYTES="0", JETSTREAM_ACK_WAIT_S="2", HTTP_PORT=str(port)
    )
    before = (await js.consumer_info(c.stream, c.durable)).delivered.consumer_seq
    holder = await asyncpg.connect(sched_db_url)
    try:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("LOCK TABLE airbnb.accounts IN ACCESS EXCLUSIVE MODE")
        # No such account: once it can read, the handler has nothing to do but ack.
        event = AccountEvent(
            event="created", account_id=new_account_id(), at=dt.datetime.now(dt.UTC)
        )
        await js.publish(topology.account_event_subject("created"), encode(event))
        await wait_until(lambda: blocked_on_a_lock(holder), within=15, what="the handler to wait")
        nats_server.stop()
        await asyncio.to_thread(proc.wait_for_log, r"NATS disconnected")
        await lock.commit()
        await asyncio.to_thread(proc.wait_for_log, r"could not ack a message on airbnb\.accounts")
    finally:
        nats_server.start()
        await holder.close()
    await wait_ready(port)

    async def redelivered_and_acked() -> bool:
        info = await js.consumer_info(c.stream, c.durable)
        return (
            info.delivered.consumer_seq >= before + 2
            and info.num_pending == 0
            and info.num_ack_pending == 0
        )

    await wait_until(redelivered_and_acked, within=30, what="the event redelivered and acked")
    assert proc.proc.poll() is None
    assert "ended unexpectedly" not in proc.output()
    await wait_ready(port)
    assert proc.terminate(timeout=10) == 0
    await topology.provision(js)  # the consumers' ack_wait back to the default


async def test_a_trigger_sent_while_the_scheduler_is_stopped_ends_in_a_job_after_its_restart(
    start_scheduler: Callable[..., ServiceProcess],
    aiohttp_client: Callable[..., Any],
    base_env: dict[str, str],
    sched_db_url: str,
    js: JetStreamContext,
    sdb: asyncpg.Connection,
    cipher: CredentialCipher,
) -> None:
    """Issue 13, item 2: the admin's trigger is durable. The scheduler is stopped, the
    trigger is answered 202 with a URL to follow, and the scheduler started 20 s later
    turns it into a job the client follows to (queued, its request in the stream)."""
    from services.admin.app import create_app
    from services.admin.settings import AdminSettings

    key = {"X-API-Key": base_env["ADMIN_API_KEYS"].split(",")[0]}
    account = await insert_account(sdb, cipher, last_sync_at=dt.datetime(2025, 7, 1, tzinfo=dt.UTC))
    proc = start_scheduler()
    assert proc.terminate(timeout=10) == 0  # stopped: nothing handles triggers now

    settings = AdminSettings(**{**base_env, "DATABASE_URL": sched_db_url})  # type: ignore[arg-type]
    client = await aiohttp_client(create_app(settings))
    resp = await client.post(f"/api/v1/accounts/{account}/sync", headers=key)
    assert resp.status == 202, await resp.text()
    accepted = await resp.json()
    assert accepted["status"] == "pending" and accepted["job_id"] is None
    follow = resp.headers["Location"]
    assert follow == f"/api/v1/triggers/{accepted['trigger_id']}" == accepted["links"]["trigger"]

    await asyncio.sleep(20)
    still = await (await client.get(follow, headers=key)).json()
    assert still["status"] == "pending"
    assert await jobs_of(sdb, account) == []

    proc = start_scheduler()

    outcome: dict[str, Any] = {}

    async def handled() -> bool:
        got = await client.get(follow, headers=key)
        assert got.status == 200, await got.text()
        outcome.update(await got.json())
        return outcome["status"] != "pending"

    await wait_until(handled, within=20, what="the stored trigger handled")
    assert outcome["error"] is None and outcome["job_id"]
    job = await client.get(outcome["links"]["job"], headers=key)
    assert job.status == 200, await job.text()
    job_body = await job.json()
    assert (job_body["job_id"], job_body["status"], job_body["trigger"]) == (
        outcome["job_id"],
        "queued",
        "manual",
    )
    (row,) = await jobs_of(sdb, account)
    assert str(row["job_id"]) == outcome["job_id"]
    assert [str(r.job_id) for _, r in await requests_for(js, {account})] == [outcome["job_id"]]
    assert proc.terminate(timeout=10) == 0
