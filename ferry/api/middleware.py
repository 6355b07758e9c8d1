"""Request id, caller context and microversion negotiation for every request."""

from __future__ import annotations

import uuid

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ferry.api import microversion
from ferry.api.context import RequestContext
from ferry.api.errors import body


class ContextMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        request_id = f"req-{uuid.uuid4()}"
        compute = request.url.path.startswith("/compute")
        try:
            version = microversion.parse({k.lower(): v for k, v in request.headers.items()}) \
                if compute else microversion.MIN_VERSION
        except microversion.VersionError as exc:
            resp: Response = JSONResponse(body(exc.code, str(exc)), status_code=exc.code)
            resp.headers["x-openstack-request-id"] = request_id
            return resp
        # --insecure-no-auth (Nova's noauth2): every caller is an admin. A token
        # "user:project" picks the ids so tests can act as several projects.
        token = request.headers.get("x-auth-token", "")
        user, _, project = token.partition(":") if ":" in token else ("admin", "", "admin")
        request.state.ctx = RequestContext(user_id=user or "admin",
                                           project_id=project or "admin",
                                           roles=["admin", "manager", "member", "reader"],
                                           request_id=request_id, version=version)
        response = await call_next(request)
        response.headers["x-openstack-request-id"] = request_id
        if compute:
            response.headers["x-compute-request-id"] = request_id
            response.headers["OpenStack-API-Version"] = f"compute {version}"
            response.headers["X-OpenStack-Nova-API-Version"] = str(version)
            response.headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
        return response
