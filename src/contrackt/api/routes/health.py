"""Health: live (the process and its loops) and ready (every adapter answers)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from contrackt.api.deps import ContainerDep

router = APIRouter()
CHECK_TIMEOUT = 2.0


@router.get("/v1/health/live", summary="Liveness")
async def live(request: Request) -> JSONResponse:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None and not runtime.alive():
        return JSONResponse({"status": "dead"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def _check(name: str, coro: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(coro, CHECK_TIMEOUT)
        return name, "ok"
    except Exception:
        return name, "error"


@router.get("/v1/health/ready", summary="Readiness")
@router.get("/v1/health", summary="Readiness", include_in_schema=False)
async def ready(request: Request, c: ContainerDep) -> JSONResponse:
    checks = [
        _check("database", c.uow.ping()),
        _check("queue", c.queue.depth()),
        _check("storage", c.blobs.exists("health/probe.enc")),
    ]
    runtime = getattr(request.app.state, "runtime", None)
    results = dict(await asyncio.gather(*checks))
    if runtime is not None:
        results["ocr"] = "ok" if runtime.ready() else "starting"
    ok = all(v == "ok" for v in results.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": results}, status_code=200 if ok else 503)
