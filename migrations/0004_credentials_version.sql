-- depends: 0003_drop_export_indexes
-- Airbnb sessions that stay alive (docs/sessions.md): the fetcher saves rotated auth
-- cookies back, and the operator may give new ones at any time. Every change of
-- credentials_encrypted bumps credentials_version; a rotation names the version its
-- sync started from and applies only while the account still has it, so credentials
-- the operator gave in between always win.

ALTER TABLE airbnb.accounts
    ADD COLUMN credentials_version integer NOT NULL DEFAULT 1 CHECK (credentials_version >= 1),
    -- when the fetcher last saved rotated cookies (NULL: never)
    ADD COLUMN credentials_rotated_at timestamptz;

-- Every CredentialsRotated the writer has handled, applied or dropped, by the job and the
-- version it started from (one sync reads one version): a redelivered or replayed one
-- finds its row and changes nothing, not even a counter. Only within the results
-- stream's max_age (7 days) can a rotation come again; older rows may be deleted.
CREATE TABLE airbnb.credential_rotations (
    job_id uuid NOT NULL,
    from_version integer NOT NULL,
    account_id text NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, from_version)
);
