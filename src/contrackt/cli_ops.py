"""Operator commands: `contrackt dlq list|show|replay|drop`, `contrackt retention apply`, `contrackt audit checkpoint`.

Registered on the main group by ``contrackt.cli``. Output names jobs, tenants, reasons,
counts and times, never document data (docs/adr/0013-operations.md).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

T = TypeVar("T")

_COLUMNS = ("entry_id", "job_id", "tenant_id", "reason", "deliveries", "dead_at", "job_status", "document")


def _in_container(fn: Callable[[Any], Awaitable[T]]) -> T:
    from contrackt.cli import _ensure_schema, _run, _settings, _with_container

    _ensure_schema(_settings())
    return _run(lambda: _with_container(fn))


def _with_dlq(fn: Callable[[Any], Awaitable[T]]) -> T:
    from contrackt.bootstrap import make_dead_letters
    from contrackt.services.deadletters import DeadLetterService

    async def run(c: Any) -> T:
        dead = make_dead_letters(c.settings, c.queue, c.uow)
        try:
            return await fn(DeadLetterService(c.uow, dead, c.blobs, c.clock))
        finally:
            await dead.close()

    return _in_container(run)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    cells = [[str(r.get(c) if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _emit(rows: list[dict[str, Any]], as_json: bool, columns: tuple[str, ...]) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    elif rows:
        _table(rows, columns)
    else:
        click.echo("nothing")


@click.group()
def dlq() -> None:
    """The dead-letter queue: jobs that failed with a retryable code on their last attempt."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(min=1))
def dlq_list(as_json: bool, limit: int) -> None:
    """Entries (job id, tenant id, reason, deliveries, when) and what the database says of each job."""
    rows = _with_dlq(lambda s: s.entries(limit))
    _emit([r.to_dict() for r in rows], as_json, _COLUMNS)


@dlq.command("show")
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True)
def dlq_show(ident: str, as_json: bool) -> None:
    """One entry (by entry id), or every entry of a job (by job id)."""
    from contrackt.services.deadletters import UnknownDeadLetter

    try:
        rows = _with_dlq(lambda s: s.show(ident))
    except UnknownDeadLetter:
        raise click.ClickException(f"no dead letter and no job with a held document has the id {ident}") from None
    _emit([r.to_dict() for r in rows], as_json, (*_COLUMNS, "replayable"))


_OUTCOME_COLUMNS = ("entry_id", "job_id", "tenant_id", "outcome", "entry_removed", "document_destroyed")


@dlq.command("replay")
@click.argument("ident", required=False)
@click.option("--all", "replay_all", is_flag=True, help="Every entry")
@click.option("--json", "as_json", is_flag=True)
def dlq_replay(ident: str | None, replay_all: bool, as_json: bool) -> None:
    """Put the job back in the queue (pending, a new budget of attempts), if its document is still held.

    Exit 1 when a job could not be replayed (its document is gone: the client must resubmit).
    """
    from contrackt.services.deadletters import UnknownDeadLetter

    if bool(ident) == replay_all:
        raise click.UsageError("give one ID, or --all")
    try:
        outcomes = _with_dlq(lambda s: s.replay_all() if replay_all else s.replay(str(ident)))
    except UnknownDeadLetter:
        raise click.ClickException(f"no dead letter and no job with a held document has the id {ident}") from None
    _emit([o.to_dict() for o in outcomes], as_json, _OUTCOME_COLUMNS)
    refused = [o for o in outcomes if o.outcome in ("needs_resubmission", "job_missing")]
    sys.exit(1 if refused else 0)


@dlq.command("drop")
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True)
def dlq_drop(ident: str, as_json: bool) -> None:
    """Give up on it: remove the entry and destroy the document it held (the receipt becomes available)."""
    from contrackt.services.deadletters import UnknownDeadLetter

    try:
        outcomes = _with_dlq(lambda s: s.drop(ident))
    except UnknownDeadLetter:
        raise click.ClickException(f"no dead letter and no job with a held document has the id {ident}") from None
    _emit([o.to_dict() for o in outcomes], as_json, _OUTCOME_COLUMNS)


@click.group()
def retention() -> None:
    """Audit and job retention (CONTRACKT_AUDIT_RETENTION_DAYS)."""


@retention.command("apply")
def retention_apply() -> None:
    """Prune jobs and audit rows older than the retention, below a signed checkpoint per chain."""
    from contrackt.services.retention import RetentionService

    async def run(c: Any) -> Any:
        service = RetentionService(c.uow, c.signer, c.clock, retention_days=c.settings.audit_retention_days)
        return await service.apply()

    report = _in_container(run)
    click.echo(json.dumps(report.to_dict()))
    sys.exit(1 if report.skipped else 0)


@click.command("checkpoint")
def audit_checkpoint() -> None:
    """Export every chain's signed head to CONTRACKT_AUDIT_CHECKPOINT_URL now."""
    from contrackt.bootstrap import make_checkpoint_sink
    from contrackt.services.checkpoints import CheckpointService

    async def run(c: Any) -> Any:
        sink = make_checkpoint_sink(c.settings)
        if sink is None:
            raise click.ClickException("CONTRACKT_AUDIT_CHECKPOINT_URL is not set (file:///dir or s3://bucket/prefix)")
        try:
            return await CheckpointService(c.uow, c.signer, c.clock, sink).export()
        finally:
            await sink.close()

    export = _in_container(run)
    click.echo(json.dumps({"checkpoint": export.name, "location": export.location, "chains": export.chains}))
