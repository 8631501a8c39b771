"""Checkpoint sink in a local directory (``file:///dir``): files an operator ships elsewhere.

Each checkpoint is a new file, created exclusively (never overwritten) and flushed to disk
with its directory entry. The directory is only as safe as where its files end up: ship them
to storage the database's administrators cannot write (another account, WORM storage).
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from urllib.parse import urlparse

NAME = re.compile(r"^audit-heads-[0-9TZ]+(-[0-9a-f]+)?\.json$")


class FileCheckpointSink:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def from_url(cls, url: str) -> FileCheckpointSink:
        path = urlparse(url).path
        if not path:
            raise ValueError("CONTRACKT_AUDIT_CHECKPOINT_URL must look like file:///absolute/dir")
        return cls(Path(path))

    def _put(self, name: str, body: bytes) -> str:
        if not NAME.match(name):
            raise ValueError(f"not a checkpoint name: {name!r}")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return path.as_uri()

    async def put(self, name: str, body: bytes) -> str:
        return await asyncio.to_thread(self._put, name, body)

    def _newest(self) -> str | None:
        if not self.directory.is_dir():
            return None
        names = [p.name for p in self.directory.iterdir() if NAME.match(p.name)]
        return max(names) if names else None

    async def newest(self) -> str | None:
        return await asyncio.to_thread(self._newest)

    async def read(self, name: str) -> bytes:
        if not NAME.match(name):
            raise ValueError(f"not a checkpoint name: {name!r}")
        return await asyncio.to_thread((self.directory / name).read_bytes)

    async def close(self) -> None:
        return None
