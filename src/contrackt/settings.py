"""Settings from CONTRACKT_* environment variables (and .env)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|s|m|h)\s*$")
_PERIODS = {"second": 1.0, "s": 1.0, "minute": 60.0, "m": 60.0, "hour": 3600.0, "h": 3600.0}


def parse_rate(text: str) -> tuple[int, float]:
    """'30/minute' -> (30, 60.0)."""
    m = _RATE_RE.match(text)
    if not m:
        raise ValueError(f"rate limit must look like '30/minute', got {text!r}")
    return int(m.group(1)), _PERIODS[m.group(2)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONTRACKT_", env_file=".env", extra="ignore")

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
    # OCR children's network: auto (leave it when the kernel allows) | required | off
    ocr_network_isolation: Literal["auto", "required", "off"] = "auto"
    # OCR children's identity: auto (each child its own unprivileged uid when this process can
    # switch, i.e. runs as root) | off | a number (the first uid of the range to use)
    ocr_sandbox_uid: str = "auto"
    # seccomp filter in the children: auto (when libseccomp is present) | required | off
    ocr_seccomp: Literal["auto", "required", "off"] = "auto"
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
    # `contrackt worker`'s own listener: /v1/health/live, /v1/health/ready, /metrics (off: none)
    worker_listen: str = "127.0.0.1:9100"
    # A mounted PEM (Ed25519, PKCS#8) shared by every replica; unset: the key kept in the
    # database, wrapped by the key provider
    receipt_key_file: Path | None = None
    log_format: str = "auto"  # auto | console | json
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        parse_rate(self.rate_limit_extract)
        parse_rate(self.rate_limit_status)
        parse_rate(self.auth_failure_limit)
        if self.max_upload_mb <= 0 or self.max_pages <= 0 or self.max_image_pixels <= 0:
            raise ValueError("limits must be positive")
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
