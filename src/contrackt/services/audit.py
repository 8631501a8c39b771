"""Audit trail: append events (inside the caller's transaction) and verify chains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contrackt.domain.audit import AuditAction, AuditEvent, verify_chain
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWork, UnitOfWorkFactory


async def record(
    uow: UnitOfWork,
    clock: Clock,
    tenant_id: str,
    action: AuditAction,
    *,
    job_id: str | None = None,
    api_key_id: str | None = None,
    fingerprint: str | None = None,
    **details: Any,
) -> None:
    await uow.audit.append(
        AuditEvent(
            tenant_id=tenant_id,
            action=action,
            at=clock.now(),
            job_id=job_id,
            api_key_id=api_key_id,
            fingerprint=fingerprint,
            details={k: v for k, v in details.items() if v is not None},
        )
    )


@dataclass
class ChainReport:
    tenant_id: str
    rows: int
    problems: list[str]


async def verify(uow_factory: UnitOfWorkFactory, tenant_id: str | None = None) -> list[ChainReport]:
    """Check every tenant's hash chain (or one tenant's)."""
    if tenant_id is None:
        async with uow_factory(system=True) as uow:
            # every tenant, also one whose audit rows were all deleted
            tenant_ids = sorted(set(await uow.audit.tenant_ids()) | {t.id for t in await uow.tenants.list()})
    else:
        tenant_ids = [tenant_id]
    reports = []
    for tid in tenant_ids:
        async with uow_factory(tid) as uow:
            rows = await uow.audit.chain(tid)
            head = await uow.audit.head(tid)
        reports.append(ChainReport(tid, len(rows), verify_chain(rows, head)))
    return reports
