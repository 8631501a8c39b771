"""The web console: static files at /console, served with a strict Content-Security-Policy.

The files live in the package (``contrackt/api/console``); pdf.js is vendored there, built,
so nothing is compiled or fetched when the service runs. Only files that exist in that folder
when the app is created can be served (an allow-list, so no path can climb out of it), and
the headers below go on console responses only: the API's own routes are left as they are.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

ROOT = Path(str(files("contrackt.api") / "console"))

# 'self' only. worker-src: pdf.js parses the PDF in a module worker loaded from /console.
# 'wasm-unsafe-eval' lets that worker compile the vendored WebAssembly image decoders
# (JPEG 2000, JBIG2, ICC colour) -- it permits compiling WebAssembly, not eval() of JavaScript;
# without it a JPEG 2000 scan draws as a blank page. No data:, blob: or inline anything.
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "worker-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cache-Control": "no-cache",
}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".ttf": "font/ttf",
    ".pfb": "application/octet-stream",
    ".svg": "image/svg+xml",
}


def console_files(root: Path = ROOT) -> dict[str, Path]:
    """Every servable file by its URL path under /console/ (licences and README included)."""
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and p.suffix != ".py" and "__pycache__" not in p.parts
    }


def build_router() -> APIRouter:
    router = APIRouter()
    served = console_files()

    def file(name: str) -> Response:
        path = served.get(name)
        if path is None:
            return Response("Not found", status_code=404, media_type="text/plain; charset=utf-8", headers=HEADERS)
        media = MEDIA_TYPES.get(path.suffix, "text/plain; charset=utf-8")
        return FileResponse(path, media_type=media, headers=HEADERS)

    @router.get(
        "/console",
        summary="Web console (HTML): try a document in the browser",
        response_class=FileResponse,
        responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
    )
    async def console() -> Response:
        return file("index.html")

    @router.get("/console/", include_in_schema=False)
    async def console_slash() -> Response:
        return RedirectResponse("/console", status_code=308, headers=HEADERS)

    @router.get("/console/{name:path}", include_in_schema=False)
    async def console_asset(name: str) -> Response:
        return file(name)

    return router
