"""Tokens: issued as 256-bit random strings, stored only as their SHA-256.

A database dump therefore holds no usable token. Validation recomputes the
user's roles each time (a removed role or a disabled user or project takes
effect at once, as in Keystone), through a short per-process cache that any
identity write clears. To add a claim to tokens: extend `TokenInfo`, fill it
in `_load`, and render it in `token_body`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.db.identity_models import (
    IdentityDomain,
    IdentityProject,
    IdentityRole,
    IdentityToken,
    IdentityUser,
)
from ferry.db.models import utcnow
from ferry.identity import store


def token_hash(token: str) -> str:
    # The token has 256 random bits: a fast hash is enough, no salt needed.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class TokenInfo:
    user: IdentityUser
    user_domain: IdentityDomain
    methods: list[str]
    audit_ids: list[str]
    issued_at: dt.datetime
    expires_at: dt.datetime
    project: IdentityProject | None = None
    project_domain: IdentityDomain | None = None
    domain: IdentityDomain | None = None  # domain-scoped token
    roles: list[IdentityRole] = field(default_factory=list)

    @property
    def role_names(self) -> list[str]:
        return [r.name for r in self.roles]


class ScopeError(Exception):
    """Authenticated, but not allowed the requested scope (401 in Keystone)."""


async def _scope(s: AsyncSession, user: IdentityUser, project: IdentityProject | None,
                 domain: IdentityDomain | None) -> tuple[list[IdentityRole],
                                                         IdentityDomain | None]:
    if project is not None:
        pdom = await s.get(IdentityDomain, project.domain_id)
        if not project.enabled or pdom is None or not pdom.enabled:
            raise ScopeError(f"Project {project.id} is disabled.")
        roles = await store.effective_roles(s, user.id, "project", project.id)
        if not roles:
            raise ScopeError(f"User {user.id} has no access to project {project.id}")
        return roles, pdom
    if domain is not None:
        if not domain.enabled:
            raise ScopeError(f"Domain {domain.id} is disabled.")
        roles = await store.effective_roles(s, user.id, "domain", domain.id)
        if not roles:
            raise ScopeError(f"User {user.id} has no access to domain {domain.id}")
        return roles, None
    return [], None


async def issue(s: AsyncSession, user: IdentityUser, *, project: IdentityProject | None,
                domain: IdentityDomain | None, methods: list[str], ttl: float,
                parent: TokenInfo | None = None) -> tuple[str, TokenInfo]:
    """Make a token (raises ScopeError). A rescoped token keeps its parent's
    expiry and audit chain, as Keystone's token method does."""
    roles, pdom = await _scope(s, user, project, domain)
    udom = await s.get(IdentityDomain, user.domain_id)
    assert udom is not None
    now = utcnow()
    expires = parent.expires_at if parent else now + dt.timedelta(seconds=ttl)
    audit = [_audit_id()] + (parent.audit_ids[:1] if parent else [])
    token = secrets.token_urlsafe(32)
    # Expired rows are useless; drop them while we are writing anyway.
    await s.execute(delete(IdentityToken).where(IdentityToken.expires_at < now))
    s.add(IdentityToken(token_hash=token_hash(token), user_id=user.id,
                        project_id=project.id if project else None,
                        domain_id=domain.id if domain else None, methods=methods,
                        audit_ids=audit, issued_at=now, expires_at=expires))
    return token, TokenInfo(user=user, user_domain=udom, methods=methods, audit_ids=audit,
                            issued_at=now, expires_at=expires, project=project,
                            project_domain=pdom, domain=domain, roles=roles)


def _audit_id() -> str:
    return secrets.token_urlsafe(16)[:22]


async def _load(s: AsyncSession, token: str) -> TokenInfo | None:
    row = await s.get(IdentityToken, token_hash(token))
    if row is None or row.revoked or row.expires_at <= utcnow():
        return None
    user = await s.get(IdentityUser, row.user_id)
    if user is None or not user.enabled:
        return None
    udom = await s.get(IdentityDomain, user.domain_id)
    if udom is None or not udom.enabled:
        return None
    project = await s.get(IdentityProject, row.project_id) if row.project_id else None
    domain = await s.get(IdentityDomain, row.domain_id) if row.domain_id else None
    if (row.project_id and project is None) or (row.domain_id and domain is None):
        return None
    try:
        roles, pdom = await _scope(s, user, project, domain)
    except ScopeError:
        return None
    return TokenInfo(user=user, user_domain=udom, methods=list(row.methods),
                     audit_ids=list(row.audit_ids), issued_at=row.issued_at,
                     expires_at=row.expires_at, project=project, project_domain=pdom,
                     domain=domain, roles=roles)


class TokenValidator:
    """Validates tokens with a short cache; `invalidate()` after identity writes."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl: float = 5.0) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self._cache: dict[str, tuple[float, TokenInfo | None]] = {}

    async def validate(self, token: str) -> TokenInfo | None:
        if not token:
            return None
        key = token_hash(token)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            info = hit[1]
            return info if info is not None and info.expires_at > utcnow() else None
        async with self.sessions() as s:
            info = await _load(s, token)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now, info)
        return info

    def invalidate(self) -> None:
        self._cache.clear()

    async def revoke(self, token: str) -> bool:
        async with self.sessions() as s, s.begin():
            done = await s.execute(update(IdentityToken).where(
                IdentityToken.token_hash == token_hash(token), IdentityToken.revoked.is_(False))
                .values(revoked=True).execution_options(synchronize_session=False))
        self.invalidate()
        return bool(done.rowcount)  # type: ignore[attr-defined]

    async def revoke_for(self, *, user_id: str | None = None,
                         project_id: str | None = None) -> None:
        """Revoke every token of a user or of a project (deleted or disabled)."""
        async with self.sessions() as s, s.begin():
            q = update(IdentityToken).values(revoked=True)
            if user_id is not None:
                q = q.where(IdentityToken.user_id == user_id)
            if project_id is not None:
                q = q.where(IdentityToken.project_id == project_id)
            await s.execute(q.execution_options(synchronize_session=False))
        self.invalidate()


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stable_id(*parts: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, "ferry:" + ":".join(parts)).hex


REGION = "RegionOne"
SERVICES = (("compute", "nova", "/compute/v2.1"), ("image", "glance", "/image"),
            ("identity", "keystone", "/identity/v3"))


def catalog(base: str) -> list[dict[str, object]]:
    """The service catalog: every service at `base`, three interfaces, RegionOne."""
    base = base.rstrip("/")
    out: list[dict[str, object]] = []
    for stype, name, path in SERVICES:
        out.append({"type": stype, "name": name, "id": _stable_id(stype), "endpoints": [
            {"id": _stable_id(stype, iface), "interface": iface, "region": REGION,
             "region_id": REGION, "url": base + path}
            for iface in ("public", "internal", "admin")]})
    return out


def _dom(d: IdentityDomain) -> dict[str, str]:
    return {"id": d.id, "name": d.name}


def token_body(info: TokenInfo, base: str, *, with_catalog: bool = True) -> dict[str, object]:
    tok: dict[str, object] = {
        "methods": info.methods, "audit_ids": info.audit_ids,
        "expires_at": iso(info.expires_at), "issued_at": iso(info.issued_at),
        "user": {"id": info.user.id, "name": info.user.name, "domain": _dom(info.user_domain),
                 "password_expires_at": None},
    }
    if info.project is not None and info.project_domain is not None:
        tok["project"] = {"id": info.project.id, "name": info.project.name,
                          "domain": _dom(info.project_domain)}
        tok["is_domain"] = False
    elif info.domain is not None:
        tok["domain"] = _dom(info.domain)
    if info.project is not None or info.domain is not None:
        tok["roles"] = [{"id": r.id, "name": r.name} for r in info.roles]
        if with_catalog:
            tok["catalog"] = catalog(base)
    return {"token": tok}


async def find_scope(s: AsyncSession, scope: object) -> tuple[IdentityProject | None,
                                                              IdentityDomain | None]:
    """Resolve a request's `scope` (project or domain, by id or by name+domain).
    Raises ScopeError when it names nothing that exists."""
    if scope is None or scope == "unscoped":
        return None, None
    if not isinstance(scope, dict):
        raise ValueError("scope must be an object")
    if "project" in scope:
        p = scope["project"]
        if not isinstance(p, dict):
            raise ValueError("scope.project must be an object")
        if p.get("id"):
            project = await store.project(s, id=str(p["id"]))
        else:
            dom = await _named_domain(s, p.get("domain"))
            project = await store.project(s, name=p.get("name"),
                                          domain_id=dom.id if dom else None)
        if project is None:
            raise ScopeError("Could not find the requested project.")
        return project, None
    if "domain" in scope:
        dom = await _named_domain(s, scope["domain"])
        if dom is None:
            raise ScopeError("Could not find the requested domain.")
        return None, dom
    if "system" in scope:
        raise ScopeError("System-scoped tokens are not supported by Ferry.")
    raise ValueError("scope must name a project or a domain")


async def _named_domain(s: AsyncSession, ref: object) -> IdentityDomain | None:
    if not isinstance(ref, dict):
        return None
    if ref.get("id"):
        return await store.domain(s, id=str(ref["id"]))
    if ref.get("name"):
        return await store.domain(s, name=str(ref["name"]))
    return None


async def user_for(s: AsyncSession, ref: dict[str, object]) -> IdentityUser | None:
    """The user a password request names (by id, or by name and domain)."""
    if ref.get("id"):
        return await store.user(s, id=str(ref["id"]))
    dom = await _named_domain(s, ref.get("domain"))
    if dom is None or not ref.get("name"):
        return None
    return await store.user(s, name=str(ref["name"]), domain_id=dom.id)

