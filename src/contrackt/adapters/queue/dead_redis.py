"""Dead letters on Redis Streams: the queue's ``{S}:dead`` stream (entries: job, reason, deliveries).

An entry's id is its stream id (``<ms>-<n>``), which also says when it arrived. Removing is
XDEL, whose answer says whether this call removed it (two operators racing: one wins).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from contrackt.adapters.queue.redis_streams import RedisStreamsQueue
from contrackt.domain.jobs import JobMessage
from contrackt.ports.deadletters import DeadLetter


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(entry_id: Any, fields: dict[Any, Any]) -> DeadLetter | None:
    data = {_text(k): _text(v) for k, v in fields.items()}
    ident = _text(entry_id)
    try:
        message = JobMessage.from_dict(json.loads(data["job"]))
        deliveries = int(data.get("deliveries", "0"))
        at = datetime.fromtimestamp(int(ident.split("-", 1)[0]) / 1000, UTC)
    except (KeyError, TypeError, ValueError):
        return None  # not one of ours: never shown, never replayed
    return DeadLetter(ident, message, data.get("reason", ""), deliveries, at)


class RedisDeadLetters:
    def __init__(self, client: Redis, dead_stream: str, *, owns_client: bool = False) -> None:
        self.client = client
        self.dead_stream = dead_stream
        self._owns_client = owns_client

    @classmethod
    def for_queue(cls, queue: RedisStreamsQueue) -> RedisDeadLetters:
        """The dead letters of ``queue`` (sharing its client; the queue closes it)."""
        return cls(queue.client, queue.dead_stream)

    async def list(self, limit: int = 1000) -> list[DeadLetter]:
        entries: Any = await self.client.xrange(self.dead_stream, count=max(1, limit))
        out = [_entry(i, f) for i, f in entries]
        return [e for e in out if e is not None][: max(0, limit)]

    async def get(self, entry_id: str) -> DeadLetter | None:
        try:
            entries: Any = await self.client.xrange(self.dead_stream, min=entry_id, max=entry_id)
        except ResponseError:  # not a stream id
            return None
        return _entry(*entries[0]) if entries else None

    async def remove(self, entry_id: str, outcome: str) -> bool:
        try:
            return int(await self.client.xdel(self.dead_stream, entry_id)) == 1
        except ResponseError:
            return False

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()
