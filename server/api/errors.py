"""One error body for every API failure: `{"error": {"code": ..., "message": ...}}`."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

log = structlog.get_logger(__name__)


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

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_body("invalid_request", str(exc.errors())), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", error=str(exc))
        return JSONResponse(_body("internal_error", "Something went wrong."), status_code=500)
