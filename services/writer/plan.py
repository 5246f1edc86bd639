"""The writer's functional core: from message bytes to what one transaction must do.

Nothing here touches NATS or PostgreSQL, so every rule is a plain unit test:

- :func:`decode_result` picks the message model by subject and decodes it.
- :func:`plan_message` converts a RowBatch's wire rows (dates and timestamps as ISO
  strings) into value lists in the table's column order, ready for a binary COPY;
  a row that can never be written raises :class:`RowError` so the message goes to
  the dead letters at once.
- :func:`rows_to_write` keeps the rows of the chunks the ledger says are new and
  dedupes them on the table key (one ``INSERT ... ON CONFLICT DO UPDATE`` cannot
  touch a row twice; the later message wins, as it would in two batches).
- :func:`chunk_increments`, :func:`merge_listing_results`, :func:`job_outcome`
  and :func:`job_error` are the bookkeeping rules of docs/data-path.md.
- :func:`rotations` and :func:`rotation_outcome` are the rules for rotated
  credentials (``CredentialsRotated`` on ``airbnb.sync.credentials``): each one is
  tried in message order against the version the one before left, and is
  *applied* (the account still has ``from_version``), *already handled* (the
  rotations ledger holds it: a redelivery or a stream replay of one applied or
  dropped before, a no-op) or *dropped* (someone, mostly the operator, changed the
  credentials in between, or the account is deleted). A rotation whose job does
  not exist, or belongs to another account, is an orphan like any other message
  (:func:`orphans`): it goes to the dead letters, since the scheduler creates every
  job before its request is published and a stray rotation would be the only
  message able to change an account's credentials without a job to vouch for it.

The row conversion is the writer's only per-row Python work, so it is built from
lookups prepared once per table (an ``itemgetter`` over the column names, and a
short list of the columns that need a conversion or a type check).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from typing import Any, Final, Literal

from shared import wire
from shared.airbnb.pivots import scrape_time
from shared.messages import (
    FINAL_JOB_STATUSES,
    CredentialsRotated,
    JobEvent,
    JobStatus,
    ListingResult,
    MessageDecodeError,
    RowBatch,
)
from shared.metric_tables import EXTRA_METRICS_COLUMN, METRIC_TABLES, MetricTable

ResultMessage = RowBatch | ListingResult | JobEvent | CredentialsRotated
Row = list[Any]
# (job_id, listing_id, table, chunk_no): the ledger's name of one RowBatch.
ChunkKey = tuple[uuid.UUID, str, str, int]

FINAL_STATUSES: Final[frozenset[str]] = FINAL_JOB_STATUSES

_RESULT_MODELS: Final = (RowBatch, ListingResult, JobEvent, CredentialsRotated)


# --- decoding -----------------------------------------------------------------------------


def decode_result(subject: str, data: bytes) -> ResultMessage:
    """The message on ``subject`` (``shared.wire``); MessageDecodeError if it is not what
    the subject promises, or not a sync result at all."""
    message = wire.decode_on(subject, data)
    if not isinstance(message, _RESULT_MODELS):
        raise MessageDecodeError(f"{type(message).__name__} on {subject!r} is no sync result")
    return message


# --- row conversion -----------------------------------------------------------------------


class RowError(ValueError):
    """A row that can never be written: unknown columns, or a value of the wrong type."""


@lru_cache(maxsize=16_384)
def _parse_date(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


@lru_cache(maxsize=1_024)
def _parse_timestamptz(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        # `time` is part of the row key; a zone-less value would mean a different instant
        # depending on the server's TimeZone setting.
        raise ValueError(f"timestamp {value!r} has no time zone")
    return parsed


def _to_date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if type(value) is str:
        return _parse_date(value)
    if type(value) is dt.date:
        return value
    raise TypeError(f"expected an ISO date string, got {type(value).__name__}")


def _to_timestamptz(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if type(value) is str:
        return _parse_timestamptz(value)
    if type(value) is dt.datetime and value.tzinfo is not None:
        return value
    raise TypeError(f"expected an ISO timestamp with time zone, got {value!r}")


def _to_bigint(value: Any) -> int | None:
    # asyncpg's int8 encoder would silently truncate 1.5 to 1 (and take True as 1).
    if value is None or type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise TypeError(f"expected an integer, got {value!r}")


def _to_double(value: Any) -> float | int | None:
    # asyncpg's float8 encoder would take True as 1.0; strings it rejects itself, but
    # checking here names the column in the reason.
    if value is None or type(value) is float or type(value) is int:
        return value
    raise TypeError(f"expected a number, got {value!r}")


def _to_text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _to_jsonb(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is dict:
        return value
    raise TypeError(f"expected an object, got {type(value).__name__}")


_CONVERTERS: Final[dict[str, Callable[[Any], Any]]] = {
    "date": _to_date,
    "timestamptz": _to_timestamptz,
    "bigint": _to_bigint,
    "double precision": _to_double,
    "text": _to_text,
    "jsonb": _to_jsonb,
}


@dataclass(frozen=True, slots=True)
class TableCodec:
    """Per-table lookups for :func:`convert_rows`, built once at import."""

    table: MetricTable
    columns: tuple[str, ...]
    column_set: frozenset[str]
    values_of: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    key_of: Callable[[Sequence[Any]], tuple[Any, ...]]
    # Fast path: what every row needs (all date and timestamp columns are NOT NULL).
    date_indexes: tuple[int, ...]
    bigint_indexes: tuple[int, ...]
    time_index: int
    # The key's date column (metric_date or window_start): within one chunk's account,
    # listing and scrape time, the only part of the key that varies.
    key_date_index: int
    extra_index: int
    account_index: int
    listing_index: int
    # Slow path: every column's converter, to name the column a bad value sits in.
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]


def _codec(table: MetricTable) -> TableCodec:
    columns = table.column_names
    index = {c: i for i, c in enumerate(columns)}
    by_type = lambda sql_type: tuple(index[c.name] for c in table.columns if c.sql_type == sql_type)  # noqa: E731
    return TableCodec(
        table=table,
        columns=columns,
        column_set=frozenset(columns),
        values_of=itemgetter(*columns),
        key_of=itemgetter(*(index[k] for k in table.key)),
        date_indexes=by_type("date"),
        bigint_indexes=by_type("bigint"),
        time_index=index["time"],
        key_date_index=next(
            index[k] for k in table.key if k not in ("account_id", "airbnb_listing_id", "time")
        ),
        extra_index=index[EXTRA_METRICS_COLUMN],
        account_index=index["account_id"],
        listing_index=index["airbnb_listing_id"],
        converters=tuple((index[c.name], _CONVERTERS[c.sql_type]) for c in table.columns),
    )


CODECS: Final[dict[str, TableCodec]] = {name: _codec(t) for name, t in METRIC_TABLES.items()}


_STRICT_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "text": (str,),
    "double precision": (float, int),
    "bigint": (int,),
    "date": (dt.date,),
    "timestamptz": (dt.datetime,),
    "jsonb": (dict,),
}


def find_type_error(table: str, rows: Sequence[Sequence[Any]]) -> str:
    """Where a converted row holds a value of the wrong type, for a dead letter's reason.

    Only run after asyncpg refused the rows: :func:`convert_rows` leaves text and
    double columns to asyncpg, whose error does not name the column.
    """
    codec = CODECS[table]
    for n, row in enumerate(rows):
        for c, value in zip(codec.table.columns, row, strict=True):
            if value is not None and (
                type(value) is bool or not isinstance(value, _STRICT_TYPES[c.sql_type])
            ):
                return f"row {n}: {table}.{c.name} is {value!r}, expected {c.sql_type}"
    return "no single value to blame"


def _complete_values(codec: TableCodec, row: Mapping[str, Any], n: int) -> tuple[Any, ...]:
    unknown = row.keys() - codec.column_set
    if unknown:
        raise RowError(f"row {n}: {codec.table.name} has no column(s) {sorted(unknown)}")
    # A column the row leaves out is NULL (the pivots send every column; this is lenience).
    return tuple(row.get(c) for c in codec.columns)


def _convert_slowly(codec: TableCodec, values: Sequence[Any], n: int) -> Row:
    """Every column through its converter: accepts what the fast path does not (date
    objects, integral floats in bigint columns) and names the column of a bad value."""
    converted = list(values)
    for i, convert in codec.converters:
        try:
            converted[i] = convert(converted[i])
        except (TypeError, ValueError) as exc:
            raise RowError(f"row {n}: {codec.table.name}.{codec.columns[i]}: {exc}") from None
    return converted


def convert_rows(
    codec: TableCodec,
    rows: Sequence[Mapping[str, Any]],
    *,
    account_id: str,
    listing_id: str,
    scrape_day: dt.date,
) -> list[Row]:
    """Wire rows -> value lists in ``codec.columns`` order; RowError if one can never be written.

    Dates and timestamps are parsed, ``extra_metrics`` must be an object (None is
    ``{}``; the writer's connections encode it, see store.init_connection), bigint
    values must be integers (asyncpg would truncate 1.5 to 1). Text and double
    columns are left to asyncpg's binary encoder, which rejects a wrong type with
    TypeError at COPY time: checking ~25 values per row here would cost more than
    the rest of the write. Every row must belong to the chunk's account and listing
    and carry its scrape day as ``time``: the ledger counts a chunk once for its
    listing, so a stray row would land under the wrong identity.
    """
    time = scrape_time(scrape_day)
    width = len(codec.columns)
    values_of = codec.values_of
    key_of = codec.key_of
    date_indexes, bigint_indexes = codec.date_indexes, codec.bigint_indexes
    time_i, extra_i = codec.time_index, codec.extra_index
    acc_i, lst_i = codec.account_index, codec.listing_index
    parse_date, parse_ts = _parse_date, _parse_timestamptz
    out: list[Row] = []
    append = out.append
    for n, row in enumerate(rows):
        try:
            values = values_of(row)
            if len(row) != width:
                raise KeyError
        except KeyError:
            values = _complete_values(codec, row, n)
        converted = list(values)
        try:
            for i in date_indexes:
                converted[i] = parse_date(converted[i])
            converted[time_i] = parse_ts(converted[time_i])
            for i in bigint_indexes:
                v = converted[i]
                if v is not None and type(v) is not int:
                    raise TypeError
            if type(converted[extra_i]) is not dict:
                raise TypeError
        except (TypeError, ValueError):
            converted = _convert_slowly(codec, values, n)
        if (
            converted[acc_i] != account_id
            or converted[lst_i] != listing_id
            or converted[time_i] != time
        ):
            raise RowError(
                f"row {n}: (account_id, airbnb_listing_id, time) = "
                f"({converted[acc_i]!r}, {converted[lst_i]!r}, {converted[time_i]}) "
                f"does not match the chunk ({account_id!r}, {listing_id!r}, {time})"
            )
        if None in key_of(converted):
            raise RowError(f"row {n}: a key column {codec.table.key} is null")
        append(converted)
    return out


# --- planning -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Planned:
    """One decoded message and, for a RowBatch, its rows converted for the COPY."""

    message: ResultMessage
    rows: list[Row] | None = None

    @property
    def chunk(self) -> ChunkKey | None:
        m = self.message
        if isinstance(m, RowBatch):
            return (m.job_id, m.listing_id, m.table, m.chunk_no)
        return None


def plan_message(message: ResultMessage) -> Planned:
    """Convert a RowBatch's rows (RowError when it can never be written); others pass through."""
    if not isinstance(message, RowBatch):
        return Planned(message)
    rows = convert_rows(
        CODECS[message.table],
        message.rows,
        account_id=message.account_id,
        listing_id=message.listing_id,
        scrape_day=message.scrape_day,
    )
    return Planned(message, rows)


@dataclass(frozen=True, slots=True)
class JobRef:
    account_id: str
    status: str


def orphans(batch: Sequence[Planned], jobs: Mapping[uuid.UUID, JobRef]) -> dict[int, str]:
    """Messages that can never apply: their job does not exist, or belongs to another account."""
    bad: dict[int, str] = {}
    for i, p in enumerate(batch):
        m = p.message
        job = jobs.get(m.job_id)
        if job is None:
            bad[i] = f"job {m.job_id} does not exist"
        elif job.account_id != m.account_id:
            bad[i] = f"job {m.job_id} belongs to account {job.account_id}, not {m.account_id}"
    return bad


def ledger_entries(batch: Iterable[Planned]) -> list[tuple[ChunkKey, int]]:
    """Each chunk of the batch once (a chunk delivered twice in one batch counts once)."""
    seen: dict[ChunkKey, int] = {}
    for p in batch:
        chunk = p.chunk
        if chunk is not None and chunk not in seen:
            assert p.rows is not None
            seen[chunk] = len(p.rows)
    return list(seen.items())


def rows_to_write(batch: Iterable[Planned], new_chunks: set[ChunkKey]) -> dict[str, list[Row]]:
    """The rows of the chunks that are new in the ledger, by table, deduped on the table key.

    Chunks already in the ledger were written in an earlier transaction together with
    their ledger entry; writing them again could only undo a later write of the same
    rows, so a replay writes nothing. Within the batch the later message wins.
    """
    by_table: dict[str, list[Row]] = {}
    taken: set[ChunkKey] = set()
    # Rows of one chunk share its account, listing and scrape time (convert_rows holds
    # them to it), so two rows can share a key only within one (table, account, listing,
    # scrape day), by their date: a set of dates per such group finds any duplicate at a
    # fraction of the cost of keying every row (a tenth of a 100,000-row commit's time,
    # benchmarks/bench_writer.py), and only a table that has one is keyed and deduped.
    dates_seen: dict[tuple[str, str, str, dt.date], set[dt.date]] = {}
    repeated: set[str] = set()
    for p in batch:
        chunk = p.chunk
        if chunk is None or chunk not in new_chunks or chunk in taken:
            continue
        taken.add(chunk)
        assert p.rows is not None and isinstance(p.message, RowBatch)
        table = chunk[2]
        by_table.setdefault(table, []).extend(p.rows)
        if table not in repeated:
            m = p.message
            dates = dates_seen.setdefault((table, m.account_id, m.listing_id, m.scrape_day), set())
            before = len(dates)
            dates.update(map(itemgetter(CODECS[table].key_date_index), p.rows))
            if len(dates) - before < len(p.rows):
                repeated.add(table)
    for table in repeated:
        rows = by_table[table]
        unique = dict(zip(map(CODECS[table].key_of, rows), rows, strict=True))
        by_table[table] = list(unique.values())
    return by_table


def chunk_increments(
    chunks: Iterable[tuple[ChunkKey, int]],
) -> tuple[dict[tuple[uuid.UUID, str], tuple[int, int]], dict[uuid.UUID, int]]:
    """New chunks -> (per (job, listing): chunks, rows) and (per job: rows)."""
    per_listing: dict[tuple[uuid.UUID, str], tuple[int, int]] = {}
    per_job: dict[uuid.UUID, int] = {}
    for (job_id, listing_id, _table, _chunk_no), n_rows in chunks:
        c, r = per_listing.get((job_id, listing_id), (0, 0))
        per_listing[(job_id, listing_id)] = (c + 1, r + n_rows)
        per_job[job_id] = per_job.get(job_id, 0) + n_rows
    return per_listing, per_job


def merge_listing_results(results: Iterable[ListingResult]) -> list[ListingResult]:
    """One result per (job, listing): a ``published`` outranks a ``failed``, else the later wins.

    A published listing has all its chunks on the way, which is a stronger fact than
    a failure that an earlier, interrupted fetch reported.
    """
    merged: dict[tuple[uuid.UUID, str], ListingResult] = {}
    for r in results:
        key = (r.job_id, r.listing_id)
        prev = merged.get(key)
        if prev is not None and prev.status == "published" and r.status == "failed":
            continue
        merged[key] = r
    return list(merged.values())


def chunks_expected(result: ListingResult) -> int | None:
    return sum(result.chunks.values()) if result.status == "published" else None


def listings_total(event: JobEvent) -> int:
    return event.listings_total if event.listings_total is not None else len(event.listing_ids)


@dataclass(slots=True)
class CopyStrategy:
    """Whether a table's rows are COPied straight into it or merged through a temp table.

    A direct COPY is as fast as PostgreSQL can load rows, and it is the normal case:
    rows of a new scrape day are new keys, and chunks already committed never reach
    the COPY (the ledger). It fails on the first row that exists already (a second
    sync of the same day); the batch then merges with ON CONFLICT DO UPDATE instead,
    and the next ``cooldown`` batches of that table go straight to the merge rather
    than pay for a failed COPY each time. Only a speed hint: a restart forgets it and
    nothing else changes.
    """

    cooldown: int = 20
    skip: dict[str, int] = field(default_factory=dict)

    def direct(self, table: str) -> bool:
        left = self.skip.get(table, 0)
        if left > 0:
            self.skip[table] = left - 1
            return False
        return True

    def conflicted(self, table: str) -> None:
        self.skip[table] = self.cooldown


# --- job completion -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListingTally:
    listings_total: int | None
    known: int  # sync_job_listings rows of the job
    committed: int
    failed: int


def job_outcome(t: ListingTally) -> Literal["succeeded", "partial", "failed"] | None:
    """The final status once every listing is done, else None (docs/data-path.md, Writer 3)."""
    if t.listings_total is None:
        return None
    if t.known < t.listings_total or t.committed + t.failed < t.known:
        return None
    if t.failed == 0:
        return "succeeded"
    return "failed" if t.committed == 0 else "partial"


MAX_NAMED_FAILURES = 5


def job_error(failed: Sequence[tuple[str, str | None]], failed_count: int, known: int) -> str:
    """``"2 of 5 listings failed: 111 (timeout); 222 (malformed)"``, naming a few listings."""
    named = "; ".join(f"{lid} ({err or 'no reason given'})" for lid, err in failed)
    more = failed_count - len(failed)
    suffix = f"; and {more} more" if more > 0 else ""
    return f"{failed_count} of {known} listings failed: {named}{suffix}"


def advances_last_sync(status: JobStatus) -> bool:
    """Whether a job ending in ``status`` moves ``accounts.last_sync_at`` (invariant 3).

    Only when something was synced: a job whose every listing failed keeps the account
    looking never-synced (or as synced as before), so the next run still backfills.
    """
    return status in ("succeeded", "partial")


# --- rotated credentials ------------------------------------------------------------------

RotationOutcome = Literal["applied", "already_handled", "dropped"]


def rotations(batch: Iterable[Planned]) -> list[CredentialsRotated]:
    """The batch's rotations in message order: two of one account must apply in turn,
    the second against the version the first left."""
    return [p.message for p in batch if isinstance(p.message, CredentialsRotated)]


def rotation_outcome(*, claimed: bool, applied_version: int | None) -> RotationOutcome:
    """What became of a rotation (sql.APPLY_ROTATION).

    ``claimed``: this transaction is the first to handle it (its ledger row is new);
    otherwise it is a redelivery or a replay of one already applied or dropped, and
    nothing changes, not even a counter. ``applied_version``: the account's version
    after it applied, None when the account no longer had the version the sync read
    (the operator gave new credentials, another rotation came first, or the account
    is deleted or gone): dropped.
    """
    if not claimed:
        return "already_handled"
    return "applied" if applied_version is not None else "dropped"
