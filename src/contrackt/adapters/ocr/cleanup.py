"""Cleaning a rendered fax page before OCR (issue 13, item 2; ADR 0017 §6).

A fax is a 1-bit scan sent over a phone line: dirt on the sending machine's bar
draws black streaks down the whole page, and line noise flips single pixels. The
recogniser reads a streak that crosses a line as a letter (``l``, ``|``, ``1``)
and a cluster of specks as punctuation. Two steps, each measured on the
``fax_noisy`` development set (``bench/ocr/rescan.py``) before it was kept:

* **streaks**: black runs taller than a sixth of the page, one or two pixels wide,
  are whitened (a morphological opening with a 1 x H/6 line finds them; a letter
  is never that tall, a ruled table border is, and the recogniser does not need it);
* **specks**: black connected components of at most ``SPECK_PX`` pixels at the
  render scale are whitened (a fax pixel rendered at the fax floor is about 1 x 2 px;
  the dot of an ``i`` or an accent is several fax pixels).

Only pages the adaptive scale recognises as faxes (bilevel, at most 240 dpi:
``resolution.Native``) rendered at (nearly) their native resolution or above are
cleaned: below it (the fast engine has no fax floor) a fax pixel is smaller than
a pixel, strokes come out grey and thin, and the same steps erase letters
(measured: fast engine on ``fax_noisy``, word recall 83.4 % -> 68.1 %). Phone
photos were measured too and no preprocessing helped them (ADR 0017 §6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from contrackt.adapters.ocr.resolution import FAX_MAX_DPI, Native

SPECK_PX = 4  # components of at most this many pixels are noise
STREAK_FRACTION = 6  # a vertical black run taller than 1/6 of the page is a streak


def is_fax(native: Native | None) -> bool:
    return native is not None and native.bilevel and max(native.xdpi, native.ydpi) <= FAX_MAX_DPI


def cleaned(render: Callable[[float], Any], native: Native | None) -> Callable[[float], Any]:
    """``render`` (zoom -> BGR pixels) of a page whose scan is ``native``: cleaned when the page
    is a fax drawn at 90 % of its native resolution or more, as it was otherwise."""
    if not is_fax(native):
        return render
    assert native is not None
    floor = 0.9 * native.zoom

    def draw(zoom: float) -> Any:
        image = render(zoom)
        return clean_fax(image) if zoom >= floor else image

    return draw


def clean_fax(image: Any) -> Any:
    """``image`` (H x W x 3 BGR, uint8) with vertical streaks and specks whitened."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image.copy()
    black = (grey < 128).astype(np.uint8)
    height = black.shape[0]
    line = cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(3, height // STREAK_FRACTION)))
    streaks = cv2.morphologyEx(black, cv2.MORPH_OPEN, line)
    black[streaks > 0] = 0
    grey[streaks > 0] = 255
    count, labels, stats, _ = cv2.connectedComponentsWithStats(black, connectivity=8)
    if count > 1:
        speck = stats[:, cv2.CC_STAT_AREA] <= SPECK_PX
        speck[0] = False  # the background
        grey[speck[labels]] = 255
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
