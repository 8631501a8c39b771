"""S3 / MinIO blob store: objects at ``{prefix}/{key}``, SSE-S3 on top of our own encryption.

A lifecycle rule (set by ``ensure_bucket``) expires anything left under the
prefix after one day, noncurrent versions included; normal operation deletes
each object explicitly right after processing.

Versioned buckets: a plain DeleteObject there only adds a delete marker and the
ciphertext stays as a noncurrent version. ``delete`` therefore removes every
version and delete marker of the key when the bucket keeps versions. Whether it
does is read once (GetBucketVersioning) and re-read every VERSIONING_RECHECK_S;
on a bucket read as unversioned a delete is one call, and a bucket switched to
versioning in between is caught by that call's own answer (S3 says it made a
delete marker), so the versions are removed right then (docs/adr/0009-evidence.md).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlparse

import structlog
from botocore.exceptions import ClientError

from contrackt.adapters.aws_client import LazyAwsClient
from contrackt.ports.blobstore import BlobInfo

LIFECYCLE_RULE_ID = "contrackt-expire-leftovers"
VERSIONING_RECHECK_S = 300.0

log = structlog.get_logger("contrackt.blob.s3")


class BucketRefused(Exception):
    """The bucket would keep documents after the service deleted them (the message says why)."""


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
        self._connection = LazyAwsClient("s3", endpoint_url, region_name)
        self._versioned: bool | None = None  # does the bucket keep versions? None: not read yet
        self._versioning_read_at = 0.0

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, region_name: str | None = None) -> S3BlobStore:
        """``s3://bucket/prefix``."""
        parts = urlparse(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("CONTRACKT_STORAGE_URL must look like s3://bucket/prefix")
        return cls(parts.netloc, parts.path, endpoint_url=endpoint_url, region_name=region_name)

    async def _s3(self) -> Any:
        return await self._connection.get()

    def _object(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError("invalid blob key")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key_of(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    async def ensure_bucket(self) -> str:
        """Create the bucket (if missing) and the leftover-expiry lifecycle rule (idempotent).

        Returns the bucket's versioning status ("" if never enabled, "Enabled", "Suspended"),
        so ``migrate`` can warn. Raises BucketRefused where deleting cannot destroy a
        document: MFA Delete (versions need an MFA token) or Object Lock default retention.
        """
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
        versioning = await s3.get_bucket_versioning(Bucket=self.bucket)
        if versioning.get("MFADelete") == "Enabled":
            raise BucketRefused(
                f"bucket {self.bucket} has MFA Delete enabled: the service cannot delete object versions, "
                "so destroyed documents would stay in the bucket; use a bucket without MFA Delete"
            )
        if await self._default_retention(s3):
            raise BucketRefused(
                f"bucket {self.bucket} has Object Lock with a default retention: documents could not be "
                "deleted after processing; use a bucket without a default retention"
            )
        await s3.put_bucket_lifecycle_configuration(
            Bucket=self.bucket,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": LIFECYCLE_RULE_ID,
                        "Filter": {"Prefix": f"{self.prefix}/" if self.prefix else ""},
                        "Status": "Enabled",
                        "Expiration": {"Days": self.expire_days},
                        # a backstop on versioned buckets: versions `delete` did not reach
                        "NoncurrentVersionExpiration": {"NoncurrentDays": self.expire_days},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                    }
                ]
            },
        )
        status = str(versioning.get("Status", ""))
        self._remember_versioning(status != "")
        return status

    async def _default_retention(self, s3: Any) -> bool:
        try:
            config = await s3.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if "ObjectLockConfigurationNotFound" in str(exc.response.get("Error", {}).get("Code", "")):
                return False
            raise
        lock = config.get("ObjectLockConfiguration", {})
        return lock.get("ObjectLockEnabled") == "Enabled" and "DefaultRetention" in lock.get("Rule", {})

    def _remember_versioning(self, versioned: bool) -> None:
        self._versioned = versioned
        self._versioning_read_at = time.monotonic()

    async def _keeps_versions(self, s3: Any) -> bool:
        stale = time.monotonic() - self._versioning_read_at > VERSIONING_RECHECK_S
        if self._versioned is None or stale:
            try:
                status = (await s3.get_bucket_versioning(Bucket=self.bucket)).get("Status", "")
            except ClientError:
                # Not allowed to read it: plain deletes, whose answers still reveal versioning.
                log.warning("blob.versioning.unreadable")
                status = ""
            self._remember_versioning(bool(status))
        return bool(self._versioned)

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
        """Delete the object; on a bucket that keeps versions, every version and delete marker of it."""
        s3 = await self._s3()
        name = self._object(key)
        if not await self._keeps_versions(s3):
            resp = await s3.delete_object(Bucket=self.bucket, Key=name)
            if not resp.get("DeleteMarker"):
                return
            # Versioning was switched on since it was read: that call only hid the object.
            log.warning("blob.versioning.enabled_since_read")
            self._remember_versioning(True)
        await self._delete_versions(s3, name)

    async def _delete_versions(self, s3: Any, name: str) -> None:
        versions: list[str] = []
        markers: list[str] = []
        paginator = s3.get_paginator("list_object_versions")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=name):
            versions += [v["VersionId"] for v in page.get("Versions", []) if v["Key"] == name]
            markers += [m["VersionId"] for m in page.get("DeleteMarkers", []) if m["Key"] == name]
        # Data first, markers last: the object never reappears in between.
        for version_id in (*versions, *markers):
            await s3.delete_object(Bucket=self.bucket, Key=name, VersionId=version_id)

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
        await self._connection.close()
