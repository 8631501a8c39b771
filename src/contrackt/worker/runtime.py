"""The worker runtime: consumer tasks over one OCR child pool, plus periodic loops."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog

from contrackt.bootstrap import Container, make_checkpoint_sink, make_extractor
from contrackt.ports.checkpoints import CheckpointSink
from contrackt.ports.extractor import Extractor
from contrackt.services.checkpoints import CheckpointService
from contrackt.services.dispatch import relay_outbox
from contrackt.services.processing import backoff_seconds
from contrackt.services.purge import SweepReport
from contrackt.services.retention import RetentionService

log = structlog.get_logger("contrackt.worker")


async def _forever(name: str, step: Callable[[], Awaitable[object]], pause: Callable[[], Awaitable[object]]) -> None:
    """Run ``step`` repeatedly; an error is logged and retried, never fatal."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(f"{name}.error")
            await asyncio.sleep(1.0)
        await pause()


def relay_loop(c: Container) -> asyncio.Task[None]:
    async def pause() -> None:
        try:
            await asyncio.wait_for(c.wake_dispatcher.wait(), 1.0)
        except TimeoutError:
            pass
        c.wake_dispatcher.clear()

    return asyncio.create_task(_forever("outbox", lambda: relay_outbox(c.uow, c.queue, c.clock), pause))


class WorkerRuntime:
    def __init__(self, container: Container, extractor: Extractor | None = None) -> None:
        self.c = container
        self.extractor = extractor or make_extractor(container.settings)
        self.processing = container.attach_extractor(self.extractor)
        self.webhooks = container.webhook_dispatcher()
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self._stopping = asyncio.Event()
        self._consumers: list[asyncio.Task[None]] = []
        self._loops: list[asyncio.Task[None]] = []
        self._ready = False
        self._busy = 0
        self._running: Counter[str] = Counter()  # jobs in flight here, per tenant (no zero entries)
        self._regular_busy = 0
        self._saturated = asyncio.Event()  # every regular consumer holds a job
        self._sink: CheckpointSink | None = None

    def ready(self) -> bool:
        return self._ready

    def alive(self) -> bool:
        tasks = self._consumers + self._loops
        return not any(t.done() for t in tasks) or self._stopping.is_set()

    async def start(self, *, relay: bool = True) -> None:
        await self.extractor.start()
        self._ready = True
        if self.c.settings.queue_url.startswith("memory://"):
            # The in-process queue died with the previous process: refill it from the database.
            report = SweepReport()
            await self.c.sweeper.reconcile(report, all_unfinished=True)
            log.info("worker.recovered", jobs_requeued=report.jobs_requeued)
        n = self.c.settings.effective_concurrency
        self._consumers = [asyncio.create_task(self._consume(f"{self.name}-{i}")) for i in range(n)]
        # One spare consumer: while every regular consumer holds a job, it takes work only
        # from tenants with nothing in flight here. So while one tenant's long jobs hold every
        # regular slot, another tenant's job starts at once instead of after one of them (its
        # pages then share the OCR children with theirs).
        self._consumers.append(asyncio.create_task(self._consume(f"{self.name}-spare", spare=True)))
        if relay:
            self._loops.append(relay_loop(self.c))
        self._loops.append(asyncio.create_task(self._sweep_loop()))
        self._loops.append(asyncio.create_task(self._webhook_loop()))
        if self.c.settings.webhook_allow_private:
            log.warning("webhook.private_allowed", reason="CONTRACKT_WEBHOOK_ALLOW_PRIVATE: http and private addresses")
        self._loops += self._operation_loops()
        log.info("worker.started", workers=n, consumer=self.name)

    async def _sweep_loop(self) -> None:
        async def pause() -> None:
            await asyncio.sleep(self.c.settings.sweep_interval_seconds)

        await _forever("sweeper", self.c.sweeper.sweep, pause)

    async def _webhook_loop(self) -> None:
        """The webhook dispatcher: its events live in the database, so a restart loses none."""

        async def pause() -> None:
            await asyncio.sleep(self.c.settings.webhook_poll_seconds)

        await _forever("webhooks", self.webhooks.step, pause)

    def _operation_loops(self) -> list[asyncio.Task[None]]:
        """Retention and chain-head checkpoints on their own schedules (docs/adr/0013-operations.md).

        Every worker runs them: pruning a chain is idempotent (two runs at once: one checkpoint
        wins, the other skips that chain), and an export is skipped when the sink already has
        a recent one. A random first delay spreads workers started together.
        """
        s = self.c.settings
        retention = RetentionService(self.c.uow, self.c.signer, self.c.clock, retention_days=s.audit_retention_days)
        loops = [asyncio.create_task(self._every("retention", s.retention_interval_seconds, retention.apply))]
        self._sink = make_checkpoint_sink(s)
        if self._sink is not None:
            checkpoints = CheckpointService(self.c.uow, self.c.signer, self.c.clock, self._sink)
            interval = timedelta(seconds=s.audit_checkpoint_interval_seconds)

            async def export() -> object:
                return await checkpoints.export_if_due(interval)

            every = s.audit_checkpoint_interval_seconds
            loops.append(asyncio.create_task(self._every("audit.checkpoint", every, export)))
        return loops

    async def _every(self, name: str, interval_s: float, step: Callable[[], Awaitable[object]]) -> None:
        await asyncio.sleep(random.uniform(1.0, min(60.0, max(1.0, interval_s))))  # noqa: S311 - jitter, not secrecy

        async def pause() -> None:
            await asyncio.sleep(max(1.0, interval_s))

        await _forever(name, step, pause)

    async def _consume(self, consumer: str, *, spare: bool = False) -> None:
        regular_slots = self.c.settings.effective_concurrency
        while not self._stopping.is_set():
            if spare and not self._saturated.is_set():
                try:
                    await asyncio.wait_for(self._saturated.wait(), 1.0)
                except TimeoutError:
                    pass
                continue
            try:
                # The live tenant counts: a tenant that starts a job here meanwhile is skipped too.
                skip = self._running if spare else ()
                delivery = await self.c.queue.receive(consumer, 1.0, skip_tenants=skip)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("queue.receive.error")
                await asyncio.sleep(1.0)
                continue
            if delivery is None:
                continue
            tenant = delivery.message.tenant_id
            self._busy += 1
            self._running[tenant] += 1
            if not spare:
                self._regular_busy += 1
                if self._regular_busy >= regular_slots:
                    self._saturated.set()
            try:
                await self.processing.handle(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never lose the consumer. The job stays in the database; hand the
                # message back so the queue does not hold it (Kafka would stall the
                # partition's committed offset), and the claim decides what happens.
                log.exception("job.handle.error")
                try:
                    await delivery.retry(backoff_seconds(delivery.deliveries))
                except Exception:
                    log.exception("queue.retry.error")
            finally:
                self._busy -= 1
                self._running[tenant] -= 1
                if not self._running[tenant]:
                    del self._running[tenant]
                if not spare:
                    self._regular_busy -= 1
                    self._saturated.clear()

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; let jobs in flight finish within ``grace_s``, then cancel them.

        A cancelled job keeps its row in `processing`; its lease runs out and the
        reconciler hands it to another worker (or to this one after a restart).
        """
        self._stopping.set()
        self._ready = False  # readiness goes red first, so load balancers stop sending work
        if self._consumers:
            _, pending = await asyncio.wait(self._consumers, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._consumers, return_exceptions=True)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        # Attempts in flight get a moment; a cancelled one is sent again (same webhook-id) later.
        await self.webhooks.close(min(5.0, grace_s))
        if self._sink is not None:
            await self._sink.close()
        await self.extractor.close()
        log.info("worker.stopped")
