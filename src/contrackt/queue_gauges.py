"""Queue figures read from the backend for /metrics: cached, time-limited, with their staleness.

A scrape never waits on a slow backend for long, and never fails because of one: the figures
are read at most once per ``ttl_s`` (a failed read too, so an outage costs one slow scrape per
window, not every scrape), each read is cut off after ``timeout_s``, and the last good figures
stay on show with ``contrackt_queue_stats_age_seconds`` saying how old they are and
``contrackt_queue_stats_up`` whether the last read worked (docs/adr/0012-observability.md).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator

import structlog
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from contrackt.ports.queue import JobQueue, QueueStats

log = structlog.get_logger("contrackt.metrics")

TTL_S = 10.0
TIMEOUT_S = 1.5


class QueueGauges(Collector):
    def __init__(
        self, ttl_s: float = TTL_S, timeout_s: float = TIMEOUT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._queue: JobQueue | None = None
        self._stats: QueueStats | None = None
        self._read_at: float | None = None  # when the figures were last read successfully
        self._tried_at: float | None = None
        self._up = False
        self._failures = 0

    async def refresh(self, queue: JobQueue) -> None:
        """Read the figures if the cached ones are older than ``ttl_s`` (or from another queue)."""
        now = self._clock()
        if queue is not self._queue:
            self._queue, self._stats, self._read_at, self._tried_at, self._up = queue, None, None, None, False
        elif self._tried_at is not None and now - self._tried_at < self.ttl_s:
            return
        self._tried_at = now  # set before awaiting: a concurrent scrape serves the cache meanwhile
        try:
            stats = await asyncio.wait_for(queue.stats(), self.timeout_s)
        except Exception as exc:  # the backend is down or slow: keep the last figures, say so
            self._up = False
            self._failures += 1
            log.warning("metrics.queue_stats.failed", error=type(exc).__name__)
            return
        self._stats, self._read_at, self._up = stats, self._clock(), True

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(None))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(self._stats))

    def _families(self, stats: QueueStats | None) -> list[Metric]:
        depth = GaugeMetricFamily(
            "contrackt_queue_depth", "Messages waiting, delayed or in flight on the job queue (NaN: never read)"
        )
        dead = GaugeMetricFamily("contrackt_queue_dead_letters", "Messages on the dead-letter queue (NaN: never read)")
        age = GaugeMetricFamily(
            "contrackt_queue_oldest_message_age_seconds",
            "Age of the oldest message not yet handed to a worker, since it was (re-)enqueued (absent: not known)",
        )
        stale = GaugeMetricFamily(
            "contrackt_queue_stats_age_seconds", "Seconds since the queue figures were last read (NaN: never)"
        )
        up = GaugeMetricFamily("contrackt_queue_stats_up", "1 if the last read of the queue figures worked")
        failures = CounterMetricFamily(
            "contrackt_queue_stats_failures", "Reads of the queue figures that failed or timed out"
        )
        families: list[Metric] = [depth, dead, age, stale, up, failures]
        if self._tried_at is None:
            return families  # nothing asked yet (names only, for the registry and the exposition)
        depth.add_metric([], float(stats.depth) if stats else math.nan)
        dead.add_metric([], float(stats.dead_letters) if stats else math.nan)
        if stats is not None and stats.oldest_age_s is not None:
            age.add_metric([], stats.oldest_age_s)
        stale.add_metric([], self._clock() - self._read_at if self._read_at is not None else math.nan)
        up.add_metric([], 1.0 if self._up else 0.0)
        failures.add_metric([], float(self._failures))
        return families


QUEUE_GAUGES = QueueGauges()
REGISTRY.register(QUEUE_GAUGES)
