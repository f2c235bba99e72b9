-- The features service's schema (search_path is set to it while this runs).

-- Registered feature views. `features` is the ordered schema: [{"name", "type", "description"}].
CREATE TABLE feature_views (
    name         text        PRIMARY KEY,
    entity       text        NOT NULL,
    features     jsonb       NOT NULL,
    ttl_seconds  bigint      NOT NULL CHECK (ttl_seconds >= 0),
    description  text        NOT NULL DEFAULT '',
    owner        text        NOT NULL DEFAULT '',
    tags         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Offline store: every event, append-mostly, for point-in-time joins and profiles.
-- The natural key (feature_view, entity_id, event_time) makes ingestion idempotent: a redelivered
-- or re-produced event merges into its row instead of adding one. `feature_values` holds only the
-- features the event named (JSON null = explicitly missing); `complete` says it named all of them,
-- which lets a point-in-time join stop looking further back.
CREATE TABLE offline_events (
    feature_view   text        NOT NULL,
    entity_id      text        NOT NULL,
    event_time     timestamptz NOT NULL,
    created_time   timestamptz NOT NULL,
    feature_values jsonb       NOT NULL,
    complete       boolean     NOT NULL,
    event_id       text        NOT NULL,
    source         text        NOT NULL DEFAULT '',
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (feature_view, entity_id, event_time)
);
-- The primary key serves the per-entity range scans of point-in-time joins; this one serves the
-- "latest complete event at or before t" probe, and the next one window scans (spines, profiles).
CREATE INDEX offline_events_complete ON offline_events (feature_view, entity_id, event_time DESC)
    WHERE complete;
CREATE INDEX offline_events_window ON offline_events (feature_view, event_time);

-- Online store: the latest value of each feature of each entity, one row per entity.
-- `state` maps feature -> [value, event_time_us, created_time_us] (microseconds since the Unix
-- epoch, UTC; value null = explicitly missing). Keeping the times per feature lets partial events
-- and out-of-order delivery resolve per feature (see online_merge) while writing one row per
-- entity and batch instead of one per feature. (max_event_us, max_created_us) is the newest stamp
-- in `state`: a batch entirely newer than it (the usual, in-order case) is a plain `||`.
CREATE TABLE online_features (
    feature_view   text        NOT NULL,
    entity_id      text        NOT NULL,
    state          jsonb       NOT NULL,
    max_event_us   bigint      NOT NULL,
    max_created_us bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (feature_view, entity_id)
);

-- `a` overlaid with the features of `b` that are new to `a` or carry a later
-- (event_time_us, created_time_us): out-of-order events never overwrite newer values.
CREATE FUNCTION online_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT a || coalesce(jsonb_object_agg(n.key, n.value), '{}'::jsonb)
    FROM jsonb_each(b) AS n
    WHERE NOT (a ? n.key)
       OR ((n.value ->> 1)::bigint, (n.value ->> 2)::bigint)
          > (((a -> n.key) ->> 1)::bigint, ((a -> n.key) ->> 2)::bigint)
$$;

-- Merges JSON objects left to right (later keys win): the state of an entity as of a time is
-- jsonb_merge_agg(feature_values ORDER BY event_time, created_time) over its events up to then.
CREATE AGGREGATE jsonb_merge_agg(jsonb) (
    SFUNC = jsonb_concat,
    STYPE = jsonb,
    INITCOND = '{}'
);
