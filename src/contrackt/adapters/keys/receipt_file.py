"""Receipt-signing key from a mounted secret (``CONTRACKT_RECEIPT_KEY_FILE``): read, never created.

Every replica mounts the same secret, so every replica signs with the same key. A missing or
unreadable file is an error at the first receipt (and ``GET /v1/receipt-key``), never a reason
to make a key of our own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contrackt.adapters.keys.ed25519 import Ed25519Signer, read_signing_key

# A Kubernetes secret volume is often group-readable (defaultMode 0440 with fsGroup);
# readable by others, or writable by anyone but its owner, is refused.
FORBIDDEN_MODE = 0o027


class FileReceiptSigner(Ed25519Signer):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    async def _load(self) -> Ed25519PrivateKey:
        return await asyncio.to_thread(read_signing_key, self.path, forbidden_mode=FORBIDDEN_MODE)
