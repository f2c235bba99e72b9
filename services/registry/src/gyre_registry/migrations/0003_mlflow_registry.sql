-- The MLflow-compatible registry surface (gyre_registry.mlflow): MLflow lets descriptions and tags
-- of a version change after it is created, searches versions by run id and tags, and orders by
-- last update. Tags stay in the jsonb columns of 0001 (one place, seen by the gRPC API and the
-- MLflow API alike); what is new is a last-update time per version, the MLflow run link, and
-- indexes for MLflow's search grammar.
-- The default keeps inserts written before this column correct; existing rows take their last change.
ALTER TABLE model_versions ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
UPDATE model_versions SET updated_at = coalesce(archived_at, created_at);
ALTER TABLE model_versions ADD COLUMN run_link text NOT NULL DEFAULT '';

CREATE INDEX model_versions_run_id ON model_versions ((lineage ->> 'runId'));
CREATE INDEX model_versions_tags ON model_versions USING gin (tags jsonb_path_ops);
CREATE INDEX registered_models_tags ON registered_models USING gin (tags jsonb_path_ops);
