"""SQL migrations of the ``monitor`` schema (applied in order by gyre_common.db.migrate)."""
