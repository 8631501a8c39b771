"""Extraction result model (the JSON of DESIGN.md §5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PageSource = Literal["text_layer", "ocr"]
PAGE_SEPARATOR = "\n\f\n"


def clean_text(text: str) -> str:
    """Text safe to encode as UTF-8: PDF text layers can yield unpaired UTF-16
    surrogates (broken ToUnicode maps); pairs are joined, lone ones become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@dataclass
class Word:
    text: str
    confidence: float
    bbox: tuple[float, float, float, float]  # PDF points, origin top-left

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "confidence": round(self.confidence, 4),
            "bbox": [round(v, 2) for v in self.bbox],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Word:
        return cls(text=clean_text(d["text"]), confidence=float(d["confidence"]), bbox=tuple(d["bbox"]))


@dataclass
class Line:
    text: str
    confidence: float
    bbox: tuple[float, float, float, float]  # PDF points, origin top-left
    # OCR engines that give word boxes (rapidocr, tesseract); absent for text-layer lines
    words: list[Word] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": self.text,
            "confidence": round(self.confidence, 4),
            "bbox": [round(v, 2) for v in self.bbox],
        }
        if self.words:
            out["words"] = [w.to_dict() for w in self.words]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Line:
        return cls(
            text=clean_text(d["text"]),
            confidence=float(d["confidence"]),
            bbox=tuple(d["bbox"]),
            words=[Word.from_dict(w) for w in d.get("words") or []],
        )


@dataclass
class Page:
    number: int
    source: PageSource
    text: str
    confidence: float
    lines: list[Line] = field(default_factory=list)
    zoom: float | None = None
    rotation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "source": self.source,
            "zoom": self.zoom,
            "rotation": self.rotation,
            "confidence": round(self.confidence, 4),
            "text": self.text,
            "lines": [ln.to_dict() for ln in self.lines],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Page:
        return cls(
            number=int(d["number"]),
            source=d["source"],
            text=clean_text(d["text"]),
            confidence=float(d["confidence"]),
            lines=[Line.from_dict(ln) for ln in d.get("lines", [])],
            zoom=d.get("zoom"),
            rotation=int(d.get("rotation", 0)),
        )


@dataclass
class ExtractionResult:
    pages: list[Page]
    engine: str | None = None
    # Active content found in the document and never run: "javascript", "launch_action",
    # "embedded_files". Reported so a client can treat such a file with suspicion.
    active_content: list[str] = field(default_factory=list)
    # The searchable PDF (tenant data, opaque bytes), when one was asked for and could be built
    searchable_pdf: bytes | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        """The whole document: pages separated by a form feed on its own line."""
        return PAGE_SEPARATOR.join(p.text for p in self.pages)

    @property
    def confidence_avg(self) -> float:
        if not self.pages:
            return 0.0
        return sum(p.confidence for p in self.pages) / len(self.pages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "pages": [p.to_dict() for p in self.pages],
            "confidence_avg": round(self.confidence_avg, 4),
            "active_content": list(self.active_content),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtractionResult:
        return cls(
            pages=[Page.from_dict(p) for p in d["pages"]],
            engine=d.get("engine"),
            active_content=list(d.get("active_content", [])),
        )
