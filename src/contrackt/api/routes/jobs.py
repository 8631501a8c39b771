"""Job routes: status, result, purge."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse

from contrackt.api.deps import ContainerDep, StatusCaller, rate_headers
from contrackt.api.errors import problems
from contrackt.api.result_http import RESULT_CONTENT, ResultFormat, result_response
from contrackt.services.results import job_view

router = APIRouter()


@router.get("/v1/jobs/{job_id}", summary="Job status", responses=problems(404))
async def get_job(job_id: str, caller: StatusCaller, c: ContainerDep) -> dict[str, Any]:
    return job_view(await c.reader.job(caller, job_id))


@router.get(
    "/v1/jobs/{job_id}/result",
    summary="Extraction result: JSON, text, markdown or a searchable PDF",
    description=(
        "`format=json` (default): pages, lines, boxes, words. `text`: the plain text, pages separated by a "
        "form feed on its own line. `markdown`: paragraphs, headings and pipe tables read from the layout, "
        "each page after a `<!-- page N -->` comment. `pdf`: the searchable PDF (the original pages with an "
        "invisible text layer at the OCR word boxes; an image's frames as pages), as an attachment; 409 "
        "`format_unavailable` when none was kept for the job. Every form lives and is destroyed with the result."
    ),
    response_class=StreamingResponse,
    responses={
        200: {"content": RESULT_CONTENT},
        **problems(404, 409, 410, descriptions={409: "not_finished, job_failed, or format_unavailable"}),
    },
)
async def get_result(
    job_id: str, caller: StatusCaller, c: ContainerDep, response: Response, format: ResultFormat = "json"
) -> Response:
    return await result_response(c, caller, job_id, format, rate_headers(response))


@router.delete("/v1/jobs/{job_id}", summary="Purge the job's document and result now", responses=problems(404))
async def delete_job(job_id: str, caller: StatusCaller, c: ContainerDep) -> dict[str, Any]:
    return job_view(await c.reader.purge(caller, job_id))
