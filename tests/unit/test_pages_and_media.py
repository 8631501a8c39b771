"""Page selections (``pages=1-3,7``) and document types at intake; result formats over HTTP.

The API with the fake extractor: what is refused before anything is stored, what a job
records, and how the result's forms are served.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contrackt.bootstrap import Container
from contrackt.domain.errors import InvalidRequest
from contrackt.domain.pages import expand_pages, format_pages, parse_pages
from tests.fakes import fake_pdf
from tests.unit.test_api import headers, new_tenant, wait_done


def test_a_selection_is_sorted_merged_and_written_canonically() -> None:
    assert parse_pages("1-3,7", 500) == ((1, 3), (7, 7))
    assert format_pages(parse_pages(" 7 , 2-4,3, 5 - 5 ,9-9", 500)) == "2-5,7,9"
    assert expand_pages("2-4,9") == (2, 3, 4, 9)


@pytest.mark.parametrize("spec", ["", " ", ",", "1,,2", "0", "3-1", "1-", "-3", "a", "1.5", "2-3-4", "1;2", "x" * 2000])
def test_malformed_or_empty_selections_are_refused(spec: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_pages(spec, 500)


def test_a_page_beyond_the_page_cap_is_refused() -> None:
    assert parse_pages("500", 500) == ((500, 500),)
    with pytest.raises(InvalidRequest, match="501"):
        parse_pages("2-501", 500)


@given(st.sets(st.integers(min_value=1, max_value=500), min_size=1, max_size=60))
def test_any_set_of_pages_survives_its_canonical_form(pages: set[int]) -> None:
    spec = ",".join(str(p) for p in pages)  # in set order, with single pages only
    assert expand_pages(format_pages(parse_pages(spec, 500))) == tuple(sorted(pages))


async def _job(container: Container, tenant_id: str, job_id: str) -> tuple[str, str | None]:
    async with container.uow(tenant_id) as uow:
        job = await uow.jobs.get(tenant_id, job_id)
    assert job is not None
    return job.media_type, job.pages


async def test_selections_are_checked_before_anything_is_stored(
    client: httpx.AsyncClient, container: Container
) -> None:
    t = await new_tenant(container)
    h = {**headers(t), "Content-Type": "application/pdf"}
    for spec in ("", "2-1", "abc", "0", "1-9999"):
        r = await client.post("/v1/extract", headers=h, content=fake_pdf("x"), params={"pages": spec})
        assert (r.status_code, r.json()["code"]) == (422, "invalid_request"), spec
        assert "pages" in r.json()["detail"]
    assert await container.blobs.list() == []
    ok = await client.post("/v1/extract", headers=h, content=fake_pdf("x"), params={"pages": "7, 1-3"})
    assert ok.status_code == 202
    assert await _job(container, t["tenant_id"], ok.json()["job_id"]) == ("application/pdf", "1-3,7")


@pytest.mark.parametrize(
    ("body", "content_type", "media_type"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 32, "image/png", "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 32, "image/jpeg", "image/jpeg"),
        (b"II*\x00" + b"\0" * 32, "image/tiff", "image/tiff"),
        (b"MM\x00*" + b"\0" * 32, "application/octet-stream", "image/tiff"),
        # the first bytes decide, not the declared type
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 32, "application/pdf", "image/png"),
    ],
)
async def test_images_are_accepted_raw_or_multipart_and_told_by_their_first_bytes(
    client: httpx.AsyncClient, container: Container, body: bytes, content_type: str, media_type: str
) -> None:
    t = await new_tenant(container)
    raw = await client.post("/v1/extract", headers={**headers(t), "Content-Type": content_type}, content=body)
    assert raw.status_code == 202, raw.text
    assert await _job(container, t["tenant_id"], raw.json()["job_id"]) == (media_type, None)
    form = await client.post("/v1/extract", headers=headers(t), files={"file": ("photo", body, content_type)})
    assert form.status_code == 202, form.text
    assert await _job(container, t["tenant_id"], form.json()["job_id"]) == (media_type, None)


async def test_other_documents_and_types_are_refused_with_415(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    gif = await client.post("/v1/extract", headers={**headers(t), "Content-Type": "image/png"}, content=b"GIF89a...")
    assert (gif.status_code, gif.json()["code"]) == (415, "not_a_pdf")
    assert "JPEG, PNG or TIFF" in gif.json()["detail"]
    html = await client.post("/v1/extract", headers={**headers(t), "Content-Type": "text/html"}, content=b"<html>")
    assert (html.status_code, html.json()["code"]) == (415, "not_a_pdf")


async def test_markdown_is_served_and_a_missing_searchable_pdf_is_409(
    client: httpx.AsyncClient, container: Container
) -> None:
    t = await new_tenant(container)
    r = await client.post(
        "/v1/extract",
        headers=headers(t),
        files={"file": ("a.pdf", fake_pdf("CONTRATO SOCIAL\nEntre as partes."), "application/pdf")},
    )
    job_id = r.json()["job_id"]
    assert (await wait_done(client, job_id, headers(t)))["status"] == "completed"
    md = await client.get(f"/v1/jobs/{job_id}/result", headers=headers(t), params={"format": "markdown"})
    assert md.status_code == 200
    assert md.headers["content-type"] == "text/markdown; charset=utf-8"
    assert md.text == "<!-- page 1 -->\n\n## CONTRATO SOCIAL\n\nEntre as partes.\n"
    # the fake extractor builds no searchable PDF: the result says so, and stays readable
    pdf = await client.get(f"/v1/jobs/{job_id}/result", headers=headers(t), params={"format": "pdf"})
    assert (pdf.status_code, pdf.json()["code"]) == (409, "format_unavailable")
    bad = await client.get(f"/v1/jobs/{job_id}/result", headers=headers(t), params={"format": "docx"})
    assert bad.status_code == 422
    assert (await client.get(f"/v1/jobs/{job_id}/result", headers=headers(t))).status_code == 200
