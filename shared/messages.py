"""Every message that crosses NATS, as pydantic models, with one orjson codec.

``encode(model) -> bytes`` and ``decode(Model, data) -> Model`` are the only
way messages are (de)serialised; ``shared/wire.py`` says which model travels on
which subject. Credentials travel only as a Fernet token (``EncryptedCredentials``),
decrypted in the fetcher's memory and nowhere else.

``encode`` is the fast path for every model: orjson walks the model's fields itself
(nested models, lists and dicts of rows included) instead of pydantic's
``model_dump`` building a JSON copy first. The bytes are the same as
``orjson.dumps(model.model_dump(mode="json"))``: orjson writes dates, UUIDs and,
with ``OPT_UTC_Z``, datetimes as pydantic renders them, and anything it cannot
write goes through pydantic's own ``to_jsonable_python``. The copy was a quarter of
the fetcher's CPU per response and an eighth of the daily fan-out's
(benchmarks/bench_fetcher.py, bench_scheduler.py); tests/unit/test_messages.py holds
the two encodings equal for every model.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import from_json, to_jsonable_python

from shared.metric_tables import TableName


class Message(BaseModel):
    # allow_inf_nan: a float field built in Python refuses NaN and inf too (orjson would
    # write them as null, and decode refuses them on the wire).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class MessageDecodeError(ValueError):
    """A message body that is not valid JSON or not the expected model."""


M = TypeVar("M", bound=Message)


def _jsonable(value: Any) -> Any:
    """What orjson cannot write itself: a model becomes its fields (in declaration
    order, as ``model_dump`` gives them), anything else pydantic's JSON form (a
    UUID subclass such as asyncpg's, a Decimal)."""
    if isinstance(value, BaseModel):
        return value.__dict__
    return to_jsonable_python(value)


def to_json(value: Any) -> bytes:
    """``value`` as it is written inside a message: the JSON of :func:`encode`.

    For sizing a part of a message before it is built (the fetcher cuts rows into
    chunks by their encoded length)."""
    return orjson.dumps(value, default=_jsonable, option=orjson.OPT_UTC_Z)


def encode(message: Message) -> bytes:
    return to_json(message)


def _non_finite(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str, float] | None:
    """The path and value of the first NaN or infinite number in parsed JSON, if any."""
    if type(value) is float:
        return None if math.isfinite(value) else (".".join(map(str, path)) or "<root>", value)
    if type(value) is dict:
        items: Any = value.items()
    elif type(value) is list:
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, (*path, key))
        if found is not None:
            return found
    return None


def _not_json(model: type[Message], data: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why orjson refused ``data``, naming the field where it is a non-finite number."""
    try:
        # pydantic's parser takes NaN, Infinity and 1e999 (as nan and inf), so it finds
        # the field orjson only gives a character position for.
        found = _non_finite(from_json(data))
    except (ValueError, RecursionError):
        found = None
    if found is None:
        return f"{model.__name__}: <root>: Invalid JSON: {exc}"
    path, value = found
    return (
        f"{model.__name__}: {path}: {value} is not a finite number "
        "(NaN, Infinity and numbers beyond a double's range are not JSON)"
    )


def decode(model: type[M], data: bytes) -> M:
    """``data`` as ``model``, or MessageDecodeError naming each bad field.

    orjson parses, not pydantic's own parser: that one takes the non-standard NaN,
    Infinity and 1e999, and the rows of a RowBatch are ``Any``, so nothing would
    check them; orjson refuses all three, at about the cost of the parse it replaces
    (then pydantic validates the parsed value, in its Python mode).
    """
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MessageDecodeError(_not_json(model, data, exc)) from None
    try:
        return model.model_validate(parsed)
    except ValidationError as exc:
        raise MessageDecodeError(
            f"{model.__name__}: {exc.error_count()} error(s): "
            + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()
            )
        ) from None


SyncKind = Literal["incremental", "full"]
SyncTriggerSource = Literal["schedule", "account_created", "startup", "manual"]
JobStatus = Literal["queued", "running", "succeeded", "partial", "failed"]
# A job in one of these never changes again.
FINAL_JOB_STATUSES: frozenset[str] = frozenset({"succeeded", "partial", "failed"})


# --- admin -> scheduler -------------------------------------------------------------------


AccountEventName = Literal["created", "updated", "deleted", "restored"]


class AccountEvent(Message):
    """airbnb.accounts.{created,updated,deleted,restored}"""

    event: AccountEventName
    account_id: str
    credentials_changed: bool = False
    # an update that turned is_active from false to true: the scheduler backfills it now
    reactivated: bool = False
    at: dt.datetime


class SyncTriggered(Message):
    """airbnb.sync.triggers.{trigger_id}: "sync this account now", kept in JetStream until
    a scheduler handled it, so a trigger sent while none runs is handled when one starts."""

    trigger_id: uuid.UUID
    account_id: str
    full: bool = False
    requested_at: dt.datetime


class SyncTriggerReply(Message):
    """What the scheduler made of a trigger: a job or a refusal. Announced on
    airbnb.triggers.{trigger_id} once handled (and kept in airbnb.sync_triggers)."""

    trigger_id: uuid.UUID | None = None
    job_id: uuid.UUID | None = None
    # the job's status when the reply was sent: a trigger may return a job that already
    # ended today, and a waiting client then has nothing to wait for
    status: JobStatus | None = None
    # set instead of job_id when the scheduler refuses: not_found, inactive, deleted,
    # needs_credentials, invalid_request, internal
    error: str | None = None
    detail: str | None = None


# --- scheduler -> fetcher -----------------------------------------------------------------


class EncryptedCredentials(Message):
    """The cookie as a Fernet token; the rest is not secret."""

    cookie_token: str
    x_client_version: str
    user_agent: str
    # accounts.credentials_version this token was read at: a rotation the fetcher saves
    # back names it, so credentials the operator gave in between win (the writer checks).
    version: int = Field(default=1, ge=1)


class SyncRequest(Message):
    """airbnb.sync.requested: fetch one account's window for one scrape day."""

    job_id: uuid.UUID
    account_id: str
    kind: SyncKind
    trigger: SyncTriggerSource
    scrape_day: dt.date
    window_start: dt.date
    window_end: dt.date
    credentials: EncryptedCredentials
    requested_at: dt.datetime


# --- admin -> fetcher (request/reply) ------------------------------------------------------


class CredentialCheck(Message):
    """airbnb.credentials.check: run the preflight and one ListingsSectionQuery with these
    credentials, before the admin saves them. The cookie travels as in a SyncRequest
    (``credentials.version`` means nothing here: nothing is saved back)."""

    account_id: str
    credentials: EncryptedCredentials
    requested_at: dt.datetime


# live: the session works (listings: how many Airbnb reports); expired: Airbnb sent the
# session to its login page (logged out, revoked, or too old); other_host: the cookie is
# another host's (its _user_attributes); rejected: Airbnb refused the request (a 4xx that
# is not a login). unavailable: no verdict on the credentials (Airbnb failing or slow,
# the fetcher busy, or unable to decrypt them): the admin answers 503, not 422.
CredentialCheckOutcome = Literal["live", "expired", "other_host", "rejected", "unavailable"]


class CredentialCheckResult(Message):
    """The reply to a CredentialCheck. ``reason`` never holds a cookie value."""

    outcome: CredentialCheckOutcome
    listings: int | None = Field(default=None, ge=0)
    reason: str = ""


# --- fetcher -> writer --------------------------------------------------------------------


class RowBatch(Message):
    """airbnb.sync.rows.{table}: one chunk of one listing's rows for one table.

    Rows are plain dicts keyed by the table's columns (dates as ISO strings on the
    wire); (job_id, listing_id, table, chunk_no) names the chunk for the ledger.
    """

    job_id: uuid.UUID
    account_id: str
    listing_id: str
    table: TableName
    chunk_no: int = Field(ge=0)
    scrape_day: dt.date
    rows: list[dict[str, Any]]


class ListingResult(Message):
    """airbnb.sync.progress: a listing is fully published (with its chunk counts) or failed."""

    job_id: uuid.UUID
    account_id: str
    listing_id: str
    internal_name: str | None = None
    listing_name: str | None = None
    status: Literal["published", "failed"]
    # chunks published per table; the writer commits the listing once all are in
    chunks: dict[TableName, int] = Field(default_factory=dict)
    rows: dict[TableName, int] = Field(default_factory=dict)
    error: str | None = None


class JobEvent(Message):
    """airbnb.sync.events: job-level facts from the fetcher."""

    job_id: uuid.UUID
    account_id: str
    event: Literal["started", "auth_failed", "failed"]
    listings_total: int | None = None
    listing_ids: list[str] = Field(default_factory=list)
    # started: how many listings Airbnb reported (ListingsSectionQuery's totalCount) when
    # it returned fewer; the writer then ends the job partial. None: it returned them all.
    listings_reported: int | None = Field(default=None, ge=0)
    reason: str | None = None
    # auth_failed: the credentials version Airbnb rejected. The writer marks the account
    # only while it still has that version: cookies the operator gave meanwhile are new.
    credentials_version: int | None = Field(default=None, ge=1)
    at: dt.datetime


class CredentialsRotated(Message):
    """airbnb.sync.credentials: the auth cookies a sync ended with, when Airbnb rotated them.

    ``cookie_token`` is the auth-group Cookie string as a Fernet token. The writer stores
    it only while the account still has ``from_version`` (docs/sessions.md).
    """

    job_id: uuid.UUID
    account_id: str
    from_version: int = Field(ge=1)
    cookie_token: str
    # which auth cookies changed (names only, never values), for logs and the audit
    changed: list[str] = Field(default_factory=list)
    rotated_at: dt.datetime


# --- writer -> anyone watching a job (core pub/sub) --------------------------------------


class JobUpdate(Message):
    """airbnb.jobs.{job_id}: a job's state after a writer's commit changed it.

    Core NATS, not JetStream: a missed update is harmless (``sync --wait`` also reads
    ``airbnb.sync_jobs``), and a later one carries the whole state again.
    """

    job_id: uuid.UUID
    account_id: str
    status: JobStatus
    listings_total: int | None = None
    listings_succeeded: int = 0
    listings_failed: int = 0
    rows_written: int = 0
    error: str | None = None
    # status is one of FINAL_JOB_STATUSES: nothing about this job changes again
    final: bool = False


# --- anyone -> dead letters ---------------------------------------------------------------


class DeadLetterPayloadRef(Message):
    """Where the original bytes of a dead letter too large to carry them are kept: the
    object ``name`` of the JetStream object store ``bucket`` (a work-queue stream deletes
    the original once it is termed), and the stream and sequence it was delivered from."""

    bucket: str
    name: str
    stream: str | None = None
    stream_sequence: int | None = None


class DeadLetter(Message):
    """airbnb.deadletter.{service}: a message that could not be handled, and why.

    The original bytes travel inline (``payload``) when the dead letter still fits the
    server's max_payload with them, and are otherwise kept where ``payload_ref`` says.
    Either way ``payload_size`` and ``payload_sha256`` describe them. A dead letter of
    before these fields has the payload inline and none of the others.
    """

    service: str
    subject: str
    stream_sequence: int | None = None
    deliveries: int
    reason: str
    headers: dict[str, str] = Field(default_factory=dict)
    payload: str | None = None  # the original bytes, base64-encoded, when they fit
    at: dt.datetime
    payload_size: int | None = None
    payload_sha256: str | None = None
    payload_ref: DeadLetterPayloadRef | None = None
