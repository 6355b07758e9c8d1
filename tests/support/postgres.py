"""A throw-away PostgreSQL database per test session (issue 5: the real engine).

Uses FERRY_TEST_PG (default: postgresql://postgres@127.0.0.1:5432), creates
`ferry_test_<random>` with the project's Alembic migrations and drops it after.
"""

from __future__ import annotations

import asyncio
import os
import secrets

import asyncpg

BASE = os.environ.get("FERRY_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(f"{BASE}/postgres", timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database() -> str:
    name = f"ferry_test_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = f"{BASE}/{name}"
    from ferry.db.migrate import upgrade

    upgrade(url)
    return url


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
