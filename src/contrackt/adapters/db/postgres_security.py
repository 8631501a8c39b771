"""PostgreSQL-only security DDL: row-level security, append-only audit trail.

Filled in by the production-backends work (roles, grants, policies). Kept
idempotent: every statement may run again.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from contrackt.adapters.db.tables import TENANT_TABLES

AUDIT_GUARD = """
CREATE OR REPLACE FUNCTION contrackt_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_logs is append-only';
END $$;
DROP TRIGGER IF EXISTS audit_logs_append_only ON audit_logs;
CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs
  FOR EACH ROW EXECUTE FUNCTION contrackt_audit_append_only();
DROP TRIGGER IF EXISTS audit_logs_no_truncate ON audit_logs;
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
  FOR EACH STATEMENT EXECUTE FUNCTION contrackt_audit_append_only();
"""


def apply(conn: Connection) -> None:
    conn.exec_driver_sql(AUDIT_GUARD)
    tenant_expr = "NULLIF(current_setting('app.current_tenant', true), '')::uuid"
    system_expr = "current_setting('app.system', true) = 'on'"
    for table in TENANT_TABLES:
        column = "id" if table == "tenants" else "tenant_id"
        conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        conn.exec_driver_sql(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        conn.exec_driver_sql(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        conn.exec_driver_sql(
            f"CREATE POLICY tenant_isolation ON {table} USING ({column} = {tenant_expr} OR {system_expr}) "
            f"WITH CHECK ({column} = {tenant_expr} OR {system_expr})"
        )
