"""Per-process API dependencies and the per-request caller context.

The context carries who is calling (user, project, domains, roles with the
implied ones) and answers policy questions: `ctx.can(rule, target)` and
`ctx.authorize(rule, target)` (403 when denied). The target defaults to the
caller's own project, as Nova's does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.api.errors import Forbidden
from ferry.api.microversion import Version
from ferry.bus.base import Bus
from ferry.conf import Settings
from ferry.identity.tokens import TokenValidator
from ferry.policy.enforcer import Policy

_DEFAULT_POLICY: Policy | None = None


def default_policy() -> Policy:
    global _DEFAULT_POLICY
    if _DEFAULT_POLICY is None:
        _DEFAULT_POLICY = Policy()
    return _DEFAULT_POLICY


@dataclass
class ApiDeps:
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    settings: Settings
    image_dir: Path
    insecure_no_auth: bool = False
    policy: Policy = field(default_factory=default_policy)
    # Accepted only for image reads: how in-process compute hosts fetch bases.
    service_token: str | None = None
    token_ttl: float = 3600.0
    tokens: TokenValidator | None = None

    def __post_init__(self) -> None:
        if self.tokens is None:
            self.tokens = TokenValidator(self.sessions)


@dataclass
class RequestContext:
    user_id: str
    project_id: str
    roles: list[str] = field(default_factory=list)
    request_id: str = ""
    version: Version = field(default_factory=lambda: Version(2, 1))
    user_name: str = ""
    user_domain_id: str = ""
    project_name: str = ""
    project_domain_id: str = ""
    domain_id: str | None = None  # set for a domain-scoped token
    authenticated: bool = True
    policy: Policy | None = None
    is_admin: bool = False

    def __post_init__(self) -> None:
        # Nova's context.is_admin is the "context_is_admin" rule, not a role test.
        self.is_admin = self.can("context_is_admin")

    def creds(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "project_id": self.project_id or None,
                "roles": list(self.roles), "domain_id": self.domain_id,
                "user_domain_id": self.user_domain_id,
                "project_domain_id": self.project_domain_id or None}

    def can(self, rule: str, target: dict[str, Any] | None = None) -> bool:
        if not self.authenticated:
            return False
        policy = self.policy or default_policy()
        if target is None:
            target = {"project_id": self.project_id, "user_id": self.user_id}
        return policy.allowed(rule, self.creds(), target)

    def authorize(self, rule: str, target: dict[str, Any] | None = None) -> None:
        if not self.can(rule, target):
            raise Forbidden(f"Policy doesn't allow {rule} to be performed.")


def deps(request: Request) -> ApiDeps:
    d: ApiDeps = request.app.state.deps
    return d


def context(request: Request) -> RequestContext:
    ctx: RequestContext = request.state.ctx
    return ctx
