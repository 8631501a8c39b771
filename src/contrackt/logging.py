"""structlog set-up: console in dev, JSON in production, an allow-list of fields."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Only these keys survive into a log line; anything else (a file name, a
# text snippet, a header, an address) is dropped before rendering.
ALLOWED_FIELDS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "request_id",
        "tenant_id",
        "job_id",
        "attempt",
        "code",
        "status",
        "method",
        "route",
        "duration_ms",
        "pages",
        "count",
        "engine",
        "worker",
        "consumer",
        "reason",
        "exc_info",
        "exception",
        "results_expired",
        "orphan_blobs_deleted",
        "jobs_requeued",
        "jobs_failed",
        "host",
        "port",
        "workers",
        "url_scheme",
        "depth",
        "signal",
        "published",
        "error",
        "webhook_id",
        # operations (dlq, retention, checkpoints): counts, outcomes, object names; no data
        "outcome",
        "held",
        "document_destroyed",
        "held_documents_destroyed",
        "chains",
        "checkpoint",
        "checkpoints",
        "audit_rows",
        "jobs",
        "cut",
    }
)


def allow_list(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in [k for k in event_dict if k not in ALLOWED_FIELDS]:
        del event_dict[key]
    return event_dict


def configure(fmt: str = "auto", level: str = "INFO") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            allow_list,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Library loggers (uvicorn access logs carry client addresses): keep them quiet.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("uvicorn.access").disabled = True
