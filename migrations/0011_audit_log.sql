-- depends: 0009_insights_views
-- The audit trail (issue 16, item 2): one row per change of an account or a key, a sync
-- trigger, or a connect token's use, written by the admin in the change's own transaction
-- (services/admin/store.py, record), so an entry exists if and only if its change
-- committed. Who (the key's name, its scope, the client's address), when, what (the action,
-- the account or key it concerns, the names of the fields that changed) and a detail that
-- never holds a credential: a replaced cookie is the field name "credentials" alone.
--
-- Append-only: the API only inserts and reads. The admin's database role usually owns the
-- table (it runs the migrations), so grants cannot be relied on to stop an UPDATE or a
-- DELETE; the triggers below refuse both, and TRUNCATE, whoever sends them. They are a
-- safety net against a bug or a stray statement, not against someone who may drop them.
-- There is no retention: the trail is kept for as long as the database.
CREATE TABLE airbnb.audit_log (
    entry_id bigserial PRIMARY KEY,
    -- the transaction's start: every entry of one change has the same time
    at timestamptz NOT NULL DEFAULT now(),
    -- the key's name; 'bootstrap:<n>' for the n-th key of ADMIN_API_KEYS,
    -- 'connect-token:<id>' for a connect token, 'cli' for the command line
    actor text NOT NULL,
    actor_scope text NOT NULL,
    -- the client's address as the admin saw it (request.remote); 'local:<os user>' for
    -- the command line
    client text NOT NULL,
    action text NOT NULL,
    -- no foreign key: the trail outlives what it names, and an account row removed by
    -- hand must not take its history with it
    account_id text,
    key_name text,
    -- field names only, never values
    fields text[] NOT NULL DEFAULT '{}',
    detail jsonb
);

-- GET /api/v1/audit reads newest first, by account or by time.
CREATE INDEX audit_log_account ON airbnb.audit_log (account_id, entry_id);
CREATE INDEX audit_log_at ON airbnb.audit_log (at);

CREATE FUNCTION airbnb.audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'airbnb.audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON airbnb.audit_log
    FOR EACH ROW EXECUTE FUNCTION airbnb.audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON airbnb.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION airbnb.audit_log_append_only();
