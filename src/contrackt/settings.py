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
    result_ttl_seconds: int = 900
    workers: int = 0  # OCR child processes; 0 = number of cores
    concurrency: int = 0  # jobs in flight per worker process; 0 = workers
    ocr_engine: str = "rapidocr"  # default engine: rapidocr | rapidocr-fast | tesseract
    ocr_engines: str = ""  # engines a request may pick (comma-separated); empty = every installed one
    ocr_memory_limit_mb: int = 2048
    # OCR children's network: auto (leave it when the kernel allows) | required | off
    ocr_network_isolation: Literal["auto", "required", "off"] = "auto"
    page_timeout_seconds: float = 120.0
    job_timeout_seconds: float = 900.0
    lease_seconds: float = 0.0  # 0 = job_timeout_seconds + 60
    stale_pending_seconds: float = 60.0
    sweep_interval_seconds: float = 15.0
    shutdown_grace_seconds: float = 30.0
    rate_limit_extract: str = "30/minute"
    rate_limit_status: str = "300/minute"
    max_queue_depth: int = 1000
    log_format: str = "auto"  # auto | console | json
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        parse_rate(self.rate_limit_extract)
        parse_rate(self.rate_limit_status)
        if self.max_upload_mb <= 0 or self.max_pages <= 0:
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
        return self.lease_seconds or (self.job_timeout_seconds + 60.0)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024
