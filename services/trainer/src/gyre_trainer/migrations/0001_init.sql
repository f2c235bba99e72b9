-- Training jobs: one row per TrainingRequest (request_id is the idempotency key).
CREATE TABLE jobs (
    job_id            text        PRIMARY KEY,
    request_id        text        NOT NULL UNIQUE,
    model_name        text        NOT NULL,
    request           bytea       NOT NULL,            -- gyre.events.v1.TrainingRequest, protobuf
    status            text        NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    parent_run_id     text        NOT NULL DEFAULT '',
    trials_completed  integer     NOT NULL DEFAULT 0,
    best_run_id       text        NOT NULL DEFAULT '',
    best_metrics      jsonb       NOT NULL DEFAULT '{}',
    model_version     bigint      NOT NULL DEFAULT 0,
    promoted          boolean     NOT NULL DEFAULT false,
    champion_version  bigint      NOT NULL DEFAULT 0,
    champion_metrics  jsonb       NOT NULL DEFAULT '{}',
    error             text        NOT NULL DEFAULT '',
    attempts          integer     NOT NULL DEFAULT 0,
    cancel_requested  boolean     NOT NULL DEFAULT false,
    not_before        timestamptz NOT NULL DEFAULT now(),  -- a re-queued job waits until then
    lease_owner       text,                                -- worker running the job
    lease_expires_at  timestamptz                          -- past it, another worker may take over
);
CREATE INDEX jobs_queued ON jobs (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_listing ON jobs (created_at DESC, job_id DESC);
CREATE INDEX jobs_model_listing ON jobs (model_name, created_at DESC, job_id DESC);

-- Transactional outbox: training.events written with the job change that caused them, relayed
-- to Kafka by the service and deleted once the broker acknowledged them.
CREATE TABLE outbox (
    seq         bigserial   PRIMARY KEY,
    event_id    text        NOT NULL UNIQUE,           -- ce_id, deterministic per job/attempt/step
    message_key text        NOT NULL,
    payload     bytea       NOT NULL,                  -- gyre.events.v1.TrainingEvent, protobuf
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Events of training.requests already turned into jobs (gyre_common.bus.idempotency).
CREATE TABLE IF NOT EXISTS processed_events (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_processed_at ON processed_events (processed_at);

