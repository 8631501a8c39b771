"""Prometheus metrics (low-cardinality labels: never tenant ids)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS_SUBMITTED = Counter("contrackt_jobs_submitted_total", "Jobs accepted by the API")
JOBS_FINISHED = Counter("contrackt_jobs_finished_total", "Jobs that reached a terminal state", ["outcome"])
PAGES = Counter("contrackt_pages_total", "Pages extracted", ["source"])
JOB_SECONDS = Histogram(
    "contrackt_job_seconds",
    "Time from claim to completion",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)
HTTP_REQUESTS = Counter("contrackt_http_requests_total", "HTTP requests", ["route", "status"])
REJECTED = Counter("contrackt_requests_rejected_total", "Requests refused", ["code"])
QUEUE_DEPTH = Gauge("contrackt_queue_depth", "Messages waiting or in flight on the job queue (read at scrape time)")
UPLOADS_IN_PROGRESS = Gauge("contrackt_uploads_in_progress", "Request bodies being read or sealed (this API process)")
STREAMS_OPEN = Gauge("contrackt_event_streams_open", "Open job event streams (this API process)")
WEBHOOK_ATTEMPTS = Counter(
    "contrackt_webhook_attempts_total", "Webhook delivery attempts", ["outcome"]
)  # outcome: delivered | retrying | failed
WEBHOOK_SECONDS = Histogram(
    "contrackt_webhook_attempt_seconds",
    "Duration of one webhook delivery attempt",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
