"""Key rotation: new work uses the new version; what was sealed under the old one still opens."""

from __future__ import annotations

import json
from pathlib import Path

from contrackt.bootstrap import Container
from contrackt.domain.audit import AuditAction
from contrackt.domain.tenants import Principal
from contrackt.services.crypto import key_version_of
from contrackt.services.result_object import result_key_version
from tests.fakes import fake_pdf
from tests.unit.lifecycle_support import invoke_cli, job_chain, process_pending


async def test_rotation_keeps_old_results_readable(container: Container) -> None:
    c = container
    key = await c.tenants.create("acme")
    tid = key.tenant_id
    p = Principal(tenant_id=tid, api_key_id=key.key_id)

    old = await c.intake.submit(p, fake_pdf("antes da rotação"))
    assert await process_pending(c) == 1
    straddling = await c.intake.submit(p, fake_pdf("recebido em v1, processado em v2"))
    old_result = await c.results.get(tid, old.job.id)
    assert old_result is not None and result_key_version(old_result) == 1
    assert key_version_of(await c.blobs.get(straddling.job.blob_key or "")) == 1

    assert await c.keyring.rotate(tid) == 2

    new = await c.intake.submit(p, fake_pdf("depois da rotação"))
    assert new.job.key_version == 2
    assert key_version_of(await c.blobs.get(new.job.blob_key or "")) == 2
    assert await process_pending(c) == 2  # the v1 document decrypts after the rotation

    for job_id, received, completed in ((old.job.id, 1, 1), (straddling.job.id, 1, 2), (new.job.id, 2, 2)):
        sealed = await c.results.get(tid, job_id)
        assert sealed is not None and result_key_version(sealed) == completed
        body = await c.reader.result(p, job_id)  # every version still decrypts
        assert body["job_id"] == job_id
        rows = {r.event.action: r.event.details for r in await job_chain(c, tid, job_id)}
        assert rows[AuditAction.RECEIVED]["key_version"] == received
        assert rows[AuditAction.COMPLETED]["key_version"] == completed
    assert "depois da rotação" in (await c.reader.result(p, new.job.id))["text"]
    assert "antes da rotação" in (await c.reader.result(p, old.job.id))["text"]


def test_cli_rotate_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    created = invoke_cli(home, "tenant", "create", "acme", "--json")
    assert created.exit_code == 0, created.output
    tenant_id = json.loads(created.output)["tenant_id"]
    for version in (2, 3):
        rotated = invoke_cli(home, "tenant", "rotate-key", tenant_id)
        assert (rotated.exit_code, rotated.output.strip()) == (0, f"key version {version}")
