"""Retention checkpoints and dead-letter operations (issue 11).

Revision ID: 0003
Revises: 0002

Revision 0001 creates its tables from the current shared definitions, so on a new database
whatever this revision adds may already exist: each step adds only what is missing.

* ``jobs.document_hold_until`` / ``jobs.attempt_limit``: a retryable failure's document kept
  for a replay, and the replay's new attempts budget; indexes for the hold and the cut.
* ``audit_checkpoints``: signed chain positions at each retention cut (append-only).
* The narrow pruning path (docs/adr/0013-operations.md). PostgreSQL: the append-only trigger
  lets a DELETE through only under a transaction-local flag that only the SECURITY DEFINER
  function ``contrackt_audit_prune`` sets (``contrackt migrate`` then re-creates it with the
  configured retention floor and grants the service role EXECUTE). SQLite: the delete
  triggers let a row through only while a row of ``audit_prune_gate`` covers it, and a gate
  row can only be written at a checkpoint that holds the hash of the row it names.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from contrackt.adapters.db.tables import UTCDateTime, audit_checkpoints, audit_prune_gate

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NEW_COLUMNS = (
    ("jobs", sa.Column("document_hold_until", UTCDateTime, nullable=True)),
    ("jobs", sa.Column("attempt_limit", sa.Integer, nullable=True)),
)
NEW_INDEXES = (
    ("jobs", "ix_jobs_hold", ["document_hold_until"]),
    ("jobs", "ix_jobs_completed", ["completed_at"]),
    ("audit_logs", "ix_audit_at", ["at"]),
)

# A delete passes only rows that a gate row of the same tenant covers (seq and time).
_GATED = """NOT EXISTS (SELECT 1 FROM audit_prune_gate g
                     WHERE g.tenant_id = OLD.tenant_id AND OLD.seq <= g.upto_seq AND OLD.at < g.cut)"""

SQLITE_GUARDS = (
    "DROP TRIGGER IF EXISTS audit_logs_no_delete",
    f"""CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs WHEN {_GATED}
       BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
       BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
       WHEN NOT EXISTS (SELECT 1 FROM audit_prune_gate g WHERE g.tenant_id = OLD.tenant_id AND OLD.seq < g.upto_seq)
       BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END""",
    # A gate is opened only at a checkpoint holding the hash of the row it names.
    """CREATE TRIGGER IF NOT EXISTS audit_prune_gate_needs_checkpoint BEFORE INSERT ON audit_prune_gate
       WHEN NOT EXISTS (SELECT 1 FROM audit_checkpoints c JOIN audit_logs a
                          ON a.tenant_id = c.tenant_id AND a.seq = c.seq AND a.row_hash = c.row_hash
                        WHERE c.tenant_id = NEW.tenant_id AND c.seq = NEW.upto_seq)
       BEGIN SELECT RAISE(ABORT, 'audit pruning: no checkpoint at the cut'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_prune_gate_no_update BEFORE UPDATE ON audit_prune_gate
       BEGIN SELECT RAISE(ABORT, 'audit_prune_gate rows cannot change'); END""",
)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table, column in NEW_COLUMNS:
        if column.name not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, column)
    for table, name, columns in NEW_INDEXES:
        if name not in {i["name"] for i in inspector.get_indexes(table)}:
            op.create_index(name, table, columns)
    if not inspector.has_table("audit_checkpoints"):
        audit_checkpoints.create(bind=bind)
    if bind.dialect.name == "sqlite":
        audit_prune_gate.create(bind=bind, checkfirst=True)
        for ddl in SQLITE_GUARDS:
            op.execute(ddl)
    elif bind.dialect.name == "postgresql":
        from contrackt.adapters.db.postgres_security import (
            AUDIT_GUARD,
            DEFAULT_RETENTION_DAYS,
            retention_statements,
        )

        for ddl in (*AUDIT_GUARD, *retention_statements(DEFAULT_RETENTION_DAYS)):
            bind.exec_driver_sql(ddl)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in (
            "audit_checkpoints_no_update",
            "audit_checkpoints_no_delete",
            "audit_prune_gate_needs_checkpoint",
            "audit_prune_gate_no_update",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TRIGGER IF EXISTS audit_logs_no_delete")
        op.execute(
            """CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs
               BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only'); END"""
        )
        op.drop_table("audit_prune_gate")
    elif bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS contrackt_audit_prune(uuid, bigint)")
    op.drop_table("audit_checkpoints")
    for table, name, _columns in NEW_INDEXES:
        op.drop_index(name, table_name=table)
    for table, column in NEW_COLUMNS:
        op.drop_column(table, column.name)
