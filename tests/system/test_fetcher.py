"""``sync-airbnb fetcher`` as a real process, against the simulator and a real NATS.

Each test starts its own simulator (its own seed, so request counts are its own)
and its own fetcher, publishes SyncRequests itself and reads what the fetcher
published on AIRBNB_SYNC_RESULTS, keeping only its own job ids: the NATS server
is shared by the whole session.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.fernet import Fernet
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from services.simulator.data import (
    airbnb_days,
    expected_metric_values,
    expected_value_change,
    observed_metrics,
)
from shared import topology
from shared.airbnb.operations import CHART, LIST_OF_METRICS
from shared.airbnb.payloads import plan_listing_requests
from shared.airbnb.windows import sync_window
from shared.crypto import CredentialCipher
from shared.messages import (
    DeadLetter,
    EncryptedCredentials,
    JobEvent,
    ListingResult,
    RowBatch,
    SyncRequest,
    decode,
    encode,
)
from shared.metric_tables import SUMMARY_METRICS, TABLE_NAMES
from tests.infra import (
    NatsServer,
    ServiceLauncher,
    ServiceProcess,
    free_port,
    wait_ready,
    wait_until,
)
from tests.stack import Simulator, StartSimulator

TODAY = dt.date(2025, 7, 11)
WINDOW = sync_window(TODAY, first_run=False)
PLAN_SIZE = len(plan_listing_requests("1", WINDOW, TODAY))  # 18 per listing
LISTINGS = 3


# --- the fetcher -----------------------------------------------------------------------------


def start_fetcher(launcher: ServiceLauncher, sim: Simulator, **env: str) -> ServiceProcess:
    proc = launcher.start(
        ["fetcher"],
        env={"AIRBNB_BASE_URL": sim.url, "SYNC_AIRBNB_TODAY": TODAY.isoformat(), **env},
    )
    proc.wait_for_log(r"pulling sync requests")
    return proc


# --- requests and results --------------------------------------------------------------------


def sync_request(account: dict[str, Any], secret_keys: str, job_id: uuid.UUID) -> SyncRequest:
    cipher = CredentialCipher(secret_keys.split(","))
    return SyncRequest(
        job_id=job_id,
        account_id=account["account_id"],
        kind="incremental",
        trigger="manual",
        scrape_day=TODAY,
        window_start=WINDOW.start,
        window_end=WINDOW.end,
        credentials=EncryptedCredentials(
            cookie_token=cipher.encrypt(account["cookie"]),
            x_client_version="sim-1",
            user_agent="pytest",
        ),
        requested_at=dt.datetime.now(dt.UTC),
    )


async def publish_request(js: JetStreamContext, req: SyncRequest) -> int:
    ack = await js.publish(topology.SYNC_REQUESTED, encode(req))
    return ack.seq


async def request_gone(js: JetStreamContext, seq: int) -> bool:
    """True once the work-queue stream no longer holds the request (acked or termed)."""
    try:
        await js.get_msg(topology.SYNC_REQUESTS_STREAM.name, seq)
    except NotFoundError:
        return True
    return False


@dataclass
class Results:
    """What the fetcher published for one job, read from the stream (after dedup)."""

    job_id: uuid.UUID
    events: list[JobEvent] = field(default_factory=list)
    results: list[ListingResult] = field(default_factory=list)
    batches: list[RowBatch] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def on_message(self, msg: Msg) -> None:
        subject = msg.subject
        if subject == topology.SYNC_EVENTS:
            event = decode(JobEvent, msg.data)
            if event.job_id == self.job_id:
                self.events.append(event)
        elif subject == topology.SYNC_PROGRESS:
            result = decode(ListingResult, msg.data)
            if result.job_id == self.job_id:
                self.results.append(result)
        elif subject.startswith("airbnb.sync.rows."):
            batch = decode(RowBatch, msg.data)
            if batch.job_id == self.job_id:
                self.batches.append(batch)
        else:
            letter = decode(DeadLetter, msg.data)
            if str(self.job_id).encode() in base64.b64decode(letter.payload):
                self.dead_letters.append(letter)

    def complete(self, listings: int) -> bool:
        """Every listing reported, and every chunk it announced read (subjects arrive apart)."""
        announced = sum(n for r in self.results for n in r.chunks.values())
        return len(self.results) == listings and len(self.batches) == announced

    def result_for(self, listing_id: str) -> list[ListingResult]:
        return [r for r in self.results if r.listing_id == listing_id]


@pytest.fixture
async def watch(nc: NatsClient) -> AsyncIterator[Callable[[uuid.UUID], Any]]:
    js = nc.jetstream()
    subs = []

    async def start(job_id: uuid.UUID) -> Results:
        results = Results(job_id)

        async def cb(msg: Msg) -> None:
            results.on_message(msg)

        for subject in (
            topology.SYNC_EVENTS,
            topology.SYNC_PROGRESS,
            topology.SYNC_ROWS,
            topology.dead_letter_subject("fetcher"),
        ):
            subs.append(
                await js.subscribe(
                    subject, cb=cb, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
                )
            )
        return results

    yield start
    for sub in subs:
        await sub.unsubscribe()


@pytest.fixture
def seed() -> int:
    return uuid.uuid4().int % 1_000_000


# --- expectations from the simulator's truth -----------------------------------------------


def check_rows(seed: int, account_id: str, listing_id: str, batches: list[RowBatch]) -> None:
    """The rows of one listing equal what the simulator's truth implies."""
    by_table = {t: [b for b in batches if b.table == t] for t in TABLE_NAMES}
    rows = {
        t: [r for b in sorted(bs, key=lambda b: b.chunk_no) for r in b.rows]
        for t, bs in by_table.items()
    }
    plan = plan_listing_requests(listing_id, WINDOW, TODAY)
    chart_slices = list(dict.fromkeys(r.slice for r in plan if r.query == CHART))
    lom_slices = list(dict.fromkeys(r.slice for r in plan if r.query == LIST_OF_METRICS))
    days = sorted({d for s in chart_slices for d in airbnb_days(s.start, s.end, TODAY)})

    assert [r["metric_date"] for r in rows["chart_query"]] == [d.isoformat() for d in days]
    assert len(rows["chart_summary"]) == len(chart_slices) == 2
    assert len(rows["list_of_metrics"]) == len(lom_slices) == 7
    for table in TABLE_NAMES:
        for row in rows[table]:
            assert row["account_id"] == account_id
            assert row["airbnb_listing_id"] == listing_id
            assert row["time"] == "2025-07-11T00:00:00Z"

    for row in rows["chart_query"][::3]:
        day = dt.date.fromisoformat(row["metric_date"])
        truth = observed_metrics(seed, listing_id, day, TODAY)  # future days: built up
        assert row["p3_impressions_your_value"] == truth.your.p3_impressions
        assert row["p3_impressions_similar_value"] == truth.similar.p3_impressions
        assert row["conversion_rate_your_value"] == pytest.approx(
            truth.your.value("conversion_rate")
        )

    first = chart_slices[0]
    summary = rows["chart_summary"][0]
    assert summary["window_start"] == first.start.isoformat()
    assert summary["window_end"] == first.end.isoformat()
    expected = expected_metric_values(
        seed, listing_id, SUMMARY_METRICS, first.start, first.end, TODAY
    )
    for metric, value in expected.items():
        assert summary[f"{metric}_value"] == pytest.approx(value), metric
    change = expected_value_change(
        seed, listing_id, "p3_impressions", first.start, first.end, TODAY
    )
    assert summary["p3_impressions_value_change"] == pytest.approx(change)

    for part, row in zip(lom_slices, rows["list_of_metrics"], strict=True):
        assert row["window_start"] == part.start.isoformat()
        expected = expected_metric_values(
            seed, listing_id, ("p3_impressions", "p2_impressions"), part.start, part.end, TODAY
        )
        assert row["p3_impressions_value"] == expected["p3_impressions"]
        assert row["p2_impressions_value"] == expected["p2_impressions"]


# --- tests -----------------------------------------------------------------------------------


async def test_a_sync_publishes_every_listing_as_the_simulator_says(
    launcher: ServiceLauncher,
    start_simulator: StartSimulator,
    nc: NatsClient,
    secret_keys: str,
    seed: int,
    watch: Callable[[uuid.UUID], Any],
) -> None:
    js = nc.jetstream()
    sim = await start_simulator(seed=seed, listings=LISTINGS, today=TODAY)
    # A small chunk limit, so that tables are cut into several chunks.
    fetcher = start_fetcher(launcher, sim, FETCHER_CHUNK_MAX_BYTES="4096")
    account = sim.accounts[0]
    listing_ids = [x["listing_id"] for x in account["listings"]]
    job_id = uuid.uuid4()
    results = await watch(job_id)
    seq = await publish_request(js, sync_request(account, secret_keys, job_id))

    await wait_until(lambda: request_gone(js, seq), within=30, what="the request to be acked")
    await wait_until(
        lambda: results.complete(LISTINGS), within=5, what="every ListingResult and chunk"
    )

    assert [e.event for e in results.events] == ["started"]
    started = results.events[0]
    assert started.listings_total == LISTINGS
    assert sorted(started.listing_ids) == sorted(listing_ids)

    kv = await js.key_value(topology.FETCH_PROGRESS_BUCKET.bucket)
    for listing in account["listings"]:
        lid = listing["listing_id"]
        (result,) = results.result_for(lid)
        assert result.status == "published"
        assert result.internal_name == listing["internal_name"]
        assert result.listing_name == listing["listing_name"]
        mine = [b for b in results.batches if b.listing_id == lid]
        chunks = Counter(b.table for b in mine)
        assert result.chunks == {t: chunks[t] for t in TABLE_NAMES}
        assert chunks["chart_query"] > 1 and chunks["list_of_metrics"] > 1
        assert len({(b.table, b.chunk_no) for b in mine}) == len(mine)  # no chunk twice
        assert result.rows == {
            t: sum(len(b.rows) for b in mine if b.table == t) for t in TABLE_NAMES
        }
        # chart_query: every day of the window (future stay dates too), dated a day later.
        assert result.rows == {"chart_query": 49, "chart_summary": 2, "list_of_metrics": 7}
        for b in mine:
            assert len(encode(b)) <= 4096
        check_rows(seed, account["account_id"], lid, mine)
        entry = await kv.get(topology.fetch_progress_key(job_id, lid))
        assert entry.value == b"published"

    counts = await sim.requests(account["account_id"])
    assert counts["total"] == LISTINGS * PLAN_SIZE + 1
    # One page load first, then GraphQL that Airbnb's bot manager has nothing against.
    assert (counts["preflights"], counts["strikes"]) == (1, 0)
    assert counts["ListingsSectionQuery"] == 1
    assert counts["listings"] == {lid: PLAN_SIZE for lid in listing_ids}
    # The cookie never reaches the log.
    assert account["cookie"] not in fetcher.output()
    assert account["cookie"].split("_aat=")[1].split(";")[0] not in fetcher.output()

    # The same request again (a redelivery after the ack was lost): nothing is asked of
    # Airbnb, and whatever is re-published is dropped by JetStream as a duplicate.
    seq = await publish_request(js, sync_request(account, secret_keys, job_id))
    await wait_until(
        lambda: request_gone(js, seq), within=15, what="the repeated request to be acked"
    )
    assert (await sim.requests(account["account_id"]))["total"] == LISTINGS * PLAN_SIZE + 1
    await asyncio.sleep(0.3)
    assert len(results.events) == 1 and len(results.results) == LISTINGS


async def test_a_redelivered_request_skips_the_listings_already_published(
    launcher: ServiceLauncher,
    start_simulator: StartSimulator,
    nc: NatsClient,
    secret_keys: str,
    seed: int,
    watch: Callable[[uuid.UUID], Any],
) -> None:
    js = nc.jetstream()
    sim = await start_simulator(seed=seed, listings=LISTINGS, today=TODAY)
    start_fetcher(launcher, sim)
    account = sim.accounts[1]
    listing_ids = [x["listing_id"] for x in account["listings"]]
    job_id = uuid.uuid4()
    # As a fetcher that died after publishing two listings would have left it.
    kv = await js.key_value(topology.FETCH_PROGRESS_BUCKET.bucket)
    for lid in listing_ids[:2]:
        await kv.put(topology.fetch_progress_key(job_id, lid), b"published")
    results = await watch(job_id)
    seq = await publish_request(js, sync_request(account, secret_keys, job_id))

    await wait_until(lambda: request_gone(js, seq), within=30, what="the request to be acked")
    await wait_until(lambda: results.complete(1), within=5, what="the ListingResult and its chunks")
    assert results.events[0].listings_total == LISTINGS
    assert [r.listing_id for r in results.results] == [listing_ids[2]]
    assert {b.listing_id for b in results.batches} == {listing_ids[2]}
    counts = await sim.requests(account["account_id"])
    assert counts["listings"] == {listing_ids[2]: PLAN_SIZE}
    assert counts["total"] == PLAN_SIZE + 1


async def test_an_expired_session_stops_the_sync_after_one_request(
    launcher: ServiceLauncher,
    start_simulator: StartSimulator,
    nc: NatsClient,
    secret_keys: str,
    seed: int,
    watch: Callable[[uuid.UUID], Any],
) -> None:
    js = nc.jetstream()
    sim = await start_simulator(seed=seed, listings=LISTINGS, today=TODAY)
    account = sim.accounts[0]
    await sim.faults({"expired_sessions": {account["account_id"]: "http_401"}})
    fetcher = start_fetcher(launcher, sim)
    job_id = uuid.uuid4()
    results = await watch(job_id)
    seq = await publish_request(js, sync_request(account, secret_keys, job_id))

    await wait_until(lambda: request_gone(js, seq), within=30, what="the request to be acked")
    await wait_until(lambda: results.events, within=5, what="the auth_failed event")
    (event,) = results.events
    assert event.event == "auth_failed"
    assert event.reason and "http_401" in event.reason
    assert account["cookie"] not in event.reason
    assert results.results == [] and results.batches == []
    counts = await sim.requests(account["account_id"])
    assert counts["total"] == 1
    await asyncio.sleep(0.5)  # no retry follows
    assert (await sim.requests(account["account_id"]))["total"] == 1
    assert account["cookie"] not in fetcher.output()


async def test_malformed_data_fails_one_listing_and_the_others_go_on(
    launcher: ServiceLauncher,
    start_simulator: StartSimulator,
    nc: NatsClient,
    secret_keys: str,
    seed: int,
    watch: Callable[[uuid.UUID], Any],
) -> None:
    js = nc.jetstream()
    sim = await start_simulator(seed=seed, listings=LISTINGS, today=TODAY)
    account = sim.accounts[0]
    listing_ids = [x["listing_id"] for x in account["listings"]]
    broken = listing_ids[1]
    await sim.faults({"malformed_listings": [broken]})
    start_fetcher(launcher, sim)
    job_id = uuid.uuid4()
    results = await watch(job_id)
    seq = await publish_request(js, sync_request(account, secret_keys, job_id))

    await wait_until(lambda: request_gone(js, seq), within=30, what="the request to be acked")
    await wait_until(
        lambda: results.complete(LISTINGS), within=5, what="every ListingResult and chunk"
    )
    (failed,) = results.result_for(broken)
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.startswith("ChartQuery conversion_rate")
    assert "malformed Airbnb response" in failed.error
    assert "metricLineCharts: missing" in failed.error
    assert failed.chunks == {}
    for lid in listing_ids:
        if lid != broken:
            (ok,) = results.result_for(lid)
            assert ok.status == "published"
    assert broken not in {b.listing_id for b in results.batches}
    kv = await js.key_value(topology.FETCH_PROGRESS_BUCKET.bucket)
    assert (await kv.get(topology.fetch_progress_key(job_id, broken))).value == b"failed"
    counts = await sim.requests(account["account_id"])
    # The broken listing stops at its first bad answer.
    assert counts["listings"][broken] == 1
    assert counts["total"] == 2 * PLAN_SIZE + 1 + 1


async def test_a_sync_that_keeps_failing_is_reported_and_dead_lettered(
    launcher: ServiceLauncher,
    start_simulator: StartSimulator,
    nc: NatsClient,
    secret_keys: str,
    seed: int,
    watch: Callable[[uuid.UUID], Any],
) -> None:
    js = nc.jetstream()
    sim = await start_simulator(seed=seed, listings=LISTINGS, today=TODAY)
    await sim.faults({"server_error_rate": 1.0})
    account = sim.accounts[0]
    start_fetcher(
        launcher,
        sim,
        AIRBNB_MAX_ATTEMPTS="1",
        FETCHER_RETRY_BASE_S="0.05",
        FETCHER_RETRY_CAP_S="0.2",
    )
    job_id = uuid.uuid4()
    results = await watch(job_id)
    seq = await publish_request(js, sync_request(account, secret_keys, job_id))

    await wait_until(lambda: request_gone(js, seq), within=30, what="the request to be termed")
    await wait_until(
        lambda: results.events and results.dead_letters, within=5, what="event and dead letter"
    )
    (event,) = results.events
    assert event.event == "failed"
    assert event.reason is not None
    assert f"gave up after {topology.MAX_DELIVER} deliveries" in event.reason
    assert "ListingsSectionQuery" in event.reason
    (letter,) = results.dead_letters
    assert letter.service == "fetcher"
    assert letter.subject == topology.SYNC_REQUESTED
    assert letter.deliveries == topology.MAX_DELIVER
    counts = await sim.requests(account["account_id"])
    assert counts["ListingsSectionQuery"] == topology.MAX_DELIVER


async def test_a_token_no_key_decrypts_fails_the_job_at_the_first_delivery(
    launcher: ServiceLauncher,
    start_simulator: StartSimulator,
    nc: NatsClient,
    secret_keys: str,
    seed: int,
    watch: Callable[[uuid.UUID], Any],
) -> None:
    """Only the keys can fix it: no retries, the job fails at once, the reason says what to run."""
    js = nc.jetstream()
    sim = await start_simulator(seed=seed, listings=LISTINGS, today=TODAY)
    account = sim.accounts[0]
    # Default retry settings: a transient failure would be redelivered far beyond this test.
    fetcher = start_fetcher(launcher, sim)
    job_id = uuid.uuid4()
    results = await watch(job_id)
    other_key = Fernet.generate_key().decode()
    seq = await publish_request(js, sync_request(account, other_key, job_id))

    await wait_until(lambda: request_gone(js, seq), within=15, what="the request to be termed")
    await wait_until(
        lambda: results.events and results.dead_letters, within=5, what="event and dead letter"
    )
    (event,) = results.events
    assert event.event == "failed"
    assert event.reason is not None
    assert "SECRET_KEYS" in event.reason
    assert "sync-airbnb rotate-keys" in event.reason
    assert "gave up after" not in event.reason
    (letter,) = results.dead_letters
    assert letter.deliveries == 1
    assert "SECRET_KEYS" in letter.reason
    assert results.results == [] and results.batches == []
    assert (await sim.requests(account["account_id"]))["total"] == 0
    assert account["cookie"] not in fetcher.output()


async def test_sigterm_hands_back_the_sync_in_flight_and_exits_cleanly(
    launcher: ServiceLauncher,
    start_simulator: StartSimulator,
    nc: NatsClient,
    secret_keys: str,
    seed: int,
    watch: Callable[[uuid.UUID], Any],
) -> None:
    js = nc.jetstream()
    sim = await start_simulator(seed=seed, listings=LISTINGS, today=TODAY)
    # Slow answers, so the sync is still running when the signal comes.
    await sim.faults({"latency_ms": {"mean": 60, "jitter": 0}})
    account = sim.accounts[0]
    listing_ids = [x["listing_id"] for x in account["listings"]]
    first = start_fetcher(launcher, sim)
    job_id = uuid.uuid4()
    results = await watch(job_id)
    seq = await publish_request(js, sync_request(account, secret_keys, job_id))
    await wait_until(lambda: results.results, within=30, what="the first listing to be published")

    started = time.monotonic()
    assert await asyncio.to_thread(first.terminate, 10) == 0
    assert time.monotonic() - started < 10
    assert "handed back 1 sync requests in flight" in first.output()
    assert not await request_gone(js, seq)  # nak'ed, not acked

    start_fetcher(launcher, sim)
    await wait_until(lambda: request_gone(js, seq), within=30, what="the request to be acked")
    await wait_until(
        lambda: results.complete(LISTINGS), within=5, what="every ListingResult and chunk"
    )
    assert sorted(r.listing_id for r in results.results) == sorted(listing_ids)
    done_before = results.results[0].listing_id
    counts = await sim.requests(account["account_id"])
    # The listing published before the signal was not fetched again, nor the listings list.
    assert counts["listings"][done_before] == PLAN_SIZE
    assert counts["ListingsSectionQuery"] == 1
    assert [e.event for e in results.events] == ["started"]


async def test_replicas_share_the_queue_and_no_account_is_synced_twice(
    launcher: ServiceLauncher,
    start_simulator: StartSimulator,
    nc: NatsClient,
    secret_keys: str,
    seed: int,
    watch: Callable[[uuid.UUID], Any],
) -> None:
    js = nc.jetstream()
    sim = await start_simulator(seed=seed, listings=LISTINGS, today=TODAY)
    await sim.faults({"latency_ms": {"mean": 20, "jitter": 0}})
    # One slot each: a replica holding a sync pulls nothing else, so the other takes it.
    fetchers = [start_fetcher(launcher, sim, FETCHER_CONCURRENCY="1") for _ in range(2)]
    jobs = {account["account_id"]: uuid.uuid4() for account in sim.accounts}
    watched = {aid: await watch(job_id) for aid, job_id in jobs.items()}
    seqs = [
        await publish_request(js, sync_request(account, secret_keys, jobs[account["account_id"]]))
        for account in sim.accounts
    ]
    for seq in seqs:
        await wait_until(
            lambda seq=seq: request_gone(js, seq), within=30, what="every request to be acked"
        )
    for account in sim.accounts:
        aid = account["account_id"]
        await wait_until(
            lambda aid=aid: watched[aid].complete(LISTINGS), within=5, what="every listing"
        )
        counts = await sim.requests(aid)
        assert counts["ListingsSectionQuery"] == 1
        assert counts["total"] == LISTINGS * PLAN_SIZE + 1
    # Both replicas worked, one account each.
    for fetcher in fetchers:
        assert sum(str(job_id) in fetcher.output() for job_id in jobs.values()) == 1


async def test_a_sync_whose_nak_fails_is_redelivered_and_the_fetcher_stays_up(
    launcher: ServiceLauncher,
    start_simulator: StartSimulator,
    nats_server: NatsServer,
    nc: NatsClient,
    secret_keys: str,
    seed: int,
    watch: Callable[[uuid.UUID], Any],
) -> None:
    """A real fault in the handler's settle: nats-server stops in the middle of a sync, the
    sync fails (its publishes fail) and, with the reconnect buffer off, so does its nak.
    The fetcher keeps serving; the request comes back (delivery 2) and is synced to the end.
    """
    js = nc.jetstream()
    sim = await start_simulator(seed=seed, listings=LISTINGS, today=TODAY)
    await sim.faults({"latency_ms": {"mean": 60, "jitter": 0}})  # the sync takes a while
    account = sim.accounts[0]
    listing_ids = [x["listing_id"] for x in account["listings"]]
    port = free_port()
    fetcher = start_fetcher(
        launcher,
        sim,
        NATS_RECONNECT_BUFFER_BYTES="0",
        JETSTREAM_ACK_WAIT_S="2",
        HTTP_PORT=str(port),
    )
    job_id = uuid.uuid4()
    results = await watch(job_id)
    seq = await publish_request(js, sync_request(account, secret_keys, job_id))
    await wait_until(lambda: results.results, within=30, what="the first listing to be published")
    try:
        nats_server.stop()
        await asyncio.to_thread(
            fetcher.wait_for_log, r"could not nak a message on airbnb\.sync\.requested"
        )
    finally:
        nats_server.start()
    await wait_ready(port)
    await wait_until(
        lambda: request_gone(js, seq), within=30, what="the redelivered request to be acked"
    )
    kv = await js.key_value(topology.FETCH_PROGRESS_BUCKET.bucket)
    for listing_id in listing_ids:
        entry = await kv.get(topology.fetch_progress_key(job_id, listing_id))
        assert entry.value == b"published", listing_id
    assert '"delivery":2' in fetcher.output()
    assert fetcher.proc.poll() is None
    assert "ended unexpectedly" not in fetcher.output()
    await wait_ready(port)
    assert fetcher.terminate(timeout=10) == 0
    await topology.provision(js)  # the consumers' ack_wait back to the default
