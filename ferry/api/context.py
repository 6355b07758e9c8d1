"""Per-process API dependencies and the per-request caller context."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.api.microversion import Version
from ferry.bus.base import Bus
from ferry.conf import Settings


@dataclass
class ApiDeps:
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    settings: Settings
    image_dir: Path
    insecure_no_auth: bool = False


@dataclass
class RequestContext:
    user_id: str
    project_id: str
    roles: list[str] = field(default_factory=list)
    request_id: str = ""
    version: Version = field(default_factory=lambda: Version(2, 1))

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def deps(request: Request) -> ApiDeps:
    d: ApiDeps = request.app.state.deps
    return d


def context(request: Request) -> RequestContext:
    ctx: RequestContext = request.state.ctx
    return ctx
