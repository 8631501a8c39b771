"""The web console in headless Chromium against a real ``contrackt serve``: a key pasted, a
born-digital PDF and a scanned page as PNG uploaded, progress followed to the end, the local
pages drawn with the result's line boxes, the three views, the three downloads, the job list;
no console error and no Content-Security-Policy violation on the way. Screenshots are kept
(CONTRACKT_TEST_ARTIFACTS, else the test's tmp_path) and their folder is printed.

Debian's ``chromium`` (scripts/install.sh) is driven by Playwright for Python; Playwright's own
browser download is never used. A browser that cannot start fails the test, with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import corpus_path
from tests.documents import jpx_pdf_of, png_top_of
from tests.e2e.test_serve import cli, free_port, serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")


def artefacts(tmp_path: Path) -> Path:
    root = os.environ.get("CONTRACKT_TEST_ARTIFACTS")
    out = Path(root) / "console" if root else tmp_path / "artefacts"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the requirement is pinned
        pytest.fail(f"playwright is not installed (requirements.txt pins it): {exc}")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/install.sh, APT_PACKAGES)")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        except Exception as exc:
            pytest.fail(f"headless Chromium could not be launched from {CHROMIUM}: {exc}")
        try:
            yield b
        finally:
            b.close()


# Runs before any page script: records CSP violations and every status the console shows.
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
window.__statuses = [];
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("status");
  // each textContent assignment adds one text node: every status shown, even within one task
  new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) window.__statuses.push(n.textContent);
  }).observe(status, { childList: true });
});
"""

# Every line box of a page lies inside its drawn page (the overlay is scaled to the canvas).
BOXES_INSIDE = """
(n) => {
  const fig = document.querySelector(`figure.page[data-page="${n}"]`);
  const page = fig.querySelector("canvas").getBoundingClientRect();
  const out = [];
  for (const r of fig.querySelectorAll("rect.box")) {
    const b = r.getBoundingClientRect();
    if (b.width <= 0 || b.left < page.left - 1 || b.right > page.right + 1 ||
        b.top < page.top - 1 || b.bottom > page.bottom + 1) out.push([b.left, b.top, b.right, b.bottom]);
  }
  return {count: fig.querySelectorAll("rect.box").length, outside: out,
          page: [page.width, page.height]};
}
"""


# Share of dark pixels on a drawn page: a page whose image could not be decoded is blank.
INK = """
(n) => {
  const c = document.querySelector(`figure.page[data-page="${n}"] canvas`);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let dark = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 128) dark++;
  return dark / (c.width * c.height);
}
"""


def gt_words(number: int, count: int = 6) -> list[str]:
    text = corpus_path("synthetic", "gt", f"page_{number:02d}.txt").read_text()
    return re.findall(r"\w{6,}", text)[:count]


def upload_and_finish(page: Any, path: Path, pages: int) -> str:
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#status[data-state=completed]", timeout=60_000)
    page.wait_for_selector("#pages[data-overlaid=true]", timeout=30_000)
    page.wait_for_selector("#view[data-loaded=true]", timeout=30_000)
    assert page.inner_text("#status") == f"Done: {pages} page(s)"
    assert page.eval_on_selector("#progress", "p => [p.value, p.max]") == [pages, pages]
    assert page.get_attribute("#status", "data-via") == "events"
    return str(page.inner_text("#job-id")).strip()


def show(page: Any, fmt: str) -> str:
    page.click(f".view-tab[data-format={fmt}]")
    page.wait_for_selector(f"#view[data-format={fmt}][data-loaded=true]", timeout=15_000)
    return str(page.inner_text("#view"))


def downloaded(page: Any, button: str, folder: Path) -> bytes:
    with page.expect_download(timeout=30_000) as info:
        page.click(button)
    target = folder / info.value.suggested_filename
    info.value.save_as(target)
    return target.read_bytes()


def check_overlay(page: Any, result: dict[str, Any], rendered: int) -> dict[int, int]:
    counts = {}
    for p in result["pages"][:rendered]:
        drawn = page.evaluate(BOXES_INSIDE, p["number"])
        assert drawn["count"] == len(p["lines"]) > 0, (p["number"], drawn["count"], len(p["lines"]))
        assert drawn["outside"] == [], f"page {p['number']}: boxes outside the drawn page {drawn['page']}"
        counts[p["number"]] = drawn["count"]
    return counts


def test_console_upload_progress_overlay_views_downloads_and_jobs(tmp_path: Path, browser: Any) -> None:
    home = tmp_path / "home"
    key = json.loads(cli(home, "tenant", "create", "acme", "--json"))["api_key"]
    out = artefacts(tmp_path)
    print(f"\nconsole screenshots and downloads: {out}")
    pdf_path = corpus_path("synthetic", "born_digital.pdf")
    # the top 40 % of two scanned pages (about a dozen lines each: OCR is the slow part)
    png_path = tmp_path / "scan-page-1.png"
    png_path.write_bytes(png_top_of(1, 0.4))
    jpx_path = tmp_path / "scan-page-2-jpx.pdf"
    jpx_path.write_bytes(jpx_pdf_of(2, share=0.4))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # one worker: the console sends one document at a time, and one OCR child starts sooner
    with (
        serve(home, port, tmp_path / "serve.log", {"CONTRACKT_WORKERS": "1"}),
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        context.add_init_script(WATCH)
        page = context.new_page()
        errors: list[str] = []
        # errors, and warnings about the policy (pdf.js's worker reports a refused WebAssembly
        # compilation only as a warning, never as a securitypolicyviolation event on the page)
        page.on(
            "console",
            lambda m: (
                errors.append(f"console.{m.type}: {m.text}")
                if m.type == "error" or "content security policy" in m.text.lower()
                else None
            ),
        )
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        # Chromium's network log calls a streamed body that a script read to its end "aborted"
        # (ERR_ABORTED) once the server closes it; that the stream itself carried the job to its
        # end is asserted below (data-via="events": no fallback to polling was needed).
        page.on(
            "requestfailed",
            lambda r: None if r.url.endswith("/events") else errors.append(f"requestfailed: {r.url} {r.failure}"),
        )

        answer = page.goto(f"{base}/console")
        assert answer is not None and answer.status == 200
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        page.wait_for_selector("body[data-ready=true]")
        # without a key nothing is sent; a wrong key is refused and says so
        page.set_input_files("#file", str(pdf_path))
        assert page.inner_text("#error") == "no_key: Paste an API key first"
        page.fill("#api-key", "ctk_wrong")
        page.click("#key-save")
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error").startswith("unauthorized:")
        assert [e for e in errors if "401" not in e] == []  # the browser logs each refused request
        errors.clear()
        page.fill("#api-key", key)
        page.click("#key-save")
        assert page.inner_text("#key-state") == "Key set for this tab"
        # the key lives in this tab's sessionStorage only: not in localStorage, not in a cookie
        stored = page.evaluate("[sessionStorage.getItem('contrackt.apiKey'), localStorage.length, document.cookie]")
        assert stored == [key, 0, ""]
        assert page.input_value("#api-key") == ""

        # 1. A born-digital PDF (10 text-layer pages).
        job_pdf = upload_and_finish(page, pdf_path, 10)
        assert "Page 10 of 10" in page.evaluate("window.__statuses")
        result = http.get(f"/v1/jobs/{job_pdf}/result", headers={"X-API-Key": key}).json()
        assert {p["source"] for p in result["pages"]} == {"text_layer"}
        counts = check_overlay(page, result, 10)
        page.screenshot(path=str(out / "console-pdf.png"), full_page=True)
        text = show(page, "text")
        markdown = show(page, "markdown")
        for word in gt_words(1):
            assert word in text and word in markdown, word
        assert "<!-- page 1 -->" in markdown
        as_json = json.loads(show(page, "json"))
        assert as_json["job_id"] == job_pdf and len(as_json["pages"]) == 10
        got = json.loads(downloaded(page, "#dl-result", out))  # the JSON view is selected
        assert got["job_id"] == job_pdf and got["result_sha256"] == result["result_sha256"]
        searchable = downloaded(page, "#dl-pdf", out)
        assert searchable.startswith(b"%PDF-") and len(searchable) > 10_000
        receipt = json.loads(downloaded(page, "#dl-receipt", out))
        assert receipt["job_id"] == job_pdf and receipt["signature"] and "document" in receipt["destroyed"]
        assert receipt["document_sha256"] == hashlib.sha256(pdf_path.read_bytes()).hexdigest()

        # 2. A scanned page as a 200 dpi PNG (OCR): boxes in points of a page 72/200 of its pixels.
        show(page, "text")
        job_png = upload_and_finish(page, png_path, 1)
        assert "Page 1 of 1" in page.evaluate("window.__statuses")
        ocr = http.get(f"/v1/jobs/{job_png}/result", headers={"X-API-Key": key}).json()
        assert ocr["pages"][0]["source"] == "ocr"
        png_counts = check_overlay(page, ocr, 1)
        png_text = str(page.inner_text("#view"))
        assert sum(word in png_text for word in gt_words(1)) >= 5, png_text[:300]
        # the scan's first line is the page's first box: near the top, inside the page's width
        first = ocr["pages"][0]["lines"][0]["bbox"]
        svg_box = page.evaluate(
            "() => { const r = document.querySelector('figure.page[data-page=\"1\"] rect.box');"
            " return [+r.getAttribute('x'), +r.getAttribute('y')]; }"
        )
        assert svg_box == pytest.approx(first[:2], abs=0.01)
        page.screenshot(path=str(out / "console-png.png"), full_page=True)

        # 3. A scan stored as JPEG 2000 (as many scanners write): pdf.js decodes it with its vendored
        # WebAssembly decoder, which the policy's 'wasm-unsafe-eval' allows; without it the page is blank.
        job_jpx = upload_and_finish(page, jpx_path, 1)
        ink = page.evaluate(INK, 1)
        assert ink > 0.005, f"the JPEG 2000 page drew blank ({ink:.4f} dark)"
        jpx = http.get(f"/v1/jobs/{job_jpx}/result", headers={"X-API-Key": key}).json()
        jpx_counts = check_overlay(page, jpx, 1)
        assert sum(word in str(page.inner_text("#view")) for word in gt_words(2)) >= 5
        page.screenshot(path=str(out / "console-jpx.png"), full_page=True)

        # 4. Recent jobs: all three, newest first, completed.
        page.click("#jobs-refresh")
        page.wait_for_function("document.querySelectorAll('#jobs tbody tr').length >= 3")
        rows = page.eval_on_selector_all(
            "#jobs tbody tr", "rows => rows.map(r => [r.dataset.jobId, r.children[1].textContent])"
        )
        assert rows == [[job_jpx, "completed"], [job_png, "completed"], [job_pdf, "completed"]]
        page.locator("#jobs-section").screenshot(path=str(out / "console-jobs.png"))

        assert errors == [], errors
        assert page.evaluate("window.__csp") == []
        # The policy is enforced (and the listener hears it): an injected inline script never runs.
        ran = page.evaluate(
            "() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
            " document.body.append(s); return window.__inline === 1; }"
        )
        page.wait_for_function("window.__csp.length > 0")
        assert ran is False
        context.close()
    print(f"line boxes drawn per page: PDF {counts}, PNG {png_counts}, JPEG 2000 PDF {jpx_counts}")
