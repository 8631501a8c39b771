"""Job queue on Redis Streams: consumer group, ack after commit, claim of abandoned entries.

* ``publish``: XADD (MAXLEN ~ trimming) of ``{"job": <json>, "prior": "0"}``.
* ``receive``: moves due delayed retries back to the stream, XAUTOCLAIMs one entry
  idle longer than ``claim_idle_s`` (its consumer died), else XREADGROUP ``>``.
* ``ack``: XACK + XDEL, called by the service only after its outcome is committed.
* ``retry(delay)``: the entry moves to a ZSET scored by due time (XACK + XDEL +
  ZADD in one MULTI); a later ``receive`` moves it back with XADD.
* ``dead_letter``: XADD to ``{stream}:dead`` + XACK + XDEL.
* ``deliveries``: ``prior`` (deliveries before a retry) + the entry's delivery
  count from XPENDING.
* ``depth``: XLEN (acked entries are deleted, so it counts waiting + pending) plus
  the delayed ZSET.

Acked entries are deleted, so MAXLEN only bounds a backlog that nobody consumes;
if it ever trims a waiting job, the database reconciler re-enqueues it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse, urlunparse

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from contrackt.domain.jobs import JobMessage

DEFAULT_STREAM = "contrackt:jobs"
GROUP = "contrackt-workers"

# KEYS[1] delayed zset, KEYS[2] stream; ARGV now, maxlen, batch. Moves due members back.
PROMOTE_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local m = cjson.decode(member)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'job', m['job'], 'prior', m['prior'])
  end
end
return #due
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class RedisDelivery:
    message: JobMessage
    deliveries: int
    entry_id: str
    _queue: RedisStreamsQueue = field(repr=False)
    _raw: str = field(repr=False, default="")
    _done: bool = field(default=False, repr=False)

    async def ack(self) -> None:
        if self._done:
            return
        self._done = True
        q = self._queue
        async with q.client.pipeline(transaction=True) as pipe:
            pipe.xack(q.stream, q.group, self.entry_id)
            pipe.xdel(q.stream, self.entry_id)
            await pipe.execute()

    async def retry(self, delay_s: float) -> None:
        if self._done:
            return
        self._done = True
        q = self._queue
        member = json.dumps({"job": self._raw, "prior": str(self.deliveries), "n": uuid.uuid4().hex})
        async with q.client.pipeline(transaction=True) as pipe:
            pipe.zadd(q.delayed_key, {member: time.time() + max(0.0, delay_s)})
            pipe.xack(q.stream, q.group, self.entry_id)
            pipe.xdel(q.stream, self.entry_id)
            await pipe.execute()

    async def dead_letter(self, reason: str) -> None:
        if self._done:
            return
        self._done = True
        q = self._queue
        async with q.client.pipeline(transaction=True) as pipe:
            pipe.xadd(
                q.dead_stream,
                {"job": self._raw, "reason": reason[:200], "deliveries": str(self.deliveries)},
                maxlen=q.maxlen,
                approximate=True,
            )
            pipe.xack(q.stream, q.group, self.entry_id)
            pipe.xdel(q.stream, self.entry_id)
            await pipe.execute()


class RedisStreamsQueue:
    def __init__(
        self,
        client: Redis,
        *,
        stream: str = DEFAULT_STREAM,
        group: str = GROUP,
        claim_idle_s: float = 300.0,
        maxlen: int = 100_000,
        poll_s: float = 0.5,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.dead_stream = f"{stream}:dead"
        self.delayed_key = f"{stream}:delayed"
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self.maxlen = maxlen
        self.poll_s = poll_s
        self._group_ready = False
        self._group_lock = asyncio.Lock()
        self._promote = client.register_script(PROMOTE_LUA)

    @classmethod
    def from_url(cls, url: str, *, claim_idle_s: float = 300.0, maxlen: int = 100_000) -> RedisStreamsQueue:
        """``redis://host:port[/db[/stream]][?stream=name]`` (default stream ``contrackt:jobs``)."""
        parts = urlparse(url)
        query = parse_qs(parts.query)
        segments = [s for s in parts.path.split("/") if s]
        db = "0"
        stream = DEFAULT_STREAM
        if segments and segments[0].isdigit():
            db = segments.pop(0)
        if segments:
            stream = "/".join(segments)
        if "stream" in query:
            stream = query["stream"][0]
        rest = "&".join(f"{k}={v[0]}" for k, v in query.items() if k != "stream")
        client_url = urlunparse((parts.scheme, parts.netloc, f"/{db}", "", rest, ""))
        return cls(Redis.from_url(client_url), stream=stream, claim_idle_s=claim_idle_s, maxlen=maxlen)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        async with self._group_lock:
            if self._group_ready:
                return
            try:
                await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._group_ready = True

    async def publish(self, message: JobMessage) -> None:
        await self.client.xadd(
            self.stream,
            {"job": json.dumps(message.to_dict()), "prior": "0"},
            maxlen=self.maxlen,
            approximate=True,
        )

    def _delivery(self, entry_id: Any, fields: dict[Any, Any], count: int) -> RedisDelivery:
        data = {_text(k): _text(v) for k, v in fields.items()}
        raw = data["job"]
        message = JobMessage.from_dict(json.loads(raw))
        prior = int(data.get("prior", "0"))
        return RedisDelivery(message, prior + count, _text(entry_id), self, raw)

    async def _claim(self, consumer: str) -> RedisDelivery | None:
        result = await self.client.xautoclaim(
            self.stream, self.group, consumer, min_idle_time=self.claim_idle_ms, start_id="0-0", count=1
        )
        entries = result[1] if len(result) > 1 else []
        for entry_id, fields in entries:
            if not fields:  # deleted meanwhile
                continue
            pending = await self.client.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
            count = int(pending[0]["times_delivered"]) if pending else 1
            return self._delivery(entry_id, fields, count)
        return None

    async def receive(self, consumer: str, timeout_s: float) -> RedisDelivery | None:
        try:
            return await self._receive(consumer, timeout_s)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                # Redis lost the stream (restart without persistence, FLUSHALL):
                # recreate the group; the database reconciler re-enqueues lost jobs.
                self._group_ready = False
            raise

    async def _receive(self, consumer: str, timeout_s: float) -> RedisDelivery | None:
        await self._ensure_group()
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            await self._promote(keys=[self.delayed_key, self.stream], args=[time.time(), self.maxlen, 100])
            claimed = await self._claim(consumer)
            if claimed is not None:
                return claimed
            left = deadline - time.monotonic()
            block_ms = int(max(0.0, min(left, self.poll_s)) * 1000)
            resp: Any = await self.client.xreadgroup(
                self.group, consumer, {self.stream: ">"}, count=1, block=block_ms or None
            )
            for _stream, entries in resp or []:
                for entry_id, fields in entries:
                    if fields:
                        return self._delivery(entry_id, fields, 1)
            if time.monotonic() >= deadline:
                return None

    async def depth(self) -> int:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.xlen(self.stream)
            pipe.zcard(self.delayed_key)
            counts: list[Any] = await pipe.execute()
        length, delayed = counts
        return int(length) + int(delayed)

    async def dead_letters(self) -> list[tuple[JobMessage, str]]:
        """The dead-letter stream's messages and reasons (operators, tests)."""
        out = []
        entries: Any = await self.client.xrange(self.dead_stream)
        for _id, fields in entries:
            data = {_text(k): _text(v) for k, v in fields.items()}
            out.append((JobMessage.from_dict(json.loads(data["job"])), data.get("reason", "")))
        return out

    async def close(self) -> None:
        await self.client.aclose()
