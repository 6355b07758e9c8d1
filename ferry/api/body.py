"""Reading request bodies the way Nova answers bad ones: 400 badRequest."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from ferry.api.errors import BadRequest


async def json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("Malformed request body") from None


def require_dict(body: Any, key: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise BadRequest(f"Invalid input: '{key}' is a required property")
    value: dict[str, Any] = body[key]
    return value
