"""Admission at the edge: how many uploads and event streams may be open at once.

Counters live in this process (an API replica), keyed by API key id; nothing is
shared between replicas, so the service-wide bound is the per-process one times
the replicas.  A slot is released exactly once, on every path (success, error,
client gone, body timeout): the callers release in ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from contrackt.domain.errors import Overloaded, TooManyStreams, TooManyUploads
from contrackt.metrics import STREAMS_OPEN, UPLOADS_IN_PROGRESS
from contrackt.settings import Settings

UPLOAD_RETRY_AFTER_S = 2  # an upload slot frees up when a body has been read and sealed: seconds
STREAM_RETRY_AFTER_S = 5


class Full(Exception):
    """No slot: ``per_key`` says whether the key's own cap or the process cap was reached."""

    def __init__(self, per_key: bool) -> None:
        super().__init__("per key" if per_key else "process")
        self.per_key = per_key


class Slot:
    """One thing in progress; ``release`` gives it back (idempotent)."""

    def __init__(self, give_back: Callable[[], None]) -> None:
        self._give_back: Callable[[], None] | None = give_back

    def release(self) -> None:
        give_back, self._give_back = self._give_back, None
        if give_back is not None:
            give_back()


class Slots:
    """At most ``per_key`` at once per key and, when ``total`` is set, ``total`` in all."""

    def __init__(self, per_key: int, total: int | None = None) -> None:
        if per_key < 1 or (total is not None and total < 1):
            raise ValueError("admission caps must be at least 1")
        self.per_key = per_key
        self.total = total
        self._by_key: dict[str, int] = {}
        self._count = 0

    def acquire(self, key: str) -> Slot:
        held = self._by_key.get(key, 0)
        if held >= self.per_key:
            raise Full(per_key=True)
        if self.total is not None and self._count >= self.total:
            raise Full(per_key=False)
        self._by_key[key] = held + 1
        self._count += 1
        return Slot(lambda: self._release(key))

    def _release(self, key: str) -> None:
        left = self._by_key[key] - 1
        if left:
            self._by_key[key] = left
        else:
            del self._by_key[key]  # the table only ever holds keys with something in progress
        self._count -= 1

    def in_use(self, key: str | None = None) -> int:
        return self._count if key is None else self._by_key.get(key, 0)


class Admission:
    """The caps of one API process, from settings (CONTRACKT_MAX_CONCURRENT_UPLOADS,
    CONTRACKT_MAX_UPLOADS_PER_KEY, CONTRACKT_MAX_STREAMS_PER_KEY)."""

    def __init__(self, settings: Settings) -> None:
        self.uploads = Slots(settings.max_uploads_per_key, settings.max_concurrent_uploads)
        self.streams = Slots(settings.max_streams_per_key)

    @contextmanager
    def upload(self, api_key_id: str) -> Iterator[None]:
        """Hold an upload slot for the block: 429 ``too_many_uploads`` over the key's cap,
        503 ``overloaded`` over the process's (the message names no count but the key's own)."""
        try:
            slot = self.uploads.acquire(api_key_id)
        except Full as full:
            if full.per_key:
                raise TooManyUploads(
                    f"At most {self.uploads.per_key} uploads may be in progress at once for this API key",
                    retry_after=UPLOAD_RETRY_AFTER_S,
                ) from None
            raise Overloaded("Too many uploads in progress; retry later", retry_after=UPLOAD_RETRY_AFTER_S) from None
        UPLOADS_IN_PROGRESS.inc()
        try:
            yield
        finally:
            slot.release()
            UPLOADS_IN_PROGRESS.dec()

    def stream(self, api_key_id: str) -> Slot:
        """A slot for one event stream (the caller releases it when the stream ends)."""
        try:
            slot = self.streams.acquire(api_key_id)
        except Full:
            raise TooManyStreams(
                f"At most {self.streams.per_key} event streams may be open at once for this API key",
                retry_after=STREAM_RETRY_AFTER_S,
            ) from None
        STREAMS_OPEN.inc()

        def give_back() -> None:
            slot.release()
            STREAMS_OPEN.dec()

        return Slot(give_back)
