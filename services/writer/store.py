"""One batch, one transaction: the writer's PostgreSQL edge.

:func:`commit_batch` applies a planned batch (services/writer/bookkeeping.py) in the
order that keeps every step idempotent (docs/data-path.md, Writer 2-4):

1. the batch's jobs must exist and belong to the messages' accounts, and the ledger
   names the chunks this transaction is first to commit (one statement);
2. the metric rows of those chunks: one COPY per table straight into it when every
   row is new, else COPY into a temp table and one upsert (row_codecs.CopyStrategy).
   A direct COPY that meets an existing row aborts the transaction, which is then
   done again with that table merged;
3. lock the jobs (``FOR UPDATE``, in job_id order, so writers never deadlock on
   them) and add the new chunks' counts to those not final (one statement): the
   bookkeeping and completion checks of two writers must not interleave, and the
   lock says which jobs are final already;
4. listing results, job events, for jobs not final;
5. the completion check of every job touched, its progress, and the jobs as they are
   after it, in one statement whatever the number of jobs; when jobs end, one more
   for their ends and one for the failed listings they name, if any;
6. rotated credentials, in message order, whatever the job's status (a sync that
   rotated and then failed still saves them): each applies only while the account
   has the version its sync read (bookkeeping.rotation_outcome). Last, so the account row
   is locked after the jobs, as the job bookkeeping above locks it.

The common batch (chunks of running jobs) is six round trips: BEGIN, the ledger, a
COPY per table, the lock, the tally (with the progress and the report), COMMIT
(benchmarks/bench_writer.py).

A final job is never written again, so replaying a whole stream changes nothing:
its chunks are in the ledger (no rows, no counters) and its results and events
are skipped; its rotation finds its row in the rotations ledger and is a no-op. The writer
never decrypts a rotated token: it stores the token as the fetcher encrypted it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from services.writer import bookkeeping, row_codecs, sql
from services.writer.bookkeeping import FINAL_STATUSES, JobRef, Planned
from shared.db import Conn
from shared.messages import CredentialsRotated, JobEvent, JobUpdate, ListingResult
from shared.metric_tables import METRIC_TABLES, SCHEMA


class OrphanMessages(Exception):
    """Messages of the batch that can never apply (see :func:`bookkeeping.orphans`), by index."""

    def __init__(self, reasons: dict[int, str]) -> None:
        super().__init__(f"{len(reasons)} message(s) cannot apply: {reasons}")
        self.reasons = reasons


class RowEncodeError(ValueError):
    """asyncpg refused a value while encoding the COPY: a row of the wrong type."""


@dataclass(frozen=True, slots=True)
class Transition:
    job_id: uuid.UUID
    account_id: str
    status: str
    detail: str | None = None
    # the counts at this transition, for its log line
    counts: dict[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rotation:
    """What became of one CredentialsRotated, for the metrics and the log after commit."""

    job_id: uuid.UUID
    account_id: str
    from_version: int
    outcome: bookkeeping.RotationOutcome
    # the account's version after this rotation (None: no such account)
    version: int | None
    changed: tuple[str, ...] = ()


@dataclass(slots=True)
class CommitResult:
    rows_copied: int = 0
    rows_written: dict[str, int] = field(default_factory=dict)
    new_chunks: int = 0
    transitions: list[Transition] = field(default_factory=list)
    # job_id -> the job after commit, for the notifications on airbnb.jobs.{job_id}
    jobs: dict[uuid.UUID, JobUpdate] = field(default_factory=dict)
    rotations: list[Rotation] = field(default_factory=list)


def _count(status: str) -> int:
    # "INSERT 0 42" -> 42
    return int(status.rsplit(" ", 1)[-1])


# jsonb's binary format: version 1, then the text.
_EMPTY_JSONB = b"\x01{}"


def _encode_jsonb(value: Any) -> bytes:
    # Nearly every row's extra_metrics is {}: one shared encoding instead of a dump per
    # row (an eighth of a 100,000-row COPY's client time, benchmarks/bench_writer.py).
    if type(value) is dict and not value:
        return _EMPTY_JSONB
    return b"\x01" + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """The writer's connections speak jsonb in binary: a binary COPY cannot use the
    text codec that shared/db.py installs for everyone."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        format="binary",
    )


async def _copy(
    conn: Conn, table: str, rows: list[row_codecs.Row], *, into: str, schema: str | None
) -> str:
    """COPY ``rows`` of metrics table ``table`` into ``schema.into``."""
    try:
        return await conn.copy_records_to_table(
            into,
            schema_name=schema,
            records=rows,
            columns=METRIC_TABLES[table].column_names,  # type: ignore[index]
        )
    except (TypeError, ValueError, OverflowError) as exc:
        # Raised by asyncpg's binary encoders, before the row reached the server.
        raise RowEncodeError(f"{table}: {exc} ({row_codecs.find_type_error(table, rows)})") from exc


class _DirectCopyConflict(Exception):
    """A direct COPY met a row that exists already: the transaction is undone whole."""

    def __init__(self, table: str) -> None:
        super().__init__(table)
        self.table = table


async def _write_rows(
    conn: Conn,
    table: str,
    rows: list[row_codecs.Row],
    strategy: row_codecs.CopyStrategy,
    merge: set[str],
) -> int:
    """Rows written: straight COPY when they are all new, else a merge (row_codecs.CopyStrategy)."""
    spec = METRIC_TABLES[table]  # type: ignore[index]
    if table not in merge and strategy.direct(table):
        # No savepoint around it (two round trips on every batch for a case that is
        # rare): a conflict aborts the transaction and commit_batch does it again.
        try:
            return _count(await _copy(conn, table, rows, into=spec.name, schema=SCHEMA))
        except asyncpg.UniqueViolationError as exc:
            raise _DirectCopyConflict(table) from exc
    await conn.execute(sql.CREATE_TEMP[table])
    await _copy(conn, table, rows, into=sql.temp_table_name(spec), schema=None)
    return _count(await conn.execute(sql.UPSERT[table]))


async def commit_batch(
    conn: Conn,
    batch: Sequence[Planned],
    strategy: row_codecs.CopyStrategy | None = None,
) -> CommitResult:
    """Apply ``batch`` in one transaction; raise OrphanMessages before writing anything."""
    strategy = strategy or row_codecs.CopyStrategy()
    merge: set[str] = set()
    while True:
        try:
            return await _commit_once(conn, batch, strategy, merge)
        except _DirectCopyConflict as exc:
            # A same-day re-scrape: rolled back, nothing of it stays; again, with that
            # table merged (each table conflicts at most once, so this ends).
            strategy.conflicted(exc.table)
            merge.add(exc.table)


async def _commit_once(
    conn: Conn,
    batch: Sequence[Planned],
    strategy: row_codecs.CopyStrategy,
    merge: set[str],
) -> CommitResult:
    result = CommitResult()
    job_ids = sorted({p.message.job_id for p in batch})
    async with conn.transaction():
        # The jobs and the ledger in one round trip: the ledger decides which chunks are
        # new; only their rows and counts are written.
        entries = bookkeeping.ledger_entries(batch)
        found = await conn.fetch(
            sql.CLAIM_CHUNKS,
            job_ids,
            [c[0] for c, _ in entries],
            [c[1] for c, _ in entries],
            [c[2] for c, _ in entries],
            [c[3] for c, _ in entries],
            [n for _, n in entries],
        )
        known = {r["job_id"]: JobRef(r["account_id"], "") for r in found if r["table_name"] is None}
        bad = bookkeeping.orphans(batch, known)
        if bad:
            raise OrphanMessages(bad)  # the rollback takes the ledger rows back
        new: set[bookkeeping.ChunkKey] = {
            (r["job_id"], r["airbnb_listing_id"], r["table_name"], r["chunk_no"])
            for r in found
            if r["table_name"] is not None
        }
        result.new_chunks = len(new)
        for table, rows in bookkeeping.rows_to_write(batch, new).items():
            result.rows_copied += len(rows)
            result.rows_written[table] = await _write_rows(conn, table, rows, strategy, merge)

        # Only now lock the jobs: the COPY above runs alongside other writers' batches of
        # the same job, and only the bookkeeping below is serialised per job. Under READ
        # COMMITTED every statement from here sees what the previous lock holder committed.
        # The lock adds the new chunks' counts to the jobs not final (sql.LOCK_JOBS).
        per_listing, per_job = bookkeeping.chunk_increments((c, n) for c, n in entries if c in new)
        keys = sorted(per_listing)  # one row-lock order in every writer
        jobs_added = sorted(per_job)
        locked = await conn.fetch(
            sql.LOCK_JOBS,
            job_ids,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [per_listing[k][0] for k in keys],
            [per_listing[k][1] for k in keys],
            jobs_added,
            [per_job[j] for j in jobs_added],
            sorted(FINAL_STATUSES),
        )
        jobs = {r["job_id"]: JobRef(r["account_id"], r["status"]) for r in locked}
        active = {job_id for job_id, ref in jobs.items() if ref.status not in FINAL_STATUSES}

        results = sorted(
            bookkeeping.merge_listing_results(
                p.message
                for p in batch
                if isinstance(p.message, ListingResult) and p.message.job_id in active
            ),
            key=lambda r: (r.job_id, r.listing_id),
        )
        if results:
            by_key = {(jobs[r.job_id].account_id, r.listing_id): r for r in results}
            names = {k: by_key[k] for k in sorted(by_key)}
            await conn.execute(
                sql.UPSERT_LISTING_RESULTS,
                [r.job_id for r in results],
                [r.listing_id for r in results],
                [r.status == "failed" for r in results],
                [bookkeeping.chunks_expected(r) for r in results],
                [r.error if r.status == "failed" else None for r in results],
                [k[0] for k in names],
                [k[1] for k in names],
                [r.internal_name for r in names.values()],
                [r.listing_name for r in names.values()],
            )

        for p in batch:
            if isinstance(p.message, JobEvent):
                await _apply_event(conn, p.message, jobs, result)

        unfinished = [j for j in job_ids if jobs[j].status not in FINAL_STATUSES]
        changed = [j for j in job_ids if j in active]
        await _complete(conn, unfinished, changed, jobs, result)

        for rotation in bookkeeping.rotations(batch):
            result.rotations.append(await _apply_rotation(conn, rotation))
    return result


async def _apply_event(
    conn: Conn, event: JobEvent, jobs: dict[uuid.UUID, JobRef], result: CommitResult
) -> None:
    job = jobs[event.job_id]
    if job.status in FINAL_STATUSES:
        return
    if event.event == "started":
        total = bookkeeping.listings_total(event)
        shortfall = bookkeeping.shortfall_note(total, event.listings_reported)
        await conn.execute(sql.START_JOB, event.job_id, event.at, total, shortfall)
        if event.listing_ids:
            await conn.execute(sql.ADD_PENDING_LISTINGS, event.job_id, event.listing_ids)
        if job.status != "running":
            jobs[event.job_id] = JobRef(job.account_id, "running")
            result.transitions.append(
                Transition(
                    event.job_id,
                    job.account_id,
                    "running",
                    f"{total} listings" + (f" ({shortfall})" if shortfall else ""),
                    {"listings_total": total},
                )
            )
        return
    if event.event == "auth_failed":
        reason = event.reason or "Airbnb rejected the session"
        error = f"authentication failed: {reason}; the account needs new credentials"
        await conn.execute(sql.FAIL_JOB, event.job_id, error)
        # The job's account, not the message's: the lock proved they are the same.
        # Not when the operator gave new credentials since the sync started: they are
        # untested, and a mark would keep the scheduler from ever trying them.
        await conn.execute(
            sql.MARK_CREDENTIALS_INVALID,
            job.account_id,
            event.at,
            reason,
            event.credentials_version,
        )
    else:
        error = f"sync failed: {event.reason or 'the fetcher gave no reason'}"
        await conn.execute(sql.FAIL_JOB, event.job_id, error)
    jobs[event.job_id] = JobRef(job.account_id, "failed")
    result.transitions.append(Transition(event.job_id, job.account_id, "failed", error))


async def _apply_rotation(conn: Conn, rotation: CredentialsRotated) -> Rotation:
    def outcome(what: bookkeeping.RotationOutcome, version: int | None) -> Rotation:
        return Rotation(
            rotation.job_id,
            rotation.account_id,
            rotation.from_version,
            what,
            version,
            tuple(rotation.changed),
        )

    row = await conn.fetchrow(
        sql.APPLY_ROTATION,
        rotation.account_id,
        rotation.from_version,
        rotation.cookie_token,
        rotation.job_id,
        rotation.rotated_at,
    )
    assert row is not None  # the SELECT always returns its one row
    what = bookkeeping.rotation_outcome(
        claimed=row["claimed"], applied_version=row["applied_version"]
    )
    return outcome(what, row["applied_version"] or row["version"])


async def _complete(
    conn: Conn,
    job_ids: list[uuid.UUID],
    changed: list[uuid.UUID],
    jobs: dict[uuid.UUID, JobRef],
    result: CommitResult,
) -> None:
    """The completion check of docs/data-path.md (Writer 3) for jobs not final yet, then
    every job of ``changed`` as it is after commit (result.jobs): one round trip when no
    job ends (the tally writes the progress and reports the jobs), at most three when
    some do, whatever the number of jobs."""
    if not changed:
        return
    tallies: list[tuple[uuid.UUID, bookkeeping.ListingTally, str | None]] = []
    for r in await conn.fetch(sql.TALLY_JOBS, job_ids, changed):
        if r["tallied"]:
            shortfall: str | None = r["shortfall"]
            tally = bookkeeping.ListingTally(
                r["listings_total"],
                r["known"],
                r["committed"],
                r["failed"],
                truncated=shortfall is not None,
            )
            tallies.append((r["job_id"], tally, shortfall))
        result.jobs[r["job_id"]] = _job_update(r)
    outcomes = {job_id: bookkeeping.job_outcome(t) for job_id, t, _ in tallies}
    ending = [(job_id, t, s) for job_id, t, s in tallies if outcomes[job_id] is not None]
    if not ending:
        return  # the common batch: its jobs go on, their progress is written
    with_failures = sorted(job_id for job_id, t, _ in ending if t.failed)
    failed: dict[uuid.UUID, list[tuple[str, str | None]]] = {}
    if with_failures:
        for f in await conn.fetch(
            sql.FAILED_LISTINGS, with_failures, bookkeeping.MAX_NAMED_FAILURES
        ):
            failed.setdefault(f["job_id"], []).append((f["airbnb_listing_id"], f["error"]))

    settle: list[tuple[uuid.UUID, str | None, int, int, str | None]] = []
    synced: set[str] = set()
    for job_id, tally, shortfall in ending:
        outcome = outcomes[job_id]
        assert outcome is not None
        failures: str | None = None
        if tally.failed:
            failures = bookkeeping.job_error(failed.get(job_id, []), tally.failed, tally.known)
        error = bookkeeping.final_error(shortfall, failures)
        settle.append((job_id, outcome, tally.committed, tally.failed, error))
        account_id = jobs[job_id].account_id
        if bookkeeping.advances_last_sync(outcome):
            synced.add(account_id)
        jobs[job_id] = JobRef(account_id, outcome)
        detail = error or f"{tally.committed} listings committed"
        counts = {
            "listings_total": tally.listings_total,
            "listings_succeeded": tally.committed,
            "listings_failed": tally.failed,
        }
        result.transitions.append(Transition(job_id, account_id, outcome, detail, counts))

    for r in await conn.fetch(
        sql.SETTLE_JOBS,
        [s[0] for s in settle],
        [s[1] for s in settle],
        [s[2] for s in settle],
        [s[3] for s in settle],
        [s[4] for s in settle],
        sorted(synced),
        sorted(job_id for job_id, _, _ in ending),
    ):
        result.jobs[r["job_id"]] = _job_update(r)


def _job_update(r: asyncpg.Record) -> JobUpdate:
    return JobUpdate(
        job_id=r["job_id"],
        account_id=r["account_id"],
        status=r["status"],
        listings_total=r["listings_total"],
        listings_succeeded=r["listings_succeeded"],
        listings_failed=r["listings_failed"],
        rows_written=r["rows_written"],
        error=r["error"],
        final=r["status"] in FINAL_STATUSES,
    )
