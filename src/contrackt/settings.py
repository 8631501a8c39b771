"""Settings from CONTRACKT_* environment variables (and .env)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from contrackt.secret_files import SecretFilesSource

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|s|m|h)\s*$")
_PERIODS = {"second": 1.0, "s": 1.0, "minute": 60.0, "m": 60.0, "hour": 3600.0, "h": 3600.0}


def parse_rate(text: str) -> tuple[int, float]:
    """'30/minute' -> (30, 60.0)."""
    m = _RATE_RE.match(text)
    if not m:
        raise ValueError(f"rate limit must look like '30/minute', got {text!r}")
    return int(m.group(1)), _PERIODS[m.group(2)]


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must not print the other settings (URLs with passwords)
    model_config = SettingsConfigDict(
        env_prefix="CONTRACKT_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    env: str = Field("dev", description="dev | production")
    home: Path = Path("./.contrackt")

    database_url: str | None = None  # default: SQLite under home
    database_admin_url: SecretStr | None = None
    storage_url: str | None = None  # default: file://{home}/blobs
    s3_endpoint_url: str | None = None
    queue_url: str = "memory://"
    results_url: str = "sql://"
    keys_url: str = "local://"
    rate_limit_url: str = "memory://"

    max_upload_mb: int = 50
    max_pages: int = 500
    # pixels one image frame may declare (checked before decoding; a 600 dpi A4 colour scan is 35 M)
    max_image_pixels: int = 50_000_000
    # build a searchable PDF for each job (kept with its result, same TTL); false: format=pdf answers 409
    searchable_pdf: bool = True
    result_ttl_seconds: int = 900
    workers: int = 0  # OCR child processes; 0 = number of cores
    concurrency: int = 0  # jobs in flight per worker process; 0 = workers
    ocr_engine: str = "rapidocr"  # default engine: rapidocr | rapidocr-fast | tesseract
    ocr_engines: str = ""  # engines a request may pick (comma-separated); empty = every installed one
    ocr_memory_limit_mb: int = 2048
    # children per worker that read PDFs' text layers while every OCR slot is taken (0: none)
    ocr_text_slots: int = Field(default=1, ge=0, le=8)
    # OCR children's network: auto (leave it when the kernel allows) | required | off
    ocr_network_isolation: Literal["auto", "required", "off"] = "auto"
    # OCR children's identity: auto (each child its own unprivileged uid when this process can
    # switch, i.e. runs as root) | off | a number (the first uid of the range to use)
    ocr_sandbox_uid: str = "auto"
    # seccomp filter in the children: auto (when libseccomp is present) | required | off
    ocr_seccomp: Literal["auto", "required", "off"] = "auto"
    # render scale per scanned page from its native resolution and text height (ADR 0017);
    # false: every page at the engine's fixed zoom
    ocr_adaptive_scale: bool = True
    # fax pages (bilevel, <= 240 dpi) cleaned before OCR: vertical streaks and specks (ADR 0017 §6)
    ocr_fax_cleanup: bool = True
    # the fast profile's unsure lines (< 0.95) read again by the default engine's recogniser
    # (ADR 0017 §7): fax (on fax pages) | all (also pages where they are >= 25 % of the lines) | off
    ocr_line_reread: Literal["fax", "all", "off"] = "fax"
    # where the default engine's models run (ADR 0020): cpu (each OCR child) | cuda (this
    # worker's GPU, for all its children; without one it says why and stays on the CPU) |
    # auto (the GPU when there is one). Experimental: the GPU path is correct but not yet fast
    ocr_device: Literal["cpu", "cuda", "auto"] = "cpu"
    ocr_device_precision: Literal["fp32", "tf32", "fp16"] = "fp16"
    page_timeout_seconds: float = 120.0
    job_timeout_seconds: float = 900.0
    # Output caps (a job over any of them fails with `output_limit`, permanently)
    max_text_chars: int = 5_000_000  # characters in a whole document
    max_page_chars: int = 100_000  # characters on one page
    max_lines_per_page: int = 2_000
    max_lines: int = 200_000  # lines in a whole document
    # A job's claim lasts this long and is renewed by heartbeats (every third of it):
    # a job whose worker died is taken up again within about lease + sweep interval.
    lease_seconds: float = 30.0
    stale_pending_seconds: float = 60.0
    sweep_interval_seconds: float = 15.0
    shutdown_grace_seconds: float = 30.0
    rate_limit_extract: str = "30/minute"
    rate_limit_status: str = "300/minute"
    max_queue_depth: int = 1000
    # Fair share: per tenant, overridable per tenant (tenants.max_inflight / max_backlog)
    tenant_max_inflight: int = 4  # jobs of one tenant being processed at once
    tenant_max_backlog: int = 200  # unfinished jobs of one tenant before 429 backlog_full
    # The edge
    body_timeout_seconds: float = 60.0  # whole request body, else 408 body_timeout
    max_multipart_parts: int = 16
    # bodies being read and sealed at once, per API process (503 beyond); each holds up to
    # max_upload_mb, twice that while sealing: 8 x 50 MB fits the API pod's 1 GiB (ADR 0008)
    max_concurrent_uploads: int = 8
    max_uploads_per_key: int = 4  # bodies being read at once, per API key (429 beyond)
    max_streams_per_key: int = 8  # open event streams per API key (429 beyond)
    auth_failure_limit: str = "20/minute"  # failed authentications per client address (429 beyond)
    # proxies (addresses or networks, comma-separated) whose X-Forwarded-For is believed; default none
    trusted_proxies: str = ""
    # HMAC key for client addresses in the rate limiter; unset: a random key per process
    client_hash_key: SecretStr | None = None
    # /metrics: public (on the API listener) | off | host:port (a separate listener)
    metrics_listen: str = "public"
    public_docs: bool = True  # /docs, /redoc and /openapi.json on the API listener
    console: bool = True  # the web console's static files at /console (docs/adr/0018-console.md)
    # `contrackt worker`'s own listener: /v1/health/live, /v1/health/ready, /metrics (off: none)
    worker_listen: str = "127.0.0.1:9100"
    # a `tenant` label on a few counters (jobs, pages, refusals): the operator's choice, one
    # series per tenant and label value (docs/adr/0012-observability.md)
    metrics_tenant_label: bool = False
    # A mounted PEM (Ed25519, PKCS#8) shared by every replica; unset: the key kept in the
    # database, wrapped by the key provider
    receipt_key_file: Path | None = None
    # Webhooks. allow_private: http and loopback/private (RFC 1918, ULA, CGNAT) addresses, for tests
    # and private deployments; link-local (cloud metadata), multicast and reserved stay refused.
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 10.0  # one delivery attempt, connection to last byte read
    webhook_max_concurrency: int = 8  # deliveries in flight per worker process
    webhook_max_per_tenant: int = 10  # endpoints per tenant (409 too_many_webhooks beyond)
    webhook_retry_base_seconds: float = 5.0  # first retry after 2.5-5 s, doubling each time
    webhook_retry_max_seconds: float = 7200.0  # longest wait between two attempts
    webhook_retry_window_seconds: float = 86400.0  # retry for this long, then disable the endpoint
    webhook_first_attempt_delay_seconds: float = 0.0  # hold new events this long before the first attempt
    webhook_poll_seconds: float = 1.0  # how often a dispatcher looks for due events
    # Operations (docs/adr/0013-operations.md). A job failing with a retryable code keeps its
    # sealed document this long, so `contrackt dlq replay` can run it again (0: destroyed at
    # failure, a replay then needs the client to resubmit).
    replay_window_hours: float = 2.0
    audit_retention_days: int = 1826  # jobs and audit rows older than this are pruned (5 years)
    retention_interval_seconds: float = 3600.0  # how often a worker runs the retention
    # Signed chain-head checkpoints outside the database: file:///dir or s3://bucket/prefix (unset: none)
    audit_checkpoint_url: str | None = None
    audit_checkpoint_interval_seconds: float = 3600.0
    # S3 object lock on each exported checkpoint: days kept, and the mode (0: the bucket's default)
    audit_checkpoint_lock_days: int = 0
    audit_checkpoint_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE"
    log_format: str = "auto"  # auto | console | json
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # CONTRACKT_<SECRET>_FILE (secret_files.SECRET_SETTINGS): a mounted secret, read at start-up;
        # set beside CONTRACKT_<SECRET> it is an error, so its place among the env sources is moot.
        return init_settings, env_settings, SecretFilesSource(settings_cls), dotenv_settings, file_secret_settings

    @model_validator(mode="after")
    def _check(self) -> Settings:
        parse_rate(self.rate_limit_extract)
        parse_rate(self.rate_limit_status)
        parse_rate(self.auth_failure_limit)
        if self.max_upload_mb <= 0 or self.max_pages <= 0 or self.max_image_pixels <= 0:
            raise ValueError("limits must be positive")
        if min(self.webhook_timeout_seconds, self.webhook_retry_base_seconds, self.webhook_poll_seconds) <= 0 or (
            min(self.webhook_max_concurrency, self.webhook_max_per_tenant) < 1
        ):
            raise ValueError("webhook timeouts, intervals and caps must be positive")
        if self.audit_retention_days < 1:
            raise ValueError("CONTRACKT_AUDIT_RETENTION_DAYS must be at least 1")
        if self.replay_window_hours < 0 or self.audit_checkpoint_lock_days < 0:
            raise ValueError(
                "CONTRACKT_REPLAY_WINDOW_HOURS and CONTRACKT_AUDIT_CHECKPOINT_LOCK_DAYS must not be negative"
            )
        anchor = self.audit_checkpoint_url
        if anchor and anchor.split("://", 1)[0] not in ("file", "s3"):
            raise ValueError("CONTRACKT_AUDIT_CHECKPOINT_URL must be file:///dir or s3://bucket/prefix")
        if anchor and anchor.startswith("s3://") and self.blob_url.startswith("s3://"):
            if anchor[5:].split("/", 1)[0] == self.blob_url[5:].split("/", 1)[0]:
                # The documents' bucket expires what it holds after a day and refuses default
                # retention; checkpoints must outlive both, out of the service's reach.
                raise ValueError("CONTRACKT_AUDIT_CHECKPOINT_URL needs a bucket of its own, not the documents' bucket")
        if self.env == "production":
            if self.keys_url.startswith("local://") and not os.environ.get("CONTRACKT_ALLOW_LOCAL_KEYS"):
                raise ValueError(
                    "production refuses the local master key file; set CONTRACKT_KEYS_URL "
                    "to kms:// or vault:// (or CONTRACKT_ALLOW_LOCAL_KEYS=1 to accept the risk)"
                )
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.home / 'contrackt.db').resolve()}"

    @property
    def blob_url(self) -> str:
        return self.storage_url or f"file://{(self.home / 'blobs').resolve()}"

    @property
    def ocr_engine_list(self) -> list[str]:
        return [e.strip() for e in self.ocr_engines.split(",") if e.strip()]

    @property
    def effective_workers(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    @property
    def effective_concurrency(self) -> int:
        return self.concurrency or self.effective_workers

    @property
    def effective_lease_seconds(self) -> float:
        return self.lease_seconds if self.lease_seconds > 0 else 30.0

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024
