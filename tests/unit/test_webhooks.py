"""Webhooks through the HTTP API with an in-process worker (embedded backends, fake extractor) and a
real receiver on 127.0.0.1: signatures, retries, refusals, isolation, the secret at rest, audit."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from standardwebhooks.webhooks import Webhook as StandardWebhook

from contrackt.adapters.db.migrate import upgrade
from contrackt.api.app import create_app
from contrackt.bootstrap import Container, build
from contrackt.cli import main
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import embedded_settings
from tests.fakes import FakeExtractor, fake_pdf
from tests.webhook_receiver import Receiver

FAST_RETRIES: dict[str, object] = {
    "webhook_allow_private": True,
    "webhook_retry_base_seconds": 0.1,
    "webhook_retry_max_seconds": 0.5,
    "webhook_poll_seconds": 0.05,
    "webhook_timeout_seconds": 5.0,
}


@asynccontextmanager
async def running(home: Path, **overrides: object) -> AsyncIterator[tuple[Container, httpx.AsyncClient]]:
    settings = embedded_settings(home, **overrides)
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    app = create_app(container=c, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, FakeExtractor()))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield c, client
    finally:
        await c.close()


async def tenant(c: Container, name: str = "acme") -> dict[str, str]:
    key = await c.tenants.create(name)
    return {"X-API-Key": key.api_key, "tenant_id": key.tenant_id}


def h(t: dict[str, str]) -> dict[str, str]:
    return {"X-API-Key": t["X-API-Key"]}


async def submit(client: httpx.AsyncClient, t: dict[str, str], pdf: bytes) -> str:
    r = await client.post("/v1/extract", headers=h(t), content=pdf)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    return job_id


async def finished(client: httpx.AsyncClient, t: dict[str, str], job_id: str) -> dict[str, Any]:
    for _ in range(400):
        body: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}", headers=h(t))).json()
        if body["status"] in ("completed", "failed"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("the job did not finish")


async def test_a_loopback_receiver_gets_job_completed_that_standardwebhooks_verifies(tmp_path: Path) -> None:
    with Receiver() as rx:
        async with running(tmp_path / "home", **FAST_RETRIES) as (c, client):
            t = await tenant(c)
            r = await client.post("/v1/webhooks", headers=h(t), json={"url": rx.url(), "events": ["job.completed"]})
            assert r.status_code == 201, r.text
            hook = r.json()
            assert set(hook) == {"id", "url", "events", "secret", "created_at", "disabled_at", "disabled_reason"}
            assert hook["secret"].startswith("whsec_") and hook["events"] == ["job.completed"]
            job_id = await submit(client, t, fake_pdf("Contrato de locação\nCPF 411.842.785-04"))
            assert (await finished(client, t, job_id))["status"] == "completed"
            [got] = await rx.wait(1)
            payload = StandardWebhook(hook["secret"]).verify(got.body, got.headers)
            assert payload["type"] == "job.completed"
            assert payload["data"] == {
                "job_id": job_id,
                "status": "completed",
                "links": {
                    "self": f"/v1/jobs/{job_id}",
                    "result": f"/v1/jobs/{job_id}/result",
                    "events": f"/v1/jobs/{job_id}/events",
                },
            }
            assert got.headers["webhook-id"].startswith("msg_")
            assert got.headers["content-type"] == "application/json"
            assert b"Contrato" not in got.body and b"411.842" not in got.body  # no document text, ever
            # The secret is shown once: the listing never has it.
            listed = (await client.get("/v1/webhooks", headers=h(t))).json()["webhooks"]
            assert [x["id"] for x in listed] == [hook["id"]] and "secret" not in listed[0]
            deliveries = await _deliveries(client, t, hook["id"], count=1)
            assert deliveries[0]["status_code"] == 204 and deliveries[0]["attempt"] == 1
            assert deliveries[0]["event_id"] == got.headers["webhook-id"]
            assert deliveries[0]["outcome"] == "delivered" and deliveries[0]["job_id"] == job_id


async def _deliveries(client: httpx.AsyncClient, t: dict[str, str], hook_id: str, count: int) -> list[dict[str, Any]]:
    """The webhook's attempts, once ``count`` are recorded (the record follows the receiver's answer)."""
    for _ in range(200):
        r = await client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=h(t))
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["deliveries"]
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} attempts recorded")


async def test_a_receiver_failing_three_times_gets_the_event_exactly_once(tmp_path: Path) -> None:
    with Receiver([500, 503, 500]) as rx:
        async with running(tmp_path / "home", **FAST_RETRIES) as (c, client):
            t = await tenant(c)
            hook = (await client.post("/v1/webhooks", headers=h(t), json={"url": rx.url()})).json()
            job_id = await submit(client, t, fake_pdf("Recibo"))
            got = await rx.wait(4)
            rows = await _deliveries(client, t, hook["id"], count=4)
            await asyncio.sleep(1.5)  # several retry intervals: nothing more may come
            assert len(rx.all()) == 4
            assert [r.status for r in got] == [500, 503, 500, 204]
            # Every attempt is the same event: one webhook-id, one body; only its timestamp moves.
            assert len({r.headers["webhook-id"] for r in got}) == 1
            assert len({r.body for r in got}) == 1
            for r in got:
                StandardWebhook(hook["secret"]).verify(r.body, r.headers)
            accepted = rx.accepted()
            assert len(accepted) == 1 and json.loads(accepted[0].body)["data"]["job_id"] == job_id
            assert [(x["attempt"], x["outcome"], x["status_code"]) for x in rows] == [
                (4, "delivered", 204),
                (3, "retrying", 500),
                (2, "retrying", 503),
                (1, "retrying", 500),
            ]
            async with c.uow(t["tenant_id"]) as uow:  # the outbox is empty once delivered
                assert await uow.webhook_deliveries.due(c.clock.now(), c.clock.now(), 10) == []


async def test_http_loopback_is_refused_without_the_setting(tmp_path: Path) -> None:
    with Receiver() as rx:
        async with running(tmp_path / "home") as (c, client):
            t = await tenant(c)
            for url, why in [
                (rx.url(), "must use https"),
                (f"https://127.0.0.1:{rx.port}/hook", "loopback"),
                ("https://localhost/hook", "loopback"),
                ("https://169.254.169.254/latest/meta-data", "link-local"),
                ("https://[::1]/hook", "loopback"),
                ("https://10.0.0.8/hook", "private"),
            ]:
                r = await client.post("/v1/webhooks", headers=h(t), json={"url": url})
                assert r.status_code == 422, (url, r.text)
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["code"] == "webhook_url_refused" and why in r.json()["detail"], url
            assert (await client.get("/v1/webhooks", headers=h(t))).json() == {"webhooks": []}
            job_id = await submit(client, t, fake_pdf("Nada"))
            await finished(client, t, job_id)
            await asyncio.sleep(0.3)
            assert rx.all() == []


async def test_job_failed_carries_the_error_and_each_endpoint_gets_only_its_events(tmp_path: Path) -> None:
    with Receiver() as on_failed, Receiver() as on_completed:
        async with running(tmp_path / "home", **FAST_RETRIES) as (c, client):
            t = await tenant(c)
            failed = {"url": on_failed.url(), "events": ["job.failed"]}
            assert (await client.post("/v1/webhooks", headers=h(t), json=failed)).status_code == 201
            completed = {"url": on_completed.url(), "events": ["job.completed"]}
            assert (await client.post("/v1/webhooks", headers=h(t), json=completed)).status_code == 201
            bad = await submit(client, t, fake_pdf("x", "corrupt"))
            good = await submit(client, t, fake_pdf("y"))
            await finished(client, t, bad)
            await finished(client, t, good)
            [f] = await on_failed.wait(1)
            [ok] = await on_completed.wait(1)
            await asyncio.sleep(0.3)
            assert (len(on_failed.all()), len(on_completed.all())) == (1, 1)
            data = json.loads(f.body)["data"]
            assert (data["job_id"], data["status"]) == (bad, "failed")
            assert data["error"] == {"code": "corrupt_pdf", "message": "The PDF could not be read"}
            assert json.loads(ok.body)["data"]["job_id"] == good


async def test_tenants_see_and_touch_only_their_own_webhooks_and_events(tmp_path: Path) -> None:
    with Receiver() as rx_a, Receiver() as rx_b:
        async with running(tmp_path / "home", **FAST_RETRIES) as (c, client):
            a, b = await tenant(c, "a"), await tenant(c, "b")
            hook_a = (await client.post("/v1/webhooks", headers=h(a), json={"url": rx_a.url()})).json()
            hook_b = (await client.post("/v1/webhooks", headers=h(b), json={"url": rx_b.url()})).json()
            assert [x["id"] for x in (await client.get("/v1/webhooks", headers=h(b))).json()["webhooks"]] == [
                hook_b["id"]
            ]
            # Another tenant's webhook answers exactly like a missing one.
            missing = "00000000-0000-4000-8000-000000000000"
            for path in (f"/v1/webhooks/{hook_a['id']}/deliveries", f"/v1/webhooks/{missing}/deliveries"):
                r = await client.get(path, headers=h(b))
                assert (r.status_code, r.json()["code"]) == (404, "not_found")
            for hook_id in (hook_a["id"], missing, "not-a-uuid"):
                r = await client.delete(f"/v1/webhooks/{hook_id}", headers=h(b))
                assert (r.status_code, r.json()["code"]) == (404, "not_found")
            job_b = await submit(client, b, fake_pdf("B"))
            job_a = await submit(client, a, fake_pdf("A"))
            [got_b] = await rx_b.wait(1)
            [got_a] = await rx_a.wait(1)
            await asyncio.sleep(0.3)
            assert json.loads(got_a.body)["data"]["job_id"] == job_a
            assert json.loads(got_b.body)["data"]["job_id"] == job_b
            assert (len(rx_a.all()), len(rx_b.all())) == (1, 1)
            StandardWebhook(hook_b["secret"]).verify(got_b.body, got_b.headers)
            with pytest.raises(Exception, match="signature"):
                StandardWebhook(hook_a["secret"]).verify(got_b.body, got_b.headers)
            # A's webhook still exists; its owner removes it.
            assert (await client.delete(f"/v1/webhooks/{hook_a['id']}", headers=h(a))).status_code == 204
            assert (await client.get("/v1/webhooks", headers=h(a))).json() == {"webhooks": []}


async def test_the_secret_is_stored_sealed_and_the_audit_keeps_no_query_string(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with running(home, **FAST_RETRIES) as (c, client):
        t = await tenant(c)
        url = "http://127.0.0.1:9/hook?token=tok-SENSITIVE-123"
        hook = (await client.post("/v1/webhooks", headers=h(t), json={"url": url})).json()
        assert hook["url"] == url  # the tenant's own URL, as given
        assert (await client.delete(f"/v1/webhooks/{hook['id']}", headers=h(t))).status_code == 204
        async with c.uow(t["tenant_id"]) as uow:
            rows = [r for r in await uow.audit.chain(t["tenant_id"]) if r.event.action.startswith("WEBHOOK_")]
    assert [r.event.action for r in rows] == ["WEBHOOK_ADDED", "WEBHOOK_REMOVED"]
    assert rows[0].event.details["url"] == "http://127.0.0.1:9/hook"
    assert rows[0].event.details["webhook_id"] == hook["id"]
    db = sqlite3.connect(home / "contrackt.db")
    try:
        assert all(b"tok-SENSITIVE" not in (d or "").encode() for (d,) in db.execute("SELECT details FROM audit_logs"))
    finally:
        db.close()


async def test_the_secret_is_never_in_the_database_in_clear_while_the_webhook_lives(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with running(home, **FAST_RETRIES) as (c, client):
        t = await tenant(c)
        hook = (await client.post("/v1/webhooks", headers=h(t), json={"url": "http://127.0.0.1:9/h"})).json()
        raw = base64.b64decode(hook["secret"].removeprefix("whsec_"))
        stored = b"".join(p.read_bytes() for p in home.glob("contrackt.db*"))
        assert hook["secret"].encode() not in stored and raw not in stored
        db = sqlite3.connect(home / "contrackt.db")
        try:
            (sealed,) = db.execute("SELECT secret_sealed FROM webhooks").fetchone()
        finally:
            db.close()
        assert sealed[:3] == b"CK1" and raw not in sealed


async def test_per_tenant_cap_and_bad_requests(tmp_path: Path) -> None:
    async with running(tmp_path / "home", **{**FAST_RETRIES, "webhook_max_per_tenant": 2}) as (c, client):
        t = await tenant(c)
        for _ in range(2):
            assert (
                await client.post("/v1/webhooks", headers=h(t), json={"url": "http://127.0.0.1:9/h"})
            ).status_code == 201
        r = await client.post("/v1/webhooks", headers=h(t), json={"url": "http://127.0.0.1:9/h"})
        assert (r.status_code, r.json()["code"]) == (409, "too_many_webhooks")
        for body in ({"url": "http://127.0.0.1:9/h", "events": ["job.started"]}, {"events": []}, {"url": 3}):
            r = await client.post("/v1/webhooks", headers=h(t), json=body)
            assert (r.status_code, r.json()["code"]) == (422, "invalid_request"), body
        assert (await client.get("/v1/webhooks")).status_code == 401


def test_cli_add_list_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("CONTRACKT_HOME", str(home))
    runner = CliRunner()
    created = runner.invoke(main, ["tenant", "create", "acme", "--json"])
    assert created.exit_code == 0, created.output
    tenant_id = json.loads(created.output)["tenant_id"]
    refused = runner.invoke(main, ["webhook", "add", tenant_id, "http://127.0.0.1:9/h"])
    assert refused.exit_code != 0 and "webhook_url_refused" in refused.output
    monkeypatch.setenv("CONTRACKT_WEBHOOK_ALLOW_PRIVATE", "1")
    added = runner.invoke(main, ["webhook", "add", tenant_id, "http://127.0.0.1:9/h?k=v", "--event", "job.failed"])
    assert added.exit_code == 0, added.output
    hook = json.loads(added.output.strip().splitlines()[-1])  # log lines (stderr) come first
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["job.failed"]
    listed = runner.invoke(main, ["webhook", "list", tenant_id])
    assert [json.loads(line)["id"] for line in listed.output.splitlines() if '"url"' in line] == [hook["id"]]
    assert "whsec_" not in listed.output
    assert runner.invoke(main, ["webhook", "remove", tenant_id, hook["id"]]).output.strip().endswith("removed")
    again = runner.invoke(main, ["webhook", "remove", tenant_id, hook["id"]])
    assert again.exit_code != 0 and "not_found" in again.output
    assert '"url"' not in runner.invoke(main, ["webhook", "list", tenant_id]).output


async def test_the_openapi_documents_the_routes_and_the_deliveries_with_examples(tmp_path: Path) -> None:
    async with running(tmp_path / "home") as (_, client):
        spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/v1/webhooks"]) == {"get", "post"}
    assert set(paths["/v1/webhooks/{webhook_id}"]) == {"delete"}
    assert set(paths["/v1/webhooks/{webhook_id}/deliveries"]) == {"get"}
    post = paths["/v1/webhooks"]["post"]
    assert {"201", "409", "422"} <= set(post["responses"])
    schemas = spec["components"]["schemas"]
    assert schemas["WebhookCreated"]["examples"][0]["secret"].startswith("whsec_")
    assert schemas["WebhookIn"]["examples"][0]["events"] == ["job.completed", "job.failed"]
    assert schemas["AttemptList"]["examples"][0]["deliveries"][0]["outcome"] == "delivered"
    # What Contrackt sends, in the OpenAPI 3.1 "webhooks" section: body, headers, an example.
    assert set(spec["webhooks"]) == {"job.completed", "job.failed"}
    sent = spec["webhooks"]["job.completed"]["post"]
    assert {p["name"] for p in sent["parameters"]} == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert schemas["EventBody"]["examples"][0]["data"]["status"] == "completed"


def test_migration_0004_adds_and_removes_its_tables(tmp_path: Path) -> None:
    from alembic import command

    from contrackt.adapters.db.migrate import alembic_config

    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)

    def tables() -> set[str]:
        db = sqlite3.connect(tmp_path / "db.sqlite")
        try:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()

    new = {"webhooks", "webhook_events", "webhook_attempts"}
    assert new <= tables()
    command.downgrade(alembic_config(url), "0003")  # an older database: without them
    assert not new & tables() and "jobs" in tables()
    upgrade(url)
    assert new <= tables()
