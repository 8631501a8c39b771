"""RapidOCR 3.x (PP-OCRv6 small or tiny, ONNX Runtime) and the row grouping of its boxes.

Runs inside a child process.  Models come from wheels (nothing is
downloaded); the recogniser's last layer is restricted to the Latin script
when the engine loads (``latin.py``); the angle classifier stays off (it flips
good lines); ONNX Runtime runs with one intra-op and one inter-op thread,
since parallelism comes from the pool's processes.
"""

from __future__ import annotations

import itertools
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OcrBox", "OcrLine", "RapidOcrEngine", "group_rows"]

BBox = tuple[float, float, float, float]
Word = tuple[str, float, BBox]  # text, confidence, box (pixels, top-left origin)


@dataclass
class OcrBox:
    """One detected text box: its quadrilateral (pixels), text, score and words (if the engine gives them)."""

    quad: np.ndarray  # shape (4, 2): tl, tr, br, bl
    text: str
    score: float
    words: list[Word] = field(default_factory=list)


@dataclass
class OcrLine:
    text: str
    confidence: float
    bbox: BBox  # pixels, top-left origin
    words: list[Word] = field(default_factory=list)  # empty unless every box of the row had words


# rapidocr used to shrink a whole page to 2,000 px before detection and cropping; now only
# detection is held to it, so line crops of a page rendered larger keep their pixels
DET_MAX_SIDE = 2000
INPUT_MAX_SIDE = 4000


def rapidocr_params(
    det: Path,
    rec: Path,
    threads: int = 1,
    unclip_ratio: float | None = None,
    box_thresh: float | None = None,
) -> dict[str, Any]:
    """The exact RapidOCR configuration we run (config keys of rapidocr 3.10)."""
    params: dict[str, Any] = {
        "Global.use_cls": False,
        "Global.log_level": "error",
        "Det.model_path": str(det),
        "Rec.model_path": str(rec),
        # one line per recognition run: no padding to the widest line of a batch
        # (measured 20% faster than the default batch of 6, same text)
        "Rec.rec_batch_num": 1,
        # the page is cut into line crops at the size it was rendered (up to the pool's
        # 4,000 px cap); detection alone is held to DET_MAX_SIDE (``RapidOcrEngine.recognize``)
        "Global.max_side_len": INPUT_MAX_SIDE,
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": threads,
    }
    if unclip_ratio is not None:
        params["Det.unclip_ratio"] = unclip_ratio
    if box_thresh is not None:
        params["Det.box_thresh"] = box_thresh
    return params


class RapidOcrEngine:
    """A PP-OCRv6 det + rec pair through rapidocr; one instance per child process.

    The recogniser is restricted to Latin-script classes (``latin.py``): the
    derived model lives in a private temporary folder only until both ONNX
    Runtime sessions are built (``warm``), then the folder is removed.
    """

    def __init__(
        self,
        det: Path,
        rec: Path,
        rec_dict: Path | None = None,
        threads: int = 1,
        name: str = "rapidocr",
        unclip_ratio: float | None = None,
        box_thresh: float | None = None,
        latin: bool = True,
        rec_min_width: int = 0,
    ) -> None:
        from rapidocr import RapidOCR

        self.name = name
        self._rec_min_width = rec_min_width
        for path in (det, rec, rec_dict):
            if path is not None and not path.is_file():
                raise RuntimeError(f"rapidocr model missing: {path}")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if latin:
            from contrackt.adapters.ocr.latin import restrict_to_latin

            data, _ = restrict_to_latin(rec, rec_dict)
            self._tmp = tempfile.TemporaryDirectory(prefix="contrackt-model-")
            rec = Path(self._tmp.name) / "rec-latin.onnx"
            rec.write_bytes(data)
        params = rapidocr_params(det, rec, threads, unclip_ratio, box_thresh)
        if not latin and rec_dict is not None:
            params["Rec.rec_keys_path"] = str(rec_dict)
        ocr: Any = RapidOCR(params=params)
        # word boxes: ours interpolate along the detected quad and give each word
        # the mean of its characters' probabilities (rapidocr's pairs words with
        # single characters' probabilities)
        ocr.calc_word_boxes = _word_boxes
        self._ocr = ocr

    def warm(self) -> None:
        """Load both models and run them once so the first page is not slow."""
        img = np.full((96, 320, 3), 255, dtype=np.uint8)
        img[40:56, 40:280] = 0
        self._ocr(img)
        # Detection on a blank image may skip recognition; load it explicitly.
        self._ocr._load_rec_model()
        if self._rec_min_width > 0:
            from contrackt.adapters.ocr.batching import BatchedTextRecognizer, Bucketing

            narrow = Bucketing(max_lines=1, align=1, min_width=self._rec_min_width)
            self._ocr.text_rec = BatchedTextRecognizer(self._ocr.text_rec, narrow)
        if self._tmp is not None:
            self._tmp.cleanup()  # the sessions hold the model now
            self._tmp = None

    def recognize(self, image: np.ndarray, det_scale: float = 1.0) -> list[OcrBox]:
        """Text boxes of ``image``; detection runs on it shrunk by ``det_scale`` (< 1: the text
        is larger than the detector reads best) and never over ``DET_MAX_SIDE``, while the
        recogniser reads line crops cut from ``image`` itself."""
        det = self._ocr.text_det
        side = max(image.shape[:2])
        limit = int(min(DET_MAX_SIDE, side * min(1.0, max(det_scale, 0.05))))
        saved = (det.limit_type, det.limit_side_len) if det is not None else None
        if det is not None and limit < side:
            det.limit_type, det.limit_side_len = "max", max(32, limit)
        try:
            out = self._ocr(image, use_cls=False, return_word_box=True)
        finally:
            if det is not None and saved is not None:
                det.limit_type, det.limit_side_len = saved
        boxes = getattr(out, "boxes", None)
        txts = getattr(out, "txts", None)
        scores = getattr(out, "scores", None)
        if boxes is None or txts is None or scores is None:
            return []
        word_results = getattr(out, "word_results", None) or ()
        if len(word_results) != len(txts):
            word_results = ((),) * len(txts)
        found = (
            _box(quad, text, score, words)
            for quad, text, score, words in zip(boxes, txts, scores, word_results, strict=False)
        )
        return [box for box in found if box is not None]

    def reread(
        self, image: np.ndarray, boxes: list[OcrBox], below: float, helper: RapidOcrEngine, share: float = 0.0
    ) -> list[OcrBox]:
        """``boxes`` with every line scored under ``below`` read again from the same crop by
        ``helper``'s recogniser (the fast profile's tiny model, helped by the default's small
        one where it is unsure), when those lines are at least ``share`` of the page's; a line
        keeps whichever reading scores higher."""
        from rapidocr.utils.process_img import get_rotate_crop_image

        low = [i for i, b in enumerate(boxes) if b.score < below]
        if not low or len(low) < share * len(boxes):
            return boxes
        quads = [boxes[i].quad.astype(np.float32) for i in low]
        crops = [get_rotate_crop_image(image, q.copy()) for q in quads]
        return read_again(boxes, low, quads, crops, helper._ocr.text_rec)


def read_again(
    boxes: list[OcrBox], which: list[int], quads: list[Any], crops: list[Any], recogniser: Any
) -> list[OcrBox]:
    """``boxes`` with box ``which[k]`` replaced by ``recogniser``'s reading of ``crops[k]`` (cut
    along ``quads[k]``, its word boxes laid along that quad) wherever that reading scores higher."""
    from rapidocr.ch_ppocr_rec.typings import TextRecInput

    res = recogniser(TextRecInput(img=crops, return_word_box=True))
    words = _word_boxes(crops, quads, res)
    out = list(boxes)
    for k, i in enumerate(which):
        again = _box(quads[k], res.txts[k], res.scores[k], words[k])
        if again is not None and again.score > out[i].score:
            out[i] = again
    return out


def _box(quad: Any, text: Any, score: Any, words: Any) -> OcrBox | None:
    text = str(text).strip()
    if not text:
        return None
    box = OcrBox(np.asarray(quad, dtype=np.float64), text, float(score), _words(words))
    if " ".join(w[0] for w in box.words) != " ".join(text.split()):
        box.words = []  # word split disagrees with the line: give none rather than wrong ones
    return box


def _word_boxes(crops: Any, quads: Any, rec_res: Any) -> tuple[tuple[tuple[str, float, np.ndarray], ...], ...]:
    """Word boxes from the recogniser's CTC time steps, one tuple per line (stands in for
    ``RapidOCR.calc_word_boxes``).

    Each character is decoded at one time step (column) of the line crop; a
    word spans its first to last character's column, widened by half a column
    on each side, and that fraction of the crop is laid along the detected
    quadrilateral's top and bottom edges.  Confidence: the mean of the word's
    character probabilities.
    """
    out: list[tuple[tuple[str, float, np.ndarray], ...]] = []
    for text, info, quad in zip(rec_res.txts, rec_res.word_results, quads, strict=False):
        q = np.asarray(quad, dtype=np.float64).reshape(4, 2)
        cols = [c for group in (info.word_cols or []) for c in group]
        confs = list(info.confs or [])
        length = float(info.line_txt_len or 0.0)
        words: list[tuple[str, float, np.ndarray]] = []
        k = 0  # index into cols: one column per non-space character
        i = 0  # index into text and confs
        for token in str(text).split(" "):
            if not token:
                i += 1
                continue
            chars = [ch for ch in token if not ch.isspace()]
            span = cols[k : k + len(chars)]
            k += len(chars)
            if length <= 0 or len(span) != len(chars):
                words = []
                break
            f0 = max(0.0, (span[0] - 0.5) / length)
            f1 = min(1.0, (span[-1] + 1.5) / length)
            top0, top1 = q[0] + f0 * (q[1] - q[0]), q[0] + f1 * (q[1] - q[0])
            bot0, bot1 = q[3] + f0 * (q[2] - q[3]), q[3] + f1 * (q[2] - q[3])
            score = float(np.mean(confs[i : i + len(token)])) if confs[i : i + len(token)] else 0.0
            words.append((token, score, np.array([top0, top1, bot1, bot0])))
            i += len(token) + 1
        out.append(tuple(words))
    return tuple(out)


def _words(raw: Any) -> list[Word]:
    """rapidocr's ``(text, score, 4 points)`` word results as axis-aligned boxes."""
    words: list[Word] = []
    for item in raw or ():
        try:
            text, score, points = item
        except (TypeError, ValueError):
            return []
        text = str(text).strip()
        if not text or points is None:
            continue
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        bbox = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
        words.append((" ".join(text.split()), float(score), bbox))
    return words


# --------------------------------------------------------------------------- rows

_DEGREE_ORDINAL = re.compile(r"(?<=[0-9A-Za-z])°(?![CFK]\b)")
# "RS" right before an amount written the Brazilian way (1.234,56): the real sign
_REAL_SIGN = re.compile(r"\bRS(?= ?\d{1,3}(?:\.\d{3})*,\d{2}(?!\d))")


def fix_text(text: str) -> str:
    """Small, safe corrections of systematic recognition slips.

    PP-OCR reads the ordinal indicator (``nº``, ``3º``) as a degree sign;
    Portuguese documents use the ordinal far more often than degrees, so a
    degree sign glued to a letter or digit (and not a temperature unit) becomes º.
    PP-OCRv6 tiny reads ``R$`` as ``RS``; an ``RS`` directly followed by an
    amount with centavos (``RS 1.234,56``) is the real sign, not the state of
    Rio Grande do Sul (whose abbreviation is not followed by money).
    """
    return _REAL_SIGN.sub("R$", _DEGREE_ORDINAL.sub("º", text))


@dataclass
class _Item:
    box: OcrBox
    x0: float
    x1: float
    yc: float  # deskewed centre
    h: float
    bounds: BBox


def _skew(boxes: list[OcrBox]) -> float:
    """Median slope of long boxes' top and bottom edges (radians)."""
    angles: list[float] = []
    for b in boxes:
        q = b.quad
        w = float(np.hypot(*(q[1] - q[0])))
        h = float(np.hypot(*(q[3] - q[0])))
        if h <= 0 or w < 3 * h:
            continue
        for a, c in ((q[0], q[1]), (q[3], q[2])):
            dx, dy = float(c[0] - a[0]), float(c[1] - a[1])
            if dx > 0:
                angles.append(math.atan2(dy, dx))
    if not angles:
        return 0.0
    angle = float(np.median(angles))
    return angle if abs(angle) < math.radians(10) else 0.0


def group_rows(boxes: list[OcrBox], columns: bool = True, correct: bool = True) -> list[OcrLine]:
    """Regroup detected boxes into printed lines in reading order.

    Boxes whose (deskewed) vertical centres agree are one row, read left to
    right; rows go top to bottom.  With ``columns``, a run of rows split by a
    clear vertical gutter into two sides that each look like running text
    (lines filling their column) is read column by column; tables and forms,
    whose cells do not fill their columns, stay row by row.
    """
    if not boxes:
        return []
    angle = _skew(boxes)
    cos, sin = math.cos(-angle), math.sin(-angle)
    items: list[_Item] = []
    for b in boxes:
        q = b.quad
        xs, ys = q[:, 0], q[:, 1]
        # rotate into the deskewed frame
        rx = xs * cos - ys * sin
        ry = xs * sin + ys * cos
        h = float(np.hypot(*(q[3] - q[0])) + np.hypot(*(q[2] - q[1]))) / 2
        items.append(
            _Item(
                box=b,
                x0=float(rx.min()),
                x1=float(rx.max()),
                yc=float(ry.mean()),
                h=max(h, 1.0),
                bounds=(float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())),
            )
        )
    rows = _rows(items)
    if columns:
        rows = _columns(rows, depth=2)
    return [_line(row, correct) for row in rows]


def _rows(items: list[_Item]) -> list[list[_Item]]:
    items = sorted(items, key=lambda it: it.yc)
    rows: list[list[_Item]] = []
    for it in items:
        target: list[_Item] | None = None
        # only the last few rows can hold a box this low
        for row in reversed(rows[-4:]):
            ryc = sum(r.yc for r in row) / len(row)
            rh = sum(r.h for r in row) / len(row)
            if abs(it.yc - ryc) <= 0.5 * min(it.h, rh) and not any(
                min(it.x1, r.x1) - max(it.x0, r.x0) > 0.3 * min(it.x1 - it.x0, r.x1 - r.x0) for r in row
            ):
                target = row
                break
        if target is None:
            rows.append([it])
        else:
            target.append(it)
    rows.sort(key=lambda row: sum(r.yc for r in row) / len(row))
    for row in rows:
        row.sort(key=lambda r: r.x0)
    return rows


# A gutter is at least this many text heights wide; a run of rows is read as two
# columns when at least MIN_COLUMN_ROWS rows have text on both sides and the
# median line on each side fills at least MIN_FILL of its column's width, each
# side is mostly letters and its lines have no gutters of their own.
MIN_GUTTER_H = 0.7
MIN_COLUMN_ROWS = 4
MIN_FILL = 0.75
MIN_LETTERS = 0.6  # share of letters among a side's characters (running text)


def _free(row: list[_Item], lo: float, hi: float, gaps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The parts of ``gaps`` no item of ``row`` crosses."""
    out = []
    for g0, g1 in gaps:
        cuts = [(g0, g1)]
        for it in row:
            nxt = []
            for c0, c1 in cuts:
                if it.x1 <= c0 or it.x0 >= c1:
                    nxt.append((c0, c1))
                    continue
                if it.x0 > c0:
                    nxt.append((c0, it.x0))
                if it.x1 < c1:
                    nxt.append((it.x1, c1))
            cuts = nxt
        out.extend(cuts)
    return out


def _columns(rows: list[list[_Item]], depth: int) -> list[list[_Item]]:
    """Rows in reading order, runs of two-column text read column by column."""
    if depth <= 0 or len(rows) < MIN_COLUMN_ROWS:
        return rows
    heights = sorted(it.h for row in rows for it in row)
    h = heights[len(heights) // 2]
    out: list[list[_Item]] = []
    i = 0
    while i < len(rows):
        run = _column_run(rows, i, h)
        if run is None:
            out.append(rows[i])
            i += 1
            continue
        stop, gutter = run
        block = [it for row in rows[i:stop] for it in row]
        left = _rows([it for it in block if it.x1 <= gutter])
        right = _rows([it for it in block if it.x0 >= gutter])
        out.extend(_columns(left, depth - 1))
        out.extend(_columns(right, depth - 1))
        i = stop
    return out


def _column_run(rows: list[list[_Item]], start: int, h: float) -> tuple[int, float] | None:
    """(end of the run, gutter x) of a two-column run starting at ``start``, if any."""
    first = rows[start]
    if len(first) < 2:
        return None
    lo = min(it.x0 for row in rows for it in row)
    hi = max(it.x1 for row in rows for it in row)
    gaps = [g for g in _free(first, lo, hi, [(first[0].x1, first[-1].x0)]) if g[1] - g[0] >= MIN_GUTTER_H * h]
    if not gaps:
        return None
    best: tuple[int, float] | None = None
    stop = start + 1
    while stop < len(rows):
        nxt = [g for g in _free(rows[stop], lo, hi, gaps) if g[1] - g[0] >= MIN_GUTTER_H * h]
        if not nxt:
            break
        gaps = nxt
        stop += 1
    for g0, g1 in gaps:
        gutter = (g0 + g1) / 2
        if _looks_like_columns(rows[start:stop], gutter, h):
            best = (stop, gutter)
            break
    return best


def _looks_like_columns(rows: list[list[_Item]], gutter: float, h: float) -> bool:
    both = [row for row in rows if row[0].x1 <= gutter <= row[-1].x0]
    if len(both) < MIN_COLUMN_ROWS:
        return False
    for side in (
        [[it for it in row if it.x1 <= gutter] for row in rows],
        [[it for it in row if it.x0 >= gutter] for row in rows],
    ):
        lines = [s for s in side if s]
        text = "".join(it.box.text for s in lines for it in s)
        if sum(ch.isalpha() for ch in text) < MIN_LETTERS * max(1, len(text.replace(" ", ""))):
            return False  # figures: a table's columns
        split = sum(any(b.x0 - a.x1 > MIN_GUTTER_H * h for a, b in itertools.pairwise(s)) for s in lines)
        if split > 0.3 * len(lines):
            return False  # cells with gutters of their own: a table
        x0 = min(it.x0 for s in lines for it in s)
        x1 = max(it.x1 for s in lines for it in s)
        width = x1 - x0
        if width <= 0:
            return False
        fills = sorted((max(it.x1 for it in s) - min(it.x0 for it in s)) / width for s in lines)
        if fills[len(fills) // 2] < MIN_FILL:
            return False
    return True


def _line(row: list[_Item], correct: bool = True) -> OcrLine:
    raw = " ".join(r.box.text for r in row)
    text = fix_text(raw) if correct else raw
    weight = sum(len(r.box.text) for r in row) or 1
    conf = sum(r.box.score * len(r.box.text) for r in row) / weight
    x0 = min(r.bounds[0] for r in row)
    y0 = min(r.bounds[1] for r in row)
    x1 = max(r.bounds[2] for r in row)
    y1 = max(r.bounds[3] for r in row)
    words: list[Word] = []
    if all(r.box.words for r in row):
        words = [w for r in row for w in r.box.words]
        # fix_text never adds or removes whitespace, so the corrected line splits
        # into the same words: each word carries its corrected spelling
        tokens = text.split()
        if len(tokens) == len(words):
            words = [(tok, conf_w, box) for tok, (_, conf_w, box) in zip(tokens, words, strict=True)]
        else:
            words = []
    return OcrLine(text, conf, (x0, y0, x1, y1), words)
