"""Model inputs sent as uint8 pixels (ADR 0020 decision 5): what the device reads must be, bit for
bit, what the CPU engine would have read, and a child's pixels are checked like any of its replies.

What a user of a GPU worker would notice if this broke: a page reading differently on the device
than on the CPU (a float off by one unit in the last place moves a borderline character), or a
hostile child's pixels getting past the worker's checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from contrackt.adapters.ocr.batching import REC_HEIGHT, Bucketing, recognise
from contrackt.adapters.ocr.gpu import GpuBatcher
from contrackt.adapters.ocr.model_host import LIMITS, check_request, pack, unpack
from contrackt.adapters.ocr.pixels import REC_TABLE, Pixels, PixelsDetInput, det_pixels
from contrackt.adapters.ocr.protocol import ProtocolViolation


def _page(seed: int = 3, h: int = 700, w: int = 500) -> np.ndarray:
    """A page-like uint8 image: paper, dark strokes, a gradient and noise (every code occurs)."""
    rng = np.random.default_rng(seed)
    page = np.full((h, w, 3), 235, np.uint8)
    page[::17, :, :] = 20
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return np.where(rng.random((h, w, 1)) < 0.2, noise, page).astype(np.uint8)


class _Recorder:
    """A line runner that keeps what it is given (floats, or pixels when ``takes_pixels``)."""

    stride = 8

    def __init__(self, takes_pixels: bool) -> None:
        self.takes_pixels = takes_pixels
        self.batches: list[Any] = []

    def __call__(self, batch: Any) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(batch)
        n, t = len(batch), batch.shape[3] // self.stride
        return np.ones((n, t), np.int64), np.full((n, t), 0.9, np.float32)


def test_recognition_pixels_are_the_cpu_engines_floats_bit_for_bit() -> None:
    page = _page()
    rng = np.random.default_rng(4)
    crops = [page[y : y + int(rng.integers(12, 60)), : int(rng.integers(8, 480))] for y in range(0, 600, 13)]
    floats, pixels = _Recorder(False), _Recorder(True)
    recognise(crops, floats, Bucketing())
    recognise(crops, pixels, Bucketing())
    assert len(pixels.batches) == len(floats.batches) > 3
    assert any(w < p.shape[3] for p in pixels.batches for w in p.widths), "no batch was padded"
    for want, got in zip(floats.batches, pixels.batches, strict=True):
        assert isinstance(got, Pixels) and got.codes.dtype == np.uint8 and got.shape == want.shape
        assert np.array_equal(got.floats(), want), "a recogniser input differs from the CPU engine's"
        assert np.array_equal(got.table, REC_TABLE)


def test_detector_pixels_are_rapidocrs_floats_bit_for_bit() -> None:
    from contrackt.adapters.ocr.engines import load_engine

    detector = load_engine("rapidocr")._ocr.text_det  # type: ignore[attr-defined]
    detector.limit_type, detector.limit_side_len = "max", 640
    page = _page(5)
    want = detector.get_preprocess()(page)
    det_pixels(detector)
    made = detector.get_preprocess()
    assert isinstance(made, PixelsDetInput)
    got = made(page)
    assert isinstance(got, Pixels) and got.shape == want.shape and got.codes.nbytes * 4 == want.nbytes
    assert np.array_equal(got.floats(), want), "the detector input differs from rapidocr's"


def _pixels(widths: list[int], w: int = 40, seed: int = 6) -> Pixels:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (len(widths), 3, REC_HEIGHT, w), dtype=np.uint8)
    for row, width in enumerate(widths):
        codes[row, :, :, width:] = 0
    return Pixels(codes, np.array(widths, np.int64), REC_TABLE)


def test_pixels_cross_the_pipe_as_their_rows_valid_columns() -> None:
    sent = _pixels([40, 17, 1])
    specs, blob = pack([sent, np.arange(6, dtype=np.int64)])
    assert len(blob) == 3 * REC_HEIGHT * (40 + 17 + 1) + 3 * 256 * 4 + 6 * 8  # padding is not sent
    got, ids = unpack(specs, blob, 4)
    assert isinstance(got, Pixels) and np.array_equal(got.codes, sent.codes)
    assert np.array_equal(got.widths, sent.widths) and np.array_equal(got.floats(), sent.floats())
    assert np.array_equal(ids, np.arange(6))
    kind, inputs = check_request({"op": "model", "kind": "rec", "arrays": specs[:1]}, blob[: -6 * 8])
    assert kind == "rec" and isinstance(inputs[0], Pixels)


def _spec_and_blob(widths: Any, shape: Any = None, table: np.ndarray | None = None) -> tuple[list[Any], bytes]:
    shape = shape or [len(widths), 3, REC_HEIGHT, 40]
    body = bytes(3 * shape[2] * sum(w for w in widths if isinstance(w, int) and w > 0))
    values = REC_TABLE if table is None else table
    return [["pixels", shape, widths]], body + np.ascontiguousarray(values, np.float32).tobytes()


@pytest.mark.parametrize(
    ("widths", "shape", "table"),
    [
        ([41], None, None),  # a row wider than the input
        ([0], None, None),  # an empty row
        ([10, 10], [1, 3, REC_HEIGHT, 40], None),  # more widths than rows
        ([10], [1, 1, REC_HEIGHT, 40], None),  # one channel
        ([10.0], None, None),
        ([10], None, np.full((3, 256), np.nan, np.float32)),  # a table that is not numbers
        ([10], None, np.full((3, 256), 1e9, np.float32)),  # or not a normalisation
        ([1], [1, 3, 1 << 24, 1 << 24], None),  # a few bytes sent, petabytes of padding asked for
    ],
)
def test_pixels_that_do_not_add_up_are_a_violation(widths: Any, shape: Any, table: np.ndarray | None) -> None:
    specs, blob = _spec_and_blob(widths, shape, table)
    with pytest.raises(ProtocolViolation):
        unpack(specs, blob, 4)


@pytest.mark.parametrize("extra", [-1, 1])
def test_a_pixels_blob_of_another_length_is_a_violation(extra: int) -> None:
    specs, blob = _spec_and_blob([12, 40])
    blob = blob[:extra] if extra < 0 else blob + bytes(extra)
    with pytest.raises(ProtocolViolation):
        unpack(specs, blob, 4)


def test_pixels_inputs_have_the_float_inputs_limits() -> None:
    assert LIMITS.fits("det", Pixels.of_image(np.zeros((64, 96, 3), np.uint8), REC_TABLE))
    assert not LIMITS.fits("det", Pixels.of_image(np.zeros((4096, 96, 3), np.uint8), REC_TABLE))
    assert LIMITS.fits("rec", _pixels([40] * 16, w=40))
    assert not LIMITS.fits("rec", _pixels([40] * 65, w=40))  # more rows than a batch has
    wide = _pixels([1200] * 16, w=1200)
    assert LIMITS.fits("rec", wide)
    assert not LIMITS.fits("rec", Pixels(wide.codes.astype(np.int16), wide.widths, wide.table))
    specs, blob = pack([_pixels([40] * 65, w=40)])
    with pytest.raises(ProtocolViolation):
        check_request({"op": "model", "kind": "rec", "arrays": specs}, blob)


def test_the_device_merges_pixels_for_a_model_that_takes_them_and_gives_floats_to_one_that_does_not() -> None:
    seen: dict[str, list[Any]] = {"det": [], "rec": []}

    def det(batch: Any) -> np.ndarray:
        seen["det"].append(batch)
        floats = batch.floats() if isinstance(batch, Pixels) else batch
        return floats[:, :1] * 2

    class Rec:
        takes_pixels = True

        def __call__(self, batch: Any) -> tuple[np.ndarray, np.ndarray]:
            seen["rec"].append(batch)
            n, t = len(batch), batch.shape[3] // 8
            return np.zeros((n, t), np.int64), np.zeros((n, t), np.float32)

    batcher = GpuBatcher(det, Rec(), 8, linger_s=0.05)
    try:
        lines = [_pixels([40, 30], seed=1), _pixels([25], seed=2)]
        pages = [Pixels.of_image(_page(s, 64, 96), REC_TABLE) for s in (7, 8)]
        rec_futures = batcher.enqueue_many("rec", lines)
        det_futures = batcher.enqueue_many("det", pages)
        maps = [f.result(timeout=30) for f in det_futures]
        [f.result(timeout=30) for f in rec_futures]
    finally:
        batcher.close()
    (merged,) = seen["rec"]  # both requests in one call, still pixels
    assert isinstance(merged, Pixels) and len(merged) == 3 and list(merged.widths) == [40, 30, 25]
    (floats,) = seen["det"]
    assert not isinstance(floats, Pixels) and floats.dtype == np.float32 and len(floats) == 2
    for page, got in zip(pages, maps, strict=True):
        assert np.array_equal(got, page.floats()[:, :1] * 2)
