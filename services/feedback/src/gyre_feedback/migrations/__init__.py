"""SQL migrations of the ``feedback`` schema (applied in order by gyre_common.db.migrate)."""
