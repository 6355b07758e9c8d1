"""Image v2 subset (Glance-shaped): create, upload, download, show, list, delete.

Image data lives in the API's image directory; compute hosts download it into
their base-image caches (with the internal service token, which only reads)
and check it against `os_hash_value` (sha512). Visibility is Glance's: public
and community images for everyone, shared/private for the owner's project.
"""

from __future__ import annotations

import hashlib
import os
import uuid as uuidlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import or_, select

from ferry.api.body import json_body
from ferry.api.context import ApiDeps, RequestContext, context, deps
from ferry.api.lookups import image_visible
from ferry.api.views import iso_z
from ferry.db.models import Image

router = APIRouter()

DISK_FORMATS = {"raw", "qcow2", "vmdk", "vdi", "iso", "ami", "ari", "aki", "vhd", "vhdx"}


def _err(code: int, title: str, message: str) -> JSONResponse:
    # Glance answers errors as plain webob pages; clients only read code and text.
    return JSONResponse({"message": message, "code": f"{code} {title}", "title": title},
                        status_code=code)


def image_view(img: Image) -> dict[str, Any]:
    return {
        "id": img.id, "name": img.name, "status": img.status, "disk_format": img.disk_format,
        "container_format": img.container_format, "size": img.size,
        "virtual_size": img.virtual_size, "checksum": img.checksum,
        "os_hash_algo": img.os_hash_algo, "os_hash_value": img.os_hash_value,
        "visibility": img.visibility, "owner": img.owner, "min_disk": img.min_disk,
        "min_ram": img.min_ram, "protected": img.protected, "tags": [],
        "created_at": iso_z(img.created_at), "updated_at": iso_z(img.updated_at or
                                                                  img.created_at),
        "self": f"/v2/images/{img.id}", "file": f"/v2/images/{img.id}/file",
        "schema": "/v2/schemas/image", **(img.properties or {}),
    }


def _visible(img: Image, ctx: RequestContext) -> bool:
    # The compute hosts' service token reads any image a server was built from.
    return "service" in ctx.roles or image_visible(img, ctx)


def _path(d: ApiDeps, image_id: str) -> Path:
    return d.image_dir / image_id


@router.get("")
@router.get("/")
async def versions(request: Request) -> JSONResponse:
    href = str(request.base_url).rstrip("/") + "/image/v2/"
    return JSONResponse({"versions": [{"id": "v2.16", "status": "CURRENT",
                                       "links": [{"rel": "self", "href": href}]}]},
                        status_code=300)


@router.post("/v2/images")
async def create_image(request: Request, d: ApiDeps = Depends(deps),
                       ctx: RequestContext = Depends(context)) -> Response:
    ctx.authorize("image:add_image")
    body = await json_body(request)
    if not isinstance(body, dict):
        return _err(400, "Bad Request", "Image body must be a JSON object")
    if body.get("visibility") == "public":
        ctx.authorize("image:publicize_image")
    fmt = body.get("disk_format")
    if fmt is not None and fmt not in DISK_FORMATS:
        return _err(400, "Bad Request", f"Invalid value '{fmt}' for parameter 'disk_format'")
    known = {"id", "name", "disk_format", "container_format", "visibility", "min_disk",
             "min_ram", "protected", "tags"}
    img = Image(id=str(body.get("id") or uuidlib.uuid4()), name=body.get("name") or "",
                disk_format=fmt, container_format=body.get("container_format"),
                visibility=body.get("visibility") or "shared", owner=ctx.project_id,
                min_disk=int(body.get("min_disk") or 0), min_ram=int(body.get("min_ram") or 0),
                protected=bool(body.get("protected", False)),
                properties={k: v for k, v in body.items() if k not in known})
    async with d.sessions() as s, s.begin():
        if await s.get(Image, img.id) is not None:
            return _err(409, "Conflict", f"Image with identifier {img.id} already exists")
        s.add(img)
    return JSONResponse(image_view(img), status_code=201)


@router.put("/v2/images/{image_id}/file")
async def upload_image(image_id: str, request: Request, d: ApiDeps = Depends(deps),
                       ctx: RequestContext = Depends(context)) -> Response:
    async with d.sessions() as s, s.begin():
        img = await s.get(Image, image_id)
        if img is None or not _visible(img, ctx):
            return _err(404, "Not Found", f"No image found with ID {image_id}")
        ctx.authorize("image:upload_image", {"owner": img.owner})
        if img.status not in ("queued",):
            return _err(409, "Conflict", f"Image status transition from {img.status} to "
                                         f"saving is not allowed")
        img.status = "saving"
    d.image_dir.mkdir(parents=True, exist_ok=True)
    part = _path(d, image_id).with_suffix(".part")
    md5, sha512, size = hashlib.md5(usedforsecurity=False), hashlib.sha512(), 0
    try:
        with open(part, "wb") as f:
            async for chunk in request.stream():
                md5.update(chunk)
                sha512.update(chunk)
                size += len(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.rename(part, _path(d, image_id))
    except Exception:
        part.unlink(missing_ok=True)
        async with d.sessions() as s, s.begin():
            row = await s.get(Image, image_id)
            if row is not None:
                row.status = "queued"
        raise
    async with d.sessions() as s, s.begin():
        row = await s.get(Image, image_id)
        assert row is not None
        row.status, row.size, row.checksum = "active", size, md5.hexdigest()
        row.os_hash_algo, row.os_hash_value = "sha512", sha512.hexdigest()
    return Response(status_code=204)


@router.get("/v2/images/{image_id}/file")
async def download_image(image_id: str, d: ApiDeps = Depends(deps),
                         ctx: RequestContext = Depends(context)) -> Response:
    ctx.authorize("image:download_image")
    async with d.sessions() as s:
        img = await s.get(Image, image_id)
    if img is not None and not _visible(img, ctx):
        img = None
    if img is None or img.status != "active":
        return _err(404 if img is None else 204, "Not Found", f"No image data for {image_id}")
    return FileResponse(_path(d, image_id), media_type="application/octet-stream",
                        headers={"Content-MD5": img.checksum or ""})


@router.get("/v2/images/{image_id}")
async def show_image(image_id: str, d: ApiDeps = Depends(deps),
                     ctx: RequestContext = Depends(context)) -> Response:
    ctx.authorize("image:get_image")
    async with d.sessions() as s:
        img = await s.get(Image, image_id)
    if img is None or not _visible(img, ctx):
        return _err(404, "Not Found", f"No image found with ID {image_id}")
    return JSONResponse(image_view(img))


@router.get("/v2/images")
async def list_images(request: Request, d: ApiDeps = Depends(deps),
                      ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("image:get_images")
    q = select(Image).order_by(Image.created_at.desc())
    if not ctx.is_admin:
        # Glance lists public images and the caller's own (community ones only on request).
        q = q.where(or_(Image.visibility == "public", Image.owner == ctx.project_id))
    if v := request.query_params.get("visibility"):
        q = q.where(Image.visibility == v)
    if name := request.query_params.get("name"):
        q = q.where(Image.name == name)
    async with d.sessions() as s:
        rows = (await s.execute(q)).scalars()
        return {"images": [image_view(i) for i in rows], "schema": "/v2/schemas/images",
                "first": "/v2/images"}


@router.delete("/v2/images/{image_id}")
async def delete_image(image_id: str, d: ApiDeps = Depends(deps),
                       ctx: RequestContext = Depends(context)) -> Response:
    async with d.sessions() as s, s.begin():
        img = await s.get(Image, image_id)
        if img is None or not _visible(img, ctx):
            return _err(404, "Not Found", f"No image found with ID {image_id}")
        ctx.authorize("image:delete_image", {"owner": img.owner})
        if img.protected:
            return _err(403, "Forbidden", f"Image {image_id} is protected and cannot be deleted")
        await s.delete(img)
    _path(d, image_id).unlink(missing_ok=True)
    return Response(status_code=204)
