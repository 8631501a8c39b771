"""Table definitions (SQLAlchemy Core), shared by the repositories and the migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stored: datetime = value
        if stored.tzinfo is None:
            return stored.replace(tzinfo=UTC)
        return stored.astimezone(UTC)


metadata = sa.MetaData()
UUID = sa.Uuid(as_uuid=False)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("fingerprint_key_wrapped", sa.LargeBinary, nullable=True),
    sa.Column("delete_on_read", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("rate_limit_extract", sa.String(32), nullable=True),
    sa.Column("rate_limit_status", sa.String(32), nullable=True),
    sa.Column("erased_at", UTCDateTime, nullable=True),
    # The head of the tenant's audit chain, moved in the same transaction as each append:
    # deleting the newest audit rows then no longer goes unnoticed by `audit verify`.
    sa.Column("audit_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("audit_head", sa.String(64), nullable=True),
    # Fair-share overrides (NULL: the deployment's CONTRACKT_TENANT_MAX_INFLIGHT / _MAX_BACKLOG).
    sa.Column("max_inflight", sa.Integer, nullable=True),
    sa.Column("max_backlog", sa.Integer, nullable=True),
)

tenant_keys = sa.Table(
    "tenant_keys",
    metadata,
    sa.Column("tenant_id", UUID, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=True),  # NULL once destroyed
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("destroyed_at", UTCDateTime, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("tenant_id", UUID, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("prefix", sa.String(32), nullable=False, unique=True),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("tenant_id", UUID, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("api_key_id", UUID, nullable=True),
    sa.Column("idempotency_key_hash", sa.String(64), nullable=True),
    sa.Column("fingerprint", sa.String(64), nullable=True),  # HMAC, never the plain SHA-256
    # The document's SHA-256, sealed under the tenant's key (purpose "digest"): the receipt and an
    # idempotent replay can tell it to the tenant; nobody without the tenant's key can read it.
    sa.Column("document_digest", sa.LargeBinary, nullable=True),
    sa.Column("key_version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("blob_key", sa.String(300), nullable=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("engine", sa.String(32), nullable=True),
    sa.Column("mode", sa.String(8), nullable=False, server_default="auto"),
    sa.Column("delete_on_read", sa.Boolean, nullable=False, server_default=sa.false()),
    # what the document is (sniffed from its first bytes) and the pages asked for (canonical, or NULL: all)
    sa.Column("media_type", sa.String(32), nullable=False, server_default="application/pdf"),
    sa.Column("pages", sa.String(1000), nullable=True),
    sa.Column("pages_total", sa.Integer, nullable=True),
    sa.Column("pages_done", sa.Integer, nullable=False, server_default="0"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("error_message", sa.String(500), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("completed_at", UTCDateTime, nullable=True),
    # processing: the claim's end (renewed by heartbeats). pending: the earliest time the
    # reconciler may enqueue it again (NULL: as soon as it is stale).
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("result_expires_at", UTCDateTime, nullable=True),
    sa.Column("result_purged_at", UTCDateTime, nullable=True),
    sa.Column("purged_at", UTCDateTime, nullable=True),
    # Operations (revision 0003): a retryable failure's sealed document kept until then for a
    # replay; the claims allowed in all (NULL: MAX_ATTEMPTS; a replay raises it).
    sa.Column("document_hold_until", UTCDateTime, nullable=True),
    sa.Column("attempt_limit", sa.Integer, nullable=True),
    sa.Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
    sa.Index("ix_jobs_status", "status"),
    sa.Index("ix_jobs_hold", "document_hold_until"),
    sa.Index("ix_jobs_completed", "completed_at"),
    # GET /v1/jobs?status=: a tenant's jobs of one status, newest first (revision 0005)
    sa.Index("ix_jobs_tenant_status_created", "tenant_id", "status", "created_at"),
    sa.UniqueConstraint("tenant_id", "idempotency_key_hash", name="uq_jobs_idempotency"),
)

audit_logs = sa.Table(
    "audit_logs",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", UUID, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("job_id", UUID, nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("api_key_id", UUID, nullable=True),
    sa.Column("fingerprint", sa.String(64), nullable=True),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.UniqueConstraint("tenant_id", "seq", name="uq_audit_chain"),
    sa.Index("ix_audit_job", "job_id"),
    sa.Index("ix_audit_at", "at"),  # the retention cut (revision 0003)
)

# Signed retention checkpoints (revision 0003): the chain position at each cut, below which a
# tenant's audit rows were pruned. Append-only like the trail; only the pruning path deletes
# the older ones of a tenant. `audit verify` starts each chain after its newest one.
audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("tenant_id", UUID, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.Column("row_at", UTCDateTime, nullable=False),
    sa.Column("cut", UTCDateTime, nullable=False),
    sa.Column("made_at", UTCDateTime, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", UUID, nullable=False),
    sa.Column("job_id", UUID, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.Index("ix_outbox_unsent", "sent_at", "id"),
)

results = sa.Table(
    "results",
    metadata,
    sa.Column("job_id", UUID, primary_key=True),
    sa.Column("tenant_id", UUID, nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_results_expiry", "expires_at"),
)

# What each tenant used, per UTC day (revision 0005): counters moved in the same transaction
# that makes a job terminal, so they outlive results, documents and pruned job rows. Metrics:
# "pages.<source>" (pages of completed jobs), "jobs.completed", "jobs.failed.<error code>".
usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("tenant_id", UUID, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("metric", sa.String(80), primary_key=True),
    sa.Column("total", sa.BigInteger, nullable=False),
)

# Service-wide keys that every replica shares (the receipt-signing key), each private key
# wrapped by the key provider (KMS, Vault or the local master key). Not a tenant table.
service_keys = sa.Table(
    "service_keys",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("algorithm", sa.String(32), nullable=False),
    sa.Column("wrapped_private", sa.LargeBinary, nullable=False),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Webhook endpoints (issue 12). The signing secret is kept only sealed under the tenant's data
# key (purpose "webhook_secret"): gone with the tenant's keys.
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("tenant_id", UUID, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("events", sa.JSON, nullable=False),
    sa.Column("secret_sealed", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("disabled_at", UTCDateTime, nullable=True),
    sa.Column("disabled_reason", sa.String(300), nullable=True),
)

# The webhook outbox: one row per (event, endpoint), written in the transaction that finishes the
# job, deleted once delivered or given up. ``next_attempt_at`` doubles as the claim: a dispatcher
# moves it forward (by its timeout) before it sends, so a crashed dispatcher's event comes back.
webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # the webhook-id header
    sa.Column("tenant_id", UUID, nullable=False),
    sa.Column("webhook_id", UUID, nullable=False),
    sa.Column("job_id", UUID, nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_webhook_events_due", "next_attempt_at"),
    sa.UniqueConstraint("webhook_id", "job_id", "type", name="uq_webhook_events_once"),
)

# Recent delivery attempts (no response bodies), the newest ATTEMPTS_KEPT per webhook.
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", UUID, nullable=False),
    sa.Column("webhook_id", UUID, nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("job_id", UUID, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.String(64), nullable=True),
    sa.Index("ix_webhook_attempts_recent", "webhook_id", "id"),
)

# SQLite only (revision 0003), outside `metadata`: the pruning path's transaction-local permission.
# A row here lets the delete trigger pass rows of one tenant up to `upto_seq` and older than
# `cut`; the retention code inserts it and deletes it again inside one transaction.
audit_prune_gate = sa.Table(
    "audit_prune_gate",
    sa.MetaData(),
    sa.Column("tenant_id", UUID, primary_key=True),
    sa.Column("upto_seq", sa.BigInteger, nullable=False),
    sa.Column("cut", UTCDateTime, nullable=False),
)

# Tables whose rows belong to one tenant (row-level security on PostgreSQL).
TENANT_TABLES = (
    "tenants",
    "tenant_keys",
    "api_keys",
    "jobs",
    "audit_logs",
    "outbox",
    "results",
    "webhooks",
    "webhook_events",
    "webhook_attempts",
    "audit_checkpoints",
    "usage_daily",
)
