"""Property tests of the AES-256-GCM envelope (services/crypto.py).

Guarantees: a ciphertext only opens under the exact (tenant, job, purpose, key
version, key) it was sealed for; any change to any byte is detected; every seal
uses a fresh nonce.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from contrackt.domain.errors import DecryptionFailed
from contrackt.services.crypto import (
    PURPOSE_DOCUMENT,
    PURPOSE_RESULT,
    associated_data,
    fingerprint,
    key_version_of,
    new_data_key,
    open_sealed,
    seal,
)

KEY = new_data_key()
ids = st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=40).filter(lambda s: "|" not in s))
purposes = st.one_of(st.sampled_from([PURPOSE_DOCUMENT, PURPOSE_RESULT]), ids)
versions = st.integers(min_value=1, max_value=2**32 - 1)
keys = st.binary(min_size=32, max_size=32)
payloads = st.binary(max_size=2048)


@given(tenant=ids, job=ids, purpose=purposes, version=versions, plaintext=payloads)
def test_round_trip(tenant: str, job: str, purpose: str, version: int, plaintext: bytes) -> None:
    sealed = seal(KEY, version, tenant, job, purpose, plaintext)
    assert key_version_of(sealed) == version
    assert open_sealed(KEY, tenant, job, purpose, sealed) == plaintext


@given(tenant=ids, other=ids, job=ids, plaintext=payloads)
def test_moved_to_another_tenant_never_decrypts(tenant: str, other: str, job: str, plaintext: bytes) -> None:
    assume(other != tenant)
    sealed = seal(KEY, 1, tenant, job, PURPOSE_DOCUMENT, plaintext)
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, other, job, PURPOSE_DOCUMENT, sealed)


@given(tenant=ids, job=ids, other=ids, plaintext=payloads)
def test_moved_to_another_job_never_decrypts(tenant: str, job: str, other: str, plaintext: bytes) -> None:
    assume(other != job)
    sealed = seal(KEY, 1, tenant, job, PURPOSE_RESULT, plaintext)
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, tenant, other, PURPOSE_RESULT, sealed)


@given(tenant=ids, job=ids, purpose=purposes, other=purposes, plaintext=payloads)
def test_used_for_another_purpose_never_decrypts(
    tenant: str, job: str, purpose: str, other: str, plaintext: bytes
) -> None:
    assume(other != purpose)
    sealed = seal(KEY, 1, tenant, job, purpose, plaintext)
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, tenant, job, other, sealed)


@given(tenant=ids, job=ids, version=versions, other=versions, plaintext=payloads)
def test_relabelled_key_version_never_decrypts(
    tenant: str, job: str, version: int, other: int, plaintext: bytes
) -> None:
    """The version in the header is bound by the AAD: rewriting it breaks the tag."""
    assume(other != version)
    sealed = seal(KEY, version, tenant, job, PURPOSE_DOCUMENT, plaintext)
    relabelled = sealed[:3] + other.to_bytes(4, "big") + sealed[7:]
    assert key_version_of(relabelled) == other
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, tenant, job, PURPOSE_DOCUMENT, relabelled)


@given(key=keys, other_key=keys, tenant=ids, job=ids, plaintext=payloads)
def test_another_key_never_decrypts(key: bytes, other_key: bytes, tenant: str, job: str, plaintext: bytes) -> None:
    """Another tenant's key, or another version's key, cannot open the ciphertext."""
    assume(key != other_key)
    sealed = seal(key, 1, tenant, job, PURPOSE_DOCUMENT, plaintext)
    with pytest.raises(DecryptionFailed):
        open_sealed(other_key, tenant, job, PURPOSE_DOCUMENT, sealed)


@given(plaintext=payloads, data=st.data())
def test_tampering_any_byte_fails(plaintext: bytes, data: st.DataObject) -> None:
    sealed = seal(KEY, 7, "tenant", "job", PURPOSE_RESULT, plaintext)
    index = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1), label="index")
    flip = data.draw(st.integers(min_value=1, max_value=255), label="xor")
    tampered = sealed[:index] + bytes([sealed[index] ^ flip]) + sealed[index + 1 :]
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, "tenant", "job", PURPOSE_RESULT, tampered)


@given(plaintext=payloads, data=st.data())
def test_truncating_or_extending_fails(plaintext: bytes, data: st.DataObject) -> None:
    sealed = seal(KEY, 1, "tenant", "job", PURPOSE_RESULT, plaintext)
    cut = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1), label="cut")
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, "tenant", "job", PURPOSE_RESULT, sealed[:cut])
    extra = data.draw(st.binary(min_size=1, max_size=32), label="extra")
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, "tenant", "job", PURPOSE_RESULT, sealed + extra)


@settings(max_examples=50)
@given(plaintext=payloads)
def test_every_seal_uses_a_fresh_nonce(plaintext: bytes) -> None:
    first = seal(KEY, 1, "tenant", "job", PURPOSE_DOCUMENT, plaintext)
    second = seal(KEY, 1, "tenant", "job", PURPOSE_DOCUMENT, plaintext)
    assert first != second
    assert first[7:19] != second[7:19]  # the 12-byte nonces after magic and version


def test_nonces_do_not_repeat_over_many_seals() -> None:
    nonces = {seal(KEY, 1, "t", "j", PURPOSE_DOCUMENT, b"same")[7:19] for _ in range(5000)}
    assert len(nonces) == 5000


def test_associated_data_format_and_injectivity() -> None:
    assert associated_data("t", "j", "document", 3) == b"t|j|document|3"
    # ("a|b", "c") and ("a", "b|c") would otherwise share associated data
    for tenant, job in (("a|b", "c"), ("a", "b|c")):
        with pytest.raises(ValueError):
            seal(KEY, 1, tenant, job, PURPOSE_DOCUMENT, b"x")


@given(doc=payloads)
def test_fingerprint_is_keyed(doc: bytes) -> None:
    """The same document has unrelated fingerprints under two tenants' keys."""
    a, b = new_data_key(), new_data_key()
    assert fingerprint(a, doc) == fingerprint(a, doc)
    assert fingerprint(a, doc) != fingerprint(b, doc)
