"""The job queue's own cost: publish, receive and ack ``--messages`` messages spread over
``--tenants`` tenants with ``--consumers`` concurrent consumers, per backend.

    .venv/bin/python -m bench.queue                          # memory, redis, kafka
    .venv/bin/python -m bench.queue --backends redis --messages 5000 --tenants 50

Redis and Kafka come from ``.test-services/env`` (``scripts/services.sh``); each run uses a
new stream/topic and removes what it created (Redis). Printed per backend: messages per
second for publishing and for receive + ack, and the largest receive latency seen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def make(kind: str, name: str) -> Any:
    sys.path.insert(0, str(REPO))
    from tests.contract.services import service

    if kind == "memory":
        from contrackt.adapters.queue.memory import MemoryQueue

        return MemoryQueue()
    if kind == "redis":
        from contrackt.adapters.queue.redis_streams import RedisStreamsQueue

        return RedisStreamsQueue.from_url(f"{service('REDIS')}/0/{name}", claim_idle_s=30.0)
    from contrackt.adapters.queue.kafka import KafkaQueue

    return KafkaQueue.from_url(f"kafka://{service('KAFKA')}/{name}?partitions=6&group={name}")


async def run(kind: str, messages: int, tenants: int, consumers: int) -> dict[str, Any]:
    from contrackt.domain.jobs import JobMessage

    name = f"ctk-bench-queue-{os.getpid()}-{int(time.time())}"
    q = make(kind, name)
    try:
        await q.receive("warm-up", 0.5)  # Kafka: join the group before the clock starts
        started = time.perf_counter()
        for n in range(messages):
            tenant = f"tenant-{n % tenants}"
            await q.publish(JobMessage(f"job-{n}", tenant, f"{tenant}/job-{n}.enc"))
        published = time.perf_counter() - started
        got = 0
        worst = 0.0

        async def consume(c: int) -> None:
            nonlocal got, worst
            while got < messages:
                t0 = time.perf_counter()
                d = await q.receive(f"consumer-{c}", 2.0)
                if d is None:
                    continue
                worst = max(worst, time.perf_counter() - t0)
                got += 1
                await d.ack()

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(consume(c) for c in range(consumers))), 600)
        consumed = time.perf_counter() - started
        return {
            "backend": kind,
            "messages": messages,
            "tenants": tenants,
            "consumers": consumers,
            "publish_per_s": round(messages / published),
            "receive_ack_per_s": round(messages / consumed),
            "max_receive_ms": round(worst * 1000, 1),
        }
    finally:
        await q.close()
        if kind == "redis":
            from tests.contract.services import drop_redis_queue, service

            await drop_redis_queue(service("REDIS"), name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="memory,redis,kafka")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--consumers", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps({"load": os.getloadavg()}))
    for kind in args.backends.split(","):
        print(json.dumps(asyncio.run(run(kind, args.messages, args.tenants, args.consumers))))


if __name__ == "__main__":
    main()
