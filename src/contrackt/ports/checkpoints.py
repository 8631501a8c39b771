"""Port: where signed chain-head checkpoints go, outside the database (object storage, a file)."""

from __future__ import annotations

from typing import Protocol


class CheckpointSink(Protocol):
    """Write-once objects whose names sort by time (``audit-heads-<UTC time>.json``).

    The sink is what a database administrator cannot rewrite: an object-locked bucket, or a
    directory whose files an operator ships elsewhere.
    """

    async def put(self, name: str, body: bytes) -> str:
        """Store a new object (never overwriting one); where it went, for the record."""
        ...

    async def newest(self) -> str | None:
        """The name of the newest checkpoint, or None when there is none."""
        ...

    async def read(self, name: str) -> bytes: ...

    async def close(self) -> None: ...
