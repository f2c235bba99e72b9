"""The asyncpg connection pool of one service, and the database readiness probe."""

from __future__ import annotations

import asyncio
import logging
import re
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gyre_common.settings import DatabaseSettings

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL could not be reached or refused us; the message names ``GYRE_DATABASE_URL``."""


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_identifier(name: str) -> str:
    """``name`` if it is a plain lower-case SQL identifier (safe to splice into SQL), else ValueError."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a valid schema name: use lower-case letters, digits and _")
    return name


async def keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond what asyncpg always does (roll back an open
    transaction, drop listeners), i.e. no ``RESET ALL; UNLISTEN *; CLOSE ALL;
    pg_advisory_unlock_all()`` round trip, which cost ~160 us of every request in every service.

    That is safe because no Gyre code leaves session state on a pooled connection: settings are
    ``SET LOCAL`` (or the pool's ``server_settings``), nobody ``LISTEN``s, cursors live inside
    transactions, the outbox relays lock with transaction-scoped advisory locks, and the one
    session-level advisory lock (migrations) is released in a ``finally`` that closes the
    connection when the unlock itself fails. The features service's temporary staging tables are
    meant to outlive a request (``RESET ALL`` never dropped them either).
    """


async def create_pool(settings: DatabaseSettings, schema: str | None = None, *,
                      application_name: str | None = None) -> asyncpg.Pool:
    """Open a pool to ``settings.url`` whose connections use ``schema`` first on their search path.

    Args:
        settings: where the database is, pool sizes, connect timeout and statement timeout
            (seconds; a statement running longer fails with ``asyncpg.QueryCanceledError``).
        schema: the service's schema; it need not exist yet (:func:`migrate` creates it).
        application_name: shown in ``pg_stat_activity`` (e.g. ``gyre-registry``).

    Raises:
        DatabaseUnavailable: the server cannot be reached within ``connect_timeout_s`` or refuses
            the connection. The message carries the URL with its password redacted.
        ValueError: ``schema`` is not a plain identifier.
    """
    server_settings: dict[str, str] = {}
    if schema is not None:
        server_settings["search_path"] = f"{check_identifier(schema)}, public"
    if application_name:
        server_settings["application_name"] = application_name
    # Server-side rather than asyncpg's command_timeout: PostgreSQL itself stops the statement and
    # frees its locks and memory, and code that needs longer says so with SET LOCAL.
    server_settings["statement_timeout"] = str(round(settings.statement_timeout_s * 1000))
    timeout = settings.connect_timeout_s
    try:
        # wait_for bounds the whole start (several connections, DNS) and not only each connect.
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                dsn=settings.url,
                min_size=settings.pool_min_size,
                max_size=settings.pool_max_size,
                timeout=timeout,
                server_settings=server_settings,
                reset=keep_session,
            ),
            timeout=timeout * 2,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = str(exc) or type(exc).__name__
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact_url(settings.url)} "
            f"(set {DatabaseSettings.env_name('url')}): {reason}"
        ) from None
    assert pool is not None
    return pool


async def probe_database(pool: asyncpg.Pool, timeout_s: float = 2.0) -> None:
    """Run ``SELECT 1`` within ``timeout_s`` seconds; raise (TimeoutError, OSError, asyncpg errors) if not."""
    async with asyncio.timeout(timeout_s):
        async with pool.acquire() as connection:
            await connection.fetchval("SELECT 1")


async def database_ready(pool: asyncpg.Pool, timeout_s: float = 2.0) -> bool:
    """Whether ``SELECT 1`` answers within ``timeout_s`` seconds; never raises."""
    try:
        await probe_database(pool, timeout_s)
    except Exception as exc:  # any failure means "not ready"; the reason is only logged
        log.debug("database probe failed: %s", exc)
        return False
    return True
