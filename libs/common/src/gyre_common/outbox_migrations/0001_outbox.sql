-- The transactional outbox (gyre_common.outbox): events written in the transaction of the change
-- they describe; the relay publishes them in seq order, stamps published_at, and sets aside rows it
-- cannot publish (failed_at, error). Idempotent: schemas created before this shared set already
-- have the table from their service's own migrations (registry 0001+0002, feedback/monitor/trainer 0002).
CREATE TABLE IF NOT EXISTS outbox (
    seq           bigserial   PRIMARY KEY,
    event_id      text        NOT NULL UNIQUE,            -- ce_id: consumers dedupe on it
    topic         text        NOT NULL,                   -- base topic name (no prefix)
    event_type    text        NOT NULL,                   -- full protobuf name of the payload
    message_key   text,
    payload       bytea       NOT NULL,                   -- protobuf bytes
    occurred_at   timestamptz NOT NULL,                   -- ce_time
    published_at  timestamptz,
    failed_at     timestamptz,                            -- set aside: could not be published
    error         text
);
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS failed_at timestamptz;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS error text;
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
