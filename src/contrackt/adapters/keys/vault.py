"""HashiCorp Vault transit master key: tenant keys are wrapped by Vault's transit engine.

URL: ``vault://HOST:PORT/MOUNT/KEY_NAME`` (``?tls=false`` for plain HTTP on a
development server); the token comes from ``VAULT_TOKEN``, or from the file ``VAULT_TOKEN_FILE``
names (a mounted secret; setting both is an error). The transit key must be
an AEAD key (``aes256-gcm96``, the default); the wrap context travels as
``associated_data`` so a wrapped key only unwraps for the tenant/purpose it was made for.
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlparse

import httpx

from contrackt.domain.errors import KeyUnavailable
from contrackt.secret_files import env_or_file


class VaultKeyProvider:
    name = "vault"

    def __init__(
        self,
        base_url: str,
        mount: str,
        key_name: str,
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.mount = mount
        self.key_name = key_name
        self._client = httpx.AsyncClient(
            base_url=base_url, headers={"X-Vault-Token": token}, timeout=10, transport=transport
        )

    @classmethod
    def from_url(cls, url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> VaultKeyProvider:
        parts = urlparse(url)
        path = [p for p in parts.path.split("/") if p]
        if parts.scheme != "vault" or not parts.netloc or len(path) != 2:
            raise ValueError("CONTRACKT_KEYS_URL must look like vault://host:8200/transit/KEY_NAME")
        token = env_or_file("VAULT_TOKEN")
        if not token:
            raise ValueError("vault:// needs VAULT_TOKEN or VAULT_TOKEN_FILE")
        tls = parse_qs(parts.query).get("tls", ["true"])[0].lower() != "false"
        scheme = "https" if tls else "http"
        return cls(f"{scheme}://{parts.netloc}", path[0], path[1], token, transport=transport)

    async def _post(self, op: str, body: dict[str, str]) -> dict[str, str]:
        try:
            r = await self._client.post(f"/v1/{self.mount}/{op}/{self.key_name}", json=body)
        except httpx.HTTPError as exc:
            raise KeyUnavailable("Vault is unreachable") from exc
        if r.status_code != 200:
            raise KeyUnavailable(f"Vault transit {op} refused ({r.status_code})")
        data: dict[str, str] = r.json()["data"]
        return data

    async def wrap(self, plaintext_key: bytes, context: str) -> bytes:
        data = await self._post(
            "encrypt",
            {
                "plaintext": base64.b64encode(plaintext_key).decode(),
                "associated_data": base64.b64encode(context.encode()).decode(),
            },
        )
        return data["ciphertext"].encode()

    async def unwrap(self, wrapped: bytes, context: str) -> bytes:
        data = await self._post(
            "decrypt",
            {
                "ciphertext": wrapped.decode(),
                "associated_data": base64.b64encode(context.encode()).decode(),
            },
        )
        return base64.b64decode(data["plaintext"])

    async def close(self) -> None:
        await self._client.aclose()
