"""Usage: counters moved in the transaction that makes a job terminal, and the daily report.

Every path that makes a job terminal calls ``count_completed`` or ``count_failed`` in the same
unit of work, right after the conditional update that moved the job (and after its audit row,
whose per-tenant lock already serialises a tenant's finishing transactions). A job is therefore
counted exactly once, and the counts stay true after its result expires, its document is
destroyed, and its row is pruned by retention: they live in their own table.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from contrackt.domain.errors import InvalidRequest
from contrackt.domain.tenants import Principal
from contrackt.domain.usage import (
    DEFAULT_RANGE_DAYS,
    check_range,
    completed_counts,
    daily_report,
    failed_counts,
    usage_day,
)
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWork, UnitOfWorkFactory


async def count_completed(uow: UnitOfWork, tenant_id: str, at: datetime, page_sources: Iterable[str]) -> None:
    """A job completed at ``at`` with pages from ``page_sources`` (one entry per page)."""
    await uow.usage.add(tenant_id, usage_day(at), completed_counts(page_sources))


async def count_failed(uow: UnitOfWork, tenant_id: str, at: datetime, code: str | None, jobs: int = 1) -> None:
    """``jobs`` jobs failed at ``at`` with error ``code``."""
    await uow.usage.add(tenant_id, usage_day(at), failed_counts(code, jobs))


class UsageService:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def report(self, principal: Principal, start: date | None, end: date | None) -> dict[str, Any]:
        """GET /v1/usage: each UTC day of ``start..end`` (default: the last 30 days up to today)."""
        end = end or usage_day(self.clock.now())
        start = start or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
        try:
            check_range(start, end)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        async with self.uow(principal.tenant_id) as uow:
            rows = await uow.usage.daily(principal.tenant_id, start, end)
        days, totals = daily_report(rows, start, end)
        total = totals.to_dict()
        del total["date"]
        return {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "days": [d.to_dict() for d in days],
            "totals": total,
        }
