"""End to end on the real `contrackt serve`: one tenant's hostile PDF reaches no one else.

Tenant A sends the output bombs of issue 10 (a 1,361-byte PDF whose three pages share one
content stream printing 20,000 lines each, and its 79 KB, 500-page version); tenant B sends
an ordinary contract at the same moment. A's jobs end as `output_limit` quickly, the
server's memory stays bounded and keeps answering, B's job completes with the exact text.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.bombs import output_bomb
from tests.conftest import corpus_path
from tests.e2e.test_serve import cli, descendants, free_port, ground_truth, serve
from tests.helpers_cer import corpus_cer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Watch(threading.Thread):
    """Samples the server's memory (and its children's) and its liveness every 100 ms."""

    def __init__(self, pid: int, base_url: str) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.base_url = base_url
        self.stop = threading.Event()
        self.peak_server_kb = 0
        self.peak_child_kb = 0
        self.live_max_s = 0.0
        self.live_failures = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5) as http:
            while not self.stop.is_set():
                self.peak_server_kb = max(self.peak_server_kb, rss_kb(self.pid))
                for child in descendants(self.pid):
                    self.peak_child_kb = max(self.peak_child_kb, rss_kb(child))
                started = time.monotonic()
                try:
                    ok = http.get("/v1/health/live").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.live_max_s = max(self.live_max_s, time.monotonic() - started)
                self.live_failures += not ok
                self.stop.wait(0.1)


def test_an_output_bomb_fails_alone_and_another_tenant_is_served(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    key_a = json.loads(cli(home, "tenant", "create", "attacker", "--json"))["api_key"]
    key_b = json.loads(cli(home, "tenant", "create", "bystander", "--json"))["api_key"]
    small, large = output_bomb(pages=3), output_bomb(pages=500)
    assert len(small) < 2_000 and len(large) < 100_000
    born = corpus_path("synthetic", "born_digital.pdf").read_bytes()
    base = f"http://127.0.0.1:{port}"
    with serve(home, port, tmp_path / "serve.log") as proc, httpx.Client(base_url=base, timeout=30) as http:
        watch = Watch(proc.pid, base)
        watch.start()
        try:
            started = time.monotonic()
            pdf = {"Content-Type": "application/pdf"}
            bombs = [
                http.post("/v1/extract", content=doc, headers={"X-API-Key": key_a, **pdf}).json()["job_id"]
                for doc in (small, large)
            ]
            victim = http.post("/v1/extract", content=born, headers={"X-API-Key": key_b, **pdf}).json()["job_id"]
            ends: dict[str, tuple[float, dict[str, object]]] = {}
            while len(ends) < 3 and time.monotonic() - started < 90:
                for job_id, key in ((bombs[0], key_a), (bombs[1], key_a), (victim, key_b)):
                    if job_id not in ends:
                        body = http.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": key}).json()
                        if body["status"] in ("completed", "failed"):
                            ends[job_id] = (time.monotonic() - started, body)
                time.sleep(0.2)
            result = http.get(f"/v1/jobs/{victim}/result", headers={"X-API-Key": key_b})
        finally:
            watch.stop.set()
            watch.join(10)
        serve_hwm = rss_kb(proc.pid, "VmHWM")
    assert set(ends) == {*bombs, victim}, f"unfinished after 90 s: {ends}"
    for job_id in bombs:
        seconds, body = ends[job_id]
        assert body["status"] == "failed" and body["error"]["code"] == "output_limit", body  # type: ignore[index]
        assert seconds < 60
    seconds_b, body_b = ends[victim]
    assert body_b["status"] == "completed", body_b
    assert result.status_code == 200
    pages = result.json()["pages"]
    assert corpus_cer((p["text"], ref) for p, ref in zip(pages, ground_truth(), strict=True)) == 0.0
    print(
        f"\nbombs ended as output_limit after {ends[bombs[0]][0]:.1f} s and {ends[bombs[1]][0]:.1f} s; "
        f"the other tenant's job completed after {seconds_b:.1f} s; "
        f"serve peak RSS {serve_hwm / 1024:.0f} MB (sampled {watch.peak_server_kb / 1024:.0f} MB), "
        f"largest OCR process {watch.peak_child_kb / 1024:.0f} MB; "
        f"/v1/health/live max {watch.live_max_s * 1000:.0f} ms, failures {watch.live_failures}"
    )
    assert watch.live_failures == 0 and watch.live_max_s < 1.0
    # Before the caps the 500-page bomb took this process to 10.7 GB; now it never holds it.
    assert serve_hwm < 1024 * 1024
