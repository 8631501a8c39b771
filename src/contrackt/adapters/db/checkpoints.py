"""SQL repository of the signed retention checkpoints (append-only, like the audit trail)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from contrackt.adapters.db.tables import audit_checkpoints
from contrackt.domain.checkpoints import ChainCut


class SqlCheckpointRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, cut: ChainCut) -> None:
        await self.conn.execute(
            audit_checkpoints.insert().values(
                tenant_id=cut.tenant_id,
                seq=cut.seq,
                row_hash=cut.row_hash,
                row_at=cut.row_at,
                cut=cut.cut,
                made_at=cut.made_at,
                key_id=cut.key_id,
                signature=cut.signature,
            )
        )

    async def latest(self, tenant_id: str) -> ChainCut | None:
        row = (
            await self.conn.execute(
                audit_checkpoints.select()
                .where(audit_checkpoints.c.tenant_id == tenant_id)
                .order_by(audit_checkpoints.c.seq.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        m = row._mapping
        return ChainCut(
            tenant_id=str(m["tenant_id"]),
            seq=int(m["seq"]),
            row_hash=m["row_hash"],
            row_at=m["row_at"],
            cut=m["cut"],
            made_at=m["made_at"],
            key_id=m["key_id"],
            signature=m["signature"],
        )
