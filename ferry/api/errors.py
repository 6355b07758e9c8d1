"""Domain errors with stable codes, mapped to each service's error body in one place.

Raise `ApiError` subclasses from handlers; `install()` turns them, FastAPI's
validation errors and unknown routes into the body of the service the path
belongs to: Nova's `{"<kind>": {"code", "message"}}` for compute,
Keystone's `{"error": {"code", "message", "title"}}` under /identity, and
Glance's `{"code", "message", "title"}` under /image.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

KINDS = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
         405: "badMethod", 406: "notAcceptable", 409: "conflictingRequest",
         413: "overLimit", 415: "badMediaType", 500: "computeFault", 501: "notImplemented",
         503: "serviceUnavailable"}


class ApiError(Exception):
    code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(ApiError):
    code = 401


class BadRequest(ApiError):
    code = 400


class Forbidden(ApiError):
    code = 403


class NotFound(ApiError):
    code = 404


class NotAcceptable(ApiError):
    code = 406


class Conflict(ApiError):
    code = 409


class ServiceUnavailable(ApiError):
    code = 503


TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict",
          413: "Request Entity Too Large", 415: "Unsupported Media Type",
          500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}


def body(code: int, message: str) -> dict[str, dict[str, object]]:
    return {KINDS.get(code, "computeFault"): {"code": code, "message": message}}


def keystone_body(code: int, message: str) -> dict[str, dict[str, object]]:
    return {"error": {"code": code, "message": message, "title": TITLES.get(code, "Error")}}


def body_for(path: str, code: int, message: str) -> dict[str, Any]:
    """The error body of the service that owns `path`."""
    if path.startswith("/identity"):
        return keystone_body(code, message)
    if path.startswith("/image"):
        title = TITLES.get(code, "Error")
        return {"code": f"{code} {title}", "title": title, "message": message}
    return body(code, message)


def response(path: str, code: int, message: str) -> JSONResponse:
    return JSONResponse(body_for(path, code, message), status_code=code)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return response(request.url.path, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = f"Invalid input for field/attribute {where}. {first.get('msg', '')}".strip()
        return response(request.url.path, 400, msg)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Error"
        if exc.status_code == 404 and message == "Not Found":
            message = "The resource could not be found."
        return response(request.url.path, exc.status_code, message)
