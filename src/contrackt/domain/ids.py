"""Identifiers."""

from __future__ import annotations

import uuid


def new_id() -> str:
    """A random (v4) UUID in its canonical text form."""
    return str(uuid.uuid4())


def parse_id(value: str) -> str | None:
    """Canonical UUID text for ``value``, or None when it is not a UUID."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None
