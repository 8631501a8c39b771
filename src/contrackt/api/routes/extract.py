"""POST /v1/extract: accept a PDF (multipart field ``file`` or a raw application/pdf body)."""

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
    summary="Submit a PDF for extraction",
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
) -> JSONResponse:
    # The upload slot is held while the body is read and sealed: the bytes of at most
    # CONTRACKT_MAX_CONCURRENT_UPLOADS documents are in this process's memory at once.
    # Any refusal closes the connection, so an unread body is never read.
    with closing_on_error(), e.admission.upload(caller.api_key_id):
        check_declared_length(request.headers.get("content-length"), e.body.max_bytes)
        await c.intake.check_capacity(caller)
        data = await read_body(request.stream(), request.headers.get("content-type", ""), e.body)
        accepted = await c.intake.submit(
            caller, data, idempotency_key=idempotency_key, engine=engine, mode=mode, delete_on_read=delete_on_read
        )
    if not accepted.replayed:
        JOBS_SUBMITTED.inc(tenant=caller.tenant_id)
    job = accepted.job
    body: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status.value,
        "document_sha256": accepted.document_sha256,
        "links": job_links(job.id),
    }
    headers = {**rate_headers(response), "Location": f"/v1/jobs/{job.id}"}
    return JSONResponse(body, status_code=202, headers=headers)
