"""The writer's SQL, as text built once from :mod:`shared.metric_tables` (pure).

Metric rows go through a temp table: a binary COPY is the fastest way into
PostgreSQL, and one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per table then
merges them. The update's ``WHERE (cols) IS DISTINCT FROM (EXCLUDED cols)`` skips
rows that would not change, so a redelivered chunk writes no tuple and its
command tag counts only rows really written.

When every row is new (the normal case, see row_codecs.CopyStrategy) the rows are
COPied straight into the table instead, and the temp table is not needed.
"""

from __future__ import annotations

from typing import Final

from shared.metric_tables import METRIC_TABLES, MetricTable


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def temp_table_name(table: MetricTable) -> str:
    return f"writer_{table.name}"


def create_temp_table_sql(table: MetricTable) -> str:
    tmp = quote(temp_table_name(table))
    # LIKE keeps the columns' types and NOT NULLs in step with the target's migrations.
    return f"CREATE TEMP TABLE {tmp} (LIKE {table.qualified_name}) ON COMMIT DROP"


def upsert_sql(table: MetricTable) -> str:
    cols = [quote(c) for c in table.column_names]
    key = set(table.key)
    updated = [quote(c) for c in table.column_names if c not in key]
    target = quote(table.name)
    return (
        f"INSERT INTO {table.qualified_name} AS {target} ({', '.join(cols)}) "
        f"SELECT {', '.join(cols)} FROM {quote(temp_table_name(table))} "
        f"ON CONFLICT ({', '.join(quote(k) for k in table.key)}) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in updated)
        + f" WHERE ({', '.join(f'{target}.{c}' for c in updated)}) IS DISTINCT FROM "
        f"({', '.join(f'EXCLUDED.{c}' for c in updated)})"
    )


CREATE_TEMP: Final[dict[str, str]] = {n: create_temp_table_sql(t) for n, t in METRIC_TABLES.items()}
UPSERT: Final[dict[str, str]] = {n: upsert_sql(t) for n, t in METRIC_TABLES.items()}

# Each statement below is one round trip; the common batch (chunks of running jobs) takes
# four of them and a COPY per table, whatever the number of jobs it touches
# (store.commit_batch; benchmarks/bench_writer.py counts them).

# The batch's jobs (orphans are found from them, store.OrphanMessages) and the
# exactly-once ledger in one round trip: RETURNING names the chunks this transaction is
# first to commit. An orphan's ledger row goes with the rollback that its OrphanMessages
# causes, so the insert need not wait for the check.
CLAIM_CHUNKS = """
WITH jobs AS (
    SELECT job_id, account_id FROM airbnb.sync_jobs WHERE job_id = ANY($1::uuid[])
), claimed AS (
    INSERT INTO airbnb.sync_committed_chunks
        (job_id, airbnb_listing_id, table_name, chunk_no, row_count)
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::int[], $6::int[])
    ON CONFLICT DO NOTHING
    RETURNING job_id, airbnb_listing_id, table_name, chunk_no
)
SELECT job_id, account_id, NULL::text AS airbnb_listing_id, NULL::text AS table_name,
       NULL::int AS chunk_no
FROM jobs
UNION ALL
SELECT job_id, NULL, airbnb_listing_id, table_name, chunk_no FROM claimed
"""

# Lock the jobs (job_id order in every writer, so two writers never deadlock on them) and
# add the new chunks' counts to those not final ($8: bookkeeping.FINAL_STATUSES), in one
# round trip. The counts join the locked rows, so each is added only once its job's lock
# is held: no other writer's bookkeeping of that job can interleave. The (job, listing)
# keys come sorted: one row-lock order in every writer.
LOCK_JOBS = """
WITH locked AS MATERIALIZED (
    SELECT job_id, account_id, status FROM airbnb.sync_jobs
    WHERE job_id = ANY($1::uuid[]) ORDER BY job_id FOR UPDATE
), active AS (
    SELECT job_id FROM locked WHERE status <> ALL($8::text[])
), listings AS (
    INSERT INTO airbnb.sync_job_listings AS l
        (job_id, airbnb_listing_id, chunks_committed, rows_written, started_at)
    SELECT u.job_id, u.listing_id, u.chunks, u.n_rows, now()
    FROM unnest($2::uuid[], $3::text[], $4::int[], $5::bigint[])
        AS u(job_id, listing_id, chunks, n_rows)
    WHERE u.job_id IN (SELECT job_id FROM active)
    ON CONFLICT (job_id, airbnb_listing_id) DO UPDATE SET
        chunks_committed = l.chunks_committed + EXCLUDED.chunks_committed,
        rows_written = l.rows_written + EXCLUDED.rows_written,
        started_at = COALESCE(l.started_at, EXCLUDED.started_at)
), job_rows AS (
    UPDATE airbnb.sync_jobs AS j SET rows_written = j.rows_written + u.n_rows, updated_at = now()
    FROM unnest($6::uuid[], $7::bigint[]) AS u(job_id, n_rows)
    WHERE j.job_id = u.job_id AND u.job_id IN (SELECT job_id FROM active)
)
SELECT job_id, account_id, status FROM locked
"""

# The listings' results and names, in one round trip (two tables).
# A committed listing stays committed; a failure does not undo a publication (the
# chunks of a published listing are on their way); otherwise the latest result wins.
# Rows that would not change are not touched.
UPSERT_LISTING_RESULTS = """
WITH results AS (
    INSERT INTO airbnb.sync_job_listings AS l
        (job_id, airbnb_listing_id, status, chunks_expected, error, started_at, finished_at)
    SELECT u.job_id, u.listing_id, CASE WHEN u.failed THEN 'failed' ELSE 'pending' END,
           u.expected, u.error, now(), CASE WHEN u.failed THEN now() END
    FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::int[], $5::text[])
        AS u(job_id, listing_id, failed, expected, error)
    ON CONFLICT (job_id, airbnb_listing_id) DO UPDATE SET
        status = EXCLUDED.status,
        chunks_expected = EXCLUDED.chunks_expected,
        error = EXCLUDED.error,
        finished_at = EXCLUDED.finished_at,
        started_at = COALESCE(l.started_at, EXCLUDED.started_at)
    WHERE l.status <> 'committed'
      AND NOT (EXCLUDED.status = 'failed' AND l.chunks_expected IS NOT NULL)
      AND (l.status, l.chunks_expected, l.error) IS DISTINCT FROM
          (EXCLUDED.status, EXCLUDED.chunks_expected, EXCLUDED.error)
), names AS (
    INSERT INTO airbnb.listings AS l
        (account_id, airbnb_listing_id, airbnb_internal_name, listing_name)
    SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::text[])
    ON CONFLICT (account_id, airbnb_listing_id) DO UPDATE SET
        airbnb_internal_name = COALESCE(EXCLUDED.airbnb_internal_name, l.airbnb_internal_name),
        listing_name = COALESCE(EXCLUDED.listing_name, l.listing_name),
        last_seen_at = now()
)
SELECT 1
"""

# $4: the shortfall note (bookkeeping.shortfall_note) when Airbnb returned fewer listings
# than it reported, else NULL. It is the job's error from now on: nothing else writes the
# error of a job that is not final, so TALLY_JOBS reads a running job's error as that note.
# A redelivered started event without the note keeps the one already there.
START_JOB = """
UPDATE airbnb.sync_jobs
SET status = 'running', started_at = COALESCE(started_at, $2), listings_total = $3,
    error = COALESCE($4, error), updated_at = now()
WHERE job_id = $1 AND status IN ('queued', 'running')
"""

ADD_PENDING_LISTINGS = """
INSERT INTO airbnb.sync_job_listings (job_id, airbnb_listing_id)
SELECT $1, unnest($2::text[])
ON CONFLICT DO NOTHING
"""

FAIL_JOB = """
UPDATE airbnb.sync_jobs SET status = 'failed', error = $2, finished_at = now(), updated_at = now()
WHERE job_id = $1 AND status IN ('queued', 'running')
"""

# $4: the credentials version Airbnb rejected (NULL from an older fetcher: any version).
MARK_CREDENTIALS_INVALID = """
UPDATE airbnb.accounts
SET credentials_invalid_at = $2, credentials_error = $3, updated_at = now()
WHERE account_id = $1 AND ($4::integer IS NULL OR credentials_version = $4)
"""

# Promote the listings whose chunks are all in, count each job's listings, write the
# counts as the progress of the jobs not final ($1), and report every job of $2 as it is
# after this statement (the notifications on airbnb.jobs.{job_id}), in one round trip.
# The count reads the listings as they were before the promotion (one statement, one
# snapshot), so a promoted listing counts as committed through ``promoted``: it was
# pending, so never failed. Progress is written only when it changed. A job whose
# count says it is done is ended by SETTLE_JOBS after this (bookkeeping.job_outcome):
# the common batch, whose jobs go on, needs no other statement.
TALLY_JOBS = """
WITH promoted AS (
    UPDATE airbnb.sync_job_listings SET status = 'committed', finished_at = now()
    WHERE job_id = ANY($1::uuid[]) AND status = 'pending'
      AND chunks_expected IS NOT NULL AND chunks_committed >= chunks_expected
    RETURNING job_id, airbnb_listing_id
), tally AS (
    SELECT j.job_id, j.error AS shortfall,
           count(l.airbnb_listing_id)::int AS known,
           (count(*) FILTER (WHERE l.status = 'committed' OR p.airbnb_listing_id IS NOT NULL))::int
               AS committed,
           (count(*) FILTER (WHERE l.status = 'failed'))::int AS failed
    FROM airbnb.sync_jobs j
    LEFT JOIN airbnb.sync_job_listings l ON l.job_id = j.job_id
    LEFT JOIN promoted p ON p.job_id = l.job_id AND p.airbnb_listing_id = l.airbnb_listing_id
    WHERE j.job_id = ANY($1::uuid[]) AND j.status IN ('queued', 'running')
    GROUP BY j.job_id
), progress AS (
    UPDATE airbnb.sync_jobs AS j
    SET listings_succeeded = t.committed, listings_failed = t.failed, updated_at = now()
    FROM tally t
    WHERE j.job_id = t.job_id
      AND (j.listings_succeeded, j.listings_failed) IS DISTINCT FROM (t.committed, t.failed)
    RETURNING j.job_id, j.listings_succeeded, j.listings_failed
)
SELECT j.job_id, j.account_id, j.status, j.listings_total,
       COALESCE(p.listings_succeeded, j.listings_succeeded) AS listings_succeeded,
       COALESCE(p.listings_failed, j.listings_failed) AS listings_failed,
       j.rows_written, j.error,
       t.job_id IS NOT NULL AS tallied, t.shortfall, t.known, t.committed, t.failed
FROM airbnb.sync_jobs j
LEFT JOIN tally t ON t.job_id = j.job_id
LEFT JOIN progress p ON p.job_id = j.job_id
WHERE j.job_id = ANY($2::uuid[])
ORDER BY j.job_id
"""

# The first $2 failed listings of each job in $1 (they name a final error), in one round trip.
FAILED_LISTINGS = """
SELECT job_id, airbnb_listing_id, error FROM (
    SELECT job_id, airbnb_listing_id, error,
           row_number() OVER (PARTITION BY job_id ORDER BY airbnb_listing_id) AS n
    FROM airbnb.sync_job_listings
    WHERE job_id = ANY($1::uuid[]) AND status = 'failed'
) f
WHERE n <= $2
ORDER BY job_id, airbnb_listing_id
"""

# The ends of the jobs that TALLY_JOBS found done (it wrote the others' progress), the
# accounts' last sync, then those jobs as they are after commit, in one round trip
# whatever the number of jobs. A row of $2 NULL is progress only (written only when it
# changed); else the job ends with that status and error ($5). $6: the accounts whose job ended
# having synced something (bookkeeping.advances_last_sync), sorted. $7: the jobs to
# report. The report reads the jobs as they were before this statement and takes
# what ``settled`` wrote over them.
SETTLE_JOBS = """
WITH settled AS (
    UPDATE airbnb.sync_jobs AS j
    SET status = COALESCE(u.status, j.status),
        listings_succeeded = u.succeeded,
        listings_failed = u.failed,
        error = CASE WHEN u.status IS NULL THEN j.error ELSE u.error END,
        finished_at = CASE WHEN u.status IS NULL THEN j.finished_at ELSE now() END,
        updated_at = now()
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::text[])
        AS u(job_id, status, succeeded, failed, error)
    WHERE j.job_id = u.job_id AND j.status IN ('queued', 'running')
      AND (u.status IS NOT NULL
           OR (j.listings_succeeded, j.listings_failed) IS DISTINCT FROM (u.succeeded, u.failed))
    RETURNING j.job_id, j.status, j.listings_succeeded, j.listings_failed, j.error
), synced AS (
    UPDATE airbnb.accounts SET last_sync_at = GREATEST(last_sync_at, now()), updated_at = now()
    WHERE account_id = ANY($6::text[])
)
SELECT j.job_id, j.account_id,
       CASE WHEN s.job_id IS NULL THEN j.status ELSE s.status END AS status,
       j.listings_total,
       CASE WHEN s.job_id IS NULL THEN j.listings_succeeded ELSE s.listings_succeeded END
           AS listings_succeeded,
       CASE WHEN s.job_id IS NULL THEN j.listings_failed ELSE s.listings_failed END
           AS listings_failed,
       j.rows_written,
       CASE WHEN s.job_id IS NULL THEN j.error ELSE s.error END AS error
FROM airbnb.sync_jobs j LEFT JOIN settled s ON s.job_id = j.job_id
WHERE j.job_id = ANY($7::uuid[])
ORDER BY j.job_id
"""

# Rotated credentials (bookkeeping.rotation_outcome), in one statement: claim the rotation in
# the ledger (a redelivered or replayed one finds its row: nothing more happens), then
# apply it only while the account still has the version the sync read, so credentials
# the operator gave in between win. The needs-credentials mark is left alone: a sync that
# rotated and then failed on auth stays marked.
APPLY_ROTATION = """
WITH claimed AS (
    INSERT INTO airbnb.credential_rotations (job_id, from_version, account_id)
    VALUES ($4, $2, $1)
    ON CONFLICT DO NOTHING
    RETURNING 1
), applied AS (
    UPDATE airbnb.accounts
    SET credentials_encrypted = $3, credentials_version = credentials_version + 1,
        credentials_rotated_at = $5, updated_at = now()
    WHERE account_id = $1 AND credentials_version = $2 AND deleted_at IS NULL
      AND EXISTS (SELECT FROM claimed)
    RETURNING credentials_version
)
SELECT EXISTS (SELECT FROM claimed) AS claimed,
       (SELECT credentials_version FROM applied) AS applied_version,
       (SELECT credentials_version FROM airbnb.accounts WHERE account_id = $1) AS version
"""
