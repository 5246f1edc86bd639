"""Which message model travels on which subject: the map beside ``shared/topology.py``.

``topology`` names every subject; ``messages`` defines every model and its codec; this
module joins the two, so a consumer decodes what arrived by where it arrived
(:func:`decode_on`) and no service keeps a map of its own. A subject with no model
here carries no message of sync-airbnb.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Final

from shared import topology
from shared.messages import (
    AccountEvent,
    AccountEventName,
    CredentialCheck,
    CredentialsRotated,
    DeadLetter,
    JobEvent,
    JobUpdate,
    ListingResult,
    Message,
    MessageDecodeError,
    RowBatch,
    SyncRequest,
    SyncTriggered,
    SyncTriggerReply,
    decode,
)
from shared.metric_tables import TABLE_NAMES

MODEL_BY_SUBJECT: Final[Mapping[str, type[Message]]] = {
    **{topology.account_event_subject(e): AccountEvent for e in typing.get_args(AccountEventName)},
    topology.SYNC_REQUESTED: SyncRequest,
    **{topology.rows_subject(t): RowBatch for t in TABLE_NAMES},
    topology.SYNC_PROGRESS: ListingResult,
    topology.SYNC_EVENTS: JobEvent,
    topology.SYNC_CREDENTIALS: CredentialsRotated,
    topology.CREDENTIAL_CHECKS: CredentialCheck,
}

# Subjects whose last token is an id or a name, not a fixed word.
MODEL_BY_PATTERN: Final[Mapping[str, type[Message]]] = {
    topology.SYNC_TRIGGERS: SyncTriggered,
    topology.TRIGGER_OUTCOMES: SyncTriggerReply,
    topology.JOB_UPDATES: JobUpdate,
    topology.DEAD_LETTERS: DeadLetter,
}


def _matches(pattern: str, subject: str) -> bool:
    want, got = pattern.split("."), subject.split(".")
    return len(want) == len(got) and all(w in ("*", g) for w, g in zip(want, got, strict=True))


def model_for(subject: str) -> type[Message]:
    """The model published on ``subject``; MessageDecodeError when none is."""
    model = MODEL_BY_SUBJECT.get(subject)
    if model is not None:
        return model
    for pattern, patterned in MODEL_BY_PATTERN.items():
        if _matches(pattern, subject):
            return patterned
    raise MessageDecodeError(f"no message type is published on subject {subject!r}")


def decode_on(subject: str, data: bytes) -> Message:
    """The message that arrived on ``subject``; MessageDecodeError if it is not what the
    subject promises (a RowBatch names its table, which must be its subject's)."""
    message = decode(model_for(subject), data)
    if isinstance(message, RowBatch) and topology.rows_subject(message.table) != subject:
        raise MessageDecodeError(f"RowBatch for table {message.table!r} arrived on {subject!r}")
    return message
