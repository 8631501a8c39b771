"""Page selections (``pages=1-3,7``): parsing, the canonical form, expansion (pure)."""

from __future__ import annotations

import re

from contrackt.domain.errors import InvalidRequest

MAX_SPEC_CHARS = 1000
_PART = re.compile(r"^\s*(\d{1,9})\s*(?:-\s*(\d{1,9})\s*)?$")


def parse_pages(spec: str, max_page: int) -> tuple[tuple[int, int], ...]:
    """``"1-3,7"`` as sorted, merged, inclusive ranges of 1-based page numbers.

    Raises ``InvalidRequest`` (422) for an empty or malformed selection, a range that runs
    backwards, page 0, or a page above ``max_page`` (the deployment's page cap: no document
    it accepts has such a page).
    """
    if not spec.strip() or len(spec) > MAX_SPEC_CHARS:
        raise InvalidRequest("pages must list page numbers and ranges, e.g. pages=1-3,7")
    ranges: list[tuple[int, int]] = []
    for part in spec.split(","):
        match = _PART.match(part)
        if match is None:
            raise InvalidRequest(f"pages: {part.strip()[:20]!r} is not a page number or a range like 2-5")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if first < 1 or last < first:
            raise InvalidRequest(f"pages: {first}-{last} is not a range of pages counted from 1")
        if last > max_page:
            raise InvalidRequest(f"pages: page {last} is beyond the limit of {max_page} pages a document may have")
        ranges.append((first, last))
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)


def format_pages(ranges: tuple[tuple[int, int], ...]) -> str:
    """The canonical text of a selection: ``((1, 3), (7, 7))`` -> ``"1-3,7"``."""
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def expand_pages(spec: str) -> tuple[int, ...]:
    """The page numbers of a canonical selection (as stored with a job), ascending."""
    numbers: list[int] = []
    for first, last in parse_pages(spec, 1 << 30):
        numbers.extend(range(first, last + 1))
    return tuple(numbers)
