"""One aioboto3 client per owner (the S3 blob store, the S3 checkpoint sink, the KMS key provider):
opened on first use, shared by concurrent first users, closed with the owner."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import aioboto3


class LazyAwsClient:
    def __init__(self, service: str, endpoint_url: str | None = None, region_name: str | None = None) -> None:
        self.service = service
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self._session = aioboto3.Session()
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    stack = AsyncExitStack()
                    self._client = await stack.enter_async_context(
                        self._session.client(self.service, endpoint_url=self.endpoint_url, region_name=self.region_name)
                    )
                    self._stack = stack
        return self._client

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._client = None
