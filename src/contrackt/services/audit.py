"""Audit trail: append events (inside the caller's transaction) and verify chains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contrackt.domain.audit import AuditAction, AuditEvent, ChainRow, chain_end, verify_chain
from contrackt.domain.checkpoints import ExternalHeads, check_against_export, signature_ok
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
    starts_after: int = 0  # the seq of the retention checkpoint the chain begins after (0: genesis)


async def verify(
    uow_factory: UnitOfWorkFactory,
    tenant_id: str | None = None,
    *,
    public_key: bytes | None = None,
    external: ExternalHeads | None = None,
) -> list[ChainReport]:
    """Check every tenant's hash chain (or one tenant's).

    A chain pruned by the retention begins after its newest checkpoint, whose signature is
    checked against ``public_key`` (the deployment's key). With ``external`` (the newest
    export of signed heads, kept outside the database) every chain must also reach the head
    it had then, with the same row there: a truncated chain whose recorded head was rewritten
    is caught, and so is a chain that vanished altogether.
    """
    if tenant_id is None:
        async with uow_factory(system=True) as uow:
            # every tenant, also one whose audit rows were all deleted
            tenant_ids = set(await uow.audit.tenant_ids()) | {t.id for t in await uow.tenants.list()}
        if external is not None:
            tenant_ids |= set(external.heads)
    else:
        tenant_ids = {tenant_id}
    reports = []
    for tid in sorted(tenant_ids):
        async with uow_factory(tid) as uow:
            rows = await uow.audit.chain(tid)
            head = await uow.audit.head(tid)
            cut = await uow.checkpoints.latest(tid)
        problems: list[str] = []
        start = (cut.seq, cut.row_hash) if cut is not None else None
        if cut is not None and public_key is not None and not signature_ok(cut.body(), public_key):
            problems.append(f"the retention checkpoint at seq {cut.seq} is not signed by this deployment's key")
        problems += verify_chain(rows, head, start)
        if external is not None:
            problems += _against_external(tid, rows, start, external)
        reports.append(ChainReport(tid, len(rows), problems, cut.seq if cut is not None else 0))
    return reports


def _against_external(
    tenant_id: str, rows: list[ChainRow], start: tuple[int, str] | None, external: ExternalHeads
) -> list[str]:
    exported = external.heads.get(tenant_id)
    if exported is None:
        return []  # younger than the export
    hashes = {row.seq: row.row_hash for row in rows}
    return check_against_export(chain_end(rows, start), start, hashes, exported, external.made_at)
