"""What the scheduler knows about one compute host when it decides."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ferry.scheduler.placement import InventoryRecord, Resources


@dataclass
class HostState:
    host: str
    zone: str
    enabled: bool
    up: bool
    inventory: dict[str, InventoryRecord]
    used: Resources = field(default_factory=dict)
    data_address: str = ""

    def free(self, rc: str) -> int:
        inv = self.inventory.get(rc)
        if inv is None:
            return 0
        return inv.capacity - self.used.get(rc, 0)


@dataclass(frozen=True)
class RequestSpec:
    instance_uuid: str
    project_id: str
    user_id: str
    resources: Resources
    availability_zone: str | None = None
    ignore_hosts: tuple[str, ...] = ()
    requested_host: str | None = None


def is_up(last_seen: dt.datetime | None, forced_down: bool, now: dt.datetime,
          down_after: float) -> bool:
    if forced_down or last_seen is None:
        return False
    return (now - last_seen).total_seconds() <= down_after
