"""Job routes: status, result, purge."""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from contrackt.api.deps import ContainerDep, StatusCaller, rate_headers
from contrackt.api.errors import problems
from contrackt.services.result_object import Part
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
        200: {
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/plain": {"schema": {"type": "string"}},
                "text/markdown": {
                    "schema": {"type": "string"},
                    "example": "<!-- page 1 -->\n\n# CONTRATO\n\n| Item | Valor |\n| --- | --- |\n| 001 | R$ 10,00 |\n",
                },
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            }
        },
        **problems(404, 409, 410, descriptions={409: "not_finished, job_failed, or format_unavailable"}),
    },
)
async def get_result(
    job_id: str,
    caller: StatusCaller,
    c: ContainerDep,
    response: Response,
    format: str = Query("json", pattern="^(json|text|markdown|pdf)$"),
) -> Response:
    # Errors (404/409/410, a bad first segment) are raised before anything is sent. The body is
    # streamed segment by segment; a failure later stops it, and the exact Content-Length makes
    # that a broken transfer for the client: the server closes the connection short of it. (Without
    # it, Starlette's BaseHTTPMiddleware would end a chunked body normally: ADR 0010.)
    part: Part = cast(Part, format)
    body = await c.reader.open_result(caller, job_id, part)
    headers = {**rate_headers(response), "Content-Length": str(body.length)}
    if part == "pdf":
        # the job id, never the uploaded file's name (which is not kept)
        headers["Content-Disposition"] = f'attachment; filename="{job_id}.pdf"'
    return StreamingResponse(body.chunks, media_type=body.media_type, headers=headers)


@router.delete("/v1/jobs/{job_id}", summary="Purge the job's document and result now", responses=problems(404))
async def delete_job(job_id: str, caller: StatusCaller, c: ContainerDep) -> dict[str, Any]:
    return job_view(await c.reader.purge(caller, job_id))
