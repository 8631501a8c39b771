"""Recognition in width-bucketed batches (``batching.py``): padding never changes a line's text.

The model-free tests use a stand-in recogniser that *reads padding as text* (every
all-zero column block becomes an ``x``), so any padded step that reached the decoder
would show. The parity test runs the real PP-OCRv6 small recogniser (ONNX Runtime,
CPU) on the engine's own line crops from two corpus scan pages: batched against one
line at a time, as the engine reads them today.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from contrackt.adapters.ocr.batching import (
    Bucketing,
    LineReading,
    decode,
    plan,
    recognise,
    scaled_width,
    valid_steps,
)

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"
CHARS = ["blank", "a", "b", "x"]


class PaddingReader:
    """A fake recogniser (stride 8): a time step over ink reads ``a`` or ``b`` (alternating
    blocks of 16 px), over zero padding ``x``; each step's probability is 0.9."""

    stride = 8

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, _, _, width = batch.shape
        steps = (width + 3) // 8
        ids = np.zeros((n, steps), dtype=np.int64)
        for t in range(steps):
            block = batch[:, :, :, t * 8 : (t + 1) * 8]
            padding = np.all(block == 0, axis=(1, 2, 3))
            ids[:, t] = np.where(padding, 3, 1 + (t // 2) % 2)
        return ids, np.full((n, steps), 0.9, dtype=np.float32)


def _crop(width: int, height: int = 24) -> np.ndarray:
    return np.full((height, width, 3), 40, dtype=np.uint8)  # ink everywhere: never zero after scaling


def test_every_line_is_planned_once_and_padded_by_less_than_the_alignment() -> None:
    widths = [40, 900, 320, 905, 1500, 330, 100, 901, 64, 2000]
    bucketing = Bucketing(max_lines=3)

    batches = plan(widths, bucketing)

    planned = sorted(i for members, _ in batches for i in members)
    assert planned == list(range(len(widths)))
    for members, width in batches:
        assert len(members) <= 3
        assert all(widths[i] <= width for i in members)
        if all(widths[i] <= 320 for i in members):
            assert width == 320  # narrow lines at PaddleOCR's own padded width
        else:
            assert all(width - widths[i] < bucketing.align for i in members)


def test_padding_in_a_batch_never_reaches_the_text() -> None:
    # scaled to 48 px high these are 96, 402, 404 and 406 px wide: the last three share a
    # batch 408 px wide
    crops = [_crop(48), _crop(201), _crop(202), _crop(203)]
    widths = [scaled_width(c) for c in crops]
    assert widths == [96, 402, 404, 406]
    bucketing = Bucketing(max_lines=8)
    assert plan(widths, bucketing) == [([0], 320), ([1, 2, 3], 408)]

    readings = recognise(crops, PaddingReader(), bucketing)

    texts = [decode(r, CHARS)[0] for r in readings]
    alone = [decode(recognise([c], PaddingReader(), Bucketing(max_lines=1, align=1))[0], CHARS)[0] for c in crops]
    assert texts == alone
    assert all("x" not in t for t in texts[1:])  # wide lines: every padded step was cut off
    assert texts[0].endswith("x")  # a narrow line is read with PaddleOCR's padding to 320, as alone
    assert [len(r.ids) for r in readings] == [40, 50, 50, 51]


def test_decoding_merges_repeats_drops_blanks_and_scores_kept_steps() -> None:
    reading = LineReading(
        ids=np.array([1, 1, 0, 1, 2, 2, 0]), probs=np.array([0.5, 0.7, 0.1, 0.9, 0.8, 0.2, 0.1]), steps=7.0
    )
    assert decode(reading, CHARS) == ("aab", pytest.approx((0.5 + 0.9 + 0.8) / 3, abs=1e-5))
    assert decode(LineReading(np.array([0, 0]), np.array([0.9, 0.9]), 2.0), CHARS) == ("", 0.0)
    assert [valid_steps(w, 8) for w in (8, 100, 101, 320, 327)] == [1, 12, 13, 40, 41]


def test_batched_recognition_reads_the_corpus_lines_as_one_at_a_time() -> None:
    if not CORPUS.is_dir():
        pytest.fail(f"test corpus missing: expected it at {CORPUS} (../shared/corpus from the repo)")
    sys.path.insert(0, str(ROOT))
    from bench.ocr.batching import Tally, compare, line_crops, page_images

    from contrackt.adapters.ocr.engines import ENGINES, load_engine

    engine = load_engine("rapidocr")
    tally = Tally()
    bucketing = Bucketing()
    for image in page_images(CORPUS / "synthetic" / "scan_hard.pdf", ENGINES["rapidocr"].zoom, 2):
        compare(engine, line_crops(engine, image), tally, bucketing)

    assert tally.lines >= 50
    assert tally.batches <= 0.9 * tally.lines  # it did batch: at least a tenth of the lines shared one
    assert tally.parity >= 0.995, tally.differ


def test_the_arg_max_taken_in_the_graph_equals_the_arg_max_of_the_full_output() -> None:
    """What a GPU backend copies back (ids and max probabilities, ``with_argmax``) is what the
    decoder would have taken from the whole class distribution."""
    import onnxruntime as ort

    from contrackt.adapters.ocr.batching import ArgMaxLineRunner, OrtLineRunner, with_argmax
    from contrackt.adapters.ocr.engines import rapidocr_models
    from contrackt.adapters.ocr.latin import restrict_to_latin

    _, rec, keys = rapidocr_models("rapidocr")
    model, _ = restrict_to_latin(rec, keys)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    full = OrtLineRunner(ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]))
    reduced = ArgMaxLineRunner(ort.InferenceSession(with_argmax(model), options, providers=["CPUExecutionProvider"]))
    batch = np.random.default_rng(7).uniform(-1, 1, (3, 3, 48, 400)).astype(np.float32)

    ids, probs = reduced(batch)
    want_ids, want_probs = full(batch)

    assert reduced.stride == full.stride == 8
    assert ids.shape == (3, 50)
    assert np.array_equal(ids, want_ids)
    assert np.allclose(probs, want_probs, atol=1e-6)
