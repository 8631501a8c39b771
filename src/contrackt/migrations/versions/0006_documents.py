"""Image inputs and page selections (issue 12): each job's media type and selected pages.

Revision ID: 0006
Revises: 0005

Revision 0001 creates its tables from the current shared definitions, so on a new database
whatever this revision adds may already exist: each step adds only what is missing. Markdown
and searchable PDFs need no schema: they are parts of the stored result object.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NEW_COLUMNS = (
    ("jobs", sa.Column("media_type", sa.String(32), nullable=False, server_default="application/pdf")),
    ("jobs", sa.Column("pages", sa.String(1000), nullable=True)),
)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, column in NEW_COLUMNS:
        if column.name not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, column)


def downgrade() -> None:
    for table, column in NEW_COLUMNS:
        op.drop_column(table, column.name)
