-- The feedback service's schema (search_path is set to it while this runs). Every timestamp is UTC.
--
-- Feedback and predictions are stored independently and joined on prediction_id at query time, so
-- feedback that arrives before its inference event is attributed as soon as that event is stored.

-- Served predictions (from inference.events), one row per prediction id: the natural dedupe key.
-- `predicted` is the compared output in canonical text form (NULL when the prediction has none).
CREATE TABLE predictions (
    prediction_id text        PRIMARY KEY,
    model_name    text        NOT NULL,
    model_version bigint      NOT NULL,
    alias         text        NOT NULL DEFAULT '',
    served_at     timestamptz NOT NULL,
    shadow        boolean     NOT NULL DEFAULT false,
    predicted     text,
    stored_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX predictions_by_model ON predictions (model_name, served_at);
CREATE INDEX predictions_by_version ON predictions (model_name, model_version);

-- Feedback, one row per feedback_id (the idempotency key). At most one of thumbs_up, stars, score,
-- label is set; `label` is the corrected label in canonical text form. `event` is the binary
-- gyre.events.v1.FeedbackEvent as accepted (returned by GetPredictionFeedback).
CREATE TABLE feedback (
    feedback_id   text             PRIMARY KEY,
    prediction_id text             NOT NULL,
    thumbs_up     boolean,
    stars         smallint         CHECK (stars BETWEEN 1 AND 5),
    score         double precision CHECK (score >= 0 AND score <= 1),
    label         text,
    submitted_at  timestamptz      NOT NULL,
    event         bytea            NOT NULL,
    stored_at     timestamptz      NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(thumbs_up, stars, score, label) <= 1)
);
CREATE INDEX feedback_by_prediction ON feedback (prediction_id, submitted_at);
CREATE INDEX feedback_labelled ON feedback (prediction_id, submitted_at DESC) WHERE label IS NOT NULL;

-- Feature view and label of each model version (from registry.events VERSION_CREATED lineage):
-- what a retraining request must name.
CREATE TABLE model_versions (
    model_name    text        NOT NULL,
    model_version bigint      NOT NULL,
    feature_view  text        NOT NULL DEFAULT '',
    label         text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, model_version)
);

-- Debounce state of quality-drop alerts and retraining requests, one row per model. The row is
-- locked (FOR UPDATE) while a drop is evaluated, so concurrent consumers cannot both fire.
CREATE TABLE quality_alerts (
    model_name          text        PRIMARY KEY,
    last_alert_at       timestamptz,
    alert_id            text,
    training_request_id text
);

-- Transactional outbox: events written with the state that caused them, published afterwards
-- (at once, and by the relay after a broker outage). event_id is the deterministic CloudEvents id.
CREATE TABLE outbox (
    id           bigserial   PRIMARY KEY,
    topic        text        NOT NULL,
    record_key   text        NOT NULL,
    event_id     text        NOT NULL UNIQUE,
    payload      bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Idempotency claims of consumed events (gyre_common.bus.idempotency).
CREATE TABLE IF NOT EXISTS processed_events (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_processed_at ON processed_events (processed_at);
