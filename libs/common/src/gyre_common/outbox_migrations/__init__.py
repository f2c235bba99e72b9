"""Migrations of the transactional outbox table (:mod:`gyre_common.outbox`), one set for every service.

The migration runner applies them to the schema of each service whose ``ServiceSpec`` says
``outbox=True``, after the service's own migrations, and records them in that schema's
``schema_migrations`` under the namespace ``gyre_common.outbox_migrations``. They are idempotent
(``IF NOT EXISTS``) because schemas made before this set existed already have the table, created by
the services' own migrations.
"""
