"""The render scale of a scanned page: from the scan's native resolution and its text height.

A fixed zoom (``engines.ENGINES``) suits the pages it was measured on; this module
picks a zoom per page instead (ADR 0017, "Adaptive resolution"):

* the scan's native resolution is read from the page (the largest image object
  covering most of the page: its pixels over its placed size in points) or from an
  image file's stated DPI;
* a 1-bit scan at fax resolution (204 x 98 or 204 x 196 dpi, anything bilevel up
  to ``FAX_MAX_DPI``) is never rendered below its native resolution: a thin stroke
  that falls between two output pixels is lost for good (the detector still sees the page
  at the engine's zoom, shrunk from that render: only the recogniser's line crops gain);
* after the first pass, the page's median text-box height in points says whether
  the detector saw the text at the height it reads best (``EngineSpec.box_px``):
  small print is re-read larger, never above the scan's native resolution (that adds
  no detail), huge print smaller, within ``MIN_ZOOM`` .. ``MAX_ZOOM``.

Unknown resolution (a vector page, a scan inside a form, an image that states no
DPI): the engine's own zoom, unchanged. Only the standard library at module level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["FAX_MAX_DPI", "MAX_ZOOM", "MIN_ZOOM", "REREAD_RATIO", "Native", "choose_zoom", "page_native", "reread_zoom"]

MIN_ZOOM = 0.75  # 54 dpi: below this the detector loses punctuation and accents
MAX_ZOOM = 3.0  # 216 dpi: recognition crops are resized to 48 px anyway
FAX_MAX_DPI = 240.0  # bilevel scans up to this resolution are treated as faxes
MIN_COVER = 0.5  # the scan covers at least half of the page
# a second pass only when the wanted zoom differs from the first by more than this factor
REREAD_RATIO = 1.25


@dataclass(frozen=True)
class Native:
    """A scan's native resolution (dots per inch along the page's x and y) and whether it is 1-bit."""

    xdpi: float
    ydpi: float
    bilevel: bool = False

    @property
    def zoom(self) -> float:
        """The zoom (pixels per point) that keeps every scanned pixel along the sharper axis."""
        return max(self.xdpi, self.ydpi) / 72.0


def _clamp(value: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, value))


def _floor(native: Native, fax_floor: bool) -> float:
    """The lowest zoom allowed: the native resolution of a fax, else ``MIN_ZOOM``."""
    if fax_floor and native.bilevel and max(native.xdpi, native.ydpi) <= FAX_MAX_DPI:
        return max(MIN_ZOOM, native.zoom)
    return MIN_ZOOM


def choose_zoom(
    default: float,
    native: Native | None,
    text_pt: float | None = None,
    box_px: float | None = None,
    fax_floor: bool = True,
) -> float:
    """The zoom to render a page at.

    ``default``: the engine's zoom, returned unchanged when ``native`` is unknown.
    ``text_pt``: the median detected text-box height in points (from a first pass), and
    ``box_px`` the box height in pixels the engine reads best; without both, the zoom
    is the engine's, raised to a fax's native resolution (unless ``fax_floor`` is off).
    """
    if native is None or not (math.isfinite(native.xdpi) and math.isfinite(native.ydpi)):
        return default
    if native.xdpi <= 0 or native.ydpi <= 0:
        return default
    floor = _floor(native, fax_floor)
    zoom = default
    if text_pt is not None and box_px is not None and text_pt > 0 and math.isfinite(text_pt):
        wanted = box_px / text_pt
        # enlarging past the scan's own resolution only interpolates: no new detail
        if wanted > zoom:
            wanted = min(wanted, max(zoom, native.zoom))
        zoom = wanted
    return _clamp(max(zoom, floor), MIN_ZOOM, max(MAX_ZOOM, floor))


def reread_zoom(
    first: float,
    default: float,
    native: Native | None,
    text_pt: float | None,
    box_px: float | None,
    fax_floor: bool = True,
) -> float | None:
    """The zoom to read the page again at, after a first pass at ``first`` found text
    ``text_pt`` points high; None when the first pass was close enough."""
    if native is None or text_pt is None or box_px is None:
        return None
    second = choose_zoom(default, native, text_pt, box_px, fax_floor)
    if second > first * REREAD_RATIO or second < first / REREAD_RATIO:
        return second
    return None


def page_native(page: Any) -> Native | None:
    """The native resolution of a scanned PDF page (pypdfium2 ``PdfPage``), or None.

    The scan is the largest image object placed directly on the page that covers at
    least ``MIN_COVER`` of it (an image inside a form XObject is not looked into: its
    placement is relative to the form). Its resolution comes from its pixel size over
    the length of its placed edges, so a rotated or sheared placement is measured along
    its own axes.
    """
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    width_pt, height_pt = (float(v) for v in page.get_size())
    area = width_pt * height_pt
    if area <= 0 or not math.isfinite(area):
        return None
    best: tuple[float, Native] | None = None
    for obj in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=1):
        try:
            px_w, px_h = obj.get_px_size()
            m = obj.get_matrix()
            left, bottom, right, top = obj.get_bounds()
        except pdfium.PdfiumError:  # a broken image object: not the scan
            continue
        edge_x, edge_y = math.hypot(m.a, m.b), math.hypot(m.c, m.d)
        if px_w <= 1 or px_h <= 1 or edge_x <= 0 or edge_y <= 0:
            continue
        cover = max(0.0, min(right, width_pt) - max(left, 0.0)) * max(0.0, min(top, height_pt) - max(bottom, 0.0))
        if cover < MIN_COVER * area or (best is not None and cover <= best[0]):
            continue
        try:
            bilevel = int(obj.get_metadata().bits_per_pixel) == 1
        except pdfium.PdfiumError:
            bilevel = False
        native = _oriented(px_w * 72.0 / edge_x, px_h * 72.0 / edge_y, abs(m.b) > abs(m.a), bilevel)
        if native is not None:
            best = (cover, native)
    return best[1] if best is not None else None


def _oriented(img_xdpi: float, img_ydpi: float, turned: bool, bilevel: bool) -> Native | None:
    """The image's own resolutions along the page's axes (swapped when it is placed turned)."""
    if not (math.isfinite(img_xdpi) and math.isfinite(img_ydpi)) or min(img_xdpi, img_ydpi) < 20.0:
        return None
    if max(img_xdpi, img_ydpi) > 4800.0:
        return None
    xdpi, ydpi = (img_ydpi, img_xdpi) if turned else (img_xdpi, img_ydpi)
    return Native(xdpi, ydpi, bilevel)
