"""Composition root: settings -> adapters -> services. The API lifespan and the worker both call it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from contrackt.adapters.db.engine import make_engine
from contrackt.adapters.db.uow import SqlUnitOfWorkFactory
from contrackt.bootstrap_ocr import known_engines as known_engines
from contrackt.bootstrap_ocr import make_extractor as make_extractor
from contrackt.domain.webhooks import RetryPolicy
from contrackt.ports.blobstore import BlobStore
from contrackt.ports.checkpoints import CheckpointSink
from contrackt.ports.clock import Clock, SystemClock
from contrackt.ports.deadletters import DeadLetterQueue
from contrackt.ports.extractor import Extractor
from contrackt.ports.keys import KeyProvider
from contrackt.ports.queue import JobQueue
from contrackt.ports.ratelimit import RateLimiter
from contrackt.ports.results import ResultStore
from contrackt.ports.signer import ReceiptSigner
from contrackt.ports.webhooks import WebhookTransport
from contrackt.services.intake import IntakeService
from contrackt.services.keyring import Keyring
from contrackt.services.listing import JobListing
from contrackt.services.processing import ProcessingService
from contrackt.services.purge import Sweeper
from contrackt.services.results import ResultService
from contrackt.services.tenants import TenantService
from contrackt.services.usage import UsageService
from contrackt.services.webhook_dispatch import WebhookDispatcher
from contrackt.services.webhooks import WebhookService
from contrackt.settings import Settings


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def make_blobstore(settings: Settings) -> BlobStore:
    url = settings.blob_url
    scheme = _scheme(url)
    if scheme == "file":
        from contrackt.adapters.blob.local import LocalBlobStore

        return LocalBlobStore(Path(urlparse(url).path))
    if scheme == "memory":
        from contrackt.adapters.blob.memory import MemoryBlobStore

        return MemoryBlobStore()
    if scheme == "s3":
        from contrackt.adapters.blob.s3 import S3BlobStore

        return S3BlobStore.from_url(url, endpoint_url=settings.s3_endpoint_url)
    raise ValueError(f"unsupported CONTRACKT_STORAGE_URL scheme: {scheme}")


def make_queue(settings: Settings) -> JobQueue:
    scheme = _scheme(settings.queue_url)
    if scheme == "memory":
        from contrackt.adapters.queue.memory import MemoryQueue

        return MemoryQueue()
    if scheme in ("redis", "rediss"):
        from contrackt.adapters.queue.redis_streams import RedisStreamsQueue

        return RedisStreamsQueue.from_url(settings.queue_url, claim_idle_s=settings.effective_lease_seconds)
    if scheme == "kafka":
        from contrackt.adapters.queue.kafka import KafkaQueue

        # Read ahead past any tenant's backlog, so no backlog hides another tenant's job.
        return KafkaQueue.from_url(settings.queue_url, read_ahead=max(100, 2 * settings.tenant_max_backlog))
    raise ValueError(f"unsupported CONTRACKT_QUEUE_URL scheme: {scheme}")


def make_dead_letters(settings: Settings, queue: JobQueue, uow: SqlUnitOfWorkFactory) -> DeadLetterQueue:
    """The dead-letter queue of ``queue`` (docs/adr/0013-operations.md). The in-process queue's
    own list lives inside `serve` (a `contrackt dlq` command is another process): there the
    database's failed jobs with a held document stand for it."""
    scheme = _scheme(settings.queue_url)
    if scheme == "memory":
        from contrackt.adapters.queue.dead_database import DatabaseDeadLetters

        return DatabaseDeadLetters(uow)
    if scheme in ("redis", "rediss"):
        from contrackt.adapters.queue.dead_redis import RedisDeadLetters
        from contrackt.adapters.queue.redis_streams import RedisStreamsQueue

        assert isinstance(queue, RedisStreamsQueue)
        return RedisDeadLetters.for_queue(queue)
    if scheme == "kafka":
        from contrackt.adapters.queue.dead_kafka import KafkaDeadLetters
        from contrackt.adapters.queue.kafka import KafkaQueue

        assert isinstance(queue, KafkaQueue)
        return KafkaDeadLetters.for_queue(queue)
    raise ValueError(f"unsupported CONTRACKT_QUEUE_URL scheme: {scheme}")


def make_checkpoint_sink(settings: Settings) -> CheckpointSink | None:
    """Where signed chain heads go outside the database; None when CONTRACKT_AUDIT_CHECKPOINT_URL is unset."""
    url = settings.audit_checkpoint_url
    if not url:
        return None
    if _scheme(url) == "file":
        from contrackt.adapters.checkpoints.file import FileCheckpointSink

        return FileCheckpointSink.from_url(url)
    from contrackt.adapters.checkpoints.s3 import S3CheckpointSink

    return S3CheckpointSink.from_url(
        url,
        endpoint_url=settings.s3_endpoint_url,
        lock_days=settings.audit_checkpoint_lock_days,
        lock_mode=settings.audit_checkpoint_lock_mode,
    )


def make_results(settings: Settings, uow: SqlUnitOfWorkFactory) -> ResultStore:
    scheme = _scheme(settings.results_url)
    if scheme == "sql":
        from contrackt.adapters.results.sql import SqlResultStore

        return SqlResultStore(uow)
    if scheme == "memory":
        from contrackt.adapters.results.memory import MemoryResultStore

        return MemoryResultStore()
    if scheme in ("redis", "rediss"):
        from contrackt.adapters.results.redis import RedisResultStore

        return RedisResultStore.from_url(settings.results_url)
    raise ValueError(f"unsupported CONTRACKT_RESULTS_URL scheme: {scheme}")


def make_key_provider(settings: Settings) -> KeyProvider:
    url = settings.keys_url
    scheme = _scheme(url)
    if scheme == "local":
        from contrackt.adapters.keys.local import LocalKeyProvider

        path = urlparse(url).path
        return LocalKeyProvider(Path(path) if path else settings.home / "master.key")
    if scheme == "kms":
        from contrackt.adapters.keys.kms import KmsKeyProvider

        return KmsKeyProvider.from_url(url)
    if scheme == "vault":
        from contrackt.adapters.keys.vault import VaultKeyProvider

        return VaultKeyProvider.from_url(url)
    raise ValueError(f"unsupported CONTRACKT_KEYS_URL scheme: {scheme}")


def make_rate_limiter(settings: Settings) -> RateLimiter:
    scheme = _scheme(settings.rate_limit_url)
    if scheme == "memory":
        from contrackt.adapters.ratelimit.memory import MemoryRateLimiter

        return MemoryRateLimiter()
    if scheme in ("redis", "rediss"):
        from contrackt.adapters.ratelimit.redis import RedisRateLimiter

        return RedisRateLimiter.from_url(settings.rate_limit_url)
    raise ValueError(f"unsupported CONTRACKT_RATE_LIMIT_URL scheme: {scheme}")


def make_receipt_signer(settings: Settings, uow: SqlUnitOfWorkFactory, keys: KeyProvider) -> ReceiptSigner:
    """One key for the whole deployment, never one per process: a mounted secret when
    CONTRACKT_RECEIPT_KEY_FILE is set (only read), else the key kept in the database,
    wrapped by the key provider (created once by whichever process needs it first)."""
    if settings.receipt_key_file is not None:
        from contrackt.adapters.keys.receipt_file import FileReceiptSigner

        return FileReceiptSigner(settings.receipt_key_file)
    from contrackt.adapters.keys.receipt_db import LEGACY_KEY_FILE, DatabaseReceiptSigner

    # An installation that had a per-home key file keeps it: its old receipts still verify.
    return DatabaseReceiptSigner(uow, keys, legacy_file=settings.home / LEGACY_KEY_FILE)


def make_webhook_transport(settings: Settings) -> WebhookTransport:
    from contrackt.adapters.webhooks.http import HttpWebhookTransport

    return HttpWebhookTransport(
        allow_private=settings.webhook_allow_private, timeout_s=settings.webhook_timeout_seconds
    )


@dataclass
class Container:
    settings: Settings
    clock: Clock
    uow: SqlUnitOfWorkFactory
    blobs: BlobStore
    queue: JobQueue
    results: ResultStore
    keys: KeyProvider
    keyring: Keyring
    limiter: RateLimiter
    tenants: TenantService
    intake: IntakeService
    reader: ResultService
    sweeper: Sweeper
    wake_dispatcher: asyncio.Event
    signer: ReceiptSigner
    webhooks: WebhookService
    listing: JobListing
    usage: UsageService
    extractor: Extractor | None = None
    processing: ProcessingService | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def attach_extractor(self, extractor: Extractor) -> ProcessingService:
        self.extractor = extractor
        self.processing = ProcessingService(
            self.uow,
            self.blobs,
            self.results,
            self.keyring,
            extractor,
            self.clock,
            lease_seconds=self.settings.effective_lease_seconds,
            result_ttl_seconds=self.settings.result_ttl_seconds,
            max_inflight=self.settings.tenant_max_inflight,
            replay_window_seconds=self.settings.replay_window_hours * 3600,
            searchable_pdf=self.settings.searchable_pdf,
        )
        return self.processing

    def webhook_dispatcher(self) -> WebhookDispatcher:
        s = self.settings
        return WebhookDispatcher(
            self.uow,
            self.keyring,
            self.webhooks.transport,
            self.clock,
            policy=RetryPolicy(
                base_seconds=s.webhook_retry_base_seconds,
                max_delay_seconds=s.webhook_retry_max_seconds,
                window_seconds=s.webhook_retry_window_seconds,
            ),
            timeout_s=s.webhook_timeout_seconds,
            max_concurrency=s.webhook_max_concurrency,
            hold_new_s=s.webhook_first_attempt_delay_seconds,
        )

    async def close(self) -> None:
        if self.extractor is not None:
            await self.extractor.close()
        for closeable in (self.queue, self.results, self.blobs, self.keys, self.limiter):
            await closeable.close()
        await self.uow.close()


def build(
    settings: Settings | None = None, *, clock: Clock | None = None, webhook_transport: WebhookTransport | None = None
) -> Container:
    """Wire adapters chosen by URL. No OCR children are started here (see attach_extractor)."""
    settings = settings or Settings()
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    clock = clock or SystemClock()
    uow = SqlUnitOfWorkFactory(make_engine(settings.db_url))
    blobs = make_blobstore(settings)
    queue = make_queue(settings)
    results = make_results(settings, uow)
    from contrackt.adapters.keys.measured import MeasuredKeyProvider
    from contrackt.metrics import set_tenant_label

    set_tenant_label(settings.metrics_tenant_label)  # a process-wide choice, made once at start-up
    keys: KeyProvider = MeasuredKeyProvider(make_key_provider(settings))
    keyring = Keyring(keys, uow, clock)
    wake = asyncio.Event()
    return Container(
        settings=settings,
        clock=clock,
        uow=uow,
        blobs=blobs,
        queue=queue,
        results=results,
        keys=keys,
        keyring=keyring,
        limiter=make_rate_limiter(settings),
        tenants=TenantService(uow, keyring, clock),
        intake=IntakeService(
            uow,
            blobs,
            keyring,
            clock,
            known_engines(settings),
            settings.max_queue_depth,
            wake_dispatcher=wake,
            tenant_max_backlog=settings.tenant_max_backlog,
            max_pages=settings.max_pages,
        ),
        reader=ResultService(uow, results, blobs, keyring, clock),
        sweeper=Sweeper(uow, blobs, results, queue, clock, stale_pending_seconds=settings.stale_pending_seconds),
        wake_dispatcher=wake,
        signer=make_receipt_signer(settings, uow, keys),
        webhooks=WebhookService(
            uow,
            keyring,
            clock,
            webhook_transport or make_webhook_transport(settings),
            allow_private=settings.webhook_allow_private,
            max_per_tenant=settings.webhook_max_per_tenant,
        ),
        listing=JobListing(uow, keyring),
        usage=UsageService(uow, clock),
    )
