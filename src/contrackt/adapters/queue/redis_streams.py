"""Job queue on Redis Streams, fair across tenants: one stream per tenant, served round-robin.

Keys (one hash tag, so a Redis Cluster keeps them in one slot; ``S`` is the configured
stream name, default ``contrackt:jobs``):

* ``{S}:t:<tenant>``: the tenant's stream, with the consumer group ``contrackt-workers``.
* ``{S}:ring`` (list) and ``{S}:tenants`` (set): the tenants whose stream has entries
  (waiting or in flight), in serving order; ``{S}:last``: the tenant served last (a
  tenant joining the ring goes just ahead of it, so a newcomer is served next).
* ``{S}:delayed`` (zset, due time): retried and deferred messages.
* ``{S}:held`` (zset, until): tenants at their in-flight cap, skipped until then.
* ``{S}:backlog`` (list): one element per message in the queue (in a tenant stream or
  delayed), moved in the same script as the message: ``LLEN`` is ``depth()``, and what
  KEDA's ``redis`` scaler watches (it reads list lengths only).
* ``{S}:bell`` (list): publishers ring it so idle consumers (BLPOP) wake at once.
* ``{S}:dead``: the dead-letter stream.
* ``{S}:oldest-age``: the oldest waiting message's age as last read by any process (``stats``);
  ``{S}:oldest-age:lock``: set by the process reading it anew, once per ``age_ttl_s``.

* ``receive``: one Lua script moves due delayed messages back, then visits tenants from
  the head of the ring: for a tenant not held (nor skipped by the caller), an entry idle
  longer than ``claim_idle_s`` (its consumer died: XAUTOCLAIM), else its next new entry
  (XREADGROUP, no BLOCK inside a script); the tenant served moves to the tail. Tenants
  whose stream emptied leave the ring. With nothing to hand out the consumer waits on
  the bell (BLPOP, ``poll_s``).
* ``touch``: XCLAIM ... JUSTID by the entry's own consumer resets its idle time, so a job
  whose worker is alive (heartbeats) is never claimed by another consumer.
* ``ack``: XACK + XDEL, called by the service only after its outcome is committed.
* ``retry(delay)`` / ``defer(delay)``: the entry moves to ``{S}:delayed`` (XACK + XDEL +
  ZADD in one script); ``defer`` keeps its delivery count and may hold the tenant.
* ``dead_letter``: XADD to ``{S}:dead`` + XACK + XDEL.
* Settling (ack, retry, defer, dead_letter, touch) only acts while the entry is still
  this consumer's (XPENDING): an entry claimed meanwhile by another consumer is theirs.
* ``deliveries``: ``prior`` (deliveries before a retry) + the entry's delivery count.

Acked entries are deleted, so a tenant stream holds exactly its waiting and in-flight
messages. A tenant stream at ``maxlen`` refuses more (logged); the job stays pending in
the database and the reconciler enqueues it again later.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse, urlunparse

import structlog
from redis.asyncio import Redis

from contrackt.domain.jobs import JobMessage
from contrackt.ports.queue import QueueStats

log = structlog.get_logger("contrackt.queue.redis")

DEFAULT_STREAM = "contrackt:jobs"
AGE_TTL_S = 10.0  # default: how old the fleet's shared reading of the oldest message's age may get
GROUP = "contrackt-workers"

_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# A tenant with a new entry joins the ring (if not in it yet) just ahead of the tenant served last.
_JOIN = """
local function join(ring, members, last_key, tenant)
  if redis.call('SADD', members, tenant) == 0 then return end
  local last = redis.call('GET', last_key)
  if last and redis.call('LINDEX', ring, -1) == last then
    redis.call('RPOP', ring)
    redis.call('RPUSH', ring, tenant, last)
  else
    redis.call('RPUSH', ring, tenant)
  end
end
"""

# KEYS: ring, tenants, backlog, bell, tenant stream, last. ARGV: tenant, job, prior, group, maxlen.
PUBLISH_LUA = (
    _JOIN
    + """
local s = KEYS[5]
if redis.call('XLEN', s) >= tonumber(ARGV[5]) then return 0 end
redis.pcall('XGROUP', 'CREATE', s, ARGV[4], '0', 'MKSTREAM')
redis.call('XADD', s, '*', 'job', ARGV[2], 'prior', ARGV[3])
join(KEYS[1], KEYS[2], KEYS[6], ARGV[1])
redis.call('RPUSH', KEYS[3], '1')
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, 63)
return 1
"""
)

# KEYS: ring, tenants, delayed, held, last.
# ARGV: stream prefix, group, consumer, claim idle ms, max tenants visited, max promoted,
#       tenants to skip (JSON list).
# Returns {tenant, entry id, fields, times delivered} or false.
RECEIVE_LUA = (
    _NOW_MS
    + _JOIN
    + """
local now = now_ms()
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local skip = {}
for _, t in ipairs(cjson.decode(ARGV[7])) do skip[t] = true end
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[3], member) == 1 then
    local m = cjson.decode(member)
    local s = prefix .. m['tenant']
    redis.pcall('XGROUP', 'CREATE', s, group, '0', 'MKSTREAM')
    redis.call('XADD', s, '*', 'job', m['job'], 'prior', m['prior'])
    join(KEYS[1], KEYS[2], KEYS[5], m['tenant'])
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)

local function next_entry(s)
  local claimed = redis.pcall('XAUTOCLAIM', s, group, consumer, ARGV[4], '0-0', 'COUNT', 1)
  if type(claimed) == 'table' and claimed['err'] then
    redis.pcall('XGROUP', 'CREATE', s, group, '0', 'MKSTREAM')
    return nil
  end
  for _, e in ipairs(claimed[2]) do
    if e and e[2] then
      local p = redis.call('XPENDING', s, group, e[1], e[1], 1)
      local times = 1
      if p[1] then times = p[1][4] end
      return {e[1], e[2], times}
    end
  end
  local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', s, '>')
  if got and got[1][2][1] then
    local e = got[1][2][1]
    return {e[1], e[2], 1}
  end
  return nil
end

for _, tenant in ipairs(redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[5]) - 1)) do
  local s = prefix .. tenant
  if not skip[tenant] and not redis.call('ZSCORE', KEYS[4], tenant) then
    local e = next_entry(s)
    if e then
      -- served: to the back of the ring
      redis.call('LREM', KEYS[1], 1, tenant)
      redis.call('RPUSH', KEYS[1], tenant)
      redis.call('SET', KEYS[5], tenant)
      return {tenant, e[1], e[2], e[3]}
    end
  end
  if redis.call('XLEN', s) == 0 then
    redis.call('LREM', KEYS[1], 1, tenant)
    redis.call('SREM', KEYS[2], tenant)
  end
end
return false
"""
)

_OWNED = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if not p[1] or p[1][2] ~= ARGV[3] then return 0 end
"""

# KEYS: tenant stream, backlog. ARGV: group, entry id, consumer.
ACK_LUA = (
    _OWNED
    + """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if redis.call('XDEL', KEYS[1], ARGV[2]) == 1 then redis.call('LPOP', KEYS[2]) end
return 1
"""
)

# KEYS: tenant stream, delayed, held. ARGV: group, entry id, consumer, member, delay ms, tenant to hold or ''.
LATER_LUA = (
    _NOW_MS
    + _OWNED
    + """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if redis.call('XDEL', KEYS[1], ARGV[2]) == 1 then
  local at = now_ms() + tonumber(ARGV[5])
  redis.call('ZADD', KEYS[2], at, ARGV[4])
  if ARGV[6] ~= '' then redis.call('ZADD', KEYS[3], 'GT', at, ARGV[6]) end
end
return 1
"""
)

# KEYS: tenant stream, dead stream, backlog. ARGV: group, entry id, consumer, job, reason, deliveries, maxlen.
DEAD_LUA = (
    _OWNED
    + """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if redis.call('XDEL', KEYS[1], ARGV[2]) == 1 then
  redis.call('LPOP', KEYS[3])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'job', ARGV[4], 'reason', ARGV[5], 'deliveries', ARGV[6])
end
return 1
"""
)

# KEYS: tenant stream. ARGV: group, entry id, consumer.
TOUCH_LUA = (
    _OWNED
    + """
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class RedisDelivery:
    message: JobMessage
    deliveries: int
    stream: str  # the tenant's stream
    entry_id: str
    consumer: str
    _queue: RedisStreamsQueue = field(repr=False)
    _raw: str = field(repr=False, default="")
    _done: bool = field(default=False, repr=False)

    def _owned_args(self) -> list[str]:
        return [self._queue.group, self.entry_id, self.consumer]

    async def ack(self) -> None:
        if self._done:
            return
        self._done = True
        q = self._queue
        await q._ack_script(keys=[self.stream, q.backlog_key], args=self._owned_args())

    async def _later(self, delay_s: float, prior: int, hold: str) -> None:
        if self._done:
            return
        self._done = True
        q = self._queue
        member = json.dumps(
            {"job": self._raw, "prior": str(prior), "tenant": self.message.tenant_id, "n": uuid.uuid4().hex}
        )
        await q._later_script(
            keys=[self.stream, q.delayed_key, q.held_key],
            args=[*self._owned_args(), member, int(max(0.0, delay_s) * 1000), hold],
        )

    async def retry(self, delay_s: float) -> None:
        await self._later(delay_s, self.deliveries, "")

    async def defer(self, delay_s: float, *, hold_tenant: bool = False) -> None:
        await self._later(delay_s, self.deliveries - 1, self.message.tenant_id if hold_tenant else "")

    async def touch(self) -> None:
        if not self._done:
            await self._queue._touch_script(keys=[self.stream], args=self._owned_args())

    async def dead_letter(self, reason: str) -> None:
        if self._done:
            return
        self._done = True
        q = self._queue
        await q._dead_script(
            keys=[self.stream, q.dead_stream, q.backlog_key],
            args=[*self._owned_args(), self._raw, reason[:200], str(self.deliveries), q.maxlen],
        )


class RedisStreamsQueue:
    def __init__(
        self,
        client: Redis,
        *,
        stream: str = DEFAULT_STREAM,
        group: str = GROUP,
        claim_idle_s: float = 30.0,
        maxlen: int = 100_000,
        poll_s: float = 0.5,
        max_visits: int = 256,
        age_ttl_s: float = AGE_TTL_S,
    ) -> None:
        self.client = client
        self.age_ttl_s = age_ttl_s  # 0: read the age anew at every call (tests)
        self._age_task: asyncio.Task[None] | None = None
        self.stream = stream
        self.group = group
        tag = "{" + stream + "}"
        self.tenant_prefix = f"{tag}:t:"
        self.ring_key = f"{tag}:ring"
        self.tenants_key = f"{tag}:tenants"
        self.last_key = f"{tag}:last"
        self.delayed_key = f"{tag}:delayed"
        self.held_key = f"{tag}:held"
        self.backlog_key = f"{tag}:backlog"
        self.bell_key = f"{tag}:bell"
        self.dead_stream = f"{tag}:dead"
        self.age_key = f"{tag}:oldest-age"  # the fleet's shared reading of the oldest waiting message
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self.maxlen = maxlen
        self.poll_s = max(0.05, poll_s)
        self.max_visits = max_visits
        self._publish_script = client.register_script(PUBLISH_LUA)
        self._receive_script = client.register_script(RECEIVE_LUA)
        self._ack_script = client.register_script(ACK_LUA)
        self._later_script = client.register_script(LATER_LUA)
        self._dead_script = client.register_script(DEAD_LUA)
        self._touch_script = client.register_script(TOUCH_LUA)

    @classmethod
    def from_url(cls, url: str, *, claim_idle_s: float = 30.0, maxlen: int = 100_000) -> RedisStreamsQueue:
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

    def tenant_stream(self, tenant_id: str) -> str:
        return f"{self.tenant_prefix}{tenant_id}"

    async def publish(self, message: JobMessage) -> None:
        added = await self._publish_script(
            keys=[
                self.ring_key,
                self.tenants_key,
                self.backlog_key,
                self.bell_key,
                self.tenant_stream(message.tenant_id),
                self.last_key,
            ],
            args=[message.tenant_id, json.dumps(message.to_dict()), "0", self.group, self.maxlen],
        )
        if not added:
            # The job stays pending in the database; the reconciler enqueues it again later.
            log.warning("queue.redis.tenant_stream_full", tenant_id=message.tenant_id)

    async def receive(
        self, consumer: str, timeout_s: float, *, skip_tenants: Collection[str] = ()
    ) -> RedisDelivery | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while True:
            skip = json.dumps(sorted(skip_tenants))  # read again each round: the caller's set may change
            got: Any = await self._receive_script(
                keys=[self.ring_key, self.tenants_key, self.delayed_key, self.held_key, self.last_key],
                args=[self.tenant_prefix, self.group, consumer, self.claim_idle_ms, self.max_visits, 100, skip],
            )
            if got:
                return self._delivery(consumer, got)
            left = deadline - loop.time()
            if left <= 0:
                return None
            # Woken by a publish, or after poll_s (delayed messages, held tenants, idle entries).
            await self.client.blpop([self.bell_key], timeout=max(0.01, min(left, self.poll_s)))

    def _delivery(self, consumer: str, got: list[Any]) -> RedisDelivery:
        tenant, entry_id, flat, times = got
        data = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
        raw = data["job"]
        message = JobMessage.from_dict(json.loads(raw))
        prior = int(data.get("prior", "0"))
        return RedisDelivery(
            message,
            prior + int(times),
            self.tenant_stream(_text(tenant)),
            _text(entry_id),
            consumer,
            self,
            raw,
        )

    async def depth(self) -> int:
        return int(await self.client.llen(self.backlog_key))

    async def stats(self) -> QueueStats:
        """Depth and dead letters live; the oldest waiting message's age from a reading the
        fleet shares (``age_key``), taken anew in the background by whichever process first
        asks once ``age_ttl_s`` has passed (``{S}:oldest-age:lock`` marks the window).

        Finding the oldest message visits every tenant stream (two commands each: about 75 ms
        for 1,000 tenants, 0.4 s for 5,000; bench/observe.py), so every process doing it at every
        scrape would cost Redis O(processes x tenants) and could outlast a scrape's time limit.
        Shared, it costs O(tenants) per window; pipelined rather than in one script, it never
        holds Redis up for other clients; in the background, it never slows a scrape.
        """
        ttl_ms = int(self.age_ttl_s * 1000)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.llen(self.backlog_key)
            pipe.xlen(self.dead_stream)
            pipe.get(self.age_key)
            if ttl_ms > 0:
                pipe.set(f"{self.age_key}:lock", "1", nx=True, px=ttl_ms)
            depth, dead, shared, *mine = await pipe.execute()
        if ttl_ms <= 0:
            return QueueStats(int(depth), int(dead), await self._oldest_age())
        if mine and mine[0] and (self._age_task is None or self._age_task.done()):
            self._age_task = asyncio.create_task(self._share_age(6 * ttl_ms))
        # None until a first reading exists (or after six windows without one): unknown, not 0
        return QueueStats(int(depth), int(dead), float(shared) if shared is not None else None)

    async def _share_age(self, keep_ms: int) -> None:
        try:
            await self.client.set(self.age_key, repr(await self._oldest_age()), px=keep_ms)
        except Exception as exc:  # the next window's reader tries again
            log.warning("queue.redis.age_read_failed", error=type(exc).__name__)

    async def _oldest_age(self) -> float:
        """Seconds since the oldest message not yet handed out was (re-)enqueued: a tenant
        stream's next undelivered entry (its id is the server time it was added), or a delayed
        message already due. 0.0 when nothing waits."""
        secs, micros = await self.client.time()
        now_ms = int(secs) * 1000 + int(micros) // 1000
        oldest = now_ms
        tenants = sorted(_text(t) for t in await self.client.smembers(self.tenants_key))
        for i in range(0, len(tenants), 500):
            streams = [self.tenant_stream(t) for t in tenants[i : i + 500]]
            async with self.client.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.xinfo_groups(stream)
                groups = await pipe.execute(raise_on_error=False)
            async with self.client.pipeline(transaction=False) as pipe:
                for stream, found in zip(streams, groups, strict=True):
                    last = "0-0"
                    for g in found if isinstance(found, list) else []:
                        if _text(g.get("name", "")) == self.group and g.get("last-delivered-id"):
                            last = _text(g["last-delivered-id"])
                    pipe.xrange(stream, f"({last}", "+", count=1)
                firsts = await pipe.execute(raise_on_error=False)
            for first in firsts:
                if isinstance(first, list) and first:
                    oldest = min(oldest, int(_text(first[0][0]).split("-", 1)[0]))
        due: Any = await self.client.zrangebyscore(self.delayed_key, "-inf", now_ms, start=0, num=1, withscores=True)
        if due:
            oldest = min(oldest, int(due[0][1]))
        return max(0, now_ms - oldest) / 1000

    async def dead_letters(self) -> list[tuple[JobMessage, str]]:
        """The dead-letter stream's messages and reasons (operators, tests)."""
        out = []
        entries: Any = await self.client.xrange(self.dead_stream)
        for _id, fields in entries:
            data = {_text(k): _text(v) for k, v in fields.items()}
            out.append((JobMessage.from_dict(json.loads(data["job"])), data.get("reason", "")))
        return out

    async def close(self) -> None:
        if self._age_task is not None:
            self._age_task.cancel()
            await asyncio.gather(self._age_task, return_exceptions=True)
        await self.client.aclose()
