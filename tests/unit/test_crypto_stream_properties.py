"""Property tests of the segmented AES-256-GCM stream (services/crypto.py seal_stream/StreamOpener).

Guarantees: a stream opens segment by segment to exactly its plaintext, only under the
(tenant, job, purpose, key version, key, context) it was sealed for; reordered, dropped, repeated,
truncated (also at a segment boundary), extended or bit-flipped streams, and segments moved
between streams, never open; every seal uses a fresh salt and nonce prefix.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from contrackt.domain.errors import DecryptionFailed
from contrackt.services.crypto import (
    PURPOSE_RESULT,
    STREAM_HEADER_SIZE,
    TAG_SIZE,
    StreamOpener,
    new_data_key,
    open_stream,
    seal_stream,
    sealed_stream_length,
    stream_key_version,
)

KEY = new_data_key()
ids = st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=40).filter(lambda s: "|" not in s))
versions = st.integers(min_value=1, max_value=2**32 - 1)
sizes = st.integers(min_value=1, max_value=64)  # small segments: many of them in a short plaintext
payloads = st.binary(max_size=600)
# a segment size and a plaintext of at least two segments of it (no filtering needed)
multi = sizes.flatmap(lambda size: st.tuples(st.just(size), st.binary(min_size=size + 1, max_size=size * 10)))
# What these check is not speed: no deadline, so a busy machine cannot fail them.
RELAXED = settings(deadline=None)


def segments(blob: bytes, segment_size: int) -> list[bytes]:
    body = blob[STREAM_HEADER_SIZE:]
    full = segment_size + TAG_SIZE
    return [body[i : i + full] for i in range(0, len(body), full)]


def opens(blob: bytes, tenant: str = "t", job: str = "j", purpose: str = PURPOSE_RESULT, context: bytes = b"") -> bytes:
    return open_stream(KEY, tenant, job, purpose, blob, context=context)


@RELAXED
@given(tenant=ids, job=ids, version=versions, plaintext=payloads, size=sizes, context=st.binary(max_size=64))
def test_round_trip_segment_by_segment(
    tenant: str, job: str, version: int, plaintext: bytes, size: int, context: bytes
) -> None:
    blob = seal_stream(KEY, version, tenant, job, PURPOSE_RESULT, plaintext, context=context, segment_size=size)
    assert len(blob) == sealed_stream_length(len(plaintext), size)
    assert stream_key_version(blob) == version
    opener = StreamOpener(KEY, tenant, job, PURPOSE_RESULT, blob[:STREAM_HEADER_SIZE], len(blob), context=context)
    assert opener.plaintext_length == len(plaintext)
    assert opener.segment_count == max(1, -(-len(plaintext) // size))
    pieces = []
    for i in range(opener.segment_count):
        start, length = opener.segment_span(i)
        pieces.append(opener.open(i, blob[start : start + length]))
    assert b"".join(pieces) == plaintext
    assert all(len(p) == size for p in pieces[:-1])


@RELAXED
@given(case=multi, data=st.data())
def test_swapped_segments_are_detected(case: tuple[int, bytes], data: st.DataObject) -> None:
    size, plaintext = case
    blob = seal_stream(KEY, 1, "t", "j", PURPOSE_RESULT, plaintext, segment_size=size)
    segs = segments(blob, size)
    i = data.draw(st.integers(0, len(segs) - 2))
    j = data.draw(st.integers(i + 1, len(segs) - 1))
    segs[i], segs[j] = segs[j], segs[i]
    with pytest.raises(DecryptionFailed):
        opens(blob[:STREAM_HEADER_SIZE] + b"".join(segs))


@RELAXED
@given(case=multi, data=st.data())
def test_truncation_at_a_segment_boundary_is_detected(case: tuple[int, bytes], data: st.DataObject) -> None:
    size, plaintext = case
    blob = seal_stream(KEY, 1, "t", "j", PURPOSE_RESULT, plaintext, segment_size=size)
    segs = segments(blob, size)
    keep = data.draw(st.integers(1, len(segs) - 1))  # well-formed lengths, the end is missing
    truncated = blob[:STREAM_HEADER_SIZE] + b"".join(segs[:keep])
    with pytest.raises(DecryptionFailed):
        opens(truncated)
    # ...and also when the reader is told the short length up front
    with pytest.raises(DecryptionFailed):
        StreamOpener(KEY, "t", "j", PURPOSE_RESULT, truncated, len(truncated)).open(keep - 1, segs[keep - 1])


@RELAXED
@given(case=multi, data=st.data())
def test_dropped_repeated_or_appended_segments_are_detected(case: tuple[int, bytes], data: st.DataObject) -> None:
    size, plaintext = case
    blob = seal_stream(KEY, 1, "t", "j", PURPOSE_RESULT, plaintext, segment_size=size)
    segs = segments(blob, size)
    i = data.draw(st.integers(0, len(segs) - 1))
    head = blob[:STREAM_HEADER_SIZE]
    for changed in (
        segs[:i] + segs[i + 1 :],  # one dropped
        [*segs[: i + 1], segs[i], *segs[i + 1 :]],  # one repeated
        [*segs, segs[-1]],  # the final one twice
    ):
        with pytest.raises(DecryptionFailed):
            opens(head + b"".join(changed))


@RELAXED
@given(plaintext=payloads, size=sizes, data=st.data())
def test_any_flipped_bit_is_detected(plaintext: bytes, size: int, data: st.DataObject) -> None:
    blob = seal_stream(KEY, 7, "t", "j", PURPOSE_RESULT, plaintext, segment_size=size)
    position = data.draw(st.integers(0, len(blob) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = bytearray(blob)
    tampered[position] ^= 1 << bit
    # the key version byte may now name a key we do not hold; with ours, it must not open either
    with pytest.raises(DecryptionFailed):
        opens(bytes(tampered))


@settings(max_examples=50, deadline=None)
@given(tenant=ids, other=ids, job=ids, plaintext=payloads, size=sizes)
def test_another_tenants_or_jobs_identity_does_not_open(
    tenant: str, other: str, job: str, plaintext: bytes, size: int
) -> None:
    assume(tenant != other)
    blob = seal_stream(KEY, 1, tenant, job, PURPOSE_RESULT, plaintext, segment_size=size)
    with pytest.raises(DecryptionFailed):
        opens(blob, tenant=other, job=job)
    with pytest.raises(DecryptionFailed):
        opens(blob, tenant=tenant, job=other if other != job else job + "x")
    with pytest.raises(DecryptionFailed):
        opens(blob, tenant=tenant, job=job, purpose="result-text")
    with pytest.raises(DecryptionFailed):
        opens(blob, tenant=tenant, job=job, context=b"another object")
    with pytest.raises(DecryptionFailed):
        open_stream(new_data_key(), tenant, job, PURPOSE_RESULT, blob)


@RELAXED
@given(case=multi, data=st.data())
def test_segments_cannot_move_between_objects(case: tuple[int, bytes], data: st.DataObject) -> None:
    """Same tenant, job, purpose and plaintext, sealed twice: no segment of one opens in the other."""
    size, plaintext = case
    a = seal_stream(KEY, 1, "t", "j", PURPOSE_RESULT, plaintext, segment_size=size)
    b = seal_stream(KEY, 1, "t", "j", PURPOSE_RESULT, plaintext, segment_size=size)
    segs_a, segs_b = segments(a, size), segments(b, size)
    i = data.draw(st.integers(0, len(segs_a) - 1))
    spliced = [*segs_a[:i], segs_b[i], *segs_a[i + 1 :]]
    with pytest.raises(DecryptionFailed):
        opens(a[:STREAM_HEADER_SIZE] + b"".join(spliced))
    with pytest.raises(DecryptionFailed):  # b's header over a's segments
        opens(b[:STREAM_HEADER_SIZE] + a[STREAM_HEADER_SIZE:])


def test_every_seal_has_a_fresh_salt_and_nonce_prefix() -> None:
    heads = {seal_stream(KEY, 1, "t", "j", PURPOSE_RESULT, b"same")[:STREAM_HEADER_SIZE] for _ in range(500)}
    assert len(heads) == 500
    assert len({h[11:27] for h in heads}) == 500  # salts
    assert len({h[27:34] for h in heads}) == 500  # nonce prefixes


def test_headers_that_are_not_streams_are_refused() -> None:
    blob = seal_stream(KEY, 1, "t", "j", PURPOSE_RESULT, b"x" * 100, segment_size=16)
    for bad in (b"", b"CK1" + blob[3:], blob[: STREAM_HEADER_SIZE - 1]):
        with pytest.raises(DecryptionFailed):
            StreamOpener(KEY, "t", "j", PURPOSE_RESULT, bad, len(blob))
    huge = bytearray(blob)
    huge[7:11] = (2**31).to_bytes(4, "big")  # a segment size no reader should allocate
    with pytest.raises(DecryptionFailed):
        StreamOpener(KEY, "t", "j", PURPOSE_RESULT, bytes(huge), len(blob))
    # a stream shorter than one tag, or with a last segment too short to hold one
    for length in (STREAM_HEADER_SIZE + 5, STREAM_HEADER_SIZE + 16 + TAG_SIZE + 3):
        with pytest.raises(DecryptionFailed):
            StreamOpener(KEY, "t", "j", PURPOSE_RESULT, blob, length)
    with pytest.raises(ValueError):
        seal_stream(KEY, 1, "t", "j", PURPOSE_RESULT, b"x", segment_size=0)


def test_an_empty_plaintext_is_one_empty_final_segment() -> None:
    blob = seal_stream(KEY, 1, "t", "j", PURPOSE_RESULT, b"")
    assert len(blob) == STREAM_HEADER_SIZE + TAG_SIZE
    assert opens(blob) == b""
