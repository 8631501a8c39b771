"""Load test on real processes, loopback only (docs/adr/0019-capacity.md):

    .venv/bin/python -m bench.load --target all --duration 20 --json out.json --plots docs/img
    .venv/bin/python -m bench.load --target serve --duration 3 --steps 0.5,2 --batch 20 --scans 1

Per target (``serve``: the embedded ``contrackt serve``; ``production``: ``contrackt api`` + N
``contrackt worker`` over PostgreSQL, Redis Streams and moto S3 from ``.test-services/env``),
two tenants, every setting at its default except the two request-rate limits (raised, so that
the limiter does not stand in for the capacity being measured):

1. end-to-end latency of a 3-page scan (scan_mild pp. 1-3) on an idle system, ``--scans`` times;
2. throughput: ``--batch`` one-page born-digital PDFs, 8 POSTs at a time, then
   ``--scan-batch`` 3-page scans; jobs/s and pages/s from the first POST to the last
   ``completed_at``; production with 1 and then 2 worker processes. The born-digital figure
   with the most workers is the measured capacity C;
3. the API's overhead: POST -> 202 against a bare FastAPI upload endpoint (``bench.load.bare``,
   one uvicorn process, started in the same run), one at a time in alternating blocks, then
   8 at a time for a few seconds each;
4. step load: one-page born-digital PDFs at ``--steps`` x C POSTs/s (open loop), ``--duration``
   seconds a step, each step drained before the next: every status counted, ingest p50/p99,
   end-to-end p50/p99;
5. overload at the edge: ``--overload-clients`` clients POSTing at once (more than the upload
   caps admit) for ``--overload-duration`` s: only 202, 429 and 503 may come back (a request
   with no answer at all, e.g. a connection reset, is counted in ``transport_errors``);
6. verification: every accepted (202) job of the run must reach ``completed``, and the server
   must hold exactly those jobs (``verify.server_jobs``, by status, from ``GET /v1/jobs``).

Prints a summary table; ``--json PATH`` writes every figure; ``--plots DIR`` writes
``load-latency.png`` and ``load-throughput.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import stack
from bench.load.driver import ALLOWED, Driver, Job, Outcome, ms, pct

TENANTS = ["load-a", "load-b"]
# Only the request-rate limits are raised; backlog, queue depth and upload caps keep their defaults.
RAISED_LIMITS = {"CONTRACKT_RATE_LIMIT_EXTRACT": "1000000/minute", "CONTRACKT_RATE_LIMIT_STATUS": "1000000/minute"}
OCR_THREADS = {"OMP_NUM_THREADS": "1", "OMP_THREAD_LIMIT": "1"}


def pages_of(path: Path, indexes: list[int]) -> bytes:
    import pypdfium2 as pdfium

    src = pdfium.PdfDocument(path.read_bytes())
    out = pdfium.PdfDocument.new()
    out.import_pages(src, indexes)
    buf = io.BytesIO()
    out.save(buf)
    return buf.getvalue()


def documents() -> dict[str, bytes]:
    return {
        "born_1p": pages_of(stack.CORPUS / "born_digital.pdf", [0]),
        "scan_3p": pages_of(stack.CORPUS / "scan_mild.pdf", [0, 1, 2]),
    }


def cpu_now(s: stack.Stack) -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {**s.cpu(), "driver": usage.ru_utime + usage.ru_stime}


def cpu_per_job(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    return {k: round((after[k] - before.get(k, 0.0)) / max(1, jobs), 4) for k in after}


def throughput_row(workers: int, kind: str, pages: int, out: Outcome) -> dict[str, Any]:
    done = [j for j in out.jobs if j.status == "completed" and j.done_at is not None]
    row: dict[str, Any] = {"workers": workers, "kind": kind, "jobs": len(out.jobs), "completed": len(done)}
    if done:
        span = max(j.done_at or 0 for j in done) - min(j.submitted for j in out.jobs)
        row.update(
            seconds=round(span, 2),
            jobs_per_s=round(len(done) / span, 2),
            pages_per_s=round(len(done) * pages / span, 2),
            e2e_p50_ms=ms(pct([j.e2e_s or 0 for j in done], 50)),
        )
    return row


def step_row(factor: float, rate: float, out: Outcome, drained_s: float) -> dict[str, Any]:
    e2e = [j.e2e_s for j in out.jobs if j.e2e_s is not None and j.status == "completed"]
    return {
        "factor": factor,
        "offered_per_s": round(rate, 2),
        "sent": out.sent,
        "statuses": dict(out.statuses),
        "refusals": dict(out.refusals),
        "accepted": len(out.jobs),
        "accepted_per_s": round(len(out.jobs) / out.wall_s, 2) if out.wall_s else 0,
        "ingest_p50_ms": ms(pct(out.ingest_s, 50)),
        "ingest_p99_ms": ms(pct(out.ingest_s, 99)),
        "e2e_p50_ms": ms(pct(e2e, 50)),
        "e2e_p99_ms": ms(pct(e2e, 99)),
        "completed": sum(j.status == "completed" for j in out.jobs),
        "drain_s": round(drained_s, 1),
        "load": stack.load(),
    }


async def overhead(api: Driver, bare: Driver, doc: bytes, blocks: int, burst_s: float) -> dict[str, Any]:
    """POST -> 202 on the API and on the bare endpoint, interleaved so that noise hits both."""
    sides: dict[str, dict[str, Any]] = {"contrackt": {"lat": [], "jobs": []}, "bare": {"lat": []}}
    for _ in range(blocks):
        for name, driver in (("contrackt", api), ("bare", bare)):
            out = await driver.closed_loop(doc, "born_1p", 1, concurrency=1, count=10, track=name == "contrackt")
            sides[name]["lat"] += out.ingest_s
            sides[name].setdefault("statuses", Counter()).update(out.statuses)
            sides[name].get("jobs", []).extend(out.jobs)
    for name, driver in (("contrackt", api), ("bare", bare)):
        out = await driver.closed_loop(doc, "born_1p", 1, concurrency=8, duration=burst_s, track=name == "contrackt")
        sides[name]["rps_c8"] = round(len(out.ingest_s) / out.wall_s, 1)
        sides[name]["p50_c8_ms"] = ms(pct(out.ingest_s, 50))
        sides[name]["statuses"].update(out.statuses)
        sides[name].get("jobs", []).extend(out.jobs)
    row: dict[str, Any] = {}
    for name, side in sides.items():
        row[name] = {
            "p50_ms": ms(pct(side["lat"], 50)),
            "p99_ms": ms(pct(side["lat"], 99)),
            "rps_c8": side["rps_c8"],
            "p50_c8_ms": side["p50_c8_ms"],
            "statuses": dict(side["statuses"]),
        }
    c, b = row["contrackt"], row["bare"]
    row["p50_ratio"] = round(c["p50_ms"] / b["p50_ms"], 2) if c["p50_ms"] and b["p50_ms"] else None
    row["rps_ratio"] = round(c["rps_c8"] / b["rps_c8"], 2) if b["rps_c8"] else None
    row["_jobs"] = sides["contrackt"]["jobs"]
    return row


async def measure(
    s: stack.Stack, keys: list[str], bare_url: str, args: argparse.Namespace, worker_counts: list[int]
) -> dict[str, Any]:
    docs = documents()
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    timeout = httpx.Timeout(120)
    async with (
        httpx.AsyncClient(base_url=s.url, limits=limits, timeout=timeout) as http,
        httpx.AsyncClient(base_url=bare_url, limits=limits, timeout=timeout) as bare_http,
    ):
        api = Driver(http, keys)
        bare = Driver(bare_http, ["unused"], path="/upload")
        every: list[Job] = []
        posts: Counter[str] = Counter()

        def keep(out: Outcome) -> Outcome:
            every.extend(out.jobs)
            posts.update(out.statuses)
            return out

        res: dict[str, Any] = {"load_start": stack.load()}
        # 1. a 3-page scan on an idle system
        scan_e2e: list[float] = []
        for _ in range(args.scans):
            out = keep(await api.closed_loop(docs["scan_3p"], "scan_3p", 3, concurrency=1, count=1))
            await api.wait_done(out.jobs, args.drain_timeout)
            scan_e2e += [j.e2e_s for j in out.jobs if j.e2e_s is not None]
        res["scan_3p_idle_e2e_ms"] = [ms(v) for v in scan_e2e]
        # 2. throughput by worker processes
        rows = []
        for n in worker_counts:
            if args.target_name == "production":
                s.set_workers(n)
            before = cpu_now(s)
            out = keep(await api.closed_loop(docs["born_1p"], "born_1p", 1, concurrency=8, count=args.batch))
            await api.wait_done(out.jobs, args.drain_timeout)
            rows.append(throughput_row(n, "born_1p", 1, out))
            rows[-1]["cpu_s_per_job"] = cpu_per_job(before, cpu_now(s), len(out.jobs))
            if args.scan_batch:
                before = cpu_now(s)
                out = keep(await api.closed_loop(docs["scan_3p"], "scan_3p", 3, concurrency=8, count=args.scan_batch))
                await api.wait_done(out.jobs, args.drain_timeout)
                rows.append(throughput_row(n, "scan_3p", 3, out))
                rows[-1]["cpu_s_per_job"] = cpu_per_job(before, cpu_now(s), len(out.jobs))
            rows[-1]["load"] = stack.load()
        res["throughput"] = rows
        capacity = max(
            r.get("jobs_per_s", 0) for r in rows if r["kind"] == "born_1p" and r["workers"] == worker_counts[-1]
        )
        res["capacity_jobs_per_s"] = capacity
        if capacity <= 0:
            raise SystemExit("no born-digital job completed: no capacity to step up to")
        # 3. the API's overhead against a bare FastAPI upload endpoint
        row = await overhead(api, bare, docs["born_1p"], blocks=args.overhead_blocks, burst_s=args.burst)
        jobs = row.pop("_jobs")
        every.extend(jobs)
        posts.update(row["contrackt"]["statuses"])
        await api.wait_done(jobs, args.drain_timeout)
        res["overhead"] = row
        # 4. step load up to args.steps[-1] x capacity
        steps = []
        for factor in args.steps:
            rate = factor * capacity
            before = cpu_now(s)
            out = keep(await api.open_loop(docs["born_1p"], "born_1p", 1, rate=rate, duration=args.duration))
            drained = await api.wait_done(out.jobs, args.drain_timeout + 3 * args.duration)
            steps.append(step_row(factor, rate, out, drained))
            steps[-1]["cpu_s_per_job"] = cpu_per_job(before, cpu_now(s), len(out.jobs))
            print(f"  step {factor:g}x: {json.dumps(steps[-1])}", file=sys.stderr)
        res["steps"] = steps
        # 5. overload at the edge: more clients at once than the upload caps admit
        before = cpu_now(s)
        out = keep(
            await api.closed_loop(
                docs["born_1p"], "born_1p", 1, concurrency=args.overload_clients, duration=args.overload_duration
            )
        )
        drained = await api.wait_done(out.jobs, args.drain_timeout + 3 * args.overload_duration)
        res["overload"] = step_row(float(args.overload_clients), out.sent / out.wall_s, out, drained)
        res["overload"]["clients"] = args.overload_clients
        del res["overload"]["factor"]
        res["overload"]["cpu_s_per_job"] = cpu_per_job(before, cpu_now(s), len(out.jobs))
        print(f"  overload: {json.dumps(res['overload'])}", file=sys.stderr)
        # 6. every accepted job must complete
        await api.wait_done(every, args.drain_timeout)
        e2e = [j.e2e_s for j in every if j.kind == "born_1p" and j.e2e_s is not None]
        res["post_statuses"] = dict(posts)
        res["unexpected_post_statuses"] = {
            k: v for k, v in posts.items() if k not in ALLOWED and not k.startswith("error:")
        }
        # no HTTP answer at all (e.g. a connection reset): counted apart, see docs/capacity.md
        res["transport_errors"] = {k: v for k, v in posts.items() if k.startswith("error:")}
        res["poll_statuses"] = dict(api.poll_statuses)
        res["verify"] = {
            "accepted": len(every),
            "completed": sum(j.status == "completed" for j in every),
            "failed": sum(j.status == "failed" for j in every),
            "unfinished": sum(j.status not in ("completed", "failed") for j in every),
            "server_jobs": dict(await api.server_jobs()),
        }
        res["born_1p_e2e_p50_ms"] = ms(pct(e2e, 50))
        res["load_end"] = stack.load()
        return res


def start_bare(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = stack.free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stack.REPO), os.environ.get("PYTHONPATH", "")])}
    with (tmp / "bare.log").open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.load.bare", "--port", str(port)],
            cwd=stack.REPO,
            env=env,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    stack.wait_ready(f"{url}/livez", [proc], timeout=60)
    return proc, url


def run_target(name: str, args: argparse.Namespace) -> dict[str, Any]:
    args.target_name = name
    extra = {**RAISED_LIMITS, **OCR_THREADS}
    with tempfile.TemporaryDirectory(prefix=f"ctk-load-{name}-") as tmp_name:
        tmp = Path(tmp_name)
        bare, bare_url = start_bare(tmp)
        try:
            if name == "serve":
                with stack.embedded(tmp, TENANTS, extra) as (s, keys):
                    return asyncio.run(measure(s, keys, bare_url, args, [1]))
            counts = list(range(1, args.max_workers + 1))
            with stack.production(tmp, TENANTS, counts[0], extra) as (s, keys):
                return asyncio.run(measure(s, keys, bare_url, args, counts))
        finally:
            stack.stop([bare])


def fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def summary(result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    out(f"cpus {result['cpus']}  load {result['load_before']} -> {result['load_after']}")
    for name, t in result["targets"].items():
        out(
            f"\n== {name}: capacity {t['capacity_jobs_per_s']} one-page jobs/s; 3-page scan idle e2e ms "
            f"{t['scan_3p_idle_e2e_ms']}"
        )
        out(
            f"{'workers':>7} {'kind':8} {'jobs':>5} {'s':>7} {'jobs/s':>7} {'pages/s':>8} {'e2e p50 ms':>11}  CPU s/job"
        )
        for r in t["throughput"]:
            out(
                f"{r['workers']:>7} {r['kind']:8} {r['jobs']:>5} {fmt(r.get('seconds')):>7} "
                f"{fmt(r.get('jobs_per_s')):>7} {fmt(r.get('pages_per_s')):>8} {fmt(r.get('e2e_p50_ms')):>11}"
                f"  {r.get('cpu_s_per_job')}"
            )
        o = t["overhead"]
        out(
            f"overhead vs bare FastAPI: p50 {o['contrackt']['p50_ms']} vs {o['bare']['p50_ms']} ms "
            f"(x{o['p50_ratio']}), p99 {o['contrackt']['p99_ms']} vs {o['bare']['p99_ms']} ms, "
            f"8 at a time {o['contrackt']['rps_c8']} vs {o['bare']['rps_c8']} req/s (x{o['rps_ratio']})"
        )
        out(
            f"{'step':>5} {'offered/s':>9} {'sent':>5} {'202/s':>6} {'ingest p50':>10} {'p99':>8} "
            f"{'e2e p50':>8} {'p99':>8}  statuses"
        )
        for st in t["steps"]:
            out(
                f"{st['factor']:>4}x {st['offered_per_s']:>9} {st['sent']:>5} {st['accepted_per_s']:>6} "
                f"{fmt(st['ingest_p50_ms']):>10} {fmt(st['ingest_p99_ms']):>8} {fmt(st['e2e_p50_ms']):>8} "
                f"{fmt(st['e2e_p99_ms']):>8}  {st['statuses']}  load {st['load']}"
            )
        o = t["overload"]
        out(
            f"overload, {o['clients']} clients at once: {o['statuses']}; ingest p50/p99 {o['ingest_p50_ms']}/"
            f"{o['ingest_p99_ms']} ms; e2e p50/p99 {o['e2e_p50_ms']}/{o['e2e_p99_ms']} ms"
        )
        v = t["verify"]
        out(
            f"POST statuses {t['post_statuses']}; unexpected {t['unexpected_post_statuses'] or 'none'}; "
            f"no answer {t['transport_errors'] or 'none'}; accepted {v['accepted']}, completed {v['completed']}, "
            f"failed {v['failed']}, unfinished {v['unfinished']}; jobs on the server {v['server_jobs']}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=["serve", "production", "all"], default="serve")
    p.add_argument("--duration", type=float, default=20, help="seconds per load step")
    p.add_argument("--steps", default="0.25,0.5,1,1.5,2", help="load steps as multiples of the measured capacity")
    p.add_argument("--batch", type=int, default=100, help="one-page jobs for the throughput measurement")
    p.add_argument("--scan-batch", type=int, default=4, help="3-page scans for the throughput measurement (0: none)")
    p.add_argument("--scans", type=int, default=2, help="3-page scans timed one at a time on an idle system")
    p.add_argument("--max-workers", type=int, default=2, help="production: throughput with 1..N worker processes")
    p.add_argument("--overhead-blocks", type=int, default=10, help="blocks of 10 POSTs per side, one at a time")
    p.add_argument("--burst", type=float, default=5, help="seconds of 8-at-a-time POSTs per side")
    p.add_argument("--overload-clients", type=int, default=64, help="clients POSTing at once in the overload phase")
    p.add_argument("--overload-duration", type=float, default=5, help="seconds of the overload phase")
    p.add_argument("--drain-timeout", type=float, default=300, help="seconds to wait for accepted jobs to finish")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plots", type=Path, default=None, help="folder for load-latency.png and load-throughput.png")
    args = p.parse_args(argv)
    args.steps = [float(x) for x in args.steps.split(",") if x]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = ["serve", "production"] if args.target == "all" else [args.target]
    started = time.time()
    result: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": stack.load(), "targets": {}}
    for name in names:
        print(f"{name}: running (load {stack.load()})", file=sys.stderr)
        result["targets"][name] = run_target(name, args)
    result.update(load_after=stack.load(), wall_s=round(time.time() - started, 1))
    result["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    summary(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.plots:
        from bench.load.plot import plots

        plots(result, args.plots)
    return 0
