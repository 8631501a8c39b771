"""Fair shares of the OCR pool's slots: a freed slot goes to the tenant holding the fewest.

Used by ``lanes.py``: ``workers`` slots (children at once), each job's lanes acquiring one per
child under the job's key (its tenant). Thread-safe, and usable from several event loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import Counter
from dataclasses import dataclass

from contrackt.domain.errors import ContracktError

__all__ = ["FairSlots"]


@dataclass(eq=False)
class _Waiter:
    seq: int
    key: str
    loop: asyncio.AbstractEventLoop
    fut: asyncio.Future[None]
    state: str = "waiting"  # waiting | granted | taken | abandoned


class FairSlots:
    """``capacity`` slots; a freed slot goes to the waiter whose key holds the fewest."""

    def __init__(self, capacity: int) -> None:
        self._lock = threading.Lock()
        self._free = capacity
        self._held: Counter[str] = Counter()
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self.closed = False

    def try_acquire(self, key: str) -> bool:
        """Take a slot only if one is free now (no one waits then: a freed slot goes to a waiter)."""
        with self._lock:
            if self.closed or self._free <= 0:
                return False
            self._free -= 1
            self._held[key] += 1
            return True

    async def acquire(self, key: str) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.closed:
                raise ContracktError("The extraction pool is closed")
            if self._free > 0:
                self._free -= 1
                self._held[key] += 1
                return
            waiter = _Waiter(next(self._seq), key, loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter.fut
        except BaseException:
            give_back = False
            with self._lock:
                if waiter.state == "waiting":
                    self._waiters.remove(waiter)
                    waiter.state = "abandoned"
                elif waiter.state == "granted":
                    waiter.state = "abandoned"  # _grant will give the slot back
                elif waiter.state == "taken":
                    give_back = True
            if give_back:
                self.release(key)
            raise

    def release(self, key: str) -> None:
        with self._lock:
            self._held[key] -= 1
            if self._held[key] <= 0:
                del self._held[key]
            while self._waiters:
                best = min(self._waiters, key=lambda w: (self._held[w.key], w.seq))
                self._waiters.remove(best)
                best.state = "granted"
                self._held[best.key] += 1
                try:
                    best.loop.call_soon_threadsafe(self._grant, best)
                    return
                except RuntimeError:  # that loop is closed
                    best.state = "abandoned"
                    self._held[best.key] -= 1
                    if self._held[best.key] <= 0:
                        del self._held[best.key]
            self._free += 1

    def _grant(self, waiter: _Waiter) -> None:
        with self._lock:
            abandoned = waiter.state == "abandoned"
            if not abandoned:
                waiter.state = "taken"
        if abandoned:
            self.release(waiter.key)
        elif not waiter.fut.done():
            waiter.fut.set_result(None)

    def contended(self, key: str) -> bool:
        """Is anyone of another key waiting for a slot?"""
        with self._lock:
            return any(w.key != key for w in self._waiters)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            waiters, self._waiters = self._waiters, []
        for w in waiters:
            with contextlib.suppress(RuntimeError):
                w.loop.call_soon_threadsafe(_fail, w.fut)


def _fail(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(ContracktError("The extraction pool is closed"))


async def acquire_first(key: str, timeout: float, *choices: FairSlots) -> FairSlots | None:
    """Wait for a slot of whichever of ``choices`` frees one first; the one held (None: none
    within ``timeout``). Slots granted to the losers are given back, and so is everything
    when the caller is cancelled; a scheduler's error (closed) is raised."""
    tasks = [asyncio.ensure_future(c.acquire(key)) for c in choices]
    finished = False
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finished = True
    finally:
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        # a cancelled acquire never holds a slot (FairSlots gives it back); a finished one does
        held = [c for c, outcome in zip(choices, outcomes, strict=True) if outcome is None]
        for c in held[1:] if finished else held:
            c.release(key)
    if held:
        return held[0]
    for outcome in outcomes:
        if isinstance(outcome, Exception) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome
    return None
