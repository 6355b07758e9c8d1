"""What the conductor writes besides state: instance actions, events and faults,
and the plain dicts it sends to compute hosts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import (
    Flavor,
    Image,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceFault,
    utcnow,
)


async def latest_action(session: AsyncSession, instance_uuid: str,
                        action: str) -> InstanceAction | None:
    return (
        await session.execute(
            select(InstanceAction)
            .where(InstanceAction.instance_uuid == instance_uuid,
                   InstanceAction.action == action)
            .order_by(InstanceAction.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def _event(session: AsyncSession, act: InstanceAction,
                 event: str) -> InstanceActionEvent | None:
    return (
        await session.execute(
            select(InstanceActionEvent).where(InstanceActionEvent.action_id == act.id,
                                              InstanceActionEvent.event == event)
        )
    ).scalar_one_or_none()


async def event_start(session: AsyncSession, instance_uuid: str, action: str, event: str,
                      host: str | None) -> None:
    act = await latest_action(session, instance_uuid, action)
    if act is None:
        return
    if await _event(session, act, event) is None:
        session.add(InstanceActionEvent(action_id=act.id, event=event, host=host))
        act.updated_at = utcnow()


async def event_finish(session: AsyncSession, instance_uuid: str, action: str, event: str,
                       error: str | None = None, host: str | None = None) -> None:
    act = await latest_action(session, instance_uuid, action)
    if act is None:
        return
    ev = await _event(session, act, event)
    if ev is None:
        ev = InstanceActionEvent(action_id=act.id, event=event, host=host)
        session.add(ev)
    if ev.finish_time is None:
        ev.finish_time = utcnow()
        ev.result = "Error" if error else "Success"
        if error:
            ev.traceback = error
            act.message = "Error"
    act.updated_at = utcnow()


async def finish_action(session: AsyncSession, instance_uuid: str, action: str) -> None:
    act = await latest_action(session, instance_uuid, action)
    if act is not None and act.finish_time is None:
        act.finish_time = utcnow()
        act.updated_at = act.finish_time


async def add_fault(session: AsyncSession, instance_uuid: str, message: str,
                    host: str | None, code: int = 500, details: str | None = None) -> None:
    session.add(InstanceFault(instance_uuid=instance_uuid, code=code, message=message[:255],
                              details=details or message, host=host))


def flavor_resources(flavor: Flavor) -> dict[str, int]:
    return {"VCPU": flavor.vcpus, "MEMORY_MB": flavor.memory_mb,
            "DISK_GB": flavor.root_gb + flavor.ephemeral_gb + (flavor.swap + 1023) // 1024}


def instance_payload(inst: Instance, flavor: Flavor) -> dict[str, Any]:
    """The instance as a compute host sees it: no database ids, JSON only."""
    return {"uuid": inst.uuid, "name": inst.display_name, "vcpus": flavor.vcpus,
            "memory_mb": flavor.memory_mb, "root_gb": flavor.root_gb,
            "image_id": inst.image_ref}


def image_payload(image: Image | None, image_id: str) -> dict[str, Any]:
    if image is None:
        return {"id": image_id, "disk_format": "raw", "os_hash_value": None, "size": None}
    return {"id": image.id, "disk_format": image.disk_format or "raw",
            "os_hash_value": image.os_hash_value, "size": image.size}
