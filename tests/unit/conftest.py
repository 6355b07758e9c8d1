"""A fresh SQLite database with Ferry's schema for each test (copied from one
built once by the real Alembic migrations, so it is fast)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.db.migrate import upgrade
from ferry.db.session import make_engine, make_sessionmaker
from ferry.transfer import TokenRegistry, TransferServer


@pytest.fixture(scope="session")
def schema_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
async def sessions(schema_db: Path,
                   tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    db = tmp_path / "x.db"
    shutil.copy(schema_db, db)
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def registry() -> TokenRegistry:
    """The grants a transfer test's receiver accepts (in memory)."""
    return TokenRegistry()


@pytest.fixture
async def server(registry: TokenRegistry) -> AsyncIterator[TransferServer]:
    """A transfer receiver on loopback serving `registry`'s grants."""
    srv = TransferServer("127.0.0.1", 0, registry)
    await srv.start()
    yield srv
    await srv.stop()
