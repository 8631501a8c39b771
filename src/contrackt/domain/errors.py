"""Error hierarchy: every error carries its HTTP status and a stable code."""

from __future__ import annotations


class ContracktError(Exception):
    """Root of every error the service reports to a client.

    ``code`` is a stable machine-readable slug; ``message`` is safe to show to
    the client (never document content, file names or keys).
    """

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        self.message = message or self.title
        self.retry_after = retry_after
        super().__init__(self.message)


class NotAPdf(ContracktError):
    """Not a document we read (PDF, JPEG, PNG, TIFF, by their first bytes). The code predates
    image inputs and is kept so that clients' handling of it keeps working."""

    status, code, title = 415, "not_a_pdf", "The upload is not a PDF, JPEG, PNG or TIFF document"


class EmptyUpload(ContracktError):
    status, code, title = 422, "empty_upload", "The upload is empty"


class InvalidRequest(ContracktError):
    status, code, title = 422, "invalid_request", "The request is invalid"


class InvalidCursor(InvalidRequest):
    code = "invalid_cursor"


class UploadTooLarge(ContracktError):
    status, code, title = 413, "upload_too_large", "The upload exceeds the size limit"


class TooManyParts(ContracktError):
    status, code, title = 413, "too_many_parts", "The multipart body has more parts than allowed"


class TooManyPages(ContracktError):
    status, code, title = 413, "too_many_pages", "The document has more pages than allowed"


class EncryptedPdf(ContracktError):
    status, code, title = 422, "encrypted_pdf", "The PDF is protected by a password"


class CorruptPdf(ContracktError):
    status, code, title = 422, "corrupt_pdf", "The PDF could not be read"


class CorruptImage(ContracktError):
    status, code, title = 422, "corrupt_image", "The image could not be read"


class ImageTooLarge(ContracktError):
    status, code, title = 413, "image_too_large", "The image has more pixels than allowed"


class PagesOutOfRange(ContracktError):
    status, code, title = 422, "pages_out_of_range", "The page selection asks for pages the document does not have"


class FormatUnavailable(ContracktError):
    status, code, title = 409, "format_unavailable", "The result is not available in this format"


class ResourceLimit(ContracktError):
    status, code, title = 422, "resource_limit", "The document exceeded a resource limit"


class ExtractionTimeout(ContracktError):
    status, code, title = 422, "timeout", "The document took too long to process"


class OutputLimit(ContracktError):
    status, code, title = 422, "output_limit", "The document's extracted text exceeds the output limits"


class SandboxViolation(ContracktError):
    """The sandboxed child answered outside the protocol (malformed, oversized, unexpected)."""

    status, code, title = 422, "sandbox_violation", "The document made the extraction sandbox misbehave"


class BodyTimeout(ContracktError):
    status, code, title = 408, "body_timeout", "The request body was not received in time"


class BacklogFull(ContracktError):
    status, code, title = 429, "backlog_full", "Too many unfinished jobs for this tenant"


class TooManyStreams(ContracktError):
    status, code, title = 429, "too_many_streams", "Too many open event streams for this API key"


class TooManyUploads(ContracktError):
    status, code, title = 429, "too_many_uploads", "Too many uploads in progress for this API key"


class Unauthorized(ContracktError):
    status, code, title = 401, "unauthorized", "A valid API key is required"


class NotFound(ContracktError):
    status, code, title = 404, "not_found", "No such job"


class NotFinished(ContracktError):
    status, code, title = 409, "not_finished", "The job has not finished yet"


class JobFailed(ContracktError):
    status, code, title = 409, "job_failed", "The job failed; it has no result"


class Gone(ContracktError):
    status, code, title = 410, "gone", "The result has expired or was purged"


class RateLimited(ContracktError):
    status, code, title = 429, "rate_limited", "Too many requests"


class Overloaded(ContracktError):
    status, code, title = 503, "overloaded", "The service is busy; retry later"


class UnknownEngine(ContracktError):
    status, code, title = 422, "unknown_engine", "Unknown OCR engine"


class IdempotencyConflict(ContracktError):
    """An Idempotency-Key reused with another document (409); repositories also raise it
    internally when a concurrent request with the same key inserted its job first."""

    status, code, title = 409, "idempotency_conflict", "A job with this Idempotency-Key exists"


class WebhookNotFound(NotFound):
    title = "No such webhook"


class WebhookUrlRefused(ContracktError):
    """The webhook URL breaks the egress rules (https, public addresses, no credentials)."""

    status, code, title = 422, "webhook_url_refused", "The webhook URL is not allowed"


class TooManyWebhooks(ContracktError):
    status, code, title = 409, "too_many_webhooks", "This tenant has as many webhooks as allowed"


class KeyUnavailable(ContracktError):
    """The tenant's key was destroyed (crypto-shredded) or cannot be unwrapped."""

    status, code, title = 410, "key_unavailable", "The data's key no longer exists"


class DecryptionFailed(ContracktError):
    status, code, title = 500, "decryption_failed", "Stored data failed its integrity check"


# Failure codes a job may end with (``jobs.error_code``), and which are worth retrying.
PERMANENT_JOB_ERRORS = frozenset(
    {
        "encrypted_pdf",
        "corrupt_pdf",
        "too_many_pages",
        "unknown_engine",
        "key_unavailable",
        # the same document would produce the same output again, or trip the sandbox again
        "output_limit",
        "sandbox_violation",
        # image inputs and page selections: the same file and request fail the same way again
        "corrupt_image",
        "image_too_large",
        "pages_out_of_range",
    }
)
