-- depends: 0004_credentials_version
-- Account events, committed if and only if announced (docs/data-path.md, Account events).
-- The admin writes each AccountEvent as a row here in the transaction of the change it
-- announces, and notifies the relay at commit (pg_notify is delivered only then). The
-- relay publishes committed rows in id order to airbnb.accounts.{event} with the row's
-- event_id as Nats-Msg-Id and marks them published; a crash between the two publishes the row
-- again and JetStream drops it in its duplicate window. Published rows are pruned after
-- a week.
CREATE TABLE airbnb.account_outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- names the event on NATS: unlike the id, unique across databases (a restored or
    -- recreated database starts its ids again, and the stream would drop the new events
    -- as duplicates of old ones)
    event_id uuid NOT NULL DEFAULT gen_random_uuid(),
    account_id text NOT NULL,
    event text NOT NULL,
    -- the encoded AccountEvent (shared.messages.encode), published as it is
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX account_outbox_unpublished ON airbnb.account_outbox (id)
    WHERE published_at IS NULL;
