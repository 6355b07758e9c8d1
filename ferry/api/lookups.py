"""Loading the objects a request names, with Nova's not-found answers.

A caller never learns that another project's server exists: 404, not 403
(non-admins only ever load their own project's rows, as in Nova's DB API).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.api.context import RequestContext
from ferry.api.errors import BadRequest, NotFound
from ferry.db.models import Flavor, Image, Instance, InstanceFault, Service


async def server(s: AsyncSession, ctx: RequestContext, server_id: str) -> Instance:
    inst = (await s.execute(select(Instance).where(
        Instance.uuid == server_id, Instance.deleted.is_(False)))).scalar_one_or_none()
    if inst is None or (not ctx.is_admin and inst.project_id != ctx.project_id):
        raise NotFound(f"Instance {server_id} could not be found.")
    return inst


async def flavor_by_id(s: AsyncSession, flavor_pk: int) -> Flavor:
    f = await s.get(Flavor, flavor_pk)
    assert f is not None
    return f


async def flavor_ref(s: AsyncSession, ref: str, *, not_found: type[Exception] = BadRequest
                     ) -> Flavor:
    ref = str(ref).rstrip("/").rsplit("/", 1)[-1]
    f = (await s.execute(select(Flavor).where(Flavor.flavorid == ref,
                                              Flavor.deleted.is_(False)))).scalar_one_or_none()
    if f is None:
        raise not_found(f"Flavor {ref} could not be found.")
    return f


def image_visible(img: Image, ctx: RequestContext) -> bool:
    """Glance's visibility: public and community images for everyone, the
    others for their owner's project (and admins)."""
    return (ctx.is_admin or img.visibility in ("public", "community")
            or img.owner == ctx.project_id)


async def image_ref(s: AsyncSession, ref: str, ctx: RequestContext | None = None) -> Image:
    ref = str(ref).rstrip("/").rsplit("/", 1)[-1]
    img = await s.get(Image, ref)
    if img is not None and ctx is not None and not image_visible(img, ctx):
        img = None
    if img is None or img.status != "active":
        raise BadRequest(f"Image {ref} could not be found.")
    return img


async def latest_fault(s: AsyncSession, instance_uuid: str) -> InstanceFault | None:
    return (await s.execute(select(InstanceFault).where(
        InstanceFault.instance_uuid == instance_uuid).order_by(InstanceFault.id.desc()).limit(1))
    ).scalar_one_or_none()


async def compute_service(s: AsyncSession, host: str) -> Service | None:
    return (await s.execute(select(Service).where(Service.host == host,
                                                  Service.binary == "ferry-compute"))
            ).scalar_one_or_none()
