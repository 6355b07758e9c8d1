"""Compute API microversions: parse the request headers, answer 406 outside
the range, and let views ask `ctx.version >= (2, 47)`."""

from __future__ import annotations

import re
from typing import NamedTuple


class Version(NamedTuple):
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


MIN_VERSION = Version(2, 1)
MAX_VERSION = Version(2, 80)
_RE = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


class VersionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse(headers: dict[str, str]) -> Version:
    raw: str | None = None
    new = headers.get("openstack-api-version")
    if new:
        for part in new.split(","):
            service, _, value = part.strip().partition(" ")
            if service.lower() == "compute":
                raw = value.strip()
    if raw is None:
        raw = headers.get("x-openstack-nova-api-version")
    if raw is None:
        return MIN_VERSION
    if raw.lower() == "latest":
        return MAX_VERSION
    m = _RE.match(raw.strip())
    if not m:
        raise VersionError(400, f"Invalid API version request string: {raw}")
    v = Version(int(m.group(1)), int(m.group(2)))
    if not MIN_VERSION <= v <= MAX_VERSION:
        raise VersionError(406, f"Version {v} is not supported by the API. Minimum is "
                                f"{MIN_VERSION} and maximum is {MAX_VERSION}.")
    return v
