"""Webhooks and their deliveries (issue 12).

Revision ID: 0004
Revises: 0003

Revision 0001 creates its tables from the current shared definitions, so on a new database
whatever this revision adds may already exist: each step adds only what is missing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from contrackt.adapters.db.tables import webhook_attempts, webhook_events, webhooks

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NEW_TABLES = (webhooks, webhook_events, webhook_attempts)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table in NEW_TABLES:
        if not inspector.has_table(table.name):
            table.create(bind=bind)
    if bind.dialect.name == "postgresql":
        # Row-level security and the dispatcher's narrow policy on the new tenant tables
        # (idempotent; `contrackt migrate` applies them again, with the grants, afterwards).
        from contrackt.adapters.db.postgres_security import apply as apply_security

        apply_security(bind)


def downgrade() -> None:
    for table in reversed(NEW_TABLES):
        op.drop_table(table.name)
