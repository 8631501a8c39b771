"""RFC 9457 problem+json for every error; stack traces stay in the logs."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contrackt.domain.errors import ContracktError
from contrackt.metrics import REJECTED

PROBLEM = "application/problem+json"
log = structlog.get_logger("contrackt.api")


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://contrackt.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def error_response(exc: ContracktError, headers: dict[str, str] | None = None) -> JSONResponse:
    hdrs = dict(headers or {})
    if exc.retry_after is not None:
        hdrs["Retry-After"] = str(int(max(1, exc.retry_after)))
    if exc.status >= 400:
        REJECTED.labels(exc.code).inc()
    return problem(exc.status, exc.code, exc.title, exc.message, headers=hdrs)


_STATUS_CODES = {
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("upload_too_large", "The upload exceeds the size limit"),
}


def install(app: FastAPI) -> None:
    @app.exception_handler(ContracktError)
    async def _contrackt(_: Request, exc: ContracktError) -> JSONResponse:
        return error_response(exc, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()]
        return problem(422, "invalid_request", "The request is invalid", f"Invalid fields: {', '.join(fields)}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _STATUS_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        return problem(exc.status_code, code, title, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("http.unhandled")
        return problem(500, "internal_error", "Internal error", "An unexpected error occurred")
