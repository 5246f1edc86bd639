-- depends: 0007_scheduler_runs
-- What the scheduler made of each manual trigger (docs/data-path.md, "Manual triggers").
-- The trigger itself waits in JetStream (AIRBNB_SYNC_TRIGGERS) until a scheduler handles
-- it; the scheduler writes this row, then acks the message. So a trigger is either still
-- in the stream (pending) or here (handled), never neither, and the admin answers
-- GET /api/v1/triggers/{trigger_id} from the two without writing anything itself.
CREATE TABLE airbnb.sync_triggers (
    trigger_id uuid PRIMARY KEY,
    account_id text NOT NULL,
    full_sync boolean NOT NULL,
    requested_at timestamptz NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    -- the job it ended in, or the refusal: not_found, deleted, inactive, needs_credentials,
    -- invalid_request
    job_id uuid,
    error text,
    detail text
);
