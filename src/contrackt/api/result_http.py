"""A result over HTTP: the ``format`` parameter and the streamed response, shared by
``GET /v1/jobs/{id}/result`` and ``POST /v1/extract?wait=N`` (one place decides what each
format sends, so both answer byte for byte the same)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import StreamingResponse

from contrackt.bootstrap import Container
from contrackt.domain.tenants import Principal
from contrackt.services.result_object import Part

FORMATS: tuple[Part, ...] = ("json", "text", "markdown", "pdf")
ResultFormat = Annotated[
    str,
    Query(
        pattern=f"^({'|'.join(FORMATS)})$",
        description=(
            "`json` (pages, lines, boxes, confidences), `text` (text/plain, pages separated by a form feed), "
            "`markdown` (headings, paragraphs, pipe tables) or `pdf` (the searchable PDF, as an attachment)"
        ),
    ),
]

RESULT_EXAMPLE: dict[str, Any] = {
    "job_id": "5b0e6a8e-3f0c-4a51-9d8e-2f7f2d1c9a10",
    "text": "CONTRATO DE PRESTAÇÃO DE SERVIÇOS\nCláusula 1ª ...",
    "pages": [
        {
            "number": 1,
            "source": "text_layer",
            "zoom": None,
            "rotation": 0,
            "confidence": 1.0,
            "text": "CONTRATO DE PRESTAÇÃO DE SERVIÇOS\nCláusula 1ª ...",
            "lines": [
                {"text": "CONTRATO DE PRESTAÇÃO DE SERVIÇOS", "confidence": 1.0, "bbox": [72.0, 70.2, 420.5, 84.0]}
            ],
        }
    ],
    "confidence_avg": 1.0,
    "active_content": [],
    "result_sha256": "9f2c…",
}
RESULT_CONTENT: dict[str, Any] = {
    "application/json": {"schema": {"type": "object"}, "example": RESULT_EXAMPLE},
    "text/plain": {"schema": {"type": "string"}, "example": "CONTRATO DE PRESTAÇÃO DE SERVIÇOS\nCláusula 1ª ..."},
    "text/markdown": {
        "schema": {"type": "string"},
        "example": "<!-- page 1 -->\n\n# CONTRATO\n\n| Item | Valor |\n| --- | --- |\n| 001 | R$ 10,00 |\n",
    },
    "application/pdf": {"schema": {"type": "string", "format": "binary"}},
}


def result_part(format: str) -> Part:
    return next((part for part in FORMATS if part == format), "json")


async def result_response(
    c: Container, caller: Principal, job_id: str, format: str, headers: Mapping[str, str]
) -> StreamingResponse:
    """The job's result in ``format``, streamed. 404/409/410 (and a bad first segment) raise
    before anything is sent; DELIVERED is recorded, and delete_on_read destroys the result once
    its last byte is out. A failure later stops the stream short of the exact Content-Length, so
    the client sees a broken transfer (without it, Starlette's BaseHTTPMiddleware would end a
    chunked body normally: ADR 0010)."""
    part = result_part(format)
    body = await c.reader.open_result(caller, job_id, part)
    out = {**headers, "Content-Length": str(body.length)}
    if part == "pdf":
        # the job id, never the uploaded file's name (which is not kept)
        out["Content-Disposition"] = f'attachment; filename="{job_id}.pdf"'
    return StreamingResponse(body.chunks, media_type=body.media_type, headers=out)
