"""The Contrackt Python client: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

    from contrackt.client import Client

    with Client("https://contrackt.example", api_key) as client:
        result = client.extract("contract.pdf", progress=lambda done, total: print(f"{done}/{total}"))
        print(result.text)
        for line in result.pages[0].lines:
            print(line.bbox, line.confidence, line.text)

It needs only ``httpx`` (it imports nothing of the server).
"""

from __future__ import annotations

from contrackt.client.aio import AsyncClient
from contrackt.client.errors import (
    APIConnectionError,
    AuthenticationError,
    ConflictError,
    ContracktClientError,
    GoneError,
    IdempotencyConflictError,
    InvalidRequestError,
    JobFailedError,
    NotFinishedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    RequestTimeoutError,
    ResultIntegrityError,
    ServerError,
    ServiceUnavailableError,
    UnsupportedDocumentError,
    WaitTimeoutError,
)
from contrackt.client.models import Job, JobPage, Line, Page, Result, Submission, Usage, UsageDay, Word
from contrackt.client.sync import Client

__all__ = [
    "APIConnectionError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "ContracktClientError",
    "GoneError",
    "IdempotencyConflictError",
    "InvalidRequestError",
    "Job",
    "JobFailedError",
    "JobPage",
    "Line",
    "NotFinishedError",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RequestTimeoutError",
    "Result",
    "ResultIntegrityError",
    "ServerError",
    "ServiceUnavailableError",
    "Submission",
    "UnsupportedDocumentError",
    "Usage",
    "UsageDay",
    "WaitTimeoutError",
    "Word",
]
