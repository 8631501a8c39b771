"""Rescans of corpus pages at known resolutions, for the adaptive render scale (ADR 0017).

The first ``PAGES`` pages of ``synthetic/born_digital.pdf`` (whose ground truth is
``synthetic/gt/page_NN.txt``) are rasterised by PDFium and wrapped into image-only PDFs:

* ``rescan_300`` / ``rescan_200``: grey office scans at 300 / 200 dpi (light blur,
  sensor noise, JPEG q80);
* ``small_300``: the same pages reduced to 60 % on the sheet (a reduced copy: text of
  5-7 pt) at 300 dpi, the case the adaptive scale enlarges;
* ``fax_fine`` / ``fax_std``: 1-bit faxes at 204 x 196 and 204 x 98 dpi (thresholded,
  with salt-and-pepper noise), the case whose native resolution is a floor.

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
SETS = ("rescan_300", "rescan_200", "small_300", "fax_fine", "fax_std")
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
    xdpi, ydpi = {"rescan_200": (200, 200), "fax_fine": (204, 196), "fax_std": (204, 98)}.get(name, (300, 300))
    rng = random.Random(f"{seed}-{name}")
    doc = pdfium.PdfDocument(str(syn / "born_digital.pdf"))
    images = []
    for index in range(PAGES):
        image = _raster(doc[index], xdpi, ydpi)
        if name == "small_300":
            image = _small(image)
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
