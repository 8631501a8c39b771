"""Job state machine."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED)


ALLOWED = {
    JobStatus.PENDING: {JobStatus.PROCESSING, JobStatus.FAILED},
    # processing -> pending: a released or timed-out claim goes back to the queue
    JobStatus.PROCESSING: {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.PENDING},
    JobStatus.COMPLETED: set(),
    JobStatus.FAILED: set(),
}


def can_transition(src: JobStatus, dst: JobStatus) -> bool:
    return dst in ALLOWED[src]


MAX_ATTEMPTS = 3


@dataclass
class Job:
    id: str
    tenant_id: str
    status: JobStatus
    created_at: datetime
    api_key_id: str | None = None
    fingerprint: str | None = None
    # The document's SHA-256, sealed under the tenant's data key (never stored in clear).
    document_digest: bytes | None = None
    key_version: int = 1
    blob_key: str | None = None
    size_bytes: int = 0
    engine: str | None = None
    mode: str = "auto"
    pages_total: int | None = None
    pages_done: int = 0
    attempts: int = 0
    error_code: str | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    lease_until: datetime | None = None
    result_expires_at: datetime | None = None
    result_purged_at: datetime | None = None
    purged_at: datetime | None = None
    delete_on_read: bool = False
    # A job that failed with a retryable code keeps its sealed document until then, so an
    # operator can replay it (docs/adr/0013-operations.md); None: nothing held.
    document_hold_until: datetime | None = None
    # Claims allowed in all (``attempts`` never goes down: it fences claims); a replay raises it.
    attempt_limit: int = MAX_ATTEMPTS
    media_type: str = "application/pdf"  # sniffed from the first bytes at intake
    pages: str | None = None  # the page selection, canonical (``1-3,7``); None: every page


@dataclass(frozen=True)
class JobMessage:
    """What travels on the queue: never the document itself."""

    job_id: str
    tenant_id: str
    blob_key: str
    attempt: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "job_id": self.job_id,
            "tenant_id": self.tenant_id,
            "blob_key": self.blob_key,
            "attempt": self.attempt,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> JobMessage:
        return cls(
            job_id=str(data["job_id"]),
            tenant_id=str(data["tenant_id"]),
            blob_key=str(data["blob_key"]),
            attempt=int(data.get("attempt", 0)),  # type: ignore[call-overload]
        )
