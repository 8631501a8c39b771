"""Initial schema: tenants, keys, API keys, jobs, audit_logs (append-only), outbox, results.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from contrackt.adapters.db.tables import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SQLITE_AUDIT_GUARDS = [
    """CREATE TRIGGER IF NOT EXISTS audit_logs_no_update BEFORE UPDATE ON audit_logs
       BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_logs_no_delete BEFORE DELETE ON audit_logs
       BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only'); END""",
]


def upgrade() -> None:
    bind = op.get_bind()
    # The first revision creates the tables from the shared definitions; later
    # revisions are explicit operations.
    metadata.create_all(bind=bind, checkfirst=True)
    if bind.dialect.name == "sqlite":
        for ddl in SQLITE_AUDIT_GUARDS:
            op.execute(ddl)
    elif bind.dialect.name == "postgresql":
        from contrackt.adapters.db.postgres_security import apply as apply_security

        apply_security(bind)


def downgrade() -> None:
    metadata.drop_all(bind=op.get_bind())
