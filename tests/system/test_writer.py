"""``sync-airbnb writer`` as a real process against real NATS and PostgreSQL.

Each test makes its own account and job (the database and the streams are shared by
the whole session), publishes what a fetcher would, and reads the database.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from services.writer import bookkeeping, sql, store
from shared import topology
from shared.crypto import CredentialCipher
from shared.messages import (
    CredentialsRotated,
    DeadLetter,
    JobEvent,
    ListingResult,
    Message,
    RowBatch,
    decode,
    encode,
)
from shared.metric_tables import METRIC_TABLES, TableName
from tests.cookies import auth_cookie
from tests.infra import (
    NatsServer,
    ServiceLauncher,
    ServiceProcess,
    blocked_on_a_lock,
    free_port,
    wait_ready,
    wait_until,
)

SCRAPE_DAY = dt.date(2025, 7, 11)
MIDNIGHT = dt.datetime(2025, 7, 11, tzinfo=dt.UTC)
WRITER_ENV = {"WRITER_BATCH_MAX_WAIT_S": "0.05", "WRITER_DB_RETRY_MAX_S": "0.5"}


# --- helpers ------------------------------------------------------------------------------


def start_writer(launcher: ServiceLauncher, env: dict[str, str] | None = None) -> ServiceProcess:
    proc = launcher.start(["writer"], env={**WRITER_ENV, **(env or {})})
    proc.wait_for_log(r"writer ready")
    return proc


async def new_job(
    db: asyncpg.Connection, account_id: str | None = None, *, retry: int = 0
) -> tuple[str, uuid.UUID]:
    """A job (with a new account unless one is given) as the scheduler creates it."""
    job_id = uuid.uuid4()
    if account_id is None:
        account_id = str(uuid.uuid4().int % 10**15)
        await db.execute(
            "INSERT INTO airbnb.accounts (account_id, credentials_encrypted, x_client_version,"
            " user_agent) VALUES ($1, 'not-a-real-token', 'v1', 'test-agent')",
            account_id,
        )
    await db.execute(
        "INSERT INTO airbnb.sync_jobs (job_id, account_id, kind, trigger, dedup_key, scrape_day,"
        " window_start, window_end) VALUES ($1, $2, 'full', 'manual', $3, $4, $5, $6)",
        job_id,
        account_id,
        f"{account_id}:{SCRAPE_DAY}:full" + (f":retry-{retry}" if retry else ""),
        SCRAPE_DAY,
        dt.date(2025, 1, 5),
        dt.date(2025, 8, 16),
    )
    return account_id, job_id


def metric_row(
    table: TableName, account_id: str, listing: str, n: int, scale: float = 1.0
) -> dict[str, Any]:
    spec = METRIC_TABLES[table]
    row: dict[str, Any] = dict.fromkeys(spec.column_names)
    row.update(
        account_id=account_id,
        airbnb_listing_id=listing,
        time=MIDNIGHT,
        airbnb_internal_name=f"name-{listing}",
        extra_metrics={"unlisted_metric": {"value": n}} if n % 2 else {},
    )
    if table == "chart_query":
        row["metric_date"] = dt.date(2025, 1, 1) + dt.timedelta(days=n)
    else:
        row["window_start"] = dt.date(2025, 1, 5) + dt.timedelta(weeks=n)
        row["window_end"] = row["window_start"] + dt.timedelta(days=6)
    for c in spec.columns:
        if c.name in spec.metric_columns:
            if c.sql_type == "bigint":
                row[c.name] = 100 + n
            elif c.sql_type == "double precision":
                row[c.name] = 0.125 * (n + 1) * scale
            else:
                row[c.name] = f"{n}%"
    return row


def subject_of(message: Message) -> str:
    if isinstance(message, RowBatch):
        return topology.rows_subject(message.table)
    if isinstance(message, ListingResult):
        return topology.SYNC_PROGRESS
    if isinstance(message, CredentialsRotated):
        return topology.SYNC_CREDENTIALS
    return topology.SYNC_EVENTS


def msg_id_of(message: Message) -> str:
    if isinstance(message, RowBatch):
        m = message
        return topology.row_batch_msg_id(m.job_id, m.listing_id, m.table, m.chunk_no)
    if isinstance(message, ListingResult):
        return topology.listing_result_msg_id(message.job_id, message.listing_id)
    if isinstance(message, CredentialsRotated):
        return topology.credentials_rotated_msg_id(message.job_id, message.from_version)
    assert isinstance(message, JobEvent)
    return topology.job_event_msg_id(message.job_id, message.event)


async def publish_all(
    js: JetStreamContext, messages: list[Message], *, with_ids: bool = True
) -> int:
    """Publish in order; return the stream sequence of the last message."""
    seq = 0
    for m in messages:
        headers = {"Nats-Msg-Id": msg_id_of(m)} if with_ids else None
        ack = await js.publish(subject_of(m), encode(m), headers=headers)
        seq = ack.seq
    return seq


async def wait_consumed(js: JetStreamContext, seq: int, within: float = 15) -> None:
    """Until the writer consumer has been given everything up to ``seq`` and acked it all."""
    consumer = topology.WRITER_RESULTS

    async def done() -> bool:
        info = await js.consumer_info(consumer.stream, consumer.durable)
        return info.delivered.stream_seq >= seq and info.num_ack_pending == 0

    await wait_until(done, within=within, what=f"the writer to consume up to stream sequence {seq}")


def sync_messages(
    account_id: str,
    job_id: uuid.UUID,
    *,
    failed_listing: str | None = None,
    scale: float = 1.0,
    chunk_rows: int | None = None,
) -> tuple[list[Message], dict[TableName, list[dict[str, Any]]]]:
    """What a fetcher publishes for two listings, L-a and L-b (chart_query in 2 chunks)."""
    listings = ["L-a", "L-b"]
    messages: list[Message] = [
        JobEvent(
            job_id=job_id,
            account_id=account_id,
            event="started",
            listings_total=2,
            listing_ids=listings,
            at=MIDNIGHT + dt.timedelta(hours=5),
        )
    ]
    expected: dict[TableName, list[dict[str, Any]]] = {t: [] for t in METRIC_TABLES}
    for listing in listings:
        if listing == failed_listing:
            messages.append(
                ListingResult(
                    job_id=job_id,
                    account_id=account_id,
                    listing_id=listing,
                    status="failed",
                    error="malformed ChartQuery response",
                )
            )
            continue
        chunks: dict[TableName, int] = {}
        counts: dict[TableName, int] = {}
        for table, n_rows, per_chunk in (
            ("chart_query", 5, 3),
            ("chart_summary", 2, 10),
            ("list_of_metrics", 3, 10),
        ):
            rows = [metric_row(table, account_id, listing, n, scale) for n in range(n_rows)]
            expected[table].extend(rows)
            per_chunk = chunk_rows or per_chunk
            parts = [rows[i : i + per_chunk] for i in range(0, n_rows, per_chunk)]
            for chunk_no, part in enumerate(parts):
                messages.append(
                    RowBatch(
                        job_id=job_id,
                        account_id=account_id,
                        listing_id=listing,
                        table=table,
                        chunk_no=chunk_no,
                        scrape_day=SCRAPE_DAY,
                        rows=part,
                    )
                )
            chunks[table] = len(parts)
            counts[table] = n_rows
        messages.append(
            ListingResult(
                job_id=job_id,
                account_id=account_id,
                listing_id=listing,
                internal_name=f"name-{listing}",
                listing_name=f"Listing {listing}",
                status="published",
                chunks=chunks,
                rows=counts,
            )
        )
    return messages, expected


async def job_row(db: asyncpg.Connection, job_id: uuid.UUID) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM airbnb.sync_jobs WHERE job_id = $1", job_id)


async def wait_job_final(db: asyncpg.Connection, job_id: uuid.UUID) -> asyncpg.Record:
    async def final() -> bool:
        row = await job_row(db, job_id)
        return row["status"] in ("succeeded", "partial", "failed")

    await wait_until(final, within=15, what=f"job {job_id} to end")
    return await job_row(db, job_id)


def plain(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value[:1] == "{" else value


async def metric_rows(
    db: asyncpg.Connection, table: TableName, account_id: str
) -> list[dict[str, Any]]:
    spec = METRIC_TABLES[table]
    order = ", ".join(spec.key)
    records = await db.fetch(
        f"SELECT * FROM airbnb.{table} WHERE account_id = $1 ORDER BY {order}", account_id
    )
    return [{k: plain(v) for k, v in r.items()} for r in records]


async def dump(db: asyncpg.Connection, account_id: str, job_id: uuid.UUID) -> dict[str, Any]:
    """Every row the writer could touch for this account and job, every column."""
    out: dict[str, Any] = {t: await metric_rows(db, t, account_id) for t in METRIC_TABLES}
    for name, query in {
        "account": "SELECT * FROM airbnb.accounts WHERE account_id = $1",
        "listings": "SELECT * FROM airbnb.listings WHERE account_id = $1 ORDER BY 2",
    }.items():
        out[name] = [dict(r) for r in await db.fetch(query, account_id)]
    for name, query in {
        "job": "SELECT * FROM airbnb.sync_jobs WHERE job_id = $1",
        "job_listings": "SELECT * FROM airbnb.sync_job_listings WHERE job_id = $1 ORDER BY 2",
        "ledger": "SELECT * FROM airbnb.sync_committed_chunks WHERE job_id = $1 ORDER BY 2, 3, 4",
    }.items():
        out[name] = [dict(r) for r in await db.fetch(query, job_id)]
    return out


async def dead_letters_about(js: JetStreamContext, needle: str, count: int) -> list[DeadLetter]:
    """Dead letters of the writer whose original payload contains ``needle``."""
    found: list[DeadLetter] = []
    sub = await js.subscribe(topology.dead_letter_subject("writer"), ordered_consumer=True)
    try:
        deadline = time.monotonic() + 15
        while len(found) < count and time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                continue
            letter = decode(DeadLetter, msg.data)
            if needle.encode() in base64.b64decode(letter.payload):
                found.append(letter)
    finally:
        await sub.unsubscribe()
    return found


# --- tests --------------------------------------------------------------------------------


async def test_a_sync_lands_every_row_and_succeeds(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection
) -> None:
    writer = start_writer(launcher)
    js = nc.jetstream()
    account_id, job_id = await new_job(db)
    updates = await nc.subscribe(topology.job_updates_subject(job_id))
    messages, expected = sync_messages(account_id, job_id)
    await publish_all(js, messages)

    job = await wait_job_final(db, job_id)
    assert job["status"] == "succeeded", job
    assert job["listings_total"] == 2
    assert (job["listings_succeeded"], job["listings_failed"]) == (2, 0)
    assert job["rows_written"] == sum(len(rows) for rows in expected.values()) == 20
    assert job["error"] is None and job["started_at"] and job["finished_at"]
    for table, rows in expected.items():
        key = METRIC_TABLES[table].key
        want = sorted(rows, key=lambda r: tuple(str(r[k]) for k in key))
        assert await metric_rows(db, table, account_id) == want, table
    account = await db.fetchrow("SELECT * FROM airbnb.accounts WHERE account_id = $1", account_id)
    assert account["last_sync_at"] is not None
    assert account["credentials_invalid_at"] is None
    listings = await db.fetch(
        "SELECT airbnb_listing_id, airbnb_internal_name, listing_name FROM airbnb.listings"
        " WHERE account_id = $1 ORDER BY 1",
        account_id,
    )
    assert [tuple(r) for r in listings] == [
        ("L-a", "name-L-a", "Listing L-a"),
        ("L-b", "name-L-b", "Listing L-b"),
    ]
    job_listings = await db.fetch(
        "SELECT airbnb_listing_id, status, chunks_expected, chunks_committed, rows_written"
        " FROM airbnb.sync_job_listings WHERE job_id = $1 ORDER BY 1",
        job_id,
    )
    assert [tuple(r) for r in job_listings] == [
        ("L-a", "committed", 4, 4, 10),
        ("L-b", "committed", 4, 4, 10),
    ]

    # Progress displays hear about it on core NATS, ending with the final state.
    last: dict[str, Any] = {}
    with contextlib.suppress(TimeoutError):
        while not last.get("final"):
            last = orjson.loads((await updates.next_msg(timeout=5)).data)
    await updates.unsubscribe()
    assert last["status"] == "succeeded" and last["rows_written"] == 20
    assert last["job_id"] == str(job_id) and last["account_id"] == account_id

    # One structured log line per state change, with the job and the account.
    await asyncio.sleep(0.2)
    lines = [json.loads(line) for line in writer.output().splitlines() if line.startswith("{")]
    changes = [e for e in lines if e.get("job_id") == str(job_id) and "status" in e]
    assert [e["status"] for e in changes] == ["running", "succeeded"]
    assert all(e["account_id"] == account_id for e in changes)
    assert writer.terminate() == 0


async def test_a_failed_listing_makes_the_job_partial(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection
) -> None:
    start_writer(launcher)
    account_id, job_id = await new_job(db)
    messages, _ = sync_messages(account_id, job_id, failed_listing="L-b")
    await publish_all(nc.jetstream(), messages)

    job = await wait_job_final(db, job_id)
    assert job["status"] == "partial"
    assert (job["listings_succeeded"], job["listings_failed"]) == (1, 1)
    assert "L-b" in job["error"] and "malformed ChartQuery response" in job["error"]
    assert job["rows_written"] == 10
    assert len(await metric_rows(db, "chart_query", account_id)) == 5
    failed = await db.fetchrow(
        "SELECT status, error FROM airbnb.sync_job_listings"
        " WHERE job_id = $1 AND airbnb_listing_id = 'L-b'",
        job_id,
    )
    assert tuple(failed) == ("failed", "malformed ChartQuery response")
    # Invariant 3: every listing committed or recorded as failed, so the sync counts.
    assert await db.fetchval(
        "SELECT last_sync_at IS NOT NULL FROM airbnb.accounts WHERE account_id = $1", account_id
    )


async def test_listings_airbnb_left_out_make_the_job_partial_from_its_start(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection
) -> None:
    start_writer(launcher)
    js = nc.jetstream()
    account_id, job_id = await new_job(db)
    messages, _ = sync_messages(account_id, job_id, failed_listing="L-b")
    started, rest = messages[0], messages[1:]
    assert isinstance(started, JobEvent)
    # Airbnb said the host has 5 listings and returned these 2.
    await wait_consumed(
        js, await publish_all(js, [started.model_copy(update={"listings_reported": 5})])
    )
    job = await job_row(db, job_id)
    assert (job["status"], job["error"]) == ("running", "2 of 5 listings returned")

    # A redelivered start without the count (past JetStream's duplicate window) keeps it.
    await publish_all(js, [started], with_ids=False)
    await publish_all(js, rest)
    job = await wait_job_final(db, job_id)
    assert job["status"] == "partial"
    assert job["error"] == (
        "2 of 5 listings returned; 1 of 2 listings failed: L-b (malformed ChartQuery response)"
    )
    assert (job["listings_succeeded"], job["listings_failed"]) == (1, 1)


async def test_auth_failure_fails_the_job_and_marks_the_account(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection
) -> None:
    start_writer(launcher)
    account_id, job_id = await new_job(db)
    messages, _ = sync_messages(account_id, job_id)
    at = MIDNIGHT + dt.timedelta(hours=5, minutes=1)
    auth = JobEvent(
        job_id=job_id,
        account_id=account_id,
        event="auth_failed",
        reason="HTTP 401 from ListingsSectionQuery",
        at=at,
    )
    await publish_all(nc.jetstream(), [messages[0], auth])

    job = await wait_job_final(db, job_id)
    assert job["status"] == "failed"
    assert "authentication failed" in job["error"] and "HTTP 401" in job["error"]
    account = await db.fetchrow("SELECT * FROM airbnb.accounts WHERE account_id = $1", account_id)
    assert account["credentials_invalid_at"] == at
    assert account["credentials_error"] == "HTTP 401 from ListingsSectionQuery"
    assert account["last_sync_at"] is None

    # A final job never changes again: rows that arrive late land, counters do not move.
    before = await job_row(db, job_id)
    seq = await publish_all(nc.jetstream(), messages[1:])
    await wait_consumed(nc.jetstream(), seq)
    assert await job_row(db, job_id) == before
    assert len(await metric_rows(db, "chart_query", account_id)) == 10


async def test_an_auth_failure_of_replaced_credentials_leaves_the_account_unmarked(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection
) -> None:
    """The operator gave new cookies while a sync on the old ones ran into Airbnb's 401."""
    start_writer(launcher)
    account_id, job_id = await new_job(db)
    await db.execute(
        "UPDATE airbnb.accounts SET credentials_version = 2 WHERE account_id = $1", account_id
    )
    messages, _ = sync_messages(account_id, job_id)
    stale = JobEvent(
        job_id=job_id,
        account_id=account_id,
        event="auth_failed",
        reason="HTTP 401 from ChartQuery",
        credentials_version=1,
        at=MIDNIGHT + dt.timedelta(hours=5, minutes=1),
    )
    await publish_all(nc.jetstream(), [messages[0], stale])

    job = await wait_job_final(db, job_id)
    assert job["status"] == "failed" and "authentication failed" in job["error"]
    account = await db.fetchrow("SELECT * FROM airbnb.accounts WHERE account_id = $1", account_id)
    assert account["credentials_invalid_at"] is None  # version 2 is untested, not rejected


async def test_republishing_everything_changes_nothing(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection
) -> None:
    start_writer(launcher)
    js = nc.jetstream()
    account_id, job_id = await new_job(db)
    messages, _ = sync_messages(account_id, job_id, failed_listing="L-b")
    await publish_all(js, messages)
    assert (await wait_job_final(db, job_id))["status"] == "partial"
    before = await dump(db, account_id, job_id)
    assert before["ledger"] and before["chart_query"]

    # Without message ids JetStream stores every copy, so the writer sees each again,
    # twice, and in reverse order too.
    seq = await publish_all(js, messages + messages[::-1], with_ids=False)
    await wait_consumed(js, seq)
    assert await dump(db, account_id, job_id) == before


async def test_a_second_sync_of_the_same_day_overwrites_the_rows(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection
) -> None:
    """Same account and scrape day, so the same row keys: the COPY meets existing rows and
    the writer merges them with ON CONFLICT DO UPDATE; the later values win."""
    start_writer(launcher)
    js = nc.jetstream()
    account_id, first = await new_job(db)
    messages, _ = sync_messages(account_id, first)
    await publish_all(js, messages)
    assert (await wait_job_final(db, first))["status"] == "succeeded"

    _, second = await new_job(db, account_id, retry=1)
    messages, expected = sync_messages(account_id, second, scale=2.0)
    await publish_all(js, messages)
    job = await wait_job_final(db, second)
    assert job["status"] == "succeeded" and job["rows_written"] == 20
    for table, rows in expected.items():
        key = METRIC_TABLES[table].key
        want = sorted(rows, key=lambda r: tuple(str(r[k]) for k in key))
        assert await metric_rows(db, table, account_id) == want, table


async def test_two_writers_share_the_work_and_count_exactly(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection
) -> None:
    # Batches of 2 messages, one row per chunk: one job's chunks interleave across both.
    env = {"WRITER_BATCH_MAX_MESSAGES": "2"}
    writers = [start_writer(launcher, env), start_writer(launcher, env)]
    accounts = [await new_job(db) for _ in range(2)]
    for account_id, job_id in accounts:
        messages, _ = sync_messages(account_id, job_id, chunk_rows=1)
        await publish_all(nc.jetstream(), messages)
    for account_id, job_id in accounts:
        job = await wait_job_final(db, job_id)
        assert job["status"] == "succeeded"
        assert job["rows_written"] == 20 and job["listings_succeeded"] == 2
        assert len(await metric_rows(db, "chart_query", account_id)) == 10
        counted = await db.fetchval(
            "SELECT sum(chunks_committed) FROM airbnb.sync_job_listings WHERE job_id = $1",
            job_id,
        )
        assert counted == 20  # one chunk per row
    # Both took part: each one's /metrics counts committed batches.
    for w in writers:
        port = w.wait_for_log(r"listening on http://[\d.]+:(\d+)").group(1)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
        [count] = [
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("sync_airbnb_writer_batch_rows_count")
        ]
        assert count > 0


async def test_bad_messages_go_to_dead_letters_and_the_rest_commit(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection
) -> None:
    js = nc.jetstream()
    account_id, job_id = await new_job(db)
    messages, expected = sync_messages(account_id, job_id)
    undecodable = f'{{"job_id": "{job_id}", "not": "a ListingResult"}}'.encode()
    # Caught while planning: a date that does not exist.
    bad_date = RowBatch(
        job_id=job_id,
        account_id=account_id,
        listing_id="L-c",
        table="chart_query",
        chunk_no=0,
        scrape_day=SCRAPE_DAY,
        rows=[{**metric_row("chart_query", account_id, "L-c", 0), "metric_date": "2025-02-30"}],
    )
    # Caught by the COPY only: a string where a double goes, so the batch is isolated.
    bad_type = RowBatch(
        job_id=job_id,
        account_id=account_id,
        listing_id="L-d",
        table="chart_summary",
        chunk_no=0,
        scrape_day=SCRAPE_DAY,
        rows=[{**metric_row("chart_summary", account_id, "L-d", 0), "conversion_rate_value": "x"}],
    )
    # Published before the writer starts, so that they share its first batch.
    await topology.provision(js)
    await js.publish(topology.SYNC_PROGRESS, undecodable)
    await publish_all(js, [*messages[:3], bad_date, bad_type, *messages[3:]])
    writer = start_writer(launcher)

    job = await wait_job_final(db, job_id)
    assert job["status"] == "succeeded" and job["rows_written"] == 20
    for table, rows in expected.items():
        assert len(await metric_rows(db, table, account_id)) == len(rows)

    letters = await dead_letters_about(js, str(job_id), 3)
    by_subject = {(letter.subject, base64.b64decode(letter.payload)): letter for letter in letters}
    assert len(by_subject) == 3
    assert "undecodable" in by_subject[(topology.SYNC_PROGRESS, undecodable)].reason
    date_letter = by_subject[(topology.rows_subject("chart_query"), encode(bad_date))]
    assert "chart_query.metric_date" in date_letter.reason
    type_letter = by_subject[(topology.rows_subject("chart_summary"), encode(bad_type))]
    assert "chart_summary.conversion_rate_value" in type_letter.reason
    assert all(letter.service == "writer" and letter.stream_sequence for letter in letters)
    assert "sent to dead letters" in writer.output()
    # Nothing of the bad chunks was written or counted.
    assert not await db.fetchval(
        "SELECT count(*) FROM airbnb.sync_committed_chunks"
        " WHERE job_id = $1 AND airbnb_listing_id IN ('L-c', 'L-d')",
        job_id,
    )


async def test_non_finite_numbers_and_booleans_are_dead_lettered_naming_the_field(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection
) -> None:
    """NaN, Infinity and 1e999 are not JSON, and no metric is a boolean: none is stored."""
    js = nc.jetstream()
    account_id, job_id = await new_job(db)
    messages, expected = sync_messages(account_id, job_id)
    marker = 0.987654321

    def batch(listing: str, value: Any) -> RowBatch:
        row = metric_row("chart_query", account_id, listing, 0)
        return RowBatch(
            job_id=job_id,
            account_id=account_id,
            listing_id=listing,
            table="chart_query",
            chunk_no=0,
            scrape_day=SCRAPE_DAY,
            rows=[row, {**metric_row("chart_query", account_id, listing, 1), **value}],
        )

    subject = topology.rows_subject("chart_query")
    # orjson writes none of the three (NaN becomes null), so the bytes are edited after.
    literals = {"L-nan": b"NaN", "L-inf": b"-Infinity", "L-big": b"1e999"}
    bad = {
        listing: encode(batch(listing, {"conversion_rate_your_value": marker})).replace(
            str(marker).encode(), literal
        )
        for listing, literal in literals.items()
    }
    bad["L-bool"] = encode(batch("L-bool", {"conversion_rate_similar_value": True}))
    await topology.provision(js)
    await publish_all(js, messages[:3])
    for data in bad.values():
        await js.publish(subject, data)
    await publish_all(js, messages[3:])
    start_writer(launcher)

    job = await wait_job_final(db, job_id)
    assert job["status"] == "succeeded" and job["rows_written"] == 20
    letters = await dead_letters_about(js, str(job_id), len(bad))
    by_payload = {base64.b64decode(letter.payload): letter for letter in letters}
    assert set(by_payload) == set(bad.values())
    for listing in literals:
        reason = by_payload[bad[listing]].reason
        assert "rows.1.conversion_rate_your_value" in reason and "not a finite number" in reason
    bool_reason = by_payload[bad["L-bool"]].reason
    assert "row 1: chart_query.conversion_rate_similar_value" in bool_reason
    assert "True" in bool_reason
    assert all(letter.subject == subject for letter in letters)
    # Nothing of the bad batches was written or counted, not even their good first rows.
    assert len(await metric_rows(db, "chart_query", account_id)) == len(expected["chart_query"])
    assert not await db.fetchval(
        "SELECT count(*) FROM airbnb.chart_query"
        " WHERE account_id = $1 AND airbnb_listing_id = ANY($2::text[])",
        account_id,
        list(bad),
    )
    assert not await db.fetchval(
        "SELECT count(*) FROM airbnb.sync_committed_chunks"
        " WHERE job_id = $1 AND airbnb_listing_id = ANY($2::text[])",
        job_id,
        list(bad),
    )


async def test_sigterm_stops_the_writer_cleanly(launcher: ServiceLauncher) -> None:
    writer = start_writer(launcher)
    started = time.monotonic()
    assert writer.terminate(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert "writer stopped" in writer.output()


# --- PostgreSQL going away ----------------------------------------------------------------


class PgProxy:
    """A byte-level TCP or Unix-socket proxy in front of the real PostgreSQL that a test can
    cut (every connection dropped, new ones refused) and restore."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        parts = urlsplit(database_url)
        query = parse_qs(parts.query)
        port = parts.port or int(query.get("port", ["5432"])[0])
        socket_dir = query.get("host", [None])[0]
        self.unix = not parts.hostname and socket_dir is not None
        if self.unix:
            self.target: tuple[str, int] | str = f"{socket_dir}/.s.PGSQL.{port}"
            self.listen_dir = workdir / "pgproxy"
            self.listen_dir.mkdir(exist_ok=True)
            query["host"] = [str(self.listen_dir)]
            query["port"] = [str(port)]
            self.listen_port = port
            self.url = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        else:
            self.target = (parts.hostname or "127.0.0.1", port)
            self.listen_port = free_port()
            netloc = parts.netloc.rsplit("@", 1)
            host = f"127.0.0.1:{self.listen_port}"
            self.url = urlunsplit(
                parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host)
            )
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if isinstance(self.target, str):
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def start(self) -> None:
        if self.unix:
            path = self.listen_dir / f".s.PGSQL.{self.listen_port}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.server = await asyncio.start_unix_server(self._handle, path=str(path))
        else:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()
        await self.server.wait_closed()


@pytest.fixture
async def pg_proxy(database_url: str, tmp_path: Path) -> AsyncIterator[PgProxy]:
    proxy = PgProxy(database_url, tmp_path)
    await proxy.start()
    yield proxy
    with contextlib.suppress(Exception):
        await proxy.cut()


async def test_postgres_outage_delays_the_batch_and_loses_nothing(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection, pg_proxy: PgProxy
) -> None:
    # The proxy runs on this test's event loop: blocking waits go to a thread.
    writer = launcher.start(["writer"], env={**WRITER_ENV, "DATABASE_URL": pg_proxy.url})
    await asyncio.to_thread(writer.wait_for_log, r"writer ready")
    js = nc.jetstream()
    account_id, job_id = await new_job(db)
    messages, expected = sync_messages(account_id, job_id)

    await pg_proxy.cut()
    await publish_all(js, messages)
    await asyncio.to_thread(writer.wait_for_log, r"PostgreSQL unavailable")
    await asyncio.sleep(1.0)  # a few retries with backoff, nothing acked
    assert (await job_row(db, job_id))["status"] == "queued"
    info = await js.consumer_info(topology.WRITER_RESULTS.stream, topology.WRITER_RESULTS.durable)
    assert info.num_ack_pending >= len(messages)

    await pg_proxy.start()
    job = await wait_job_final(db, job_id)
    assert job["status"] == "succeeded" and job["rows_written"] == 20
    for table, rows in expected.items():
        assert len(await metric_rows(db, table, account_id)) == len(rows)
    assert await asyncio.to_thread(writer.terminate) == 0


async def test_sigterm_during_an_outage_naks_the_batch_and_loses_nothing(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection, pg_proxy: PgProxy
) -> None:
    writer = launcher.start(["writer"], env={**WRITER_ENV, "DATABASE_URL": pg_proxy.url})
    await asyncio.to_thread(writer.wait_for_log, r"writer ready")
    account_id, job_id = await new_job(db)
    messages, _ = sync_messages(account_id, job_id)
    await pg_proxy.cut()
    await publish_all(nc.jetstream(), messages)
    await asyncio.to_thread(writer.wait_for_log, r"PostgreSQL unavailable")

    started = time.monotonic()
    assert await asyncio.to_thread(writer.terminate, 10) == 0
    assert time.monotonic() - started < 10
    assert "nak'ed for redelivery" in writer.output()

    # The nak'ed batch goes to the next writer at once (no ack_wait to sit out).
    start_writer(launcher)
    job = await wait_job_final(db, job_id)
    assert job["status"] == "succeeded" and job["rows_written"] == 20


# --- rotated credentials ------------------------------------------------------------------


async def account_with_cookie(db: asyncpg.Connection, cipher: CredentialCipher) -> str:
    """An account holding a real token, as the admin stores it (version 1)."""
    account_id = str(uuid.uuid4().int % 10**15)
    await db.execute(
        "INSERT INTO airbnb.accounts (account_id, credentials_encrypted, x_client_version,"
        " user_agent) VALUES ($1, $2, 'v1', 'test-agent')",
        account_id,
        cipher.encrypt(auth_cookie(account_id, "operator-1")),
    )
    return account_id


def rotated(
    cipher: CredentialCipher, account_id: str, job_id: uuid.UUID, from_version: int, session: str
) -> CredentialsRotated:
    return CredentialsRotated(
        job_id=job_id,
        account_id=account_id,
        from_version=from_version,
        cookie_token=cipher.encrypt(auth_cookie(account_id, session)),
        changed=["_aaj"],
        rotated_at=MIDNIGHT + dt.timedelta(hours=5, minutes=from_version),
    )


async def credentials(
    db: asyncpg.Connection, cipher: CredentialCipher, account_id: str
) -> tuple[int, str, dt.datetime | None, int]:
    """version, the stored cookie, credentials_rotated_at, rotations in the ledger"""
    row = await db.fetchrow(
        "SELECT credentials_version, credentials_encrypted, credentials_rotated_at,"
        " (SELECT count(*) FROM airbnb.credential_rotations r WHERE r.account_id = a.account_id)"
        " AS handled FROM airbnb.accounts a WHERE account_id = $1",
        account_id,
    )
    return (
        row["credentials_version"],
        cipher.decrypt(row["credentials_encrypted"]),
        row["credentials_rotated_at"],
        row["handled"],
    )


async def rotation_counts(writer: ServiceProcess) -> dict[str, float]:
    port = writer.wait_for_log(r"listening on http://[\d.]+:(\d+)").group(1)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    counts = {"applied": 0.0, "dropped": 0.0}
    for line in text.splitlines():
        if line.startswith("sync_airbnb_credential_rotations_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = float(line.split()[-1])
    return counts


async def test_rotated_credentials_apply_once_and_lose_to_the_operators(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection, secret_keys: str
) -> None:
    cipher = CredentialCipher(secret_keys.split(","))
    writer = start_writer(launcher)
    js = nc.jetstream()
    account_id = await account_with_cookie(db, cipher)
    _, job_id = await new_job(db, account_id)
    # The sync failed on auth after Airbnb rotated a cookie: the mark stays, the cookie is kept.
    marked_at = MIDNIGHT + dt.timedelta(hours=6)
    await db.execute(
        "UPDATE airbnb.accounts SET credentials_invalid_at = $2, credentials_error = 'expired'"
        " WHERE account_id = $1",
        account_id,
        marked_at,
    )

    # From the current version: applied.
    first = rotated(cipher, account_id, job_id, 1, "rotated-1")
    await wait_consumed(js, await publish_all(js, [first]))
    assert await credentials(db, cipher, account_id) == (
        2,
        auth_cookie(account_id, "rotated-1"),
        first.rotated_at,
        1,
    )
    marked = await db.fetchrow(
        "SELECT credentials_invalid_at, credentials_error FROM airbnb.accounts"
        " WHERE account_id = $1",
        account_id,
    )
    assert tuple(marked) == (marked_at, "expired")
    assert await rotation_counts(writer) == {"applied": 1, "dropped": 0}

    # Redelivered and replayed (no message id: JetStream stores every copy): no-ops.
    after_first = await credentials(db, cipher, account_id)
    await wait_consumed(js, await publish_all(js, [first, first], with_ids=False))
    assert await credentials(db, cipher, account_id) == after_first
    assert await rotation_counts(writer) == {"applied": 1, "dropped": 0}

    # The operator gives new credentials (as the admin does) while another sync, which
    # read version 2, runs and rotates: its rotation is dropped, the operator's stay.
    await db.execute(
        "UPDATE airbnb.accounts SET credentials_encrypted = $2,"
        " credentials_version = credentials_version + 1, credentials_invalid_at = NULL"
        " WHERE account_id = $1",
        account_id,
        cipher.encrypt(auth_cookie(account_id, "operator-2")),
    )
    _, second_job = await new_job(db, account_id, retry=1)
    stale = rotated(cipher, account_id, second_job, 2, "rotated-2")
    await wait_consumed(js, await publish_all(js, [stale]))
    assert await credentials(db, cipher, account_id) == (
        3,
        auth_cookie(account_id, "operator-2"),
        first.rotated_at,
        2,
    )
    assert await rotation_counts(writer) == {"applied": 1, "dropped": 1}
    # ... and both replayed on top of the operator's: the ledger knows them, so neither
    # changes anything nor is counted again.
    await wait_consumed(js, await publish_all(js, [first, stale], with_ids=False))
    assert (await credentials(db, cipher, account_id))[:2] == (
        3,
        auth_cookie(account_id, "operator-2"),
    )
    assert await rotation_counts(writer) == {"applied": 1, "dropped": 1}

    logs = writer.output()
    dropped = [line for line in logs.splitlines() if "dropped" in line and account_id in line]
    assert dropped and str(second_job) in dropped[0] and "version 2" in dropped[0]
    for token in (first.cookie_token, stale.cookie_token):
        assert token not in logs
    assert "rotated-1" not in logs and "rotated-2" not in logs


async def test_rotations_of_one_account_in_one_batch_apply_in_order(
    db: asyncpg.Connection, secret_keys: str
) -> None:
    """store.commit_batch itself, on the session's PostgreSQL: rotations from versions 1, 2
    and 1 again in one transaction: the first two apply in turn, the third is stale."""
    cipher = CredentialCipher(secret_keys.split(","))
    account_id = await account_with_cookie(db, cipher)
    jobs = [(await new_job(db, account_id, retry=n))[1] for n in range(3)]
    messages = [
        rotated(cipher, account_id, jobs[0], 1, "a"),
        rotated(cipher, account_id, jobs[1], 2, "b"),
        rotated(cipher, account_id, jobs[2], 1, "c"),
    ]
    result = await store.commit_batch(db, [bookkeeping.Planned(m) for m in messages])
    assert [(r.job_id, r.outcome, r.version) for r in result.rotations] == [
        (jobs[0], "applied", 2),
        (jobs[1], "applied", 3),
        (jobs[2], "dropped", 3),
    ]
    assert (await credentials(db, cipher, account_id))[:2] == (3, auth_cookie(account_id, "b"))
    # The whole batch again (a replay): the ledger holds all three, nothing changes.
    before = await credentials(db, cipher, account_id)
    again = await store.commit_batch(db, [bookkeeping.Planned(m) for m in messages])
    assert [r.outcome for r in again.rotations] == ["already_handled"] * 3
    assert await credentials(db, cipher, account_id) == before
    # A deleted account takes no rotation; and restored, the same rotation replayed does
    # not apply after all (the ledger recorded it as handled when it was dropped).
    await db.execute(
        "UPDATE airbnb.accounts SET deleted_at = now() WHERE account_id = $1", account_id
    )
    late = rotated(cipher, account_id, jobs[2], 3, "d")
    (gone,) = (await store.commit_batch(db, [bookkeeping.Planned(late)])).rotations
    assert gone.outcome == "dropped" and (await credentials(db, cipher, account_id))[0] == 3
    await db.execute(
        "UPDATE airbnb.accounts SET deleted_at = NULL WHERE account_id = $1", account_id
    )
    (replayed,) = (await store.commit_batch(db, [bookkeeping.Planned(late)])).rotations
    assert replayed.outcome == "already_handled"
    assert (await credentials(db, cipher, account_id))[:2] == (3, auth_cookie(account_id, "b"))


async def test_a_rotation_without_its_job_goes_to_dead_letters(
    launcher: ServiceLauncher, nc: NatsClient, db: asyncpg.Connection, secret_keys: str
) -> None:
    cipher = CredentialCipher(secret_keys.split(","))
    start_writer(launcher)
    js = nc.jetstream()
    account_id = await account_with_cookie(db, cipher)
    stray = rotated(cipher, account_id, uuid.uuid4(), 1, "stray")
    await wait_consumed(js, await publish_all(js, [stray]))
    (letter,) = await dead_letters_about(js, str(stray.job_id), 1)
    assert letter.subject == topology.SYNC_CREDENTIALS and "does not exist" in letter.reason
    assert (await credentials(db, cipher, account_id))[:2] == (
        1,
        auth_cookie(account_id, "operator-1"),
    )


async def test_a_batch_whose_acks_fail_is_redelivered_and_the_writer_stays_up(
    launcher: ServiceLauncher,
    nats_server: NatsServer,
    nc: NatsClient,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """A real fault in the handler's settle: the batch is committed while nats-server is
    down (its commit waited on a job row this test holds), and with the reconnect buffer
    off every ack raises. The writer keeps serving; the batch comes back and changes nothing.
    """
    js = nc.jetstream()
    await topology.provision(js)
    c = topology.WRITER_RESULTS
    account_id, job_id = await new_job(db)
    messages, expected = sync_messages(account_id, job_id)
    before = (await js.consumer_info(c.stream, c.durable)).delivered.consumer_seq
    port = free_port()
    holder = await asyncpg.connect(database_url)
    try:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("SELECT 1 FROM airbnb.sync_jobs WHERE job_id = $1 FOR UPDATE", job_id)
        seq = await publish_all(js, messages)
        writer = start_writer(
            launcher,
            {
                "NATS_RECONNECT_BUFFER_BYTES": "0",
                "JETSTREAM_ACK_WAIT_S": "2",
                "HTTP_PORT": str(port),
            },
        )
        await wait_until(lambda: blocked_on_a_lock(holder), within=15, what="the commit to wait")
        nats_server.stop()
        await asyncio.to_thread(writer.wait_for_log, r"NATS disconnected")
        await lock.commit()
        await asyncio.to_thread(writer.wait_for_log, r"could not ack a message on airbnb\.sync")
    finally:
        nats_server.start()
        await holder.close()
    await wait_ready(port)
    await wait_consumed(js, seq, within=30)
    info = await js.consumer_info(c.stream, c.durable)
    assert info.delivered.consumer_seq > before + len(messages)  # redelivered
    job = await wait_job_final(db, job_id)
    assert job["status"] == "succeeded", job
    assert job["rows_written"] == sum(len(rows) for rows in expected.values())
    for table, rows in expected.items():
        assert len(await metric_rows(db, table, account_id)) == len(rows), table
    assert writer.proc.poll() is None
    assert "ended unexpectedly" not in writer.output()
    assert writer.terminate() == 0
    await topology.provision(js)  # the consumers' ack_wait back to the default


async def committed_statements(
    conn: asyncpg.Connection, messages: Sequence[Message]
) -> tuple[store.CommitResult, list[str]]:
    """store.commit_batch of ``messages`` and the statements it sent (asyncpg's query
    logger sees each one, BEGIN and COMMIT too; not a COPY). The type lookups asyncpg
    makes once per connection, the first time it meets a type, are left out."""
    statements: list[str] = []
    planned = [bookkeeping.plan_message(m) for m in messages]  # type: ignore[arg-type]
    with conn.query_logger(lambda q: statements.append(q.query)):
        result = await store.commit_batch(conn, planned)
        await asyncio.sleep(0)  # the logger's callbacks run on the loop, soon after
    writers = {v for v in vars(sql).values() if isinstance(v, str)}
    writers |= {*sql.CREATE_TEMP.values(), *sql.UPSERT.values(), "BEGIN;", "COMMIT;"}
    return result, [q for q in statements if q in writers]


async def test_a_batch_takes_the_same_round_trips_for_one_job_or_many(
    database_url: str, db: asyncpg.Connection
) -> None:
    """store.commit_batch itself (issue 17): a batch of chunks of running jobs is BEGIN,
    three statements (ledger, lock, tally), COMMIT and a COPY per table, for one job or
    five; finishing the five, one of them partial, adds the settlement and one statement
    for its failed listing, not one per job."""
    conn = await asyncpg.connect(database_url)
    await store.init_connection(conn)
    try:
        jobs = [await new_job(db) for _ in range(5)]
        all_messages = [
            sync_messages(a, j, failed_listing="L-b" if n == 0 else None)[0]
            for n, (a, j) in enumerate(jobs)
        ]
        started = [m for ms in all_messages for m in ms if isinstance(m, JobEvent)]
        await committed_statements(conn, started)

        def chunks(ms: list[Message], table: str) -> list[Message]:
            return [m for m in ms if isinstance(m, RowBatch) and m.table == table]

        one, statements = await committed_statements(conn, chunks(all_messages[0], "chart_query"))
        assert one.rows_written == {"chart_query": 5} and len(statements) == 5, statements
        five, statements = await committed_statements(
            conn, [m for ms in all_messages[1:] for m in chunks(ms, "chart_query")]
        )
        assert five.rows_written == {"chart_query": 40} and len(statements) == 5, statements
        assert {u.status for u in five.jobs.values()} == {"running"} and len(five.jobs) == 4

        rest = [
            m
            for ms in all_messages
            for m in ms
            if not isinstance(m, JobEvent)
            and not (isinstance(m, RowBatch) and m.table == "chart_query")
        ]
        done, statements = await committed_statements(conn, rest)
        # BEGIN, ledger, lock, results, tally, failed listings, settle, COMMIT; 2 COPYs
        assert len(statements) == 8, statements
        assert len(done.rows_written) == 2
        final = {j: done.jobs[j].status for _, j in jobs}
        assert final == {j: "partial" if n == 0 else "succeeded" for n, (_, j) in enumerate(jobs)}
        partial = await job_row(db, jobs[0][1])
        assert partial["listings_succeeded"] == 1 and partial["listings_failed"] == 1
        assert partial["error"] == "1 of 2 listings failed: L-b (malformed ChartQuery response)"
        assert done.jobs[jobs[0][1]].error == partial["error"]
        for account_id, job_id in jobs[1:]:
            row = await job_row(db, job_id)
            assert (row["listings_succeeded"], row["listings_failed"], row["error"]) == (2, 0, None)
            assert row["rows_written"] == 20 and done.jobs[job_id].rows_written == 20
            synced = await db.fetchval(
                "SELECT last_sync_at FROM airbnb.accounts WHERE account_id = $1", account_id
            )
            assert synced is not None

        # The whole lot again (a redelivery): the ledger holds every chunk, nothing moves.
        again, _ = await committed_statements(conn, [m for ms in all_messages for m in ms])
        assert again.rows_copied == 0 and again.transitions == [] and again.jobs == {}
    finally:
        await conn.close()
