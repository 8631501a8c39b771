"""Receipt-signing key kept in the database (``service_keys``), wrapped by the key provider.

One row, ``name = 'receipt-signing'``, for the whole deployment: the first process that needs
the key and finds no row generates one, wraps its private half with the KeyProvider (local
master key, KMS or Vault; context ``contrackt|service|receipt-signing|Ed25519``) and INSERTs it;
the primary key makes that race-free (a loser's INSERT fails and it reads the winner's row).
Every process then signs with the same key. The public key is stored beside it in clear, for
``contrackt receipt verify``; the signer itself trusts only the key it unwrapped.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from contrackt.adapters.db.engine import make_engine
from contrackt.adapters.db.tables import service_keys
from contrackt.adapters.db.uow import SqlUnitOfWorkFactory
from contrackt.adapters.keys.ed25519 import ALGORITHM, Ed25519Signer, raw_private, raw_public, read_signing_key
from contrackt.ports.clock import Clock, SystemClock
from contrackt.ports.keys import KeyProvider

KEY_NAME = "receipt-signing"
WRAP_CONTEXT = f"contrackt|service|{KEY_NAME}|{ALGORITHM}"
# Where earlier versions kept a per-installation key (CONTRACKT_HOME/receipt_signing.key).
LEGACY_KEY_FILE = "receipt_signing.key"

log = structlog.get_logger("contrackt.receipts")


class ServiceKeyDamaged(Exception):
    """The stored key does not match its public half, or is not an Ed25519 key."""


class DatabaseReceiptSigner(Ed25519Signer):
    def __init__(
        self,
        uow: SqlUnitOfWorkFactory,
        provider: KeyProvider,
        *,
        legacy_file: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        self.uow = uow
        self.provider = provider
        self.legacy_file = legacy_file
        self.clock = clock or SystemClock()

    async def _row(self) -> tuple[str, bytes, bytes] | None:
        """(algorithm, wrapped private key, public key) of the stored key, or None."""
        async with self.uow(system=True) as u:
            row = (
                await u.conn.execute(
                    sa.select(
                        service_keys.c.algorithm, service_keys.c.wrapped_private, service_keys.c.public_key
                    ).where(service_keys.c.name == KEY_NAME)
                )
            ).first()
        return (str(row[0]), bytes(row[1]), bytes(row[2])) if row else None

    def _candidate(self) -> tuple[Ed25519PrivateKey, str]:
        """The key to offer when there is none yet: the installation's earlier key file, if it
        has one (receipts it signed keep verifying), else a new one."""
        if self.legacy_file is not None and self.legacy_file.exists():
            return read_signing_key(self.legacy_file), "imported"
        return Ed25519PrivateKey.generate(), "generated"

    async def _load(self) -> Ed25519PrivateKey:
        row = await self._row()
        if row is None:
            key, origin = await asyncio.to_thread(self._candidate)
            wrapped = await self.provider.wrap(raw_private(key), WRAP_CONTEXT)
            try:
                async with self.uow(system=True) as u:
                    await u.conn.execute(
                        service_keys.insert().values(
                            name=KEY_NAME,
                            algorithm=ALGORITHM,
                            wrapped_private=wrapped,
                            public_key=raw_public(key),
                            created_at=self.clock.now(),
                        )
                    )
                log.info("receipt_key.created", origin=origin, provider=self.provider.name)
            except IntegrityError:
                pass  # another process stored its key first: everybody uses that one
            row = await self._row()
            if row is None:
                raise ServiceKeyDamaged("the receipt-signing key vanished right after it was stored")
        algorithm, wrapped, public = row
        if algorithm != ALGORITHM:
            raise ServiceKeyDamaged(f"the stored receipt-signing key is {algorithm}, not {ALGORITHM}")
        key = Ed25519PrivateKey.from_private_bytes(await self.provider.unwrap(wrapped, WRAP_CONTEXT))
        if raw_public(key) != public:
            raise ServiceKeyDamaged("the stored receipt-signing key does not match its public key")
        return key


async def stored_public_key(db_url: str) -> bytes | None:
    """The deployment's receipt public key as stored (no key provider needed, nothing created);
    None when the database, its schema or the key does not exist yet."""
    if db_url.startswith("sqlite"):
        path = db_url.split("///", 1)[1] if "///" in db_url else ""
        if not path or path == ":memory:" or not await asyncio.to_thread(Path(path).exists):
            return None
    engine: AsyncEngine = make_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(sa.select(service_keys.c.public_key).where(service_keys.c.name == KEY_NAME))
            ).first()
    except sa.exc.DBAPIError:
        return None  # no schema yet (or no table): no key either
    finally:
        await engine.dispose()
    return bytes(row[0]) if row else None
