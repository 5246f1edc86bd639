-- depends: 0009_insights_views
-- API keys with scopes (issue 16, item 1; services/admin/auth.py). ADMIN_API_KEYS stays the
-- bootstrap admin set in the environment; every other key is a row here, made by
-- `sync-airbnb keys create` and revoked (never deleted, so the audit trail can still name
-- it) by `sync-airbnb keys revoke`.
--
-- key_hash is the sha256 (hex) of the key, never the key. A key is 32 bytes from the
-- operating system's CSPRNG (256 bits of entropy), so a fast hash is the right one: a salt
-- or a slow hash (bcrypt, argon2) defends a low-entropy secret (a password) against a
-- dictionary or a precomputed table, and no dictionary or table covers 2^256 keys. A fast
-- unsalted hash also lets the admin find a key by one index probe per request.
CREATE TABLE airbnb.api_keys (
    key_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- what the audit trail and `keys list` call the key; ':' is kept for the bootstrap
    -- keys' names (bootstrap:1, bootstrap:2, ...) and connect tokens (connect-token:<id>)
    name text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$'),
    scope text NOT NULL CHECK (scope IN ('admin', 'read', 'customer')),
    customer_id text,
    key_hash text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    -- updated at most once a minute per key (services/admin/auth.py), not on every request
    last_used_at timestamptz,
    CONSTRAINT api_keys_customer CHECK ((scope = 'customer') = (customer_id IS NOT NULL))
);

-- A name is unique among the keys in force; a revoked key's name may be given again.
CREATE UNIQUE INDEX api_keys_live_name ON airbnb.api_keys (name) WHERE revoked_at IS NULL;
