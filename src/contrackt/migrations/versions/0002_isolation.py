"""Isolation: sealed document digest, per-tenant fair-share overrides, shared service keys.

Revision ID: 0002
Revises: 0001

Revision 0001 creates its tables from the current shared definitions, so on a new
database everything below already exists; each step here only adds what is missing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from contrackt.adapters.db.tables import service_keys

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEW_COLUMNS = (
    ("jobs", sa.Column("document_digest", sa.LargeBinary, nullable=True)),
    ("tenants", sa.Column("max_inflight", sa.Integer, nullable=True)),
    ("tenants", sa.Column("max_backlog", sa.Integer, nullable=True)),
)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table, column in NEW_COLUMNS:
        if column.name not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, column)
    if not inspector.has_table("service_keys"):
        service_keys.create(bind=bind)


def downgrade() -> None:
    op.drop_table("service_keys")
    for table, column in NEW_COLUMNS:
        op.drop_column(table, column.name)
