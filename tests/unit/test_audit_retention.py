"""Audit retention on SQLite: old jobs and audit rows go below a signed checkpoint, `audit verify`
still passes from there, every other way of deleting or changing the trail is refused, and the
external chain-head checkpoint catches a truncation hidden by rewriting the recorded head."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.exc import DBAPIError

from contrackt.adapters.checkpoints.file import FileCheckpointSink
from contrackt.adapters.db.migrate import upgrade
from contrackt.adapters.db.tables import audit_checkpoints, audit_prune_gate, jobs, tenants
from contrackt.bootstrap import Container, build
from contrackt.cli import main
from contrackt.domain.audit import SERVICE_CHAIN, AuditAction
from contrackt.domain.checkpoints import ChainCut, signature_ok
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import Job, JobStatus
from contrackt.services import audit
from contrackt.services.audit import verify
from contrackt.services.checkpoints import CheckpointService, read_heads
from contrackt.services.retention import RetentionService
from contrackt.settings import Settings
from tests.conftest import embedded_settings
from tests.unit.lifecycle_support import MovableClock, raw_db

YEAR = timedelta(days=365)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return embedded_settings(tmp_path / "home", audit_checkpoint_url=f"file://{tmp_path / 'anchors'}")


@pytest.fixture
async def c(settings: Settings, clock: MovableClock) -> AsyncIterator[Container]:
    await asyncio.to_thread(upgrade, settings.db_url)
    container = build(settings, clock=clock)
    yield container
    await container.close()


async def finished_job(c: Container, tenant_id: str) -> str:
    """A job that ran and was destroyed at the clock's time, with its whole audit lifecycle."""
    now = c.clock.now()
    job = Job(id=new_id(), tenant_id=tenant_id, status=JobStatus.COMPLETED, created_at=now, completed_at=now)
    job.purged_at = now
    async with c.uow(tenant_id) as uow:
        await uow.jobs.add(job)
        for action in (AuditAction.RECEIVED, AuditAction.PROCESSING, AuditAction.COMPLETED):
            await audit.record(uow, c.clock, tenant_id, action, job_id=job.id)
        await audit.record(uow, c.clock, tenant_id, AuditAction.PURGED, job_id=job.id, what="document")
    return job.id


async def history(c: Container, clock: MovableClock) -> tuple[str, list[str], list[str]]:
    """A tenant with two jobs six years ago and one last year."""
    clock.offset = -6 * YEAR
    tenant_id = (await c.tenants.create("acme")).tenant_id
    old = [await finished_job(c, tenant_id), await finished_job(c, tenant_id)]
    clock.offset = -YEAR
    recent = [await finished_job(c, tenant_id)]
    clock.offset = timedelta()
    return tenant_id, old, recent


async def cli(settings: Settings, *args: str, sink: bool = True) -> Result:
    """``contrackt ARGS`` in-process (in a thread: it runs its own event loop) on this home (and sink)."""
    env = {"CONTRACKT_HOME": str(settings.home)}
    if sink:
        env["CONTRACKT_AUDIT_CHECKPOINT_URL"] = str(settings.audit_checkpoint_url)

    def run() -> Result:
        with mock.patch("contrackt.logging.configure", lambda *a, **k: None):
            return CliRunner().invoke(main, list(args), env=env)

    return await asyncio.to_thread(run)


def retention(c: Container) -> RetentionService:
    return RetentionService(c.uow, c.signer, c.clock, retention_days=c.settings.audit_retention_days)


async def test_retention_prunes_below_a_signed_checkpoint_and_verify_passes(c: Container, clock: MovableClock) -> None:
    tenant_id, old, recent = await history(c, clock)
    async with c.uow(tenant_id) as uow:
        before = await uow.audit.chain(tenant_id)
    cut_row = [r for r in before if r.event.job_id == old[-1]][-1]  # the old jobs' last row

    report = await retention(c).apply()

    assert (report.chains, report.audit_rows, report.jobs, report.checkpoints) == (1, cut_row.seq, 2, 1)
    async with c.uow(tenant_id) as uow:
        after = await uow.audit.chain(tenant_id)
        left = [j.id for j in await uow.jobs.list_for_tenant(tenant_id)]
        cut = await uow.checkpoints.latest(tenant_id)
    assert left == recent
    assert after[0].seq == cut_row.seq + 1 and after[0].prev_hash == cut_row.row_hash
    assert [r.event.action for r in after][-1] is AuditAction.RETENTION
    assert after[-1].event.details == {"seq": cut_row.seq, "rows": cut_row.seq, "jobs": 2}
    assert cut is not None and (cut.seq, cut.row_hash) == (cut_row.seq, cut_row.row_hash)
    assert signature_ok(cut.body(), await c.signer.public_key_raw())
    [chain] = await verify(c.uow, tenant_id, public_key=await c.signer.public_key_raw())
    assert chain.problems == [] and chain.starts_after == cut_row.seq
    # nothing new to prune: a second run changes nothing
    again = await retention(c).apply()
    assert (again.audit_rows, again.jobs, again.checkpoints) == (0, 0, 0)


async def test_a_forged_or_missing_checkpoint_is_reported(
    c: Container, clock: MovableClock, settings: Settings
) -> None:
    tenant_id, _, _ = await history(c, clock)
    await retention(c).apply()
    key = await c.signer.public_key_raw()
    with raw_db(settings) as db:  # the "administrator" swaps the checkpoint's hash, then deletes it
        db.execute("DROP TRIGGER audit_checkpoints_no_update")
        db.execute("UPDATE audit_checkpoints SET row_hash = ?", ("f" * 64,))
    [chain] = await verify(c.uow, tenant_id, public_key=key)
    assert any("not signed by this deployment's key" in p for p in chain.problems)
    with raw_db(settings) as db:
        db.execute("DROP TRIGGER audit_checkpoints_no_delete")
        db.execute("DELETE FROM audit_checkpoints")
    [chain] = await verify(c.uow, tenant_id, public_key=key)
    assert any("expected seq 1" in p for p in chain.problems)


async def test_every_other_delete_or_update_is_refused(c: Container, clock: MovableClock, settings: Settings) -> None:
    tenant_id, _, _ = await history(c, clock)
    cut = c.clock.now() - timedelta(days=settings.audit_retention_days)
    statements = [
        sa.text("DELETE FROM audit_logs"),
        sa.text("UPDATE audit_logs SET action = 'X'"),
    ]
    for stmt in statements:
        with pytest.raises(DBAPIError, match="append-only"):
            async with c.uow(tenant_id) as uow:
                await uow.conn.execute(stmt)
    # the gate opens only at a checkpoint holding the named row's hash
    with pytest.raises(DBAPIError, match="no checkpoint at the cut"):
        async with c.uow(tenant_id) as uow:
            await uow.conn.execute(audit_prune_gate.insert().values(tenant_id=tenant_id, upto_seq=4, cut=cut))
    with pytest.raises(DBAPIError, match="no checkpoint at the cut"):
        async with c.uow(tenant_id) as uow:
            await uow.audit.prune(tenant_id, 4, cut)
    # a checkpoint whose hash is not the row's opens nothing either
    async with c.uow(tenant_id) as uow:
        row = (await uow.audit.chain(tenant_id))[3]
        forged = ChainCut(tenant_id, 4, "0" * 64, row.event.at, cut, c.clock.now(), "k", "s")
        await uow.checkpoints.add(forged)
    for stmt in (sa.text("DELETE FROM audit_checkpoints"), sa.text("UPDATE audit_checkpoints SET seq = 9")):
        with pytest.raises(DBAPIError, match="append-only"):
            async with c.uow(tenant_id) as uow:
                await uow.conn.execute(stmt)
    with pytest.raises(DBAPIError, match="no checkpoint at the cut"):
        async with c.uow(tenant_id) as uow:
            await uow.audit.prune(tenant_id, 4, cut)
    # a true checkpoint lets through only rows older than the gate's cut: last year's stay
    async with c.uow(tenant_id) as uow:
        rows = await uow.audit.chain(tenant_id)
        last = rows[-1]
        await uow.checkpoints.add(ChainCut(tenant_id, last.seq, last.row_hash, last.event.at, cut, cut, "k", "s"))
    with pytest.raises(DBAPIError, match="append-only"):
        async with c.uow(tenant_id) as uow:
            await uow.audit.prune(tenant_id, last.seq, cut)
    async with c.uow(tenant_id) as uow:
        assert len(await uow.audit.chain(tenant_id)) == len(rows)
        assert (await uow.conn.execute(sa.select(sa.func.count()).select_from(audit_prune_gate))).scalar() == 0


async def test_a_checkpoint_covers_only_its_own_tenant(c: Container, clock: MovableClock, settings: Settings) -> None:
    a, _, _ = await history(c, clock)
    b, _, _ = await history(c, clock)
    cut = c.clock.now() - timedelta(days=settings.audit_retention_days)
    async with c.uow(a) as uow:
        row = (await uow.audit.chain(a))[3]
        await uow.checkpoints.add(ChainCut(a, row.seq, row.row_hash, row.event.at, cut, cut, "k", "s"))
    with pytest.raises(DBAPIError, match="no checkpoint at the cut"):
        async with c.uow(b) as uow:
            await uow.audit.prune(b, row.seq, cut)
    async with c.uow(a) as uow:
        assert await uow.audit.prune(a, row.seq, cut) == row.seq
    async with c.uow(b) as uow:
        assert (await uow.audit.chain(b))[0].seq == 1


async def test_export_is_signed_and_audited_in_the_service_chain(c: Container, clock: MovableClock) -> None:
    tenant_id, _, _ = await history(c, clock)
    sink = FileCheckpointSink.from_url(str(c.settings.audit_checkpoint_url))
    export = await CheckpointService(c.uow, c.signer, c.clock, sink).export()
    assert export.chains == 1
    body = json.loads(await sink.read(export.name))
    async with c.uow(tenant_id) as uow:
        head = await uow.audit.head(tenant_id)
    assert body["heads"] == {tenant_id: {"seq": head[0], "row_hash": head[1]}}
    assert read_heads(json.dumps(body).encode(), export.name, await c.signer.public_key_raw()).signed
    body["heads"][tenant_id]["seq"] -= 1
    assert not read_heads(json.dumps(body).encode(), export.name, await c.signer.public_key_raw()).signed
    async with c.uow(SERVICE_CHAIN) as uow:
        [row] = await uow.audit.chain(SERVICE_CHAIN)
    assert row.event.action is AuditAction.CHECKPOINT
    assert row.event.details == {"tenants": 1, "checkpoint": export.name}
    assert row.event.job_id is None and row.event.fingerprint is None
    # the next export carries the service chain's head too
    second = await CheckpointService(c.uow, c.signer, c.clock, sink).export()
    assert second.chains == 2 and await sink.newest() == second.name


async def test_truncation_with_a_rewritten_head_is_caught_by_the_external_checkpoint(
    c: Container, clock: MovableClock, settings: Settings
) -> None:
    tenant_id, _, _ = await history(c, clock)
    for _ in range(2):
        await finished_job(c, tenant_id)
    assert (await cli(settings, "audit", "checkpoint")).exit_code == 0
    async with c.uow(tenant_id) as uow:
        rows = await uow.audit.chain(tenant_id)
    keep = rows[-5]  # the attacker hides the last four rows (one job's whole lifecycle)
    with raw_db(settings) as db:
        db.execute("DROP TRIGGER audit_logs_no_delete")
        db.execute("DELETE FROM audit_logs WHERE tenant_id = ? AND seq > ?", (tenant_id.replace("-", ""), keep.seq))
        db.execute(
            "UPDATE tenants SET audit_seq = ?, audit_head = ? WHERE id = ?",
            (keep.seq, keep.row_hash, tenant_id.replace("-", "")),
        )
    # the database alone agrees with itself: this is the gap ADR 0003 left open ...
    [alone] = await verify(c.uow, tenant_id)
    assert alone.problems == []
    # ... and the external checkpoint closes it
    result = await cli(settings, "audit", "verify")
    assert result.exit_code == 1, result.output
    assert f"{tenant_id}\t{keep.seq} rows\tTAMPERED" in result.output
    assert f"chain ends at seq {keep.seq} but the external checkpoint" in result.output
    assert f"records seq {rows[-1].seq}" in result.output


async def test_a_rewritten_row_before_the_export_is_caught(
    c: Container, clock: MovableClock, settings: Settings
) -> None:
    tenant_id, _, _ = await history(c, clock)
    sink = FileCheckpointSink.from_url(str(settings.audit_checkpoint_url))
    await CheckpointService(c.uow, c.signer, c.clock, sink).export()
    async with c.uow(tenant_id) as uow:
        rows = await uow.audit.chain(tenant_id)
    # the attacker rewrites the last row and recomputes its hash and the recorded head
    from contrackt.domain.audit import chain_hash

    last = rows[-1]
    last.event.details = {"what": "nothing"}
    forged = chain_hash(last.prev_hash, last.event, last.seq)
    with raw_db(settings) as db:
        db.execute("DROP TRIGGER audit_logs_no_update")
        db.execute(
            "UPDATE audit_logs SET details = ?, row_hash = ? WHERE tenant_id = ? AND seq = ?",
            (json.dumps(last.event.details), forged, tenant_id.replace("-", ""), last.seq),
        )
        db.execute("UPDATE tenants SET audit_head = ? WHERE id = ?", (forged, tenant_id.replace("-", "")))
    assert (await verify(c.uow, tenant_id))[0].problems == []
    external = await CheckpointService(c.uow, c.signer, c.clock, sink).newest()
    [chain] = await verify(c.uow, tenant_id, external=external)
    assert chain.problems == [
        f"seq {last.seq}: the row differs from the external checkpoint of "
        f"{external.made_at.isoformat(timespec='seconds')} (chain rewritten)"  # type: ignore[union-attr]
    ]


async def test_a_deleted_tenant_chain_is_caught(c: Container, clock: MovableClock, settings: Settings) -> None:
    tenant_id, _, _ = await history(c, clock)
    sink = FileCheckpointSink.from_url(str(settings.audit_checkpoint_url))
    await CheckpointService(c.uow, c.signer, c.clock, sink).export()
    with raw_db(settings) as db:
        db.execute("DROP TRIGGER audit_logs_no_delete")
        db.execute("DELETE FROM audit_logs WHERE tenant_id = ?", (tenant_id.replace("-", ""),))
        db.execute("DELETE FROM jobs")
        db.execute("DELETE FROM api_keys")
        db.execute("DELETE FROM tenant_keys")
        db.execute("DELETE FROM tenants WHERE id = ?", (tenant_id.replace("-", ""),))
    external = await CheckpointService(c.uow, c.signer, c.clock, sink).newest()
    reports = {r.tenant_id: r for r in await verify(c.uow, external=external)}
    assert reports[tenant_id].problems and "chain ends at seq 0" in reports[tenant_id].problems[0]


async def test_retention_after_pruning_still_verifies_against_an_older_export(
    c: Container, clock: MovableClock, settings: Settings
) -> None:
    await history(c, clock)
    sink = FileCheckpointSink.from_url(str(settings.audit_checkpoint_url))
    await CheckpointService(c.uow, c.signer, c.clock, sink).export()  # before the prune
    assert (await retention(c).apply()).audit_rows > 0
    external = await CheckpointService(c.uow, c.signer, c.clock, sink).newest()
    reports = await verify(c.uow, public_key=await c.signer.public_key_raw(), external=external)
    assert [r.problems for r in reports] == [[] for _ in reports]
    result = await cli(settings, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert "from seq" in result.output


async def test_retention_cli_and_job_rows(c: Container, clock: MovableClock, settings: Settings) -> None:
    tenant_id, old, recent = await history(c, clock)
    result = await cli(settings, "retention", "apply")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert (report["chains"], report["jobs"], report["checkpoints"], report["skipped"]) == (1, 2, 1, {})
    async with c.uow(tenant_id) as uow:
        assert await uow.jobs.get(tenant_id, old[0]) is None
        assert await uow.jobs.get(tenant_id, recent[0]) is not None
        assert (await uow.conn.execute(sa.select(tenants.c.audit_seq).where(tenants.c.id == tenant_id))).scalar()
        # a job still holding its document for a replay is never pruned, however old
        await uow.conn.execute(jobs.update().where(jobs.c.id == recent[0]).values(completed_at=clock.now() - 6 * YEAR))
        await uow.conn.execute(
            jobs.update().where(jobs.c.id == recent[0]).values(document_hold_until=clock.now() + YEAR)
        )
    assert (await retention(c).apply()).jobs == 0
    async with c.uow(tenant_id) as uow:
        n = (await uow.conn.execute(sa.select(sa.func.count()).select_from(audit_checkpoints))).scalar()
    assert n == 1


async def test_the_worker_prunes_and_exports_on_its_schedule(tmp_path: Path, clock: MovableClock) -> None:
    from contrackt.worker.runtime import WorkerRuntime
    from tests.fakes import FakeExtractor
    from tests.unit.lifecycle_support import eventually

    settings = embedded_settings(
        tmp_path / "home",
        audit_checkpoint_url=f"file://{tmp_path / 'anchors'}",
        retention_interval_seconds=1,
        audit_checkpoint_interval_seconds=1,
    )
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings, clock=clock)
    runtime = WorkerRuntime(c, FakeExtractor())
    try:
        tenant_id, _, _ = await history(c, clock)
        await runtime.start()
        sink = FileCheckpointSink(tmp_path / "anchors")

        async def pruned_and_exported() -> bool:
            async with c.uow(tenant_id) as uow:
                cut = await uow.checkpoints.latest(tenant_id)
            return cut is not None and await sink.newest() is not None

        await eventually(pruned_and_exported, timeout=20)
        assert runtime.alive()
    finally:
        await runtime.stop(1.0)
        await c.close()
    assert [r.problems for r in await verify(c.uow, public_key=await c.signer.public_key_raw())] == [[], []]


def test_checkpoints_need_a_bucket_of_their_own(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bucket of its own"):
        embedded_settings(tmp_path, storage_url="s3://docs/contrackt", audit_checkpoint_url="s3://docs/anchors")
    with pytest.raises(ValueError, match="file:///dir or s3://"):
        embedded_settings(tmp_path, audit_checkpoint_url="http://example.invalid/x")
    assert embedded_settings(tmp_path, storage_url="s3://docs", audit_checkpoint_url="s3://anchors/x")


async def test_a_chain_pruned_whole_goes_on_after_its_checkpoint(c: Container, clock: MovableClock) -> None:
    clock.offset = -6 * YEAR
    tenant_id = (await c.tenants.create("dormant")).tenant_id
    await finished_job(c, tenant_id)
    clock.offset = timedelta()
    report = await retention(c).apply()
    assert report.audit_rows == 4
    async with c.uow(tenant_id) as uow:
        [row] = await uow.audit.chain(tenant_id)
        cut = await uow.checkpoints.latest(tenant_id)
    assert cut is not None and (row.seq, row.prev_hash) == (cut.seq + 1, cut.row_hash)
    assert row.event.action is AuditAction.RETENTION
    await finished_job(c, tenant_id)  # the tenant comes back: its chain simply goes on
    [chain] = await verify(c.uow, tenant_id, public_key=await c.signer.public_key_raw())
    assert chain.problems == [] and chain.rows == 5


async def test_verify_against_a_checkpoint_file_brought_back(
    c: Container, clock: MovableClock, settings: Settings, tmp_path: Path
) -> None:
    tenant_id, _, _ = await history(c, clock)
    assert (await cli(settings, "audit", "checkpoint")).exit_code == 0
    sink = FileCheckpointSink.from_url(str(settings.audit_checkpoint_url))
    shipped = tmp_path / "shipped.json"  # the operator's copy, kept elsewhere
    shipped.write_bytes(await sink.read(str(await sink.newest())))
    without = await cli(settings, "audit", "verify", sink=False)
    assert without.exit_code == 0 and "external checkpoint: none" in without.output
    with raw_db(settings) as db:  # the last job's rows go, the head is rewritten
        db.execute("DROP TRIGGER audit_logs_no_delete")
        row = db.execute(
            "SELECT seq, row_hash FROM audit_logs WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1 OFFSET 4",
            (tenant_id.replace("-", ""),),
        ).fetchone()
        db.execute("DELETE FROM audit_logs WHERE tenant_id = ? AND seq > ?", (tenant_id.replace("-", ""), row[0]))
        db.execute("UPDATE tenants SET audit_seq = ?, audit_head = ?", row)
    assert (await cli(settings, "audit", "verify", sink=False)).exit_code == 0  # blind without the anchor
    caught = await cli(settings, "audit", "verify", "--checkpoint", str(shipped), sink=False)
    assert caught.exit_code == 1 and "TAMPERED" in caught.output and shipped.name in caught.output
    forged = json.loads(shipped.read_bytes())
    forged["heads"][tenant_id]["seq"] = row[0]  # the attacker edits the copy too: the signature breaks
    shipped.write_text(json.dumps(forged))
    refused = await cli(settings, "audit", "verify", "--checkpoint", str(shipped), sink=False)
    assert refused.exit_code == 1 and "not signed by this deployment's key" in refused.output
