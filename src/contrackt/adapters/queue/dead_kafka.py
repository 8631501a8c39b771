"""Dead letters on Kafka: the queue's ``{topic}.dead`` topic, read from its start.

A Kafka record cannot be deleted, so removing an entry appends a *settle marker*
(``{"settles": "<partition>-<offset>", "outcome": ...}``) to the same topic; a listing folds
the markers away. An entry's id is ``<partition>-<offset>``; its time is the record's
timestamp. Entries and markers both expire with the topic's retention (the broker's default
unless the operator sets ``retention.ms`` on the dead topic).

Two operators removing the same entry at the same moment may both append a marker (both
calls answer True); the database, not the marker, decides what a replay does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contrackt.adapters.queue.kafka import KafkaQueue
from contrackt.domain.jobs import JobMessage
from contrackt.ports.deadletters import DeadLetter


class KafkaDeadLetters:
    def __init__(self, bootstrap: str, dead_topic: str, *, read_timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.dead_topic = dead_topic
        self.read_timeout_s = read_timeout_s
        self._producer: AIOKafkaProducer | None = None

    @classmethod
    def for_queue(cls, queue: KafkaQueue) -> KafkaDeadLetters:
        return cls(queue.bootstrap, queue.dead_topic)

    async def _read(self) -> tuple[dict[str, DeadLetter], set[str]]:
        """Every entry of the topic (by id, in offset order) and every settled id."""
        entries: dict[str, DeadLetter] = {}
        settled: set[str] = set()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self.dead_topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self.dead_topic) or set()
            tps = [TopicPartition(self.dead_topic, p) for p in sorted(partitions)]
            if not tps:
                return entries, settled  # nothing ever died
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            left = {tp for tp in tps if ends[tp] > 0}
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
            while left:
                batch = await consumer.getmany(*left, timeout_ms=int(self.read_timeout_s * 1000))
                if not batch:
                    raise TimeoutError(f"the dead-letter topic {self.dead_topic} did not answer in time")
                for tp, records in batch.items():
                    for record in records:
                        self._fold(tp, record, entries, settled)
                    if await consumer.position(tp) >= ends[tp]:
                        left.discard(tp)
        finally:
            await consumer.stop()
        return entries, settled

    @staticmethod
    def _fold(tp: TopicPartition, record: Any, entries: dict[str, DeadLetter], settled: set[str]) -> None:
        try:
            body = json.loads(record.value)
            if "settles" in body:
                settled.add(str(body["settles"]))
                return
            message = JobMessage.from_dict(body["job"])
            deliveries = int(body.get("deliveries", 0))
        except (KeyError, TypeError, ValueError):
            return  # not one of ours
        ident = f"{tp.partition}-{record.offset}"
        at = datetime.fromtimestamp(record.timestamp / 1000, UTC) if record.timestamp else None
        entries[ident] = DeadLetter(ident, message, str(body.get("reason", "")), deliveries, at)

    async def _live(self) -> dict[str, DeadLetter]:
        entries, settled = await self._read()
        return {ident: e for ident, e in entries.items() if ident not in settled}

    async def list(self, limit: int = 1000) -> list[DeadLetter]:
        oldest = datetime.min.replace(tzinfo=UTC)
        live = sorted((await self._live()).values(), key=lambda e: e.dead_at or oldest)
        return live[: max(0, limit)]

    async def get(self, entry_id: str) -> DeadLetter | None:
        return (await self._live()).get(entry_id)

    async def remove(self, entry_id: str, outcome: str) -> bool:
        if entry_id not in await self._live():
            return False
        if self._producer is None:
            # Idempotent producers need InitProducerId, which the tansu broker in tests refuses.
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=False)
            await producer.start()
            self._producer = producer
        marker = {"settles": entry_id, "outcome": outcome[:40]}
        await self._producer.send_and_wait(self.dead_topic, json.dumps(marker).encode())
        return True

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
