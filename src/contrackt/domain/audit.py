"""Audit events and the per-tenant hash chain (pure)."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

GENESIS_HASH = "0" * 64

# The chain of deployment-wide operations (checkpoint exports): audit rows under this
# tenant id belong to no tenant. No tenant can have it (tenant ids are random v4 UUIDs).
SERVICE_CHAIN = "00000000-0000-0000-0000-000000000000"


class AuditAction(enum.StrEnum):
    RECEIVED = "RECEIVED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    DELIVERED = "DELIVERED"
    PURGED = "PURGED"
    TENANT_ERASED = "TENANT_ERASED"
    # Webhooks: the URL is recorded without its query string; the secret never.
    WEBHOOK_ADDED = "WEBHOOK_ADDED"
    WEBHOOK_REMOVED = "WEBHOOK_REMOVED"
    WEBHOOK_DELIVERED = "WEBHOOK_DELIVERED"
    WEBHOOK_DISABLED = "WEBHOOK_DISABLED"
    # Operations (docs/adr/0013-operations.md)
    HELD = "HELD"  # a job failed with a retryable code: its sealed document is kept for the replay window
    REPLAYED = "REPLAYED"  # an operator put a dead-lettered job back into the queue
    DROPPED = "DROPPED"  # an operator removed a dead letter (and destroyed the document it held)
    RETENTION = "RETENTION"  # rows and jobs past the retention period pruned, below a signed checkpoint
    CHECKPOINT = "CHECKPOINT"  # signed chain heads exported to the external sink (service chain)


TERMINAL_ACTIONS = frozenset({AuditAction.COMPLETED, AuditAction.FAILED})

# Only these keys may appear in ``details``: the audit trail must never hold
# personal data (no file names, no text, no IP addresses).
ALLOWED_DETAIL_KEYS = frozenset(
    {
        "page_count",
        "duration_ms",
        "result_sha256",
        "outcome",
        "key_version",
        "what",
        "attempt",
        "engine",
        "size_bytes",
        "reason",
        "webhook_id",
        "url",
        "event",
        "status_code",
        # operations: when a held document goes, the chain position of a cut or an export,
        # how many rows / jobs / tenants an operation covered, which exported object
        "until",
        "seq",
        "row_hash",
        "rows",
        "jobs",
        "tenants",
        "checkpoint",
        "media_type",  # RECEIVED: application/pdf, image/jpeg, image/png or image/tiff
        "parts",  # COMPLETED: the forms the result was stored in, e.g. json+text+markdown+pdf
    }
)


@dataclass
class AuditEvent:
    tenant_id: str
    action: AuditAction
    at: datetime
    job_id: str | None = None
    api_key_id: str | None = None
    fingerprint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.details) - ALLOWED_DETAIL_KEYS
        if unknown:
            raise ValueError(f"audit details not on the allow-list: {sorted(unknown)}")


def canonical(event: AuditEvent, seq: int) -> bytes:
    """The bytes that a row's hash covers (stable across databases)."""
    body = {
        "seq": seq,
        "tenant_id": event.tenant_id,
        "job_id": event.job_id,
        "action": event.action.value,
        "at": event.at.isoformat(timespec="microseconds"),
        "api_key_id": event.api_key_id,
        "fingerprint": event.fingerprint,
        "details": event.details,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def chain_hash(prev_hash: str, event: AuditEvent, seq: int) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(event, seq)).hexdigest()


@dataclass
class ChainRow:
    seq: int
    event: AuditEvent
    prev_hash: str
    row_hash: str


def verify_chain(
    rows: list[ChainRow],
    head: tuple[int, str | None] | None = None,
    start: tuple[int, str] | None = None,
) -> list[str]:
    """Problems found in one tenant's chain, in order; empty when intact.

    Detects changed rows (hash mismatch), removed rows (gap in ``seq`` or
    broken link) and reordered rows (``seq`` not increasing); with the recorded
    ``head`` (last seq, its hash) also rows removed from the end of the chain.
    ``start``: (seq, row hash) of a checkpoint below which the rows were pruned; the
    chain then begins right after it and links to its hash instead of the genesis hash.
    """
    problems: list[str] = []
    prev = GENESIS_HASH
    expected_seq = 1
    if start is not None:
        expected_seq, prev = start[0] + 1, start[1]
        below = [row for row in rows if row.seq <= start[0]]
        if below:
            problems.append(
                f"{len(below)} rows at or below the retention checkpoint (seq {start[0]}) are still present"
            )
            rows = [row for row in rows if row.seq > start[0]]
    for row in rows:
        if row.seq != expected_seq:
            problems.append(f"seq {row.seq}: expected seq {expected_seq} (row removed or reordered)")
        if row.prev_hash != prev:
            problems.append(f"seq {row.seq}: prev_hash does not link to the previous row")
        if chain_hash(row.prev_hash, row.event, row.seq) != row.row_hash:
            problems.append(f"seq {row.seq}: row content does not match its hash (row changed)")
        prev = row.row_hash
        expected_seq = row.seq + 1
    if head is not None and head[0] > 0:
        last_seq, last_hash = chain_end(rows, start)
        if last_seq != head[0] or last_hash != head[1]:
            problems.append(
                f"chain ends at seq {last_seq} but its recorded head is seq {head[0]} (rows removed at the end)"
            )
    return problems


def chain_end(rows: list[ChainRow], start: tuple[int, str] | None = None) -> tuple[int, str | None]:
    """(seq, row hash) where the chain ends: its last row, else the checkpoint it starts after."""
    if rows:
        return rows[-1].seq, rows[-1].row_hash
    return start if start is not None else (0, None)
