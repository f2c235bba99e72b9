"""Checks that a component is ready to serve, as opposed to merely running."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from gyre_stack.ports import port_open


def http_ready(url: str, timeout: float = 1.0) -> tuple[bool, str]:
    """Whether ``GET url`` answers 200, and a short description of the answer (for error messages)."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return False, f"no answer ({type(exc).__name__})"
    return response.status_code == 200, f"HTTP {response.status_code}"


def broker_ready(host: str, port: int) -> bool:
    """Whether the broker accepts TCP connections on host:port."""
    return port_open(host, port)


def postgres_ready(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether PostgreSQL at ``url`` accepts a connection and answers ``SELECT 1``; and why not."""

    async def check() -> None:
        connection = await asyncpg.connect(url, timeout=timeout)
        try:
            await connection.fetchval("SELECT 1")
        finally:
            await connection.close()

    try:
        asyncio.run(asyncio.wait_for(check(), timeout + 1))
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, "accepts connections"
