"""The API edge under attack: slow uploads, a multipart body of empty parts, and a liveness probe.

A probe asks ``GET /v1/health/live`` every 100 ms for the whole attack; its latency is how long
the server's event loop was unavailable.  At the same time ``--slow`` connections each send a
few body bytes a second (half raw, half multipart), and ``--parts`` multipart bodies of
``--parts-mb`` MiB each, made only of empty parts, are posted as fast as the server reads.

    .venv/bin/python -m bench.edge --url http://127.0.0.1:8000 --api-key ctk_... [--slow 50]
        [--parts-mb 50] [--parts 1] [--max-seconds 30] [--json out.json]

Raw sockets on purpose: an HTTP client library would not send a body a few bytes at a time, and
would lose an early answer (408/413 before the body is complete) to a broken pipe.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx

BOUNDARY = "edgeboundary"


@dataclass
class Answer:
    """What one attacking connection ended with."""

    kind: str  # slow-raw | slow-multipart | empty-parts
    outcome: str  # answered | cut (closed without an answer) | open (still open when we gave up)
    seconds: float  # from the request's headers being sent to the outcome
    status: int | None = None
    code: str | None = None


@dataclass
class Report:
    probe_ms: list[float] = field(default_factory=list)
    probe_failures: int = 0
    answers: list[Answer] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.probe_ms)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else float("nan")

        by_kind: dict[str, dict[str, Any]] = {}
        for a in self.answers:
            k = by_kind.setdefault(a.kind, {"outcomes": {}, "seconds_min": a.seconds, "seconds_max": a.seconds})
            key = f"{a.outcome}:{a.status}:{a.code}" if a.outcome == "answered" else a.outcome
            k["outcomes"][key] = k["outcomes"].get(key, 0) + 1
            k["seconds_min"] = round(min(k["seconds_min"], a.seconds), 2)
            k["seconds_max"] = round(max(k["seconds_max"], a.seconds), 2)
        buckets = {"<50ms": 0, "50-100ms": 0, "100-250ms": 0, "250ms-1s": 0, ">=1s": 0}
        for ms in lat:
            label = (
                "<50ms"
                if ms < 50
                else "50-100ms"
                if ms < 100
                else "100-250ms"
                if ms < 250
                else "250ms-1s"
                if ms < 1000
                else ">=1s"
            )
            buckets[label] += 1
        return {
            "probe": {
                "count": len(lat),
                "failures": self.probe_failures,
                "max_ms": round(lat[-1], 1) if lat else None,
                "p50_ms": pct(0.5),
                "p90_ms": pct(0.9),
                "p99_ms": pct(0.99),
                "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
                "histogram": buckets,
            },
            "attackers": by_kind,
        }


def empty_parts_body(total: int, boundary: str = BOUNDARY) -> bytes:
    """A multipart body of ``total`` bytes made of nothing but empty, header-less parts."""
    part = f"--{boundary}\r\n\r\n\r\n".encode()
    closing = f"--{boundary}--\r\n".encode()
    count = max(1, (total - len(closing)) // len(part))
    body = part * count + closing
    return body + b"\r\n" * ((total - len(body)) // 2)  # epilogue padding, ignored by parsers


def request_head(host: str, path: str, api_key: str, content_type: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {api_key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def parse_answer(raw: bytes) -> tuple[int | None, str | None]:
    """Status and problem code of an HTTP answer (the code when the body is problem+json)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None, None
    try:
        code = json.loads(body).get("code")
    except ValueError:
        code = None
    return status, code


def _answer_complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def _read_answer(sock: socket.socket, buf: bytearray, until: float) -> bool:
    """Read what has arrived; True once the connection is finished (answer complete or closed)."""
    while time.monotonic() < until:
        ready, _, _ = select.select([sock], [], [], max(0.0, min(0.05, until - time.monotonic())))
        if not ready:
            continue
        try:
            data = sock.recv(65536)
        except OSError:
            return True
        if not data:
            return True
        buf += data
        if _answer_complete(bytes(buf)):
            return True
    return False


def slow_upload(host: str, port: int, api_key: str, multipart: bool, give_up_at: float) -> Answer:
    """Declare a 1 MiB body, then send it 2 bytes every 0.5 s until the server answers or cuts."""
    kind = "slow-multipart" if multipart else "slow-raw"
    ctype = f"multipart/form-data; boundary={BOUNDARY}" if multipart else "application/pdf"
    prefix = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n'.encode()
        if multipart
        else b""
    )
    buf = bytearray()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request_head(host, "/v1/extract", api_key, ctype, 1024 * 1024) + prefix + b"%P")
        started = time.monotonic()
        while time.monotonic() < give_up_at:
            if _read_answer(sock, buf, time.monotonic() + 0.5):
                break
            try:
                sock.sendall(b"DF")
            except OSError:
                break
        seconds = time.monotonic() - started
        if buf:
            status, code = parse_answer(bytes(buf))
            return Answer(kind, "answered", seconds, status, code)
        return Answer(kind, "cut" if time.monotonic() < give_up_at else "open", seconds)


def post_at_once(host: str, port: int, api_key: str, content_type: str, body: bytes, give_up_at: float) -> Answer:
    """Send ``body`` as fast as the server takes it while reading its answer at the same time."""
    buf = bytearray()
    with socket.create_connection((host, port), timeout=10) as sock:
        head = request_head(host, "/v1/extract", api_key, content_type, len(body))

        def send() -> None:
            try:
                sock.sendall(head)
                view = memoryview(body)
                for i in range(0, len(body), 256 * 1024):
                    sock.sendall(view[i : i + 256 * 1024])
            except OSError:
                pass  # the server answered early and closed: the answer is what counts

        started = time.monotonic()
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        _read_answer(sock, buf, give_up_at)
        seconds = time.monotonic() - started
    if buf:
        status, code = parse_answer(bytes(buf))
        return Answer("empty-parts", "answered", seconds, status, code)
    return Answer("empty-parts", "cut" if time.monotonic() < give_up_at else "open", seconds)


def probe(url: str, stop: threading.Event, report: Report, interval: float = 0.1) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                ok = client.get(url).status_code == 200
            except httpx.HTTPError:
                ok = False
            report.probe_ms.append((time.monotonic() - started) * 1000)
            report.probe_failures += 0 if ok else 1
            stop.wait(max(0.0, interval - (time.monotonic() - started)))


def attack(
    url: str, api_key: str, *, slow: int = 50, parts_mb: float = 50, parts: int = 1, max_seconds: float = 30
) -> Report:
    """Run the whole attack against ``url`` (bounded by ``max_seconds``) and report."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    report = Report()
    stop = threading.Event()
    give_up_at = time.monotonic() + max_seconds
    prober = threading.Thread(target=probe, args=(f"{url}/v1/health/live", stop, report), daemon=True)
    prober.start()
    time.sleep(0.5)  # a few quiet samples first

    lock = threading.Lock()

    def run_slow(i: int) -> None:
        answer = slow_upload(host, port, api_key, i % 2 == 1, give_up_at)
        with lock:
            report.answers.append(answer)

    def run_parts() -> None:
        body = empty_parts_body(int(parts_mb * 1024 * 1024))
        answer = post_at_once(host, port, api_key, f"multipart/form-data; boundary={BOUNDARY}", body, give_up_at)
        with lock:
            report.answers.append(answer)

    threads = [threading.Thread(target=run_slow, args=(i,), daemon=True) for i in range(slow)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the slow ones are in; now the big body
    for _ in range(parts if parts_mb > 0 else 0):
        threads.append(threading.Thread(target=run_parts, daemon=True))
        threads[-1].start()
    for t in threads:
        t.join(max(0.0, give_up_at - time.monotonic()) + 5)
    time.sleep(0.5)  # a few samples after the attack
    stop.set()
    prober.join(35)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--slow", type=int, default=50)
    ap.add_argument("--parts-mb", type=float, default=50, help="size of each body of empty parts (0: none)")
    ap.add_argument("--parts", type=int, default=1, help="bodies of empty parts sent at once")
    ap.add_argument("--max-seconds", type=float, default=30)
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()
    report = attack(
        args.url, args.api_key, slow=args.slow, parts_mb=args.parts_mb, parts=args.parts, max_seconds=args.max_seconds
    )
    summary = report.summary()
    print(json.dumps(summary, indent=2))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"summary": summary, "answers": [asdict(a) for a in report.answers]}, f, indent=2)


if __name__ == "__main__":
    main()
