"""Every NATS subject, JetStream stream, consumer and KV bucket of sync-airbnb.

Nobody builds a subject string anywhere else. ``provision(js)`` runs at every
service's start: it creates what is missing and updates a changed config, and
never deletes a stream, a consumer or their data.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError

from shared.metric_tables import TableName

log = logging.getLogger("sync_airbnb.topology")

DAY_S = 24 * 3600

# --- subjects -----------------------------------------------------------------------------

ACCOUNT_EVENTS = "airbnb.accounts.*"
# Manual triggers, durable (admin or `sync` -> scheduler): one subject per trigger id, so a
# trigger still waiting can be looked up by its id (``sync_trigger_subject``).
SYNC_TRIGGERS = "airbnb.sync.triggers.*"
TRIGGER_OUTCOMES = "airbnb.triggers.*"  # core pub/sub: what the scheduler made of a trigger
SYNC_REQUESTED = "airbnb.sync.requested"
SYNC_ROWS = "airbnb.sync.rows.*"
SYNC_PROGRESS = "airbnb.sync.progress"
SYNC_EVENTS = "airbnb.sync.events"
SYNC_CREDENTIALS = "airbnb.sync.credentials"  # rotated auth cookies, fetcher -> writer
JOB_UPDATES = "airbnb.jobs.*"  # core pub/sub: job state changes, for `sync --wait` and demo
DEAD_LETTERS = "airbnb.deadletter.*"
# Core request/reply, admin -> one fetcher: is this cookie a live session of this host?
# (issue 16: credentials checked before they are saved). Not JetStream: an answer that
# comes after the admin stopped waiting is worthless, and the cookie is not kept anywhere.
# The queue group makes one fetcher of all replicas answer each check.
CREDENTIAL_CHECKS = "airbnb.credentials.check"
CREDENTIAL_CHECKS_QUEUE = "fetchers"


def account_event_subject(event: str) -> str:
    return f"airbnb.accounts.{event}"


def rows_subject(table: TableName) -> str:
    return f"airbnb.sync.rows.{table}"


def job_updates_subject(job_id: object) -> str:
    return f"airbnb.jobs.{job_id}"


def sync_trigger_subject(trigger_id: object) -> str:
    return f"airbnb.sync.triggers.{trigger_id}"


def trigger_outcome_subject(trigger_id: object) -> str:
    return f"airbnb.triggers.{trigger_id}"


def dead_letter_subject(service: str) -> str:
    return f"airbnb.deadletter.{service}"


# --- message ids (JetStream de-duplication) -----------------------------------------------


def sync_request_msg_id(dedup_key: str) -> str:
    return f"sync:{dedup_key}"


def sync_trigger_msg_id(trigger_id: object) -> str:
    return f"trigger:{trigger_id}"


def row_batch_msg_id(job_id: object, listing_id: str, table: str, chunk_no: int) -> str:
    return f"rows:{job_id}:{listing_id}:{table}:{chunk_no}"


def dead_letter_msg_id(service: str, stream: str, stream_sequence: int) -> str:
    return f"deadletter:{service}:{stream}:{stream_sequence}"


def account_event_msg_id(event_id: object) -> str:
    """An account event by its row's ``event_id`` in the admin's outbox: a row published
    twice (the relay died before marking it) is dropped by the stream's duplicate window."""
    return f"account:{event_id}"


def listing_result_msg_id(job_id: object, listing_id: str) -> str:
    return f"listing:{job_id}:{listing_id}"


def credentials_rotated_msg_id(job_id: object, from_version: int) -> str:
    # One rotation per job and starting version: a redelivered sync that rotates again
    # is dropped by JetStream, and the writer's version check covers what is older.
    return f"credentials:{job_id}:{from_version}"


def job_event_msg_id(job_id: object, event: str) -> str:
    # One id per job and event: a redelivered sync announcing "started" again is dropped.
    return f"job:{job_id}:{event}"


# --- streams ------------------------------------------------------------------------------

ACCOUNTS_STREAM = StreamConfig(
    name="AIRBNB_ACCOUNTS",
    subjects=[ACCOUNT_EVENTS],
    retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE,
    max_age=30 * DAY_S,
    duplicate_window=120,
)
SYNC_REQUESTS_STREAM = StreamConfig(
    name="AIRBNB_SYNC_REQUESTS",
    subjects=[SYNC_REQUESTED],
    retention=RetentionPolicy.WORK_QUEUE,
    storage=StorageType.FILE,
    max_age=7 * DAY_S,
    # Longer than a day, so that two schedulers (or a restart) publishing the same
    # account/scrape day/kind are deduplicated by JetStream as well as by the database.
    duplicate_window=26 * 3600,
)
SYNC_RESULTS_STREAM = StreamConfig(
    name="AIRBNB_SYNC_RESULTS",
    subjects=[SYNC_ROWS, SYNC_PROGRESS, SYNC_EVENTS, SYNC_CREDENTIALS],
    retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE,
    # Kept after the writer acks, so a stream can be replayed (a repair, or a test).
    max_age=7 * DAY_S,
    duplicate_window=2 * 3600,
)
SYNC_TRIGGERS_STREAM = StreamConfig(
    name="AIRBNB_SYNC_TRIGGERS",
    subjects=[SYNC_TRIGGERS],
    # Removed once the scheduler handled it (its outcome is then in airbnb.sync_triggers):
    # a trigger still here is one no scheduler has handled yet.
    retention=RetentionPolicy.WORK_QUEUE,
    storage=StorageType.FILE,
    # A manual "sync now" asked for over a day ago is stale: the daily run has come since.
    max_age=DAY_S,
    duplicate_window=120,
)
DEAD_LETTER_STREAM = StreamConfig(
    name="AIRBNB_DEAD_LETTERS",
    subjects=[DEAD_LETTERS],
    retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE,
    max_age=30 * DAY_S,
)
STREAMS: tuple[StreamConfig, ...] = (
    ACCOUNTS_STREAM,
    SYNC_REQUESTS_STREAM,
    SYNC_RESULTS_STREAM,
    SYNC_TRIGGERS_STREAM,
    DEAD_LETTER_STREAM,
)

# --- durable consumers --------------------------------------------------------------------

MAX_DELIVER = 10


@dataclass(frozen=True, slots=True)
class Consumer:
    stream: str
    config: ConsumerConfig

    @property
    def durable(self) -> str:
        assert self.config.durable_name
        return self.config.durable_name


def _name(stream: StreamConfig) -> str:
    # StreamConfig.name is optional in nats-py; every stream above has one.
    assert stream.name
    return stream.name


SCHEDULER_ACCOUNTS = Consumer(
    _name(ACCOUNTS_STREAM),
    ConsumerConfig(
        durable_name="scheduler-accounts",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=30,
        max_deliver=MAX_DELIVER,
    ),
)
SCHEDULER_TRIGGERS = Consumer(
    _name(SYNC_TRIGGERS_STREAM),
    ConsumerConfig(
        durable_name="scheduler-triggers",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=30,
        max_deliver=MAX_DELIVER,
    ),
)
FETCHER_REQUESTS = Consumer(
    _name(SYNC_REQUESTS_STREAM),
    ConsumerConfig(
        durable_name="fetcher",
        ack_policy=AckPolicy.EXPLICIT,
        # A fetcher sends in-progress acks while it works; a fetcher that dies stops
        # sending them and the request is redelivered to another one after this.
        ack_wait=60,
        max_deliver=MAX_DELIVER,
        max_ack_pending=10_000,
    ),
)
WRITER_RESULTS = Consumer(
    _name(SYNC_RESULTS_STREAM),
    ConsumerConfig(
        durable_name="writer",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=60,
        max_deliver=MAX_DELIVER,
        max_ack_pending=50_000,
    ),
)


def heartbeat_interval(ack_wait_s: float) -> float:
    """Seconds between in-progress acks: a quarter of ack_wait, so one lost one is harmless."""
    return max(0.25, ack_wait_s / 4)


CONSUMERS: tuple[Consumer, ...] = (
    SCHEDULER_ACCOUNTS,
    SCHEDULER_TRIGGERS,
    FETCHER_REQUESTS,
    WRITER_RESULTS,
)

# --- KV buckets ---------------------------------------------------------------------------

# job_id.listing_id -> "published" | "failed": what a redelivered sync need not fetch again.
FETCH_PROGRESS_BUCKET = KeyValueConfig(
    bucket="airbnb_fetch_progress",
    history=1,
    ttl=7 * DAY_S,
    storage=StorageType.FILE,
)
KV_BUCKETS: tuple[KeyValueConfig, ...] = (FETCH_PROGRESS_BUCKET,)


# --- object stores ------------------------------------------------------------------------

# The originals of dead letters too large to carry them inline, by the dead letter's
# message id: kept as long as the dead letters themselves.
DEAD_LETTER_PAYLOADS_BUCKET = ObjectStoreConfig(
    bucket="airbnb_dead_letter_payloads",
    ttl=30 * DAY_S,
    storage=StorageType.FILE,
)
OBJECT_STORES: tuple[ObjectStoreConfig, ...] = (DEAD_LETTER_PAYLOADS_BUCKET,)


def fetch_progress_key(job_id: object, listing_id: str) -> str:
    return f"{job_id}.{listing_id}"


def fetch_listings_key(job_id: object) -> str:
    """The listings a job announced (JSON), so a redelivered sync works on the same set.

    Listing ids are digits, so this key never collides with a ``fetch_progress_key``.
    """
    return f"{job_id}._listings"


# --- provisioning -------------------------------------------------------------------------


# Errors JetStream answers when it cannot place the replicas asked for: a single server
# (not a cluster), or fewer nodes up than replicas.
_REPLICAS_NOT_SUPPORTED = 10074
_INSUFFICIENT_RESOURCES = 10023


class ReplicasUnavailable(RuntimeError):
    """JetStream cannot give a stream the replicas JETSTREAM_REPLICAS asks for."""


def replicas_to_apply(setting: int, current: int | None) -> int:
    """The replicas provisioning gives a stream that exists: the setting, or what the
    stream has when that is more. Provisioning raises, never lowers: a service started
    without JETSTREAM_REPLICAS (an older version, a stale environment) would otherwise
    undo a raise on every start. Lowering is an operator's act (``nats stream edit``).
    JetStream stores an unset replica count (0) as 1.
    """
    return max(setting, current or 1)


def replicas_kept_warning(name: str, setting: int, current: int | None) -> str | None:
    """The warning for a setting below what a stream has (kept); None when nothing is kept."""
    kept = replicas_to_apply(setting, current)
    if kept == setting:
        return None
    return (
        f"stream {name} has {kept} replicas and JETSTREAM_REPLICAS is {setting}: kept at "
        f"{kept} (provisioning never lowers replicas; lower them with nats stream edit)"
    )


def _placement_error(exc: APIError, replicas: int, what: str) -> Exception:
    if exc.err_code in (_REPLICAS_NOT_SUPPORTED, _INSUFFICIENT_RESOURCES):
        return ReplicasUnavailable(
            f"JETSTREAM_REPLICAS={replicas}: JetStream cannot place {what} ({exc.description})"
        )
    return exc


async def _provision_stream(js: JetStreamContext, stream: StreamConfig, replicas: int) -> None:
    name = _name(stream)
    try:
        await js.add_stream(dataclasses.replace(stream, num_replicas=replicas))
        return
    except BadRequestError:
        pass  # it exists with another config: an update, replicas never lowered
    except APIError as exc:
        raise _placement_error(exc, replicas, f"stream {name}") from None
    current = (await js.stream_info(name)).config.num_replicas
    warning = replicas_kept_warning(name, replicas, current)
    if warning:
        log.warning(warning)
    target = replicas_to_apply(replicas, current)
    try:
        await js.update_stream(dataclasses.replace(stream, num_replicas=target))
    except APIError as exc:
        raise _placement_error(exc, target, f"stream {name}") from None


async def _provision_bucket(js: JetStreamContext, bucket: KeyValueConfig, replicas: int) -> None:
    try:
        await js.create_key_value(dataclasses.replace(bucket, replicas=replicas))
        return
    except BadRequestError:
        pass
    except APIError as exc:
        raise _placement_error(exc, replicas, f"KV bucket {bucket.bucket}") from None
    # A bucket is the stream KV_<bucket>. Its other settings are left as they are; only its
    # replicas follow the rule of the streams (raised, never lowered).
    await _raise_bucket_replicas(js, f"KV_{bucket.bucket}", f"KV bucket {bucket.bucket}", replicas)


async def _raise_bucket_replicas(js: JetStreamContext, name: str, what: str, replicas: int) -> None:
    config = (await js.stream_info(name)).config
    warning = replicas_kept_warning(name, replicas, config.num_replicas)
    if warning:
        log.warning(warning)
    target = replicas_to_apply(replicas, config.num_replicas)
    if target == (config.num_replicas or 1):
        log.info("%s exists with another config; left as it is", what)
        return
    try:
        await js.update_stream(dataclasses.replace(config, num_replicas=target))
    except APIError as exc:
        raise _placement_error(exc, target, what) from None


async def _provision_object_store(
    js: JetStreamContext, store: ObjectStoreConfig, replicas: int
) -> None:
    assert store.bucket
    try:
        await js.create_object_store(store.bucket, dataclasses.replace(store, replicas=replicas))
        return
    except BadRequestError:
        pass
    except APIError as exc:
        raise _placement_error(exc, replicas, f"object store {store.bucket}") from None
    # An object store is the stream OBJ_<bucket>: its replicas follow the rule of the streams.
    await _raise_bucket_replicas(
        js, f"OBJ_{store.bucket}", f"object store {store.bucket}", replicas
    )


async def provision(
    js: JetStreamContext, *, ack_wait_s: float | None = None, replicas: int = 1
) -> None:
    """Create or update every stream, consumer, KV bucket and object store; never delete
    anything.

    ``ack_wait_s`` (JETSTREAM_ACK_WAIT_S) replaces the consumers' ack_wait; every
    service of one deployment must agree on it, or each start flips it back.
    ``replicas`` (JETSTREAM_REPLICAS) is given to every stream and bucket that is
    created, and raises one that has fewer; one that has more keeps them
    (:func:`replicas_to_apply`). The consumers set no replica count of their own
    (0: their stream's), so they follow their stream whichever service provisioned it.

    Adding an existing stream with the same config is a no-op in JetStream, so
    several services may provision at once; a changed config is an update.
    """
    if replicas % 2 == 0:
        log.warning(
            "JETSTREAM_REPLICAS is %d: an even count survives no more lost nodes than %d",
            replicas,
            replicas - 1,
        )
    for stream in STREAMS:
        await _provision_stream(js, stream, replicas)
    for consumer in CONSUMERS:
        # The create API without an action creates, or updates a durable in place.
        config = consumer.config
        if ack_wait_s is not None:
            config = dataclasses.replace(config, ack_wait=ack_wait_s)
        await js.add_consumer(consumer.stream, config)
    for bucket in KV_BUCKETS:
        await _provision_bucket(js, bucket, replicas)
    for store in OBJECT_STORES:
        await _provision_object_store(js, store, replicas)
