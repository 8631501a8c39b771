"""The worker's side of the wire: whatever bytes a child sends, the worker gets either
well-formed pages or a ``ProtocolViolation``, and never buffers past its caps."""

from __future__ import annotations

import copy
import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrackt.adapters.ocr.protocol import (
    FrameReader,
    OutputCaps,
    OutputExceeded,
    ProtocolViolation,
    check_error,
    check_opened,
    check_page,
    check_searchable,
    encode,
    searchable_cap,
)

CAPS = OutputCaps(max_page_chars=1_000, max_lines_per_page=10)


def page(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "number": 1,
        "source": "ocr",
        "zoom": 1.5,
        "rotation": 0,
        "confidence": 0.9,
        "text": "Contrato",
        "lines": [
            {
                "text": "Contrato",
                "confidence": 0.9,
                "bbox": [1.0, 2.0, 3.0, 4.0],
                "words": [{"text": "Contrato", "confidence": 0.9, "bbox": [1.0, 2.0, 3.0, 4.0]}],
            }
        ],
    }
    base.update(changes)
    return base


def test_frames_round_trip_in_any_chunking() -> None:
    frames = [({"op": "page", "id": n, "page": page()}, b"") for n in range(3)]
    wire = b"".join(encode(h, b) for h, b in frames)
    for step in (1, 3, 7, len(wire)):
        reader = FrameReader(max_header=10_000)
        got = []
        for i in range(0, len(wire), step):
            got += reader.feed(wire[i : i + step])
        assert got == frames
        assert reader.pending == 0


def test_caps_are_checked_on_the_length_before_any_byte_of_the_body() -> None:
    reader = FrameReader(max_header=1_000)
    with pytest.raises(ProtocolViolation, match="cap"):
        reader.feed(struct.pack(">I", 1_001))
    with pytest.raises(ProtocolViolation, match="blob"):
        FrameReader(max_header=1_000).feed(encode({"op": "x"}, b"\0"))  # children send no blobs


@pytest.mark.parametrize(
    "header",
    [b"\x80\x03}q\x00.", b"[1, 2]", b'{"a": NaN}', b'{"a": Infinity}', b"[" * 100_000, b"\xff\xfe"],
)
def test_headers_that_are_not_a_json_object_are_violations(header: bytes) -> None:
    wire = struct.pack(">I", len(header)) + header + struct.pack(">I", 0)
    with pytest.raises(ProtocolViolation):
        FrameReader(max_header=1 << 20).feed(wire)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2_000))
def test_any_bytes_give_frames_or_a_violation(data: bytes) -> None:
    reader = FrameReader(max_header=512)
    try:
        frames = reader.feed(data)
    except ProtocolViolation:
        return
    assert all(isinstance(h, dict) and isinstance(b, bytes) for h, b in frames)
    assert reader.pending <= 8 + 512


def test_a_well_formed_page_passes() -> None:
    assert check_page(page(), 0, CAPS) == page()
    assert check_page(page(zoom=None, source="text_layer", rotation=270), 0, CAPS)["rotation"] == 270


@pytest.mark.parametrize(
    "bad",
    [
        page(number=2),  # another page than asked
        page(number=True),
        page(source="pickle"),
        page(rotation=45),
        page(rotation=90.0),
        page(confidence=1.5),
        page(confidence="0.9"),
        page(zoom=float("nan")),
        page(text=["Contrato"]),
        page(lines={"text": "x"}),
        page(extra="field"),
        {k: v for k, v in page().items() if k != "lines"},
        page(lines=[{"text": "x", "confidence": 0.5, "bbox": [1, 2, 3]}]),
        page(lines=[{"text": "x", "confidence": 0.5, "bbox": [1, 2, 3, "4"]}]),
        page(lines=[{"text": "x", "confidence": 0.5, "bbox": [1, 2, 3, 4], "script": "evil"}]),
        page(lines=[{"text": "x", "confidence": 0.5, "bbox": [1, 2, 3, 4], "words": [{"text": 1}]}]),
        "not a page",
    ],
)
def test_malformed_pages_are_violations(bad: Any) -> None:
    with pytest.raises(ProtocolViolation):
        check_page(copy.deepcopy(bad), 0, CAPS)


def test_pages_over_the_caps_are_output_limits_not_violations() -> None:
    line = {"text": "x", "confidence": 0.5, "bbox": [1, 2, 3, 4]}
    with pytest.raises(OutputExceeded, match="lines"):
        check_page(page(lines=[line] * 11), 0, CAPS)
    with pytest.raises(OutputExceeded, match="characters"):
        check_page(page(text="x" * 1_001), 0, CAPS)
    with pytest.raises(OutputExceeded, match="characters"):
        check_page(page(lines=[{**line, "text": "y" * 600}] * 2), 0, CAPS)


def test_opened_and_error_replies() -> None:
    opened = {"op": "opened", "id": 1, "pages": 3, "encrypted": False, "active_content": ["javascript"]}
    assert check_opened(opened, 500) == (3, False, ("javascript",))
    for bad in ({**opened, "pages": -1}, {**opened, "encrypted": "no"}, {**opened, "active_content": ["rootkit"]}):
        with pytest.raises(ProtocolViolation):
            check_opened(bad, 500)
    error = {"op": "error", "id": 1, "code": "corrupt_pdf", "message": "x" * 500}
    assert check_error(error) == ("corrupt_pdf", "x" * 200)
    with pytest.raises(ProtocolViolation):
        check_error({"op": "error", "id": 1, "code": "please_retry_forever", "message": ""})


def test_lone_surrogates_from_broken_fonts_are_sent_as_replacement_characters() -> None:
    ((header, _),) = FrameReader().feed(encode({"op": "page", "text": "a\ud800b\ud83d\ude00"}))
    assert header["text"] == "a\ufffdb\U0001f600"
    assert json.dumps(header)  # plain, valid JSON


# ----------------------------------------------------------------------------- the searchable PDF


def test_only_the_searchable_reply_may_carry_a_blob_and_only_up_to_its_cap() -> None:
    reply = {"op": "searchable", "id": 4}
    pdf = b"%PDF-1.7\n" + b"x" * 91
    reader = FrameReader(max_header=1_000, max_blob=100)
    ((header, blob),) = reader.feed(encode(reply, pdf))
    assert check_searchable(header, blob) == pdf
    # one byte over the cap: refused from the length, before the body is read
    with pytest.raises(ProtocolViolation, match="blob"):
        FrameReader(max_header=1_000, max_blob=99).feed(encode(reply)[:-4] + struct.pack(">I", 100))
    for bad_header, bad_blob in (
        ({**reply, "pages": 3}, pdf),  # extra field
        ({"op": "searchable"}, pdf),  # missing id
        (reply, b""),  # empty
        (reply, b"GIF89a" + pdf),  # not a PDF from its first byte
    ):
        with pytest.raises(ProtocolViolation):
            check_searchable(bad_header, bad_blob)


def test_the_searchable_cap_grows_with_the_document_and_its_text() -> None:
    small = searchable_cap(1_000, [page()])
    assert searchable_cap(2_000, [page()]) > small
    assert searchable_cap(1_000, [page(), page(number=2)]) > small
    wordy = page(lines=[{**page()["lines"][0], "text": "Contrato " * 50}])
    assert searchable_cap(1_000, [wordy]) > small
    # a 12 MB scan of 10 pages may come back as about its own size plus its text layer
    assert searchable_cap(12_000_000, [page()] * 10) >= 3 * 12_000_000


def test_image_errors_are_known_codes() -> None:
    for code in ("corrupt_image", "image_too_large", "too_many_pages"):
        assert check_error({"op": "error", "id": 1, "code": code, "message": ""}) == (code, "")
