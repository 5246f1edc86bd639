"""A message too large to be dead-lettered inline, on every consumed subject.

A 900 KB message inlined as base64 makes a dead letter over NATS's 1 MiB max_payload.
Each one must still reach the dead letters (by reference, the original kept in the
payload object store), no service may go down for it, and a normal sync afterwards
succeeds. The scheduler, fetcher and writer run as real processes over a NATS server
and a database of the test's own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest

from shared import topology
from shared.messages import AccountEvent, DeadLetter, decode, encode
from shared.metric_tables import TABLE_NAMES
from tests.infra import (
    NatsServer,
    PostgresServer,
    wait_until,
)
from tests.stack import FAST_RECOVERY_ENV, Stack, isolated_stack, wait_for_jobs

pytestmark = pytest.mark.slow

TODAY = dt.date(2025, 7, 11)
SIZE = 900_000


@pytest.fixture
async def stack(
    tmp_path: Path, postgres_server: PostgresServer, secret_keys: str
) -> AsyncIterator[tuple[Stack, NatsServer]]:
    async with isolated_stack(
        tmp_path,
        postgres_server,
        secret_keys,
        TODAY,
        database_prefix="sync_airbnb_dlsize",
        env=FAST_RECOVERY_ENV,
    ) as stack:
        assert stack.nats is not None
        yield stack, stack.nats


def garbage_subjects() -> list[str]:
    return [
        topology.account_event_subject("created"),
        topology.sync_trigger_subject(uuid.uuid4()),
        topology.SYNC_REQUESTED,
        *(topology.rows_subject(table) for table in TABLE_NAMES),
        topology.SYNC_PROGRESS,
        topology.SYNC_EVENTS,
        topology.SYNC_CREDENTIALS,
    ]


async def test_900_kb_garbage_on_every_subject_is_dead_lettered_by_reference(
    stack: tuple[Stack, NatsServer], secret_keys: str
) -> None:
    services, nats_server = stack
    sim = await services.start_simulator(accounts=1, listings=2, seed=11)
    procs = {name: services.start(name) for name in ("writer", "fetcher", "scheduler")}
    pids = {name: proc.pid for name, proc in procs.items()}

    subjects = garbage_subjects()
    sent: dict[str, bytes] = {}
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        for subject in subjects:
            body = os.urandom(SIZE)
            sent[subject] = body
            await js.publish(subject, body)

        async def letters() -> list[DeadLetter]:
            info = await js.stream_info(topology.DEAD_LETTER_STREAM.name or "")
            if not info.state.messages:
                return []
            return [
                decode(DeadLetter, (await js.get_msg(info.config.name or "", seq)).data or b"")
                for seq in range(info.state.first_seq, info.state.last_seq + 1)
            ]

        async def all_dead_lettered() -> bool:
            return {d.subject for d in await letters()} >= set(subjects)

        await wait_until(all_dead_lettered, within=60, what="a dead letter for each subject")
        store = await js.object_store(topology.DEAD_LETTER_PAYLOADS_BUCKET.bucket or "")
        for letter in await letters():
            body = sent[letter.subject]
            assert letter.payload is None
            assert letter.payload_size == SIZE
            assert letter.payload_sha256 == hashlib.sha256(body).hexdigest()
            ref = letter.payload_ref
            assert ref is not None and ref.stream and ref.stream_sequence
            assert ref.stream_sequence == letter.stream_sequence
            assert (await store.get(ref.name)).data == body
            # The results stream keeps its messages: the original is there too.
            if ref.stream == topology.SYNC_RESULTS_STREAM.name:
                assert (await js.get_msg(ref.stream, ref.stream_sequence)).data == body

        for name, proc in procs.items():
            assert proc.proc.poll() is None, f"{name} exited:\n{proc.output()[-3000:]}"
            assert proc.pid == pids[name]

        # A normal sync afterwards: a new account, announced as the admin API does.
        db = await asyncpg.connect(services.database_url)
        try:
            await services.register(db, sim.accounts)
            account_id = sim.accounts[0]["account_id"]
            event = AccountEvent(event="created", account_id=account_id, at=dt.datetime.now(dt.UTC))
            await js.publish(topology.account_event_subject("created"), encode(event))
            jobs = await wait_for_jobs(db, [account_id], scrape_day=TODAY, timeout=90)
            assert [j["status"] for j in jobs] == ["succeeded"]
        finally:
            await db.close()
        for name, proc in procs.items():
            assert proc.proc.poll() is None and proc.pid == pids[name], name
    finally:
        await nc.close()
