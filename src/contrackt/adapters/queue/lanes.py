"""Per-tenant lanes served round-robin: the in-process half of fair queueing.

The memory queue keeps every waiting message here; the Kafka queue keeps the records it
has read ahead. ``take`` serves the first tenant of the ring that may be served and
moves it to the tail. A tenant that joins the ring goes just ahead of the tenant served
last: with A (500 waiting, being served) and a newcomer B, B's message is the next one
handed out. A tenant can be held for a while (it is at its in-flight cap): its lane
keeps its messages and is skipped until then; a caller may also skip tenants of its
choosing (a worker's spare consumer skips the tenants it is already working for).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class TenantLanes(Generic[T]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lanes: dict[str, deque[T]] = {}
        self._ring: deque[str] = deque()  # tenants with something waiting, next one first
        self._held: dict[str, float] = {}  # tenant -> clock() until which it is skipped
        self._last: str | None = None  # the tenant served last
        self._waiters: set[asyncio.Future[None]] = set()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def push(self, tenant: str, item: T, *, front: bool = False) -> None:
        lane = self._lanes.get(tenant)
        if lane is None:
            lane = self._lanes[tenant] = deque()
            if self._ring and self._ring[-1] == self._last:
                last = self._ring.pop()  # the newcomer's turn comes before the last one served
                self._ring.append(tenant)
                self._ring.append(last)
            else:
                self._ring.append(tenant)
        if front:
            lane.appendleft(item)
        else:
            lane.append(item)
        self._count += 1
        self._wake()

    def items(self) -> Iterator[T]:
        """Every waiting item (held lanes too), in no particular order."""
        for lane in self._lanes.values():
            yield from lane

    def hold(self, tenant: str, seconds: float) -> None:
        """Skip ``tenant``'s lane for ``seconds`` (its messages stay in order)."""
        self._held[tenant] = max(self._held.get(tenant, 0.0), self._clock() + max(0.0, seconds))

    def pop(self, skip: Collection[str] = ()) -> T | None:
        """The next item, round-robin over tenants that are not held (nor in ``skip``); None if none."""
        now = self._clock()
        for index, tenant in enumerate(self._ring):
            if tenant in skip:
                continue
            until = self._held.get(tenant)
            if until is not None:
                if until > now:
                    continue
                del self._held[tenant]
            del self._ring[index]
            lane = self._lanes[tenant]
            item = lane.popleft()
            self._count -= 1
            self._last = tenant
            if lane:
                self._ring.append(tenant)  # served: to the back of the ring
            else:
                del self._lanes[tenant]
            return item
        return None

    def discard(self, drop: Callable[[T], bool]) -> list[T]:
        """Remove (and return) every waiting item for which ``drop`` is true."""
        dropped: list[T] = []
        for tenant in list(self._ring):
            keep: deque[T] = deque()
            for item in self._lanes[tenant]:
                (dropped if drop(item) else keep).append(item)
            if keep:
                self._lanes[tenant] = keep
            else:
                del self._lanes[tenant]
                self._ring.remove(tenant)
        self._count -= len(dropped)
        return dropped

    async def take(self, timeout_s: float, skip: Collection[str] = ()) -> T | None:
        """Wait up to ``timeout_s`` for the next item (woken by ``push`` or a hold's end)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while True:
            item = self.pop(skip)
            if item is not None:
                return item
            left = deadline - loop.time()
            if left <= 0:
                return None
            now = self._clock()
            ends = [until - now for tenant, until in self._held.items() if tenant in self._lanes]
            wait = min([left, *(max(0.001, e) for e in ends)])
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait({waiter}, timeout=wait)
            finally:
                self._waiters.discard(waiter)
                waiter.cancel()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
