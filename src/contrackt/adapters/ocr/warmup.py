"""Warm-up images: the zygote takes every image code path once before it forks.

A confined child may not be able to read the Python installation, so nothing
it runs may import a module (or load a codec) for the first time. Pillow loads
its format plugins, decoders and encoders lazily; these small images, made in
memory by the zygote, go through each mode, compression and re-encoding a
child can meet (``images.py``, ``searchable.py``) so that all of it is loaded
before the first fork.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contrackt.adapters.ocr.worker_child import PageWorker

TIFF_COMPRESSIONS = ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg")


def _drawn(mode: str, size: tuple[int, int] = (160, 48)) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).rectangle((20, 18, 140, 30), fill=0)
    return image.convert(mode)


def sample_images() -> list[tuple[str, bytes]]:
    """(media type, bytes) of small images in every mode and compression a child decodes."""
    from PIL import Image

    out: list[tuple[str, bytes]] = []

    def saved(image: Any, fmt: str, media_type: str, **params: Any) -> None:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **params)
        out.append((media_type, buffer.getvalue()))

    for mode in ("RGB", "L", "RGBA", "P", "LA", "1", "I;16"):
        saved(_drawn(mode), "PNG", "image/png", dpi=(150, 150))
    saved(_drawn("RGB"), "JPEG", "image/jpeg", quality=80, dpi=(200, 200))
    saved(_drawn("L"), "JPEG", "image/jpeg", progressive=True)
    saved(_drawn("CMYK"), "JPEG", "image/jpeg")
    exif = Image.Exif()
    exif[0x0112] = 6  # turned a quarter: the child applies the orientation
    saved(_drawn("RGB"), "JPEG", "image/jpeg", exif=exif.tobytes())
    for compression in TIFF_COMPRESSIONS:
        frames = [_drawn("RGB"), _drawn("L")]
        saved(frames[0], "TIFF", "image/tiff", compression=compression, save_all=True, append_images=frames[1:])
    saved(_drawn("1"), "TIFF", "image/tiff", compression="group4", dpi=(300, 300))
    saved(_drawn("1"), "TIFF", "image/tiff", compression="group3")
    saved(_drawn("CMYK"), "TIFF", "image/tiff", compression="tiff_lzw")
    return out


def warm_up_images(worker: PageWorker, engine: str | None) -> None:
    """Decode, resample, OCR (with ``engine``, once) and wrap into a searchable PDF each sample."""
    from contrackt.adapters.ocr import worker_child
    from contrackt.adapters.ocr.images import ImageDocument, ImageRefused

    ocr_done = False
    for media_type, data in sample_images():
        image = ImageDocument(data, media_type, worker.config.max_image_pixels, worker.config.max_frames)
        try:
            pages = []
            for index in range(image.count):
                frame = image.frame(index)
                worker_child._frame_pixels(frame, 1.5)
                if engine is not None and not ocr_done:
                    pages.append(worker.image_page(image, index, "auto", engine))
                    ocr_done = True
                else:
                    pages.append(worker.image_page(image, index, "text", worker.config.engine))
            worker._searchable_image(image, pages, 1 << 26)
        finally:
            image.close()
    for refused in (b"\x89PNG\r\n\x1a\nbroken", b"II*\x00broken"):
        try:
            ImageDocument(refused, "image/png" if refused[1:4] == b"PNG" else "image/tiff", 1000, 1)
        except ImageRefused:
            pass
