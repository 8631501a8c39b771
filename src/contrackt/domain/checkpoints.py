"""Audit-chain checkpoints (pure): what a signed checkpoint says, and what a chain must agree with.

Two kinds, both signed with the deployment's Ed25519 key (the receipt key):

* a **cut** (``contrackt.audit-cut.v1``), one tenant's chain position at a retention cut, kept in
  the database: the rows up to ``seq`` were pruned, the chain goes on from ``row_hash``;
* a **heads** export (``contrackt.audit-heads.v1``), every chain's head at one moment, written to
  a sink outside the database (object storage with object lock, or a file an operator ships):
  a database administrator who truncates a chain and rewrites its head cannot rewrite this.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CUT_TYPE = "contrackt.audit-cut.v1"
HEADS_TYPE = "contrackt.audit-heads.v1"


def canonical(body: dict[str, Any]) -> bytes:
    """The signed bytes: every field but ``signature``; keys sorted, no spaces, ASCII only."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signature_ok(body: dict[str, Any], public_key_raw: bytes) -> bool:
    """Whether ``body['signature']`` is this key's Ed25519 signature over the rest of ``body``."""
    try:
        signature = base64.b64decode(str(body.get("signature", "")), validate=True)
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(signature, canonical(body))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


@dataclass(frozen=True)
class ChainCut:
    """One tenant's chain at a retention cut: rows up to ``seq`` (all older than ``cut``) were pruned."""

    tenant_id: str
    seq: int
    row_hash: str
    row_at: datetime  # the time of the row at ``seq``
    cut: datetime  # the retention cut: every pruned row is older than this
    made_at: datetime
    key_id: str
    signature: str  # base64 Ed25519 over canonical(body())

    def body(self) -> dict[str, Any]:
        return {
            "type": CUT_TYPE,
            "tenant_id": self.tenant_id,
            "seq": self.seq,
            "row_hash": self.row_hash,
            "row_at": self.row_at.isoformat(timespec="microseconds"),
            "cut": self.cut.isoformat(timespec="microseconds"),
            "made_at": self.made_at.isoformat(timespec="microseconds"),
            "key_id": self.key_id,
            "signature": self.signature,
        }


@dataclass(frozen=True)
class ExportedHead:
    seq: int
    row_hash: str


@dataclass(frozen=True)
class ExternalHeads:
    """The newest export, read back and checked."""

    name: str
    made_at: datetime
    heads: dict[str, ExportedHead]
    signed: bool  # by this deployment's key


def parse_heads(doc: object) -> tuple[datetime, dict[str, ExportedHead]]:
    """(made_at, heads by tenant) of a heads export; ValueError when it is not one."""
    if not isinstance(doc, dict) or doc.get("type") != HEADS_TYPE:
        raise ValueError(f"not a {HEADS_TYPE} document")
    heads = doc.get("heads")
    if not isinstance(heads, dict):
        raise ValueError("the checkpoint has no heads")
    out: dict[str, ExportedHead] = {}
    for tenant_id, head in heads.items():
        if not isinstance(head, dict) or not isinstance(head.get("seq"), int):
            raise ValueError(f"the checkpoint's head of {tenant_id} is malformed")
        if not isinstance(head.get("row_hash"), str):
            raise ValueError(f"the checkpoint's head of {tenant_id} is malformed")
        out[str(tenant_id)] = ExportedHead(int(head["seq"]), str(head["row_hash"]))
    return datetime.fromisoformat(str(doc.get("made_at"))), out


def check_against_export(
    end: tuple[int, str | None],
    start: tuple[int, str] | None,
    hashes: dict[int, str],
    exported: ExportedHead,
    made_at: datetime,
) -> list[str]:
    """Problems of one chain against its head in an external export.

    ``end``: where the chain in the database ends (seq, hash); ``start``: the retention
    checkpoint it begins after, if any; ``hashes``: row hash by seq of the rows present.
    A chain may only have grown since the export: it must reach the exported seq, with the
    exported hash there (unless that row was lawfully pruned since, below ``start``).
    """
    when = made_at.isoformat(timespec="seconds")
    if end[0] < exported.seq:
        return [
            f"chain ends at seq {end[0]} but the external checkpoint of {when} records seq {exported.seq} "
            "(rows removed at the end and the head rewritten)"
        ]
    if start is not None and exported.seq < start[0]:
        return []  # pruned since the export, below a signed retention checkpoint
    if start is not None and exported.seq == start[0]:
        found: str | None = start[1]
    else:
        found = hashes.get(exported.seq)
    if found != exported.row_hash:
        return [f"seq {exported.seq}: the row differs from the external checkpoint of {when} (chain rewritten)"]
    return []
