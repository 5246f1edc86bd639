"""Every Prometheus metric of the project, defined once.

Each process exposes the default registry on ``/metrics``; a metric that a
process never touches simply stays at zero there.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

AIRBNB_REQUESTS = Counter(
    "sync_airbnb_airbnb_requests_total",
    "Requests sent to Airbnb, by operation and outcome (HTTP status or error kind).",
    ["operation", "status"],
)
AIRBNB_RETRIES = Counter(
    "sync_airbnb_airbnb_retries_total",
    "Retries of Airbnb requests, by operation and reason.",
    ["operation", "reason"],
)
AIRBNB_RATE_LIMITED = Counter(
    "sync_airbnb_airbnb_rate_limited_total",
    "HTTP 429 answers from Airbnb, by operation.",
    ["operation"],
)
AIRBNB_REQUEST_SECONDS = Histogram(
    "sync_airbnb_airbnb_request_seconds",
    "Latency of single Airbnb HTTP requests (one attempt), by operation.",
    ["operation"],
)
AIRBNB_AUTH_FAILURES = Counter(
    "sync_airbnb_airbnb_auth_failures_total",
    "Sessions Airbnb rejected (expired or invalid credentials).",
)

ROWS_PUBLISHED = Counter(
    "sync_airbnb_rows_published_total", "Rows published by fetchers, by table.", ["table"]
)
LISTINGS_FETCHED = Counter(
    "sync_airbnb_listings_fetched_total",
    "Listings a fetcher finished, by outcome (published, skipped_already_published, failed).",
    ["outcome"],
)
LISTINGS_TRUNCATED = Counter(
    "sync_airbnb_listings_truncated_total",
    "ListingsSectionQuery answers that returned fewer listings than Airbnb reported "
    "(totalCount); each one's job ends partial, 'N of M listings returned'.",
)
SYNCS_IN_FLIGHT = Gauge("sync_airbnb_syncs_in_flight", "Account syncs running in this fetcher.")
CREDENTIAL_CHECKS = Counter(
    "sync_airbnb_credential_checks_total",
    "Credential checks a fetcher answered (airbnb.credentials.check), by outcome (live, "
    "expired, other_host, rejected, unavailable).",
    ["outcome"],
)
EXTRA_METRICS = Counter(
    "sync_airbnb_extra_metrics_total",
    "Metric values Airbnb returned that have no column (kept in extra_metrics), by table.",
    ["table"],
)

ROWS_WRITTEN = Counter(
    "sync_airbnb_rows_written_total", "Rows upserted by writers, by table.", ["table"]
)
BATCH_ROWS = Histogram(
    "sync_airbnb_writer_batch_rows",
    "Rows per committed writer batch.",
    buckets=(10, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000),
)
COMMIT_SECONDS = Histogram(
    "sync_airbnb_writer_commit_seconds", "Time from batch start to commit in the writer."
)
DEAD_LETTERS = Counter(
    "sync_airbnb_dead_letters_total",
    "Messages sent to the dead-letter stream, by service and reason.",
    ["service", "reason"],
)
JOBS = Counter("sync_airbnb_jobs_total", "Sync job state changes, by resulting status.", ["status"])
WRITER_PENDING = Gauge(
    "sync_airbnb_writer_pending_messages",
    "Row batches in the sync-results stream not yet delivered to any writer (the writer "
    "consumer's num_pending), as this writer last read it.",
)
ACCOUNTS_NEEDING_CREDENTIALS = Gauge(
    "sync_airbnb_accounts_needing_credentials",
    "Active accounts whose Airbnb session was rejected (credentials_invalid_at set), as "
    "the scheduler's leader last counted them; 0 on a scheduler that does not lead.",
)
ACCOUNTS_STALE = Gauge(
    "sync_airbnb_accounts_stale",
    "Schedulable accounts with no sync for 36 h (never synced: created 36 h ago), as the "
    "scheduler's leader last counted them; 0 on a scheduler that does not lead.",
)
SYNC_REQUESTS_EMITTED = Counter(
    "sync_airbnb_sync_requests_emitted_total",
    "Sync requests the scheduler published, by trigger.",
    ["trigger"],
)
ACCOUNT_EVENTS_RELAYED = Counter(
    "sync_airbnb_account_events_relayed_total",
    "Account events the admin's outbox relay published (committed changes announced).",
)

CREDENTIAL_ROTATIONS = Counter(
    "sync_airbnb_credential_rotations_total",
    "Rotated Airbnb auth cookies the writer handled, by outcome: applied, or dropped "
    "(the account's credentials changed since the sync started).",
    ["outcome"],
)
AIRBNB_PREFLIGHTS = Counter(
    "sync_airbnb_airbnb_preflights_total",
    "Dashboard page loads before a sync, by outcome (live, login_redirect, error).",
    ["outcome"],
)
