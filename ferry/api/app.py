"""The API application: one route table, one module per resource.

To add a resource: write `ferry/api/<resource>.py` with an `APIRouter`, thin
handlers that authorise (`ctx.authorize`, rules in ferry/policy/rules.py),
check, record and cast to the conductor, and views in `ferry.api.views`;
include its router below under its service's prefix. Authentication happens
before any handler, in the middleware (ferry/api/auth.py).
"""

from __future__ import annotations

from fastapi import FastAPI

from ferry.api import (
    errors,
    flavors,
    hosts,
    identity_admin,
    identity_auth,
    identity_roles,
    images,
    instance_actions,
    migrations,
    server_actions,
    servers,
    versions,
)
from ferry.api.context import ApiDeps
from ferry.api.middleware import ContextMiddleware

COMPUTE = "/compute/v2.1"


def create_app(deps: ApiDeps) -> FastAPI:
    app = FastAPI(title="Ferry", docs_url="/ferry/docs", openapi_url="/ferry/openapi.json",
                  redoc_url=None)
    app.state.deps = deps
    app.add_middleware(ContextMiddleware)
    errors.install(app)
    app.include_router(versions.router)
    for r in (servers.router, server_actions.router, migrations.router,
              instance_actions.router, flavors.router, hosts.router):
        app.include_router(r, prefix=COMPUTE)
    app.include_router(images.router, prefix="/image")
    for r in (identity_auth.router, identity_admin.router, identity_roles.router):
        app.include_router(r, prefix="/identity")
    app.include_router(migrations.ferry_router, prefix="/ferry/v1")
    return app
