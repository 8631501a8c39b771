"""Signed deletion receipts (Ed25519): what was destroyed, and when, for one job.

A receipt is a JSON object. Its signature covers the canonical JSON of every
other field (keys sorted, no spaces, ASCII only), so anyone holding the public
key (``GET /v1/receipt-key``) can verify it offline (``contrackt receipt verify``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contrackt.domain.audit import AuditAction
from contrackt.domain.errors import ContracktError, NotFound
from contrackt.domain.ids import parse_id
from contrackt.domain.tenants import Principal
from contrackt.metrics import RECEIPT_KEY_FAILURES
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWorkFactory
from contrackt.ports.signer import ReceiptSigner
from contrackt.services.keyring import Keyring, document_sha256

log = structlog.get_logger("contrackt.receipts")

RECEIPT_TYPE_V1 = "contrackt.deletion-receipt.v1"
# Everything a v1 receipt carries, the signature aside (issued before receipts named the document's hash).
RECEIPT_FIELDS_V1 = (
    "type",
    "job_id",
    "tenant_id",
    "fingerprint",
    "received_at",
    "completed_at",
    "purged_at",
    "destroyed",
    "result_sha256",
    "issued_at",
    "key_id",
)
# v2 adds the document's plain SHA-256, so a client can tie the receipt to its own file.
RECEIPT_TYPE = "contrackt.deletion-receipt.v2"
RECEIPT_FIELDS = (*RECEIPT_FIELDS_V1, "document_sha256")
# What `verify_receipt` accepts: each type with exactly its own fields.
RECEIPT_TYPES = {RECEIPT_TYPE_V1: RECEIPT_FIELDS_V1, RECEIPT_TYPE: RECEIPT_FIELDS}
# "searchable_pdf" is a part of the result (destroyed with it); named when the job had one
_DESTROYED_ORDER = ("document", "result", "searchable_pdf")


class NotPurged(ContracktError):
    status, code, title = 409, "not_purged", "The document has not been destroyed yet"


class ReceiptKeyUnavailable(ContracktError):
    """The signing key could not be loaded (secret not mounted, key provider unreachable)."""

    status, code, title = 503, "receipt_key_unavailable", "Receipts cannot be signed right now"


class ReceiptInvalid(Exception):
    """A receipt failed verification; the message says why."""


def key_id_for(public_key_raw: bytes) -> str:
    """Fingerprint of a raw Ed25519 public key: the first 128 bits of its SHA-256, hex."""
    return hashlib.sha256(public_key_raw).hexdigest()[:32]


def public_key_pem(public_key_raw: bytes) -> str:
    return (
        Ed25519PublicKey.from_public_bytes(public_key_raw)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def canonical_bytes(receipt: dict[str, Any]) -> bytes:
    """The signed bytes: every field but ``signature``, canonical JSON."""
    body = {k: v for k, v in receipt.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def parse_public_key(data: bytes) -> bytes:
    """A raw 32-byte Ed25519 public key from a PEM file, the JSON of GET /v1/receipt-key,
    base64 of the raw key, or the raw bytes themselves."""
    if len(data) == 32:
        return data  # raw key bytes
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text)
        except ValueError as exc:
            raise ReceiptInvalid("the public key file is not a valid PEM key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ReceiptInvalid("the public key is not an Ed25519 key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if text.startswith(b"{"):
        try:
            text = str(json.loads(text)["public_key"]).encode()
        except (ValueError, KeyError, TypeError) as exc:
            raise ReceiptInvalid("the public key JSON has no 'public_key' field") from exc
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReceiptInvalid("the public key is neither PEM, JSON nor base64") from exc
    if len(raw) != 32:
        raise ReceiptInvalid("the public key is not a 32-byte Ed25519 key")
    return raw


def verify_receipt(receipt: object, public_key_raw: bytes) -> None:
    """Raise ReceiptInvalid (with the reason) unless ``receipt`` was signed by this key, unaltered."""
    if not isinstance(receipt, dict):
        raise ReceiptInvalid("a receipt is a JSON object")
    fields = RECEIPT_TYPES.get(str(receipt.get("type")))
    if fields is None:
        raise ReceiptInvalid(f"not a Contrackt deletion receipt (type is not one of {', '.join(RECEIPT_TYPES)})")
    missing = [f for f in (*fields, "signature") if f not in receipt]
    if missing:
        raise ReceiptInvalid(f"missing fields: {', '.join(missing)}")
    extra = sorted(set(receipt) - {*fields, "signature"})
    if extra:
        raise ReceiptInvalid(f"unexpected fields: {', '.join(extra)}")
    expected_id = key_id_for(public_key_raw)
    if receipt["key_id"] != expected_id:
        raise ReceiptInvalid(f"signed by another key (receipt key_id {receipt['key_id']}, public key {expected_id})")
    try:
        signature = base64.b64decode(str(receipt["signature"]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReceiptInvalid("the signature is not base64") from exc
    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(signature, canonical_bytes(receipt))
    except InvalidSignature as exc:
        raise ReceiptInvalid("the signature does not match the receipt (altered or forged)") from exc


class ReceiptService:
    def __init__(self, uow: UnitOfWorkFactory, signer: ReceiptSigner, clock: Clock, keyring: Keyring) -> None:
        self.uow = uow
        self.signer = signer
        self.clock = clock
        self.keyring = keyring

    async def _public_raw(self) -> bytes:
        try:
            return await self.signer.public_key_raw()
        except Exception as exc:  # the reason goes to the log; the client gets a stable 503
            log.exception("receipt_key.unavailable")
            RECEIPT_KEY_FAILURES.inc()
            raise ReceiptKeyUnavailable(retry_after=30) from exc

    async def public_key(self) -> dict[str, str]:
        raw = await self._public_raw()
        return {
            "algorithm": self.signer.algorithm,
            "key_id": key_id_for(raw),
            "public_key": base64.b64encode(raw).decode(),
            "public_key_pem": public_key_pem(raw),
        }

    async def issue(self, principal: Principal, job_id: str) -> dict[str, Any]:
        """The signed receipt of the caller's job; 404 for another tenant's, 409 until purged."""
        canonical_id = parse_id(job_id)
        if canonical_id is None:
            raise NotFound()
        tenant_id = principal.tenant_id
        async with self.uow(tenant_id) as uow:
            job = await uow.jobs.get(tenant_id, canonical_id)
            if job is None:
                raise NotFound()
            if job.purged_at is None and job.document_hold_until is not None:
                # A retryable failure: the sealed document waits for a possible replay (ADR 0013).
                wait = max(1, int((job.document_hold_until - self.clock.now()).total_seconds()) + 1)
                raise NotPurged(
                    "The document of this failed job is kept until "
                    f"{job.document_hold_until.isoformat(timespec='seconds')} so that it can be retried; "
                    "DELETE /v1/jobs/{id} destroys it now",
                    retry_after=min(wait, 3600),
                )
            if job.purged_at is None:
                raise NotPurged("The document is not destroyed yet; retry once the job has finished", retry_after=1)
            # The audit trail is the evidence: what was destroyed, and the result's hash.
            # Only this job's rows (index on job_id): the tenant's whole chain grows for five years.
            rows = [r.event for r in await uow.audit.job_events(tenant_id, job.id)]
        destroyed: set[str] = set()
        result_sha256: str | None = None
        parts: set[str] = set()
        for ev in rows:
            if ev.action is AuditAction.PURGED:
                destroyed.update(str(ev.details.get("what", "")).split("+"))
            elif ev.action is AuditAction.COMPLETED and result_sha256 is None:
                result_sha256 = ev.details.get("result_sha256")
                parts = set(str(ev.details.get("parts", "")).split("+"))
        destroyed.add("document")  # purged_at is set only after the document is deleted
        if "result" in destroyed and "pdf" in parts:
            destroyed.add("searchable_pdf")  # one object with the result: gone with it
        receipt: dict[str, Any] = {
            "type": RECEIPT_TYPE,
            "job_id": job.id,
            "tenant_id": job.tenant_id,
            "fingerprint": job.fingerprint,
            "received_at": job.created_at.isoformat(),
            "completed_at": job.completed_at.isoformat() if job.completed_at else None,
            "purged_at": job.purged_at.isoformat(),
            "destroyed": [d for d in _DESTROYED_ORDER if d in destroyed],
            "result_sha256": result_sha256,
            # unsealed with the tenant's key: the plain hash itself is never stored
            "document_sha256": await document_sha256(self.keyring, job),
            "issued_at": self.clock.now().isoformat(),
            "key_id": key_id_for(await self._public_raw()),
        }
        receipt["signature"] = base64.b64encode(await self.signer.sign(canonical_bytes(receipt))).decode()
        return receipt
