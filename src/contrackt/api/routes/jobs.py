"""Job routes: status, result, purge."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response

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
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **problems(404, 409, 410)},
)
async def get_result(
    job_id: str,
    caller: StatusCaller,
    c: ContainerDep,
    response: Response,
    format: str = Query("json", pattern="^(json|text)$"),
) -> Response:
    body = await c.reader.result(caller, job_id)
    if format == "text":
        return PlainTextResponse(body["text"], headers=rate_headers(response))
    return JSONResponse(body, headers=rate_headers(response))


@router.delete("/v1/jobs/{job_id}", summary="Purge the job's document and result now", responses=problems(404))
async def delete_job(job_id: str, caller: StatusCaller, c: ContainerDep) -> dict[str, Any]:
    return job_view(await c.reader.purge(caller, job_id))
