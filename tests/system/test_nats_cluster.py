"""JetStream as a cluster: three nats-server processes on loopback, routed into one
cluster, every stream, consumer and KV bucket with three replicas (JETSTREAM_REPLICAS=3),
and a real sync (simulator, scheduler, fetcher, writer as processes) that loses the node
leading them all to kill -9 mid-sync and gets it back later.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from shared import topology
from shared.airbnb.windows import sync_window
from shared.migrate import apply_migrations
from tests.infra import (
    NatsCluster,
    PostgresServer,
    ServiceLauncher,
    create_database,
    drop_database,
    new_database_name,
    wait_until,
)
from tests.stack import Stack, wait_for_jobs
from tests.system.test_data_path import SEED, TODAY, assert_rows_as_simulated

pytestmark = pytest.mark.slow

REPLICAS = 3
KV_STREAM = f"KV_{topology.FETCH_PROGRESS_BUCKET.bucket}"
OBJ_STREAMS = [f"OBJ_{store.bucket}" for store in topology.OBJECT_STORES]
STREAM_NAMES = [*(topology._name(s) for s in topology.STREAMS), KV_STREAM, *OBJ_STREAMS]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "nats", size=REPLICAS)
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
async def cluster_js(cluster: NatsCluster) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(cluster.servers, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    js = nc.jetstream(timeout=2)
    # JetStream answers once the nodes have elected a meta leader (a few seconds).
    await wait_until(lambda: _answers(js), within=30, what="a JetStream meta leader")
    try:
        yield js
    finally:
        await nc.close()


async def _answers(js: JetStreamContext) -> bool:
    try:
        await js.account_info()
    except Exception:
        return False
    return True


async def _leaders(js: JetStreamContext) -> dict[str, str | None]:
    """Stream or consumer -> the server leading it (None while it has none)."""
    leaders: dict[str, str | None] = {}
    for name in STREAM_NAMES:
        info = await js.stream_info(name)
        leaders[name] = info.cluster.leader if info.cluster else None
    for consumer in topology.CONSUMERS:
        cinfo = await js.consumer_info(consumer.stream, consumer.durable)
        leaders[consumer.durable] = cinfo.cluster.leader if cinfo.cluster else None
    return leaders


async def _all_replicated(js: JetStreamContext) -> bool:
    """Every stream and consumer has a leader and its other replicas are current."""
    try:
        for name in STREAM_NAMES:
            info = await js.stream_info(name)
            peers = info.cluster.replicas if info.cluster else None
            if not (info.cluster and info.cluster.leader and peers):
                return False
            if len(peers) != REPLICAS - 1 or not all(p.current for p in peers):
                return False
        for consumer in topology.CONSUMERS:
            cinfo = await js.consumer_info(consumer.stream, consumer.durable)
            cpeers = cinfo.cluster.replicas if cinfo.cluster else None
            if not (cinfo.cluster and cinfo.cluster.leader and cpeers):
                return False
            if len(cpeers) != REPLICAS - 1 or not all(p.current for p in cpeers):
                return False
    except Exception:  # a leader election under way: no answer yet
        return False
    return True


async def _lead_everything_from(nc: NatsClient, js: JetStreamContext, node: str) -> None:
    """Move the leader of every stream and consumer to ``node`` (a stepdown with a
    preferred server), so that killing that one node takes every leader down at once."""

    async def step_down(subject: str) -> None:
        body = json.dumps({"placement": {"preferred": node}}).encode()
        await nc.request(subject, body, timeout=5)  # "already leader" is fine too

    for name in STREAM_NAMES:
        await step_down(f"$JS.API.STREAM.LEADER.STEPDOWN.{name}")
    for consumer in topology.CONSUMERS:
        await step_down(f"$JS.API.CONSUMER.LEADER.STEPDOWN.{consumer.stream}.{consumer.durable}")

    async def all_on_node() -> bool:
        try:
            return set((await _leaders(js)).values()) == {node}
        except Exception:
            return False

    await wait_until(all_on_node, within=20, what=f"every leader on {node}")


async def test_provision_gives_every_stream_consumer_and_bucket_three_replicas_and_never_lowers(
    cluster_js: JetStreamContext,
) -> None:
    js = cluster_js
    await topology.provision(js, replicas=REPLICAS)
    await wait_until(lambda: _all_replicated(js), within=30, what="R3 everywhere")
    for name in STREAM_NAMES:
        assert (await js.stream_info(name)).config.num_replicas == REPLICAS, name
    for consumer in topology.CONSUMERS:
        info = await js.consumer_info(consumer.stream, consumer.durable)
        # 0: the stream's replicas, so the consumer follows whoever raised the stream.
        assert info.config.num_replicas == 0
        assert info.cluster and len(info.cluster.replicas or []) == REPLICAS - 1

    # A service with a stale environment (JETSTREAM_REPLICAS unset: 1) starts: kept at 3.
    await topology.provision(js)
    for name in STREAM_NAMES:
        assert (await js.stream_info(name)).config.num_replicas == REPLICAS, name
    assert await _all_replicated(js)


async def test_more_replicas_than_a_single_server_can_place_is_an_error_naming_the_setting(
    nc: NatsClient,
) -> None:
    js = nc.jetstream()
    await topology.provision(js)
    with pytest.raises(topology.ReplicasUnavailable, match="JETSTREAM_REPLICAS=3: ") as err:
        await topology.provision(js, replicas=3)
    assert "non-clustered" in str(err.value)
    for name in STREAM_NAMES:  # nothing changed
        assert (await js.stream_info(name)).config.num_replicas == 1, name


async def test_kill_9_of_the_node_leading_every_stream_mid_sync_converges(
    tmp_path: Path,
    cluster: NatsCluster,
    cluster_js: JetStreamContext,
    postgres_server: PostgresServer,
    secret_keys: str,
) -> None:
    js = cluster_js
    await topology.provision(js, replicas=REPLICAS)
    await wait_until(lambda: _all_replicated(js), within=30, what="R3 everywhere")
    # The node leading the results stream (the busiest) is made to lead everything.
    results = await js.stream_info(topology._name(topology.SYNC_RESULTS_STREAM))
    assert results.cluster and results.cluster.leader
    doomed = results.cluster.leader
    await _lead_everything_from(js._nc, js, doomed)

    name = new_database_name("sync_airbnb_cluster")
    url = await create_database(postgres_server, name)
    apply_migrations(url)
    env = {
        "NATS_URL": cluster.url,
        "JETSTREAM_REPLICAS": str(REPLICAS),
        "DATABASE_URL": url,
        "SECRET_KEYS": secret_keys,
        "AIRBNB_MIN_INTERVAL_S": "0",
        "HTTP_PORT": "0",
        "PYTHONUNBUFFERED": "1",
        "JETSTREAM_ACK_WAIT_S": "4",
        "FETCHER_HEARTBEAT_S": "1",
        "FETCHER_RETRY_BASE_S": "0.5",
        "FETCHER_RETRY_CAP_S": "2",
        "WRITER_DB_RETRY_MAX_S": "2",
    }
    launcher = ServiceLauncher(base_env=env, logdir=tmp_path)
    db = await asyncpg.connect(url)
    try:
        stack = Stack(launcher, url, secret_keys, TODAY)
        # Latency stretches the sync over seconds, so there is a "middle" to disturb.
        sim = await stack.start_simulator(
            accounts=2, listings=4, seed=SEED, faults={"latency_ms": {"mean": 6, "jitter": 2}}
        )
        ids = [a["account_id"] for a in sim.accounts]
        await stack.register(db, sim.accounts)
        stack.start("writer")
        stack.start("fetcher")
        stack.start("scheduler")

        async def rows() -> int:
            return int(await db.fetchval("SELECT count(*) FROM airbnb.chart_query"))

        async def rows_beyond(floor: int) -> bool:
            return await rows() > floor

        async def finished() -> bool:
            return not await db.fetchval(
                "SELECT count(*) FROM airbnb.sync_jobs WHERE account_id = ANY($1) "
                "AND status IN ('queued', 'running')",
                ids,
            )

        await wait_until(lambda: rows_beyond(0), within=60, what="some rows committed")
        assert not await finished(), "the sync finished before it could be disturbed"
        assert set((await _leaders(js)).values()) == {doomed}

        killed_at = time.monotonic()
        cluster.nodes[doomed].kill()
        rows_at_kill = await rows()

        async def led_elsewhere() -> bool:
            try:
                leaders = await _leaders(js)
            except Exception:
                return False
            return all(leader not in (None, doomed) for leader in leaders.values())

        await wait_until(led_elsewhere, within=30, what="new leaders on the two nodes left")
        reelected_s = time.monotonic() - killed_at

        # Two nodes of three carry on: more rows are written while the third is away,
        # unless the sync ends first.
        async def progressed() -> bool:
            return await rows_beyond(rows_at_kill) or await finished()

        await wait_until(
            progressed,
            within=60,
            what="the sync to go on without the killed node",
        )
        cluster.nodes[doomed].start()  # the same name, ports and store: it rejoins

        jobs = await wait_for_jobs(db, ids, scrape_day=TODAY, timeout=180)
        assert [j["status"] for j in jobs] == ["succeeded"] * len(ids), jobs
        window = sync_window(TODAY, first_run=True)
        await assert_rows_as_simulated(db, sim, sim.accounts, TODAY, window)
        dead = await js.stream_info(topology._name(topology.DEAD_LETTER_STREAM))
        assert dead.state.messages == 0
        # The restarted node caught up: every replica is current again.
        await wait_until(lambda: _all_replicated(js), within=60, what="the node to catch up")
        print(f"leaders re-elected {reelected_s:.1f}s after kill -9 of {doomed}")
    finally:
        await db.close()
        launcher.cleanup()
        await drop_database(postgres_server, name)
