"""Tenants and API keys (pure)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

API_KEY_PREFIX = "ctk"


@dataclass
class Tenant:
    id: str
    name: str
    created_at: datetime
    fingerprint_key_wrapped: bytes | None = None
    delete_on_read: bool = False
    rate_limit_extract: str | None = None  # e.g. "30/minute"; None: deployment default
    rate_limit_status: str | None = None
    erased_at: datetime | None = None
    # Fair share; None: the deployment's CONTRACKT_TENANT_MAX_INFLIGHT / _MAX_BACKLOG
    max_inflight: int | None = None  # jobs being processed at once
    max_backlog: int | None = None  # unfinished jobs (pending + processing)


@dataclass
class ApiKey:
    id: str
    tenant_id: str
    prefix: str
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def generate_api_key() -> tuple[str, str, str]:
    """A new key: (full key shown once, lookup prefix, SHA-256 hex to store)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    full = f"{API_KEY_PREFIX}_{prefix}_{secret}"
    return full, prefix, hash_api_key(full)


def hash_api_key(full_key: str) -> str:
    return hashlib.sha256(full_key.encode()).hexdigest()


def split_api_key(full_key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    parts = full_key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or len(parts[1]) != 12:
        return None
    return parts[1]


def key_matches(full_key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(full_key), stored_hash)


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from an API key."""

    tenant_id: str
    api_key_id: str
    delete_on_read: bool = False
    rate_limit_extract: str | None = None
    rate_limit_status: str | None = None
    max_inflight: int | None = None
    max_backlog: int | None = None
