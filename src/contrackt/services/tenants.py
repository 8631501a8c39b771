"""Tenants and API keys: create, authenticate, list, revoke, erase (crypto-shredding)."""

from __future__ import annotations

from dataclasses import dataclass

from contrackt.domain.audit import AuditAction
from contrackt.domain.errors import InvalidRequest, NotFound, Unauthorized
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import JobStatus
from contrackt.domain.tenants import (
    ApiKey,
    Principal,
    Tenant,
    generate_api_key,
    key_matches,
    split_api_key,
)
from contrackt.ports.blobstore import BlobStore
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWork, UnitOfWorkFactory
from contrackt.ports.results import ResultStore
from contrackt.services import audit, usage
from contrackt.services.keyring import Keyring


@dataclass(frozen=True)
class NewKey:
    tenant_id: str
    key_id: str
    api_key: str  # shown once, never stored


class TenantService:
    def __init__(self, uow: UnitOfWorkFactory, keyring: Keyring, clock: Clock) -> None:
        self.uow = uow
        self.keyring = keyring
        self.clock = clock

    async def create(self, name: str) -> NewKey:
        tenant_id = new_id()
        wrapped_fp = await self.keyring.new_fingerprint_key(tenant_id)
        async with self.uow(tenant_id) as uow:
            await uow.tenants.add(
                Tenant(id=tenant_id, name=name, created_at=self.clock.now(), fingerprint_key_wrapped=wrapped_fp)
            )
            await self.keyring.add_version(uow, tenant_id, 1)
            return await self._new_key(uow, tenant_id)

    async def _new_key(self, uow: UnitOfWork, tenant_id: str) -> NewKey:
        full, prefix, digest = generate_api_key()
        key_id = new_id()
        await uow.api_keys.add(
            ApiKey(id=key_id, tenant_id=tenant_id, prefix=prefix, key_hash=digest, created_at=self.clock.now())
        )
        return NewKey(tenant_id=tenant_id, key_id=key_id, api_key=full)

    async def create_key(self, tenant_id: str) -> NewKey:
        async with self.uow(tenant_id) as uow:
            tenant = await uow.tenants.get(tenant_id)
            if tenant is None or tenant.erased_at is not None:
                raise NotFound("no such tenant")
            return await self._new_key(uow, tenant_id)

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        async with self.uow(tenant_id) as uow:
            return await uow.api_keys.list(tenant_id)

    async def revoke_key(self, key_id: str) -> bool:
        async with self.uow(system=True) as uow:
            return await uow.api_keys.revoke(key_id, self.clock.now())

    async def list(self) -> list[Tenant]:
        async with self.uow(system=True) as uow:
            return await uow.tenants.list()

    async def get(self, tenant_id: str) -> Tenant:
        async with self.uow(tenant_id) as uow:
            tenant = await uow.tenants.get(tenant_id)
        if tenant is None or tenant.erased_at is not None:
            raise NotFound("no such tenant")
        return tenant

    async def set_limits(self, tenant_id: str, *, max_inflight: int | None, max_backlog: int | None) -> Tenant:
        """Set the tenant's fair-share overrides (None: the deployment's default applies).

        ``max_inflight`` is at least 1; ``max_backlog`` 0 refuses every new job (a pause).
        """
        if max_inflight is not None and max_inflight < 1:
            raise InvalidRequest("max_inflight must be at least 1")
        if max_backlog is not None and max_backlog < 0:
            raise InvalidRequest("max_backlog must not be negative")
        async with self.uow(tenant_id) as uow:
            tenant = await uow.tenants.get(tenant_id)
            if tenant is None or tenant.erased_at is not None:
                raise NotFound("no such tenant")
            await uow.tenants.set_limits(tenant_id, max_inflight, max_backlog)
        tenant.max_inflight, tenant.max_backlog = max_inflight, max_backlog
        return tenant

    async def authenticate(self, presented: str | None) -> Principal:
        """Resolve an API key; every failure looks the same to the caller."""
        prefix = split_api_key(presented) if presented else None
        if prefix is None or presented is None:
            raise Unauthorized()
        async with self.uow(system=True) as uow:
            key = await uow.api_keys.find_by_prefix(prefix)
            tenant = await uow.tenants.get(key.tenant_id) if key else None
        if key is None or tenant is None or not key.active or tenant.erased_at is not None:
            raise Unauthorized()
        if not key_matches(presented, key.key_hash):
            raise Unauthorized()
        return Principal(
            tenant_id=key.tenant_id,
            api_key_id=key.id,
            delete_on_read=tenant.delete_on_read,
            rate_limit_extract=tenant.rate_limit_extract,
            rate_limit_status=tenant.rate_limit_status,
            max_inflight=tenant.max_inflight,
            max_backlog=tenant.max_backlog,
        )

    async def erase(self, tenant_id: str, blobs: BlobStore, results: ResultStore) -> dict[str, int]:
        """Crypto-shred a tenant: destroy its keys, delete its blobs and results, revoke its keys."""
        now = self.clock.now()
        async with self.uow(tenant_id) as uow:
            tenant = await uow.tenants.get(tenant_id)
            if tenant is None:
                raise NotFound("no such tenant")
            jobs = await uow.jobs.list_for_tenant(tenant_id)
            destroyed = await uow.tenant_keys.destroy_all(tenant_id, now)
            revoked = await uow.api_keys.revoke_all(tenant_id, now)
            await uow.webhooks.delete_all(tenant_id)  # nothing is sent on an erased tenant's behalf
            await uow.tenants.mark_erased(tenant_id, now)
            failed = 0
            for job in jobs:
                if not JobStatus(job.status).terminal:
                    failed += await uow.jobs.fail_pending(job.id, now, "tenant_erased", "The tenant was erased")
                elif job.document_hold_until is not None:
                    await uow.jobs.end_hold(job.id)  # no replay: its document goes with the others
            await audit.record(uow, self.clock, tenant_id, AuditAction.TENANT_ERASED, what="tenant")
            if failed:
                await usage.count_failed(uow, tenant_id, now, "tenant_erased", failed)
        self.keyring.forget(tenant_id)
        blob_count = 0
        for info in await blobs.list(f"{tenant_id}/"):
            await blobs.delete(info.key)
            blob_count += 1
        for job in jobs:
            await results.delete(tenant_id, job.id)
        return {"keys_destroyed": destroyed, "api_keys_revoked": revoked, "blobs_deleted": blob_count}
