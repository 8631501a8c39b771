"""GET /v1/jobs (the tenant's own jobs, newest first, paginated) and GET /v1/usage (per UTC day).

Both count as status calls for the rate limit (CONTRACKT_RATE_LIMIT_STATUS).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query

from contrackt.api.deps import ContainerDep, StatusCaller
from contrackt.api.errors import problems
from contrackt.domain.errors import InvalidRequest
from contrackt.domain.usage import MAX_RANGE_DAYS
from contrackt.services.listing import DEFAULT_LIMIT, MAX_LIMIT
from contrackt.services.results import job_view

router = APIRouter()

_JOB = {
    "job_id": "5b0e6a8e-3f0c-4a51-9d8e-2f7f2d1c9a10",
    "status": "completed",
    "pages_total": 3,
    "pages_done": 3,
    "error": None,
    "created_at": "2026-11-27T10:15:02.118000+00:00",
    "completed_at": "2026-11-27T10:15:04.901000+00:00",
}
LIST_EXAMPLE = {
    "jobs": [
        _JOB,
        {
            **_JOB,
            "job_id": "0c1d7f0e-95a4-4f7c-8a43-6c1e0b1f6f22",
            "status": "failed",
            "pages_total": None,
            "pages_done": 0,
            "error": {"code": "encrypted_pdf", "message": "The PDF is protected by a password"},
        },
    ],
    "next_cursor": "eyJ0IjoxNzk1MjY4OTAyMTE4MDAwLCJpIjoiMGMxZDdmMGUtOTVhNC00ZjdjLThhNDMtNmMxZTBiMWY2ZjIyIiwi"
    "cyI6bnVsbH0.3q2-7wXk1T0b5Jm9aQvC8g",
}
_DAY = {
    "date": "2026-11-27",
    "pages": {"text_layer": 12, "ocr": 30, "total": 42},
    "jobs": {"completed": 5, "failed": 1, "failed_by_code": {"corrupt_pdf": 1}},
}
USAGE_EXAMPLE = {
    "from": "2026-11-26",
    "to": "2026-11-27",
    "days": [
        {
            "date": "2026-11-26",
            "pages": {"text_layer": 0, "ocr": 0, "total": 0},
            "jobs": {"completed": 0, "failed": 0, "failed_by_code": {}},
        },
        _DAY,
    ],
    "totals": {key: value for key, value in _DAY.items() if key != "date"},
}


@router.get(
    "/v1/jobs",
    summary="This tenant's jobs, newest first (paginated)",
    description=(
        "Each item is the view of `GET /v1/jobs/{id}` (no document data). Pages follow each other by "
        "`cursor`: pass the previous answer's `next_cursor` (with the same `status`) until it is `null`. "
        "The cursor is opaque and signed: an altered one, or one from another tenant or filter, "
        "answers `422 invalid_cursor`."
    ),
    responses={200: {"content": {"application/json": {"example": LIST_EXAMPLE}}}, **problems()},
)
async def list_jobs(
    caller: StatusCaller,
    c: ContainerDep,
    status: Annotated[
        str | None, Query(pattern="^(pending|processing|completed|failed)$", description="Only jobs in this status")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Jobs per page (1–100)", examples=[50])
    ] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> dict[str, Any]:
    page = await c.listing.page(caller, status=status, limit=limit, cursor=cursor)
    return {"jobs": [job_view(j) for j in page.jobs], "next_cursor": page.next_cursor}


def _day(alias: str, description: str) -> Any:
    # A plain YYYY-MM-DD string: pydantic's date would also take "0" (a Unix timestamp).
    return Query(
        alias=alias,
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description=description,
        examples=["2026-11-01" if alias == "from" else "2026-11-30"],
        json_schema_extra={"format": "date"},
    )


@router.get(
    "/v1/usage",
    summary="This tenant's usage per UTC day: pages by source, jobs by outcome",
    description=(
        "Every day of `from`..`to` (inclusive, UTC, at most 366 days; default the last 30 days), oldest "
        "first, zeros included. `pages` counts the pages of completed jobs by where their text came from "
        "(`text_layer`, `ocr`; `unknown` for jobs that finished before usage was recorded); `jobs` counts "
        "jobs on the day they finished, failed ones by error code. The counts are kept apart from jobs and "
        "results, so they stay after results expire and old jobs are pruned."
    ),
    responses={200: {"content": {"application/json": {"example": USAGE_EXAMPLE}}}, **problems()},
)
async def usage(
    caller: StatusCaller,
    c: ContainerDep,
    start: Annotated[str | None, _day("from", "First day (YYYY-MM-DD, UTC)")] = None,
    end: Annotated[str | None, _day("to", f"Last day (YYYY-MM-DD, UTC; at most {MAX_RANGE_DAYS} days)")] = None,
) -> dict[str, Any]:
    return await c.usage.report(caller, _parse_day(start, "from"), _parse_day(end, "to"))


def _parse_day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' is not a date (YYYY-MM-DD)") from None
