"""Typed errors of the Python client: one class per kind of failure, each carrying the API's ``code``.

Every error is a ``ContracktClientError``. An API error (problem+json) becomes the class its
``code`` names (``rate_limited`` -> ``RateLimitedError``); a code this client does not know yet
falls back to the class of its HTTP status, and the code itself is kept in ``.code``.
"""

from __future__ import annotations

from typing import Any


class ContracktClientError(Exception):
    """Root of every error the client raises.

    ``code``: the API's stable problem code (``not_a_pdf``, ``rate_limited`` ...), or one of the
    client's own (``transport_error``, ``wait_timeout``, ``result_integrity``); for a failed job,
    the job's error code (``corrupt_pdf`` ...). ``status``: the HTTP status, when there was one.
    ``retry_after``: seconds the API asked to wait (429/503). ``job_id``: the job concerned, when known.
    """

    def __init__(
        self,
        detail: str,
        *,
        code: str,
        status: int | None = None,
        retry_after: float | None = None,
        job_id: str | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.detail = detail
        self.code = code
        self.status = status
        self.retry_after = retry_after
        self.job_id = job_id
        self.problem = problem or {}


class APIConnectionError(ContracktClientError):
    """The API could not be reached, or the connection broke (after the client's retries)."""


class WaitTimeoutError(ContracktClientError):
    """The job did not finish within the client's ``timeout``; it goes on (see ``job_id``)."""


class ResultIntegrityError(ContracktClientError):
    """The result does not match its ``result_sha256``: it was altered or cut short."""


class JobFailedError(ContracktClientError):
    """The job failed; ``code`` is the job's error code (``encrypted_pdf``, ``corrupt_pdf`` ...)."""


class AuthenticationError(ContracktClientError):
    """401: the API key is missing, wrong or revoked."""


class NotFoundError(ContracktClientError):
    """404: no such job (another tenant's job answers the same)."""


class InvalidRequestError(ContracktClientError):
    """422 (or 400): a parameter or the upload is invalid (``invalid_request``, ``empty_upload`` ...)."""


class UnsupportedDocumentError(ContracktClientError):
    """415: the upload is not a document the API accepts (``not_a_pdf``)."""


class PayloadTooLargeError(ContracktClientError):
    """413: the upload, its parts or its pages are over a limit."""


class RequestTimeoutError(ContracktClientError):
    """408: the upload did not arrive within the API's body timeout."""


class ConflictError(ContracktClientError):
    """409."""


class IdempotencyConflictError(ConflictError):
    """409 ``idempotency_conflict``: the Idempotency-Key was used with another document."""


class NotFinishedError(ConflictError):
    """409 ``not_finished``: the job has no result yet."""


class GoneError(ContracktClientError):
    """410: the result expired or was purged (or its key was destroyed)."""


class RateLimitedError(ContracktClientError):
    """429: over a rate limit or a cap (``rate_limited``, ``too_many_uploads``, ``too_many_streams``,
    ``backlog_full``) for longer than the client was allowed to wait."""


class ServiceUnavailableError(ContracktClientError):
    """503: the service is overloaded (``overloaded``) or a dependency is unavailable."""


class ServerError(ContracktClientError):
    """Any other 5xx (``internal_error`` ...)."""


BY_CODE: dict[str, type[ContracktClientError]] = {
    "unauthorized": AuthenticationError,
    "not_found": NotFoundError,
    "invalid_request": InvalidRequestError,
    "invalid_cursor": InvalidRequestError,
    "empty_upload": InvalidRequestError,
    "unknown_engine": InvalidRequestError,
    "not_a_pdf": UnsupportedDocumentError,
    "upload_too_large": PayloadTooLargeError,
    "too_many_parts": PayloadTooLargeError,
    "too_many_pages": PayloadTooLargeError,
    "body_timeout": RequestTimeoutError,
    "idempotency_conflict": IdempotencyConflictError,
    "not_finished": NotFinishedError,
    "job_failed": JobFailedError,
    "gone": GoneError,
    "key_unavailable": GoneError,
    "rate_limited": RateLimitedError,
    "too_many_uploads": RateLimitedError,
    "too_many_streams": RateLimitedError,
    "backlog_full": RateLimitedError,
    "overloaded": ServiceUnavailableError,
    "receipt_key_unavailable": ServiceUnavailableError,
}
BY_STATUS: dict[int, type[ContracktClientError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    410: GoneError,
    413: PayloadTooLargeError,
    415: UnsupportedDocumentError,
    422: InvalidRequestError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def error_for(
    status: int, problem: dict[str, Any], *, retry_after: float | None = None, job_id: str | None = None
) -> ContracktClientError:
    """The typed error for an API answer with ``status`` and (parsed) problem+json body."""
    code = str(problem.get("code") or f"http_{status}")
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    cls = BY_CODE.get(code) or BY_STATUS.get(status) or (ServerError if status >= 500 else ContracktClientError)
    return cls(detail, code=code, status=status, retry_after=retry_after, job_id=job_id, problem=problem)


def job_failed(job_id: str, error: dict[str, Any] | None) -> JobFailedError:
    """The error for a job that ended ``failed`` with ``error`` (``{"code", "message"}``)."""
    error = error or {}
    return JobFailedError(
        str(error.get("message") or "The job failed"), code=str(error.get("code") or "job_failed"), job_id=job_id
    )
