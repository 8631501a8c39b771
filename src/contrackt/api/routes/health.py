"""Health: live (the process and its loops) and ready (every adapter answers, OCR warm).

Every check runs under a short time limit (CHECK_TIMEOUT), so a stuck database
or storage makes readiness fail fast instead of hanging the probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from contrackt.api.deps import ContainerDep

router = APIRouter()
CHECK_TIMEOUT = 2.0


class Live(BaseModel):
    status: Literal["ok", "dead"]


class OcrState(BaseModel):
    engine: str
    warm: bool


class Ready(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Literal["ok", "error", "timeout", "starting"]]
    ocr: OcrState | None = None


@router.get(
    "/v1/health/live",
    summary="Liveness",
    response_model=Live,
    responses={503: {"model": Live, "description": "A worker loop died"}},
)
async def live(request: Request) -> JSONResponse:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None and not runtime.alive():
        return JSONResponse({"status": "dead"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def _check(name: str, coro: Awaitable[Any]) -> tuple[str, str]:
    try:
        await asyncio.wait_for(coro, CHECK_TIMEOUT)
        return name, "ok"
    except TimeoutError:
        return name, "timeout"
    except Exception:
        return name, "error"


@router.get(
    "/v1/health/ready",
    summary="Readiness",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "A dependency is down or the OCR engine is not warm"}},
)
@router.get("/v1/health", summary="Readiness", include_in_schema=False)
async def ready(request: Request, c: ContainerDep) -> JSONResponse:
    checks = [
        _check("database", c.uow.ping()),
        _check("queue", c.queue.depth()),
        _check("storage", c.blobs.exists("health/probe.enc")),
    ]
    runtime = getattr(request.app.state, "runtime", None)
    results = dict(await asyncio.gather(*checks))
    body: dict[str, Any] = {"checks": results}
    if runtime is not None:
        warm = bool(runtime.ready())
        results["ocr"] = "ok" if warm else "starting"
        body["ocr"] = {"engine": c.settings.ocr_engine, "warm": warm}
    ok = all(v == "ok" for v in results.values())
    body["status"] = "ok" if ok else "unavailable"
    return JSONResponse(body, status_code=200 if ok else 503)
