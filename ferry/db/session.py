"""Engine and session factory for the async database layer.

SQLite (embedded default) gets WAL and a busy timeout so the API and the
conductor can write from one process without "database is locked" errors.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def make_engine(url: str, *, pooled: bool = True) -> AsyncEngine:
    url = async_url(url)
    kw: dict[str, object] = {}
    if not pooled:
        from sqlalchemy.pool import NullPool

        kw["poolclass"] = NullPool
    elif not url.startswith("sqlite"):
        kw.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
    engine = create_async_engine(url, **kw)
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            # Let SQLAlchemy's "begin" hook below issue BEGIN IMMEDIATE itself.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            # Take the write lock up front: a deferred transaction that reads and
            # later writes fails at once (SQLITE_BUSY_SNAPSHOT) when another
            # connection wrote in between; an immediate one waits its turn.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def async_url(url: str) -> str:
    """Accept plain `sqlite:///…` and `postgresql://…` URLs and pick the async driver."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:"):]
    if url.startswith(("postgresql:", "postgres:")):
        return "postgresql+asyncpg:" + url.split(":", 1)[1]
    return url


_TRANSIENT_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


def is_transient(exc: BaseException) -> bool:
    """A database error that a retry of the same transaction can clear: PostgreSQL
    deadlocks and serialization failures, SQLite's "database is locked", and a
    pool checkout that timed out ("QueuePool limit ... reached"; the transaction
    that wanted the connection never began, so it is as safe to retry as a
    deadlock's, and the pool has usually drained by the next attempt)."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in _TRANSIENT_SQLSTATES:
        return True
    text = str(orig).lower()
    return "deadlock detected" in text or "database is locked" in text
