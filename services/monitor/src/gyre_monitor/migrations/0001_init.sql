-- The monitor's schema (search_path is set to it while this runs). Every timestamp is UTC.

-- Reference profiles, one per model version: `profile` is a binary gyre.monitor.v1.ReferenceProfile.
-- `feature_view` / `label` come from the version's lineage and go into retraining requests.
CREATE TABLE reference_profiles (
    model_name    text        NOT NULL,
    model_version bigint      NOT NULL CHECK (model_version > 0),
    profile       bytea       NOT NULL,
    sha256        text        NOT NULL,
    source        text        NOT NULL,
    feature_view  text        NOT NULL DEFAULT '',
    label         text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, model_version)
);

-- The open window and drift state of each (model, version). The row is locked (FOR UPDATE) while a
-- batch is applied, so two consumers can never interleave windows of one version.
CREATE TABLE window_cursors (
    model_name    text        NOT NULL,
    model_version bigint      NOT NULL,
    window_seq    bigint      NOT NULL DEFAULT 0,
    row_count     integer     NOT NULL DEFAULT 0,
    started_at    timestamptz,
    in_drift      boolean     NOT NULL DEFAULT false,
    last_alert_at timestamptz,
    PRIMARY KEY (model_name, model_version)
);

-- Served inputs, one row per prediction. The primary key is the natural dedupe key: a redelivered
-- or re-published prediction is never counted twice. Rows of old windows are pruned (see settings).
CREATE TABLE window_rows (
    model_name    text        NOT NULL,
    model_version bigint      NOT NULL,
    prediction_id text        NOT NULL,
    window_seq    bigint      NOT NULL,
    served_at     timestamptz NOT NULL,
    inputs        jsonb       NOT NULL,
    PRIMARY KEY (model_name, model_version, prediction_id)
);
CREATE INDEX window_rows_window ON window_rows (model_name, model_version, window_seq);
CREATE INDEX window_rows_served_at ON window_rows (model_name, model_version, served_at);

-- Closed windows. status: 'pending' (no reference profile yet), 'evaluated', 'too_small'.
CREATE TABLE windows (
    model_name            text             NOT NULL,
    model_version         bigint           NOT NULL,
    window_seq            bigint           NOT NULL,
    status                text             NOT NULL,
    closed_by             text             NOT NULL,
    row_count             integer          NOT NULL,
    window_start          timestamptz      NOT NULL,
    window_end            timestamptz      NOT NULL,
    drift_share           double precision,
    drift_share_threshold double precision,
    dataset_drift         boolean,
    drifted_features      text[]           NOT NULL DEFAULT '{}',
    alert_id              text,
    evaluated_at          timestamptz,
    PRIMARY KEY (model_name, model_version, window_seq)
);
CREATE INDEX windows_by_end ON windows (model_name, window_end);

-- Per-feature results of evaluated windows.
CREATE TABLE feature_drift (
    model_name     text             NOT NULL,
    model_version  bigint           NOT NULL,
    window_seq     bigint           NOT NULL,
    feature        text             NOT NULL,
    kind           text             NOT NULL,
    test_name      text             NOT NULL,
    statistic      double precision NOT NULL,
    p_value        double precision,
    threshold      double precision NOT NULL,
    drifted        boolean          NOT NULL,
    reference_rows bigint           NOT NULL,
    current_rows   bigint           NOT NULL,
    PRIMARY KEY (model_name, model_version, window_seq, feature)
);

-- Alerts raised, with the MonitorAlert as published (binary protobuf).
CREATE TABLE alerts (
    alert_id            text        PRIMARY KEY,
    model_name          text        NOT NULL,
    model_version       bigint      NOT NULL,
    window_seq          bigint      NOT NULL,
    detected_at         timestamptz NOT NULL,
    training_request_id text,
    event               bytea       NOT NULL
);
CREATE INDEX alerts_by_time ON alerts (detected_at DESC, alert_id);
CREATE INDEX alerts_by_model ON alerts (model_name, detected_at DESC);

-- Debounce state: the last retraining request per model (any version).
CREATE TABLE retraining (
    model_name        text        PRIMARY KEY,
    last_requested_at timestamptz NOT NULL,
    last_request_id   text        NOT NULL
);

-- Transactional outbox: events written with the state that caused them, published afterwards by
-- the relay (at-least-once; event_id is the CloudEvents id, deterministic, so consumers dedupe).
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
