"""Schemathesis over the app's own OpenAPI, in-process (ASGI), with a valid API key.

Checks: no 5xx, and every response conforms to the declared schema (status
codes, content types, bodies, headers).  Bounded: 15 examples per operation,
fake extractor, embedded backends in a temporary directory (removed at exit;
schemathesis stops the app's lifespan at exit too).

The schema is loaded when this module is imported (``schemathesis.pytest.from_fixture``
fails with this pytest version), so collecting it starts the app once.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis  # pinned in requirements.txt: a missing package fails loudly, never skips
from hypothesis import HealthCheck, settings

from contrackt.adapters.db.migrate import upgrade
from contrackt.api.app import create_app
from contrackt.bootstrap import build
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import embedded_settings
from tests.fakes import FakeExtractor, OfflineWebhookTransport

checks = schemathesis.checks

_HOME = Path(tempfile.mkdtemp(prefix="contrackt-fuzz-"))
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
SETTINGS = embedded_settings(_HOME / "home")


def _make_tenant() -> str:
    upgrade(SETTINGS.db_url)

    async def create() -> str:
        c = build(SETTINGS)
        try:
            return (await c.tenants.create("fuzz")).api_key
        finally:
            await c.close()

    return asyncio.run(create())


API_KEY = _make_tenant()
# Webhook URLs from the fuzzer are "resolved" and "delivered" offline: tests reach only 127.0.0.1.
CONTAINER = build(SETTINGS, webhook_transport=OfflineWebhookTransport())
app = create_app(container=CONTAINER, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, FakeExtractor()))
# A request the service refuses as too large (413: over the upload cap or the multipart part cap)
# is a rejection too; the rest of the default list stays as it is.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:  # type: ignore[name-defined]
    excluded = []
    if case.operation.path == "/v1/webhooks" and case.method.upper() == "POST":
        # Whether a URL is allowed (https, a host that resolves to public addresses) is decided by
        # the egress rules, not expressible in OpenAPI: a schema-valid URL may rightly get 422.
        excluded.append(checks.positive_data_acceptance)
    if case.operation.path == "/v1/extract":
        # Whether the bytes are a PDF (and the engine one this deployment runs) is
        # decided by the service, not expressible in OpenAPI: a schema-valid upload
        # may rightly get 415/422.  Every other check still applies.
        excluded.append(checks.positive_data_acceptance)
    if case.operation.path in ("/v1/jobs", "/v1/usage") and case.method == "GET":
        # Likewise: whether a cursor carries this API's signature, and whether a date range is at
        # most 366 days long, is for the service to decide (422), not expressible in OpenAPI.
        excluded.append(checks.positive_data_acceptance)
    case.call_and_validate(headers={"X-API-Key": API_KEY}, excluded_checks=excluded)
