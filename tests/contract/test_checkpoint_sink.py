"""CheckpointSink contract: a local directory and object storage (the moto server) keep exports alike.

Against moto, Object Lock is shown as far as moto implements it: the lock mode and date are
stored with the object (HeadObject), a locked version cannot be deleted, and a delete marker
does not hide an export from `newest`. moto answers GetObjectRetention with a server error, so
nothing here relies on it; whether a real bucket enforces COMPLIANCE mode is AWS's to show.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aioboto3
import pytest
from botocore.exceptions import ClientError

from contrackt.adapters.checkpoints.file import FileCheckpointSink
from contrackt.adapters.checkpoints.s3 import S3CheckpointSink
from contrackt.ports.checkpoints import CheckpointSink
from contrackt.services.checkpoints import checkpoint_name
from tests.contract.services import service


def _aws_env() -> None:
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(key, value)


async def _s3(endpoint: str) -> Any:
    return aioboto3.Session().client("s3", endpoint_url=endpoint)


@asynccontextmanager
async def locked_bucket() -> AsyncIterator[tuple[str, str]]:
    """A bucket of its own with Object Lock enabled; emptied (bypassing GOVERNANCE locks) afterwards."""
    _aws_env()
    endpoint = service("S3")
    name = f"ctk-test-anchors-{uuid.uuid4().hex[:10]}"
    async with await _s3(endpoint) as s3:
        await s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    try:
        yield endpoint, name
    finally:
        async with await _s3(endpoint) as s3:
            listed = await s3.list_object_versions(Bucket=name)
            for v in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]:
                await s3.delete_object(
                    Bucket=name, Key=v["Key"], VersionId=v["VersionId"], BypassGovernanceRetention=True
                )
            await s3.delete_bucket(Bucket=name)


@pytest.fixture
async def bucket() -> AsyncIterator[tuple[str, str]]:
    async with locked_bucket() as made:
        yield made


@pytest.fixture(params=["file", "s3"])
async def sink(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CheckpointSink]:
    made: CheckpointSink
    if request.param == "file":
        made = FileCheckpointSink.from_url(f"file://{tmp_path / 'anchors'}")
        yield made
        await made.close()
        return
    async with locked_bucket() as (endpoint, name):
        made = S3CheckpointSink.from_url(f"s3://{name}/audit", endpoint_url=endpoint)
        yield made
        await made.close()


async def test_newest_is_the_latest_export_and_reads_back(sink: CheckpointSink) -> None:
    assert await sink.newest() is None
    now = datetime.now(UTC)
    older, newer = checkpoint_name(now - timedelta(hours=1)), checkpoint_name(now)
    await sink.put(newer, b'{"n": 2}')
    await sink.put(older, b'{"n": 1}')
    assert await sink.newest() == newer
    assert await sink.read(newer) == b'{"n": 2}'
    assert await sink.read(older) == b'{"n": 1}'


async def test_only_checkpoint_names_are_accepted(sink: CheckpointSink) -> None:
    for bad in ("../escape.json", "audit-heads-x/../../y.json", "notes.txt"):
        with pytest.raises(ValueError, match="not a checkpoint name"):
            await sink.put(bad, b"{}")


async def test_a_file_export_is_never_overwritten(tmp_path: Path) -> None:
    sink = FileCheckpointSink(tmp_path / "anchors")
    name = checkpoint_name(datetime.now(UTC))
    where = await sink.put(name, b"first")
    with pytest.raises(FileExistsError):
        await sink.put(name, b"second")
    assert where == (tmp_path / "anchors" / name).as_uri()
    assert (tmp_path / "anchors" / name).read_bytes() == b"first"
    assert oct((tmp_path / "anchors" / name).stat().st_mode & 0o777) == "0o600"


async def test_object_lock_is_set_and_a_locked_export_stays(bucket: tuple[str, str]) -> None:
    endpoint, name = bucket
    # GOVERNANCE here so the test can clean up; production's default is COMPLIANCE
    sink = S3CheckpointSink(name, "audit", endpoint_url=endpoint, lock_days=3, lock_mode="GOVERNANCE")
    first = checkpoint_name(datetime.now(UTC))
    try:
        assert await sink.put(first, b"{}") == f"s3://{name}/audit/{first}"
    finally:
        await sink.close()
    async with await _s3(endpoint) as s3:
        head = await s3.head_object(Bucket=name, Key=f"audit/{first}")
        assert head["ObjectLockMode"] == "GOVERNANCE"
        until = head["ObjectLockRetainUntilDate"]
        assert timedelta(days=2, hours=23) < until - datetime.now(UTC) <= timedelta(days=3)
        version = head["VersionId"]
        with pytest.raises(ClientError, match="AccessDenied"):
            await s3.delete_object(Bucket=name, Key=f"audit/{first}", VersionId=version)
        marker = await s3.delete_object(Bucket=name, Key=f"audit/{first}")  # all a delete can do: a marker
        assert marker.get("DeleteMarker") is True
    reader = S3CheckpointSink(name, "audit", endpoint_url=endpoint)
    try:
        assert await reader.newest() == first  # the marker does not hide it
        assert await reader.read(first) == b"{}"
    finally:
        await reader.close()
