"""Acceptance, on real processes with every fair-share setting at its default: tenant A
submits 100 scanned pages (10 copies of scan_hard.pdf), then tenant B one born-digital
contract; B completes within 15 s, on the embedded default and in production mode.

The scenario is ``bench/fairness.py`` (which prints the same numbers on its own); A's
jobs are not waited for: the processes are killed once B is done.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.fairness import embedded, production

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def check(result: dict[str, object]) -> None:
    print(f"\n{result}")
    assert result["b_status"] == "completed"
    assert float(result["b_latency_s"]) < 15  # type: ignore[arg-type]
    # B did not simply wait for A: most of A's work was still unfinished
    assert int(result["a_completed_when_b_done"]) < int(result["a_jobs"]) // 2  # type: ignore[call-overload]


def test_a_born_digital_document_is_not_stuck_behind_100_scanned_pages_embedded(tmp_path: Path) -> None:
    check(embedded(tmp_path, scans=10))


@pytest.mark.integration
def test_a_born_digital_document_is_not_stuck_behind_100_scanned_pages_production(tmp_path: Path) -> None:
    check(production(tmp_path, scans=10))
