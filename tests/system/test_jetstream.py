"""The JetStream topology against a real nats-server: provisioning, acks, redelivery."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from shared import topology


async def test_provision_is_idempotent_and_keeps_data(nc: NatsClient) -> None:
    js = nc.jetstream()
    await topology.provision(js)
    ack = await js.publish(
        topology.SYNC_PROGRESS, b"kept", headers={"Nats-Msg-Id": uuid.uuid4().hex}
    )
    await topology.provision(js)  # second start of a service: no error, nothing lost
    info = await js.stream_info(topology.SYNC_RESULTS_STREAM.name)
    assert info.state.last_seq >= ack.seq
    msg = await js.get_msg(topology.SYNC_RESULTS_STREAM.name, ack.seq)
    assert msg.data == b"kept"
    for stream in topology.STREAMS:
        assert (await js.stream_info(stream.name)).config.subjects == stream.subjects
    for consumer in topology.CONSUMERS:
        info = await js.consumer_info(consumer.stream, consumer.durable)
        assert info.config.max_deliver == consumer.config.max_deliver
    kv = await js.key_value(topology.FETCH_PROGRESS_BUCKET.bucket)
    await kv.put("probe", b"1")
    assert (await kv.get("probe")).value == b"1"
    store = await js.object_store(topology.DEAD_LETTER_PAYLOADS_BUCKET.bucket or "")
    await store.put("probe", b"1")
    assert (await store.get("probe")).data == b"1"


async def test_provision_updates_a_changed_config(nc: NatsClient) -> None:
    js = nc.jetstream()
    await topology.provision(js)
    name = topology.DEAD_LETTER_STREAM.name
    changed = StreamConfig(name=name, subjects=topology.DEAD_LETTER_STREAM.subjects, max_age=3600)
    await js.update_stream(changed)
    assert (await js.stream_info(name)).config.max_age == 3600
    await topology.provision(js)
    assert (await js.stream_info(name)).config.max_age == topology.DEAD_LETTER_STREAM.max_age


async def test_explicit_ack_and_redelivery_after_nak(nc: NatsClient) -> None:
    js = nc.jetstream()
    stream = f"T_{uuid.uuid4().hex[:8]}"
    subject = f"test.{stream}"
    await js.add_stream(name=stream, subjects=[subject])
    await js.add_consumer(
        stream,
        ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
    )
    sub = await js.pull_subscribe_bind("c", stream=stream)
    for i in range(3):
        await js.publish(subject, f"m{i}".encode())

    first = await sub.fetch(3, timeout=5)
    assert [m.data for m in first] == [b"m0", b"m1", b"m2"]
    assert all(m.metadata.num_delivered == 1 for m in first)
    await first[0].ack_sync()
    await first[1].nak()
    await first[2].ack_sync()

    again = await sub.fetch(1, timeout=5)
    assert again[0].data == b"m1"
    assert again[0].metadata.num_delivered == 2
    await again[0].ack_sync()
    with pytest.raises(asyncio.TimeoutError):
        await sub.fetch(1, timeout=0.5)
    info = await js.consumer_info(stream, "c")
    assert info.num_ack_pending == 0 and info.num_pending == 0
    await sub.unsubscribe()
    await js.delete_stream(stream)


async def test_messages_survive_a_nats_restart(nats_server, nc: NatsClient) -> None:
    js = nc.jetstream()
    await topology.provision(js)
    ack = await js.publish(topology.dead_letter_subject("test-probe"), b"durable")
    nats_server.restart()
    import nats

    nc2 = await nats.connect(nats_server.url)
    try:
        msg = await nc2.jetstream().get_msg(topology.DEAD_LETTER_STREAM.name, ack.seq)
        assert msg.data == b"durable"
    finally:
        await nc2.close()
