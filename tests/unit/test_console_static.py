"""The web console's static files: a strict CSP on every console response, only files of the
console folder served, nothing inline, the key never in localStorage or a cookie -- and the API's
own routes answer with exactly the headers they had before the console existed."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from contrackt.adapters.db.migrate import upgrade
from contrackt.api.app import create_app
from contrackt.api.routes.console import ROOT, console_files
from contrackt.bootstrap import build
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import embedded_settings
from tests.fakes import FakeExtractor, fake_pdf

OWN_FILES = [p for p in ROOT.rglob("*") if p.is_file() and "vendor" not in p.parts]
VOLATILE = {"date", "x-request-id", "ratelimit-reset", "content-length"}


@asynccontextmanager
async def api(tmp_path: Path, **settings: object) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    s = embedded_settings(tmp_path / "home", **settings)
    await asyncio.to_thread(upgrade, s.db_url)
    c = build(s)
    app = create_app(container=c, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, FakeExtractor()))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                yield http, {"X-API-Key": (await c.tenants.create("acme")).api_key}
    finally:
        await c.close()


def directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in csp.split(";")) if d}


async def test_console_pages_carry_a_strict_policy(tmp_path: Path) -> None:
    async with api(tmp_path) as (http, _):
        page = await http.get("/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = directives(page.headers["content-security-policy"])
        assert csp["default-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
        assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]
        # nothing beyond 'self' but WebAssembly compilation (pdf.js's image decoders)
        sources = {s for values in csp.values() for s in values}
        assert sources <= {"'self'", "'none'", "'wasm-unsafe-eval'"}, sources
        assert csp["script-src"] == ["'self'", "'wasm-unsafe-eval'"] and csp["style-src"] == ["'self'"]
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"

        # every file the page loads, and every module the scripts import, is served under the same policy
        html = page.text
        wanted = set(re.findall(r'(?:src|href)="/console/([^"]+)"', html))
        for own in OWN_FILES:
            if own.suffix == ".js":
                wanted |= {m for m in re.findall(r'from "\./([^"]+)"', own.read_text())}
        wanted |= {"vendor/pdfjs/pdf.worker.min.mjs", "vendor/pdfjs/wasm/openjpeg.wasm", "vendor/pdfjs/LICENSE"}
        assert {"console.js", "console.css", "api.js", "render.js", "vendor/pdfjs/pdf.min.mjs"} <= wanted
        types = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".wasm": "application/wasm"}
        for name in sorted(wanted):
            r = await http.get(f"/console/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-security-policy"] == page.headers["content-security-policy"], name
            assert r.headers["content-type"].startswith(types.get(Path(name).suffix, "")), name
            assert r.content == (ROOT / name).read_bytes()

        assert (await http.get("/console/")).headers["location"] == "/console"
        for outside in ("../app.py", "%2e%2e/app.py", "..%2fapp.py", "/etc/passwd", "../routes/console.py", "nope.js"):
            r = await http.get(f"/console/{outside}")
            assert r.status_code == 404, outside
            assert "def " not in r.text and "root:" not in r.text


async def test_contrackt_api_serves_the_console_too(tmp_path: Path) -> None:
    """`contrackt api` builds the app without a worker; the console needs neither it nor a key."""
    app = create_app(embedded_settings(tmp_path / "home"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        page = await http.get("/console")
        assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert '<script type="module" src="/console/console.js">' in page.text


def test_console_files_hold_nothing_inline_and_no_key_outside_session_storage() -> None:
    html = (ROOT / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []  # every script is a file
    assert "<style" not in html and " style=" not in html and re.search(r"\son[a-z]+=", html) is None
    scripts = "\n".join(p.read_text() for p in OWN_FILES if p.suffix == ".js")
    assert "sessionStorage" in scripts
    for forbidden in ("localStorage", "document.cookie", "innerHTML", "outerHTML", "insertAdjacentHTML", "eval("):
        assert forbidden not in scripts, forbidden
    # no third-party origin anywhere (the SVG namespace is a name, not a fetch)
    urls = set(re.findall(r"https?://[^\s\"')]+", scripts + html + (ROOT / "console.css").read_text()))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    assert "X-API-Key" in scripts and "?api_key" not in scripts


async def test_api_routes_answer_with_the_headers_they_had_without_the_console(tmp_path: Path) -> None:
    async def headers_of(home: str, console: bool) -> list[tuple[str, int, dict[str, str]]]:
        out = []
        async with api(tmp_path / home, console=console) as (http, key):
            job = (await http.post("/v1/extract", headers=key, content=fake_pdf("hello"))).json()["job_id"]
            requests: list[tuple[str, Callable[[], object]]] = [
                ("live", lambda: http.get("/v1/health/live")),
                ("jobs", lambda: http.get("/v1/jobs", headers=key)),
                ("job", lambda: http.get(f"/v1/jobs/{job}", headers=key)),
                ("no key", lambda: http.get("/v1/jobs")),
                ("missing", lambda: http.get("/v1/jobs/nope", headers=key)),
                ("openapi", lambda: http.get("/openapi.json")),
            ]
            for name, send in requests:
                r = await send()  # type: ignore[misc]
                out.append((name, r.status_code, {k: v for k, v in r.headers.items() if k not in VOLATILE}))
            missing_console = await http.get("/console")
            assert missing_console.status_code == (200 if console else 404)
        return out

    with_console = await headers_of("a", True)
    without = await headers_of("b", False)
    assert with_console == without
    for name, _, headers in with_console:
        assert "content-security-policy" not in headers and "x-frame-options" not in headers, name


def test_an_installed_package_carries_every_console_file(tmp_path: Path) -> None:
    """A wheel built from the project (a copy, so the tree stays clean) holds every console file."""
    repo = Path(__file__).resolve().parents[2]
    tree = tmp_path / "tree"
    for name in ("pyproject.toml", "README.md"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, tree / name)
    shutil.copytree(repo / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("contrackt-*.whl")
    with zipfile.ZipFile(wheel) as z:
        packaged = {n.removeprefix("contrackt/api/console/") for n in z.namelist() if "/api/console/" in n}
    served = console_files()
    assert {"index.html", "console.js", "vendor/pdfjs/pdf.worker.min.mjs"} <= set(served)
    assert packaged == set(served)


@pytest.mark.parametrize("name", ["LICENSE", "wasm/LICENSE_OPENJPEG", "standard_fonts/LICENSE_FOXIT"])
def test_vendored_pdfjs_keeps_its_licences(name: str) -> None:
    assert (ROOT / "vendor" / "pdfjs" / name).stat().st_size > 100
