"""Property tests: the intake validator only ever accepts, or says NotAPdf / EmptyUpload.

Accepted: bytes that start, at offset 0, with the signature of a PDF, JPEG, PNG or TIFF file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contrackt.adapters.db.migrate import upgrade
from contrackt.bootstrap import build
from contrackt.domain.errors import EmptyUpload, NotAPdf
from contrackt.domain.limits import PDF_MAGIC
from contrackt.services.intake import validate_upload
from tests.conftest import embedded_settings

# written out here, not imported: the test states the rule the validator must follow
SIGNATURES = (b"%PDF-", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*")


def signed(data: bytes) -> bool:
    return any(data.startswith(signature) for signature in SIGNATURES)


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(data: bytes) -> str:
    try:
        validate_upload(data)
    except EmptyUpload:
        return "empty"
    except NotAPdf:
        return "not_a_pdf"
    return "accepted"


@FAST
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    expected = "empty" if not data else ("accepted" if signed(data) else "not_a_pdf")
    assert outcome(data) == expected


@FAST
@given(st.binary(max_size=64), st.binary(max_size=256))
def test_pdf_header_after_a_prefix_is_refused(prefix: bytes, rest: bytes) -> None:
    # Polyglots (GIF/HTML/ZIP + PDF) put the header at an offset > 0: refused.
    data = prefix + PDF_MAGIC + rest
    assert outcome(data) == ("accepted" if signed(data) else "not_a_pdf")


@FAST
@given(st.sampled_from([b"%", b"%P", b"%PD", b"%PDF", b"%pdf-", b" %PDF-", b"\xef\xbb\xbf%PDF-", b"\x00%PDF-"]))
def test_near_misses_are_refused(head: bytes) -> None:
    assert outcome(head + b"1.7\n") == "not_a_pdf"


@FAST
@given(st.binary(max_size=2048))
def test_header_then_anything_is_accepted_for_sandboxed_parsing(rest: bytes) -> None:
    assert outcome(PDF_MAGIC + rest) == "accepted"


@FAST
@given(st.sampled_from(SIGNATURES[1:]), st.binary(max_size=512))
def test_image_signatures_then_anything_are_accepted_for_sandboxed_decoding(signature: bytes, rest: bytes) -> None:
    assert outcome(signature + rest) == "accepted"


@FAST
@given(st.sampled_from([b"\xff\xd8", b"\x89PNG\r\n\x1a", b"II*", b"MM\x00", b"II\x00*", b"\x89png\r\n\x1a\n"]))
def test_image_near_misses_are_refused(head: bytes) -> None:
    assert outcome(head + b"\x01\x02") == "not_a_pdf"


@pytest.mark.parametrize("n", [1])
def test_submit_raises_only_the_validator_errors(tmp_path: Path, n: int) -> None:
    """The whole submit path (hash, encrypt, store, record) over random inputs."""
    s = embedded_settings(tmp_path / "home")
    upgrade(s.db_url)

    async def main() -> None:
        c = build(s)
        try:
            key = await c.tenants.create("fuzz")
            principal = await c.tenants.authenticate(key.api_key)

            @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
            @given(st.one_of(st.binary(max_size=512), st.binary(max_size=512).map(lambda b: PDF_MAGIC + b)))
            def check(data: bytes) -> None:
                async def one() -> str:
                    try:
                        await c.intake.submit(principal, data)
                    except (EmptyUpload, NotAPdf):
                        return "refused"
                    return "accepted"

                got = asyncio.run_coroutine_threadsafe(one(), loop).result(30)
                assert got == outcome(data).replace("empty", "refused").replace("not_a_pdf", "refused")

            loop = asyncio.get_running_loop()
            await asyncio.to_thread(check)
        finally:
            await c.close()

    asyncio.run(main())
