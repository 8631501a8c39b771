"""Job queue on Kafka (aiokafka): partitioned by tenant, offsets committed only after ack.

URL: ``kafka://host:port[,host:port]/topic[?partitions=6&group=contrackt-workers&read_ahead=400]``.

* Messages are keyed by ``tenant_id``: one tenant's jobs stay on one partition, and one
  busy tenant cannot occupy every partition.
* A partition holds several tenants, so consuming it in order would make a tenant wait
  behind another's backlog (head-of-line blocking). Each process instead reads ahead up
  to ``read_ahead`` records per partition (a background fetch loop; a partition with that
  many unsettled records is paused), keeps them in per-tenant lanes and hands them out
  round-robin across tenants. Keep ``read_ahead`` above the per-tenant backlog limit
  (the default is twice CONTRACKT_TENANT_MAX_BACKLOG): then no tenant's backlog can hide
  another tenant's message from the lanes.
* Consumers of the group ``contrackt-workers`` never auto-commit. A partition's offset
  moves past a record only when it and every earlier record of that partition read by
  this process were acked (or retried/dead-lettered): records read ahead but not yet
  handed out hold the offset back too. A message whose worker died, or that sat in a
  dead process's lanes, is therefore delivered again when its partition is reassigned
  (consumer restart or group rebalance).
* ``retry(delay)``: after ``delay`` the message is republished with ``deliveries + 1``;
  only then does its old offset count as done (a crash during the delay redelivers the
  original). ``defer(delay)``: the record goes back into its lane after ``delay`` (its
  offset still unsettled), with the same ``deliveries``; ``hold_tenant`` puts it back at
  once and skips the tenant's lane meanwhile. ``touch``: nothing to do (the consumer's
  own heartbeats keep its partitions; the fetch loop keeps polling).
* ``dead_letter``: published to ``{topic}.dead`` with the reason, then acked. A
  message that arrives already delivered ``max_deliveries`` times goes there
  without being handed out (poison guard).
* ``depth``: end offsets minus the group's committed offsets, over every
  partition (a probe consumer that never joins the group, so the API can ask).
* ``stats``: that depth, the dead topic's retained messages, and the age of the record at
  the committed offset of each lagging partition (its timestamp, read by a consumer that
  never joins the group).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from contrackt.adapters.queue.lanes import TenantLanes
from contrackt.domain.jobs import JobMessage
from contrackt.ports.queue import QueueStats

log = structlog.get_logger("contrackt.queue.kafka")

GROUP = "contrackt-workers"


@dataclass(frozen=True)
class _Record:
    """A record read ahead, waiting in its tenant's lane."""

    tp: TopicPartition
    offset: int
    message: JobMessage
    prior: int  # deliveries before this one


@dataclass
class KafkaDelivery:
    message: JobMessage
    deliveries: int
    tp: TopicPartition
    offset: int
    _queue: KafkaQueue = field(repr=False)
    _done: bool = field(default=False, repr=False)

    async def ack(self) -> None:
        if not self._done:
            self._done = True
            await self._queue._settle(self.tp, self.offset)

    async def retry(self, delay_s: float) -> None:
        if self._done:
            return
        self._done = True
        q = self._queue

        async def later() -> None:
            await asyncio.sleep(max(0.0, delay_s))
            await q._send(q.topic, self.message, self.deliveries)
            await q._settle(self.tp, self.offset)

        q._spawn(later())

    async def defer(self, delay_s: float, *, hold_tenant: bool = False) -> None:
        if self._done:
            return
        self._done = True
        q = self._queue
        record = _Record(self.tp, self.offset, self.message, self.deliveries - 1)
        if hold_tenant:
            q._lanes.push(self.message.tenant_id, record, front=True)
            q._lanes.hold(self.message.tenant_id, delay_s)
            return

        async def later() -> None:
            await asyncio.sleep(max(0.0, delay_s))
            if q._holds(record):
                q._lanes.push(self.message.tenant_id, record)

        q._spawn(later())

    async def touch(self) -> None:
        return None

    async def dead_letter(self, reason: str) -> None:
        if self._done:
            return
        self._done = True
        await self._queue._send(self._queue.dead_topic, self.message, self.deliveries, reason=reason)
        await self._queue._settle(self.tp, self.offset)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, queue: KafkaQueue) -> None:
        self.queue = queue

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.queue._commit()
        gone = set(revoked)
        for tp in gone:
            # Whatever this process still holds from these partitions will be
            # delivered again by their next owner; forget it here.
            self.queue._outstanding.pop(tp, None)
            self.queue._high.pop(tp, None)
            self.queue._committed.pop(tp, None)
        self.queue._lanes.discard(lambda r: r.tp in gone)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class KafkaQueue:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        group: str = GROUP,
        partitions: int = 6,
        max_deliveries: int = 3,
        session_timeout_ms: int = 10_000,
        read_ahead: int = 400,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.dead_topic = f"{topic}.dead"
        self.group = group
        self.partitions = partitions
        self.max_deliveries = max_deliveries
        self.session_timeout_ms = session_timeout_ms
        self.read_ahead = max(1, read_ahead)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._probe: AIOKafkaConsumer | None = None
        self._ager: AIOKafkaConsumer | None = None  # reads one record per lagging partition (stats)
        self._start_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._topics_ready = False
        # Per partition: offsets read (buffered or handed out) and not yet settled;
        # highest settled offset; last committed offset.
        self._outstanding: dict[TopicPartition, set[int]] = {}
        self._high: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._lanes: TenantLanes[_Record] = TenantLanes()
        self._fetcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> KafkaQueue:
        parts = urlparse(url)
        if parts.scheme != "kafka" or not parts.netloc:
            raise ValueError("CONTRACKT_QUEUE_URL must look like kafka://host:port/topic")
        topic = parts.path.strip("/") or "contrackt.jobs"
        query = parse_qs(parts.query)
        if "partitions" in query:
            kwargs.setdefault("partitions", int(query["partitions"][0]))
        if "group" in query:
            kwargs.setdefault("group", query["group"][0])
        if "read_ahead" in query:
            kwargs["read_ahead"] = int(query["read_ahead"][0])
        return cls(parts.netloc, topic, **kwargs)

    # --- set-up -------------------------------------------------------------
    async def _ensure_topics(self) -> None:
        if self._topics_ready:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [
                NewTopic(name, num_partitions=self.partitions if name == self.topic else 1, replication_factor=1)
                for name in (self.topic, self.dead_topic)
                if name not in existing
            ]
            if new:
                try:
                    await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()
        self._topics_ready = True

    async def _producer_started(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._start_lock:
                if self._producer is None:
                    await self._ensure_topics()
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self.bootstrap,
                        acks="all",
                        # Idempotent producers need InitProducerId support; the tansu
                        # broker used in tests rejects it. Duplicates are harmless here:
                        # job completion is a conditional update (at-least-once by design).
                        enable_idempotence=False,
                        linger_ms=0,
                    )
                    await producer.start()
                    self._producer = producer
        return self._producer

    async def _consumer_started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            async with self._start_lock:
                if self._consumer is None:
                    await self._ensure_topics()
                    consumer = AIOKafkaConsumer(
                        bootstrap_servers=self.bootstrap,
                        group_id=self.group,
                        enable_auto_commit=False,
                        auto_offset_reset="earliest",
                        session_timeout_ms=self.session_timeout_ms,
                        heartbeat_interval_ms=max(500, self.session_timeout_ms // 5),
                    )
                    await consumer.start()
                    consumer.subscribe([self.topic], listener=_Rebalance(self))
                    self._consumer = consumer
                    self._fetcher = asyncio.create_task(self._fetch_loop(consumer))
        return self._consumer

    # --- port -----------------------------------------------------------------
    async def _send(self, topic: str, message: JobMessage, deliveries: int, *, reason: str | None = None) -> None:
        producer = await self._producer_started()
        body: dict[str, Any] = {"job": message.to_dict(), "deliveries": deliveries}
        if reason is not None:
            body["reason"] = reason[:200]
        await producer.send_and_wait(topic, json.dumps(body).encode(), key=message.tenant_id.encode())

    async def publish(self, message: JobMessage) -> None:
        await self._send(self.topic, message, 0)

    async def receive(
        self, consumer: str, timeout_s: float, *, skip_tenants: Collection[str] = ()
    ) -> KafkaDelivery | None:
        await self._consumer_started()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while True:
            record = await self._lanes.take(deadline - loop.time(), skip_tenants)
            if record is None:
                return None
            if self._holds(record):  # else its partition was revoked meanwhile
                return KafkaDelivery(record.message, record.prior + 1, record.tp, record.offset, self)

    def _holds(self, record: _Record) -> bool:
        return record.offset in self._outstanding.get(record.tp, ())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_loop(self, kc: AIOKafkaConsumer) -> None:
        """Read ahead into the tenant lanes, pausing partitions with ``read_ahead`` unsettled records.

        Polling never stops while the process lives, so the group does not think a
        consumer whose workers are all busy with long jobs has died.
        """
        while True:
            try:
                self._flow(kc)
                batch = await kc.getmany(timeout_ms=500, max_records=min(self.read_ahead, 100))
                for tp, records in batch.items():
                    for record in records:
                        await self._buffer(tp, record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("queue.kafka.fetch_failed", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    def _flow(self, kc: AIOKafkaConsumer) -> None:
        paused = kc.paused()
        for tp in kc.assignment():
            full = len(self._outstanding.get(tp, ())) >= self.read_ahead
            if full and tp not in paused:
                kc.pause(tp)
            elif not full and tp in paused:
                kc.resume(tp)

    async def _buffer(self, tp: TopicPartition, record: Any) -> None:
        self._outstanding.setdefault(tp, set()).add(record.offset)
        try:
            body = json.loads(record.value)
            message = JobMessage.from_dict(body["job"])
            prior = int(body.get("deliveries", 0))
        except (ValueError, KeyError, TypeError):
            log.warning("queue.kafka.bad_message", partition=tp.partition, offset=record.offset)
            await self._settle(tp, record.offset)
            return
        if prior >= self.max_deliveries:
            await self._send(self.dead_topic, message, prior, reason="max_deliveries")
            await self._settle(tp, record.offset)
            return
        self._lanes.push(message.tenant_id, _Record(tp, record.offset, message, prior))

    async def _settle(self, tp: TopicPartition, offset: int) -> None:
        pending = self._outstanding.get(tp)
        if pending is None or offset not in pending:
            return  # partition revoked meanwhile: its next owner redelivers
        pending.discard(offset)
        self._high[tp] = max(self._high.get(tp, -1), offset)
        await self._commit()

    async def _commit(self) -> None:
        if self._consumer is None:
            return
        offsets: dict[TopicPartition, int] = {}
        for tp, high in self._high.items():
            pending = self._outstanding.get(tp, set())
            target = min(pending) if pending else high + 1
            if target > self._committed.get(tp, -1):
                offsets[tp] = target
        if not offsets:
            return
        async with self._commit_lock:
            try:
                await self._consumer.commit(offsets)
            except Exception as exc:  # rebalance in progress, partition gone: redelivered later
                log.warning("queue.kafka.commit_failed", error=type(exc).__name__)
                return
        for tp, target in offsets.items():
            self._committed[tp] = max(self._committed.get(tp, -1), target)

    async def _probe_started(self) -> AIOKafkaConsumer:
        if self._probe is None:
            async with self._start_lock:
                if self._probe is None:
                    await self._ensure_topics()
                    probe = AIOKafkaConsumer(
                        bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False
                    )
                    await probe.start()  # never subscribes: does not join the group
                    self._probe = probe
        return self._probe

    async def _partitions(self, probe: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
        partitions = probe.partitions_for_topic(topic)
        if not partitions:
            await probe._client.force_metadata_update()
            partitions = probe.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(partitions)]

    async def _waiting(self) -> dict[TopicPartition, tuple[int, int]]:
        """Per partition of the job topic: (the group's next offset, the end offset)."""
        probe = await self._probe_started()
        tps = await self._partitions(probe, self.topic)
        if not tps:
            return {}
        ends = await probe.end_offsets(tps)
        starts = await probe.beginning_offsets(tps)
        out = {}
        for tp in tps:
            committed = await probe.committed(tp)
            out[tp] = (max(starts[tp], committed) if committed is not None else starts[tp], ends[tp])
        return out

    async def depth(self) -> int:
        return sum(max(0, end - position) for position, end in (await self._waiting()).values())

    async def stats(self) -> QueueStats:
        """Depth is the group's lag in messages; the oldest age is read from the timestamp of
        the record at each lagging partition's committed offset (a consumer outside the group
        fetches one record per partition); dead letters are the dead topic's entries that no
        `contrackt dlq drop|replay` has settled (records cannot be deleted from a topic: a drop
        appends a marker, docs/adr/0013-operations.md), read only when the topic holds any."""
        waiting = await self._waiting()
        probe = await self._probe_started()
        dead_tps = await self._partitions(probe, self.dead_topic)
        dead = 0
        if dead_tps:
            ends = await probe.end_offsets(dead_tps)
            starts = await probe.beginning_offsets(dead_tps)
            if any(ends[tp] > starts[tp] for tp in dead_tps):
                from contrackt.adapters.queue.dead_kafka import KafkaDeadLetters

                letters = KafkaDeadLetters.for_queue(self)
                try:
                    dead = len(await letters.list(limit=1_000_000))
                finally:
                    await letters.close()
        lagging = {tp: position for tp, (position, end) in waiting.items() if end > position}
        depth = sum(max(0, end - position) for position, end in waiting.values())
        return QueueStats(depth, dead, await self._oldest_age(lagging) if lagging else 0.0)

    async def _oldest_age(self, positions: dict[TopicPartition, int]) -> float | None:
        if self._ager is None:
            ager = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                fetch_max_wait_ms=50,  # one record is all it needs: do not wait for more
                max_partition_fetch_bytes=64 * 1024,
            )
            await ager.start()
            self._ager = ager
        ager = self._ager
        ager.assign(list(positions))
        for tp, offset in positions.items():
            ager.seek(tp, offset)
        first: dict[TopicPartition, int] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while len(first) < len(positions) and loop.time() < deadline:
            got = await ager.getmany(*[tp for tp in positions if tp not in first], timeout_ms=200)
            for tp, records in got.items():
                if records and tp not in first:
                    first[tp] = records[0].timestamp
        if not first:
            return None  # nothing could be read in time: unknown, not zero
        return max(0.0, time.time() - min(first.values()) / 1000)

    async def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.cancel()
            await asyncio.gather(self._fetcher, return_exceptions=True)
            self._fetcher = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._consumer is not None:
            await self._commit()
            await self._consumer.stop()
            self._consumer = None
        if self._probe is not None:
            await self._probe.stop()
            self._probe = None
        if self._ager is not None:
            await self._ager.stop()
            self._ager = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
