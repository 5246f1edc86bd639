"""Publishing sync requests to JetStream, pipelined, with their acks collected as they
come and what was not acked published again a few times (``shared.backoff.retry_until``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.scheduler.plan import JobPlan, sync_request_body
from shared import topology
from shared.backoff import retry_until
from shared.metrics import SYNC_REQUESTS_EMITTED

log = logging.getLogger("sync_airbnb.scheduler")

PUBLISH_ATTEMPTS = 3
# The waits before the 2nd and 3rd attempt: 0.5 s, then 1 s.
PUBLISH_RETRY_BASE_S = 0.5
PUBLISH_RETRY_MAX_S = 1.0


@dataclass
class PublishReport:
    published: int = 0  # new messages in the stream
    duplicates: int = 0  # dropped by JetStream: someone published this request already
    failed: list[JobPlan] = field(default_factory=list)


class PublishUnacked(Exception):
    """A publishing round ended with requests that JetStream did not ack."""


class RequestPublisher:
    """Pipelined JetStream publishes: send everything, collect the acks as they come.

    A publish-and-wait per message costs a round trip each (100,000 in a daily run).
    nats-py's ``publish_async`` pipelines, but its per-message bookkeeping (a task for
    the stall timeout, a future, random tokens) made it 3x slower than this: plain
    publishes whose reply subject is one inbox of ours, ``{inbox}.{n}``, and one
    subscription that reads the acks. At most ``max_in_flight`` wait for their ack.
    Use as ``async with RequestPublisher(nc, ...) as pub``.
    """

    def __init__(self, nc: NatsClient, *, timeout_s: float, max_in_flight: int = 20_000) -> None:
        self._nc = nc
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._seq = 0
        self._waiting: dict[str, JobPlan] = {}
        self._room = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._failed: list[JobPlan] = []
        self.report = PublishReport()

    async def __aenter__(self) -> RequestPublisher:
        self._sub = await self._nc.subscribe(
            f"{self._inbox}.*", cb=self._on_ack, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_ack(self, msg: Msg) -> None:
        plan = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if plan is None:
            return  # an ack after we gave up on it: the job is retried or stays queued
        ok = False
        if not (msg.headers and msg.headers.get("Status")):  # 503: no stream listens
            with contextlib.suppress(orjson.JSONDecodeError):
                ack = orjson.loads(msg.data)
                ok = isinstance(ack, dict) and "error" not in ack
        if not ok:
            self._failed.append(plan)
        elif ack.get("duplicate"):
            self.report.duplicates += 1
        else:
            self.report.published += 1
            SYNC_REQUESTS_EMITTED.labels(trigger=plan.trigger).inc()
        if len(self._waiting) < self._max_in_flight:
            self._room.set()
        if not self._waiting:
            self._idle.set()

    async def submit(self, plans: Sequence[JobPlan]) -> None:
        assert self._sub is not None, "use RequestPublisher as an async context manager"
        for i, plan in enumerate(plans):
            if len(self._waiting) >= self._max_in_flight:
                self._room.clear()
                try:
                    await asyncio.wait_for(self._room.wait(), timeout=self._timeout_s)
                except TimeoutError:
                    log.warning(
                        "JetStream stopped acknowledging; %d publish(es) left", len(plans) - i
                    )
                    self._failed.extend(plans[i:])
                    return
            elif i % 1000 == 999:
                await asyncio.sleep(0)  # let the client flush and read acks
            token = str(self._seq)
            self._seq += 1
            self._waiting[token] = plan
            self._idle.clear()
            try:
                await self._nc.publish(
                    topology.SYNC_REQUESTED,
                    sync_request_body(plan),
                    reply=f"{self._inbox}.{token}",
                    headers={"Nats-Msg-Id": topology.sync_request_msg_id(plan.dedup_key)},
                )
            except Exception as exc:  # disconnected, buffer full: retried in finish()
                log.warning("publish of job %s failed: %r", plan.job_id, exc)
                self._waiting.pop(token, None)
                self._failed.append(plan)
        if not self._waiting:
            self._idle.set()

    async def finish(self) -> PublishReport:
        """Wait for the acks; publish again, a few times, what failed; report."""
        unacked: list[JobPlan] = []

        async def publish_round() -> None:
            nonlocal unacked
            if unacked:
                await self.submit(unacked)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=self._timeout_s)
            # No ack in time counts as failed; a late one is ignored (and harmless).
            unacked = [*self._failed, *self._waiting.values()]
            self._failed, self._waiting = [], {}
            self._idle.set()
            if unacked:
                raise PublishUnacked(f"{len(unacked)} request(s) not acked")

        try:
            await retry_until(
                publish_round,
                base_s=PUBLISH_RETRY_BASE_S,
                cap_s=PUBLISH_RETRY_MAX_S,
                retry_if=lambda exc: isinstance(exc, PublishUnacked),
                attempts=PUBLISH_ATTEMPTS,
            )
        except PublishUnacked:
            self.report.failed = unacked
        return self.report


async def publish_one(nc: NatsClient, plan: JobPlan, *, timeout_s: float) -> PublishReport:
    async with RequestPublisher(nc, timeout_s=timeout_s) as publisher:
        await publisher.submit([plan])
        return await publisher.finish()
