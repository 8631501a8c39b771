"""POST /v1/extract: accept a PDF or an image (multipart field ``file``, or the raw body),
optionally waiting up to ``wait`` seconds to answer with the result itself."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from contrackt.api.deps import ContainerDep, EdgeDep, ExtractCaller, rate_headers
from contrackt.api.errors import problems
from contrackt.api.result_http import RESULT_CONTENT, ResultFormat, result_response
from contrackt.api.upload import check_declared_length, closing_on_error, discard_small_body, read_body
from contrackt.api.wait import MAX_WAIT_SECONDS, wait_for_job
from contrackt.domain.errors import ContracktError
from contrackt.domain.jobs import JobStatus
from contrackt.metrics import JOBS_SUBMITTED

router = APIRouter()


def job_links(job_id: str) -> dict[str, str]:
    base = f"/v1/jobs/{job_id}"
    return {"self": base, "result": f"{base}/result", "events": f"{base}/events"}


ACCEPTED_EXAMPLE = {
    "job_id": "5b0e6a8e-3f0c-4a51-9d8e-2f7f2d1c9a10",
    "status": "pending",
    "document_sha256": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
    "links": {
        "self": "/v1/jobs/5b0e6a8e-3f0c-4a51-9d8e-2f7f2d1c9a10",
        "result": "/v1/jobs/5b0e6a8e-3f0c-4a51-9d8e-2f7f2d1c9a10/result",
        "events": "/v1/jobs/5b0e6a8e-3f0c-4a51-9d8e-2f7f2d1c9a10/events",
    },
}
_JOB_HEADERS = {
    "Location": {"description": "/v1/jobs/{id}", "schema": {"type": "string"}},
    "X-Job-ID": {"description": "The job's id", "schema": {"type": "string"}},
    "X-Document-SHA256": {"description": "SHA-256 of the uploaded document", "schema": {"type": "string"}},
}
_WAIT_HEADER = {
    "X-Wait-Outcome": {
        "description": "Only with wait > 0: how the wait ended (completed, failed, timeout, too_many_streams, "
        "unauthorized, result_unavailable)",
        "schema": {"type": "string"},
    }
}


@router.post(
    "/v1/extract",
    status_code=202,
    summary="Submit a PDF or an image for extraction (and, with ?wait=N, get its result in the same answer)",
    description=(
        "The document's type is told by its first bytes (`%PDF-`, JPEG, PNG or TIFF signatures); anything "
        "else is refused with 415 `not_a_pdf`. Images are decoded only inside the extraction sandbox, each "
        "frame one page (at most `CONTRACKT_MAX_PAGES` frames, `CONTRACKT_MAX_IMAGE_PIXELS` pixels a frame). "
        "`pages=1-3,7` reads only those pages of a PDF or TIFF and returns them with their own numbers. "
        "Answers `202` with the job as soon as the document is stored. With `wait=N` (1–60 s) the answer "
        "waits up to N seconds for the job: if it completes in time the answer is `200` with the result body, "
        "exactly as `GET /v1/jobs/{id}/result?format=…` would give it (and with the same `delete_on_read` "
        "rules); otherwise the usual `202` (with `status` `failed` and `error` when the job failed meanwhile). "
        "A waiting request takes one of the API key's event-stream slots (`CONTRACKT_MAX_STREAMS_PER_KEY`); "
        "with none free it does not wait (`202`, `X-Wait-Outcome: too_many_streams`)."
    ),
    responses={
        200: {
            "description": "wait=N only: the job completed within N seconds; the body is its result",
            "content": RESULT_CONTENT,
            "headers": {**_JOB_HEADERS, **_WAIT_HEADER},
        },
        202: {
            "description": "Accepted (the job is pending, or was still unfinished or failed when the wait ended)",
            "content": {"application/json": {"example": ACCEPTED_EXAMPLE}},
            "headers": {**_JOB_HEADERS, **_WAIT_HEADER},
        },
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
    wait: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Seconds (0–60) to wait for the result; 0 answers 202 at once",
            examples=[30],
        ),
    ] = 0,
    format: ResultFormat = "json",
    pages: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="Pages to read, counted from 1: numbers and inclusive ranges, e.g. `1-3,7` "
            "(422 when malformed or empty; the job fails `pages_out_of_range` when the document is shorter)",
            examples=["1-3,7"],
        ),
    ] = None,
) -> Response:
    # The upload slot is held while the body is read and sealed: the bytes of at most
    # CONTRACKT_MAX_CONCURRENT_UPLOADS documents are in this process's memory at once.
    # Any refusal closes the connection, so a large unread body is never read; a small one is
    # dropped first, so that the refusal is not lost to a reset (discard_small_body).
    reading = False
    try:
        with closing_on_error(), e.admission.upload(caller.api_key_id):
            check_declared_length(request.headers.get("content-length"), e.body.max_bytes)
            await c.intake.check_capacity(caller)
            reading = True
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
            del data  # sealed and stored: a waiting request must not keep the document in memory
    except ContracktError:
        if not reading:
            await discard_small_body(request.receive, request.headers.get("content-length"))
        raise
    if not accepted.replayed:
        JOBS_SUBMITTED.inc(tenant=caller.tenant_id)
    job = accepted.job
    headers = {
        **rate_headers(response),
        "Location": f"/v1/jobs/{job.id}",
        "X-Job-ID": job.id,
        "X-Document-SHA256": accepted.document_sha256,
    }
    if wait > 0:
        # The upload slot is given back already (the body is sealed, stored and dropped).
        waited = await wait_for_job(e, job, caller.api_key_id, wait, request)
        job = waited.job
        headers["X-Wait-Outcome"] = waited.outcome
        if job.status is JobStatus.COMPLETED and waited.outcome == "completed":
            try:
                return await result_response(c, caller, job.id, format, headers)
            except ContracktError:
                # Gone meanwhile (another delete_on_read download, a DELETE): the job stands.
                headers["X-Wait-Outcome"] = "result_unavailable"
    body: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status.value,
        "document_sha256": accepted.document_sha256,
        "links": job_links(job.id),
    }
    if job.status is JobStatus.FAILED:
        body["error"] = {"code": job.error_code, "message": job.error_message}
    return JSONResponse(body, status_code=202, headers=headers)
