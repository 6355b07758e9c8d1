"""Compute hosts as the conductor records them, for scheduler and placement tests."""

from __future__ import annotations

import datetime as dt
import uuid as uuidlib

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.db.models import Service, utcnow
from ferry.scheduler import placement
from ferry.scheduler.placement import InventoryRecord

Sessions = async_sessionmaker[AsyncSession]


def inventory(vcpu: int = 8, ram: int = 4096, disk: int = 100) -> dict[str, InventoryRecord]:
    return {"VCPU": InventoryRecord(vcpu), "MEMORY_MB": InventoryRecord(ram),
            "DISK_GB": InventoryRecord(disk)}


async def add_compute(sessions: Sessions, name: str, *, ram: int = 4096, used_ram: int = 0,
                      zone: str = "nova", disabled: bool = False, forced_down: bool = False,
                      seen_ago: float = 0.0, binary: str = "ferry-compute") -> None:
    """A compute host as the conductor records it: service row + resource provider."""
    async with sessions() as s, s.begin():
        s.add(Service(uuid=str(uuidlib.uuid4()), host=name, binary=binary,
                      topic=f"compute.{name}", zone=zone, disabled=disabled,
                      forced_down=forced_down,
                      last_seen_up=utcnow() - dt.timedelta(seconds=seen_ago)))
        await placement.ensure_provider(s, name, inventory(ram=ram))
        if used_ram:
            await placement.claim(s, f"existing-on-{name}", name, {"MEMORY_MB": used_ram})
