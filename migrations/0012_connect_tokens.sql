-- depends: 0009_insights_views
-- Connect tokens (issue 16, item 4): what an operator, or a customer's own key, hands to a
-- host so the browser extension can send the host's Airbnb session to POST /api/v1/connect.
-- A token is 32 random bytes; only its SHA-256 is kept (a fast hash is right for a secret of
-- that entropy, nothing to salt against a dictionary), so the table cannot give one back.
CREATE TABLE airbnb.connect_tokens (
    token_id uuid PRIMARY KEY,
    token_hash text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    -- The account it connects. A token made for "a new account of this customer" has none
    -- until its first use creates the account; from then on it names that account, so it
    -- creates at most one account and afterwards only updates it.
    account_id text,
    for_new_account boolean NOT NULL,
    -- The customer of a new account it creates (and of the key that made it, for a
    -- customer key).
    customer_id text,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    -- The last accepted POST /connect, and how many there were.
    used_at timestamptz,
    uses integer NOT NULL DEFAULT 0,
    CHECK (for_new_account OR account_id IS NOT NULL)
);
CREATE INDEX connect_tokens_account_idx ON airbnb.connect_tokens (account_id, created_at)
    WHERE account_id IS NOT NULL;
