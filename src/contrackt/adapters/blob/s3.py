"""S3 / MinIO blob store: objects at ``{prefix}/{key}``, SSE-S3 on top of our own encryption.

A lifecycle rule (set by ``ensure_bucket``) expires anything left under the
prefix after one day; normal operation deletes each object explicitly right
after processing.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlparse

import aioboto3
from botocore.exceptions import ClientError

from contrackt.ports.blobstore import BlobInfo

LIFECYCLE_RULE_ID = "contrackt-expire-leftovers"


def _missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket")


class S3BlobStore:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        expire_days: int = 1,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self.expire_days = expire_days
        self._session = aioboto3.Session()
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, region_name: str | None = None) -> S3BlobStore:
        """``s3://bucket/prefix``."""
        parts = urlparse(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("CONTRACKT_STORAGE_URL must look like s3://bucket/prefix")
        return cls(parts.netloc, parts.path, endpoint_url=endpoint_url, region_name=region_name)

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    stack = AsyncExitStack()
                    self._client = await stack.enter_async_context(
                        self._session.client("s3", endpoint_url=self.endpoint_url, region_name=self.region_name)
                    )
                    self._stack = stack
        return self._client

    def _object(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError("invalid blob key")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key_of(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    async def ensure_bucket(self) -> None:
        """Create the bucket (if missing) and the leftover-expiry lifecycle rule (idempotent)."""
        s3 = await self._s3()
        try:
            await s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.region_name and self.region_name != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region_name}
            try:
                await s3.create_bucket(**kwargs)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",):
                    raise
        await s3.put_bucket_lifecycle_configuration(
            Bucket=self.bucket,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": LIFECYCLE_RULE_ID,
                        "Filter": {"Prefix": f"{self.prefix}/" if self.prefix else ""},
                        "Status": "Enabled",
                        "Expiration": {"Days": self.expire_days},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                    }
                ]
            },
        )

    async def put(self, key: str, data: bytes) -> None:
        s3 = await self._s3()
        await s3.put_object(
            Bucket=self.bucket,
            Key=self._object(key),
            Body=data,
            ServerSideEncryption="AES256",
            ContentType="application/octet-stream",
        )

    async def get(self, key: str) -> bytes:
        s3 = await self._s3()
        try:
            resp = await s3.get_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as exc:
            if _missing(exc):
                raise KeyError(key) from exc
            raise
        async with resp["Body"] as body:
            data: bytes = await body.read()
        return data

    async def delete(self, key: str) -> None:
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.bucket, Key=self._object(key))

    async def exists(self, key: str) -> bool:
        s3 = await self._s3()
        try:
            await s3.head_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    async def list(self, prefix: str = "") -> list[BlobInfo]:
        s3 = await self._s3()
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        out: list[BlobInfo] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                out.append(BlobInfo(self._key_of(obj["Key"]), obj["LastModified"]))
        return sorted(out, key=lambda b: b.key)

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._client = None
