"""KeyProvider contract: local master key file, AWS KMS (moto server), Vault transit (a stub:
no Vault server runs here, see tests/contract/vault_stub.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contrackt.domain.errors import KeyUnavailable
from contrackt.ports.keys import KeyProvider
from tests.contract.services import service

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


async def _kms_key(endpoint: str) -> str:
    import aioboto3

    async with aioboto3.Session().client("kms", endpoint_url=endpoint, region_name="us-east-1") as kms:
        key = await kms.create_key(Description="contrackt contract test")
        key_id: str = key["KeyMetadata"]["KeyId"]
        return key_id


@pytest.fixture(params=["local", "kms", "vault-stub"])
async def provider(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyProvider]:
    p: KeyProvider
    if request.param == "local":
        from contrackt.adapters.keys.local import LocalKeyProvider

        p = LocalKeyProvider(tmp_path / "master.key")
    elif request.param == "vault-stub":
        import httpx

        from contrackt.adapters.keys.vault import VaultKeyProvider
        from tests.contract.vault_stub import TransitStub

        os.environ["VAULT_TOKEN"] = "test-token"
        stub = httpx.MockTransport(TransitStub("test-token"))
        p = VaultKeyProvider.from_url("vault://127.0.0.1:8200/transit/contrackt?tls=false", transport=stub)
    else:
        from contrackt.adapters.keys.kms import KmsKeyProvider

        endpoint = service("KMS")
        key_id = await _kms_key(endpoint)
        p = KmsKeyProvider.from_url(f"kms://{key_id}?region=us-east-1&endpoint={endpoint}")
    try:
        yield p
    finally:
        await p.close()


async def test_wrap_unwrap_roundtrip(provider: KeyProvider) -> None:
    data_key = os.urandom(32)
    wrapped = await provider.wrap(data_key, "tenant-a|data|1")
    assert data_key not in wrapped
    assert await provider.unwrap(wrapped, "tenant-a|data|1") == data_key
    assert await provider.wrap(data_key, "tenant-a|data|1") != wrapped  # fresh randomness


async def test_context_is_bound(provider: KeyProvider) -> None:
    wrapped = await provider.wrap(os.urandom(32), "tenant-a|data|1")
    with pytest.raises(KeyUnavailable):
        await provider.unwrap(wrapped, "tenant-b|data|1")


async def test_tampered_wrap_fails(provider: KeyProvider) -> None:
    wrapped = bytearray(await provider.wrap(os.urandom(32), "ctx"))
    wrapped[-1] ^= 0x01
    with pytest.raises(KeyUnavailable):
        await provider.unwrap(bytes(wrapped), "ctx")


async def test_kms_unknown_key_is_unavailable() -> None:
    from contrackt.adapters.keys.kms import KmsKeyProvider

    endpoint = service("KMS")
    p = KmsKeyProvider.from_url(f"kms://alias/does-not-exist?region=us-east-1&endpoint={endpoint}")
    try:
        with pytest.raises(KeyUnavailable):
            await p.wrap(os.urandom(32), "ctx")
    finally:
        await p.close()


async def test_vault_wrong_token_is_unavailable() -> None:
    import httpx

    from contrackt.adapters.keys.vault import VaultKeyProvider
    from tests.contract.vault_stub import TransitStub

    os.environ["VAULT_TOKEN"] = "wrong"
    p = VaultKeyProvider.from_url(
        "vault://127.0.0.1:8200/transit/contrackt?tls=false", transport=httpx.MockTransport(TransitStub("right"))
    )
    try:
        with pytest.raises(KeyUnavailable):
            await p.wrap(os.urandom(32), "ctx")
    finally:
        await p.close()
