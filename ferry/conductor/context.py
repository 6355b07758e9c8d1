"""What every migration step works with: the conductor's context, the loaded
migration, and fenced RPCs to the hosts.

Steps live in `ferry.conductor.steps` (and, for the disk transfer,
`ferry.conductor.transferring`); they take a `StepContext` and a `Loaded`
job. To give steps a new shared service (a client, a cache), add a field to
`StepContext` with a default, so that existing callers keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.bus.base import Bus
from ferry.bus.catalogue import compute_topic
from ferry.conductor import records
from ferry.conf import Settings
from ferry.db.models import Flavor, Image, Instance, Migration
from ferry.scheduler.hostcache import HostStateCache


@dataclass
class StepContext:
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    settings: Settings
    # What the scheduler knows of every host between decisions (one per database).
    host_cache: HostStateCache = field(default_factory=HostStateCache)


@dataclass
class Loaded:
    mig: Migration
    inst: Instance
    flavor: Flavor  # the flavor the server runs with at the destination
    old_flavor: Flavor
    image: dict[str, Any]

    def payload(self, old: bool = False) -> dict[str, Any]:
        return records.instance_payload(self.inst, self.old_flavor if old else self.flavor)


def action_name(mig: Migration) -> str:
    return "migrate" if mig.migration_type == "migration" else "resize"


async def load(ctx: StepContext, migration_uuid: str) -> Loaded:
    async with ctx.sessions() as s:
        mig = (await s.execute(select(Migration).where(Migration.uuid == migration_uuid))
               ).scalar_one()
        inst = (await s.execute(select(Instance).where(Instance.uuid == mig.instance_uuid))
                ).scalar_one()
        new = await s.get(Flavor, mig.new_instance_type_id or inst.flavor_id)
        old = await s.get(Flavor, mig.old_instance_type_id or inst.flavor_id)
        image = await s.get(Image, inst.image_ref)
        assert new is not None and old is not None
        return Loaded(mig, inst, new, old, records.image_payload(image, inst.image_ref))


async def call_host(ctx: StepContext, job: Loaded, host: str, method: str,
                rpc_timeout: float | None = None, **args: Any) -> Any:
    """RPC to a host, fenced with (migration id, generation) so that the host
    refuses a step that arrives after a later one (see ComputeManager)."""
    fence = [job.mig.id, job.mig.generation]
    return await ctx.bus.call(compute_topic(host), method, {**args, "fence": fence},
                              timeout=rpc_timeout)


async def cast_host(ctx: StepContext, job: Loaded, host: str, method: str, **args: Any) -> None:
    """Like `call_host`, without waiting: the message waits in the host's queue until
    the host serves it again (the fence still refuses it if a later step ran)."""
    fence = [job.mig.id, job.mig.generation]
    await ctx.bus.cast(compute_topic(host), method, {**args, "fence": fence})
