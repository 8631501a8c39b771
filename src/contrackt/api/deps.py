"""Request dependencies: the container, the edge, the caller (API key, failures throttled), rate limits."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request, Response

from contrackt.api.edge import Edge
from contrackt.bootstrap import Container
from contrackt.domain.errors import InvalidRequest, RateLimited, Unauthorized
from contrackt.domain.tenants import Principal
from contrackt.settings import parse_rate


def container(request: Request) -> Container:
    c: Container = request.app.state.container
    return c


ContainerDep = Annotated[Container, Depends(container)]


def edge(request: Request) -> Edge:
    e: Edge = request.app.state.edge
    return e


EdgeDep = Annotated[Edge, Depends(edge)]


async def principal(request: Request, c: ContainerDep, e: EdgeDep) -> Principal:
    if "api_key" in request.query_params or "apikey" in request.query_params:
        # Keys in URLs end up in proxy logs and browser history.
        raise InvalidRequest("Send the API key in the X-API-Key header, never in the URL")
    client = e.auth.client(request)
    e.auth.check(client)  # an address over its failure limit gets 429 before any key is looked at
    try:
        p = await c.tenants.authenticate(request.headers.get("x-api-key"))
    except Unauthorized:
        await e.auth.failed(client)  # 429 instead of 401 once over the limit
        raise Unauthorized("A valid API key is required in the X-API-Key header") from None
    request.state.tenant_id = p.tenant_id  # for the opt-in per-tenant metrics of a refusal
    return p


PrincipalDep = Annotated[Principal, Depends(principal)]


async def _limit(kind: str, p: Principal, c: Container, response: Response) -> None:
    rate = (p.rate_limit_extract if kind == "extract" else p.rate_limit_status) or (
        c.settings.rate_limit_extract if kind == "extract" else c.settings.rate_limit_status
    )
    limit, period = parse_rate(rate)
    decision = await c.limiter.hit(f"{kind}:{p.api_key_id}", limit, period)
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_s)),
    }
    if not decision.allowed:
        exc = RateLimited(f"Over the limit of {rate} for this API key", retry_after=math.ceil(decision.retry_after_s))
        exc.headers = headers  # type: ignore[attr-defined]
        raise exc
    response.headers.update(headers)


async def limit_extract(p: PrincipalDep, c: ContainerDep, response: Response) -> Principal:
    await _limit("extract", p, c, response)
    return p


async def limit_status(p: PrincipalDep, c: ContainerDep, response: Response) -> Principal:
    await _limit("status", p, c, response)
    return p


def rate_headers(response: Response) -> dict[str, str]:
    """The RateLimit-* headers a limit dependency set, for routes that build their own Response."""
    return {k: v for k, v in response.headers.items() if k.lower().startswith("ratelimit-")}


ExtractCaller = Annotated[Principal, Depends(limit_extract)]
StatusCaller = Annotated[Principal, Depends(limit_status)]
