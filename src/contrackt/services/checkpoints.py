"""Signed audit-chain checkpoints: sign and check them, and export every chain's head outside the database.

The export (`contrackt audit checkpoint`, and periodically in each worker) is what closes ADR
0003's known gap: the chain heads recorded in the database can be rewritten by whoever can
rewrite the database, a signed copy in an object-locked bucket (or a file shipped elsewhere)
cannot. `contrackt audit verify` compares the database against the newest export.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from contrackt.domain.audit import SERVICE_CHAIN, AuditAction
from contrackt.domain.checkpoints import (
    HEADS_TYPE,
    ChainCut,
    ExternalHeads,
    canonical,
    parse_heads,
    signature_ok,
)
from contrackt.ports.checkpoints import CheckpointSink
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWorkFactory
from contrackt.ports.signer import ReceiptSigner
from contrackt.services import audit
from contrackt.services.receipts import key_id_for

log = structlog.get_logger("contrackt.checkpoints")

NAME_TIME = "%Y%m%dT%H%M%S%fZ"


async def sign_body(signer: ReceiptSigner, body: dict[str, Any]) -> str:
    return base64.b64encode(await signer.sign(canonical(body))).decode()


async def sign_cut(signer: ReceiptSigner, cut: ChainCut) -> ChainCut:
    """``cut`` with its key id and signature filled in (call with the key already loaded)."""
    unsigned = replace(cut, key_id=key_id_for(await signer.public_key_raw()), signature="")
    return replace(unsigned, signature=await sign_body(signer, unsigned.body()))


def checkpoint_name(made_at: datetime) -> str:
    # Names sort by time; the random tail keeps two exports in one microsecond apart.
    return f"audit-heads-{made_at.astimezone(UTC).strftime(NAME_TIME)}-{secrets.token_hex(4)}.json"


def name_time(name: str) -> datetime | None:
    try:
        stamp = name.removeprefix("audit-heads-").split("-", 1)[0].removesuffix(".json")
        return datetime.strptime(stamp, NAME_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class Export:
    name: str
    location: str
    made_at: datetime
    chains: int


class CheckpointService:
    def __init__(self, uow: UnitOfWorkFactory, signer: ReceiptSigner, clock: Clock, sink: CheckpointSink) -> None:
        self.uow = uow
        self.signer = signer
        self.clock = clock
        self.sink = sink

    async def export(self) -> Export:
        """Sign every chain's head and write it to the sink; record CHECKPOINT in the service chain."""
        key_id = key_id_for(await self.signer.public_key_raw())
        async with self.uow(system=True) as uow:
            heads = await uow.audit.heads()
        made_at = self.clock.now()
        doc: dict[str, Any] = {
            "type": HEADS_TYPE,
            "made_at": made_at.isoformat(timespec="microseconds"),
            "key_id": key_id,
            "heads": {tenant: {"seq": seq, "row_hash": row_hash} for tenant, (seq, row_hash) in sorted(heads.items())},
        }
        doc["signature"] = await sign_body(self.signer, doc)
        name = checkpoint_name(made_at)
        location = await self.sink.put(name, json.dumps(doc, sort_keys=True, indent=1).encode())
        async with self.uow(SERVICE_CHAIN) as uow:
            await audit.record(
                uow, self.clock, SERVICE_CHAIN, AuditAction.CHECKPOINT, tenants=len(heads), checkpoint=name
            )
        log.info("audit.checkpoint.exported", chains=len(heads), checkpoint=name)
        return Export(name, location, made_at, len(heads))

    async def export_if_due(self, interval: timedelta) -> Export | None:
        """Export unless the sink already has one younger than half the interval (several
        workers share the schedule: the first one exports, the others see it)."""
        newest = await self.sink.newest()
        at = name_time(newest) if newest else None
        if at is not None and self.clock.now() - at < interval / 2:
            return None
        return await self.export()

    async def newest(self) -> ExternalHeads | None:
        """The sink's newest export, checked against this deployment's key; None when there is none."""
        name = await self.sink.newest()
        if name is None:
            return None
        return read_heads(await self.sink.read(name), name, await self.signer.public_key_raw())


def read_heads(data: bytes, name: str, public_key_raw: bytes) -> ExternalHeads:
    """Parse an export (from the sink, or a file an operator brought back) and check its signature."""
    try:
        doc = json.loads(data)
        made_at, heads = parse_heads(doc)
    except ValueError as exc:
        raise ValueError(f"{name}: not a Contrackt audit checkpoint ({exc})") from exc
    return ExternalHeads(name, made_at, heads, signature_ok(doc, public_key_raw))
