"""Casting a request to the conductor from an API handler.

When the bus is down the caller gets 503 (Nova's serviceUnavailable) quickly,
and the instance fields the request had set are put back, so a refused
request changes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from ferry.api.context import ApiDeps
from ferry.api.errors import ServiceUnavailable
from ferry.bus.base import BusError
from ferry.bus.catalogue import CONDUCTOR_TOPIC
from ferry.db.models import Instance


async def cast_to_conductor(d: ApiDeps, method: str, args: dict[str, Any],
                undo: dict[str, Any] | None = None) -> None:
    """Cast to the conductor; when the bus is down, answer 503 and, with `undo`,
    put back the instance fields this request set, so the refusal changes nothing.
    (A recorded migration needs no undo: conductors adopt it as a lease orphan.)"""
    try:
        await d.bus.cast(CONDUCTOR_TOPIC, method, args)
    except BusError as exc:
        if undo is not None:
            async with d.sessions() as s, s.begin():
                await s.execute(update(Instance)
                                .where(Instance.uuid == args["instance_uuid"])
                                .values(**undo)
                                .execution_options(synchronize_session=False))
        raise ServiceUnavailable(f"The conductor could not be reached: {exc}") from exc
