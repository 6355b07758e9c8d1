"""`advance()`: the one function that changes a migration's state.

It looks the `(state, event)` pair up in `ferry.conductor.states.TRANSITIONS`,
then in one transaction updates the migration with compare-and-swap on its
`generation` (so two conductors, or a conductor and the API, can never both
win a race) and applies the new state's effect on the instance (task_state,
vm_state). The step log gets one timestamped entry per transition.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.conductor.states import STATES, Event, State, next_state
from ferry.db.models import Instance, Migration, utcnow


class ConcurrentUpdate(Exception):
    """Someone else advanced the migration first; reload and decide again."""


async def advance(
    sessions: async_sessionmaker[AsyncSession],
    migration_uuid: str,
    event: Event,
    *,
    expect: State | None = None,
    note: str = "",
    migration_fields: dict[str, Any] | None = None,
    instance_fields: dict[str, Any] | None = None,
) -> Migration:
    """Apply `event` in a transaction of its own."""
    async with sessions() as session, session.begin():
        return await advance_in(session, migration_uuid, event, expect=expect, note=note,
                                migration_fields=migration_fields,
                                instance_fields=instance_fields)


async def advance_in(
    session: AsyncSession,
    migration_uuid: str,
    event: Event,
    *,
    expect: State | None = None,
    note: str = "",
    migration_fields: dict[str, Any] | None = None,
    instance_fields: dict[str, Any] | None = None,
) -> Migration:
    """Apply `event` inside the caller's transaction, so other writes (placement
    claims, faults) commit or roll back together with the state change."""
    mig = (
        await session.execute(select(Migration).where(Migration.uuid == migration_uuid))
    ).scalar_one()
    current = State(mig.state)
    if expect is not None and current != expect:
        raise ConcurrentUpdate(f"migration {migration_uuid} is {current}, expected {expect}")
    new = next_state(current, event)
    info = STATES[new]
    now = utcnow()
    entry = {"state": new.value, "phase": info.phase, "event": event.value,
             "at": now.isoformat() + "Z"}
    if note:
        entry["note"] = note
    values: dict[str, Any] = {
        "state": new.value,
        "status": info.status,
        "phase": info.phase,
        "generation": mig.generation + 1,
        "steps": [*mig.steps, entry],
        "updated_at": now,
        **(migration_fields or {}),
    }
    result = await session.execute(
        update(Migration)
        .where(Migration.id == mig.id, Migration.generation == mig.generation)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConcurrentUpdate(f"migration {migration_uuid} changed under us")
    inst_values: dict[str, Any] = {"task_state": info.task_state, "updated_at": now}
    if info.vm_state == "old":
        inst_values["vm_state"] = mig.old_vm_state or "active"
    elif info.vm_state is not None:
        inst_values["vm_state"] = info.vm_state
    inst_values.update(instance_fields or {})
    await session.execute(
        update(Instance)
        .where(Instance.uuid == mig.instance_uuid)
        .values(**inst_values)
        .execution_options(synchronize_session=False)
    )
    fresh = (
        await session.execute(
            select(Migration)
            .where(Migration.id == mig.id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return fresh
