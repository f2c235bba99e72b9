"""SQL migrations of the ``trainer`` schema (applied by gyre_common.db.migrate)."""
