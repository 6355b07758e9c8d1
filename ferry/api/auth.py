"""Who is calling: X-Auth-Token to a RequestContext (keystonemiddleware's job).

Three modes, decided per request:
- `--insecure-no-auth` (Nova's noauth2, loopback only): every caller is an
  admin; a token "user:project" picks the ids so tests can act as projects.
- the internal service token (a per-process secret the in-process compute
  hosts send): accepted only to read images, as role "service".
- otherwise an Identity v3 token, validated against the database.
Version documents and POST /identity/v3/auth/tokens need no token. A token
that is not project-scoped may only be used on the identity API (Nova and
Glance need a project). To make another path public: add it to PUBLIC_GET.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ferry.api.context import ApiDeps, RequestContext
from ferry.api.errors import body_for, keystone_body
from ferry.api.microversion import Version
from ferry.identity.store import ROLE_CHAIN

log = logging.getLogger(__name__)

PUBLIC_GET = {"/", "/compute", "/compute/v2.1", "/image", "/identity", "/identity/v3",
              "/ferry/docs", "/ferry/openapi.json"}
AUTH_TOKENS = "/identity/v3/auth/tokens"
SERVICE_USER = "ferry-compute"


def is_public(method: str, path: str) -> bool:
    p = path.rstrip("/") or "/"
    if method in ("GET", "HEAD") and p in PUBLIC_GET:
        return True
    return method == "POST" and p == AUTH_TOKENS


def _service_may(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and path.startswith("/image/v2/images/")


def unauthorized(request: Request) -> Response:
    resp = JSONResponse(keystone_body(401, "The request you have made requires "
                                           "authentication."), status_code=401)
    base = str(request.base_url).rstrip("/")
    resp.headers["WWW-Authenticate"] = f'Keystone uri="{base}/identity"'
    return resp


async def authenticate(request: Request, d: ApiDeps, request_id: str,
                       version: Version) -> RequestContext | Response:
    method, path = request.method, request.url.path
    token = request.headers.get("x-auth-token", "")

    def ctx(user_id: str, project_id: str, roles: list[str], **kw: Any) -> RequestContext:
        return RequestContext(user_id=user_id, project_id=project_id, roles=roles,
                              request_id=request_id, version=version, policy=d.policy, **kw)

    if d.insecure_no_auth:
        user, _, project = token.partition(":") if ":" in token else ("admin", "", "admin")
        return ctx(user or "admin", project or "admin", list(ROLE_CHAIN))
    if d.service_token and token and hmac.compare_digest(token.encode(),
                                                         d.service_token.encode()):
        if not _service_may(method, path):
            return unauthorized(request)
        return ctx(SERVICE_USER, "service", ["service"])
    assert d.tokens is not None
    info = await d.tokens.validate(token) if token else None
    if info is None:
        if is_public(method, path):
            return ctx("", "", [], authenticated=False)
        if token:
            log.info("refused an invalid, expired or revoked token on %s %s", method, path)
        return unauthorized(request)
    if info.project is None and not path.startswith("/identity"):
        msg = "A project-scoped token is required."
        return JSONResponse(body_for(path, 403, msg), status_code=403)
    return ctx(info.user.id, info.project.id if info.project else "", info.role_names,
               user_name=info.user.name, user_domain_id=info.user.domain_id,
               project_name=info.project.name if info.project else "",
               project_domain_id=info.project.domain_id if info.project else "",
               domain_id=info.domain.id if info.domain else None)
