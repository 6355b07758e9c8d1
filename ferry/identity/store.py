"""Identity queries: find users/projects/domains/roles, effective roles with
implication, and the first-start bootstrap of the default domain and roles.

Role implication is fixed (Keystone's bootstrap chain plus Nova's manager):
admin implies manager implies member implies reader. A token carries the
implied roles too, so policy rules only ever test for one role.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.identity_models import (
    IdentityAssignment,
    IdentityDomain,
    IdentityProject,
    IdentityRole,
    IdentityUser,
)

DEFAULT_DOMAIN_ID = "default"
DEFAULT_DOMAIN_NAME = "Default"
# Keystone's bootstrap roles plus Nova's "manager" (role implication chain).
ROLE_CHAIN = ("admin", "manager", "member", "reader")
IMPLIES = {"admin": ("manager",), "manager": ("member",), "member": ("reader",)}


def new_id() -> str:
    return uuid.uuid4().hex


def expand(names: set[str]) -> set[str]:
    """The roles `names` grant, implied ones included."""
    out, todo = set(), list(names)
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo.extend(IMPLIES.get(n, ()))
    return out


async def domain(s: AsyncSession, *, id: str | None = None,
                 name: str | None = None) -> IdentityDomain | None:
    if id is not None:
        return await s.get(IdentityDomain, id)
    if name is not None:
        return (await s.execute(select(IdentityDomain).where(IdentityDomain.name == name))
                ).scalar_one_or_none()
    return None


async def user(s: AsyncSession, *, id: str | None = None, name: str | None = None,
               domain_id: str | None = None) -> IdentityUser | None:
    if id is not None:
        return await s.get(IdentityUser, id)
    if name is None or domain_id is None:
        return None
    return (await s.execute(select(IdentityUser).where(
        IdentityUser.name == name, IdentityUser.domain_id == domain_id))).scalar_one_or_none()


async def project(s: AsyncSession, *, id: str | None = None, name: str | None = None,
                  domain_id: str | None = None) -> IdentityProject | None:
    if id is not None:
        return await s.get(IdentityProject, id)
    if name is None or domain_id is None:
        return None
    return (await s.execute(select(IdentityProject).where(
        IdentityProject.name == name, IdentityProject.domain_id == domain_id))
    ).scalar_one_or_none()


async def role(s: AsyncSession, *, id: str | None = None,
               name: str | None = None) -> IdentityRole | None:
    if id is not None:
        return await s.get(IdentityRole, id)
    if name is None:
        return None
    return (await s.execute(select(IdentityRole).where(IdentityRole.name == name))
            ).scalar_one_or_none()


async def effective_roles(s: AsyncSession, user_id: str, target_type: str,
                          target_id: str) -> list[IdentityRole]:
    """Roles a user holds on a project or domain, implied roles included."""
    direct = (await s.execute(select(IdentityRole.name).join(
        IdentityAssignment, IdentityAssignment.role_id == IdentityRole.id).where(
        IdentityAssignment.user_id == user_id, IdentityAssignment.target_type == target_type,
        IdentityAssignment.target_id == target_id))).scalars()
    names = expand(set(direct))
    if not names:
        return []
    rows = (await s.execute(select(IdentityRole).where(IdentityRole.name.in_(names))
                            .order_by(IdentityRole.name))).scalars()
    return list(rows)


async def ensure_defaults(s: AsyncSession) -> None:
    """Domain Default and the role chain, as `keystone-manage bootstrap` makes them."""
    if await s.get(IdentityDomain, DEFAULT_DOMAIN_ID) is None:
        s.add(IdentityDomain(id=DEFAULT_DOMAIN_ID, name=DEFAULT_DOMAIN_NAME,
                             description="The default domain"))
    for name in (*ROLE_CHAIN, "service"):
        if await role(s, name=name) is None:
            s.add(IdentityRole(id=new_id(), name=name))
    await s.flush()


async def grant(s: AsyncSession, user_id: str, target_type: str, target_id: str,
                role_id: str) -> bool:
    """Idempotent; True when the assignment is new."""
    exists = (await s.execute(select(IdentityAssignment).where(
        IdentityAssignment.user_id == user_id, IdentityAssignment.target_type == target_type,
        IdentityAssignment.target_id == target_id, IdentityAssignment.role_id == role_id))
    ).scalar_one_or_none()
    if exists is not None:
        return False
    s.add(IdentityAssignment(user_id=user_id, target_type=target_type, target_id=target_id,
                             role_id=role_id))
    return True


async def projects_of(s: AsyncSession, user_id: str) -> list[IdentityProject]:
    """Enabled projects on which the user holds any role."""
    ids = select(IdentityAssignment.target_id).where(
        IdentityAssignment.user_id == user_id, IdentityAssignment.target_type == "project")
    return list((await s.execute(select(IdentityProject).where(
        IdentityProject.id.in_(ids), IdentityProject.enabled.is_(True))
        .order_by(IdentityProject.name))).scalars())


async def domains_of(s: AsyncSession, user_id: str) -> list[IdentityDomain]:
    ids = select(IdentityAssignment.target_id).where(
        IdentityAssignment.user_id == user_id, IdentityAssignment.target_type == "domain")
    return list((await s.execute(select(IdentityDomain).where(
        IdentityDomain.id.in_(ids), IdentityDomain.enabled.is_(True))
        .order_by(IdentityDomain.name))).scalars())
