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
    sa.Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
    sa.Index("ix_jobs_status", "status"),
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

# Tables whose rows belong to one tenant (row-level security on PostgreSQL).
TENANT_TABLES = ("tenants", "tenant_keys", "api_keys", "jobs", "audit_logs", "outbox", "results")
