"""Job routes: status, result, purge."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from contrackt.api.deps import ContainerDep, StatusCaller, rate_headers
from contrackt.api.errors import problems
from contrackt.services.results import job_view

router = APIRouter()


@router.get("/v1/jobs/{job_id}", summary="Job status", responses=problems(404))
async def get_job(job_id: str, caller: StatusCaller, c: ContainerDep) -> dict[str, Any]:
    return job_view(await c.reader.job(caller, job_id))


@router.get(
    "/v1/jobs/{job_id}/result",
    summary="Extraction result (JSON, or text with ?format=text)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/plain": {"schema": {"type": "string"}},
            }
        },
        **problems(404, 409, 410),
    },
)
async def get_result(
    job_id: str,
    caller: StatusCaller,
    c: ContainerDep,
    response: Response,
    format: str = Query("json", pattern="^(json|text)$"),
) -> Response:
    # Errors (404/409/410, a bad first segment) are raised before anything is sent. The body is
    # streamed segment by segment; a failure later stops it, and the exact Content-Length makes
    # that a broken transfer for the client: the server closes the connection short of it. (Without
    # it, Starlette's BaseHTTPMiddleware would end a chunked body normally: ADR 0010.)
    body = await c.reader.open_result(caller, job_id, "text" if format == "text" else "json")
    headers = {**rate_headers(response), "Content-Length": str(body.length)}
    return StreamingResponse(body.chunks, media_type=body.media_type, headers=headers)


@router.delete("/v1/jobs/{job_id}", summary="Purge the job's document and result now", responses=problems(404))
async def delete_job(job_id: str, caller: StatusCaller, c: ContainerDep) -> dict[str, Any]:
    return job_view(await c.reader.purge(caller, job_id))
