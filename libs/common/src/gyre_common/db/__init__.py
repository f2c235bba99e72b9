"""PostgreSQL for Gyre services: an asyncpg pool per service schema, and schema migrations.

Each service owns one schema; :func:`create_pool` points ``search_path`` at it so queries name
tables without a schema, and :func:`migrate` brings that schema up to date from the service's
``NNNN_description.sql`` files.
"""

from gyre_common.db.migrations import Migration, MigrationError, load_migrations, migrate
from gyre_common.db.pool import DatabaseUnavailable, create_pool, database_ready, probe_database, redact_url

__all__ = [
    "DatabaseUnavailable",
    "Migration",
    "MigrationError",
    "create_pool",
    "database_ready",
    "load_migrations",
    "migrate",
    "probe_database",
    "redact_url",
]
