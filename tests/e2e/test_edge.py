"""End to end: the API edge of real `contrackt serve` / `contrackt api` processes under attack.

- 50 slow uploads and one 50 MB multipart body of empty parts against `contrackt serve`:
  /v1/health/live keeps answering in under a second, the slow ones get 408 at the body
  timeout, the empty-parts body its 413 ``too_many_parts``.
- Upload caps: 429 ``too_many_uploads`` over a key's cap, 503 ``overloaded`` over the process's.
- Event streams: 429 ``too_many_streams`` over a key's cap, and a stream whose key is
  revoked (`contrackt key revoke`) ends within seconds with ``event: error``.

`contrackt api` (no worker) keeps jobs pending, so streams stay open as long as a test needs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from bench.edge import Answer, attack, slow_upload

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent / "contrackt"
PDF = b"%PDF-1.7\n%edge test: this api has no worker, the job stays pending\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(home: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACKT_")}
    env.update(
        CONTRACKT_HOME=str(home),
        CONTRACKT_RATE_LIMIT_STATUS="100000/minute",
        CONTRACKT_RATE_LIMIT_EXTRACT="100000/minute",
        CONTRACKT_LOG_FORMAT="json",
        CONTRACKT_SHUTDOWN_GRACE_SECONDS="2",
    )
    env.update({f"CONTRACKT_{k.upper()}": v for k, v in settings.items()})
    return env


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@contextmanager
def launched(command: str, env: dict[str, str], log: Path, ready_path: str) -> Iterator[str]:
    port = free_port()
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [str(BIN), command, "--port", str(port)], env=env, stdout=sink, stderr=sink, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{command} exited early:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError(f"{command} never became ready:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


# ----------------------------------------------------------------------------- the attack


def test_slow_uploads_and_empty_parts_leave_health_answering(tmp_path: Path) -> None:
    body_timeout = 5.0
    env = env_for(
        tmp_path / "home",
        workers="1",
        body_timeout_seconds=str(body_timeout),
        max_uploads_per_key="64",
        max_concurrent_uploads="64",
    )
    key = json.loads(cli(env, "tenant", "create", "attacker", "--json"))["api_key"]
    with launched("serve", env, tmp_path / "serve.log", "/v1/health/ready") as url:
        report = attack(url, key, slow=50, parts_mb=50, max_seconds=25)
    summary = report.summary()
    print("\nedge under attack (contrackt serve):", json.dumps(summary, indent=2))
    probe = summary["probe"]
    assert probe["count"] >= 30, "the probe hardly ran"
    assert probe["failures"] == 0
    assert probe["max_ms"] < 1000, f"/v1/health/live took {probe['max_ms']} ms"

    slow = [a for a in report.answers if a.kind.startswith("slow")]
    assert len(slow) == 50
    assert {(a.outcome, a.status, a.code) for a in slow} == {("answered", 408, "body_timeout")}
    times = sorted(a.seconds for a in slow)
    assert body_timeout - 0.5 <= times[0] and times[-1] <= body_timeout + 4, times  # cut at about the timeout

    (parts,) = [a for a in report.answers if a.kind == "empty-parts"]
    assert (parts.outcome, parts.status, parts.code) == ("answered", 413, "too_many_parts")
    assert parts.seconds < 5


# ----------------------------------------------------------------------------- caps on an API process


@dataclass
class Api:
    url: str
    env: dict[str, str]

    def tenant(self, name: str) -> dict[str, str]:
        out: dict[str, str] = json.loads(cli(self.env, "tenant", "create", name, "--json"))
        return out

    def gauge(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=5).text
        m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert m, f"{name} missing from /metrics"
        return float(m.group(1))

    def wait_gauge(self, name: str, value: float, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.gauge(name) != value:
            assert time.monotonic() < deadline, f"{name} never reached {value} (now {self.gauge(name)})"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("edge-api")
    env = env_for(
        root / "home",
        body_timeout_seconds="3",
        max_uploads_per_key="2",
        max_concurrent_uploads="3",
        max_streams_per_key="2",
    )
    with launched("api", env, root / "api.log", "/v1/health/live") as url:
        yield Api(url, env)


def test_upload_caps_answer_429_per_key_and_503_per_process(api: Api) -> None:
    a, b = api.tenant("a")["api_key"], api.tenant("b")["api_key"]
    host, port = "127.0.0.1", int(api.url.rsplit(":", 1)[1])
    answers: list[Answer] = []

    def hold(key: str) -> threading.Thread:
        give_up = time.monotonic() + 20

        def run() -> None:
            answers.append(slow_upload(host, port, key, False, give_up))

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    with httpx.Client(base_url=api.url, timeout=10) as http:
        held = [hold(a), hold(a)]
        api.wait_gauge("contrackt_uploads_in_progress", 2)
        r = http.post("/v1/extract", headers={"X-API-Key": a}, content=PDF)
        assert r.status_code == 429, r.text
        assert r.json()["code"] == "too_many_uploads"
        assert int(r.headers["Retry-After"]) >= 1
        held.append(hold(b))
        api.wait_gauge("contrackt_uploads_in_progress", 3)
        r = http.post("/v1/extract", headers={"X-API-Key": b}, content=PDF)
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "overloaded"
        assert int(r.headers["Retry-After"]) >= 1
        for t in held:
            t.join(30)
        assert [(x.status, x.code) for x in answers] == [(408, "body_timeout")] * 3
        api.wait_gauge("contrackt_uploads_in_progress", 0)
        assert http.post("/v1/extract", headers={"X-API-Key": a}, content=PDF).status_code == 202


# ----------------------------------------------------------------------------- event streams


@dataclass
class Stream:
    """One SSE connection read on a thread: its status, its events, when the server ended it."""

    status: int | None = None
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    ended_at: float | None = None
    raw: bytearray = field(default_factory=bytearray)
    stop: threading.Event = field(default_factory=threading.Event)

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


EVENT = re.compile(rb"event: (\w+)\ndata: (.*?)\n\n")


def open_stream(url: str, job_id: str, key: str) -> Stream:
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    stream = Stream()
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(
        f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
        "Accept: text/event-stream\r\nConnection: close\r\n\r\n".encode()
    )
    sock.settimeout(0.2)

    def read() -> None:
        with sock:
            while not stream.stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    stream.ended_at = time.monotonic()
                    return
                stream.raw += data
                if stream.status is None and b"\r\n" in stream.raw:
                    stream.status = int(stream.raw.split(b" ", 2)[1])
                stream.events = [(m[1].decode(), json.loads(m[2])) for m in EVENT.finditer(bytes(stream.raw))]

    threading.Thread(target=read, daemon=True).start()
    return stream


def wait_until(cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_stream_cap_is_429_and_a_revoked_keys_streams_end_within_seconds(api: Api) -> None:
    tenant = api.tenant("streams")
    first = tenant["api_key"]
    second = json.loads(cli(api.env, "key", "create", tenant["tenant_id"]))
    with httpx.Client(base_url=api.url, timeout=10) as http:
        r = http.post("/v1/extract", headers={"X-API-Key": first}, content=PDF)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]

        doomed = [open_stream(api.url, job_id, second["api_key"]) for _ in range(2)]
        wait_until(lambda: all(s.names()[:1] == ["queued"] for s in doomed))
        over = http.get(f"/v1/jobs/{job_id}/events", headers={"X-API-Key": second["api_key"]})
        assert over.status_code == 429
        assert over.json()["code"] == "too_many_streams"
        assert int(over.headers["Retry-After"]) >= 1
        kept = open_stream(api.url, job_id, first)  # another key: its own allowance
        wait_until(lambda: kept.names()[:1] == ["queued"])
        assert api.gauge("contrackt_event_streams_open") == 3

        started = time.monotonic()
        cli(api.env, "key", "revoke", second["key_id"])
        returned = time.monotonic()
        wait_until(lambda: all(s.ended_at is not None for s in doomed), timeout=15)
        ended = max(s.ended_at or 0 for s in doomed)
        print(
            f"\nrevoked key's streams ended {ended - started:.2f} s after `contrackt key revoke` started "
            f"(the command itself took {returned - started:.2f} s)"
        )
        assert ended - returned < 5
        for s in doomed:
            name, data = s.events[-1]
            assert (name, data["code"]) == ("error", "unauthorized")
            assert s.names() == ["queued", "error"]
        assert kept.ended_at is None  # the other key's stream goes on
        assert http.get(f"/v1/jobs/{job_id}/events", headers={"X-API-Key": second["api_key"]}).status_code == 401

        # A stream the client closes gives its slot back: the first key may open two again.
        kept.stop.set()
        api.wait_gauge("contrackt_event_streams_open", 0)
        again = [open_stream(api.url, job_id, first) for _ in range(2)]
        wait_until(lambda: all(s.names()[:1] == ["queued"] for s in again))
        assert all(s.status == 200 for s in again)
        for s in again:
            s.stop.set()
