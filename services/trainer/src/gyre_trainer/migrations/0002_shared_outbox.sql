-- The outbox moved to gyre_common.outbox (ordered, one relay at a time, poison rows set aside):
-- its table replaces the trainer's own. Events not yet published are carried over in order.
ALTER TABLE outbox RENAME TO outbox_v1;
ALTER INDEX IF EXISTS outbox_pkey RENAME TO outbox_v1_pkey;
ALTER INDEX IF EXISTS outbox_event_id_key RENAME TO outbox_v1_event_id_key;
CREATE TABLE outbox (
    seq           bigserial   PRIMARY KEY,
    event_id      text        NOT NULL UNIQUE,            -- ce_id, deterministic per job/attempt/step
    topic         text        NOT NULL,                   -- base topic name (no prefix)
    event_type    text        NOT NULL,                   -- full protobuf name of the payload
    message_key   text,
    payload       bytea       NOT NULL,                   -- protobuf bytes
    occurred_at   timestamptz NOT NULL,                   -- ce_time
    published_at  timestamptz,
    failed_at     timestamptz,                            -- set aside: could not be published
    error         text
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
INSERT INTO outbox (event_id, topic, event_type, message_key, payload, occurred_at)
    SELECT event_id, 'training.events', 'gyre.events.v1.TrainingEvent', message_key, payload, created_at
    FROM outbox_v1 ORDER BY seq;
DROP TABLE outbox_v1;
