"""Serving one large result: the one-piece (legacy) way against the streamed way, in the same run.

    .venv/bin/python -m bench.results_stream                 # 60 MB JSON, embedded SQLite results
    .venv/bin/python -m bench.results_stream --mb 20 --results-url redis://127.0.0.1:6379

The parent process builds a home (SQLite, local keys), stores two copies of the same result
through the real worker path, then rewrites one of them in the pre-streaming format (one
AES-GCM piece). Each measurement runs in a fresh child process that only serves: it drives the
ASGI app directly with a client that counts and hashes the body without keeping it, and reports
the time to the first body byte, the total time, the child's RSS high-water mark above its RSS
just before the request (VmHWM - VmRSS), and in a separate child the tracemalloc peak above the
traced memory before the request (tracemalloc slows allocation, so it gets its own run).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from contrackt.domain.results import ExtractionResult, Line, Page
from contrackt.ports.extractor import DocumentInfo, ExtractOptions, ProgressCallback
from contrackt.services.crypto import PURPOSE_RESULT, seal

MB = 1_000_000


@dataclass
class Served:
    status: int
    headers: dict[str, str]
    body_bytes: int
    body_sha256: str
    first_byte_s: float
    total_s: float
    error: str | None = None
    body: bytes | None = None  # only with keep=True
    complete: bool = False  # the app ended the body (more_body false)


async def serve(
    app: Any, path: str, api_key: str, query: str = "", *, keep: bool = False, leave_after: int | None = None
) -> Served:
    """GET ``path`` through the ASGI app without an HTTP client: the body is hashed and counted,
    kept only with ``keep``, so the process's memory is the app's own. ``leave_after``: the client
    goes away once it has that many body bytes (the next send fails, as with a closed socket)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"bench"), (b"x-api-key", api_key.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    started = time.perf_counter()
    sent_request = False
    never = asyncio.Event()
    out = Served(0, {}, 0, "", 0.0, 0.0)
    digest = hashlib.sha256()
    kept: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out.status = message["status"]
            out.headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            if leave_after is not None and out.body_bytes >= leave_after:
                raise OSError("the client went away")
            body = message.get("body", b"")
            if body and not out.body_bytes:
                out.first_byte_s = time.perf_counter() - started
            out.body_bytes += len(body)
            digest.update(body)
            if keep:
                kept.append(body)
            out.complete = not message.get("more_body", False)

    try:
        await app(scope, receive, send)
    except Exception as exc:  # a broken transfer: what the client would see as a cut connection
        out.error = type(exc).__name__
    out.total_s = time.perf_counter() - started
    out.body_sha256 = digest.hexdigest()
    out.body = b"".join(kept) if keep else None
    return out


def big_result(megabytes: float, lines_per_page: int = 40, line_chars: int = 400) -> ExtractionResult:
    """A result whose JSON is about ``megabytes`` MB: pages of long lines with boxes."""
    per_page = lines_per_page * (3 * line_chars + 80)
    pages = max(1, int(megabytes * MB / per_page))
    out = []
    for n in range(1, pages + 1):
        lines = [
            Line(f"{n:05d}/{i:03d} " + "Cláusula contratual " * (line_chars // 20 - 1), 0.97, (10.0, i, 500.0, i + 9.0))
            for i in range(lines_per_page)
        ]
        out.append(Page(n, "ocr", "\n".join(ln.text for ln in lines), 0.97, lines, zoom=1.5))
    return ExtractionResult(pages=out, engine="bench")


def seal_legacy(key: bytes, version: int, tenant_id: str, job_id: str, result: ExtractionResult) -> bytes:
    """What the worker stored before results were streamed: the JSON with ``engine``, one piece."""
    body: dict[str, Any] = {"job_id": job_id, **result.to_dict(), "engine": result.engine}
    body["result_sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return seal(key, version, tenant_id, job_id, PURPOSE_RESULT, json.dumps(body, ensure_ascii=False).encode())


class PreparedExtractor:
    """An extractor that returns a prepared result: the big one for documents marked ``big``."""

    def __init__(self, big: ExtractionResult, small: ExtractionResult) -> None:
        self.big, self.small = big, small

    async def start(self) -> None:
        return None

    def engines(self) -> list[str]:
        return ["bench"]

    async def inspect(self, pdf: bytes) -> DocumentInfo:
        return DocumentInfo(pages=len((self.big if b"big" in pdf else self.small).pages), encrypted=False)

    async def extract(
        self, pdf: bytes, options: ExtractOptions, progress: ProgressCallback | None = None
    ) -> ExtractionResult:
        return self.big if b"big" in pdf else self.small

    async def close(self) -> None:
        return None


def _settings(home: Path, results_url: str) -> Any:
    from contrackt.settings import Settings

    return Settings(home=home, results_url=results_url, rate_limit_status="100000/minute", result_ttl_seconds=3600)


async def prepare(home: Path, megabytes: float, results_url: str) -> dict[str, Any]:
    """Completed jobs with the same big result, one stored streamed and one rewritten in the legacy
    format; and a small result each way, for the children's warm-up request."""
    from contrackt.adapters.db.migrate import upgrade
    from contrackt.bootstrap import build
    from contrackt.domain.tenants import Principal
    from contrackt.services.dispatch import relay_outbox

    settings = _settings(home, results_url)
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    try:
        key = await c.tenants.create("bench")
        principal = Principal(tenant_id=key.tenant_id, api_key_id=key.key_id)
        big, small = big_result(megabytes), big_result(0.05)
        processing = c.attach_extractor(PreparedExtractor(big, small))
        names = ("streamed", "legacy", "streamed_warmup", "legacy_warmup")
        jobs = {}
        for name in names:
            doc = f"%PDF-1.7\n%{name}{' big' if 'warmup' not in name else ''}\n".encode()
            jobs[name] = (await c.intake.submit(principal, doc)).job.id
        await relay_outbox(c.uow, c.queue, c.clock)
        while (delivery := await c.queue.receive("bench", 0.05)) is not None:
            await processing.handle(delivery)
        version, data_key = await c.keyring.current(key.tenant_id)
        for name, result in (("legacy", big), ("legacy_warmup", small)):
            async with c.uow(key.tenant_id) as uow:
                job = await uow.jobs.get(key.tenant_id, jobs[name])
            assert job is not None and job.result_expires_at is not None, name
            legacy = seal_legacy(data_key, version, key.tenant_id, job.id, result)
            await c.results.put(key.tenant_id, job.id, legacy, job.result_expires_at)
        stored = await c.results.get(key.tenant_id, jobs["streamed"])
        assert stored is not None
        body = {"job_id": jobs["streamed"], **big.to_dict()}
        return {
            "api_key": key.api_key,
            "tenant_id": key.tenant_id,
            **jobs,
            "stored_bytes": len(stored),
            "json_bytes": len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()),
        }
    finally:
        await c.close()


async def cleanup(home: Path, results_url: str, info: dict[str, Any]) -> None:
    """Delete the stored results (a shared Redis would keep them for their TTL otherwise)."""
    from contrackt.bootstrap import build

    c = build(_settings(home, results_url))
    try:
        for name in ("streamed", "legacy", "streamed_warmup", "legacy_warmup"):
            await c.results.delete(info["tenant_id"], info[name])
    finally:
        await c.close()


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


async def child(
    home: Path, results_url: str, job_id: str, warmup_id: str, api_key: str, fmt: str, traced: bool
) -> dict[str, Any]:
    """Serve one result once in this (fresh) process and measure it."""
    from contrackt.api.app import create_app
    from contrackt.bootstrap import build

    c = build(_settings(home, results_url))
    app = create_app(container=c)
    try:
        async with app.router.lifespan_context(app):
            # warm-up: a small result served the same way loads every module, key and statement
            warm = await serve(app, f"/v1/jobs/{warmup_id}/result", api_key, f"format={fmt}")
            assert warm.status == 200 and warm.error is None, warm
            rss_before = _rss_kib("VmRSS")
            if traced:
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
            served = await serve(app, f"/v1/jobs/{job_id}/result", api_key, f"format={fmt}")
            peak_traced = tracemalloc.get_traced_memory()[1] - base if traced else None
            tracemalloc.stop()
            hwm = _rss_kib("VmHWM")
    finally:
        await c.close()
    return {
        **asdict(served),
        "headers": {k: v for k, v in served.headers.items() if k in ("content-type", "content-length")},
        "rss_peak_above_start_mb": max(0, hwm - rss_before) * 1024 / MB,
        "traced_peak_mb": None if peak_traced is None else peak_traced / MB,
    }


def run_child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.results_stream", *args], capture_output=True, text=True, check=False
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=60.0, help="size of the result JSON in MB (default 60)")
    parser.add_argument("--results-url", default="sql://", help="CONTRACKT_RESULTS_URL (default sql://, SQLite)")
    parser.add_argument("--format", default="json", choices=["json", "text"])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--child", nargs=6, metavar=("HOME", "JOB", "WARMUP", "KEY", "FMT", "TRACED"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    os.environ.setdefault("CONTRACKT_ALLOW_LOCAL_KEYS", "1")
    if args.child:
        home, job, warmup, key, fmt, traced = args.child
        print(json.dumps(asyncio.run(child(Path(home), args.results_url, job, warmup, key, fmt, traced == "1"))))
        return
    with tempfile.TemporaryDirectory(prefix="ctk-bench-results-") as tmp:
        home = Path(tmp) / "home"
        info = asyncio.run(prepare(home, args.mb, args.results_url))
        try:
            rows = measure(home, args, info)
        finally:
            asyncio.run(cleanup(home, args.results_url, info))
        print(
            f"{'way':<10}{'status':>7}{'body MB':>9}{'first byte ms':>15}{'total s':>9}{'RSS peak +MB':>14}"
            f"{'traced peak MB':>16}"
        )
        for r in rows:
            print(
                f"{r['way']:<10}{r['status']:>7}{r['body_bytes'] / MB:>9.1f}{r['first_byte_s'] * 1000:>15.0f}"
                f"{r['total_s']:>9.2f}{r['rss_peak_above_start_mb']:>14.1f}{r['traced_peak_mb']:>16.1f}"
            )
        if args.json:
            public = {k: v for k, v in info.items() if k != "api_key"}
            args.json.write_text(json.dumps({"info": public, "rows": rows}))


def measure(home: Path, args: argparse.Namespace, info: dict[str, Any]) -> list[dict[str, Any]]:
    """One timed child and one traced child per way."""
    print(
        f"result JSON {info['json_bytes'] / MB:.1f} MB, stored object (JSON + text, sealed) "
        f"{info['stored_bytes'] / MB:.1f} MB, results {args.results_url}, format={args.format}, "
        f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.2f}"
    )
    rows = []
    for way in ("legacy", "streamed"):
        base = [str(home), info[way], info[f"{way}_warmup"], info["api_key"], args.format]
        timed = run_child(["--results-url", args.results_url, "--child", *base, "0"])
        traced = run_child(["--results-url", args.results_url, "--child", *base, "1"])
        rows.append({"way": way, **timed, "traced_peak_mb": traced["traced_peak_mb"]})
    return rows


if __name__ == "__main__":
    main()
