"""Markdown from an extraction result: paragraphs, headings and tables read from the layout.

Pure code on the validated result (its lines, line boxes and word boxes), run by
the worker when a job completes; the markdown is stored beside the JSON and the
text, as one more part of the result object.

- **Pages** start with ``<!-- page N -->`` (N is the page's number in the
  document, so a page selection keeps its numbers); the comment is invisible
  when rendered and lets a program split the pages again.
- **Tables**: a run of at least ``MIN_TABLE_ROWS`` consecutive lines, each split
  by wide gaps between words (wider than ``CELL_GAP`` times the line's word
  height) into at least two cells, whose cells fall into common columns (cells
  of different rows overlap horizontally; no row has two cells in one column),
  becomes a pipe table; its first row is the header.
- **Headings**: a line much taller than the page's typical line
  (``HEADING_SIZE``) is ``#``; a short line in capitals (``CAPS_SHARE`` of its
  letters, at least two words, not ending like a sentence or a list item) is
  ``##``.
- **Paragraphs**: consecutive lines are joined until a wider vertical gap, a
  line that stops well short of the text's right edge, or a line that starts
  with a clause or list marker (``1.2.``, ``a)``, ``§``, ``-``).
"""

from __future__ import annotations

import itertools
import re
import statistics
from dataclasses import dataclass

from contrackt.domain.results import ExtractionResult, Line, Page

MIN_TABLE_ROWS = 3
CELL_GAP = 1.0  # a gap between words wider than this many word heights separates cells
HEADING_SIZE = 1.3  # a line this many times taller than the page's median line is a title
CAPS_SHARE = 0.8
MAX_HEADING_WORDS = 12
MIN_HEADING_LETTERS = 6
PARAGRAPH_GAP = 0.3  # extra space (in line heights) above a line that starts a paragraph
SHORT_LINE = 0.8  # a line ending before this share of the text width ends its paragraph

_MARKER = re.compile(r"^(?:\d{1,3}(?:\.\d{1,3})*[.)]|[a-zA-Z][.)]|§|[-–•*]|cláusula|art\.)\s", re.IGNORECASE)
_ORDERED = re.compile(r"^(\d{1,9})([.)])(\s|$)")
_INLINE = re.compile(r"([\\`*_\[\]<>|])")


@dataclass
class _Row:
    line: Line
    cells: list[tuple[str, float, float]]  # text, x0, x1


def render_markdown(result: ExtractionResult) -> str:
    """The whole document as markdown (pages separated by a blank line and a page comment)."""
    return "\n\n".join(_page(page) for page in result.pages) + "\n"


def _page(page: Page) -> str:
    blocks = [f"<!-- page {page.number} -->"]
    lines = [ln for ln in page.lines if ln.text.strip()]
    if not lines:
        return blocks[0]
    heights = [ln.bbox[3] - ln.bbox[1] for ln in lines]
    median_height = statistics.median(heights) or 1.0
    left = min(ln.bbox[0] for ln in lines)
    right = max(ln.bbox[2] for ln in lines)
    gaps = [b.bbox[1] - a.bbox[3] for a, b in itertools.pairwise(lines)]
    usual_gap = statistics.median(gaps) if gaps else 0.0
    rows = [_Row(ln, _cells(ln)) for ln in lines]
    paragraph: list[str] = []
    previous: Line | None = None

    def flush() -> None:
        if paragraph:
            blocks.append(_escape_block(_join(paragraph)))
            paragraph.clear()

    i = 0
    while i < len(rows):
        table = _table_at(rows, i)
        if table is not None:
            flush()
            blocks.append(_pipe_table(rows[i:table]))
            previous = rows[table - 1].line
            i = table
            continue
        line = rows[i].line
        level = _heading(line, median_height)
        if level:
            flush()
            blocks.append("#" * level + " " + _escape_inline(" ".join(line.text.split())))
        else:
            starts = (
                previous is None
                or not paragraph
                or line.bbox[1] - previous.bbox[3] > usual_gap + PARAGRAPH_GAP * median_height
                or previous.bbox[2] < left + SHORT_LINE * (right - left)
                or _MARKER.match(line.text.lstrip()) is not None
            )
            if starts:
                flush()
            paragraph.append(" ".join(line.text.split()))
        previous = line
        i += 1
    flush()
    return "\n\n".join(blocks)


# ----------------------------------------------------------------------------- tables


def _cells(line: Line) -> list[tuple[str, float, float]]:
    """The line split at wide gaps between its words (one cell when it has no word boxes)."""
    words = [w for w in line.words if w.text.strip()]
    if len(words) < 2:
        return [(line.text, line.bbox[0], line.bbox[2])]
    height = statistics.median(w.bbox[3] - w.bbox[1] for w in words)
    cells: list[tuple[str, float, float]] = []
    current = [words[0]]
    for word in words[1:]:
        if word.bbox[0] - current[-1].bbox[2] > CELL_GAP * height:
            cells.append((" ".join(w.text for w in current), current[0].bbox[0], current[-1].bbox[2]))
            current = []
        current.append(word)
    cells.append((" ".join(w.text for w in current), current[0].bbox[0], current[-1].bbox[2]))
    return cells


def _table_at(rows: list[_Row], start: int) -> int | None:
    """The end of a table starting at ``start`` (exclusive), or None."""
    end = start
    while end < len(rows) and len(rows[end].cells) >= 2:
        end += 1
    if end - start < MIN_TABLE_ROWS or _columns(rows[start:end]) is None:
        return None
    return end


def _columns(rows: list[_Row]) -> list[list[float]] | None:
    """Columns (x ranges) shared by the rows' cells; None unless each row has at most one cell a column."""
    spans = sorted((x0, x1) for row in rows for _, x0, x1 in row.cells)
    columns: list[list[float]] = []
    for x0, x1 in spans:
        if columns and x0 <= columns[-1][1]:
            columns[-1][1] = max(columns[-1][1], x1)
        else:
            columns.append([x0, x1])
    if len(columns) < 2:
        return None
    for row in rows:
        used = [_column_of(columns, x0, x1) for _, x0, x1 in row.cells]
        if len(set(used)) != len(used):
            return None
    return columns


def _column_of(columns: list[list[float]], x0: float, x1: float) -> int:
    return next(k for k, (c0, c1) in enumerate(columns) if x0 >= c0 and x1 <= c1)


def _pipe_table(rows: list[_Row]) -> str:
    columns = _columns(rows)
    assert columns is not None  # _table_at checked it
    grid = []
    for row in rows:
        cells = [""] * len(columns)
        for text, x0, x1 in row.cells:
            cells[_column_of(columns, x0, x1)] = _escape_inline(" ".join(text.split()))
        grid.append(cells)
    # a form (every first cell a label ending in ":") has no header row of its own
    header = [""] * len(columns) if all(row[0].endswith(":") for row in grid) else grid.pop(0)
    out = [header, ["---"] * len(columns), *grid]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in out)


# ----------------------------------------------------------------------------- headings and text


def _heading(line: Line, median_height: float) -> int:
    """1 (a title, by its size), 2 (a short line in capitals) or 0."""
    text = " ".join(line.text.split())
    words = text.split()
    if not words or len(words) > MAX_HEADING_WORDS:
        return 0
    letters = [ch for ch in text if ch.isalpha()]
    if len(letters) < MIN_HEADING_LETTERS or text[-1] in ".,;" or ", " in text:
        return 0  # sentences and enumerations are not headings
    if line.bbox[3] - line.bbox[1] >= HEADING_SIZE * median_height:
        return 1
    capitals = sum(ch.isupper() for ch in letters) / len(letters)
    alphabetic_words = sum(any(ch.isalpha() for ch in w) for w in words)
    if capitals >= CAPS_SHARE and alphabetic_words >= 2 and text[-1] != ":":
        return 2
    return 0


def _join(lines: list[str]) -> str:
    """Lines of one paragraph as one: a line ending with a hyphen joins the next without a space."""
    out = lines[0]
    for line in lines[1:]:
        out += line if out.endswith("-") and line[:1].islower() else " " + line
    return out


def _escape_inline(text: str) -> str:
    return _INLINE.sub(r"\\\1", text)


def _escape_block(text: str) -> str:
    """A paragraph that markdown will not read as a heading, list, quote or code."""
    text = _escape_inline(text)
    text = _ORDERED.sub(r"\1\\\2\3", text)
    if text[:1] in "#+-=>":
        text = "\\" + text
    return text
