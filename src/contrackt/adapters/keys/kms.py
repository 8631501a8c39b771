"""AWS KMS master key: tenant keys are wrapped with KMS Encrypt/Decrypt.

URL: ``kms://KEY-ID-OR-ALIAS?region=us-east-1&endpoint=http://127.0.0.1:5599``
(``alias/name`` works as ``kms://alias/name``). The wrap context travels as the
KMS EncryptionContext ``{"contrackt": context}``, so a wrapped key only unwraps
for the tenant/purpose it was made for (and CloudTrail records the context).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from botocore.exceptions import BotoCoreError, ClientError

from contrackt.adapters.aws_client import LazyAwsClient
from contrackt.domain.errors import KeyUnavailable


class KmsKeyProvider:
    name = "kms"

    def __init__(self, key_id: str, *, region_name: str | None = None, endpoint_url: str | None = None) -> None:
        self.key_id = key_id
        self.region_name = region_name
        self.endpoint_url = endpoint_url
        self._connection = LazyAwsClient("kms", endpoint_url, region_name)

    @classmethod
    def from_url(cls, url: str) -> KmsKeyProvider:
        parts = urlparse(url)
        if parts.scheme != "kms":
            raise ValueError("CONTRACKT_KEYS_URL must look like kms://key-id-or-alias?region=...")
        key_id = unquote(parts.netloc + parts.path)
        if not key_id:
            raise ValueError("kms:// URL names no key")
        query = parse_qs(parts.query)
        region = query.get("region", [None])[0]
        endpoint = query.get("endpoint", [None])[0]
        return cls(key_id, region_name=region, endpoint_url=endpoint)

    async def _kms(self) -> Any:
        return await self._connection.get()

    async def wrap(self, plaintext_key: bytes, context: str) -> bytes:
        try:
            kms = await self._kms()
            resp = await kms.encrypt(
                KeyId=self.key_id, Plaintext=plaintext_key, EncryptionContext={"contrackt": context}
            )
        except (ClientError, BotoCoreError) as exc:
            raise KeyUnavailable("the master key (KMS) refused to wrap a key") from exc
        blob: bytes = resp["CiphertextBlob"]
        return blob

    async def unwrap(self, wrapped: bytes, context: str) -> bytes:
        try:
            kms = await self._kms()
            resp = await kms.decrypt(
                KeyId=self.key_id, CiphertextBlob=wrapped, EncryptionContext={"contrackt": context}
            )
        except (ClientError, BotoCoreError) as exc:
            raise KeyUnavailable("a wrapped key failed to unwrap under the master key (KMS)") from exc
        plain: bytes = resp["Plaintext"]
        return plain

    async def close(self) -> None:
        await self._connection.close()
