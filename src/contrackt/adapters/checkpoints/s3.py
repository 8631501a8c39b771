"""Checkpoint sink in object storage (``s3://bucket/prefix``), with S3 Object Lock where asked.

With ``lock_days`` each object is written with ``ObjectLockMode`` and
``ObjectLockRetainUntilDate``: until then nobody (in COMPLIANCE mode, not even the account's
root) can delete or overwrite that version. The bucket must have been created with Object
Lock enabled; without ``lock_days`` the bucket's default retention (if any) applies. Use a
bucket of its own, in an account the database's administrators do not control.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from contrackt.adapters.aws_client import LazyAwsClient
from contrackt.adapters.checkpoints.file import NAME


class S3CheckpointSink:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        lock_days: int = 0,
        lock_mode: str = "COMPLIANCE",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.lock_days = lock_days
        self.lock_mode = lock_mode
        self._connection = LazyAwsClient("s3", endpoint_url)
        self._versions: dict[str, str] = {}  # name -> the version newest() found

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3CheckpointSink:
        parts = urlparse(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("CONTRACKT_AUDIT_CHECKPOINT_URL must look like s3://bucket/prefix")
        return cls(parts.netloc, parts.path, **kwargs)

    async def _s3(self) -> Any:
        return await self._connection.get()

    def _key(self, name: str) -> str:
        if not NAME.match(name):
            raise ValueError(f"not a checkpoint name: {name!r}")
        return f"{self.prefix}/{name}" if self.prefix else name

    async def put(self, name: str, body: bytes) -> str:
        s3 = await self._s3()
        key = self._key(name)
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentType": "application/json",
            # Object Lock puts need an integrity checksum; it also guards the upload itself.
            "ChecksumAlgorithm": "SHA256",
        }
        if self.lock_days:
            kwargs["ObjectLockMode"] = self.lock_mode
            kwargs["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=self.lock_days)
        await s3.put_object(**kwargs)
        return f"s3://{self.bucket}/{key}"

    async def newest(self) -> str | None:
        """Listed by versions, not by keys: a delete marker someone put on a locked export (all
        that a delete can do to it) does not hide it."""
        s3 = await self._s3()
        prefix = f"{self.prefix}/" if self.prefix else ""
        newest: str | None = None
        paginator = s3.get_paginator("list_object_versions")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix + "audit-heads-"):
            for version in page.get("Versions", []):  # per key, the newest version first
                name = str(version["Key"])[len(prefix) :]
                if not NAME.match(name):
                    continue
                self._versions.setdefault(name, str(version.get("VersionId") or "null"))
                if newest is None or name > newest:
                    newest = name
        return newest

    async def read(self, name: str) -> bytes:
        s3 = await self._s3()
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(name)}
        version = self._versions.get(name)
        if version and version != "null":
            kwargs["VersionId"] = version
        got = await s3.get_object(**kwargs)
        async with got["Body"] as stream:
            data: bytes = await stream.read()
        return data

    async def close(self) -> None:
        await self._connection.close()
