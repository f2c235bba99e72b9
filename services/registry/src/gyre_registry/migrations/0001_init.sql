-- The registry's tables (schema "registry"). Protobuf sub-messages (signature, lineage) are kept
-- in their proto3 JSON form so they stay readable and queryable (lineage->>'runId').

CREATE TABLE registered_models (
    name            text        PRIMARY KEY,
    description     text        NOT NULL DEFAULT '',
    tags            jsonb       NOT NULL DEFAULT '{}',
    -- Highest version number handed out. Incremented under the row lock in the transaction that
    -- inserts the version, so numbers are 1, 2, ... without gaps even under concurrent creates.
    latest_version  bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

CREATE TABLE model_versions (
    model_name          text        NOT NULL REFERENCES registered_models (name),
    version             bigint      NOT NULL CHECK (version >= 1),
    status              text        NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'archived')),
    artifact_uri        text        NOT NULL,
    artifact_sha256     text        NOT NULL,
    artifact_size_bytes bigint      NOT NULL,
    artifact_format     text        NOT NULL DEFAULT '',
    signature           jsonb       NOT NULL,            -- gyre.events.v1.ModelSignature, proto3 JSON
    lineage             jsonb       NOT NULL,            -- gyre.events.v1.Lineage, proto3 JSON
    primary_metric      text        NOT NULL DEFAULT '',
    lower_is_better     boolean     NOT NULL DEFAULT false,
    holdout_id          text        NOT NULL DEFAULT '',
    description         text        NOT NULL DEFAULT '',
    tags                jsonb       NOT NULL DEFAULT '{}',
    created_by          text        NOT NULL,
    created_at          timestamptz NOT NULL,
    idempotency_key     text,                            -- NULL: no deduplication
    promotion           jsonb,                           -- the policy's decision, returned on retries
    archived_at         timestamptz,
    PRIMARY KEY (model_name, version),
    UNIQUE (model_name, idempotency_key)
);

CREATE TABLE aliases (
    model_name  text        NOT NULL,
    alias       text        NOT NULL,
    version     bigint      NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (model_name, alias),
    FOREIGN KEY (model_name, version) REFERENCES model_versions (model_name, version)
);

-- Every governance action: who, when, what, on which version, with details (from/to, reason).
CREATE TABLE audit_log (
    seq          bigserial   PRIMARY KEY,
    audit_id     text        NOT NULL UNIQUE,
    actor        text        NOT NULL,
    action       text        NOT NULL,
    model_name   text        NOT NULL DEFAULT '',
    version      bigint      NOT NULL DEFAULT 0,
    details      jsonb       NOT NULL DEFAULT '{}',
    occurred_at  timestamptz NOT NULL
);
CREATE INDEX audit_log_model ON audit_log (model_name, seq);
CREATE INDEX audit_log_time ON audit_log (occurred_at);

-- Transactional outbox (gyre_registry.outbox): registry.events rows written in the transaction
-- of the change they describe; the relay publishes them in seq order and stamps published_at.
CREATE TABLE outbox (
    seq           bigserial   PRIMARY KEY,
    event_id      text        NOT NULL UNIQUE,            -- ce_id: consumers dedupe on it
    topic         text        NOT NULL,                   -- base topic name (no prefix)
    event_type    text        NOT NULL,                   -- full protobuf name of the payload
    message_key   text,
    payload       bytea       NOT NULL,                   -- protobuf bytes
    occurred_at   timestamptz NOT NULL,                   -- ce_time
    published_at  timestamptz
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
