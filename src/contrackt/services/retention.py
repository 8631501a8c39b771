"""Retention (`contrackt retention apply`, and hourly in each worker): prune what is older than the law asks.

Jobs that finished, and audit rows written, more than ``CONTRACKT_AUDIT_RETENTION_DAYS``
(default 1826, five years) ago are deleted, one tenant (one chain) at a time, in one
transaction per chain:

1. the cut row: the last row such that it and every row before it are older than the cut;
2. a checkpoint of the chain at that row (seq, row hash, its time, the cut), signed with the
   deployment's Ed25519 key, is stored;
3. the rows up to it go through the database's narrow pruning path, which refuses without
   that checkpoint (and, on PostgreSQL, any row younger than the floor set at migrate);
4. the tenant's finished jobs older than the cut are deleted;
5. a RETENTION row (cut seq, rows, jobs: no personal data) is appended to the same chain.

`audit verify` then checks each chain from its newest checkpoint forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from contrackt.domain.audit import AuditAction
from contrackt.domain.checkpoints import ChainCut
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWorkFactory
from contrackt.ports.signer import ReceiptSigner
from contrackt.services import audit
from contrackt.services.checkpoints import sign_cut

log = structlog.get_logger("contrackt.retention")


@dataclass
class RetentionReport:
    cut: datetime
    chains: int = 0  # chains (tenants) that had something to prune
    audit_rows: int = 0
    jobs: int = 0
    checkpoints: int = 0
    # chains left for the next run, with why: another run pruning the same chain at the same
    # moment (its checkpoint won), or the database refusing (e.g. a retention below its floor)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "cut": self.cut.isoformat(timespec="seconds"),
            "chains": self.chains,
            "audit_rows": self.audit_rows,
            "jobs": self.jobs,
            "checkpoints": self.checkpoints,
            "skipped": self.skipped,
        }


class RetentionService:
    def __init__(self, uow: UnitOfWorkFactory, signer: ReceiptSigner, clock: Clock, *, retention_days: int) -> None:
        self.uow = uow
        self.signer = signer
        self.clock = clock
        self.retention = timedelta(days=retention_days)

    async def apply(self) -> RetentionReport:
        now = self.clock.now()
        report = RetentionReport(cut=now - self.retention)
        async with self.uow(system=True) as uow:
            chains = set(await uow.audit.tenants_with_rows_before(report.cut))
            chains |= set(await uow.jobs.tenants_finished_before(report.cut))
        if not chains:
            return report
        await self.signer.public_key_raw()  # load the key before any transaction (it may need one)
        for tenant_id in sorted(chains):
            try:
                rows, jobs, checkpoint = await self._prune(tenant_id, report.cut, now)
            except Exception as exc:  # one chain never stops the others; the next run tries again
                reason = str(getattr(exc, "orig", exc)).splitlines()[0][:200] if str(exc) else ""
                log.warning("retention.chain_skipped", tenant_id=tenant_id, error=type(exc).__name__, reason=reason)
                report.skipped[tenant_id] = f"{type(exc).__name__}: {reason}"
                continue
            if rows or jobs:
                report.chains += 1
            report.audit_rows += rows
            report.jobs += jobs
            report.checkpoints += checkpoint
        log.info("retention.applied", **{k: v for k, v in report.to_dict().items() if k != "skipped"})
        return report

    async def _prune(self, tenant_id: str, cut: datetime, now: datetime) -> tuple[int, int, int]:
        async with self.uow(tenant_id) as uow:
            point = await uow.audit.prune_point(tenant_id, cut)
            latest = await uow.checkpoints.latest(tenant_id)
            rows = 0
            if point is not None and (latest is None or point.seq > latest.seq):
                checkpoint = await sign_cut(
                    self.signer,
                    ChainCut(tenant_id, point.seq, point.row_hash, point.event.at, cut, now, key_id="", signature=""),
                )
                await uow.checkpoints.add(checkpoint)
                rows = await uow.audit.prune(tenant_id, point.seq, cut)
            jobs = await uow.jobs.prune_finished(tenant_id, cut)
            if rows or jobs:
                await audit.record(
                    uow,
                    self.clock,
                    tenant_id,
                    AuditAction.RETENTION,
                    seq=point.seq if rows and point is not None else None,
                    rows=rows,
                    jobs=jobs,
                )
        return rows, jobs, 1 if rows else 0
