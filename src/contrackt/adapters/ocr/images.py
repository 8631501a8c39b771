"""Image documents (JPEG, PNG, TIFF) inside an OCR child: caps before decoding, frames as pages.

Pillow reads only the header when it opens a file, so every frame's declared
size is checked against ``max_pixels`` before a single pixel is decoded, and a
TIFF's frames are counted only up to ``max_frames + 1``: a file that declares
a 100,000 x 100,000 image, or a million frames, is refused without the memory
or the time it asks for. Each frame is one page.

Resolution: a frame's pixels are ``72 / dpi`` points each, from the resolution
the file states (JFIF density, PNG ``pHYs``, TIFF ``XResolution`` /
``YResolution``); a file that states none (or an implausible one) is taken at
96 dpi, so one pixel is 0.75 pt. EXIF / TIFF orientation is applied first, so
pages and boxes are as the photo is meant to be seen.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/tiff": "TIFF"}
DEFAULT_DPI = 96.0
MIN_DPI = 20.0
MAX_DPI = 4800.0
LOSSY_TIFF = ("jpeg", "tiff_jpeg")
ORIENTATION_TAG = 0x0112


class ImageRefused(Exception):
    """Refused before decoding: ``code`` is image_too_large, too_many_pages or corrupt_image."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Frame:
    image: Any  # a loaded PIL image, orientation applied
    xdpi: float
    ydpi: float
    # how the searchable PDF can carry it: the original JPEG bytes, or re-encoded
    original_jpeg: bytes | None
    lossy: bool  # the source was lossy: re-encode as JPEG, not Flate
    dpi_stated: bool = True  # False: the file states no (plausible) resolution, DEFAULT_DPI was assumed

    @property
    def size_pt(self) -> tuple[float, float]:
        w, h = self.image.size
        return w * 72.0 / self.xdpi, h * 72.0 / self.ydpi


def configure(max_pixels: int) -> None:
    """Pillow's own bomb check as a second line (the zygote calls this once): an error, never
    a warning. Other warnings are dropped: the process is the zygote or a child, whose
    output goes nowhere, and showing one could reach for modules a child cannot import."""
    Image.MAX_IMAGE_PIXELS = max(1, max_pixels)
    warnings.simplefilter("ignore")  # e.g. Pillow's "Corrupt EXIF data": nothing to tell anyone
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def _dpi(info: Mapping[Any, Any]) -> tuple[float, float]:
    raw = info.get("dpi")
    try:
        x, y = (float(raw[0]), float(raw[1])) if raw is not None else (0.0, 0.0)
    except (TypeError, ValueError, IndexError):
        x = y = 0.0
    if not (MIN_DPI <= x <= MAX_DPI and MIN_DPI <= y <= MAX_DPI):
        return DEFAULT_DPI, DEFAULT_DPI
    return x, y


class ImageDocument:
    """One image file opened for reading, its frames checked; frames decoded one at a time."""

    def __init__(self, data: bytes, media_type: str, max_pixels: int, max_frames: int) -> None:
        fmt = FORMATS.get(media_type)
        if fmt is None:
            raise ImageRefused("corrupt_image", "not an accepted image type")
        self.data = data
        self.format = fmt
        self.max_pixels = max_pixels
        try:
            self.image = Image.open(io.BytesIO(data), formats=[fmt])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRefused("image_too_large", "the image is larger than the pixel cap") from None
        except Exception:
            raise ImageRefused("corrupt_image", "the image could not be read") from None
        self.count = self._count(max_frames)

    def _check_size(self) -> None:
        width, height = self.image.size
        if width < 1 or height < 1:
            raise ImageRefused("corrupt_image", "the image has no pixels")
        if width * height > self.max_pixels:
            raise ImageRefused("image_too_large", f"a frame of {width} x {height} pixels is over the pixel cap")

    def _count(self, max_frames: int) -> int:
        """Frames, each one's header checked; stops one past ``max_frames`` (the caller refuses)."""
        self._check_size()
        if self.format != "TIFF":
            return 1
        count = 1
        while count <= max_frames:
            try:
                self.image.seek(count)
            except EOFError:
                break
            except Exception:
                raise ImageRefused("corrupt_image", "a frame of the image could not be read") from None
            self._check_size()
            count += 1
        return count

    def frame(self, index: int) -> Frame:
        """Frame ``index`` decoded (its size was checked when the file was opened)."""
        try:
            self.image.seek(index)
            self._check_size()
            self.image.load()
            compression = str(self.image.info.get("compression", ""))
            xdpi, ydpi = _dpi(self.image.info)
            stated = "dpi" in self.image.info and (xdpi, ydpi) != (DEFAULT_DPI, DEFAULT_DPI)
            loaded = self.image.copy() if self.format == "TIFF" else self.image
            orientation = loaded.getexif().get(ORIENTATION_TAG, 1)
            upright = ImageOps.exif_transpose(loaded) if orientation in range(2, 9) else loaded
        except ImageRefused:
            raise
        except (MemoryError, Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRefused("image_too_large", "the image is larger than the pixel cap") from None
        except Exception:
            raise ImageRefused("corrupt_image", "the image could not be decoded") from None
        if upright is not loaded and orientation in (5, 6, 7, 8):  # a quarter turn swaps the axes
            xdpi, ydpi = ydpi, xdpi
        original = None
        if self.format == "JPEG" and upright is loaded and upright.mode in ("L", "RGB"):
            original = self.data
        lossy = self.format == "JPEG" or compression in LOSSY_TIFF
        return Frame(upright, xdpi, ydpi, original, lossy, stated)

    def close(self) -> None:
        self.image.close()


def rgb(image: Any) -> Any:
    """An RGB copy for the OCR engine (transparent parts on white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np  # loaded by the zygote (the OCR engines need it)

        values = np.asarray(image, dtype=np.float64)
        top = float(values.max()) if values.size else 0.0
        scale = 255.0 / top if top > 255 else 1.0
        return Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def scaled(image: Any, width: int, height: int) -> Any:
    """``image`` resampled to ``width`` x ``height`` (Lanczos), as RGB."""
    out = rgb(image)
    if out.size != (width, height):
        out = out.resize((max(1, width), max(1, height)), Image.Resampling.LANCZOS)
    return out
