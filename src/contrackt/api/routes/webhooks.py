"""Webhook routes: register an endpoint (secret shown once), list, remove, recent delivery attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from contrackt.api.deps import ContainerDep, StatusCaller, rate_headers
from contrackt.api.errors import problems
from contrackt.domain.webhooks import DeliveryAttempt, Webhook

router = APIRouter(tags=["webhooks"])
# What Contrackt sends (the OpenAPI "webhooks" section): included by the app factory.
deliveries = APIRouter(tags=["webhooks"])

EventType = Literal["job.completed", "job.failed"]
_ALL_EVENTS: list[EventType] = ["job.completed", "job.failed"]

_HOOK_EXAMPLE: dict[str, Any] = {
    "id": "3f0c6a52-9f57-4a55-9d7e-1b8cf7f1f0aa",
    "url": "https://hooks.example.com/contrackt",
    "events": ["job.completed", "job.failed"],
    "created_at": "2026-11-27T10:00:00+00:00",
    "disabled_at": None,
    "disabled_reason": None,
}
_SECRET_EXAMPLE = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3J4mG9bVvHk="  # noqa: S105 (a documentation example)


class WebhookIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"url": "https://hooks.example.com/contrackt", "events": ["job.completed", "job.failed"]}]
        },
    )

    url: str = Field(
        min_length=1,
        max_length=2000,
        description="https URL whose host resolves only to public addresses "
        "(http and private addresses only with CONTRACKT_WEBHOOK_ALLOW_PRIVATE=1)",
    )
    events: list[EventType] = Field(default_factory=lambda: _ALL_EVENTS.copy(), min_length=1, max_length=2)


class WebhookOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_HOOK_EXAMPLE]})

    id: str
    url: str
    events: list[str]
    created_at: datetime
    disabled_at: datetime | None = Field(description="Set when deliveries kept failing for the whole retry window")
    disabled_reason: str | None = Field(description="Why the endpoint was disabled (last status code or error)")

    @classmethod
    def of(cls, hook: Webhook) -> WebhookOut:
        return cls(
            id=hook.id,
            url=hook.url,
            events=hook.events,
            created_at=hook.created_at,
            disabled_at=hook.disabled_at,
            disabled_reason=hook.disabled_reason,
        )


class WebhookCreated(WebhookOut):
    model_config = ConfigDict(json_schema_extra={"examples": [{**_HOOK_EXAMPLE, "secret": _SECRET_EXAMPLE}]})

    secret: str = Field(
        description="Signing secret (Standard Webhooks, whsec_ + base64). Shown only in this answer; "
        "it is stored encrypted under the tenant's key"
    )


class WebhookList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"webhooks": [_HOOK_EXAMPLE]}]})

    webhooks: list[WebhookOut]


class AttemptOut(BaseModel):
    event_id: str = Field(description="The webhook-id header: the same on every attempt of one event")
    event_type: str
    job_id: str
    attempt: int = Field(description="1 for the first attempt of this event")
    at: datetime
    duration_ms: int
    outcome: Literal["delivered", "retrying", "failed"]
    status_code: int | None = Field(description="The receiver's HTTP status; null when none came back")
    error: str | None = Field(
        description="Why no status came back: timeout, connect_error, tls_error, dns_error, address_refused, "
        "url_refused, protocol_error, network_error"
    )

    @classmethod
    def of(cls, a: DeliveryAttempt) -> AttemptOut:
        return cls(
            event_id=a.event_id,
            event_type=a.event_type,
            job_id=a.job_id,
            attempt=a.attempt,
            at=a.at,
            duration_ms=a.duration_ms,
            outcome=a.outcome,  # type: ignore[arg-type]
            status_code=a.status_code,
            error=a.error,
        )


class AttemptList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "deliveries": [
                        {
                            "event_id": "msg_6d1f2c9e0b7a4c35a1e8f0d2b3c4a5e6",
                            "event_type": "job.completed",
                            "job_id": "0b8e2f4c-3c1d-4d8e-9a6b-2f1e0c9d8b7a",
                            "attempt": 2,
                            "at": "2026-11-27T10:00:07+00:00",
                            "duration_ms": 84,
                            "outcome": "delivered",
                            "status_code": 204,
                            "error": None,
                        },
                        {
                            "event_id": "msg_6d1f2c9e0b7a4c35a1e8f0d2b3c4a5e6",
                            "event_type": "job.completed",
                            "job_id": "0b8e2f4c-3c1d-4d8e-9a6b-2f1e0c9d8b7a",
                            "attempt": 1,
                            "at": "2026-11-27T10:00:02+00:00",
                            "duration_ms": 10003,
                            "outcome": "retrying",
                            "status_code": None,
                            "error": "timeout",
                        },
                    ]
                }
            ]
        }
    )

    deliveries: list[AttemptOut]


_DELIVERY_DOC = (
    "Each event is POSTed as JSON `{type, timestamp, data: {job_id, status, links, error?}}` (never "
    "document data) with the Standard Webhooks headers `webhook-id`, `webhook-timestamp` and "
    '`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed by the secret\'s decoded '
    "bytes. Any 2xx is a delivery; anything else is retried with exponential backoff (with jitter) for "
    "24 h under the same `webhook-id`, after which the endpoint is disabled (`disabled_at`, "
    "`disabled_reason`). Redirects are not followed."
)


@router.post(
    "/v1/webhooks",
    status_code=201,
    summary="Register a webhook endpoint (its signing secret is shown once)",
    description=_DELIVERY_DOC,
    response_model=WebhookCreated,
    responses=problems(
        400,
        409,
        descriptions={
            400: "invalid_request: the body is not JSON",
            409: "too_many_webhooks: the tenant has CONTRACKT_WEBHOOK_MAX_PER_TENANT endpoints",
            422: "invalid_request, or webhook_url_refused: not https, credentials in the URL, or the host "
            "resolves to a loopback, private, link-local or other non-public address",
        },
    ),
)
async def add_webhook(body: WebhookIn, caller: StatusCaller, c: ContainerDep) -> WebhookCreated:
    created = await c.webhooks.add(caller.tenant_id, body.url, list(body.events), api_key_id=caller.api_key_id)
    return WebhookCreated(**WebhookOut.of(created.webhook).model_dump(), secret=created.secret)


@router.get("/v1/webhooks", summary="This tenant's webhook endpoints", response_model=WebhookList, responses=problems())
async def list_webhooks(caller: StatusCaller, c: ContainerDep) -> WebhookList:
    return WebhookList(webhooks=[WebhookOut.of(h) for h in await c.webhooks.list_for_tenant(caller.tenant_id)])


@router.delete(
    "/v1/webhooks/{webhook_id}",
    status_code=204,
    summary="Remove a webhook endpoint (its pending events are dropped)",
    response_class=Response,
    responses=problems(404, descriptions={404: "No such webhook (another tenant's answers the same)"}),
)
async def delete_webhook(webhook_id: str, caller: StatusCaller, c: ContainerDep, response: Response) -> Response:
    await c.webhooks.remove(caller.tenant_id, webhook_id, api_key_id=caller.api_key_id)
    return Response(status_code=204, headers=rate_headers(response))


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    summary="Recent delivery attempts, newest first (no response bodies)",
    response_model=AttemptList,
    responses=problems(404, descriptions={404: "No such webhook (another tenant's answers the same)"}),
)
async def list_deliveries(
    webhook_id: str,
    caller: StatusCaller,
    c: ContainerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> AttemptList:
    attempts = await c.webhooks.deliveries(caller.tenant_id, webhook_id, limit)
    return AttemptList(deliveries=[AttemptOut.of(a) for a in attempts])


class EventError(BaseModel):
    code: str = Field(examples=["corrupt_pdf"])
    message: str = Field(examples=["The PDF could not be read"])


class EventData(BaseModel):
    job_id: str
    status: Literal["completed", "failed"]
    links: dict[str, str] = Field(description="The job's API paths: self, result, events")
    error: EventError | None = Field(default=None, description="Only in job.failed")


class EventBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "job.completed",
                    "timestamp": "2026-11-27T10:00:01.250000Z",
                    "data": {
                        "job_id": "0b8e2f4c-3c1d-4d8e-9a6b-2f1e0c9d8b7a",
                        "status": "completed",
                        "links": {
                            "self": "/v1/jobs/0b8e2f4c-3c1d-4d8e-9a6b-2f1e0c9d8b7a",
                            "result": "/v1/jobs/0b8e2f4c-3c1d-4d8e-9a6b-2f1e0c9d8b7a/result",
                            "events": "/v1/jobs/0b8e2f4c-3c1d-4d8e-9a6b-2f1e0c9d8b7a/events",
                        },
                    },
                }
            ]
        }
    )

    type: EventType
    timestamp: str = Field(description="When the job finished (RFC 3339, UTC); the same on every attempt")
    data: EventData


def _describe_delivery(event: str) -> str:
    return f"Sent to every active endpoint subscribed to `{event}`. {_DELIVERY_DOC} Answer 2xx within the timeout."


@deliveries.post("job.completed", summary="A job completed", description=_describe_delivery("job.completed"))
@deliveries.post("job.failed", summary="A job failed", description=_describe_delivery("job.failed"))
def _delivery(
    body: EventBody,
    webhook_id: Annotated[str, Header(alias="webhook-id", description="Event id: the same on every retry")],
    webhook_timestamp: Annotated[str, Header(alias="webhook-timestamp", description="Unix seconds of this attempt")],
    webhook_signature: Annotated[
        str, Header(alias="webhook-signature", description='v1,<base64 HMAC-SHA256 of "id.timestamp.body">')
    ],
) -> None:
    """Documentation only: these requests go from Contrackt to the tenant's endpoint."""
