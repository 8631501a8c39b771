"""Rescans of corpus pages at known resolutions, for the adaptive render scale (ADR 0017).

The first ``PAGES`` pages of ``synthetic/born_digital.pdf`` (whose ground truth is
``synthetic/gt/page_NN.txt``) are rasterised by PDFium and wrapped into image-only PDFs:

* ``rescan_300`` / ``rescan_200``: grey office scans at 300 / 200 dpi (light blur,
  sensor noise, JPEG q80);
* ``small_300``: the same pages reduced to 60 % on the sheet (a reduced copy: text of
  5-7 pt) at 300 dpi, the case the adaptive scale enlarges;
* ``fax_fine`` / ``fax_std``: 1-bit faxes at 204 x 196 and 204 x 98 dpi (thresholded,
  with salt-and-pepper noise), the case whose native resolution is a floor;
* ``phone``: phone photos of the printed page (issue 13, item 2): the sheet in perspective
  (each corner moved up to 6 % of the frame) on a dark desk, light falling off across the
  sheet with a soft shadow band, defocus blur, sensor noise, JPEG q70; 3,000 x 4,000 px;
* ``fax_noisy``: a 204 x 98 dpi 1-bit fax of a worn line: 0.5 % of pixels flipped, a few
  vertical streaks (a dirty scanner bar), dropped horizontal lines and a halftoned grey band.

Same pages on every machine (seeded); cached under the temporary folder.

    .venv/bin/python -m bench.ocr.rescan     # write the PDFs, print where
"""

from __future__ import annotations

import io
import random
import tempfile
from pathlib import Path

PAGES = 3
VERSION = 1  # bump when the pages change (the cached PDFs are keyed on it)
SETS = ("rescan_300", "rescan_200", "small_300", "fax_fine", "fax_std", "phone", "phone_hard", "fax_noisy")
SHRINK = 0.6  # small_300: the page's content scaled to this on the sheet


def _raster(page: object, xdpi: float, ydpi: float) -> object:
    """The page drawn at ``xdpi`` x ``ydpi`` (greyscale PIL image): rendered at the higher, resized."""
    from PIL import Image

    scale = max(xdpi, ydpi) / 72.0
    image = page.render(scale=scale, grayscale=True).to_pil().convert("L")  # type: ignore[attr-defined]
    width_pt, height_pt = page.get_size()  # type: ignore[attr-defined]
    size = (round(width_pt * xdpi / 72.0), round(height_pt * ydpi / 72.0))
    return image.resize(size, Image.Resampling.LANCZOS) if image.size != size else image


def _office(image: object, rng: random.Random) -> object:
    """Light blur, sensor noise, JPEG q80: an office scanner's grey page."""
    import numpy as np
    from PIL import Image, ImageFilter

    img = image.filter(ImageFilter.GaussianBlur(0.6))  # type: ignore[attr-defined]
    arr = np.asarray(img, dtype=np.float32)
    arr += np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, 6, arr.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=80)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _fax(image: object, rng: random.Random) -> object:
    """Thresholded to 1 bit with 0.2 % of pixels flipped (line noise)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image) < 150
    noise = np.random.default_rng(rng.randint(0, 1 << 30)).random(arr.shape) < 0.002
    return Image.fromarray(~(arr ^ noise)).convert("1")


def _phone(image: object, rng: random.Random, hard: bool = False) -> object:
    """A phone photo of the sheet: perspective, uneven light and a shadow, blur, noise, JPEG q70.
    ``hard``: taken from further away in worse light (2,250 x 3,000 px frame, corners moved up to
    10 %, darker fall-off and shadow, a little motion blur, JPEG q55)."""
    import cv2
    import numpy as np
    from PIL import Image

    gen = np.random.default_rng(rng.randint(0, 1 << 30))
    page = np.asarray(image, dtype=np.float32)
    h, w = page.shape
    f = 0.75 if hard else 1.0
    frame_w, frame_h = round(3000 * f), round(4000 * f)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    base = np.float32([[300, 250], [2700, 250], [2700, 3750], [300, 3750]]) * f
    jitter = (400 if hard else 240) * f
    dst = (base + gen.uniform(-jitter, jitter, size=(4, 2))).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    sheet = cv2.warpPerspective(page, matrix, (frame_w, frame_h), flags=cv2.INTER_AREA, borderValue=0.0)
    mask = cv2.warpPerspective(np.ones_like(page), matrix, (frame_w, frame_h), borderValue=0.0)
    desk = 60 + 15 * gen.random((frame_h, frame_w)).astype(np.float32)
    photo = sheet * mask + desk * (1 - mask)
    yy, xx = np.mgrid[0:frame_h, 0:frame_w].astype(np.float32)
    angle = gen.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / frame_w + np.sin(angle) * yy / frame_h + 1) / 2  # light falls off across
    light = 0.95 - (0.5 if hard else 0.35) * ramp
    band = gen.uniform(0.3, 0.7) * frame_w  # a soft shadow (a hand, the phone) across the sheet
    light *= 1 - (0.4 if hard else 0.25) * np.exp(-(((xx - band) / (0.08 * frame_w)) ** 2))
    photo = photo * light
    photo = cv2.GaussianBlur(photo, (0, 0), 1.1)
    if hard:  # the hand moved: a short horizontal smear
        photo = cv2.filter2D(photo, -1, np.full((1, 3), 1 / 3, np.float32))
    photo += gen.normal(0, 5, photo.shape).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).convert("RGB").save(
        buffer, "JPEG", quality=55 if hard else 70
    )
    return Image.open(io.BytesIO(buffer.getvalue()))


def _worn_fax(image: object, rng: random.Random) -> object:
    """A 1-bit fax of a worn line: 0.5 % noise, vertical streaks, dropped lines, a halftoned band."""
    import numpy as np
    from PIL import Image

    gen = np.random.default_rng(rng.randint(0, 1 << 30))
    grey = np.asarray(image, dtype=np.float32)
    h, w = grey.shape
    top = int(gen.uniform(0.3, 0.6) * h)  # a band printed as grey: halftoned by the fax
    band = grey[top : top + h // 10]
    dots = (np.indices(band.shape).sum(axis=0) % 4 < 2) * 60.0
    grey[top : top + h // 10] = np.minimum(255, band * 0.8 + dots)
    black = grey < 150
    black ^= gen.random(black.shape) < 0.005
    for x in gen.integers(0, w, size=4):  # streaks from dirt on the scanner bar
        black[:, x : x + int(gen.integers(1, 3))] = True
    for y in gen.integers(0, h, size=6):  # lines lost on the wire
        black[y, :] = False
    return Image.fromarray(~black).convert("1")


def _small(image: object) -> object:
    from PIL import Image

    width, height = image.size  # type: ignore[attr-defined]
    reduced = image.resize((round(width * SHRINK), round(height * SHRINK)), Image.Resampling.LANCZOS)  # type: ignore[attr-defined]
    sheet = Image.new("L", (width, height), 255)
    sheet.paste(reduced, (round(width * 0.08), round(height * 0.06)))
    return sheet


def build(corpus: Path, out: Path, name: str, seed: int = 13) -> tuple[Path, list[str]]:
    """Write set ``name`` under ``out``; (its PDF, ground truth per page)."""
    import pypdfium2 as pdfium

    syn = corpus / "synthetic"
    truth = [(syn / "gt" / f"page_{n:02d}.txt").read_text("utf-8") for n in range(1, PAGES + 1)]
    out.mkdir(parents=True, exist_ok=True)
    pdf = out / f"{name}-v{VERSION}-s{seed}-p{PAGES}.pdf"
    if pdf.is_file():
        return pdf, truth
    dpis = {"rescan_200": (200, 200), "fax_fine": (204, 196), "fax_std": (204, 98), "fax_noisy": (204, 98)}
    xdpi, ydpi = dpis.get(name, (300, 300))
    rng = random.Random(f"{seed}-{name}")
    doc = pdfium.PdfDocument(str(syn / "born_digital.pdf"))
    images = []
    for index in range(PAGES):
        image = _raster(doc[index], xdpi, ydpi)
        if name == "small_300":
            image = _small(image)
        if name.startswith("phone"):
            images.append(_phone(image, rng, hard=name == "phone_hard"))
        elif name == "fax_noisy":
            images.append(_worn_fax(image, rng))
        else:
            images.append(_fax(image, rng) if name.startswith("fax") else _office(image, rng))
    tmp = pdf.with_suffix(".tmp")
    images[0].save(tmp, "PDF", dpi=(xdpi, ydpi), save_all=True, append_images=images[1:])  # type: ignore[attr-defined]
    tmp.replace(pdf)
    return pdf, truth


def cached(corpus: Path, name: str) -> tuple[Path, list[str]]:
    return build(corpus, Path(tempfile.gettempdir()) / "contrackt-bench-rescan", name)


def main() -> int:
    from bench.ocr.run import DEFAULT_CORPUS

    for name in SETS:
        pdf, truth = cached(DEFAULT_CORPUS, name)
        print(f"{name}: {pdf} ({len(truth)} pages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
