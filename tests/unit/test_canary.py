"""Logs canary (embedded stack): a document's text and file name never rest in clear anywhere.

The upload carries a canary string and a canary CPF in its text and its file name.
After the job has run, the document was destroyed and the result fetched, the
canary is looked for in everything the service wrote: every structlog line,
stdlib log records, /metrics, the SQLite database (dumped through SQLite, so
the WAL is included, and its raw files), the blob directory, the whole
CONTRACKT_HOME and the temporary directory. The result is stored, but sealed:
the canary must not appear in clear in any of them.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog

from contrackt.bootstrap import Container
from contrackt.logging import configure
from contrackt.settings import Settings
from tests.fakes import fake_pdf
from tests.unit.lifecycle_support import auth, eventually, new_tenant, wait_done, wait_purged

CANARY = "CANARIO-9c1d-PAPAGAIO"
CPF = "529.982.247-25"
CANARIES = (CANARY, CPF, CPF.replace(".", "").replace("-", ""), "papagaio-silva")
FILE_NAME = f"{CANARY}-papagaio-silva.pdf"


class _Stderr:
    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Production logging: our processors and JSON renderer, lines to whatever sys.stderr is
    at the moment of writing (capsys swaps it per test phase); loggers not cached."""
    configure("json", "DEBUG")
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.reset_defaults()


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setenv("TMPDIR", str(path))
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _leaks(haystacks: dict[str, bytes]) -> list[str]:
    found = []
    for where, data in haystacks.items():
        lowered = data.lower()
        for canary in CANARIES:
            for form in (canary.encode(), canary.encode("utf-16-le")):
                if form.lower() in lowered:
                    found.append(f"{canary!r} in {where}")
    return found


async def test_canary_never_rests_in_clear(
    json_logs: None,
    temp_dir: Path,
    client: httpx.AsyncClient,
    container: Container,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = await new_tenant(container)
    pdf = fake_pdf(f"Contrato {CANARY}\nCPF {CPF}%PAGESegunda página {CANARY}")
    r = await client.post(
        "/v1/extract",
        headers={**auth(t), "Idempotency-Key": f"idem-{CANARY}"},
        files={"file": (FILE_NAME, pdf, "application/pdf")},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert (await wait_done(client, job_id, auth(t)))["status"] == "completed"
    await wait_purged(container, t["tenant_id"], job_id)
    result = await client.get(f"/v1/jobs/{job_id}/result", headers=auth(t))
    text = await client.get(f"/v1/jobs/{job_id}/result?format=text", headers=auth(t))
    # the test means something: the text did go through the service
    assert CANARY in result.json()["text"] and CPF in text.text

    async def receipt_ready() -> bool:
        return (await client.get(f"/v1/jobs/{job_id}/receipt", headers=auth(t))).status_code == 200

    await eventually(receipt_ready)
    # an error path too: a failing document logs its failure, not its content
    bad = await client.post("/v1/extract", headers=auth(t), content=fake_pdf(f"{CANARY} {CPF}", "corrupt"))
    assert (await wait_done(client, bad.json()["job_id"], auth(t)))["status"] == "failed"
    metrics = (await client.get("/metrics")).text

    captured = capsys.readouterr()
    log_lines = [line for line in captured.err.splitlines() if line.startswith("{")]
    assert any(json.loads(line).get("event") == "job.completed" for line in log_lines), "no JSON log captured"

    with sqlite3.connect(settings.home / "contrackt.db") as db:  # sees the WAL's committed pages
        dump = "\n".join(db.iterdump())
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert {"jobs", "audit_logs", "results", "outbox"} <= set(tables)
    assert "results" in dump and 'INSERT INTO "results"' in dump  # the sealed result is there

    haystacks = {
        "stderr (structlog)": captured.err.encode(),
        "stdout": captured.out.encode(),
        "stdlib log records": caplog.text.encode(),
        "/metrics": metrics.encode(),
        "sqlite iterdump": dump.encode(),
        **_files(settings.home),  # database, WAL, shm, blobs, key files
        **_files(temp_dir),
    }
    assert any("contrackt.db" in k for k in haystacks)
    assert _leaks({"upload": pdf}) and _leaks({"name": FILE_NAME.encode()})  # the detector works
    assert _leaks(haystacks) == []
