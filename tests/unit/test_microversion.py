"""Compute API microversion negotiation (`ferry.api.microversion`).

`parse()` receives the request headers with lower-cased names (the middleware
lowers them); the last tests go through the real middleware so the header
spelling clients use (`OpenStack-API-Version`) and the HTTP answer are checked
too.
"""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ferry.api.microversion import MAX_VERSION, MIN_VERSION, Version, VersionError, parse
from ferry.api.middleware import ContextMiddleware

NEW = "openstack-api-version"
LEGACY = "x-openstack-nova-api-version"


def test_no_header_means_the_minimum_2_1() -> None:
    assert parse({}) == Version(2, 1) == MIN_VERSION
    assert str(parse({})) == "2.1"


def test_openstack_api_version_header() -> None:
    assert parse({NEW: "compute 2.56"}) == Version(2, 56)


def test_legacy_nova_header() -> None:
    assert parse({LEGACY: "2.56"}) == Version(2, 56)


@pytest.mark.parametrize("headers", [
    {NEW: "compute latest"},
    {NEW: "compute LATEST"},
    {LEGACY: "latest"},
])
def test_latest_is_the_maximum(headers: dict[str, str]) -> None:
    assert parse(headers) == MAX_VERSION == Version(2, 80)


@pytest.mark.parametrize("value", ["2.1", "2.80"])
def test_range_ends_are_accepted(value: str) -> None:
    major, minor = value.split(".")
    assert parse({NEW: f"compute {value}"}) == Version(int(major), int(minor))


@pytest.mark.parametrize("value", ["2.81", "2.999", "3.0", "1.0", "2.0"])
@pytest.mark.parametrize("header", [NEW, LEGACY])
def test_out_of_range_is_406(header: str, value: str) -> None:
    raw = f"compute {value}" if header == NEW else value
    with pytest.raises(VersionError) as err:
        parse({header: raw})
    assert err.value.code == 406
    assert "Minimum is 2.1 and maximum is 2.80" in str(err.value)


@pytest.mark.parametrize("value", ["2.x", "abc", "2", "2.", ".5", "2.01", "v2.1", "2.1.1", ""])
@pytest.mark.parametrize("header", [NEW, LEGACY])
def test_malformed_is_400(header: str, value: str) -> None:
    raw = f"compute {value}" if header == NEW else value
    with pytest.raises(VersionError) as err:
        parse({header: raw})
    assert err.value.code == 400
    assert "Invalid API version request string" in str(err.value)


def test_new_header_wins_over_legacy() -> None:
    assert parse({NEW: "compute 2.10", LEGACY: "2.60"}) == Version(2, 10)
    # ... even when the legacy one alone would be refused.
    assert parse({NEW: "compute 2.10", LEGACY: "abc"}) == Version(2, 10)


def test_new_header_for_other_services_only_falls_back_to_legacy() -> None:
    assert parse({NEW: "volume 3.50", LEGACY: "2.60"}) == Version(2, 60)
    assert parse({NEW: "volume 3.50"}) == MIN_VERSION


def test_compute_is_picked_out_of_a_service_list() -> None:
    assert parse({NEW: "volume 3.50, compute 2.47"}) == Version(2, 47)
    assert parse({NEW: "Compute 2.47"}) == Version(2, 47)


def test_versions_compare_numerically() -> None:
    # Views ask `ctx.version >= (2, 47)`: 2.100-style ordering must not be textual.
    assert parse({NEW: "compute 2.9"}) < parse({NEW: "compute 2.10"})
    assert parse({NEW: "compute 2.47"}) >= (2, 47)


# -- through the middleware -----------------------------------------------------------


async def _version(request: Request) -> JSONResponse:
    return JSONResponse({"version": str(request.state.ctx.version)})


def _client() -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/compute/v2.1/ping", _version),
                            Route("/image/v2/ping", _version)])
    app.add_middleware(ContextMiddleware)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ferry")


async def test_middleware_negotiates_and_echoes_the_version() -> None:
    async with _client() as client:
        r = await client.get("/compute/v2.1/ping",
                             headers={"OpenStack-API-Version": "compute 2.56",
                                      "X-OpenStack-Nova-API-Version": "2.3"})
    assert r.status_code == 200
    assert r.json() == {"version": "2.56"}
    assert r.headers["OpenStack-API-Version"] == "compute 2.56"
    assert r.headers["X-OpenStack-Nova-API-Version"] == "2.56"


async def test_middleware_answers_406_and_400_in_nova_error_shape() -> None:
    async with _client() as client:
        too_new = await client.get("/compute/v2.1/ping",
                                   headers={"OpenStack-API-Version": "compute 2.81"})
        bad = await client.get("/compute/v2.1/ping",
                               headers={"X-OpenStack-Nova-API-Version": "2.x"})
        other_api = await client.get("/image/v2/ping",
                                     headers={"OpenStack-API-Version": "compute 2.81"})
    assert too_new.status_code == 406
    assert too_new.json()["notAcceptable"]["code"] == 406
    assert "x-openstack-request-id" in too_new.headers
    assert bad.status_code == 400
    assert bad.json()["badRequest"]["code"] == 400
    # The compute microversion only governs the compute API.
    assert other_api.status_code == 200
    assert other_api.json() == {"version": "2.1"}
