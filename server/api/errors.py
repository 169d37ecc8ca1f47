"""One error body for every API failure: `{"error": {"code": ..., "message": ...}}`."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

log = structlog.get_logger(__name__)


class ErrorDetail(BaseModel):
    """What went wrong: a stable `code` to branch on, and a `message` saying what to do."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error the API answers."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "The body could not be read (it is not UTF-8, or its encoding is unknown)",
        401: "No token, or one this API does not accept",
        403: "The token's role may not do this",
        404: "No such record, or not one the caller may see",
        409: "The record's state or a unique value forbids it",
        422: "The request is invalid (it writes nothing)",
        503: "The database is unavailable; retry after `Retry-After` seconds",
    }.items()
}
"""The management API's errors, for its OpenAPI schema: without them the schema would promise
FastAPI's own 422 body, which this API never sends (see `install_error_handlers`)."""


class ApiError(Exception):
    """An error the API answers with a status, a stable code and a message saying what to do."""

    def __init__(self, status: int, code: str, message: str, *, retry: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry = status, code, message, retry


def _body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(exc: ApiError) -> JSONResponse:
    """The response for an `ApiError` (with `Retry-After` when it says when to retry)."""
    headers = {"Retry-After": str(exc.retry)} if exc.retry else None
    return JSONResponse(_body(exc.code, exc.message), status_code=exc.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer `ApiError`, validation errors and surprises with the common error body."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's and FastAPI's own refusals (an unreadable body, an unknown path, a method
        # not allowed), in the same body as the API's.
        codes = {400: "unreadable_body", 404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        return JSONResponse(
            _body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_body("invalid_request", str(exc.errors())), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", error=str(exc))
        return JSONResponse(_body("internal_error", "Something went wrong."), status_code=500)
