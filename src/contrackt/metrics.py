"""Prometheus metrics every process exports (docs/adr/0012-observability.md).

Labels stay low-cardinality: routes, codes, outcomes, sources. Tenant ids appear only
where the operator opted in (CONTRACKT_METRICS_TENANT_LABEL), and then only on the few
counters built with ``TenantCounter``. Figures read from the queue's backend (depth,
lag, dead letters) live in ``queue_gauges.py``, cached so a slow backend never slows a
scrape.
"""

from __future__ import annotations

import threading
from typing import ClassVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram


class TenantCounter:
    """A counter that gains a ``tenant`` label only when the operator opts in.

    The choice is made once per process (``set_tenant_label``, called by the composition
    root): the series then multiply by the number of tenants, which is the operator's
    cost to weigh. Unknown tenants (a request refused before authentication) count
    under ``tenant=""``, which Prometheus treats as no tenant label.
    """

    _all: ClassVar[list[TenantCounter]] = []

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.with_tenant = False
        self._counter = self._make()
        TenantCounter._all.append(self)

    def _make(self) -> Counter:
        names = (*self.labelnames, "tenant") if self.with_tenant else self.labelnames
        return Counter(self.name, self.documentation, names)

    def inc(self, *values: str, tenant: str | None = None, amount: float = 1.0) -> None:
        if self.with_tenant:
            values = (*values, tenant or "")
        (self._counter.labels(*values) if values else self._counter).inc(amount)

    def _switch(self, with_tenant: bool) -> None:
        if with_tenant != self.with_tenant:
            REGISTRY.unregister(self._counter)
            self.with_tenant = with_tenant
            self._counter = self._make()


def set_tenant_label(enabled: bool) -> None:
    """Give the tenant-aware counters a ``tenant`` label, or take it away (their counts restart)."""
    for counter in TenantCounter._all:
        counter._switch(enabled)


# --- the API --------------------------------------------------------------------
JOBS_SUBMITTED = TenantCounter("contrackt_jobs_submitted_total", "Jobs accepted by the API")
HTTP_REQUESTS = Counter("contrackt_http_requests_total", "HTTP requests answered", ["route", "status"])
HTTP_SECONDS = Histogram(
    "contrackt_http_request_seconds",
    "Time to answer an HTTP request, until its headers (a streamed body or event stream goes on after)",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
REJECTED = TenantCounter(
    "contrackt_requests_rejected_total",
    "Requests refused with a problem+json error, by its code and HTTP status (429: limits, 503: overload)",
    ("code", "status"),
)
UPLOADS_IN_PROGRESS = Gauge("contrackt_uploads_in_progress", "Request bodies being read or sealed (this API process)")
STREAMS_OPEN = Gauge("contrackt_event_streams_open", "Open job event streams (this API process)")
RECEIPT_KEY_FAILURES = Counter(
    "contrackt_receipt_key_failures_total", "Times the receipt-signing key could not be loaded (receipts answer 503)"
)

# --- jobs (the worker; `failed`/`cancelled` also where a job is failed: sweeper, DELETE) ---------
JOBS_FINISHED = TenantCounter(
    "contrackt_jobs_finished_total", "Jobs that reached a terminal state: completed, failed or cancelled", ("outcome",)
)
JOB_FAILURES = Counter("contrackt_job_failures_total", "Jobs failed for good, by error code", ["code"])
JOB_RETRIES = Counter(
    "contrackt_job_retries_total", "Attempts that failed and will be retried, by error code", ["code"]
)
JOBS_DEAD_LETTERED = Counter(
    "contrackt_jobs_dead_lettered_total", "Jobs parked on the dead-letter queue after their last attempt", ["code"]
)
PAGES = TenantCounter("contrackt_pages_total", "Pages extracted, by where their text came from", ("source",))
JOB_SECONDS = Histogram(
    "contrackt_job_seconds",
    "Time from claim to completion",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)
JOB_WAIT_SECONDS = Histogram(
    "contrackt_job_wait_seconds",
    "Time from submission to a worker's claim (each attempt)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)
PAGE_SECONDS = Histogram(
    "contrackt_page_seconds",
    "Time one page takes in an OCR child, by where its text came from",
    ["source"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 120),
)

# --- the OCR sandbox (the worker's pool of confined children) -----------------------------------
OCR_CHILDREN_SPAWNED = Counter("contrackt_ocr_children_spawned_total", "OCR children forked by the zygote")
OCR_CHILD_RESTARTS = Counter(
    "contrackt_ocr_child_restarts_total", "OCR children lost to a crash, a resource limit, a timeout or a violation"
)
OCR_SANDBOX_VIOLATIONS = Counter(
    "contrackt_ocr_sandbox_violations_total",
    "OCR children that broke the reply protocol (killed; the job failed sandbox_violation)",
)
OCR_DEVICE_CALLS = Counter(
    "contrackt_ocr_device_calls_total",
    "Model calls of OCR children answered by the worker's GPU (failed: the child read them on its CPU)",
    ["kind", "outcome"],
)
OCR_DEVICE = Gauge("contrackt_ocr_device", "1 for the device this worker's OCR models run on (cpu or cuda)", ["device"])
OCR_CHILD_PEAK_RSS = Gauge("contrackt_ocr_child_peak_rss_bytes", "Highest resident memory of an OCR child so far")
_peak_rss = 0
_peak_lock = threading.Lock()


def observe_child_rss(kb: int) -> None:
    global _peak_rss
    with _peak_lock:
        if kb * 1024 > _peak_rss:
            _peak_rss = kb * 1024
            OCR_CHILD_PEAK_RSS.set(_peak_rss)


# --- keys ------------------------------------------------------------------------
KEY_PROVIDER_FAILURES = Counter(
    "contrackt_key_provider_failures_total",
    "Master-key calls that failed (KMS, Vault or the local key file)",
    ["provider", "operation"],
)
WEBHOOK_ATTEMPTS = Counter(
    "contrackt_webhook_attempts_total", "Webhook delivery attempts", ["outcome"]
)  # outcome: delivered | retrying | failed
WEBHOOK_SECONDS = Histogram(
    "contrackt_webhook_attempt_seconds",
    "Duration of one webhook delivery attempt",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
