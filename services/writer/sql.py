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

FIND_JOBS = """
SELECT job_id, account_id FROM airbnb.sync_jobs WHERE job_id = ANY($1::uuid[])
"""

# Lock order is job_id order in every writer, so two writers never deadlock on jobs.
LOCK_JOBS = """
SELECT job_id, account_id, status FROM airbnb.sync_jobs
WHERE job_id = ANY($1::uuid[]) ORDER BY job_id FOR UPDATE
"""

# The exactly-once ledger: RETURNING names the chunks this transaction is first to commit.
INSERT_LEDGER = """
INSERT INTO airbnb.sync_committed_chunks
    (job_id, airbnb_listing_id, table_name, chunk_no, row_count)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::int[])
ON CONFLICT DO NOTHING
RETURNING job_id, airbnb_listing_id, table_name, chunk_no
"""

ADD_LISTING_CHUNKS = """
INSERT INTO airbnb.sync_job_listings AS l
    (job_id, airbnb_listing_id, chunks_committed, rows_written, started_at)
SELECT u.job_id, u.listing_id, u.chunks, u.n_rows, now()
FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[])
    AS u(job_id, listing_id, chunks, n_rows)
ON CONFLICT (job_id, airbnb_listing_id) DO UPDATE SET
    chunks_committed = l.chunks_committed + EXCLUDED.chunks_committed,
    rows_written = l.rows_written + EXCLUDED.rows_written,
    started_at = COALESCE(l.started_at, EXCLUDED.started_at)
"""

ADD_JOB_ROWS = """
UPDATE airbnb.sync_jobs AS j SET rows_written = j.rows_written + u.n_rows, updated_at = now()
FROM unnest($1::uuid[], $2::bigint[]) AS u(job_id, n_rows)
WHERE j.job_id = u.job_id
"""

# A committed listing stays committed; a failure does not undo a publication (the
# chunks of a published listing are on their way); otherwise the latest result wins.
# Rows that would not change are not touched.
UPSERT_JOB_LISTINGS = """
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
"""

UPSERT_LISTINGS = """
INSERT INTO airbnb.listings AS l (account_id, airbnb_listing_id, airbnb_internal_name, listing_name)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
ON CONFLICT (account_id, airbnb_listing_id) DO UPDATE SET
    airbnb_internal_name = COALESCE(EXCLUDED.airbnb_internal_name, l.airbnb_internal_name),
    listing_name = COALESCE(EXCLUDED.listing_name, l.listing_name),
    last_seen_at = now()
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

PROMOTE_LISTINGS = """
UPDATE airbnb.sync_job_listings SET status = 'committed', finished_at = now()
WHERE job_id = ANY($1::uuid[]) AND status = 'pending'
  AND chunks_expected IS NOT NULL AND chunks_committed >= chunks_expected
"""

TALLY_JOBS = """
SELECT j.job_id, j.listings_total, j.error AS shortfall,
       count(l.airbnb_listing_id) AS known,
       count(*) FILTER (WHERE l.status = 'committed') AS committed,
       count(*) FILTER (WHERE l.status = 'failed') AS failed
FROM airbnb.sync_jobs j
LEFT JOIN airbnb.sync_job_listings l ON l.job_id = j.job_id
WHERE j.job_id = ANY($1::uuid[]) AND j.status IN ('queued', 'running')
GROUP BY j.job_id
"""

FAILED_LISTINGS = """
SELECT airbnb_listing_id, error FROM airbnb.sync_job_listings
WHERE job_id = $1 AND status = 'failed' ORDER BY airbnb_listing_id LIMIT $2
"""

UPDATE_JOB_PROGRESS = """
UPDATE airbnb.sync_jobs SET listings_succeeded = $2, listings_failed = $3, updated_at = now()
WHERE job_id = $1 AND status IN ('queued', 'running')
  AND (listings_succeeded, listings_failed) IS DISTINCT FROM ($2, $3)
"""

FINISH_JOB = """
UPDATE airbnb.sync_jobs
SET status = $2, listings_succeeded = $3, listings_failed = $4, error = $5,
    finished_at = now(), updated_at = now()
WHERE job_id = $1 AND status IN ('queued', 'running')
"""

ADVANCE_LAST_SYNC = """
UPDATE airbnb.accounts SET last_sync_at = GREATEST(last_sync_at, now()), updated_at = now()
WHERE account_id = $1
"""

JOB_SNAPSHOTS = """
SELECT job_id, account_id, status, listings_total, listings_succeeded, listings_failed,
       rows_written, error
FROM airbnb.sync_jobs WHERE job_id = ANY($1::uuid[])
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
