-- The schema of sync-airbnb: accounts, their listings, the three metrics tables
-- (column rule in shared/metric_tables.py, checked by tests/test_migrations.py),
-- sync jobs and the ledger that makes redelivered row batches harmless.

CREATE SCHEMA IF NOT EXISTS airbnb;

CREATE TABLE airbnb.accounts (
    account_id text PRIMARY KEY CHECK (account_id ~ '^[0-9]{1,32}$'),
    customer_id text,
    -- Fernet token (MultiFernet over SECRET_KEYS) of the Airbnb cookie; never plaintext.
    credentials_encrypted text NOT NULL,
    x_client_version text NOT NULL,
    user_agent text NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    -- Set when Airbnb rejected the session; the scheduler skips the account until
    -- the credentials change.
    credentials_invalid_at timestamptz,
    credentials_error text,
    last_sync_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE INDEX accounts_customer_idx ON airbnb.accounts (customer_id) WHERE customer_id IS NOT NULL;
CREATE INDEX accounts_schedulable_idx ON airbnb.accounts (account_id)
    WHERE is_active AND deleted_at IS NULL AND credentials_invalid_at IS NULL;

CREATE TABLE airbnb.listings (
    account_id text NOT NULL REFERENCES airbnb.accounts (account_id),
    airbnb_listing_id text NOT NULL,
    airbnb_internal_name text,
    listing_name text,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, airbnb_listing_id)
);

CREATE TABLE airbnb.chart_query (
    account_id text NOT NULL,
    airbnb_listing_id text NOT NULL,
    metric_date date NOT NULL,
    time timestamptz NOT NULL,
    airbnb_internal_name text,
    conversion_rate_your_value double precision,
    conversion_rate_your_value_string text,
    conversion_rate_similar_value double precision,
    conversion_rate_similar_value_string text,
    p3_impressions_your_value bigint,
    p3_impressions_your_value_string text,
    p3_impressions_similar_value bigint,
    p3_impressions_similar_value_string text,
    extra_metrics jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (account_id, airbnb_listing_id, metric_date, time)
);

CREATE TABLE airbnb.chart_summary (
    account_id text NOT NULL,
    airbnb_listing_id text NOT NULL,
    window_start date NOT NULL,
    time timestamptz NOT NULL,
    window_end date NOT NULL,
    airbnb_internal_name text,
    conversion_rate_value double precision,
    conversion_rate_value_string text,
    conversion_rate_value_change double precision,
    conversion_rate_value_change_string text,
    search_conversion_rate_value double precision,
    search_conversion_rate_value_string text,
    search_conversion_rate_value_change double precision,
    search_conversion_rate_value_change_string text,
    listing_conversion_rate_value double precision,
    listing_conversion_rate_value_string text,
    listing_conversion_rate_value_change double precision,
    listing_conversion_rate_value_change_string text,
    p2_impressions_first_page_rate_value double precision,
    p2_impressions_first_page_rate_value_string text,
    p2_impressions_first_page_rate_value_change double precision,
    p2_impressions_first_page_rate_value_change_string text,
    p3_impressions_value bigint,
    p3_impressions_value_string text,
    p3_impressions_value_change double precision,
    p3_impressions_value_change_string text,
    p2_impressions_value bigint,
    p2_impressions_value_string text,
    p2_impressions_value_change double precision,
    p2_impressions_value_change_string text,
    extra_metrics jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (account_id, airbnb_listing_id, window_start, time)
);

CREATE TABLE airbnb.list_of_metrics (
    account_id text NOT NULL,
    airbnb_listing_id text NOT NULL,
    window_start date NOT NULL,
    time timestamptz NOT NULL,
    window_end date NOT NULL,
    airbnb_internal_name text,
    conversion_rate_value double precision,
    conversion_rate_value_string text,
    search_conversion_rate_value double precision,
    search_conversion_rate_value_string text,
    listing_conversion_rate_value double precision,
    listing_conversion_rate_value_string text,
    p2_impressions_first_page_rate_value double precision,
    p2_impressions_first_page_rate_value_string text,
    p3_impressions_value bigint,
    p3_impressions_value_string text,
    p2_impressions_value bigint,
    p2_impressions_value_string text,
    extra_metrics jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (account_id, airbnb_listing_id, window_start, time)
);

-- Export reads one account over a date range, newest scrape first.
CREATE INDEX chart_query_export_idx ON airbnb.chart_query (account_id, metric_date, time DESC);
CREATE INDEX chart_summary_export_idx ON airbnb.chart_summary (account_id, window_start, time DESC);
CREATE INDEX list_of_metrics_export_idx
    ON airbnb.list_of_metrics (account_id, window_start, time DESC);

CREATE TABLE airbnb.sync_jobs (
    job_id uuid PRIMARY KEY,
    account_id text NOT NULL REFERENCES airbnb.accounts (account_id),
    -- 'full' re-fetches the first-run window; 'incremental' the short one.
    kind text NOT NULL CHECK (kind IN ('incremental', 'full')),
    -- what asked for it: schedule, account_created, startup, manual
    trigger text NOT NULL,
    -- one job per account, scrape day and kind, whoever asks and however often
    dedup_key text NOT NULL UNIQUE,
    scrape_day date NOT NULL,
    window_start date NOT NULL,
    window_end date NOT NULL,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'partial', 'failed')),
    listings_total integer,
    listings_succeeded integer NOT NULL DEFAULT 0,
    listings_failed integer NOT NULL DEFAULT 0,
    rows_written bigint NOT NULL DEFAULT 0,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_jobs_account_idx ON airbnb.sync_jobs (account_id, created_at DESC);
CREATE INDEX sync_jobs_unfinished_idx ON airbnb.sync_jobs (status)
    WHERE status IN ('queued', 'running');

-- One row per listing of a job: what the fetcher announced and what is committed.
CREATE TABLE airbnb.sync_job_listings (
    job_id uuid NOT NULL REFERENCES airbnb.sync_jobs (job_id) ON DELETE CASCADE,
    airbnb_listing_id text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'committed', 'failed')),
    chunks_expected integer,
    chunks_committed integer NOT NULL DEFAULT 0,
    rows_written bigint NOT NULL DEFAULT 0,
    error text,
    started_at timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (job_id, airbnb_listing_id)
);

-- The exactly-once ledger: a row batch counts once, however often it is delivered.
CREATE TABLE airbnb.sync_committed_chunks (
    job_id uuid NOT NULL,
    airbnb_listing_id text NOT NULL,
    table_name text NOT NULL,
    chunk_no integer NOT NULL,
    row_count integer NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, airbnb_listing_id, table_name, chunk_no)
);
