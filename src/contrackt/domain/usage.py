"""Usage per tenant and UTC day (pure): the counters a finished job adds, and the daily report.

A counter is a ``metric`` name and a total for one tenant and one day:

* ``pages.<source>``: pages of completed jobs, by where their text came from
  (``text_layer``, ``ocr``; ``unknown`` for jobs finished before usage was counted);
* ``jobs.completed``;
* ``jobs.failed.<code>``: failed jobs by their error code (``corrupt_pdf``, ``cancelled`` ...).

The day is the UTC date on which the job became terminal (its ``completed_at``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

PAGES = "pages."
COMPLETED = "jobs.completed"
FAILED = "jobs.failed."
PAGE_SOURCES = ("text_layer", "ocr")  # always in the report, even at zero
MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30


def usage_day(at: datetime) -> date:
    """The UTC day a moment belongs to."""
    return at.astimezone(UTC).date()


def completed_counts(page_sources: Iterable[str]) -> dict[str, int]:
    """What one completed job adds: the job, and each of its pages under its source."""
    counts = {COMPLETED: 1}
    for source in page_sources:
        counts[PAGES + source] = counts.get(PAGES + source, 0) + 1
    return counts


def failed_counts(code: str | None, jobs: int = 1) -> dict[str, int]:
    """What ``jobs`` failed jobs with error ``code`` add."""
    return {FAILED + (code or "unknown"): jobs}


@dataclass
class UsageDay:
    day: date
    pages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PAGE_SOURCES, 0))
    completed: int = 0
    failed: dict[str, int] = field(default_factory=dict)

    def add(self, metric: str, total: int) -> None:
        if metric == COMPLETED:
            self.completed += total
        elif metric.startswith(PAGES):
            source = metric[len(PAGES) :]
            self.pages[source] = self.pages.get(source, 0) + total
        elif metric.startswith(FAILED):
            code = metric[len(FAILED) :]
            self.failed[code] = self.failed.get(code, 0) + total

    def to_dict(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "pages": {**self.pages, "total": sum(self.pages.values())},
            "jobs": {
                "completed": self.completed,
                "failed": sum(self.failed.values()),
                "failed_by_code": dict(sorted(self.failed.items())),
            },
        }


def check_range(start: date, end: date) -> None:
    """Raise ValueError (with a message for the client) unless ``start..end`` is a valid range."""
    if start > end:
        raise ValueError("'from' must not be after 'to'")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise ValueError(f"at most {MAX_RANGE_DAYS} days per request")


def daily_report(rows: Iterable[tuple[date, str, int]], start: date, end: date) -> tuple[list[UsageDay], UsageDay]:
    """Every day of ``start..end`` (zeros included, oldest first) and the range's totals."""
    days = [UsageDay(start + timedelta(days=i)) for i in range((end - start).days + 1)]
    totals = UsageDay(start)
    for day, metric, total in rows:
        if start <= day <= end:
            days[(day - start).days].add(metric, total)
            totals.add(metric, total)
    return days, totals
