"""POST /v1/extract: accept a PDF or an image (multipart field ``file``, or the raw body)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from contrackt.api.deps import ContainerDep, EdgeDep, ExtractCaller, rate_headers
from contrackt.api.errors import problems
from contrackt.api.upload import check_declared_length, closing_on_error, read_body
from contrackt.metrics import JOBS_SUBMITTED

router = APIRouter()


def job_links(job_id: str) -> dict[str, str]:
    base = f"/v1/jobs/{job_id}"
    return {"self": base, "result": f"{base}/result", "events": f"{base}/events"}


@router.post(
    "/v1/extract",
    status_code=202,
    summary="Submit a PDF or an image (JPEG, PNG, multi-page TIFF) for extraction",
    description=(
        "The document's type is told by its first bytes (`%PDF-`, JPEG, PNG or TIFF signatures); anything "
        "else is refused with 415 `not_a_pdf`. Images are decoded only inside the extraction sandbox, each "
        "frame one page (at most `CONTRACKT_MAX_PAGES` frames, `CONTRACKT_MAX_IMAGE_PIXELS` pixels a frame). "
        "`pages=1-3,7` reads only those pages of a PDF or TIFF and returns them with their own numbers."
    ),
    responses={
        202: {"description": "Accepted"},
        **problems(
            408,
            409,
            413,
            415,
            503,
            descriptions={409: "idempotency_conflict: this Idempotency-Key was already used with another document"},
        ),
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/tiff": {"schema": {"type": "string", "format": "binary"}},
            },
            "required": True,
        }
    },
)
async def extract(
    request: Request,
    caller: ExtractCaller,
    c: ContainerDep,
    e: EdgeDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    engine: Annotated[str | None, Query(max_length=32)] = None,
    mode: Annotated[str, Query(pattern="^(auto|ocr|text)$")] = "auto",
    delete_on_read: bool | None = None,
    pages: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="Pages to read, counted from 1: numbers and inclusive ranges, e.g. `1-3,7` "
            "(422 when malformed or empty; the job fails `pages_out_of_range` when the document is shorter)",
            examples=["1-3,7"],
        ),
    ] = None,
) -> JSONResponse:
    # The upload slot is held while the body is read and sealed: the bytes of at most
    # CONTRACKT_MAX_CONCURRENT_UPLOADS documents are in this process's memory at once.
    # Any refusal closes the connection, so an unread body is never read.
    with closing_on_error(), e.admission.upload(caller.api_key_id):
        check_declared_length(request.headers.get("content-length"), e.body.max_bytes)
        await c.intake.check_capacity(caller)
        data = await read_body(request.stream(), request.headers.get("content-type", ""), e.body)
        accepted = await c.intake.submit(
            caller,
            data,
            idempotency_key=idempotency_key,
            engine=engine,
            mode=mode,
            delete_on_read=delete_on_read,
            pages=pages,
        )
    if not accepted.replayed:
        JOBS_SUBMITTED.inc()
    job = accepted.job
    body: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status.value,
        "document_sha256": accepted.document_sha256,
        "links": job_links(job.id),
    }
    headers = {**rate_headers(response), "Location": f"/v1/jobs/{job.id}"}
    return JSONResponse(body, status_code=202, headers=headers)
