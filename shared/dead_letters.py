"""Moving a JetStream message that cannot be handled to the dead-letter stream.

Invariant 7: nothing is dropped silently. The original bytes, headers, subject,
stream sequence and delivery count travel with the reason, so an operator can
inspect the message and republish it once the cause is fixed.

A dead letter always fits the server's max_payload: the original bytes are inlined
(base64) when they fit with a margin, and are otherwise put into the object store
``topology.DEAD_LETTER_PAYLOADS_BUCKET`` under the dead letter's message id, which
``payload_ref`` names with the stream and sequence the original came from. Both
kinds carry the original's size and sha256.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import uuid

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared import topology
from shared.messages import DeadLetter, DeadLetterPayloadRef, encode
from shared.metrics import DEAD_LETTERS

log = logging.getLogger("sync_airbnb.dead_letters")

# Reasons can be long; a dead letter must stay far below the NATS max payload with its body.
MAX_REASON_CHARS = 2_000
# The original's headers travel in the body too: bounded, so the body without the payload
# always fits (a message can carry headers of any size up to max_payload).
MAX_HEADERS = 32
MAX_HEADER_CHARS = 1_000
# What NATS counts against max_payload besides the body: the dead letter's own headers
# (Nats-Msg-Id) and their framing, with room to spare.
HEADER_ROOM_BYTES = 8 * 1024
# The server's limit when the connection does not say (nats-server's default).
DEFAULT_MAX_PAYLOAD = 1024 * 1024


def _metadata(msg: Msg) -> Msg.Metadata | None:
    if not msg.reply:
        return None
    try:
        return msg.metadata
    except Exception:  # not a JetStream delivery
        return None


def _headers(msg: Msg) -> dict[str, str]:
    items = list((msg.headers or {}).items())[:MAX_HEADERS]
    return {str(k)[:MAX_HEADER_CHARS]: str(v)[:MAX_HEADER_CHARS] for k, v in items}


def inline_limit(max_payload: int) -> int:
    """The largest encoded dead letter that is published with its payload inline (pure)."""
    return max(0, max_payload - HEADER_ROOM_BYTES)


def fit_payload(
    letter: DeadLetter, data: bytes, limit: int, ref: DeadLetterPayloadRef
) -> DeadLetter:
    """``letter`` with ``data`` inline if the encoded letter stays within ``limit`` bytes,
    else with ``ref`` in its place; with the size and digest of ``data`` either way (pure)."""
    described = letter.model_copy(
        update={
            "payload": None,
            "payload_ref": None,
            "payload_size": len(data),
            "payload_sha256": hashlib.sha256(data).hexdigest(),
        }
    )
    # base64 is 4/3 of the bytes: a first look that spares encoding a body that cannot fit.
    if 4 * ((len(data) + 2) // 3) < limit:
        inline = described.model_copy(update={"payload": base64.b64encode(data).decode("ascii")})
        if len(encode(inline)) <= limit:
            return inline
    return described.model_copy(update={"payload_ref": ref})


def dead_letter_msg_id(service: str, msg: Msg) -> str:
    """The dead letter's Nats-Msg-Id: one per original, so a second try after a crash
    between the publish and the term is dropped by JetStream; a random one for a message
    that did not come from a stream."""
    meta = _metadata(msg)
    if meta is None:
        return f"deadletter:{service}:{uuid.uuid4()}"
    return topology.dead_letter_msg_id(service, meta.stream, meta.sequence.stream)


def dead_letter_for(
    service: str,
    msg: Msg,
    reason: str,
    *,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    msg_id: str | None = None,
) -> DeadLetter:
    """The DeadLetter describing ``msg`` (pure, apart from reading the clock): its payload
    inline if it fits ``max_payload``, else a reference to the object ``msg_id``."""
    meta = _metadata(msg)
    letter = DeadLetter(
        service=service,
        subject=msg.subject,
        stream_sequence=meta.sequence.stream if meta else None,
        deliveries=meta.num_delivered if meta else 1,
        reason=reason[:MAX_REASON_CHARS],
        headers=_headers(msg),
        at=dt.datetime.now(dt.UTC),
    )
    assert topology.DEAD_LETTER_PAYLOADS_BUCKET.bucket
    ref = DeadLetterPayloadRef(
        bucket=topology.DEAD_LETTER_PAYLOADS_BUCKET.bucket,
        name=msg_id or dead_letter_msg_id(service, msg),
        stream=meta.stream if meta else None,
        stream_sequence=meta.sequence.stream if meta else None,
    )
    return fit_payload(letter, msg.data or b"", inline_limit(max_payload), ref)


def _max_payload(js: JetStreamContext) -> int:
    # The JetStream context keeps its connection, which knows the server's limit.
    nc = getattr(js, "_nc", None)
    limit = getattr(nc, "max_payload", None)
    return limit if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_PAYLOAD


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

    An original too large to inline is first put into the payload object store. The
    publish waits for JetStream's ack, and only then is the original termed: a failure
    raises and leaves the original unacked, so it is redelivered rather than lost (the
    callers log and nak). ``category`` is the low-cardinality ``reason`` label of the
    DEAD_LETTERS metric (the full reason goes into the message and the log).
    """
    msg_id = dead_letter_msg_id(service, msg)
    letter = dead_letter_for(service, msg, reason, max_payload=_max_payload(js), msg_id=msg_id)
    if letter.payload_ref is not None:
        store = await js.object_store(letter.payload_ref.bucket)
        await store.put(letter.payload_ref.name, msg.data or b"")
    headers: dict[str, str] = {}
    if _metadata(msg) is not None:
        headers["Nats-Msg-Id"] = msg_id
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
            "payload_size": letter.payload_size,
            "payload_inline": letter.payload is not None,
        },
    )
    if term:
        await msg.term()
