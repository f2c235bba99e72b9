-- Issue #11: the entity and event time a prediction is about (InferenceEvent.entity_id and
-- event_time), so a corrected label can go back to the feature store as a label event.
ALTER TABLE predictions ADD COLUMN entity_id text NOT NULL DEFAULT '';
ALTER TABLE predictions ADD COLUMN event_time timestamptz;
