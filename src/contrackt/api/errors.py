"""RFC 9457 problem+json for every error; stack traces stay in the logs."""

from __future__ import annotations

import re
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

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
}
_PROBLEM_DESCRIPTIONS = {
    401: "A valid API key is required (X-API-Key)",
    404: "No such job (another tenant's job answers the same)",
    408: "The request body did not arrive within the body timeout",
    409: "The job has not finished, or failed",
    410: "The result has expired or was purged",
    413: "The upload, its number of parts, or its page count is over the limit",
    415: "The upload is not a PDF",
    422: "The request is invalid",
    429: (
        "Over a rate limit or a concurrency cap for this API key or address, or this tenant's "
        "limit of unfinished jobs (see Retry-After)"
    ),
    503: "Overloaded; retry after Retry-After seconds",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}


def problems(*statuses: int, descriptions: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem+json errors (always 401, 422 and 429 too).

    ``descriptions``: what a status means on this route, where it differs from the default.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({401, 422, 429, *statuses}):
        entry: dict[str, Any] = {
            "description": (descriptions or {}).get(status) or _PROBLEM_DESCRIPTIONS.get(status, "Error"),
            "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}},
        }
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[status] = entry
    return out


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


def error_response(
    exc: ContracktError, headers: dict[str, str] | None = None, *, tenant: str | None = None
) -> JSONResponse:
    hdrs = dict(headers or {})
    if exc.retry_after is not None:
        hdrs["Retry-After"] = str(int(max(1, exc.retry_after)))
    if exc.status >= 400:
        REJECTED.inc(exc.code, str(exc.status), tenant=tenant)
    return problem(exc.status, exc.code, exc.title, exc.message, headers=hdrs)


_STATUS_CODES = {
    400: ("invalid_request", "The request is invalid"),  # e.g. a JSON body that does not parse
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("upload_too_large", "The upload exceeds the size limit"),
}


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the API documents for ``path`` (for the Allow header of a 405)."""
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(app.state, "allow_table", None)
    if table is None:
        table = []
        for template, ops in app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            table.append((re.compile(f"^{pattern}$"), sorted(m.upper() for m in ops)))
        app.state.allow_table = table
    return sorted({m for pattern, ms in table if pattern.match(path) for m in ms})


def install(app: FastAPI) -> None:
    @app.exception_handler(ContracktError)
    async def _contrackt(request: Request, exc: ContracktError) -> JSONResponse:
        # The tenant is known once the key was checked (deps.principal); before that it is not.
        tenant = getattr(request.state, "tenant_id", None)
        return error_response(exc, getattr(exc, "headers", None), tenant=tenant)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()]
        return problem(422, "invalid_request", "The request is invalid", f"Invalid fields: {', '.join(fields)}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _STATUS_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names only the first route on the path; list every method it serves.
            methods = allowed_methods(request.app, request.url.path)
            if methods:
                headers["Allow"] = ", ".join(methods)
        return problem(exc.status_code, code, title, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("http.unhandled")
        return problem(500, "internal_error", "Internal error", "An unexpected error occurred")
