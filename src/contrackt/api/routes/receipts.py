"""Deletion receipts: the signed receipt of a job, and the public key that verifies it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from contrackt.api.deps import ContainerDep, StatusCaller
from contrackt.api.errors import PROBLEM, PROBLEM_SCHEMA
from contrackt.services.receipts import ReceiptService

router = APIRouter()

_KEY_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "receipt_key_unavailable: the signing key cannot be loaded right now",
        "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}},
    }
}


@router.get(
    "/v1/jobs/{job_id}/receipt",
    summary="Signed deletion receipt (Ed25519), once the document is destroyed",
    responses={
        404: {},
        409: {"description": "not_purged: the document is not destroyed yet"},
        **_KEY_UNAVAILABLE,
    },
)
async def get_receipt(job_id: str, caller: StatusCaller, c: ContainerDep) -> dict[str, Any]:
    return await ReceiptService(c.uow, c.signer, c.clock, c.keyring).issue(caller, job_id)


@router.get(
    "/v1/receipt-key",
    summary="Public key that verifies deletion receipts (no API key needed)",
    responses=_KEY_UNAVAILABLE,
)
async def get_receipt_key(c: ContainerDep) -> dict[str, str]:
    return await ReceiptService(c.uow, c.signer, c.clock, c.keyring).public_key()
