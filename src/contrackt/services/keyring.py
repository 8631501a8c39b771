"""Tenant keys: created, wrapped by the master key, unwrapped on demand, rotated, destroyed."""

from __future__ import annotations

import time

from contrackt.domain.errors import KeyUnavailable
from contrackt.domain.jobs import Job
from contrackt.ports.clock import Clock
from contrackt.ports.keys import KeyProvider
from contrackt.ports.repositories import UnitOfWork, UnitOfWorkFactory
from contrackt.services.crypto import PURPOSE_DIGEST, key_version_of, new_data_key, open_sealed

CACHE_SECONDS = 30.0


def _ctx(tenant_id: str, purpose: str, version: int) -> str:
    return f"contrackt|{tenant_id}|{purpose}|{version}"


class Keyring:
    """Caches unwrapped keys briefly so each job does not call the KMS several times.

    After ``tenant erase`` other processes may hold a key for at most CACHE_SECONDS.
    """

    def __init__(self, provider: KeyProvider, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self.provider = provider
        self.uow = uow
        self.clock = clock
        self._cache: dict[tuple[str, str, int], tuple[float, bytes]] = {}

    async def new_fingerprint_key(self, tenant_id: str) -> bytes:
        """A new fingerprint key, wrapped, for the tenant row."""
        return await self.provider.wrap(new_data_key(), _ctx(tenant_id, "fingerprint", 1))

    async def add_version(self, uow: UnitOfWork, tenant_id: str, version: int) -> None:
        wrapped = await self.provider.wrap(new_data_key(), _ctx(tenant_id, "data", version))
        await uow.tenant_keys.add(tenant_id, version, wrapped, self.clock.now())

    async def rotate(self, tenant_id: str) -> int:
        async with self.uow(tenant_id) as uow:
            current = await uow.tenant_keys.current_version(tenant_id)
            if current is None:
                raise KeyUnavailable("the tenant has no key (erased?)")
            await self.add_version(uow, tenant_id, current + 1)
            return current + 1

    def _cached(self, k: tuple[str, str, int]) -> bytes | None:
        hit = self._cache.get(k)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        return None

    async def current(self, tenant_id: str) -> tuple[int, bytes]:
        async with self.uow(tenant_id) as uow:
            version = await uow.tenant_keys.current_version(tenant_id)
        if version is None:
            raise KeyUnavailable()
        return version, await self.data_key(tenant_id, version)

    async def data_key(self, tenant_id: str, version: int) -> bytes:
        k = (tenant_id, "data", version)
        if (key := self._cached(k)) is not None:
            return key
        async with self.uow(tenant_id) as uow:
            wrapped = await uow.tenant_keys.get(tenant_id, version)
        if wrapped is None:
            raise KeyUnavailable()
        key = await self.provider.unwrap(wrapped, _ctx(tenant_id, "data", version))
        self._cache[k] = (time.monotonic() + CACHE_SECONDS, key)
        return key

    async def fingerprint_key(self, tenant_id: str) -> bytes:
        k = (tenant_id, "fingerprint", 1)
        if (key := self._cached(k)) is not None:
            return key
        async with self.uow(tenant_id) as uow:
            tenant = await uow.tenants.get(tenant_id)
        if tenant is None or tenant.fingerprint_key_wrapped is None:
            raise KeyUnavailable()
        key = await self.provider.unwrap(tenant.fingerprint_key_wrapped, _ctx(tenant_id, "fingerprint", 1))
        self._cache[k] = (time.monotonic() + CACHE_SECONDS, key)
        return key

    def forget(self, tenant_id: str) -> None:
        for k in [k for k in self._cache if k[0] == tenant_id]:
            del self._cache[k]


async def document_sha256(keyring: Keyring, job: Job) -> str | None:
    """The job's document SHA-256 (hex), unsealed with the tenant's key; None if the job has
    none (older jobs) or the key is gone (the tenant was erased: crypto-shredded)."""
    sealed = job.document_digest
    if sealed is None:
        return None
    try:
        key = await keyring.data_key(job.tenant_id, key_version_of(sealed))
    except KeyUnavailable:
        return None
    return open_sealed(key, job.tenant_id, job.id, PURPOSE_DIGEST, sealed).hex()
