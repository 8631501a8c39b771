"""The audit trail's SQL repository: hash-chained appends (one chain per tenant and the service's),
reads, checkpoints and pruning behind them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from contrackt.adapters.db.repositories import _Repo
from contrackt.adapters.db.tables import (
    audit_checkpoints,
    audit_logs,
    audit_prune_gate,
    tenants,
)
from contrackt.domain.audit import GENESIS_HASH, SERVICE_CHAIN, AuditAction, AuditEvent, ChainRow, chain_hash


class SqlAuditRepository(_Repo):
    async def append(self, event: AuditEvent) -> ChainRow:
        if self.conn.dialect.name == "postgresql":
            # Serialise appends per tenant so the chain never forks.
            await self.conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": event.tenant_id})
        last = (
            await self.conn.execute(
                sa.select(audit_logs.c.seq, audit_logs.c.row_hash)
                .where(audit_logs.c.tenant_id == event.tenant_id)
                .order_by(audit_logs.c.seq.desc())
                .limit(1)
            )
        ).first()
        if last is None:
            # No rows: a new chain, or one the retention pruned whole; then it goes on after
            # its checkpoint (docs/adr/0013-operations.md).
            last = (
                await self.conn.execute(
                    sa.select(audit_checkpoints.c.seq, audit_checkpoints.c.row_hash)
                    .where(audit_checkpoints.c.tenant_id == event.tenant_id)
                    .order_by(audit_checkpoints.c.seq.desc())
                    .limit(1)
                )
            ).first()
        seq = (last[0] + 1) if last else 1
        prev = last[1] if last else GENESIS_HASH
        row_hash = chain_hash(prev, event, seq)
        await self.conn.execute(
            audit_logs.insert().values(
                tenant_id=event.tenant_id,
                seq=seq,
                job_id=event.job_id,
                action=event.action.value,
                at=event.at,
                api_key_id=event.api_key_id,
                fingerprint=event.fingerprint,
                details=event.details,
                prev_hash=prev,
                row_hash=row_hash,
            )
        )
        await self.conn.execute(
            tenants.update().where(tenants.c.id == event.tenant_id).values(audit_seq=seq, audit_head=row_hash)
        )
        return ChainRow(seq=seq, event=event, prev_hash=prev, row_hash=row_hash)

    async def head(self, tenant_id: str) -> tuple[int, str | None]:
        row = (
            await self.conn.execute(
                sa.select(tenants.c.audit_seq, tenants.c.audit_head).where(tenants.c.id == tenant_id)
            )
        ).first()
        return (int(row[0]), row[1]) if row else (0, None)

    async def chain(self, tenant_id: str) -> list[ChainRow]:
        rows = await self.conn.execute(
            audit_logs.select().where(audit_logs.c.tenant_id == tenant_id).order_by(audit_logs.c.id)
        )
        return [_chain_row(r._mapping) for r in rows]

    async def job_events(self, tenant_id: str, job_id: str) -> list[ChainRow]:
        rows = await self.conn.execute(
            audit_logs.select()
            .where(audit_logs.c.tenant_id == tenant_id, audit_logs.c.job_id == job_id)
            .order_by(audit_logs.c.id)
        )
        return [_chain_row(r._mapping) for r in rows]

    async def tenant_ids(self) -> list[str]:
        rows = await self.conn.execute(sa.select(audit_logs.c.tenant_id).distinct())
        return sorted(str(r[0]) for r in rows)

    async def tenants_with_rows_before(self, cut: datetime) -> list[str]:
        rows = await self.conn.execute(sa.select(audit_logs.c.tenant_id).where(audit_logs.c.at < cut).distinct())
        return sorted(str(r[0]) for r in rows)

    async def prune_point(self, tenant_id: str, cut: datetime) -> ChainRow | None:
        first_young = (
            await self.conn.execute(
                sa.select(sa.func.min(audit_logs.c.seq)).where(
                    audit_logs.c.tenant_id == tenant_id, audit_logs.c.at >= cut
                )
            )
        ).scalar()
        stmt = audit_logs.select().where(audit_logs.c.tenant_id == tenant_id)
        if first_young is not None:
            stmt = stmt.where(audit_logs.c.seq < first_young)
        row = (await self.conn.execute(stmt.order_by(audit_logs.c.seq.desc()).limit(1))).first()
        return _chain_row(row._mapping) if row else None

    async def prune(self, tenant_id: str, upto_seq: int, cut: datetime) -> int:
        if self.conn.dialect.name == "postgresql":
            # The one way to delete audit rows there (SECURITY DEFINER; it re-checks everything).
            await self.conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": tenant_id})
            deleted = (
                await self.conn.execute(
                    sa.text("SELECT contrackt_audit_prune(CAST(:t AS uuid), :s)"), {"t": tenant_id, "s": upto_seq}
                )
            ).scalar()
            return int(deleted or 0)
        # SQLite: open the gate for this transaction only; the triggers check it row by row.
        await self.conn.execute(audit_prune_gate.insert().values(tenant_id=tenant_id, upto_seq=upto_seq, cut=cut))
        try:
            res = await self.conn.execute(
                audit_logs.delete().where(audit_logs.c.tenant_id == tenant_id, audit_logs.c.seq <= upto_seq)
            )
            await self.conn.execute(
                audit_checkpoints.delete().where(
                    audit_checkpoints.c.tenant_id == tenant_id, audit_checkpoints.c.seq < upto_seq
                )
            )
        finally:
            await self.conn.execute(audit_prune_gate.delete().where(audit_prune_gate.c.tenant_id == tenant_id))
        return int(res.rowcount)

    async def heads(self) -> dict[str, tuple[int, str]]:
        rows = await self.conn.execute(
            sa.select(tenants.c.id, tenants.c.audit_seq, tenants.c.audit_head).where(tenants.c.audit_seq > 0)
        )
        out = {str(r[0]): (int(r[1]), str(r[2])) for r in rows}
        # The service chain has no tenant row to record its head: its last row is its head.
        last = (
            await self.conn.execute(
                sa.select(audit_logs.c.seq, audit_logs.c.row_hash)
                .where(audit_logs.c.tenant_id == SERVICE_CHAIN)
                .order_by(audit_logs.c.seq.desc())
                .limit(1)
            )
        ).first()
        if last is not None:
            out[SERVICE_CHAIN] = (int(last[0]), str(last[1]))
        return out


def _chain_row(m: Any) -> ChainRow:
    ev = AuditEvent(
        tenant_id=str(m["tenant_id"]),
        action=AuditAction(m["action"]),
        at=m["at"],
        job_id=str(m["job_id"]) if m["job_id"] is not None else None,
        api_key_id=str(m["api_key_id"]) if m["api_key_id"] is not None else None,
        fingerprint=m["fingerprint"],
        details=dict(m["details"]),
    )
    return ChainRow(seq=int(m["seq"]), event=ev, prev_hash=m["prev_hash"], row_hash=m["row_hash"])
