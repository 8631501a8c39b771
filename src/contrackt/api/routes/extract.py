"""POST /v1/extract: accept a PDF (multipart field ``file`` or a raw application/pdf body)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from contrackt.api.deps import ContainerDep, ExtractCaller, rate_headers
from contrackt.api.errors import problems
from contrackt.api.upload import check_declared_length, read_multipart_file, read_raw
from contrackt.domain.errors import NotAPdf
from contrackt.metrics import JOBS_SUBMITTED

router = APIRouter()


def job_links(job_id: str) -> dict[str, str]:
    base = f"/v1/jobs/{job_id}"
    return {"self": base, "result": f"{base}/result", "events": f"{base}/events"}


@router.post(
    "/v1/extract",
    status_code=202,
    summary="Submit a PDF for extraction",
    responses={202: {"description": "Accepted"}, **problems(409, 413, 415, 503)},
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
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    engine: Annotated[str | None, Query(max_length=32)] = None,
    mode: Annotated[str, Query(pattern="^(auto|ocr|text)$")] = "auto",
    delete_on_read: bool | None = None,
) -> JSONResponse:
    cap = c.settings.max_upload_bytes
    check_declared_length(request.headers.get("content-length"), cap)
    await c.intake.check_capacity(caller)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        data = await read_multipart_file(request.stream(), content_type, cap)
    elif content_type.split(";")[0].strip() in ("application/pdf", "application/octet-stream", ""):
        data = await read_raw(request.stream(), cap)
    else:
        raise NotAPdf("Send multipart/form-data with a 'file' field, or an application/pdf body")
    accepted = await c.intake.submit(
        caller, data, idempotency_key=idempotency_key, engine=engine, mode=mode, delete_on_read=delete_on_read
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
