-- The outbox moved to gyre_common.outbox, which sets aside rows it cannot publish (an undecodable
-- payload) instead of blocking the rows after them: failed_at and error record why.
ALTER TABLE outbox ADD COLUMN failed_at timestamptz;
ALTER TABLE outbox ADD COLUMN error text;
