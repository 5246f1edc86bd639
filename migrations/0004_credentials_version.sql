-- depends: 0003_drop_export_indexes
-- Airbnb sessions that stay alive (docs/sessions.md): the fetcher saves rotated auth
-- cookies back, and the operator may give new ones at any time. Every change of
-- credentials_encrypted bumps credentials_version; a rotation names the version its
-- sync started from and applies only while the account still has it, so credentials
-- the operator gave in between always win.

ALTER TABLE airbnb.accounts
    ADD COLUMN credentials_version integer NOT NULL DEFAULT 1 CHECK (credentials_version >= 1),
    -- when the fetcher last saved rotated cookies (NULL: never)
    ADD COLUMN credentials_rotated_at timestamptz,
    -- the job whose rotation set the current version: a redelivered or replayed
    -- CredentialsRotated of that job is recognised as already applied
    ADD COLUMN credentials_rotated_job_id uuid;
