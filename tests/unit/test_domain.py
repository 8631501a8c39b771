"""Pure domain rules: job state machine, audit chain, API-key format, PDF sniffing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contrackt.domain.audit import (
    GENESIS_HASH,
    AuditAction,
    AuditEvent,
    ChainRow,
    chain_hash,
    verify_chain,
)
from contrackt.domain.jobs import JobMessage, JobStatus, can_transition
from contrackt.domain.limits import looks_like_pdf
from contrackt.domain.tenants import generate_api_key, key_matches, split_api_key


def test_terminal_states_never_move() -> None:
    for dst in JobStatus:
        assert not can_transition(JobStatus.COMPLETED, dst)
        assert not can_transition(JobStatus.FAILED, dst)
    assert can_transition(JobStatus.PENDING, JobStatus.PROCESSING)
    assert can_transition(JobStatus.PROCESSING, JobStatus.PENDING)  # a released claim
    assert not can_transition(JobStatus.PENDING, JobStatus.COMPLETED)


def test_job_message_round_trip_carries_no_document() -> None:
    msg = JobMessage("j", "t", "t/j.enc", 2)
    assert JobMessage.from_dict(msg.to_dict()) == msg
    assert set(msg.to_dict()) == {"job_id", "tenant_id", "blob_key", "attempt"}


def _chain(n: int) -> list[ChainRow]:
    rows, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        ev = AuditEvent("t1", AuditAction.RECEIVED, datetime(2026, 1, 1, 0, 0, seq, tzinfo=UTC), job_id=f"j{seq}")
        h = chain_hash(prev, ev, seq)
        rows.append(ChainRow(seq, ev, prev, h))
        prev = h
    return rows


def test_intact_chain_verifies() -> None:
    assert verify_chain(_chain(5)) == []


def test_changed_removed_and_reordered_rows_are_reported() -> None:
    changed = _chain(4)
    changed[2].event.details["page_count"] = 99
    assert any("changed" in p for p in verify_chain(changed))
    removed = _chain(4)
    del removed[1]
    assert any("removed" in p for p in verify_chain(removed))
    swapped = _chain(4)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    assert verify_chain(swapped)


def test_audit_details_refuse_fields_off_the_allow_list() -> None:
    with pytest.raises(ValueError, match="allow-list"):
        AuditEvent("t", AuditAction.RECEIVED, datetime.now(UTC), details={"filename": "contrato.pdf"})


def test_api_keys_are_random_and_checked_by_hash() -> None:
    full, prefix, digest = generate_api_key()
    assert split_api_key(full) == prefix
    assert key_matches(full, digest)
    assert not key_matches(full + "x", digest)
    assert generate_api_key()[0] != full
    assert split_api_key("ctk_short_x") is None
    assert split_api_key("") is None


@pytest.mark.parametrize(
    ("head", "ok"),
    [(b"%PDF-1.7\n", True), (b"GIF89a%PDF-", False), (b" %PDF-1.4", False), (b"", False), (b"PK\x03\x04", False)],
)
def test_pdf_magic_must_be_at_offset_zero(head: bytes, ok: bool) -> None:
    assert looks_like_pdf(head) is ok
