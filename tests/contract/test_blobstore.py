"""BlobStore contract: memory, local directory, S3 (moto server)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contrackt.ports.blobstore import BlobStore
from tests.contract.services import service, unique

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


async def _drop_bucket(endpoint: str, bucket: str) -> None:
    import aioboto3

    async with aioboto3.Session().client("s3", endpoint_url=endpoint) as s3:
        listing = await s3.list_objects_v2(Bucket=bucket)
        for obj in listing.get("Contents", []):
            await s3.delete_object(Bucket=bucket, Key=obj["Key"])
        await s3.delete_bucket(Bucket=bucket)


@pytest.fixture(params=["memory", "local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "memory":
        from contrackt.adapters.blob.memory import MemoryBlobStore

        yield MemoryBlobStore()
        return
    if request.param == "local":
        from contrackt.adapters.blob.local import LocalBlobStore

        yield LocalBlobStore(tmp_path / "blobs")
        return
    from contrackt.adapters.blob.s3 import S3BlobStore

    endpoint = service("S3")
    bucket = unique("ctk-test-")
    s3 = S3BlobStore.from_url(f"s3://{bucket}/uploads", endpoint_url=endpoint)
    await s3.ensure_bucket()
    await s3.ensure_bucket()  # idempotent
    try:
        yield s3
    finally:
        await s3.close()
        await _drop_bucket(endpoint, bucket)


T = "4b1c7a0e-58a4-4c1e-9a8e-1f2d3c4b5a69"


async def test_put_get_exists_delete(store: BlobStore) -> None:
    key = f"{T}/job-1.enc"
    assert not await store.exists(key)
    await store.put(key, b"\x00sealed bytes")
    assert await store.exists(key)
    assert await store.get(key) == b"\x00sealed bytes"
    await store.put(key, b"replaced")
    assert await store.get(key) == b"replaced"
    await store.delete(key)
    assert not await store.exists(key)
    await store.delete(key)  # idempotent
    with pytest.raises(KeyError):
        await store.get(key)


async def test_list_by_prefix(store: BlobStore) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)
    other = "9a9a9a9a-58a4-4c1e-9a8e-1f2d3c4b5a69"
    for key in (f"{T}/a.enc", f"{T}/b.enc", f"{other}/c.enc"):
        await store.put(key, b"x")
    mine = await store.list(f"{T}/")
    assert [b.key for b in mine] == [f"{T}/a.enc", f"{T}/b.enc"]
    assert all(b.modified.tzinfo is not None and b.modified > before for b in mine)
    assert {b.key for b in await store.list()} == {f"{T}/a.enc", f"{T}/b.enc", f"{other}/c.enc"}
    for b in await store.list():
        await store.delete(b.key)
    assert await store.list() == []


async def test_large_object_roundtrip(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    await store.put(f"{T}/big.enc", data)
    assert await store.get(f"{T}/big.enc") == data
    await store.delete(f"{T}/big.enc")


async def test_s3_encryption_and_lifecycle(tmp_path: Path) -> None:
    """What moto can show: SSE requested per object, lifecycle rule in place, prefix layout."""
    import aioboto3

    from contrackt.adapters.blob.s3 import LIFECYCLE_RULE_ID, S3BlobStore

    endpoint = service("S3")
    bucket = unique("ctk-test-")
    store = S3BlobStore.from_url(f"s3://{bucket}/pre/fix", endpoint_url=endpoint)
    try:
        await store.ensure_bucket()
        await store.put(f"{T}/j.enc", b"x")
        async with aioboto3.Session().client("s3", endpoint_url=endpoint) as s3:
            head = await s3.head_object(Bucket=bucket, Key=f"pre/fix/{T}/j.enc")
            assert head["ServerSideEncryption"] == "AES256"
            rules = (await s3.get_bucket_lifecycle_configuration(Bucket=bucket))["Rules"]
            rule = next(r for r in rules if r["ID"] == LIFECYCLE_RULE_ID)
            assert rule["Expiration"]["Days"] == 1 and rule["Status"] == "Enabled"
        with pytest.raises(ValueError):
            await store.put("../escape.enc", b"x")
    finally:
        await store.close()
        await _drop_bucket(endpoint, bucket)
