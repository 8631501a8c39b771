"""deploy/monitoring: alert rules pass promtool (syntax and unit tests), the dashboard parses and
queries only what the processes export, and the log pipeline labels by tenant and ships nothing personal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from contrackt.bootstrap import Container
from contrackt.logging import ALLOWED_FIELDS
from contrackt.worker.listener import worker_listener
from contrackt.worker.runtime import WorkerRuntime
from tests.e2e.test_serve import free_port
from tests.fakes import FakeExtractor, fake_pdf
from tests.scrape import exported_names
from tests.unit.test_api import headers, new_tenant, wait_done
from tests.unit.test_deploy import run, tool

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "prometheus" / "contrackt-alerts.yaml"
RULE_TESTS = MONITORING / "prometheus" / "contrackt-alerts.test.yaml"
DASHBOARD = MONITORING / "grafana" / "contrackt-dashboard.json"
LOGS = MONITORING / "logs" / "promtail.yaml"
METRIC = re.compile(r"\b((?:contrackt|process|python)_[a-z0-9_]+)\b")


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel."""
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


# ----------------------------------------------------------------------------- alert rules


def test_alert_rules_pass_promtool_check() -> None:
    out = run(tool("promtool"), "check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    out = subprocess.run(
        [tool("promtool"), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    names = {rule["alert"] for rule in alert_rules()}
    assert names == fired
    # what the issue asks an operator to be woken for
    for wanted in ("DeadLetters", "QueueLagGrowing", "JobErrorRatio", "OcrChildRestarts", "KeyProviderFailing"):
        assert f"Contrackt{wanted}" in names


# ----------------------------------------------------------------------------- the dashboard


def test_dashboard_parses_and_every_query_is_valid_promql(tmp_path: Path) -> None:
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in doc["panels"]).lower()
    for topic in ("throughput", "latency", "queue", "dead-letter", "errors"):
        assert topic in titles
    queries = dashboard_queries()
    assert len(queries) >= 20
    # promtool parses PromQL in rule files: check each query as a recording rule
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": expr.replace("$__rate_interval", "5m")}
                    for n, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    out = run(tool("promtool"), "check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
async def worker_and_api(client: httpx.AsyncClient, container: Container) -> AsyncIterator[tuple[str, str]]:
    """/metrics as the API answers it and as a worker's own listener (a real socket) answers it,
    after a job went through, so labelled series exist too."""
    t = await new_tenant(container)
    job = (await client.post("/v1/extract", headers=headers(t), content=fake_pdf("um"))).json()["job_id"]
    await wait_done(client, job, headers(t))
    container.settings.worker_listen = f"127.0.0.1:{free_port()}"
    listener = worker_listener(container, WorkerRuntime(container, FakeExtractor()))
    assert listener is not None
    await listener.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}") as http:
            worker = (await http.get("/metrics")).text
        yield (await client.get("/metrics")).text, worker
    finally:
        await listener.stop()


def unknown_metrics(expr: str, exported: set[str]) -> set[str]:
    return set(METRIC.findall(expr)) - exported


async def test_dashboard_and_alerts_query_only_metrics_the_processes_export(
    worker_and_api: tuple[str, str],
) -> None:
    api, worker = worker_and_api
    exported = exported_names(api) | exported_names(worker)
    assert "contrackt_job_seconds_bucket" in exported and "contrackt_ocr_child_restarts_total" in exported
    assert unknown_metrics("rate(contrackt_jobs_finishd_total[5m])", exported) == {"contrackt_jobs_finishd_total"}
    queries = [(f"panel {title!r}", expr) for title, expr in dashboard_queries()]
    queries += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    for where, expr in queries:
        assert METRIC.search(expr), f"{where} queries no Contrackt metric: {expr}"
        assert unknown_metrics(expr, exported) == set(), f"{where} uses metrics nobody exports"
    used = {name for _, expr in queries for name in METRIC.findall(expr)}
    for name in (
        "contrackt_jobs_finished_total",
        "contrackt_pages_total",
        "contrackt_job_seconds_bucket",
        "contrackt_page_seconds_bucket",
        "contrackt_queue_oldest_message_age_seconds",
        "contrackt_queue_dead_letters",
        "contrackt_job_failures_total",
        "contrackt_requests_rejected_total",
        "contrackt_ocr_sandbox_violations_total",
        "contrackt_key_provider_failures_total",
    ):
        assert name in used


# ----------------------------------------------------------------------------- the log pipeline


def pipeline() -> list[dict[str, Any]]:
    doc = yaml.safe_load(LOGS.read_text())
    (job,) = doc["scrape_configs"]
    stages: list[dict[str, Any]] = job["pipeline_stages"]
    return stages


def stage(name: str) -> list[Any]:
    return [s[name] for s in pipeline() if name in s]


def masked(line: str) -> str:
    """The pipeline's replace stages, applied as Promtail does: each match of the capture group
    becomes the replacement (these expressions mean the same in RE2 and Python's re)."""
    for rule in stage("replace"):
        line = re.sub(rule["expression"], rule["replace"], line)
    return line


def test_log_pipeline_labels_streams_by_tenant_and_extracts_nothing_personal() -> None:
    (labels,) = stage("labels")
    assert set(labels) == {"level", "tenant_id"}
    (metadata,) = stage("structured_metadata")
    assert set(metadata) == {"job_id", "request_id"}  # a stream per job would break Loki's limits
    (allowed,) = stage("labelallow")
    assert set(allowed) == {"namespace", "container", "level", "tenant_id"}
    (parsed,) = stage("json")
    assert set(parsed["expressions"]) <= ALLOWED_FIELDS
    assert set(parsed["expressions"]) >= {"tenant_id", "job_id", "level", "timestamp"}
    assert not set(parsed["expressions"]) & {"filename", "file", "text", "ip", "client", "remote_addr", "host"}
    # every stage's order matters: masks run before anything is extracted
    names = [next(iter(s)) for s in pipeline()]
    assert names.index("replace") < names.index("json") < names.index("labels") < names.index("labelallow")
    (drop,) = stage("drop")
    assert re.search(drop["expression"], "Traceback (most recent call last):")
    assert not re.search(drop["expression"], '{"event": "job.completed"}')


def test_log_pipeline_masks_addresses_emails_and_cpf_numbers() -> None:
    line = json.dumps(
        {
            "event": "x",
            "error": "from 203.0.113.7 and 2001:db8::1 and fe80:0:0:0:1:2:3:4, ana@example.com, 411.842.785-04",
        }
    )
    out = masked(line)
    for secret in ("203.0.113.7", "2001:db8::1", "fe80:0:0:0:1:2:3:4", "ana@example.com", "411.842.785-04"):
        assert secret not in out
    assert out.count("[ip]") == 3 and "[email]" in out and "[cpf-cnpj]" in out


def test_the_services_json_log_lines_carry_the_pipelines_fields_and_survive_it_unchanged(tmp_path: Path) -> None:
    """A real job through the API, logging as in production (JSON on stderr)."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from pathlib import Path
        import httpx
        from contrackt.adapters.db.migrate import upgrade
        from contrackt.api.app import create_app
        from contrackt.bootstrap import build
        from contrackt.logging import configure
        from contrackt.worker.runtime import WorkerRuntime
        from tests.conftest import embedded_settings
        from tests.fakes import FakeExtractor, fake_pdf

        async def main() -> None:
            configure("json", "INFO")
            settings = embedded_settings(Path(sys.argv[1]))
            await asyncio.to_thread(upgrade, settings.db_url)
            c = build(settings)
            app = create_app(container=c, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, FakeExtractor()))
            async with app.router.lifespan_context(app):
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
                    key = await c.tenants.create("acme")
                    h = {"X-API-Key": key.api_key, "X-Forwarded-For": "198.51.100.23"}
                    pdf = fake_pdf("CPF 411.842.785-04")
                    files = {"file": ("contrato-ana-411.842.785-04.pdf", pdf, "application/pdf")}
                    job = (await http.post("/v1/extract", headers=h, files=files)).json()["job_id"]
                    for _ in range(200):
                        if (await http.get(f"/v1/jobs/{job}", headers=h)).json()["status"] == "completed":
                            break
                        await asyncio.sleep(0.05)
                    print(key.tenant_id, job, file=sys.stdout)
            await c.close()

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "home")], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    tenant_id, job_id = out.stdout.split()
    lines = [line for line in out.stderr.splitlines() if line.startswith("{")]
    assert len(lines) >= 5
    records = [json.loads(line) for line in lines]
    for line, record in zip(lines, records, strict=True):
        assert set(record) <= ALLOWED_FIELDS, record
        assert masked(line) == line  # nothing our logs say looks like an address or a CPF
        for personal in ("198.51.100.23", "411.842.785-04", "contrato-ana"):
            assert personal not in line
    job_lines = [r for r in records if r.get("job_id") == job_id]
    assert {"job.processing", "job.completed"} <= {r["event"] for r in job_lines}
    assert all(r.get("tenant_id") == tenant_id for r in job_lines)
    requests = [r for r in records if r["event"] == "http.request" and r.get("route") == "/v1/extract"]
    assert requests and requests[0].get("tenant_id") == tenant_id
    assert all({"timestamp", "level", "event"} <= set(r) for r in records)
