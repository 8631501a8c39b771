"""Image inputs, page ranges and output formats (issue 12).

Revision ID: 0006
Revises: 0005

Revision 0001 creates its tables from the current shared definitions, so on a new database
whatever this revision adds may already exist: each step adds only what is missing.
"""

from __future__ import annotations

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: reserved so that parallel work keeps one chain of revisions."""


def downgrade() -> None:
    """Nothing yet."""
