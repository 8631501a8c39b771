"""Sending a request with bounded retries: Retry-After on 429/503, backoff on broken connections."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from contrackt.client.errors import APIConnectionError, error_for

RETRY_STATUSES = (429, 503)
DEFAULT_RETRY_AFTER = 1.0  # a 429/503 without Retry-After
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 8.0

Sleep = Callable[[float], Awaitable[None]]


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds, or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def raise_for(response: httpx.Response, job_id: str | None = None) -> None:
    """The typed error of a non-2xx answer."""
    if response.status_code < 400:
        return
    raise error_for(
        response.status_code,
        problem_of(response),
        retry_after=retry_after(response.headers.get("retry-after")),
        job_id=job_id,
    )


class Retrying:
    """One policy for every call of a client.

    ``max_retry_wait``: the most seconds one call may spend waiting before it resends (the sum of
    its Retry-After waits and backoffs); an answer asking for more is raised at once, as its
    typed error with ``retry_after``. ``max_attempts``: the most times one call is sent.
    """

    def __init__(
        self, http: httpx.AsyncClient, *, max_retry_wait: float, max_attempts: int, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.http = http
        self.max_retry_wait = max_retry_wait
        self.max_attempts = max(1, max_attempts)
        self.sleep = sleep

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        job_id: str | None = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        """A 2xx answer (or one whose status is in ``accept``); anything else raises its typed error.

        Only requests that may be sent twice come here: reads, and submissions that carry an
        Idempotency-Key (the API answers a resent one with the same job).
        """
        waited = 0.0
        attempt = 0
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        while True:
            attempt += 1
            try:
                response = await self.http.request(
                    method, path, params=params, content=content, headers=headers, **extra
                )
            except httpx.TransportError as exc:
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1))
                if attempt >= self.max_attempts or waited + delay > self.max_retry_wait:
                    raise APIConnectionError(
                        f"{type(exc).__name__} after {attempt} attempt(s)", code="transport_error", job_id=job_id
                    ) from exc
                await self.sleep(delay)
                waited += delay
                continue
            if response.status_code in RETRY_STATUSES and response.status_code not in accept:
                delay = retry_after(response.headers.get("retry-after"))
                delay = DEFAULT_RETRY_AFTER if delay is None else delay
                if attempt < self.max_attempts and waited + delay <= self.max_retry_wait:
                    await self.sleep(delay)
                    waited += delay
                    continue
            if response.status_code in accept:
                return response
            raise_for(response, job_id)
            return response
