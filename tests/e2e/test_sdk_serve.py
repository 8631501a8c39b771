"""End to end, the clients' way: ``POST /v1/extract?wait=30``, the Python client and ``contrackt submit``
against the real ``contrackt serve`` (real OCR), quality measured on the synthetic corpus."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from contrackt.client import Client
from tests.conftest import corpus_path
from tests.e2e.test_serve import BIN, cli, env_for, free_port, ground_truth, serve
from tests.helpers_cer import corpus_cer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_wait_the_python_client_and_submit_against_serve(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = json.loads(cli(home, "tenant", "create", "acme", "--json"))["api_key"]
    gt = ground_truth()
    born_path = corpus_path("synthetic", "born_digital.pdf")
    scan_path = corpus_path("synthetic", "scan_mild.pdf")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve(home, port, tmp_path / "serve.log"), httpx.Client(base_url=url, timeout=90) as http:
        # 1. A born-digital PDF answers 200 with its result within ?wait=30.
        born = born_path.read_bytes()
        r = http.post(
            "/v1/extract?wait=30", headers={"X-API-Key": key, "Content-Type": "application/pdf"}, content=born
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-wait-outcome"] == "completed"
        assert r.headers["x-document-sha256"] == hashlib.sha256(born).hexdigest()
        pages = r.json()["pages"]
        assert corpus_cer(zip([p["text"] for p in pages], gt, strict=True)) == 0.0
        assert r.content == http.get(f"/v1/jobs/{r.headers['x-job-id']}/result", headers={"X-API-Key": key}).content
        text = http.post(
            "/v1/extract",
            params={"wait": 30, "format": "text"},
            headers={"X-API-Key": key},
            files={"file": ("contract.pdf", born, "application/pdf")},
        )
        assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
        assert corpus_cer(zip(text.text.split("\n\f\n"), gt, strict=True)) == 0.0

        # 2. The Python client extracts a scan over the event stream, page by page.
        progress: list[tuple[int, int]] = []
        with Client(url, key) as client:
            result = client.extract(scan_path, progress=lambda done, total: progress.append((done, total)))
        cer = corpus_cer(zip([p.text for p in result.pages], gt, strict=True))
        print(f"\nscan_mild through the Python client: CER {cer * 100:.3f}%, progress {progress}")
        assert cer <= 0.01
        assert progress[-1] == (10, 10) and progress == sorted(progress)
        assert {p.source for p in result.pages} == {"ocr"}
        assert result.document_sha256 == hashlib.sha256(scan_path.read_bytes()).hexdigest()
        assert len(result.words) > 100
        for page in result.pages:
            for line in page.lines:
                for word in line.words:
                    assert line.bbox[0] - 1 <= word.bbox[0] <= word.bbox[2] <= line.bbox[2] + 1

        # 3. `contrackt submit --wait` goes through the client and reports the pages.
        env = env_for(home)
        out = subprocess.run(
            [str(BIN), "submit", str(born_path), "--url", url, "--api-key", key, "--wait"],
            env={**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert corpus_cer(zip(out.stdout.rstrip("\n").split("\n\f\n"), gt, strict=True)) == 0.0
        page_lines = [ln for ln in out.stderr.splitlines() if ln.startswith("page ")]
        assert page_lines and page_lines[-1] == "page 10/10"

        # 4. Listing and usage see all of it.
        listed = http.get("/v1/jobs", params={"limit": 100}, headers={"X-API-Key": key}).json()["jobs"]
        assert len(listed) == 4 and {j["status"] for j in listed} == {"completed"}
        totals = http.get("/v1/usage", headers={"X-API-Key": key}).json()["totals"]
        assert totals["pages"] == {"text_layer": 30, "ocr": 10, "total": 40}
        assert totals["jobs"] == {"completed": 4, "failed": 0, "failed_by_code": {}}
