"""Request id, microversion negotiation and authentication for every request.

Authentication itself is in `ferry.api.auth`; this module only orders the
steps and adds the response headers clients rely on (request ids on every
response; the microversion echo and `Vary` on compute responses).
"""

from __future__ import annotations

import uuid

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ferry.api import microversion
from ferry.api.auth import authenticate
from ferry.api.context import ApiDeps, RequestContext
from ferry.api.errors import body


class ContextMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        request_id = f"req-{uuid.uuid4()}"
        compute = request.url.path.startswith("/compute")
        version = microversion.MIN_VERSION
        d: ApiDeps | None = getattr(request.app.state, "deps", None)
        ctx: RequestContext | Response
        # Authentication first (keystonemiddleware sits in front of Nova's
        # version handling): no token and a bad version is a 401.
        if d is None:
            # Not a Ferry API app (a bare app in a unit test): nobody is trusted.
            ctx = RequestContext(user_id="", project_id="", authenticated=False,
                                 request_id=request_id)
        else:
            ctx = await authenticate(request, d, request_id, version)
        if not isinstance(ctx, Response) and compute:
            try:
                version = ctx.version = microversion.parse(
                    {k.lower(): v for k, v in request.headers.items()})
            except microversion.VersionError as exc:
                ctx = JSONResponse(body(exc.code, str(exc)), status_code=exc.code)
                compute = False  # no version to echo
        if isinstance(ctx, Response):
            response = ctx
        else:
            request.state.ctx = ctx
            response = await call_next(request)
        response.headers["x-openstack-request-id"] = request_id
        if compute:
            response.headers["x-compute-request-id"] = request_id
            response.headers["OpenStack-API-Version"] = f"compute {version}"
            response.headers["X-OpenStack-Nova-API-Version"] = str(version)
            response.headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
        return response
