"""A small Server-Sent Events parser (the subset the API sends: ``event``, ``data``, comments)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]


class EventParser:
    """Feed it lines (without their line ending); it returns each event once its blank line arrives."""

    def __init__(self) -> None:
        self._name = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if not line:
            if not self._data:
                self._name = "message"
                return None
            raw = "\n".join(self._data)
            name, self._name, self._data = self._name, "message", []
            try:
                data = json.loads(raw)
            except ValueError:
                data = {"raw": raw}
            return Event(name, data if isinstance(data, dict) else {"value": data})
        if line.startswith(":"):
            return None  # a comment (the API's keep-alive)
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        return None
