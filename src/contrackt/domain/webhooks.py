"""Webhooks (pure): endpoints, events, Standard Webhooks signatures, the retry schedule.

Deliveries follow the Standard Webhooks scheme: headers ``webhook-id`` (the same on every retry
of one event, so receivers can drop duplicates), ``webhook-timestamp`` (seconds since the epoch,
of this attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256(secret, "id.timestamp.body")>``,
where the secret is the base64 part of ``whsec_…`` decoded to bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

JOB_COMPLETED = "job.completed"
JOB_FAILED = "job.failed"
EVENT_TYPES = (JOB_COMPLETED, JOB_FAILED)

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
SECRET_BYTES = 32

# What a delivery reads of the receiver's answer, at most: the status line and headers, then this
# many bytes of body (discarded); the rest is never read.
MAX_RESPONSE_BYTES = 4096

# Attempts kept per webhook for GET /v1/webhooks/{id}/deliveries (older ones are deleted).
ATTEMPTS_KEPT = 100


@dataclass
class Webhook:
    id: str
    tenant_id: str
    url: str
    events: list[str]
    secret_sealed: bytes  # the whsec_ secret's bytes, sealed under the tenant's data key
    created_at: datetime
    disabled_at: datetime | None = None
    disabled_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


@dataclass
class WebhookEvent:
    """One event for one webhook, waiting in the outbox until delivered or given up."""

    id: str  # the webhook-id header: the same on every attempt
    tenant_id: str
    webhook_id: str
    job_id: str
    type: str
    body: str  # the exact JSON sent, identical on every attempt
    created_at: datetime
    next_attempt_at: datetime
    attempts: int = 0


@dataclass
class DeliveryAttempt:
    tenant_id: str
    webhook_id: str
    event_id: str
    event_type: str
    job_id: str
    attempt: int
    at: datetime
    duration_ms: int
    outcome: str  # delivered | retrying | failed
    status_code: int | None = None
    error: str | None = None  # the error class when no HTTP status came back (timeout, connect_error, ...)


@dataclass(frozen=True)
class SendOutcome:
    """What one HTTP attempt gave: a status code, or an error class; never the response body."""

    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        return f"HTTP {self.status_code}" if self.status_code is not None else (self.error or "error")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, for up to ``window`` after the event was created."""

    base_seconds: float = 5.0
    max_delay_seconds: float = 7200.0
    window_seconds: float = 86400.0

    def delay(self, attempt: int, jitter: float) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1-based); ``jitter`` in [0, 1).

        Nominal ``base * 2**(attempt-1)`` capped at ``max_delay``; the wait is between half of
        it and all of it, so receivers that failed together are not retried in lockstep.
        """
        nominal = min(self.max_delay_seconds, self.base_seconds * 2.0 ** min(attempt - 1, 62))
        return timedelta(seconds=nominal * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0)))

    def next_attempt(self, created_at: datetime, now: datetime, attempt: int, jitter: float) -> datetime | None:
        """When to try again after failed attempt ``attempt`` at ``now``; None once the window is spent.

        The last retry falls on the end of the window itself, so an endpoint gets the whole window.
        """
        deadline = created_at + timedelta(seconds=self.window_seconds)
        if now >= deadline:
            return None
        return min(now + self.delay(attempt, jitter), deadline)


def new_secret() -> tuple[str, bytes]:
    """A new signing secret: the ``whsec_…`` text shown once, and its bytes (what is kept, sealed)."""
    raw = secrets.token_bytes(SECRET_BYTES)
    return secret_text(raw), raw


def secret_text(raw: bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(raw).decode()


def sign(secret: bytes, msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    mac = hmac.new(secret, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def delivery_headers(secret: bytes, msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def new_event_id() -> str:
    return "msg_" + secrets.token_hex(16)


def job_links(job_id: str) -> dict[str, str]:
    """The job's API paths (the same links POST /v1/extract answers with)."""
    base = f"/v1/jobs/{job_id}"
    return {"self": base, "result": f"{base}/result", "events": f"{base}/events"}


def event_body(event_type: str, at: datetime, job_id: str, status: str, error: dict[str, str] | None) -> str:
    """The JSON body of an event: type, timestamp, and the job's id, status, links and error.

    Never any document data: no text, no file name, no digest.
    """
    data: dict[str, Any] = {"job_id": job_id, "status": status, "links": job_links(job_id)}
    if error is not None:
        data["error"] = error
    stamp = at.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return json.dumps({"type": event_type, "timestamp": stamp, "data": data}, separators=(",", ":"))
