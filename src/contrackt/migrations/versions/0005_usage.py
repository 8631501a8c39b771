"""Job listing and usage per day (issue 12): table ``usage_daily``, index for listing by status.

Revision ID: 0005
Revises: 0004

Revision 0001 creates its tables from the current shared definitions, so on a new database
whatever this revision adds may already exist: each step adds only what is missing.

An existing database gets its counters back-filled from the jobs it still holds: jobs by
outcome on the day they finished, and the pages of completed jobs under the source
``unknown`` (which pages came from the text layer and which from OCR was never stored).
On PostgreSQL this runs with the migration's admin credentials; an admin subject to
row-level security (not a superuser) sees no rows and back-fills nothing.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

import sqlalchemy as sa
from alembic import op

from contrackt.adapters.db.tables import jobs, usage_daily

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEX = "ix_jobs_tenant_status_created"


def _finished_day(dialect: str) -> sa.ColumnElement[object]:
    if dialect == "postgresql":
        return sa.cast(sa.func.timezone("UTC", jobs.c.completed_at), sa.Date)
    return sa.func.date(jobs.c.completed_at)  # SQLite keeps UTC as text: "YYYY-MM-DD ..."


def _backfill(bind: sa.Connection) -> None:
    day = _finished_day(bind.dialect.name).label("day")
    rows = bind.execute(
        sa.select(
            jobs.c.tenant_id,
            day,
            jobs.c.status,
            jobs.c.error_code,
            sa.func.count().label("n"),
            sa.func.coalesce(sa.func.sum(jobs.c.pages_total), 0).label("pages"),
        )
        .where(jobs.c.status.in_(["completed", "failed"]), jobs.c.completed_at.is_not(None))
        .group_by(jobs.c.tenant_id, day, jobs.c.status, jobs.c.error_code)
    )
    totals: dict[tuple[str, date, str], int] = defaultdict(int)
    for tenant_id, finished, status, code, n, pages in rows:
        when = finished if isinstance(finished, date) else date.fromisoformat(str(finished))
        if status == "completed":
            totals[(str(tenant_id), when, "jobs.completed")] += int(n)
            totals[(str(tenant_id), when, "pages.unknown")] += int(pages)
        else:
            totals[(str(tenant_id), when, f"jobs.failed.{code or 'unknown'}")] += int(n)
    values = [{"tenant_id": t, "day": d, "metric": m, "total": n} for (t, d, m), n in sorted(totals.items()) if n]
    if values:
        bind.execute(usage_daily.insert(), values)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if not inspector.has_table("usage_daily"):
        usage_daily.create(bind=bind)
        _backfill(bind)
    if INDEX not in {ix["name"] for ix in inspector.get_indexes("jobs")}:
        op.create_index(INDEX, "jobs", ["tenant_id", "status", "created_at"])
    if bind.dialect.name == "postgresql":
        from contrackt.adapters.db.postgres_security import apply as apply_security

        apply_security(bind)  # the new tenant table gets its row-level security at once


def downgrade() -> None:
    op.drop_index(INDEX, table_name="jobs")
    op.drop_table("usage_daily")
