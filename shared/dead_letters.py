"""Moving a JetStream message that cannot be handled to the dead-letter stream.

Invariant 7: nothing is dropped silently. The original bytes, headers, subject,
stream sequence and delivery count travel with the reason, so an operator can
inspect the message and republish it once the cause is fixed.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared import topology
from shared.messages import DeadLetter, encode
from shared.metrics import DEAD_LETTERS

log = logging.getLogger("sync_airbnb.dead_letters")

# Reasons can be long; a dead letter must stay far below the NATS max payload with its body.
MAX_REASON_CHARS = 2_000


def _metadata(msg: Msg) -> Msg.Metadata | None:
    if not msg.reply:
        return None
    try:
        return msg.metadata
    except Exception:  # not a JetStream delivery
        return None


def dead_letter_for(service: str, msg: Msg, reason: str) -> DeadLetter:
    """The DeadLetter describing ``msg`` (pure, apart from reading the clock)."""
    meta = _metadata(msg)
    stream_sequence = meta.sequence.stream if meta else None
    deliveries = meta.num_delivered if meta else 1
    return DeadLetter(
        service=service,
        subject=msg.subject,
        stream_sequence=stream_sequence,
        deliveries=deliveries,
        reason=reason[:MAX_REASON_CHARS],
        headers={k: str(v) for k, v in (msg.headers or {}).items()},
        payload=base64.b64encode(msg.data or b"").decode("ascii"),
        at=dt.datetime.now(dt.UTC),
    )


async def send_to_dead_letters(
    js: JetStreamContext,
    service: str,
    msg: Msg,
    reason: str,
    *,
    category: str = "unprocessable",
    term: bool = True,
) -> None:
    """Publish ``msg`` with ``reason`` to ``airbnb.deadletter.{service}``, count it, term it.

    The publish waits for JetStream's ack, and only then is the original termed: a
    failure to publish raises and leaves the original unacked, so it is redelivered
    rather than lost. ``category`` is the low-cardinality ``reason`` label of the
    DEAD_LETTERS metric (the full reason goes into the message and the log).
    """
    letter = dead_letter_for(service, msg, reason)
    headers: dict[str, str] = {}
    meta = _metadata(msg)
    if meta is not None:
        # A crash between this publish and the term redelivers the original; the
        # same id lets JetStream drop the second copy of the dead letter.
        headers["Nats-Msg-Id"] = topology.dead_letter_msg_id(
            service, meta.stream, meta.sequence.stream
        )
    await js.publish(topology.dead_letter_subject(service), encode(letter), headers=headers)
    DEAD_LETTERS.labels(service=service, reason=category).inc()
    log.warning(
        "message on %s sent to dead letters: %s",
        msg.subject,
        letter.reason,
        extra={
            "subject": msg.subject,
            "stream_sequence": letter.stream_sequence,
            "deliveries": letter.deliveries,
            "category": category,
        },
    )
    if term:
        await msg.term()
