-- Text features give one result per check (embedding, length, oov_share, empty): the descriptor
-- joins the key of a window's per-feature results ('' for numerical and categorical features).
ALTER TABLE feature_drift ADD COLUMN descriptor text NOT NULL DEFAULT '';
ALTER TABLE feature_drift DROP CONSTRAINT feature_drift_pkey;
ALTER TABLE feature_drift ADD PRIMARY KEY (model_name, model_version, window_seq, feature, descriptor);
-- Checks that could not run over a window, and why: [{"feature", "descriptor", "reason"}, ...].
ALTER TABLE windows ADD COLUMN skipped jsonb NOT NULL DEFAULT '[]';
