"""Identity v3: version documents, POST/GET/HEAD/DELETE /v3/auth/tokens, and
the /v3/auth/{projects,domains,catalog} helpers clients call after login.

A failed login answers 401 with Keystone's body and the same message and
(via `passwords.burn`) about the same time whether or not the user exists;
it is logged with the user reference and the client address, never the
password. Administration (users, projects, roles) is in identity_admin.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from ferry.api.body import json_body
from ferry.api.context import ApiDeps, RequestContext, context, deps
from ferry.api.errors import BadRequest, Forbidden, NotFound, Unauthorized
from ferry.db.identity_models import IdentityDomain, IdentityProject, IdentityUser
from ferry.identity import passwords, store
from ferry.identity.tokens import ScopeError, TokenInfo, catalog, find_scope, issue, token_body
from ferry.identity.tokens import user_for as find_user

log = logging.getLogger(__name__)
router = APIRouter()

V3 = {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
      "media-types": [{"base": "application/json",
                       "type": "application/vnd.openstack.identity-v3+json"}]}
AUTH_FAILED = "The request you have made requires authentication."


def base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _v3(request: Request) -> dict[str, Any]:
    return {**V3, "links": [{"rel": "self", "href": f"{base(request)}/identity/v3/"}]}


@router.get("")
@router.get("/")
async def versions(request: Request) -> JSONResponse:
    # Keystone answers 300 Multiple Choices here; keystoneauth follows "self".
    return JSONResponse({"versions": {"values": [_v3(request)]}}, status_code=300)


@router.get("/v3")
@router.get("/v3/")
async def version(request: Request) -> dict[str, Any]:
    return {"version": _v3(request)}


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid input for field '{what}': expecting an object.")
    return value


async def _password_user(d: ApiDeps, request: Request, ident: dict[str, Any]
                         ) -> IdentityUser:
    ref = _dict(_dict(ident.get("password"), "identity.password").get("user"),
                "identity.password.user")
    password = ref.get("password")
    if not isinstance(password, str):
        raise BadRequest("Invalid input for field 'identity.password.user.password'.")
    async with d.sessions() as s:
        user = await find_user(s, ref)
        dom = await s.get(IdentityDomain, user.domain_id) if user else None
    ok = (user is not None and dom is not None and user.enabled and dom.enabled
          and bool(user.password_hash))
    # scrypt is slow on purpose: keep it off the event loop.
    if ok and user is not None:
        ok = await asyncio.to_thread(passwords.verify, user.password_hash, password)
    else:
        await asyncio.to_thread(passwords.burn, password)
    if not ok or user is None:
        who = ref.get("id") or f"{ref.get('name')!s} in domain {ref.get('domain')!s}"
        client = request.client.host if request.client else "?"
        log.warning("authentication failed for user %s from %s", who, client)
        raise Unauthorized(AUTH_FAILED)
    return user


@router.post("/v3/auth/tokens")
async def create_token(request: Request, d: ApiDeps = Depends(deps)) -> JSONResponse:
    auth = _dict(_dict(await json_body(request), "body").get("auth"), "auth")
    ident = _dict(auth.get("identity"), "auth.identity")
    methods = ident.get("methods")
    if not isinstance(methods, list) or not methods:
        raise BadRequest("Invalid input for field 'identity.methods'.")
    parent: TokenInfo | None = None
    if "password" in methods:
        user = await _password_user(d, request, ident)
    elif "token" in methods:
        tid = _dict(ident.get("token"), "identity.token").get("id")
        assert d.tokens is not None
        parent = await d.tokens.validate(str(tid or ""))
        if parent is None:
            raise Unauthorized(AUTH_FAILED)
        user = parent.user
        methods = ["token", *[m for m in parent.methods if m != "token"]]
    else:
        raise Unauthorized(f"Unsupported authentication method: {methods}")
    async with d.sessions() as s, s.begin():
        try:
            scope = auth.get("scope")
            if scope is None and user.default_project_id:
                # Keystone scopes to the default project when the request names none.
                dp = await store.project(s, id=user.default_project_id)
                roles = await store.effective_roles(s, user.id, "project", dp.id) if dp else []
                scope = {"project": {"id": dp.id}} if dp and roles else None
            project, domain = await find_scope(s, scope)
            token, info = await issue(s, user, project=project, domain=domain,
                                      methods=[m for m in methods if isinstance(m, str)],
                                      ttl=d.token_ttl, parent=parent)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        except ScopeError as exc:
            log.warning("scope refused for user %s: %s", user.id, exc)
            raise Unauthorized(str(exc)) from None
    body = token_body(info, base(request), with_catalog="nocatalog" not in request.query_params)
    return JSONResponse(body, status_code=201, headers={"X-Subject-Token": token})


async def _subject(request: Request, d: ApiDeps, ctx: RequestContext,
                   rule: str) -> tuple[str, TokenInfo]:
    subject = request.headers.get("x-subject-token", "")
    assert d.tokens is not None
    info = await d.tokens.validate(subject) if subject else None
    target = {"target.token.user_id": info.user.id if info else ""}
    ctx.authorize(rule, target)
    if info is None:
        raise NotFound("Could not find token.")
    return subject, info


@router.api_route("/v3/auth/tokens", methods=["GET", "HEAD"])
async def validate_token(request: Request, d: ApiDeps = Depends(deps),
                         ctx: RequestContext = Depends(context)) -> Response:
    subject, info = await _subject(request, d, ctx, "identity:validate_token")
    if request.method == "HEAD":
        return Response(status_code=200, headers={"X-Subject-Token": subject})
    body = token_body(info, base(request), with_catalog="nocatalog" not in request.query_params)
    return JSONResponse(body, headers={"X-Subject-Token": subject})


@router.delete("/v3/auth/tokens")
async def revoke_token(request: Request, d: ApiDeps = Depends(deps),
                       ctx: RequestContext = Depends(context)) -> Response:
    subject, _ = await _subject(request, d, ctx, "identity:revoke_token")
    assert d.tokens is not None
    await d.tokens.revoke(subject)
    return Response(status_code=204)


def project_ref(p: IdentityProject, request: Request) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "domain_id": p.domain_id, "enabled": p.enabled,
            "description": p.description, "is_domain": False, "parent_id": p.domain_id,
            "tags": [], "options": {},
            "links": {"self": f"{base(request)}/identity/v3/projects/{p.id}"}}


@router.get("/v3/auth/projects")
async def auth_projects(request: Request, d: ApiDeps = Depends(deps),
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    async with d.sessions() as s:
        rows = await store.projects_of(s, ctx.user_id)
    return {"projects": [project_ref(p, request) for p in rows],
            "links": {"self": f"{base(request)}/identity/v3/auth/projects",
                      "previous": None, "next": None}}


@router.get("/v3/auth/domains")
async def auth_domains(request: Request, d: ApiDeps = Depends(deps),
                       ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    async with d.sessions() as s:
        rows = await store.domains_of(s, ctx.user_id)
    return {"domains": [{"id": x.id, "name": x.name, "enabled": x.enabled,
                         "description": x.description, "tags": [], "options": {},
                         "links": {"self": f"{base(request)}/identity/v3/domains/{x.id}"}}
                        for x in rows],
            "links": {"self": f"{base(request)}/identity/v3/auth/domains",
                      "previous": None, "next": None}}


@router.get("/v3/auth/catalog")
async def auth_catalog(request: Request, ctx: RequestContext = Depends(context)
                       ) -> dict[str, Any]:
    if not ctx.project_id and not ctx.domain_id:
        raise Forbidden("The service catalog needs a scoped token.")
    return {"catalog": catalog(base(request)),
            "links": {"self": f"{base(request)}/identity/v3/auth/catalog",
                      "previous": None, "next": None}}
