"""Version discovery at /compute and /compute/v2.1 (served without a token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ferry.api.microversion import MAX_VERSION, MIN_VERSION

router = APIRouter()

UPDATED = "2013-07-23T11:33:21Z"


def _v21(root: str) -> dict[str, Any]:
    return {"id": "v2.1", "status": "CURRENT", "version": str(MAX_VERSION),
            "min_version": str(MIN_VERSION), "updated": UPDATED,
            "links": [{"rel": "self", "href": f"{root}/v2.1/"}]}


def _root(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/compute"


@router.get("/compute")
@router.get("/compute/")
async def root(request: Request) -> dict[str, Any]:
    r = _root(request)
    return {"versions": [
        {"id": "v2.0", "status": "DEPRECATED", "version": "", "min_version": "",
         "updated": "2025-07-04T12:00:00Z", "links": [{"rel": "self", "href": f"{r}/v2/"}]},
        _v21(r)]}


@router.get("/compute/v2.1")
@router.get("/compute/v2.1/")
async def v21(request: Request) -> dict[str, Any]:
    r = _root(request)
    v = _v21(r)
    v["links"].append({"rel": "describedby", "type": "text/html",
                       "href": "https://docs.openstack.org/"})
    v["media-types"] = [{"base": "application/json",
                         "type": "application/vnd.openstack.compute+json;version=2.1"}]
    return {"version": v}
