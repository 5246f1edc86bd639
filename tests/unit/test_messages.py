"""shared/messages.py's one encoder and shared/wire.py's map of subjects to models.

``encode`` writes a model with orjson directly; these hold its bytes equal to
pydantic's own JSON form (``model_dump(mode="json")``) for every model, with the
values that differ most easily: UTC and offset datetimes, microseconds, asyncpg's
UUID subclass, a Decimal in a row, non-ASCII text, None, nested models.
"""

from __future__ import annotations

import datetime as dt
import typing
import uuid
from decimal import Decimal

import orjson
import pytest

from shared import topology, wire
from shared.messages import (
    AccountEvent,
    AccountEventName,
    CredentialCheck,
    CredentialCheckResult,
    CredentialsRotated,
    DeadLetter,
    DeadLetterPayloadRef,
    EncryptedCredentials,
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
    encode,
    to_json,
)
from shared.metric_tables import TABLE_NAMES


class PgUUID(uuid.UUID):
    """asyncpg hands out UUIDs as a subclass of its own, which orjson does not write."""


JOB = uuid.UUID("00000000-0000-4000-8000-000000000001")
UTC_NOW = dt.datetime(2025, 7, 11, 5, 0, 1, 123456, tzinfo=dt.UTC)
PARIS = dt.datetime(2025, 7, 11, 7, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
DAY = dt.date(2025, 7, 11)
CREDENTIALS = EncryptedCredentials(
    cookie_token="gAAAA-token", x_client_version="abc", user_agent='Mozilla/5.0 "q" \\ ü', version=3
)

SAMPLES: list[Message] = [
    AccountEvent(event="updated", account_id="42", credentials_changed=True, at=PARIS),
    SyncTriggered(trigger_id=PgUUID(str(JOB)), account_id="42", full=True, requested_at=PARIS),
    SyncTriggerReply(trigger_id=JOB, job_id=PgUUID(str(JOB)), status="running"),
    SyncTriggerReply(error="not_found", detail="no account 42"),
    CREDENTIALS,
    SyncRequest(
        job_id=PgUUID(str(JOB)),
        account_id="42",
        kind="full",
        trigger="manual",
        scrape_day=DAY,
        window_start=DAY,
        window_end=DAY,
        credentials=CREDENTIALS,
        requested_at=UTC_NOW,
    ),
    RowBatch.model_construct(  # as the fetcher builds it: the pivots' rows, not validated
        job_id=JOB,
        account_id="42",
        listing_id="7",
        table="chart_query",
        chunk_no=0,
        scrape_day=DAY,
        rows=[{"ds": DAY, "time": UTC_NOW, "value": 0.25, "odd": Decimal("1.50"), "none": None}],
    ),
    ListingResult(
        job_id=JOB, account_id="42", listing_id="7", status="published", chunks={"chart_query": 2}
    ),
    JobEvent(job_id=JOB, account_id="42", event="auth_failed", credentials_version=2, at=UTC_NOW),
    CredentialsRotated(
        job_id=JOB,
        account_id="42",
        from_version=1,
        cookie_token="gAAAA-rotated",
        changed=["_aaj"],
        rotated_at=UTC_NOW,
    ),
    JobUpdate(job_id=PgUUID(str(JOB)), account_id="42", status="partial", error="é", final=True),
    DeadLetter(
        service="writer",
        subject=topology.SYNC_EVENTS,
        stream_sequence=9,
        deliveries=10,
        reason="x",
        payload="e30=",
        at=UTC_NOW,
    ),
    # Appended, not inserted: some tests pick samples by index.
    JobEvent(
        job_id=JOB,
        account_id="42",
        event="started",
        listings_total=2,
        listing_ids=["7", "8"],
        listings_reported=9,
        at=UTC_NOW,
    ),
    DeadLetter(
        service="scheduler",
        subject=topology.account_event_subject("created"),
        stream_sequence=3,
        deliveries=1,
        reason="undecodable: é",
        at=UTC_NOW,
        payload_size=900_000,
        payload_sha256="0" * 64,
        payload_ref=DeadLetterPayloadRef(
            bucket="airbnb_dead_letter_payloads",
            name="deadletter:scheduler:AIRBNB_ACCOUNTS:3",
            stream="AIRBNB_ACCOUNTS",
            stream_sequence=3,
        ),
    ),
    DeadLetterPayloadRef(bucket="airbnb_dead_letter_payloads", name="deadletter:x:1"),
    CredentialCheck(account_id="42", credentials=CREDENTIALS, requested_at=PARIS),
    CredentialCheckResult(outcome="live", listings=7, reason="the session is live: 7 listings"),
    CredentialCheckResult(outcome="expired", reason="preflight: login_redirect"),
]


def _all_models() -> set[type[Message]]:
    found: set[type[Message]] = set()
    todo = list(Message.__subclasses__())
    while todo:
        model = todo.pop()
        found.add(model)
        todo.extend(model.__subclasses__())
    return found


def test_every_model_has_a_sample() -> None:
    # A new model joins SAMPLES, so the encoder is held to pydantic's form for it too.
    assert {type(m) for m in SAMPLES} >= _all_models()


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_the_one_encoder_writes_what_pydantic_would(message: Message) -> None:
    assert encode(message) == orjson.dumps(message.model_dump(mode="json"))
    if not isinstance(message, RowBatch):  # a RowBatch's rows arrive as JSON types
        assert decode(type(message), encode(message)) == message


def test_to_json_is_the_encoding_of_a_part() -> None:
    rows = [{"ds": DAY, "time": PARIS}]
    assert to_json(rows) == b'[{"ds":"2025-07-11","time":"2025-07-11T07:30:00+02:00"}]'
    batch = SAMPLES[6]
    assert isinstance(batch, RowBatch)
    assert to_json(batch.rows)[1:-1] in encode(batch)  # a chunk's size is its rows' bytes


def test_every_subject_has_its_model() -> None:
    for event in typing.get_args(AccountEventName):
        assert wire.model_for(topology.account_event_subject(event)) is AccountEvent
    for table in TABLE_NAMES:
        assert wire.model_for(topology.rows_subject(table)) is RowBatch
    assert wire.model_for(topology.SYNC_REQUESTED) is SyncRequest
    assert wire.model_for(topology.sync_trigger_subject(JOB)) is SyncTriggered
    assert wire.model_for(topology.trigger_outcome_subject(JOB)) is SyncTriggerReply
    assert wire.model_for(topology.SYNC_PROGRESS) is ListingResult
    assert wire.model_for(topology.SYNC_EVENTS) is JobEvent
    assert wire.model_for(topology.SYNC_CREDENTIALS) is CredentialsRotated
    assert wire.model_for(topology.job_updates_subject(JOB)) is JobUpdate
    assert wire.model_for(topology.dead_letter_subject("fetcher")) is DeadLetter


@pytest.mark.parametrize(
    "subject",
    [
        "airbnb.sync.elsewhere",
        "airbnb.sync.trigger",  # the request/reply of before: triggers are durable now
        "airbnb.accounts.renamed",  # no such account event
        "airbnb.jobs",  # a pattern needs its last token
        f"airbnb.jobs.{JOB}.extra",
        "airbnb.sync.rows.no_such_table",
    ],
)
def test_a_subject_without_a_model_is_refused(subject: str) -> None:
    with pytest.raises(MessageDecodeError, match="no message type"):
        wire.decode_on(subject, b"{}")


def test_decode_on_checks_a_row_batch_against_its_subject() -> None:
    batch = SAMPLES[6]
    data = encode(batch)
    assert isinstance(wire.decode_on(topology.rows_subject("chart_query"), data), RowBatch)
    with pytest.raises(MessageDecodeError, match="chart_query"):
        wire.decode_on(topology.rows_subject("list_of_metrics"), data)
    update = SAMPLES[10]
    assert wire.decode_on(topology.job_updates_subject(JOB), encode(update)) == update
