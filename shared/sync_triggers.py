"""A manual sync trigger as it is sent, by the admin API and by ``sync-airbnb sync`` alike:
a ``SyncTriggered`` stored in the ``AIRBNB_SYNC_TRIGGERS`` work queue under its own id."""

from __future__ import annotations

import datetime as dt
import uuid

from nats.js import JetStreamContext

from shared import topology
from shared.messages import SyncTriggered, encode


def new_trigger(account_id: str, *, full: bool) -> SyncTriggered:
    return SyncTriggered(
        trigger_id=uuid.uuid4(),
        account_id=account_id,
        full=full,
        requested_at=dt.datetime.now(dt.UTC),
    )


async def store_trigger(js: JetStreamContext, trigger: SyncTriggered, *, timeout_s: float) -> None:
    """Publish and wait for JetStream to store it; the trigger id as ``Nats-Msg-Id``, so a
    retried send of the same trigger is stored once."""
    tid = trigger.trigger_id
    await js.publish(
        topology.sync_trigger_subject(tid),
        encode(trigger),
        timeout=timeout_s,
        stream=topology.SCHEDULER_TRIGGERS.stream,
        headers={"Nats-Msg-Id": topology.sync_trigger_msg_id(tid)},
    )
