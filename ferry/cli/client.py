"""A small synchronous client for Ferry's HTTP API, used by every CLI command."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8774"


class ApiFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text.strip() or r.reason_phrase
    if isinstance(body, dict) and len(body) == 1:
        inner = next(iter(body.values()))
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return r.text


class FerryClient:
    def __init__(self, url: str | None = None, token: str | None = None,
                 microversion: str = "2.80") -> None:
        token = token or os.environ.get("FERRY_TOKEN")
        url = url or os.environ.get("FERRY_URL")
        if token is None and (os.environ.get("OS_CLIENT_CONFIG_FILE") or
                              (url is None and os.path.exists("state/clouds.yaml"))):
            # The same credentials the openstack CLI uses (ferry up writes them).
            from ferry.cli.identity import login_from_clouds_yaml

            base, token = login_from_clouds_yaml()
            url = url or base
        self.url = (url or DEFAULT_URL).rstrip("/")
        headers = {"OpenStack-API-Version": f"compute {microversion}"}
        if token:
            headers["X-Auth-Token"] = token
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ApiFailure(0, f"cannot reach Ferry at {self.url}: {exc}") from exc
        if r.status_code >= 400:
            raise ApiFailure(r.status_code, _message(r))
        return r

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()

    # -- compute -------------------------------------------------------------------

    def servers(self) -> list[dict[str, Any]]:
        return list(self.get("/compute/v2.1/servers/detail")["servers"])

    def server(self, ident: str) -> dict[str, Any]:
        try:
            return dict(self.get(f"/compute/v2.1/servers/{ident}")["server"])
        except ApiFailure as exc:
            if exc.status != 404:
                raise
        matches = [s for s in self.servers() if s["name"] == ident]
        if len(matches) != 1:
            raise ApiFailure(404, f"No server with a name or ID of '{ident}' exists."
                             if not matches else f"More than one server is named {ident}")
        return matches[0]

    def action(self, server_id: str, body: dict[str, Any]) -> httpx.Response:
        return self.request("POST", f"/compute/v2.1/servers/{server_id}/action", json=body)

    def create_server(self, name: str, image: str, flavor: str) -> dict[str, Any]:
        r = self.request("POST", "/compute/v2.1/servers", json={"server": {
            "name": name, "imageRef": image, "flavorRef": flavor}})
        return dict(r.json()["server"])

    def wait_server(self, server_id: str, statuses: set[str], timeout: float = 600,
                    on_poll: Any = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            s = self.server(server_id)
            if on_poll:
                on_poll(s)
            if s["status"] in statuses and s.get("OS-EXT-STS:task_state") is None:
                return s
            if s["status"] == "ERROR":
                raise ApiFailure(500, f"server {server_id} is in ERROR: "
                                      f"{(s.get('fault') or {}).get('message', '')}")
            if time.monotonic() > deadline:
                raise ApiFailure(0, f"timed out waiting for {sorted(statuses)}")
            time.sleep(0.5)

    def flavor(self, ident: str) -> dict[str, Any]:
        try:
            return dict(self.get(f"/compute/v2.1/flavors/{ident}")["flavor"])
        except ApiFailure as exc:
            if exc.status != 404:
                raise
        for f in self.get("/compute/v2.1/flavors/detail")["flavors"]:
            if f["name"] == ident:
                return dict(f)
        raise ApiFailure(404, f"Flavor {ident} could not be found.")

    # -- compute hosts -----------------------------------------------------------------

    def compute_services(self, host: str | None = None) -> list[dict[str, Any]]:
        params = {"binary": "ferry-compute", **({"host": host} if host else {})}
        return list(self.get("/compute/v2.1/os-services", params=params)["services"])

    def update_compute_service(self, host: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT /os-services/{uuid} (2.53+) for the compute service of `host`."""
        found = self.compute_services(host)
        if not found:
            raise ApiFailure(404, f"Compute host {host} could not be found.")
        r = self.request("PUT", f"/compute/v2.1/os-services/{found[0]['id']}", json=body)
        return dict(r.json()["service"])

    # -- ferry extensions ----------------------------------------------------------

    def migrations(self, server_id: str | None = None) -> list[dict[str, Any]]:
        params = {"instance_uuid": server_id} if server_id else {}
        return list(self.get("/ferry/v1/migrations", params=params)["migrations"])

    def migration(self, ident: str) -> dict[str, Any]:
        return dict(self.get(f"/ferry/v1/migrations/{ident}")["migration"])

    # -- images --------------------------------------------------------------------

    def upload_image(self, name: str, path: str, disk_format: str) -> dict[str, Any]:
        img = self.request("POST", "/image/v2/images", json={
            "name": name, "disk_format": disk_format, "container_format": "bare"}).json()
        with open(path, "rb") as f:
            self.request("PUT", f"/image/v2/images/{img['id']}/file", content=f,
                         headers={"Content-Type": "application/octet-stream"})
        return dict(self.get(f"/image/v2/images/{img['id']}"))

    def images(self) -> list[dict[str, Any]]:
        return list(self.get("/image/v2/images")["images"])
