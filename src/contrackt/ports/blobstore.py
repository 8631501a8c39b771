"""Port: where encrypted documents rest for minutes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class BlobInfo:
    key: str
    modified: datetime


class BlobStore(Protocol):
    """Stores opaque (already encrypted) bytes under ``{tenant_id}/{job_id}.enc`` keys."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes:
        """Raises KeyError when the object does not exist."""
        ...

    async def delete(self, key: str) -> None:
        """Idempotent: deleting a missing object is not an error."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def list(self, prefix: str = "") -> list[BlobInfo]: ...

    async def close(self) -> None: ...
