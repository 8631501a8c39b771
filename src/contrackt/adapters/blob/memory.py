"""In-memory blob store (unit tests)."""

from __future__ import annotations

from datetime import UTC, datetime

from contrackt.ports.blobstore import BlobInfo


class MemoryBlobStore:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, datetime]] = {}

    async def put(self, key: str, data: bytes) -> None:
        self.objects[key] = (bytes(data), datetime.now(UTC))

    async def get(self, key: str) -> bytes:
        return self.objects[key][0]

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    async def exists(self, key: str) -> bool:
        return key in self.objects

    async def list(self, prefix: str = "") -> list[BlobInfo]:
        return [BlobInfo(k, m) for k, (_, m) in sorted(self.objects.items()) if k.startswith(prefix)]

    async def close(self) -> None:
        return None
