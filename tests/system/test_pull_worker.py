"""shared/jetstream.py: the one pull worker's settle on a real NATS. Its pure parts are in
tests/unit/test_pull_worker.py."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from shared import topology
from shared.jetstream import Delivery, PullWorker
from shared.messages import DeadLetter, decode
from tests.infra import NatsServer, wait_until

# --- on a real nats-server ----------------------------------------------------------------


@pytest.fixture
async def consumer(nc: NatsClient) -> AsyncIterator[topology.Consumer]:
    js = nc.jetstream()
    await topology.provision(js)
    stream = f"PW_{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=stream, subjects=[f"pw.{stream}"])
    config = ConsumerConfig(
        durable_name="pw", ack_policy=AckPolicy.EXPLICIT, ack_wait=1, max_deliver=-1
    )
    await js.add_consumer(stream, config)
    yield topology.Consumer(stream, config)
    await js.delete_stream(stream)


def subject_of(c: topology.Consumer) -> str:
    return f"pw.{c.stream}"


async def drained(js: JetStreamContext, c: topology.Consumer, within: float = 10) -> None:
    async def empty() -> bool:
        info = await js.consumer_info(c.stream, c.durable)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await wait_until(empty, within=within, what=f"consumer {c.durable} to be drained")


async def test_batches_fill_within_the_window_and_respect_the_cap(
    nc: NatsClient, consumer: topology.Consumer
) -> None:
    js = nc.jetstream()
    for i in range(5):
        await js.publish(subject_of(consumer), f"m{i}".encode())
    batches: list[list[bytes]] = []

    async def handle(batch: Sequence[Delivery]) -> None:
        batches.append([d.data for d in batch])
        for d in batch:
            await d.ack()

    stopping = asyncio.Event()
    worker = PullWorker(
        js,
        consumer,
        handle,
        service="test",
        max_in_flight=3,
        batch_max=3,
        batch_wait_s=0.2,
        fetch_wait_s=0.2,
    )
    task = asyncio.create_task(worker.run(stopping))
    await drained(js, consumer)
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert [b"".join(b) for b in batches] == [b"m0m1m2", b"m3m4"]


async def test_settle_never_raises_and_the_message_comes_back(
    nats_server: NatsServer, nc: NatsClient, consumer: topology.Consumer
) -> None:
    """An ack whose connection is gone (a real ConnectionClosedError) is logged, not raised."""
    js = nc.jetstream()
    await js.publish(subject_of(consumer), b"once")
    other = await nats.connect(nats_server.url)
    sub = await other.jetstream().pull_subscribe_bind(consumer.durable, stream=consumer.stream)
    (msg,) = await sub.fetch(1, timeout=5)
    await other.close()
    delivery = Delivery(msg, js=other.jetstream(), service="test")
    with pytest.raises(nats.errors.ConnectionClosedError):
        await msg.ack()  # what the scheduler's loop did, unguarded
    await delivery.ack()
    await delivery.nak(1.0)
    await delivery.term()
    await delivery.in_progress()
    assert delivery.settled
    # Nothing reached the server: JetStream redelivers after ack_wait.
    sub2 = await js.pull_subscribe_bind(consumer.durable, stream=consumer.stream)
    (again,) = await sub2.fetch(1, timeout=5)
    assert again.data == b"once" and again.metadata.num_delivered == 2
    await again.ack_sync()


async def test_a_dead_letter_that_cannot_be_sent_naks_instead(
    nats_server: NatsServer, nc: NatsClient, consumer: topology.Consumer, caplog
) -> None:
    js = nc.jetstream()
    await js.publish(subject_of(consumer), b"stuck")
    other = await nats.connect(nats_server.url)
    sub = await other.jetstream().pull_subscribe_bind(consumer.durable, stream=consumer.stream)
    (msg,) = await sub.fetch(1, timeout=5)
    await other.close()
    delivery = Delivery(msg, js=other.jetstream(), service="test")
    with caplog.at_level(logging.WARNING, logger="sync_airbnb.jetstream"):
        assert not await delivery.dead_letter("why", category="test", nak_delay=0.1)
    text = caplog.text
    assert "could not dead-letter a message" in text and "could not nak a message" in text
    sub2 = await js.pull_subscribe_bind(consumer.durable, stream=consumer.stream)
    (again,) = await sub2.fetch(1, timeout=5)
    assert again.data == b"stuck"
    await again.ack_sync()


async def test_retry_or_dead_letter_naks_until_max_deliver_then_dead_letters(
    nc: NatsClient, consumer: topology.Consumer
) -> None:
    js = nc.jetstream()
    service = f"pw-{uuid.uuid4().hex[:6]}"
    letters = await js.subscribe(topology.dead_letter_subject(service), ordered_consumer=True)
    await js.publish(subject_of(consumer), b"poison")
    sub = await js.pull_subscribe_bind(consumer.durable, stream=consumer.stream)
    outcomes = []
    for _ in range(topology.MAX_DELIVER):
        (msg,) = await sub.fetch(1, timeout=5)
        d = Delivery(msg, js=js, service=service)
        outcomes.append((d.deliveries, await d.retry_or_dead_letter("bad", delay=0.0)))
    assert outcomes[-1] == (topology.MAX_DELIVER, True)
    assert all(not sent for _, sent in outcomes[:-1])
    letter = decode(DeadLetter, (await letters.next_msg(timeout=5)).data)
    assert letter.service == service and letter.deliveries == topology.MAX_DELIVER
    await letters.unsubscribe()
    await drained(js, consumer)  # termed: never delivered again


async def test_a_cancelling_stop_naks_the_messages_in_flight_at_once(
    nc: NatsClient, consumer: topology.Consumer, caplog
) -> None:
    js = nc.jetstream()
    await js.publish(subject_of(consumer), b"slow")
    started = asyncio.Event()

    async def handle(batch: Sequence[Delivery]) -> None:
        started.set()
        await asyncio.sleep(3600)

    stopping = asyncio.Event()
    worker = PullWorker(
        js,
        consumer,
        handle,
        service="test",
        max_in_flight=2,
        heartbeat_s=0.25,
        on_stop="cancel",
        fetch_wait_s=0.2,
        what="slow things",
    )
    task = asyncio.create_task(worker.run(stopping))
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(1.5)  # past ack_wait: the heartbeats keep it ours
    stopping.set()
    with caplog.at_level(logging.INFO, logger="sync_airbnb.jetstream"):
        await asyncio.wait_for(task, 5)
    assert "handed back 1 slow things in flight" in caplog.text
    sub = await js.pull_subscribe_bind(consumer.durable, stream=consumer.stream)
    (again,) = await sub.fetch(1, timeout=0.5)  # at once, not after ack_wait
    assert again.metadata.num_delivered == 2
    await again.ack_sync()
