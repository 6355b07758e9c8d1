"""Run the Alembic migrations that make (or upgrade) the schema.

`ferry db upgrade` and `ferry up` call `upgrade()`. A new schema change is a
new file in `migrations/versions/` (`alembic -c ferry/db/alembic.ini revision
--autogenerate -m "..."` with FERRY_DB_URL pointing at a scratch database).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Blocking: runs its own event loop, so call it from a thread inside async code."""
    command.upgrade(alembic_config(url), revision)
