"""The writer's bookkeeping: from a batch of decoded messages to what one transaction
must do. Nothing here touches NATS or PostgreSQL, so every rule is a plain unit test:

- :func:`decode_result` decodes a message by its subject (``shared.wire``) and keeps
  only sync results; :func:`plan_message` converts a RowBatch's rows
  (``row_codecs.convert_rows``).
- :func:`orphans`, :func:`ledger_entries` and :func:`rows_to_write`: the messages that
  can never apply, the chunks for the ledger, and the rows of the chunks the ledger
  says are new, deduped on the table key (one ``INSERT ... ON CONFLICT DO UPDATE``
  cannot touch a row twice; the later message wins, as it would in two batches).
- :func:`chunk_increments`, :func:`merge_listing_results`, :func:`job_outcome`,
  :func:`job_error`, :func:`shortfall_note` and :func:`final_error` are the
  bookkeeping rules of docs/data-path.md.
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
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Final, Literal

from services.writer.row_codecs import CODECS, Row, convert_rows
from shared import wire
from shared.messages import (
    FINAL_JOB_STATUSES,
    CredentialsRotated,
    JobEvent,
    JobStatus,
    ListingResult,
    MessageDecodeError,
    RowBatch,
)

ResultMessage = RowBatch | ListingResult | JobEvent | CredentialsRotated
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


# --- job completion -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListingTally:
    listings_total: int | None
    known: int  # sync_job_listings rows of the job
    committed: int
    failed: int
    # Airbnb returned fewer listings than it reported (JobEvent.listings_reported): the
    # ones it left out were never synced, so the job cannot succeed.
    truncated: bool = False


def job_outcome(t: ListingTally) -> Literal["succeeded", "partial", "failed"] | None:
    """The final status once every listing is done, else None (docs/data-path.md, Writer 3)."""
    if t.listings_total is None:
        return None
    if t.known < t.listings_total or t.committed + t.failed < t.known:
        return None
    if t.failed == 0 and not t.truncated:
        return "succeeded"
    return "failed" if t.committed == 0 else "partial"


def shortfall_note(listings_total: int, listings_reported: int | None) -> str | None:
    """``"7 of 9 listings returned"`` when Airbnb reported more listings than the job has.

    Written as the job's error when it starts (sql.START_JOB) and kept at the head of
    its final error, so the job says what it is missing while it runs and after.
    """
    if listings_reported is None or listings_reported <= listings_total:
        return None
    return f"{listings_total} of {listings_reported} listings returned"


def final_error(shortfall: str | None, failures: str | None) -> str | None:
    """The job's final error: the shortfall note, then the failed listings, either or both."""
    return "; ".join(part for part in (shortfall, failures) if part) or None


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
