"""Usage counters per tenant and UTC day (table ``usage_daily``), moved by upserts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from contrackt.adapters.db.tables import usage_daily


class SqlUsageRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, tenant_id: str, day: date, counts: Mapping[str, int]) -> None:
        # Rows in a fixed (sorted) order: two transactions that move the same counters lock
        # them in the same order, so they wait for each other instead of deadlocking.
        rows = [
            {"tenant_id": tenant_id, "day": day, "metric": metric, "total": amount}
            for metric, amount in sorted(counts.items())
            if amount
        ]
        if not rows:
            return
        insert = postgresql.insert if self.conn.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(usage_daily).values(rows)
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[usage_daily.c.tenant_id, usage_daily.c.day, usage_daily.c.metric],
                set_={"total": usage_daily.c.total + stmt.excluded.total},
            )
        )

    async def daily(self, tenant_id: str, start: date, end: date) -> list[tuple[date, str, int]]:
        rows = await self.conn.execute(
            sa.select(usage_daily.c.day, usage_daily.c.metric, usage_daily.c.total)
            .where(usage_daily.c.tenant_id == tenant_id, usage_daily.c.day >= start, usage_daily.c.day <= end)
            .order_by(usage_daily.c.day, usage_daily.c.metric)
        )
        return [(r[0], str(r[1]), int(r[2])) for r in rows]
