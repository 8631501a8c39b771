"""A model input kept as the uint8 pixels it is normalised from (issue 13, ADR 0020 decision 5).

Both PP-OCR models take float32 ``(N, 3, H, W)`` inputs computed pixel by pixel from uint8
images: ``value = f(channel, pixel)``, a function of 768 possible arguments. Where inputs travel
(a child's pipe to the worker's device) or wait (the device's queue), :class:`Pixels` carries the
uint8 codes, the normalisation as a ``(3, 256)`` table of exactly the floats the CPU path computes,
and each row's valid width (the recogniser pads narrower lines with 0.0, which no pixel maps to).
A quarter of the bytes, and the float arrays are made once, where the model runs:
:meth:`Pixels.floats` (here) or on the device (``torch_graph.TorchRunner``), bit for bit the
arrays the CPU path would have built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

CHANNELS = 3


def table_of(normalise: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The ``(3, 256)`` float32 table of ``normalise``, a function of an ``H x W x 3`` uint8 image
    that works pixel by pixel (rapidocr's detector normalisation, :func:`rec_scale`)."""
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], CHANNELS, axis=2)  # 1 x 256 x 3
    out = np.asarray(normalise(ramp)).astype(np.float32)
    return np.ascontiguousarray(out.reshape(256, CHANNELS).T)


def rec_scale(image: np.ndarray) -> np.ndarray:
    """The recogniser's normalisation of uint8 line pixels, any layout (PaddleOCR's order of
    operations, so the floats are PaddleOCR's): to [-1, 1], float32."""
    scaled = image.astype(np.float32) / 255
    scaled -= 0.5
    scaled /= 0.5
    return scaled


REC_TABLE = table_of(rec_scale)


@dataclass(frozen=True, eq=False)
class Pixels:
    """``codes`` ``(N, 3, H, W)`` uint8; ``widths`` ``(N,)``: row ``n`` is padding from column
    ``widths[n]`` on (0.0 as floats; its codes there are 0); ``table`` ``(3, 256)`` float32."""

    codes: np.ndarray
    widths: np.ndarray
    table: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.widths.nbytes + self.table.nbytes)

    def floats(self) -> np.ndarray:
        """The float32 input the model takes."""
        import cv2

        n, channels, h, w = self.codes.shape
        out = np.empty((n, channels, h, w), np.float32)
        for c in range(channels):
            lut = np.ascontiguousarray(self.table[c])
            for row in range(n):
                out[row, c] = cv2.LUT(self.codes[row, c], lut)
        for row, width in enumerate(self.widths.tolist()):
            if width < w:
                out[row, :, :, width:] = 0.0
        return out

    @staticmethod
    def of_image(image: np.ndarray, table: np.ndarray) -> Pixels:
        """One ``H x W x 3`` uint8 image as a one-row input (the detector's)."""
        codes = np.ascontiguousarray(image.transpose(2, 0, 1)[None])
        return Pixels(codes, np.array([codes.shape[3]], np.int64), table)

    @staticmethod
    def concat(parts: Sequence[Pixels]) -> Pixels | None:
        """One input of ``parts`` (same shape past the rows, same table), else None."""
        first = parts[0]
        if len(parts) == 1:
            return first
        if any(p.shape[1:] != first.shape[1:] or not np.array_equal(p.table, first.table) for p in parts):
            return None
        return Pixels(np.concatenate([p.codes for p in parts]), np.concatenate([p.widths for p in parts]), first.table)


def as_floats(batch: np.ndarray | Pixels) -> np.ndarray:
    return batch.floats() if isinstance(batch, Pixels) else batch


class PixelsDetInput:
    """Stands in for rapidocr's detector pre-processing (``DetPreProcess``): the same resize, but
    the page comes out as :class:`Pixels`, normalised where the detector runs."""

    _tables: ClassVar[dict[tuple[float, ...], np.ndarray]] = {}  # one per normalisation

    def __init__(self, inner: Any) -> None:
        self.inner = inner  # rapidocr's DetPreProcess, made per call with the page's size limit

    def __call__(self, image: np.ndarray) -> Pixels | None:
        inner = self.inner
        resized = inner.resize(image)
        if resized is None:
            return None
        return Pixels.of_image(resized, self.table())

    def table(self) -> np.ndarray:
        inner = self.inner
        key = (
            *np.asarray(inner.mean, np.float64).ravel().tolist(),
            *np.asarray(inner.std, np.float64).ravel().tolist(),
            float(inner.scale),
        )
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = table_of(inner.normalize)
        return table


def det_pixels(detector: Any) -> None:
    """rapidocr's ``TextDetector`` with its input made as :class:`Pixels` (its session must take them)."""
    make = detector.get_preprocess

    def pixels_input() -> PixelsDetInput:
        return PixelsDetInput(make())

    detector.get_preprocess = pixels_input


def rec_codes(crop: np.ndarray, width: int, height: int) -> np.ndarray:
    """``crop`` (H x W x 3, uint8) resized to ``height`` x ``width``, CHW uint8 (what ``rec_scale``
    normalises)."""
    import cv2

    return np.asarray(cv2.resize(crop, (width, height))).transpose((2, 0, 1))
