"""The web console in headless Chromium against a real ``contrackt serve``: a key pasted, a
born-digital PDF and a scanned page as PNG uploaded, progress followed to the end, the local
pages drawn with the result's line boxes, the three views, the three downloads, the job list;
no console error and no Content-Security-Policy violation on the way. Screenshots are kept
(CONTRACKT_TEST_ARTIFACTS, else the test's tmp_path) and their folder is printed.

Debian's ``chromium`` (scripts/install.sh) is driven by Playwright for Python; Playwright's own
browser download is never used. A browser that cannot start fails the test, with the reason.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import corpus_path
from tests.documents import png_of
from tests.e2e.test_serve import cli, free_port, serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
WORDS_BORN = ("CONTRATO",)


def artefacts(tmp_path: Path) -> Path:
    root = os.environ.get("CONTRACKT_TEST_ARTIFACTS")
    out = Path(root) / "console" if root else tmp_path / "artefacts"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the requirement is pinned
        pytest.fail(f"playwright is not installed (requirements.txt pins it): {exc}")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/install.sh, APT_PACKAGES)")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        except Exception as exc:
            pytest.fail(f"headless Chromium could not be launched from {CHROMIUM}: {exc}")
        try:
            yield b
        finally:
            b.close()
