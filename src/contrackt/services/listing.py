"""GET /v1/jobs: a tenant's own jobs, newest first, in pages with an opaque, signed cursor.

Pagination is by keyset on (``created_at``, ``id``), both descending: a page starts strictly
after the last job of the previous one, so jobs submitted meanwhile never shift a page, and
no job is listed twice. The cursor is ``base64url(JSON position) "." base64url(tag)``, where
the tag is an HMAC-SHA256 (first 16 bytes) under a key derived from the tenant's fingerprint
key: a cursor that was altered, or that another tenant made, fails its check (422
``invalid_cursor``). It carries nothing but a position in the tenant's own list and the
status filter it was made for. The query is scoped to the tenant as well (and, on
PostgreSQL, by row-level security), so even a valid cursor cannot reach another tenant's rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from contrackt.domain.errors import InvalidCursor, InvalidRequest
from contrackt.domain.ids import parse_id
from contrackt.domain.jobs import Job, JobStatus
from contrackt.domain.tenants import Principal
from contrackt.ports.repositories import UnitOfWorkFactory
from contrackt.services.keyring import Keyring

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
TAG_BYTES = 16
MAX_CURSOR_CHARS = 512
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR_LABEL = b"contrackt/jobs-cursor/v1"


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _micros(at: datetime) -> int:
    delta = at.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_cursor(key: bytes, job: Job, status: str | None) -> str:
    """The cursor of the page that follows ``job`` (the last one listed)."""
    position = json.dumps({"t": _micros(job.created_at), "i": job.id, "s": status}, separators=(",", ":")).encode()
    tag = hmac.new(key, position, hashlib.sha256).digest()[:TAG_BYTES]
    return f"{_b64(position)}.{_b64(tag)}"


def decode_cursor(key: bytes, cursor: str, status: str | None) -> tuple[datetime, str]:
    """The position a cursor names; ``InvalidCursor`` if it was not made by ``encode_cursor``
    with this key for this ``status`` filter."""
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        body, tag = cursor.split(".")
        position, presented = _unb64(body), _unb64(tag)
        if _b64(position) != body or _b64(presented) != tag:
            raise ValueError("not the canonical encoding")  # e.g. altered padding bits
        if not hmac.compare_digest(hmac.new(key, position, hashlib.sha256).digest()[:TAG_BYTES], presented):
            raise ValueError("bad tag")
        fields = json.loads(position)
        at = _EPOCH + timedelta(microseconds=int(fields["t"]))
        job_id = parse_id(str(fields["i"]))
    except (ValueError, KeyError, TypeError, OverflowError, binascii.Error):
        raise InvalidCursor("The cursor is not one this API gave for this listing") from None
    if job_id is None:
        raise InvalidCursor("The cursor is not one this API gave for this listing")
    if fields.get("s") != status:
        raise InvalidCursor("The cursor was made for another status filter; keep the same 'status'")
    return at, job_id


class JobListing:
    def __init__(self, uow: UnitOfWorkFactory, keyring: Keyring) -> None:
        self.uow = uow
        self.keyring = keyring

    async def _cursor_key(self, tenant_id: str) -> bytes:
        # A key of its own, derived from the tenant's fingerprint key (the same in every API
        # replica, gone with the tenant's erasure), so cursors never reuse it for another purpose.
        return hmac.new(await self.keyring.fingerprint_key(tenant_id), _CURSOR_LABEL, hashlib.sha256).digest()

    async def page(
        self, principal: Principal, *, status: str | None = None, limit: int = DEFAULT_LIMIT, cursor: str | None = None
    ) -> JobPage:
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
        try:
            wanted = JobStatus(status) if status is not None else None
        except ValueError:
            raise InvalidRequest(f"status must be one of {', '.join(s.value for s in JobStatus)}") from None
        key = await self._cursor_key(principal.tenant_id)
        before = decode_cursor(key, cursor, status) if cursor else None
        async with self.uow(principal.tenant_id) as uow:
            # One more than asked: whether another page follows, without a count query.
            rows = await uow.jobs.page(principal.tenant_id, status=wanted, before=before, limit=limit + 1)
        jobs = [j for j in rows if j.tenant_id == principal.tenant_id][:limit]
        more = len(rows) > limit
        return JobPage(jobs, encode_cursor(key, jobs[-1], status) if more and jobs else None)
