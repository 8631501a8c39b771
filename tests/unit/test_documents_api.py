"""Issue 12's inputs and outputs through the API, with the real OCR pool behind the worker.

Acceptance: a PNG and a 3-page TIFF made from corpus pages come back with a CER within
0.5 points of the PDF path; ``pages=2-3`` returns exactly those pages; the searchable PDF of
scan_mild.pdf, read back with pypdfium2, has word recall >= 98% against gt/ and its words
sit within their pages' boxes; the markdown of the born-digital contract has its headings
and the invoice table as a pipe table.

One pool serves the module (each test runs the app on its own event loop: the pool is
loop-agnostic); the worker is handed a wrapper that leaves the pool open when it stops.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pypdfium2 as pdfium
import pytest

from contrackt.adapters.ocr.pool import ProcessPoolExtractor
from contrackt.api.app import create_app
from contrackt.bootstrap import Container
from contrackt.domain.results import ExtractionResult
from contrackt.ports.extractor import DocumentInfo, ExtractOptions, ProgressCallback
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import corpus_path
from tests.documents import ground_truth, png_bomb, png_of, tiff_of
from tests.helpers_cer import corpus_cer, normalize, word_recall


class KeepOpen:
    """The module's pool, lent to one app: its worker's shutdown does not close it."""

    def __init__(self, pool: ProcessPoolExtractor) -> None:
        self.pool = pool

    async def start(self) -> None:
        await self.pool.start()

    def engines(self) -> list[str]:
        return self.pool.engines()

    async def inspect(self, pdf: bytes) -> DocumentInfo:
        return await self.pool.inspect(pdf)

    async def extract(
        self, pdf: bytes, options: ExtractOptions, progress: ProgressCallback | None = None
    ) -> ExtractionResult:
        return await self.pool.extract(pdf, options, progress)

    async def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExtractor]:
    extractor = ProcessPoolExtractor(workers=2)
    asyncio.run(extractor.start())
    try:
        yield extractor
    finally:
        asyncio.run(extractor.close())


@pytest.fixture
async def http(container: Container, pool: ProcessPoolExtractor) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(container=container, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, KeepOpen(pool)))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            yield client


async def key(container: Container) -> dict[str, str]:
    created = await container.tenants.create("docs")
    return {"X-API-Key": created.api_key}


async def submit(http: httpx.AsyncClient, h: dict[str, str], data: bytes, content_type: str, **params: str) -> str:
    r = await http.post("/v1/extract", headers={**h, "Content-Type": content_type}, content=data, params=params)
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


async def finish(http: httpx.AsyncClient, h: dict[str, str], job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: dict[str, Any] = (await http.get(f"/v1/jobs/{job_id}", headers=h)).json()
        if status["status"] in ("completed", "failed"):
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


async def result(http: httpx.AsyncClient, h: dict[str, str], job_id: str) -> dict[str, Any]:
    status = await finish(http, h, job_id)
    assert status["status"] == "completed", status
    body: dict[str, Any] = (await http.get(f"/v1/jobs/{job_id}/result", headers=h)).json()
    return body


def page_cer(body: dict[str, Any]) -> float:
    return corpus_cer([(p["text"], ground_truth(p["number"])) for p in body["pages"]])


async def test_png_and_tiff_read_within_half_a_point_of_the_pdf_path(
    http: httpx.AsyncClient, container: Container
) -> None:
    h = await key(container)
    scan = corpus_path("synthetic", "scan_mild.pdf").read_bytes()
    started = time.monotonic()
    pdf_job = await submit(http, h, scan, "application/pdf", pages="1-3")
    png_job = await submit(http, h, png_of(1), "image/png")
    tiff = tiff_of(1, 2, 3)
    multipart = await http.post("/v1/extract", headers=h, files={"file": ("scan.tif", tiff, "image/tiff")})
    assert multipart.status_code == 202
    tiff_job = multipart.json()["job_id"]
    pdf, png, tif = [await result(http, h, j) for j in (pdf_job, png_job, tiff_job)]
    elapsed = time.monotonic() - started
    assert [p["number"] for p in pdf["pages"]] == [1, 2, 3] == [p["number"] for p in tif["pages"]]
    pdf_page_1 = {**pdf, "pages": pdf["pages"][:1]}
    figures = {
        "pdf p1-3": page_cer(pdf),
        "tiff p1-3": page_cer(tif),
        "pdf p1": page_cer(pdf_page_1),
        "png p1": page_cer(png),
    }
    print("\nCER " + ", ".join(f"{k} {v:.3%}" for k, v in figures.items()) + f" (7 pages in {elapsed:.1f} s)")
    assert abs(figures["tiff p1-3"] - figures["pdf p1-3"]) <= 0.005
    assert abs(figures["png p1"] - figures["pdf p1"]) <= 0.005


async def test_pages_2_3_returns_exactly_those_pages_with_their_numbers(
    http: httpx.AsyncClient, container: Container
) -> None:
    h = await key(container)
    job = await submit(http, h, tiff_of(1, 2, 3), "image/tiff", pages="2-3")
    body = await result(http, h, job)
    assert [p["number"] for p in body["pages"]] == [2, 3]
    assert normalize(body["text"]).startswith(normalize(ground_truth(2))[:40])
    status = await finish(http, h, job)
    assert (status["pages_total"], status["pages_done"]) == (2, 2)
    text = await http.get(f"/v1/jobs/{job}/result", headers=h, params={"format": "text"})
    assert text.text.count("\f") == 1
    markdown = (await http.get(f"/v1/jobs/{job}/result", headers=h, params={"format": "markdown"})).text
    assert re.findall(r"<!-- page (\d+) -->", markdown) == ["2", "3"]


async def test_the_searchable_pdf_of_scan_mild(http: httpx.AsyncClient, container: Container) -> None:
    h = await key(container)
    scan = corpus_path("synthetic", "scan_mild.pdf").read_bytes()
    job = await submit(http, h, scan, "application/pdf")
    body = await result(http, h, job)
    r = await http.get(f"/v1/jobs/{job}/result", headers=h, params={"format": "pdf"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == f'attachment; filename="{job}.pdf"'
    assert int(r.headers["content-length"]) == len(r.content)
    doc = pdfium.PdfDocument(r.content)
    original = pdfium.PdfDocument(scan)
    assert len(doc) == len(original) == 10
    texts, inside, total = [], 0, 0
    for k in range(len(doc)):
        width, height = doc[k].get_size()
        assert (width, height) == original[k].get_size()
        textpage = doc[k].get_textpage()
        texts.append(textpage.get_text_range())
        for i in range(textpage.count_chars()):
            if textpage.get_text_range(i, 1).isspace():
                continue
            x0, y0, x1, y1 = textpage.get_charbox(i)
            total += 1
            inside += 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
    # every word of the result is found at its own box on its own page
    found = words = 0
    for k, page in enumerate(body["pages"]):
        textpage = doc[k].get_textpage()
        height = doc[k].get_size()[1]
        for line in page["lines"]:
            for word in line.get("words", []):
                x0, y0, x1, y1 = word["bbox"]
                there = textpage.get_text_bounded(
                    left=x0 - 1, bottom=height - y1 - 1, right=x1 + 1, top=height - y0 + 1
                )
                words += 1
                found += normalize(word["text"]) in normalize(there)
    recall = word_recall("\n".join(texts), "\n".join(ground_truth(n) for n in range(1, 11)))
    print(
        f"\nsearchable PDF: word recall {recall:.2%}, {found}/{words} words at their boxes, "
        f"{inside}/{total} characters inside their page, {len(r.content) / len(scan):.3f}x the upload"
    )
    assert recall >= 0.98
    assert inside == total
    assert found >= 0.98 * words


async def test_markdown_of_the_born_digital_contract_and_invoice(http: httpx.AsyncClient, container: Container) -> None:
    h = await key(container)
    born = corpus_path("synthetic", "born_digital.pdf").read_bytes()
    job = await submit(http, h, born, "application/pdf", pages="1-3,6")
    await result(http, h, job)
    r = await http.get(f"/v1/jobs/{job}/result", headers=h, params={"format": "markdown"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/markdown; charset=utf-8"
    markdown = r.text
    headings = re.findall(r"^#{1,2} (.+)$", markdown, flags=re.MULTILINE)
    # the contract's headings in the ground truth: its title and its clauses, in order
    expected = [
        line
        for n in (1, 2, 3)
        for line in ground_truth(n).splitlines()
        if line.startswith(("CONTRATO DE PRESTAÇÃO", "CLÁUSULA "))
    ]
    assert len(expected) == 10
    assert headings[: len(expected)] == expected
    assert markdown.count("\n# ") >= 1 and "# CONTRATO DE PRESTAÇÃO DE SERVIÇOS DE CONSULTORIA" in markdown
    # the invoice table: header and six rows, each row's cells the ground-truth line
    gt6 = ground_truth(6).splitlines()
    first = gt6.index("Item Descrição do serviço Qtd. Valor unit. Valor total")
    table = [ln for ln in markdown.splitlines() if ln.startswith("| ")]
    assert table[:2] == [
        "| Item | Descrição do serviço | Qtd. | Valor unit. | Valor total |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in table[2:]]
    assert len(rows) == 6 and all(len(row) == 5 for row in rows)
    assert [" ".join(row) for row in rows] == gt6[first + 1 : first + 7]


async def test_the_searchable_pdf_goes_with_the_result_and_the_receipt_says_so(
    http: httpx.AsyncClient, container: Container
) -> None:
    h = await key(container)
    job = await submit(http, h, png_of(9), "image/png")
    await result(http, h, job)
    pdf = await http.get(f"/v1/jobs/{job}/result", headers=h, params={"format": "pdf"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    assert (await http.delete(f"/v1/jobs/{job}", headers=h)).status_code == 200
    gone = await http.get(f"/v1/jobs/{job}/result", headers=h, params={"format": "pdf"})
    assert (gone.status_code, gone.json()["code"]) == (410, "gone")
    receipt = (await http.get(f"/v1/jobs/{job}/receipt", headers=h)).json()
    assert receipt["destroyed"] == ["document", "result", "searchable_pdf"]


async def test_an_image_bomb_fails_its_job_cleanly(http: httpx.AsyncClient, container: Container) -> None:
    h = await key(container)
    job = await submit(http, h, png_bomb(), "application/octet-stream")
    status = await finish(http, h, job, timeout=60)
    assert status["status"] == "failed"
    assert status["error"]["code"] == "image_too_large"
    # permanent: not retried, and the document is destroyed
    assert (await http.get(f"/v1/jobs/{job}/receipt", headers=h)).json()["destroyed"] == ["document"]
