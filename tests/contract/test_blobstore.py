"""BlobStore contract: memory, local directory, S3 (moto server)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from click.testing import Result

from contrackt.ports.blobstore import BlobStore
from tests.contract.services import service, unique

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


async def _drop_bucket(endpoint: str, bucket: str) -> None:
    import aioboto3

    async with aioboto3.Session().client("s3", endpoint_url=endpoint) as s3:
        listing = await s3.list_object_versions(Bucket=bucket)
        for obj in (*listing.get("Versions", []), *listing.get("DeleteMarkers", [])):
            await s3.delete_object(Bucket=bucket, Key=obj["Key"], VersionId=obj["VersionId"])
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
            assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
        with pytest.raises(ValueError):
            await store.put("../escape.enc", b"x")
    finally:
        await store.close()
        await _drop_bucket(endpoint, bucket)


# --- versioned buckets: a delete leaves no version of the ciphertext behind ---------------------


class S3Calls:
    """The S3 operations a store's client makes (botocore's before-call event)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, model: Any, **_: Any) -> None:
        self.names.append(model.name)

    @classmethod
    async def watch(cls, store: Any) -> S3Calls:
        calls = cls()
        (await store._s3()).meta.events.register("before-call.s3", calls)
        return calls


async def _versions(endpoint: str, bucket: str, name: str) -> list[str]:
    """Every version and delete marker S3 still holds under exactly this name."""
    import aioboto3

    async with aioboto3.Session().client("s3", endpoint_url=endpoint) as s3:
        listing = await s3.list_object_versions(Bucket=bucket, Prefix=name)
    entries = (*listing.get("Versions", []), *listing.get("DeleteMarkers", []))
    return [e["VersionId"] for e in entries if e["Key"] == name]


async def _set_versioning(endpoint: str, bucket: str, status: str) -> None:
    import aioboto3

    async with aioboto3.Session().client("s3", endpoint_url=endpoint) as s3:
        await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})


@pytest.fixture
async def s3_bucket() -> AsyncIterator[tuple[str, str]]:
    endpoint = service("S3")
    bucket = unique("ctk-test-")
    try:
        yield endpoint, bucket
    finally:
        await _drop_bucket(endpoint, bucket)


async def test_s3_delete_on_a_versioned_bucket_removes_every_version(s3_bucket: tuple[str, str]) -> None:
    from contrackt.adapters.blob.s3 import S3BlobStore

    endpoint, bucket = s3_bucket
    setup = S3BlobStore.from_url(f"s3://{bucket}/docs", endpoint_url=endpoint)
    await setup.ensure_bucket()
    await setup.close()
    await _set_versioning(endpoint, bucket, "Enabled")
    store = S3BlobStore.from_url(f"s3://{bucket}/docs", endpoint_url=endpoint)  # a process started now
    try:
        key, sibling = f"{T}/job.enc", f"{T}/job.enc.other"  # the sibling shares the key as a prefix
        await store.put(key, b"first ciphertext")
        await store.put(key, b"second ciphertext")  # two versions
        await store.put(sibling, b"not mine")
        assert len(await _versions(endpoint, bucket, f"docs/{key}")) == 2
        calls = await S3Calls.watch(store)
        await store.delete(key)
        # the bucket's versioning read once, one listing, one delete per version
        assert calls.names == ["GetBucketVersioning", "ListObjectVersions", "DeleteObject", "DeleteObject"]
        assert await _versions(endpoint, bucket, f"docs/{key}") == []  # no version, no delete marker
        assert not await store.exists(key)
        assert await store.get(sibling) == b"not mine"
        assert len(await _versions(endpoint, bucket, f"docs/{sibling}")) == 1
        calls.names.clear()
        await store.delete(key)  # idempotent, and leaves no delete marker behind either
        assert await _versions(endpoint, bucket, f"docs/{key}") == []
        assert calls.names == ["ListObjectVersions"]
    finally:
        await store.close()


async def test_s3_unversioned_delete_is_one_call_and_a_later_switch_is_caught(s3_bucket: tuple[str, str]) -> None:
    from contrackt.adapters.blob.s3 import S3BlobStore

    endpoint, bucket = s3_bucket
    store = S3BlobStore.from_url(f"s3://{bucket}/docs", endpoint_url=endpoint)
    try:
        assert await store.ensure_bucket() == ""  # versioning never enabled; read once here
        calls = await S3Calls.watch(store)
        await store.put(f"{T}/a.enc", b"x")
        calls.names.clear()
        await store.delete(f"{T}/a.enc")
        assert calls.names == ["DeleteObject"]
        # Someone turns versioning on while the service runs: the next delete's own answer says
        # it only made a delete marker, and the versions go right away.
        await _set_versioning(endpoint, bucket, "Enabled")
        await store.put(f"{T}/b.enc", b"y")
        calls.names.clear()
        await store.delete(f"{T}/b.enc")
        assert await _versions(endpoint, bucket, f"docs/{T}/b.enc") == []
        assert calls.names == ["DeleteObject", "ListObjectVersions", "DeleteObject", "DeleteObject"]
        # from then on the store knows: no delete marker is made first
        await store.put(f"{T}/c.enc", b"z")
        calls.names.clear()
        await store.delete(f"{T}/c.enc")
        assert await _versions(endpoint, bucket, f"docs/{T}/c.enc") == []
        assert calls.names == ["ListObjectVersions", "DeleteObject"]
    finally:
        await store.close()


def _migrate(tmp_path: Path, bucket: str) -> Result:
    from click.testing import CliRunner

    from contrackt.cli import main

    env = {
        "CONTRACKT_HOME": str(tmp_path / "home"),
        "CONTRACKT_STORAGE_URL": f"s3://{bucket}/docs",
        "CONTRACKT_S3_ENDPOINT_URL": service("S3"),
    }
    with mock.patch("contrackt.logging.configure", lambda *a, **k: None):
        return CliRunner().invoke(main, ["migrate"], env=env)


async def test_migrate_warns_about_a_versioned_bucket(s3_bucket: tuple[str, str], tmp_path: Path) -> None:
    import aioboto3

    endpoint, bucket = s3_bucket
    async with aioboto3.Session().client("s3", endpoint_url=endpoint) as s3:
        await s3.create_bucket(Bucket=bucket)
    plain = await asyncio.to_thread(_migrate, tmp_path, bucket)
    assert plain.exit_code == 0, plain.output
    assert "warning" not in plain.output
    await _set_versioning(endpoint, bucket, "Enabled")
    versioned = await asyncio.to_thread(_migrate, tmp_path, bucket)
    assert versioned.exit_code == 0, versioned.output
    assert "bucket and lifecycle rule are in place" in versioned.output
    assert "warning: the bucket keeps object versions (versioning Enabled)" in versioned.output
    assert "s3:DeleteObjectVersion" in versioned.output


async def test_migrate_refuses_a_bucket_whose_retention_would_keep_documents(tmp_path: Path) -> None:
    import aioboto3

    endpoint = service("S3")
    bucket = unique("ctk-test-")
    async with aioboto3.Session().client("s3", endpoint_url=endpoint) as s3:
        await s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        await s3.put_object_lock_configuration(
            Bucket=bucket,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
            },
        )
    try:
        refused = await asyncio.to_thread(_migrate, tmp_path, bucket)
        assert refused.exit_code == 1
        assert "refusing the bucket" in refused.output and "Object Lock with a default retention" in refused.output
    finally:
        async with aioboto3.Session().client("s3", endpoint_url=endpoint) as s3:
            await s3.delete_bucket(Bucket=bucket)
