"""PostgreSQL-only security DDL: row-level security, append-only audit trail, grants.

Every statement is idempotent: ``apply`` runs inside migration 0001 and again on
every ``contrackt migrate`` (so a changed policy reaches existing databases);
``grant`` runs from ``postgres_admin.migrate`` once the role names are known.

Design (docs/adr/0002-production-backends.md):

* Each tenant table has RLS ENABLEd and FORCEd (the owner obeys it too) and one
  permissive ``tenant_isolation`` policy (all commands) on
  ``NULLIF(current_setting('app.current_tenant', true), '')::uuid``: no tenant
  set means no rows, in and out.
* Cross-tenant *system* work (``app.system = 'on'``, set by the unit of work for
  ``system=True``) does not get a blanket bypass. It gets one narrow policy per
  table and command that a known system task needs, and nothing else:

  ========== ========= =====================================================
  table      command   system task
  ========== ========= =====================================================
  tenants    SELECT    API-key authentication, ``tenant list``
  api_keys   SELECT    API-key lookup by prefix
  api_keys   UPDATE    ``key revoke KEY_ID`` (the new row must be revoked)
  jobs       SELECT    reconciler ``find_stale``, backpressure count
  outbox     SELECT    outbox relay (``FOR UPDATE SKIP LOCKED``)
  outbox     UPDATE    outbox relay ``mark_sent`` (only sets ``sent_at``)
  audit_logs SELECT    ``audit verify`` (list of tenant ids)
  results    SELECT    results ``purge_expired`` (only expired rows)
  results    DELETE    results ``purge_expired`` (only expired rows)
  webhook_events SELECT webhook dispatcher: which events are due (it claims, reads the
                       endpoint and its sealed secret, and records the outcome in the
                       tenant's own scope)
  ========== ========= =====================================================

  A system transaction can never INSERT into a tenant table, never touch ``tenant_keys``,
  never modify or delete a job, never read a live result, and never read a webhook (its URL
  or sealed secret) or a delivery attempt.

* ``service_keys`` (the receipt-signing key, wrapped by the key provider) belongs to
  no tenant: no RLS; the service role may SELECT and INSERT it, nothing more.
* ``audit_logs`` and ``audit_checkpoints`` are append-only (the service role may SELECT and
  INSERT). The one way to delete from them is ``contrackt_audit_prune`` (SECURITY DEFINER,
  owned by the owner role): old rows of one tenant below a checkpoint, for the retention
  (docs/adr/0013-operations.md).
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from contrackt.adapters.db.tables import TENANT_TABLES

TENANT_EXPR = "NULLIF(current_setting('app.current_tenant', true), '')::uuid"
SYSTEM_EXPR = "(current_setting('app.system', true) = 'on')"

# One statement per entry: asyncpg (through SQLAlchemy) prepares each statement,
# and a prepared statement cannot hold several commands.
AUDIT_GUARD: tuple[str, ...] = (
    # Append-only, for everybody: UPDATE and TRUNCATE always fail; DELETE fails unless the
    # transaction-local flag `contrackt.audit_prune` is on, which only contrackt_audit_prune
    # (below) sets. The service role has no DELETE privilege at all, so the flag gives it
    # nothing; the owner role, which has, cannot log in (docs/adr/0013-operations.md).
    """CREATE OR REPLACE FUNCTION contrackt_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('contrackt.audit_prune', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$""",
    "DROP TRIGGER IF EXISTS audit_logs_append_only ON audit_logs",
    """CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs
  FOR EACH ROW EXECUTE FUNCTION contrackt_audit_append_only()""",
    "DROP TRIGGER IF EXISTS audit_logs_no_truncate ON audit_logs",
    """CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
  FOR EACH STATEMENT EXECUTE FUNCTION contrackt_audit_append_only()""",
)

# The retention checkpoints are append-only the same way (revision 0003 creates the table).
CHECKPOINT_GUARD: tuple[str, ...] = (
    "DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints",
    """CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
  FOR EACH ROW EXECUTE FUNCTION contrackt_audit_append_only()""",
    "DROP TRIGGER IF EXISTS audit_checkpoints_no_truncate ON audit_checkpoints",
    """CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION contrackt_audit_append_only()""",
)

DEFAULT_RETENTION_DAYS = 1826
PRUNE_FUNCTION = "contrackt_audit_prune(uuid, bigint)"


def prune_function(retention_days: int) -> str:
    """The only way to delete audit rows: the calling tenant's rows up to ``p_upto``.

    SECURITY DEFINER, owned by the owner role (``grant_statements``), executable by the
    service role. It refuses unless the transaction is scoped to that tenant, a retention
    checkpoint at ``p_upto`` holds that row's hash, and every row up to it is older than
    ``retention_days`` by the database's own clock: the floor is written here by
    ``contrackt migrate`` (CONTRACKT_AUDIT_RETENTION_DAYS), so a compromised service role
    cannot prune younger rows. Older checkpoints of the tenant go with the rows they anchored.
    """
    days = int(retention_days)
    if days < 1:
        raise ValueError("the audit retention must be at least one day")
    # S608: the only interpolated value is an int (checked above), never text.
    return f"""CREATE OR REPLACE FUNCTION contrackt_audit_prune(p_tenant uuid, p_upto bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  v_cut timestamptz := now() - make_interval(days => {days});
  v_hash text;
  v_rows bigint;
BEGIN
  IF p_tenant IS DISTINCT FROM NULLIF(current_setting('app.current_tenant', true), '')::uuid THEN
    RAISE EXCEPTION 'audit pruning: the transaction is not scoped to this tenant';
  END IF;
  SELECT row_hash INTO v_hash FROM public.audit_logs WHERE tenant_id = p_tenant AND seq = p_upto;
  IF v_hash IS NULL THEN
    RAISE EXCEPTION 'audit pruning: no row at seq %', p_upto;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM public.audit_checkpoints
                 WHERE tenant_id = p_tenant AND seq = p_upto AND row_hash = v_hash) THEN
    RAISE EXCEPTION 'audit pruning: no checkpoint at seq %', p_upto;
  END IF;
  IF EXISTS (SELECT 1 FROM public.audit_logs WHERE tenant_id = p_tenant AND seq <= p_upto AND at >= v_cut) THEN
    RAISE EXCEPTION 'audit pruning: rows up to seq % are not all older than {days} days', p_upto;
  END IF;
  PERFORM set_config('contrackt.audit_prune', 'on', true);
  DELETE FROM public.audit_logs WHERE tenant_id = p_tenant AND seq <= p_upto;
  GET DIAGNOSTICS v_rows = ROW_COUNT;
  DELETE FROM public.audit_checkpoints WHERE tenant_id = p_tenant AND seq < p_upto;
  PERFORM set_config('contrackt.audit_prune', '', true);
  RETURN v_rows;
END $$"""  # noqa: S608


# (table, command, USING, WITH CHECK): the narrow system policies described above.
SYSTEM_POLICIES: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("tenants", "SELECT", SYSTEM_EXPR, None),
    ("api_keys", "SELECT", SYSTEM_EXPR, None),
    ("api_keys", "UPDATE", SYSTEM_EXPR, f"{SYSTEM_EXPR} AND revoked_at IS NOT NULL"),
    ("jobs", "SELECT", SYSTEM_EXPR, None),
    ("outbox", "SELECT", SYSTEM_EXPR, None),
    ("outbox", "UPDATE", SYSTEM_EXPR, f"{SYSTEM_EXPR} AND sent_at IS NOT NULL"),
    ("audit_logs", "SELECT", SYSTEM_EXPR, None),
    ("results", "SELECT", f"{SYSTEM_EXPR} AND expires_at <= now()", None),
    ("results", "DELETE", f"{SYSTEM_EXPR} AND expires_at <= now()", None),
    ("webhook_events", "SELECT", SYSTEM_EXPR, None),
)


def tenant_column(table: str) -> str:
    return "id" if table == "tenants" else "tenant_id"


def policy_statements() -> list[str]:
    """The RLS DDL for every tenant table (idempotent)."""
    out: list[str] = []
    for table in TENANT_TABLES:
        column = tenant_column(table)
        out += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
            f"DROP POLICY IF EXISTS tenant_isolation ON {table}",
            f"CREATE POLICY tenant_isolation ON {table} USING ({column} = {TENANT_EXPR}) "
            f"WITH CHECK ({column} = {TENANT_EXPR})",
        ]
        # Drop every older system policy (including the old blanket bypass draft).
        for command in ("select", "insert", "update", "delete"):
            out.append(f"DROP POLICY IF EXISTS system_{command} ON {table}")
    for table, command, using, check in SYSTEM_POLICIES:
        stmt = f"CREATE POLICY system_{command.lower()} ON {table} FOR {command}"
        if using is not None:
            stmt += f" USING ({using})"
        if check is not None:
            stmt += f" WITH CHECK ({check})"
        out.append(stmt)
    return out


# Tenant tables the service may only read and append to.
APPEND_ONLY = ("audit_logs", "audit_checkpoints")


def apply(conn: Connection) -> None:
    """Row-level security and the audit guard (no role names needed)."""
    for stmt in (*AUDIT_GUARD, *policy_statements()):
        conn.exec_driver_sql(stmt)


def retention_statements(retention_days: int) -> list[str]:
    """The checkpoint table's guard and the pruning function (idempotent; revision 0003 and migrate)."""
    return [*CHECKPOINT_GUARD, prune_function(retention_days)]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def grant_statements(service_role: str, owner_role: str, tables: list[str], sequences: list[str]) -> list[str]:
    """Ownership and least-privilege grants (idempotent).

    ``tables``/``sequences``: every table and sequence of the schema (the
    migration may add more than TENANT_TABLES, e.g. alembic_version).
    """
    svc, own = quote_ident(service_role), quote_ident(owner_role)
    out = [f"GRANT USAGE ON SCHEMA public TO {svc}"]
    for table in tables:
        out.append(f"ALTER TABLE public.{quote_ident(table)} OWNER TO {own}")
        out.append(f"REVOKE ALL ON public.{quote_ident(table)} FROM PUBLIC, {svc}")
    for seq in sequences:
        out.append(f"ALTER SEQUENCE public.{quote_ident(seq)} OWNER TO {own}")
        out.append(f"REVOKE ALL ON SEQUENCE public.{quote_ident(seq)} FROM PUBLIC, {svc}")
    for table in TENANT_TABLES:
        if table in APPEND_ONLY:
            out.append(f"GRANT SELECT, INSERT ON {table} TO {svc}")
        else:
            out.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {svc}")
    if "service_keys" in tables:
        # Service-wide, not a tenant's: no RLS. Read by every process, inserted once by the
        # first; never updated or deleted by the service, so a compromised service role can
        # neither swap the receipt-signing key nor destroy it (docs/adr/0009-evidence.md).
        out.append(f"GRANT SELECT, INSERT ON service_keys TO {svc}")
    for seq in sequences:
        out.append(f"GRANT USAGE ON SEQUENCE public.{quote_ident(seq)} TO {svc}")
    out.append(f"ALTER FUNCTION contrackt_audit_append_only() OWNER TO {own}")
    out.append(f"REVOKE ALL ON FUNCTION contrackt_audit_append_only() FROM PUBLIC, {svc}")
    # The pruning path runs as the owner (SECURITY DEFINER); the service may only call it.
    out.append(f"ALTER FUNCTION {PRUNE_FUNCTION} OWNER TO {own}")
    out.append(f"REVOKE ALL ON FUNCTION {PRUNE_FUNCTION} FROM PUBLIC")
    out.append(f"GRANT EXECUTE ON FUNCTION {PRUNE_FUNCTION} TO {svc}")
    return out
