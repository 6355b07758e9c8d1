"""Domain errors with stable codes, mapped to Nova's error bodies in one place.

Raise `ApiError` subclasses from handlers; `install()` turns them, FastAPI's
validation errors and unknown routes into `{"<kind>": {"code", "message"}}`.
"""

from __future__ import annotations

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


def body(code: int, message: str) -> dict[str, dict[str, object]]:
    return {KINDS.get(code, "computeFault"): {"code": code, "message": message}}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(body(exc.code, exc.message), status_code=exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = f"Invalid input for field/attribute {where}. {first.get('msg', '')}".strip()
        return JSONResponse(body(400, msg), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Error"
        if exc.status_code == 404 and message == "Not Found":
            message = "The resource could not be found."
        return JSONResponse(body(exc.status_code, message), status_code=exc.status_code)
