"""Port: repositories and the unit of work (one transaction per request or job step).

A unit of work is opened for one tenant (``tenant_id``) or, for the few
cross-tenant system tasks (API-key lookup, outbox relay, reconciler, audit
verification), with ``system=True``. On PostgreSQL the tenant scope is
enforced by row-level security as well as by the queries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import Protocol

from contrackt.domain.audit import AuditEvent, ChainRow
from contrackt.domain.checkpoints import ChainCut
from contrackt.domain.jobs import Job, JobMessage, JobStatus
from contrackt.domain.tenants import ApiKey, Tenant
from contrackt.ports.webhooks import WebhookDeliveryRepository, WebhookRepository


class TenantRepository(Protocol):
    async def add(self, tenant: Tenant) -> None: ...
    async def get(self, tenant_id: str) -> Tenant | None: ...
    async def list(self) -> list[Tenant]: ...
    async def mark_erased(self, tenant_id: str, at: datetime) -> None: ...
    async def set_limits(self, tenant_id: str, max_inflight: int | None, max_backlog: int | None) -> bool:
        """Fair-share overrides (None: the deployment's default); True if the tenant exists."""
        ...


class TenantKeyRepository(Protocol):
    async def add(self, tenant_id: str, version: int, wrapped: bytes, at: datetime) -> None: ...
    async def get(self, tenant_id: str, version: int) -> bytes | None: ...
    async def current_version(self, tenant_id: str) -> int | None: ...
    async def destroy_all(self, tenant_id: str, at: datetime) -> int: ...


class ApiKeyRepository(Protocol):
    async def add(self, key: ApiKey) -> None: ...
    async def find_by_prefix(self, prefix: str) -> ApiKey | None: ...
    async def active_ids(self, key_ids: Sequence[str]) -> set[str]:
        """System: those of ``key_ids`` that exist and are not revoked."""
        ...

    async def list(self, tenant_id: str) -> list[ApiKey]: ...
    async def revoke(self, key_id: str, at: datetime) -> bool: ...
    async def revoke_all(self, tenant_id: str, at: datetime) -> int: ...


class JobRepository(Protocol):
    async def add(self, job: Job, idempotency_key_hash: str | None = None) -> None: ...
    async def get(self, tenant_id: str, job_id: str) -> Job | None: ...
    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        """System: the jobs among ``job_ids`` that exist, of any tenant (the caller checks ownership)."""
        ...

    async def find_by_idempotency(self, tenant_id: str, key_hash: str) -> Job | None: ...
    async def claim(
        self, job_id: str, now: datetime, lease_until: datetime, *, max_inflight: int | None = None
    ) -> Job | None:
        """-> processing (attempts + 1, leased until ``lease_until``); else None.

        Claimable: a pending job, or a processing one whose lease ended before ``now``
        (its worker died) with attempts left. With ``max_inflight`` (the deployment's
        default; the tenant's own override wins) only while the tenant has fewer jobs
        processing under a live lease; concurrent claims of one tenant are serialised.
        """
        ...

    async def set_progress(self, job_id: str, done: int, total: int) -> None: ...
    async def extend_lease(self, job_id: str, attempt: int, lease_until: datetime) -> bool: ...
    async def finish(
        self,
        job_id: str,
        attempt: int,
        *,
        completed: bool,
        now: datetime,
        error_code: str | None = None,
        error_message: str | None = None,
        result_expires_at: datetime | None = None,
        pages: int | None = None,
        document_hold_until: datetime | None = None,
    ) -> bool:
        """processing -> completed/failed, only for the claim ``attempt``; True if it moved.

        ``document_hold_until``: a failure whose sealed document is kept until then (replay window).
        """
        ...

    async def fail_pending(self, job_id: str, now: datetime, code: str, message: str) -> bool: ...
    async def release(self, job_id: str, attempt: int, *, requeue_after: datetime | None = None) -> bool:
        """processing -> pending (the claim is given back); ``requeue_after`` as in hold_requeue."""
        ...

    async def hold_requeue(self, job_id: str, now: datetime, until: datetime) -> bool:
        """A pending job the reconciler re-enqueues now: not again before ``until``.

        True for exactly one of several racing reconcilers (the one that re-enqueues).
        """
        ...

    async def mark_purged(self, job_id: str, at: datetime) -> bool:
        """The document is gone: set ``purged_at`` (and forget the blob key); True the first time only."""
        ...

    async def expire_result(self, job_id: str, at: datetime) -> bool:
        """Mark the result gone (now, or at its expiry if earlier); True the first time only."""
        ...

    async def replay(self, job_id: str, now: datetime) -> bool:
        """failed -> pending for a replay: only while its document is held (hold after ``now``, not
        purged); the attempts budget grows by MAX_ATTEMPTS (``attempts`` itself never goes down,
        it fences claims). True if this call moved it."""
        ...

    async def end_hold(self, job_id: str, before: datetime | None = None) -> bool:
        """A failed job's document is no longer held for a replay (only a hold ending at or before
        ``before``, when given); True if this call ended it. Comes before destroying the document."""
        ...

    async def find_held(self, before: datetime | None = None, limit: int = 500) -> list[Job]:
        """System: failed jobs whose document is held (only holds ending at or before ``before``)."""
        ...

    async def tenants_finished_before(self, cut: datetime) -> list[str]:
        """System: tenants with jobs that finished before ``cut``."""
        ...

    async def prune_finished(self, tenant_id: str, cut: datetime) -> int:
        """Delete the tenant's jobs that finished before ``cut`` (and outbox rows that old); how many jobs."""
        ...

    async def find_expired_results(self, now: datetime, limit: int = 500) -> list[Job]:
        """System: completed jobs whose result expired and whose expiry is not yet recorded."""
        ...

    async def find_stale(self, pending_before: datetime, lease_before: datetime) -> list[Job]:
        """System: jobs pending since before ``pending_before`` (and not held by hold_requeue
        past ``lease_before``), or processing whose lease ended before ``lease_before``."""
        ...

    async def count_unfinished(self, tenant_id: str | None = None) -> int:
        """Pending + processing jobs: of one tenant, or (system) of all."""
        ...

    async def count_finished_since(self, since: datetime, tenant_id: str | None = None) -> int:
        """Jobs that reached a terminal state at or after ``since``: of one tenant, or (system) of all."""
        ...

    async def list_for_tenant(self, tenant_id: str) -> list[Job]: ...
    async def page(
        self, tenant_id: str, *, status: JobStatus | None, before: tuple[datetime, str] | None, limit: int
    ) -> list[Job]:
        """The tenant's jobs newest first (``created_at``, then ``id``, descending), strictly
        after the position ``before`` (keyset pagination); at most ``limit``."""
        ...


class UsageRepository(Protocol):
    async def add(self, tenant_id: str, day: date, counts: Mapping[str, int]) -> None:
        """Add ``counts`` (metric -> amount) to the tenant's counters of ``day`` (created at 0)."""
        ...

    async def daily(self, tenant_id: str, start: date, end: date) -> list[tuple[date, str, int]]:
        """The tenant's counters of ``start..end`` (inclusive): (day, metric, total)."""
        ...


class AuditRepository(Protocol):
    async def append(self, event: AuditEvent) -> ChainRow: ...
    async def chain(self, tenant_id: str) -> list[ChainRow]: ...
    async def job_events(self, tenant_id: str, job_id: str) -> list[ChainRow]:
        """One job's rows of the tenant's chain, in chain order (an index read, not the whole chain)."""
        ...

    async def head(self, tenant_id: str) -> tuple[int, str | None]:
        """The recorded head of the tenant's chain: (last seq, its row hash)."""
        ...

    async def tenant_ids(self) -> list[str]: ...

    async def tenants_with_rows_before(self, cut: datetime) -> list[str]:
        """System: the chains holding rows older than ``cut``."""
        ...

    async def prune_point(self, tenant_id: str, cut: datetime) -> ChainRow | None:
        """The last row such that it and every row before it are older than ``cut``; None if none is."""
        ...

    async def prune(self, tenant_id: str, upto_seq: int, cut: datetime) -> int:
        """Delete the chain's rows up to ``upto_seq`` (and older checkpoints) through the database's
        narrow pruning path, which needs a checkpoint at ``upto_seq``; the number of rows deleted."""
        ...

    async def heads(self) -> dict[str, tuple[int, str]]:
        """System: every chain's head (seq, row hash), the service chain's included."""
        ...


class CheckpointRepository(Protocol):
    """Signed retention checkpoints (append-only)."""

    async def add(self, cut: ChainCut) -> None: ...
    async def latest(self, tenant_id: str) -> ChainCut | None: ...


class OutboxRepository(Protocol):
    async def add(self, message: JobMessage, at: datetime) -> None: ...
    async def take(self, limit: int) -> list[tuple[int, JobMessage]]: ...
    async def mark_sent(self, ids: list[int], at: datetime) -> None: ...


class UnitOfWork(Protocol):
    tenants: TenantRepository
    tenant_keys: TenantKeyRepository
    api_keys: ApiKeyRepository
    jobs: JobRepository
    audit: AuditRepository
    outbox: OutboxRepository
    webhooks: WebhookRepository
    webhook_deliveries: WebhookDeliveryRepository
    checkpoints: CheckpointRepository
    usage: UsageRepository

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit when the block ended normally, roll back otherwise."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, tenant_id: str | None = None, *, system: bool = False) -> UnitOfWork: ...
