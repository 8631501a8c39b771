"""Recognition of many text-line crops at once: batches bucketed by width, each line cut at its own width.

A PP-OCR recogniser reads a crop scaled to 48 px high and gives one class
distribution per ``stride`` (8) pixel columns: a CTC sequence.  Several lines in
one tensor must share a width, so the narrower ones are padded with zeros on
the right; the time steps over that padding are not part of the line and, read
as text, add characters that are not there.  Here every line's output is cut at
its own valid width (``steps = ceil(width / stride)``) *before* decoding, and
lines are sorted by width and grouped into buckets whose widths differ by little,
so that padding is small as well as ignored.

The model runs behind :class:`LineRunner` (a batch in, arg-max classes and their
probabilities out), so the same batching, cutting and decoding serve ONNX
Runtime on a CPU (:class:`OrtLineRunner`) and a GPU backend that takes the
arg-max on the device.  :class:`BatchedTextRecognizer` plugs it into rapidocr's
pipeline in place of its one-line-at-a-time recogniser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from contrackt.adapters.ocr.pixels import REC_TABLE, Pixels, rec_codes, rec_scale

REC_HEIGHT = 48
# rapidocr (PaddleOCR) pads every line to at least 320 px (a 48 x 320 input): the
# recogniser was trained that way, and a narrow line read without that padding
# reads differently (measured: bench.ocr.batching --min-width 64)
PADDLE_MIN_WIDTH = 320


class LineRunner(Protocol):
    """A recogniser model: ``(N, 3, 48, W)`` float32 in, ``(N, T)`` arg-max class ids and their
    probabilities out (``T`` = ``W / stride``, rounded). A runner with ``takes_pixels = True``
    is given :class:`~contrackt.adapters.ocr.pixels.Pixels` instead of floats."""

    stride: int

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class OrtLineRunner:
    """A PP-OCR recogniser through an ONNX Runtime session (CPU)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input = session.get_inputs()[0].name
        probe = session.run(None, {self.input: np.zeros((1, 3, REC_HEIGHT, 320), np.float32)})[0]
        self.stride = max(1, round(320 / probe.shape[1]))

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs = self.session.run(None, {self.input: batch})[0]
        return probs.argmax(axis=2), probs.max(axis=2)


def with_argmax(model: bytes) -> bytes:
    """The recogniser with its class distribution reduced in the graph: outputs ``ids`` (arg-max,
    int64) and ``probs`` (max), ``(N, T)`` each. On a GPU this is what crosses to the host (the
    probe in issue 13: copying the 18,710-class output back made recognition 10x slower)."""
    import onnx
    from onnx import helper

    graph_model = onnx.load_from_string(model)
    graph = graph_model.graph
    scores = graph.output[0].name
    opset = max(o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx"))
    graph.node.append(helper.make_node("ArgMax", [scores], ["ids"], axis=2, keepdims=0))
    if opset >= 18:
        axes = helper.make_tensor("reduce_axes", onnx.TensorProto.INT64, [1], [2])
        graph.initializer.append(axes)
        graph.node.append(helper.make_node("ReduceMax", [scores, "reduce_axes"], ["probs"], keepdims=0))
    else:
        graph.node.append(helper.make_node("ReduceMax", [scores], ["probs"], axes=[2], keepdims=0))
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, None),
            helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, None),
        ]
    )
    return bytes(graph_model.SerializeToString())


class ArgMaxLineRunner:
    """A recogniser session built from :func:`with_argmax` (any ONNX Runtime provider: CPU here,
    ``CUDAExecutionProvider`` in ``bench/gpu``)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input = session.get_inputs()[0].name
        ids, _ = self(np.zeros((1, 3, REC_HEIGHT, 320), np.float32))
        self.stride = max(1, round(320 / ids.shape[1]))

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids, probs = self.session.run(["ids", "probs"], {self.input: batch})
        return ids, probs


def scaled_width(crop: np.ndarray, height: int = REC_HEIGHT) -> int:
    """The width of ``crop`` scaled to ``height``, rounded as rapidocr rounds a line read on its own
    (up below 320 px, down above): a pixel more or less changes a borderline character."""
    h, w = crop.shape[:2]
    exact = height * w / max(h, 1)
    return max(1, int(exact) if exact > PADDLE_MIN_WIDTH else math.ceil(exact))


def normalise(crop: np.ndarray, width: int, height: int = REC_HEIGHT) -> np.ndarray:
    """``crop`` (H x W x 3, uint8) resized to ``height`` x ``width`` and scaled to [-1, 1], CHW."""
    return rec_scale(rec_codes(crop, width, height))


@dataclass(frozen=True)
class Bucketing:
    """How lines are grouped: at most ``max_lines`` a batch and ``max_pixels`` of input (lines x
    width x 48). Widths are rounded up to ``align`` pixels and at least ``min_width``; a batch is
    cut where the next line's rounded width exceeds ``max_growth`` times its first (narrowest)
    line's. Lines up to ``min_width`` share batches of exactly that width (as PaddleOCR pads
    them alone); wider ones are padded by less than ``align`` pixels with the default growth
    of 1.0. Padding a wide line still changes text now and then, cut or not (the SVTR neck
    attends over the whole width, padding included): measured with ``bench.ocr.batching``,
    growth 1.25 -> 95% of lines the same, 1.05 -> 98.6%, 1.0 with align 8 -> 99.5% (the
    whole corpus), identical widths only (align 1) -> 100% of a 143-line sample (ADR 0017)."""

    max_lines: int = 16
    max_pixels: int = 16 * 48 * 1200
    max_growth: float = 1.0
    align: int = 8
    min_width: int = PADDLE_MIN_WIDTH


def plan(widths: Sequence[int], bucketing: Bucketing) -> list[tuple[list[int], int]]:
    """Batches of line indices (narrow to wide) with the padded width each runs at."""
    order = sorted(range(len(widths)), key=lambda i: widths[i])
    batches: list[tuple[list[int], int]] = []
    current: list[int] = []

    def padded(width: int) -> int:
        width = max(width, bucketing.min_width)
        return -(-width // bucketing.align) * bucketing.align

    for i in order:
        if current:
            first = widths[current[0]]
            width = padded(widths[i])
            if (
                len(current) >= bucketing.max_lines
                or (widths[i] > bucketing.min_width) != (first > bucketing.min_width)
                or width > bucketing.max_growth * padded(first)
                or (len(current) + 1) * width * REC_HEIGHT > bucketing.max_pixels
            ):
                batches.append((current, padded(widths[current[-1]])))
                current = []
        current.append(i)
    if current:
        batches.append((current, padded(widths[current[-1]])))
    return batches


def valid_steps(width: int, stride: int) -> int:
    """Time steps the recogniser gives a line ``width`` pixels wide read on its own: its
    down-sampling rounds half a stride down (PP-OCRv6 small: 100 px -> 12, 101 px -> 13)."""
    return max(1, (width + stride // 2 - 1) // stride)


@dataclass
class LineReading:
    """One line's CTC reading, cut at its own width: the class id and probability per kept time step."""

    ids: np.ndarray  # (steps,)
    probs: np.ndarray  # (steps,)
    steps: float  # the line's unpadded width in time steps (fractional)


def recognise(crops: Sequence[np.ndarray], runner: LineRunner, bucketing: Bucketing = Bucketing()) -> list[LineReading]:
    """Read every crop (H x W x 3, uint8) in width-bucketed batches; one reading per crop, in order."""
    widths = [scaled_width(c) for c in crops]
    out: list[LineReading | None] = [None] * len(crops)
    plans = plan(widths, bucketing)
    pixels = getattr(runner, "takes_pixels", False)
    batches: list[Any] = []
    for members, width in plans:
        if pixels:  # uint8, normalised where the model runs (to the same floats)
            codes = np.zeros((len(members), 3, REC_HEIGHT, width), dtype=np.uint8)
            valid = np.empty(len(members), np.int64)
            for row, i in enumerate(members):
                valid[row] = w = min(widths[i], width)
                codes[row, :, :, :w] = rec_codes(crops[i], w, REC_HEIGHT)
            batches.append(Pixels(codes, valid, REC_TABLE))
            continue
        batch = np.zeros((len(members), 3, REC_HEIGHT, width), dtype=np.float32)
        for row, i in enumerate(members):
            w = min(widths[i], width)
            batch[row, :, :, :w] = normalise(crops[i], w)
        batches.append(batch)
    # a runner that can take them all at once (the GPU batcher) gets them together
    run_many = getattr(runner, "run_many", None)
    outputs = run_many(batches) if run_many is not None else [runner(b) for b in batches]
    for (members, width), (ids, probs) in zip(plans, outputs, strict=True):
        for row, i in enumerate(members):
            w = min(widths[i], width)
            # a line narrower than min_width is read as PaddleOCR reads it alone: with its padding
            # up to min_width (what it was trained on); a wider one only up to its own width
            steps = min(ids.shape[1], valid_steps(max(w, bucketing.min_width), runner.stride))
            out[i] = LineReading(ids[row, :steps], probs[row, :steps], w / runner.stride)
    return [r for r in out if r is not None]


def decode(reading: LineReading, characters: Sequence[str]) -> tuple[str, float]:
    """CTC greedy decoding (PaddleOCR's): merge repeats, drop blanks (class 0); the score is the
    mean probability of the kept steps (0 for an empty line)."""
    ids = reading.ids
    keep = np.ones(len(ids), dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]
    keep &= ids != 0
    text = "".join(characters[k] for k in ids[keep])
    score = float(np.mean(reading.probs[keep])) if keep.any() else 0.0
    return text, round(score, 5)


class BatchedTextRecognizer:
    """Stands in for rapidocr's ``TextRecognizer``: the same inputs and outputs (texts, scores and the
    per-character columns the word boxes are built from), read in width-bucketed batches."""

    def __init__(self, inner: Any, bucketing: Bucketing = Bucketing(), runner: LineRunner | None = None) -> None:
        self.inner = inner  # rapidocr's TextRecognizer: its session and CTC decoder
        self.decoder = inner.postprocess_op
        # the model: rapidocr's own ONNX Runtime session unless another runner (the GPU's) is given
        self.runner: LineRunner = runner if runner is not None else OrtLineRunner(inner.session.session)
        self.bucketing = bucketing

    def __call__(self, args: Any) -> Any:
        import time

        from rapidocr.ch_ppocr_rec.typings import TextRecOutput

        started = time.perf_counter()
        crops = [args.img] if isinstance(args.img, np.ndarray) else list(args.img)
        readings = recognise(crops, self.runner, self.bucketing)
        txts: list[str] = []
        scores: list[float] = []
        words: list[Any] = []
        for reading in readings:
            lines, _ = self.decoder.decode(reading.ids[None, :], reading.probs[None, :], remove_duplicate=True)
            text, score = lines[0]
            txts.append(text)
            scores.append(score)
            if args.return_word_box:
                keep = np.ones(len(reading.ids), dtype=bool)
                keep[1:] = reading.ids[1:] != reading.ids[:-1]
                for token in self.decoder.get_ignored_tokens():
                    keep &= reading.ids != token
                info = self.decoder.get_word_info(text, keep)
                info.line_txt_len = reading.steps
                confs = [round(float(c), 5) for c in reading.probs[keep]]
                info.confs = confs or [0]
                words.append(info)
            else:
                words.append(None)
        return TextRecOutput(
            imgs=crops,
            txts=tuple(txts),  # type: ignore[arg-type]  # rapidocr annotates a 1-tuple
            scores=scores,
            word_results=tuple(words),
            elapse=time.perf_counter() - started,
            viser=getattr(self.inner, "viser", None),
        )
