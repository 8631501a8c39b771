"""Dead letters of the embedded mode, read from the database.

The in-process queue's dead letters live inside the running ``contrackt serve`` and die with
it, so a ``contrackt dlq`` command (another process) cannot see them. What makes a dead letter
worth a look is in the database anyway: a failed job whose sealed document is held for a
replay. This view lists those jobs as entries (entry id = job id); an entry leaves the view
when its hold ends (replay, drop, expiry), so ``remove`` has nothing of its own to do.
"""

from __future__ import annotations

from contrackt.domain.ids import parse_id
from contrackt.domain.jobs import Job, JobMessage
from contrackt.ports.deadletters import DeadLetter
from contrackt.ports.repositories import UnitOfWorkFactory


def _entry(job: Job) -> DeadLetter:
    message = JobMessage(job.id, job.tenant_id, job.blob_key or "", job.attempts)
    return DeadLetter(job.id, message, job.error_code or "", job.attempts, job.completed_at)


class DatabaseDeadLetters:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self.uow = uow

    async def list(self, limit: int = 1000) -> list[DeadLetter]:
        async with self.uow(system=True) as uow:
            held = await uow.jobs.find_held(limit=max(0, limit))
        return [_entry(job) for job in held]

    async def get(self, entry_id: str) -> DeadLetter | None:
        job_id = parse_id(entry_id)
        if job_id is None:
            return None
        async with self.uow(system=True) as uow:
            found = await uow.jobs.get_many([job_id])
        held = [job for job in found if job.document_hold_until is not None]
        return _entry(held[0]) if held else None

    async def remove(self, entry_id: str, outcome: str) -> bool:
        return True  # the entry is the hold itself: the replay or drop that ended it removed it

    async def close(self) -> None:
        return None
