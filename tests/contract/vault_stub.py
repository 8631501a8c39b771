"""A stand-in for Vault's transit API (encrypt/decrypt with associated data), served
through httpx.MockTransport. No Vault server can run on this machine: this checks our
adapter's requests and error handling, not Vault itself."""

from __future__ import annotations

import base64
import json
import os

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class TransitStub:
    def __init__(self, token: str) -> None:
        self.token = token
        self.keys = {"contrackt": AESGCM(AESGCM.generate_key(bit_length=256))}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("X-Vault-Token") != self.token:
            return httpx.Response(403, json={"errors": ["permission denied"]})
        _, _, mount, op, name = request.url.path.split("/")
        aead = self.keys.get(name)
        if mount != "transit" or aead is None:
            return httpx.Response(404, json={"errors": []})
        body = json.loads(request.content)
        aad = base64.b64decode(body.get("associated_data", ""))
        if op == "encrypt":
            nonce = os.urandom(12)
            ct = nonce + aead.encrypt(nonce, base64.b64decode(body["plaintext"]), aad)
            return httpx.Response(200, json={"data": {"ciphertext": "vault:v1:" + base64.b64encode(ct).decode()}})
        if op == "decrypt":
            try:
                raw = base64.b64decode(body["ciphertext"].removeprefix("vault:v1:"), validate=True)
                plain = aead.decrypt(raw[:12], raw[12:], aad)
            except (InvalidTag, ValueError):
                return httpx.Response(400, json={"errors": ["cipher: message authentication failed"]})
            return httpx.Response(200, json={"data": {"plaintext": base64.b64encode(plain).decode()}})
        return httpx.Response(405, json={"errors": []})
